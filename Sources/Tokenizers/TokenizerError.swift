import Foundation

public enum TokenizerError: Error, LocalizedError, Sendable, Equatable {
    case missingFile(path: String)
    case invalid(path: String, reason: String)
    case unsupported(path: String, feature: String)

    public var errorDescription: String? {
        switch self {
        case .missingFile(let path): return "\(path): no such file"
        case .invalid(let path, let reason): return "\(path): invalid tokenizer: \(reason)"
        case .unsupported(let path, let feature): return "\(path): unsupported tokenizer feature: \(feature)"
        }
    }
}
