import Foundation

/// Every way loading or running a model can fail, with the file, key, tensor or shape involved.
public enum VLMError: Error, LocalizedError, Sendable, Equatable {
    case missingFile(path: String)
    /// A configuration file has a key of the wrong type or a value out of range.
    case invalidConfig(path: String, key: String, reason: String)
    case unsupportedModel(path: String, modelType: String, supported: [String])
    /// Checkpoint tensors do not match the configuration.
    case missingWeight(name: String, checkpoint: String)
    case weightShape(name: String, expected: [Int], got: [Int])
    case unexpectedWeights(names: [String], checkpoint: String)
    case invalidInput(String)
    /// The logits of decoding step `step` (0 = the first new token) hold NaN or ±Inf.
    case nonFiniteLogits(step: Int)

    public var errorDescription: String? {
        switch self {
        case .missingFile(let path): return "\(path): no such file"
        case .invalidConfig(let path, let key, let reason): return "\(path): key '\(key)': \(reason)"
        case .unsupportedModel(let path, let type, let supported):
            return "\(path): model_type '\(type)' is not supported (supported: \(supported.joined(separator: ", ")))"
        case .missingWeight(let name, let checkpoint): return "\(checkpoint): missing tensor '\(name)'"
        case .weightShape(let name, let expected, let got): return "tensor '\(name)': expected shape \(expected), got \(got)"
        case .unexpectedWeights(let names, let checkpoint):
            let shown = names.prefix(5).joined(separator: ", ")
            return "\(checkpoint): \(names.count) unknown vision tensor(s): \(shown)\(names.count > 5 ? ", …" : "")"
        case .invalidInput(let message): return message
        case .nonFiniteLogits(let step):
            return "the model produced non-finite logits (NaN/Inf) at step \(step); the checkpoint's weights, or numbers of its configuration (rope_theta, image_mean, image_std, rescale_factor), may be out of range"
        }
    }
}
