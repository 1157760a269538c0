import Foundation
import Media
import Tensors
import Tokenizers
import VLM

/// A checkpoint ready to describe clips and images: any model family (loaded through
/// `ModelRegistry` by its `model_type`) with the run's generation settings. Returns plain
/// answers; the store turns them into rows.
public final class ClipModel: @unchecked Sendable {
    public let model: any VisionLanguageModel
    public let parameters: GenerationParameters
    public var directory: String { model.directory }
    public var tokenizer: Tokenizer { model.tokenizer }

    public convenience init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType? = nil, generation: PipelineSpec.Generation) throws {
        try self.init(directory: directory, dtype: dtype, visionDType: visionDType,
                      parameters: GenerationParameters(maxNewTokens: generation.maxNewTokens, temperature: generation.temperature,
                                                       topK: generation.topK, topP: generation.topP,
                                                       repetitionPenalty: generation.repetitionPenalty, seed: generation.seed,
                                                       batch: generation.batch(for: dtype)))
    }

    /// The family adds its stop tokens (the checkpoint's eos ids, <|im_end|>, <|endoftext|>).
    public convenience init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType? = nil, parameters: GenerationParameters) throws {
        self.init(model: try ModelRegistry.load(directory: directory, dtype: dtype, visionDType: visionDType), parameters: parameters)
    }

    /// A loaded model with these generation settings (one model, several settings: `bench pipeline`).
    public init(model: any VisionLanguageModel, parameters: GenerationParameters) {
        self.model = model
        var p = parameters
        p.stopTokens.formUnion(model.stopTokens)
        self.parameters = p
    }

    /// Sampling options for this checkpoint: a clip's frames, or an image, sized as it needs.
    public func sampling(_ options: SamplingOptions, kind: VisualKind = .video) -> SamplingOptions {
        kind == .video ? model.videoSampling(options) : model.imageSampling(options)
    }

    /// The model used when none is given: `$REELQL_MODEL`, else the bundled `models/demo` found
    /// from the current directory or the executable's location upwards (a checkout's
    /// `.build/release/reelql` finds the checkout's model).
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                        executable: String = CommandLine.arguments.first ?? "",
                                        currentDirectory: String = FileManager.default.currentDirectoryPath) throws -> String {
        if let env = environment["REELQL_MODEL"], !env.isEmpty { return env }
        let exe = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent().path
        for start in [currentDirectory, exe] {
            var dir = URL(fileURLWithPath: start).standardizedFileURL
            while true {
                let candidate = dir.appendingPathComponent("models/demo")
                if FileManager.default.fileExists(atPath: candidate.appendingPathComponent("config.json").path) { return candidate.path }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        throw VLMError.invalidInput("no model given and no bundled models/demo found from \(currentDirectory) or \(exe); pass --model DIR or set REELQL_MODEL")
    }

    /// The description and the answers of one clip or image, from one encoding of it, decoded
    /// together (`parameters.batch`). `onToken(i, id)` sees each token of prompt i (0: the
    /// description), `onDone(i)` its end.
    public func describe(_ input: VisualInput, description: String, questions: [String],
                         onToken: (Int, Int) -> Void = { _, _ in }, onDone: (Int) -> Void = { _ in },
                         cacheBytes: (Int) -> Void = { _ in }) throws -> [Answer] {
        try model.answer([description] + questions, about: input, parameters: parameters, onToken: onToken, onDone: onDone,
                         cacheBytes: cacheBytes)
    }

    public func text(_ prompt: String) throws -> Answer {
        guard let answer = try model.answer([prompt], about: nil, parameters: parameters).first else {
            throw VLMError.invalidInput("no answer to the text prompt")
        }
        return answer
    }
}
