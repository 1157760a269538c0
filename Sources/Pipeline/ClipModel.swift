import Foundation
import Media
import Tensors
import Tokenizers
import VLM

/// A checkpoint ready to describe clips: model, tokenizer, stop tokens and generation settings.
public final class ClipModel: @unchecked Sendable {
    public let model: Qwen2VLModel
    public let tokenizer: Tokenizer
    public let parameters: GenerationParameters
    public let directory: String

    public convenience init(directory: String, dtype: ComputeDType?, generation: PipelineSpec.Generation) throws {
        try self.init(directory: directory, dtype: dtype) { stop in
            GenerationParameters(maxNewTokens: generation.maxNewTokens, temperature: generation.temperature,
                                 topK: generation.topK, topP: generation.topP,
                                 repetitionPenalty: generation.repetitionPenalty, seed: generation.seed, stopTokens: stop)
        }
    }

    /// `parameters` receives the stop tokens: the checkpoint's eos ids, <|im_end|> and <|endoftext|>.
    public init(directory: String, dtype: ComputeDType?, parameters: (Set<Int>) -> GenerationParameters) throws {
        self.directory = directory
        model = try Qwen2VLModel(directory: directory, dtype: dtype)
        tokenizer = try Tokenizer(directory: directory)
        var stop = Set(model.files.generation.eosTokenId?.ids ?? model.config.text.eosTokenId?.ids ?? [])
        for special in ["<|im_end|>", "<|endoftext|>"] { if let id = tokenizer.id(special) { stop.insert(id) } }
        self.parameters = parameters(stop)
    }

    /// Sampling options for this checkpoint: frame sizes within its processor's maximum.
    public func sampling(_ options: SamplingOptions) -> SamplingOptions {
        Qwen2VLProcessor(config: model.files.preprocessor).sampling(options)
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

    public struct Timing: Sendable { public var vision = 0.0, prefill = 0.0, generate = 0.0 }

    /// The description and the answers of one clip, from one encoding of it. `onStart(i)` is called
    /// before prompt i (0: the description) and `onToken(i, id)` with each token generated for it.
    public func describe(pixels: Tensor, grid: VisionGrid, description: String, questions: [String],
                         onStart: (Int) -> Void = { _ in }, onToken: (Int, Int) -> Void = { _, _ in }) throws -> [Store.ResultRow] {
        let merge = model.config.vision.spatialMergeSize
        let videoTokens = grid.patches / (merge * merge)
        func ids(_ text: String) throws -> [Int] {
            try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [.video, .text(text)])], tokenizer: tokenizer, videoTokens: [videoTokens])
        }
        let first = try ids(description)
        guard let end = tokenizer.id("<|vision_end|>"), let cut = first.firstIndex(of: end) else {
            throw VLMError.invalidInput("\(directory): the tokenizer has no <|vision_end|>")
        }
        let prefix = Array(first[...cut])
        let session = try Qwen2VLSession(model: model, prefix: prefix, vision: [VisionInput(pixels: pixels, grid: grid)])
        var rows: [Store.ResultRow] = []
        for (i, (kind, prompt)) in ([("description", description)] + questions.map { ("answer", $0) }).enumerated() {
            let full = i == 0 ? first : try ids(prompt)
            guard Array(full[..<prefix.count]) == prefix else { throw VLMError.invalidInput("prompt \(i) does not share the clip's prefix") }
            onStart(i)
            let start = DispatchTime.now().uptimeNanoseconds
            let tokens = try session.generate(continuation: Array(full[prefix.count...]), parameters: parameters) { onToken(i, $0) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            rows.append(Store.ResultRow(kind: kind, prompt: prompt, text: tokenizer.decode(tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines),
                                        tokens: tokens, promptTokens: full.count, generatedTokens: tokens.count,
                                        visionSeconds: i == 0 ? session.timing.vision : 0, prefillSeconds: i == 0 ? session.timing.prefill : 0,
                                        generateSeconds: seconds))
        }
        return rows
    }

    /// A text-only answer (the per-video summary).
    public func text(_ prompt: String) throws -> Store.ResultRow {
        let ids = try Qwen2VLPrompt.encode([ChatMessage(role: "user", text: prompt)], tokenizer: tokenizer)
        let start = DispatchTime.now().uptimeNanoseconds
        let session = try Qwen2VLSession(model: model, prefix: Array(ids.prefix(1)), vision: [])
        let tokens = try session.generate(continuation: Array(ids.dropFirst()), parameters: parameters)
        return Store.ResultRow(kind: "summary", prompt: prompt, text: tokenizer.decode(tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines),
                               promptTokens: ids.count, generatedTokens: tokens.count, visionSeconds: 0, prefillSeconds: 0,
                               generateSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}
