import Foundation

/// Every way loading or computing with tensors can fail, with the file, tensor and shapes involved.
public enum TensorError: Error, LocalizedError, Sendable, Equatable {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    /// The safetensors file is malformed; `tensor` names the entry when one is at fault.
    case invalidSafetensors(path: String, tensor: String?, reason: String)
    case invalidIndex(path: String, reason: String)
    case missingTensor(name: String, checkpoint: String)
    case shapeMismatch(operation: String, expected: String, got: String)
    case unsupportedDType(operation: String, dtype: String)
    case backend(operation: String, reason: String)
    /// Memory for `what` could not be had: the system refused `size`, or the size overflows.
    case allocationFailed(what: String, size: String)

    public var errorDescription: String? {
        switch self {
        case .fileNotFound(let path): return "\(path): no such file"
        case .unreadable(let path, let reason): return "\(path): cannot read (\(reason))"
        case .invalidSafetensors(let path, let tensor, let reason):
            return "\(path): invalid safetensors\(tensor.map { " (tensor '\($0)')" } ?? ""): \(reason)"
        case .invalidIndex(let path, let reason): return "\(path): invalid checkpoint index: \(reason)"
        case .missingTensor(let name, let checkpoint): return "\(checkpoint): no tensor named '\(name)'"
        case .shapeMismatch(let op, let expected, let got): return "\(op): expected shape \(expected), got \(got)"
        case .unsupportedDType(let op, let dtype): return "\(op): unsupported dtype \(dtype)"
        case .backend(let op, let reason): return "\(op) failed: \(reason)"
        case .allocationFailed(let what, let size): return "out of memory: cannot allocate \(size) for \(what)"
        }
    }
}
