import Foundation

public enum PipelineError: Error, LocalizedError, Sendable, Equatable {
    /// A spec problem, naming the file, the key and what is allowed.
    case invalidSpec(path: String, key: String, reason: String)
    case noInputs(String)
    case database(path: String, reason: String)
    case invalidArgument(String)
    /// Another process is writing to the database (a run or a merge).
    case databaseInUse(path: String, holder: String)

    public var errorDescription: String? {
        switch self {
        case .invalidSpec(let path, let key, let reason): return "\(path): '\(key)': \(reason)"
        case .noInputs(let message): return message
        case .database(let path, let reason): return "\(path): \(reason)"
        case .invalidArgument(let message): return message
        case .databaseInUse(let path, let holder):
            return "\(path): the database is in use by \(holder) in another process; wait for it to end, or write to another database (--db)"
        }
    }
}
