import ArgumentParser
import Foundation
import Media
import Tensors
import Pipeline
import Tokenizers
import VLM

/// Generation options shared by the commands that generate text.
struct GenerationOptionGroup: ParsableArguments {
    @Option(parsing: .unconditional, help: "Tokens to generate at most, per answer.")
    var maxNewTokens: Int = 256
    @Option(parsing: .unconditional, help: "Sampling temperature (0: greedy).")
    var temperature: Double = 0
    @Option(parsing: .unconditional, help: "Nucleus sampling: keep the most likely tokens up to this probability mass.")
    var topP: Double?
    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens.")
    var topK: Int?
    @Option(parsing: .unconditional, help: "Penalise tokens already in the prompt or output (> 1).")
    var repetitionPenalty: Double = 1
    @Option(parsing: .unconditional, help: "Random seed for sampling (a whole number ≥ 0).")
    var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Prompts decoding together, \(GenerationParameters.batchRange.lowerBound)–\(GenerationParameters.batchRange.upperBound), one pass over the weights per step (1: one after another; outputs are the same; default \(PipelineSpec.Generation.defaultBatch(dtype: .bf16)), \(PipelineSpec.Generation.defaultBatch(dtype: .int8)) with int8 weights).")
    var batch: Int?

    func validate() throws {
        try requireOption("--max-new-tokens", maxNewTokens, maxNewTokens >= 1, "at least 1")
        try requireOption("--temperature", temperature, temperature.isFinite && temperature >= 0, "a finite number ≥ 0 (0: greedy)")
        if let topP { try requireOption("--top-p", topP, topP > 0 && topP <= 1, "in (0, 1]") }
        if let topK { try requireOption("--top-k", topK, topK >= 1, "at least 1") }
        try requireOption("--repetition-penalty", repetitionPenalty, repetitionPenalty.isFinite && repetitionPenalty > 0,
                          "a finite number > 0 (1: none)")
        if let batch {
            try requireOption("--batch", batch, GenerationParameters.batchRange.contains(batch),
                              "between \(GenerationParameters.batchRange.lowerBound) and \(GenerationParameters.batchRange.upperBound)")
        }
    }
}

struct DescribeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Describe a video or an image (and answer questions about it) with a vision–language checkpoint.",
        discussion: """
        The video is sampled (an image file — jpg, png, webp, … — is prompted as an image), encoded and its \
        prompt prefix prefilled once; the description and every --question are answered from that one \
        encoding. Text streams to stdout as it is generated. Any supported family (config.json model_type).
        """)

    @Argument(help: "The video or image file.")
    var file: String
    @Option(help: "A checkpoint directory (config.json, tokenizer.json, model.safetensors); default: $REELQL_MODEL, else the bundled models/demo.")
    var model: String?
    @Option(help: "The description prompt (default: \"Describe this video.\" or \"Describe this image.\").")
    var prompt: String?
    @Option(name: .customLong("question"), help: "A question about the video (repeatable).")
    var questions: [String] = []
    @Option(help: "Compute precision: f32, bf16 or int8 (int8 weights quantized at load; default: the checkpoint's).")
    var dtype: ComputeDType?
    @Option(name: .customLong("vision-dtype"), help: "The vision tower's precision (default: --dtype), e.g. bf16 with --dtype int8.")
    var visionDType: ComputeDType?
    @OptionGroup var sampling: SamplingOptionGroup
    @OptionGroup var generation: GenerationOptionGroup
    @Flag(help: "Print one JSON object instead of streaming text.")
    var json = false

    func validate() throws {
        if let prompt { try requireUTF8("--prompt", prompt) }
        for q in questions { try requireUTF8("--question", q) }
    }

    struct Answer: Encodable { var question: String; var answer: String; var tokens: [Int] }
    struct Output: Encodable {
        var file: String
        /// video or image
        var kind: String
        var description: String
        var tokens: [Int]
        var answers: [Answer]
        /// The most bytes the prompts' KV caches held at once (the shared prefix counted once).
        var kvCacheBytes: Int
        var timing: [String: Double]
    }

    func run() throws {
        var timing: [String: Double] = [:]
        let directory = try reportingModelErrors { try model ?? ClipModel.defaultDirectory() }
        try reportingModelErrors(input: file, model: directory) {
            let parameters = GenerationParameters(maxNewTokens: generation.maxNewTokens, temperature: generation.temperature,
                                                  topK: generation.topK, topP: generation.topP,
                                                  repetitionPenalty: generation.repetitionPenalty, seed: generation.seed,
                                                  batch: generation.batch ?? PipelineSpec.Generation.defaultBatch(dtype: dtype))
            let clip = try ClipModel(directory: directory, dtype: dtype, visionDType: visionDType, parameters: parameters)
            let kind: VisualKind = Scan.isImage(file) ? .image : .video
            let description = prompt ?? (kind == .image ? "Describe this image." : "Describe this video.")
            let t0 = DispatchTime.now().uptimeNanoseconds
            let options = kind == .image ? sampling.boundingImage(clip.sampling(sampling.options, kind: .image)) : clip.sampling(sampling.options)
            let sampled = try reportingErrors { try VideoDecoder(path: file).sample(options) }
            timing["decode"] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            let input: VisualInput
            if kind == .image {
                guard let frame = sampled.frames.first else { throw VLMError.invalidInput("\(PathBytes.display(file)): the image holds no picture") }
                input = try clip.model.imageInput(RGBImage(frame))
            } else {
                input = try clip.model.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
            }
            // One encoding: the description and every question come from the same session.
            // Answers decode together; they are printed in order: the one being printed streams,
            // later ones are held until their turn.
            var streams = (0...questions.count).map { _ in StreamingDecoder(tokenizer: clip.tokenizer) }
            var held = [String](repeating: "", count: questions.count + 1)
            var finished = Set<Int>(), current = 0
            func out(_ text: String) { if !json { writeResult(text) } }
            let started = DispatchTime.now().uptimeNanoseconds
            var cacheBytes = 0
            let answers = try clip.describe(input, description: description, questions: questions, onToken: { i, id in
                let piece = streams[i].add(id)
                if i == current { out(piece) } else { held[i] += piece }
            }, onDone: { i in
                finished.insert(i)
                while finished.contains(current) {
                    out(streams[current].finish())
                    current += 1
                    guard current <= questions.count else { break }
                    out("\n\nQ: \(questions[current - 1])\n" + held[current])
                }
            }, cacheBytes: { cacheBytes = $0 })
            out("\n")
            timing["vision"] = answers.first?.visionSeconds ?? 0
            timing["prefill"] = answers.first?.prefillSeconds ?? 0
            // The wall time of generation: prompts decoding together overlap, so their own
            // times (first token to last) add up to more than it.
            let wall = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            timing["generate"] = max(0, wall - (timing["vision"] ?? 0) - (timing["prefill"] ?? 0))
            if json, let first = answers.first {
                let rest = answers.dropFirst().map { Answer(question: $0.prompt, answer: $0.text, tokens: $0.tokens) }
                try printJSON(Output(file: file, kind: kind.rawValue, description: first.text, tokens: first.tokens, answers: rest, kvCacheBytes: cacheBytes, timing: timing))
            }
            try checkResultOutput()
            try reportDamage(sampled, file: file)
        }
    }
}

/// `message`, starting with `path` (as people read it) unless it names the path already.
func naming(_ path: String?, _ message: String) -> String {
    guard let path else { return message }
    let shown = PathBytes.display(path)
    // A short path ("." or "m") would be found in almost any message: look for it as a path.
    let named = [shown + ":", shown + "/", "'\(shown)'", "\(shown) "].contains { message.contains($0) } || message.hasSuffix(shown)
    return named ? message : "\(shown): \(message)"
}

/// A model, checkpoint or tokenizer error's message, naming the model directory; nil for other errors.
func modelErrorMessage(_ error: Error, model: String?) -> String? {
    guard error is VLMError || error is TensorError || error is TokenizerError else { return nil }
    return naming(model, error.localizedDescription)
}

/// Runs a command body that loads a model, turning model, checkpoint and tokenizer errors into
/// a clear message and their exit codes (invalid input 2, model 20, checkpoint 21, tokenizer 22).
/// Messages that do not name it already start with the input file (invalid input) or the model
/// directory (the others).
func reportingModelErrors<T>(input: String? = nil, model: String? = nil, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch VLMError.invalidInput(let message) {
        printError("error[invalid-input]: \(naming(input, message))")
        throw ExitCode(2)
    } catch let e as VLMError {
        printError("error[model]: \(naming(model, e.localizedDescription))")
        throw ExitCode(20)
    } catch let e as TensorError {
        // A refused allocation is the machine's limit, not a damaged checkpoint.
        if case .allocationFailed = e {
            printError("error[memory]: \(naming(input ?? model, e.localizedDescription))")
            throw ExitCode(23)
        }
        printError("error[checkpoint]: \(naming(model, e.localizedDescription))")
        throw ExitCode(21)
    } catch let e as TokenizerError {
        printError("error[tokenizer]: \(naming(model, e.localizedDescription))")
        throw ExitCode(22)
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a checkpoint's family, its parts and parameter counts.")

    @Argument(help: "The checkpoint directory.")
    var directory: String
    @Flag(help: "Print one JSON object.")
    var json = false

    struct Output: Encodable {
        var directory: String
        var modelType: String
        var family: String
        var parts: [ModelPart]
        var parameters: [String: Int]
        var dtypes: [String: Int]
        var files: Int
    }

    func run() throws {
        try reportingModelErrors(model: directory) {
            let family = try ModelRegistry.family(directory: directory)
            let parts = try family.parts(directory: directory)
            let ck = try Checkpoint(directory: directory)
            var params: [String: Int] = [:], dtypes: [String: Int] = [:]
            // Sums that cannot overflow: tensors never share bytes, but several sparse files may
            // still claim more values than an Int holds.
            func add(_ n: Int, to sums: inout [String: Int], _ key: String) throws {
                let (sum, overflow) = sums[key, default: 0].addingReportingOverflow(n)
                guard !overflow else { throw TensorError.invalidSafetensors(path: directory, tensor: key, reason: "the checkpoint's tensors hold more than 2⁶³ values") }
                sums[key] = sum
            }
            for name in ck.names {
                let t = try ck.tensor(name)
                let part = name.contains("visual.") ? "vision" : (name.hasPrefix("lm_head") ? "lm_head" : "language")
                try add(t.count, to: &params, part)
                try add(t.count, to: &dtypes, t.dtype.rawValue)
            }
            for n in Array(params.values) { try add(n, to: &params, "total") }
            let out = Output(directory: directory, modelType: try ModelRegistry.modelType(directory: directory), family: family.family,
                             parts: parts, parameters: params, dtypes: dtypes, files: ck.files.count)
            if json { try printJSON(out); return }
            func m(_ n: Int?) -> String { String(format: "%.1fM", Double(n ?? 0) / 1e6) }
            let width = max(9, (parts.map(\.name.count).max() ?? 0) + 2)
            var lines = ["\(directory): \(family.family) (model_type \(out.modelType); \(ck.files.count) safetensors file\(ck.files.count == 1 ? "" : "s"); "
                         + "\(dtypes.map { "\($0.key) \(m($0.value))" }.sorted().joined(separator: ", ")))"]
            for p in parts { lines.append((p.name + ":").padding(toLength: width, withPad: " ", startingAt: 0) + p.summary) }
            lines.append("parameters: vision \(m(params["vision"])), language \(m(params["language"]))"
                         + (params["lm_head"] != nil ? ", lm_head \(m(params["lm_head"]))" : " (tied lm_head)") + ", total \(m(params["total"]))")
            print(lines.joined(separator: "\n"))
        }
    }
}
