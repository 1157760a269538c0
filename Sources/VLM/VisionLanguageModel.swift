import Foundation
import Media
import Tensors
import Tokenizers

// The one seam between model families and their callers (Pipeline, the CLI): a checkpoint is
// loaded by config.json's `model_type` through `ModelRegistry`, says how frames are to be sampled
// and sized for it, turns sampled frames or an image into its input, and answers several prompts
// from one encoding of that input. Callers never name a family. Adding a family is one folder
// under Sources/VLM/ with a type conforming to `VisionLanguageModel`, and one line in
// `ModelRegistry.families`.

/// Whether a visual input is a video clip or a still image (prompted as `<|video_pad|>` or
/// `<|image_pad|>`, processed by the video or the image processor).
public enum VisualKind: String, Sendable, Codable, CaseIterable {
    case video, image
}

/// A clip or an image, processed for one model: what its vision tower takes.
public struct VisualInput: Sendable {
    public var kind: VisualKind
    /// Patches [t·h·w, C·T·P·P] in the family's order.
    public var pixels: Tensor
    public var grid: VisionGrid
    /// Presentation times of the sampled frames, seconds from the clip's first frame (families
    /// that put time into positions or text use them; [0] for an image). Qwen3-VL states the time
    /// of each temporal patch instead: one per `grid.t`, as its prompt writes them.
    public var timestamps: [Double]
    /// The rate the frames were sampled at (frames per second of video time; nil for an image).
    public var fps: Double?

    public init(kind: VisualKind, pixels: Tensor, grid: VisionGrid, timestamps: [Double], fps: Double?) {
        self.kind = kind
        self.pixels = pixels
        self.grid = grid
        self.timestamps = timestamps
        self.fps = fps
    }
}

/// One generated answer, plain: the store turns it into a row.
public struct Answer: Sendable {
    public var prompt: String
    public var text: String
    /// The generated token ids.
    public var tokens: [Int]
    /// The whole prompt's length in tokens (template, vision pads, text).
    public var promptTokens: Int
    /// Encoding the visual input and prefilling the shared prefix (on the first answer only: the
    /// others reuse that work).
    public var visionSeconds: Double
    public var prefillSeconds: Double
    public var generateSeconds: Double

    public init(prompt: String, text: String, tokens: [Int], promptTokens: Int, visionSeconds: Double = 0,
                prefillSeconds: Double = 0, generateSeconds: Double = 0) {
        self.prompt = prompt
        self.text = text
        self.tokens = tokens
        self.promptTokens = promptTokens
        self.visionSeconds = visionSeconds
        self.prefillSeconds = prefillSeconds
        self.generateSeconds = generateSeconds
    }
}

/// A named part of a model and what it is made of, for `reelql inspect`.
public struct ModelPart: Sendable, Codable, Equatable {
    public var name: String
    public var summary: String
    public init(name: String, summary: String) { self.name = name; self.summary = summary }
}

/// The visual half of a model: how frames are sampled and sized for it, how they become its
/// input, and its vision tower. Loading it reads no tokenizer and no language weights.
public protocol VisualEncoder: AnyObject, Sendable {
    var directory: String { get }
    /// How this model's video frames are sampled and sized: the requested options within what
    /// its processor allows (frame-count rule, pixel bounds, patch and merge multiples).
    func videoSampling(_ options: SamplingOptions) -> SamplingOptions
    /// How a still image is sized for this model (its image processor's bounds).
    func imageSampling(_ options: SamplingOptions) -> SamplingOptions
    /// Sampled frames of one clip (sized by `videoSampling`) → the model's input.
    func videoInput(_ frames: [VideoFrame], fps: Double) throws -> VisualInput
    /// One image (sized by `imageSampling`) → the model's input.
    func imageInput(_ image: RGBImage) throws -> VisualInput
    /// The vision tower's output for one input: one embedding per visual token [tokens, hidden],
    /// and the precision it was computed in.
    func encode(_ input: VisualInput) throws -> (embeddings: Tensor, dtype: ComputeDType)
}

/// A vision–language model family, as Pipeline and the CLI use it.
public protocol VisionLanguageModel: VisualEncoder {
    /// config.json `model_type` values this family loads.
    static var modelTypes: [String] { get }
    /// The family's name for people ("Qwen2-VL").
    static var family: String { get }
    /// Loads a checkpoint directory (config, processor settings, tokenizer, weights), strictly.
    /// `visionDType` (nil: `dtype`) is the tower's precision.
    static func load(directory: String, dtype: ComputeDType?, visionDType: ComputeDType?) throws -> Self
    /// Loads only the visual half (config, processor settings, vision weights).
    static func loadEncoder(directory: String, dtype: ComputeDType?, visionDType: ComputeDType?) throws -> any VisualEncoder
    /// A checkpoint's parts, for `inspect` (from its configuration alone: no weights are read).
    static func parts(directory: String) throws -> [ModelPart]

    var tokenizer: Tokenizer { get }
    /// Generation stops after one of these: the checkpoint's eos ids, <|im_end|>, <|endoftext|>.
    var stopTokens: Set<Int> { get }
    /// Prompt plus answer fit in this many positions (`max_position_embeddings`).
    var contextLength: Int { get }

    /// A batch in which prompts about several inputs decode together, at most `capacity`
    /// sequences at a time (`AnswerBatch`).
    func answerBatch(capacity: Int) -> any AnswerBatch
}

/// Where `AnswerBatch.submit` is: the vision tower, or the prefill of the prompt prefix.
public enum AnswerStage: Sendable { case encoding, prefill }

/// Prompts about several inputs, answered together: `submit` encodes an input (its vision tower
/// and the prefill of its prompt prefix, at once) and queues one sequence per prompt; `step`
/// advances every decoding sequence by one token in one pass over the weights, letting waiting
/// sequences join as others finish. An input's `done` receives its answers, in prompt order,
/// when its last sequence finishes. Each answer is exactly what it is decoded alone. One caller
/// drives a batch.
public protocol AnswerBatch: AnyObject {
    var capacity: Int { get }
    /// Told when `submit` starts encoding its input and when it starts the prefill.
    var onStage: ((AnswerStage) -> Void)? { get set }
    /// Sequences decoding now, and queued for a place.
    var activeCount: Int { get }
    var waitingCount: Int { get }
    /// The most bytes the decoding sequences' KV caches held at once.
    var peakCacheBytes: Int { get }
    /// `onToken(i, id)` sees each token of prompt i, `onPromptDone(i)` its end.
    func submit(_ prompts: [String], about input: VisualInput?, parameters: GenerationParameters,
                onToken: @escaping (Int, Int) -> Void, onPromptDone: @escaping (Int) -> Void,
                done: @escaping ([Answer]) -> Void) throws
    /// One decoding step; false once no sequence is left.
    @discardableResult func step() throws -> Bool
}

extension AnswerBatch {
    /// Whether another input should be submitted now: fewer sequences decode or wait than the
    /// batch holds. Its prompts may then exceed the capacity by a few; those wait for places,
    /// so the batch stays full as sequences finish.
    public var hasRoom: Bool { activeCount + waitingCount < capacity }
}

/// A family whose visual half is its own encoder object: the `VisualEncoder` methods forward to it.
public protocol EncoderBackedModel: VisionLanguageModel {
    associatedtype Encoder: VisualEncoder
    var encoder: Encoder { get }
}

/// Something loaded from a checkpoint directory: a family, its encoder.
public protocol CheckpointLoadable {
    init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType?) throws
}

extension EncoderBackedModel where Self: CheckpointLoadable, Encoder: CheckpointLoadable {
    public static func load(directory: String, dtype: ComputeDType?, visionDType: ComputeDType?) throws -> Self {
        try Self(directory: directory, dtype: dtype, visionDType: visionDType)
    }

    public static func loadEncoder(directory: String, dtype: ComputeDType?, visionDType: ComputeDType?) throws -> any VisualEncoder {
        try Encoder(directory: directory, dtype: dtype, visionDType: visionDType)
    }
}

extension EncoderBackedModel {
    public func videoSampling(_ options: SamplingOptions) -> SamplingOptions { encoder.videoSampling(options) }
    public func imageSampling(_ options: SamplingOptions) -> SamplingOptions { encoder.imageSampling(options) }
    public func videoInput(_ frames: [VideoFrame], fps: Double) throws -> VisualInput { try encoder.videoInput(frames, fps: fps) }
    public func imageInput(_ image: RGBImage) throws -> VisualInput { try encoder.imageInput(image) }
    public func encode(_ input: VisualInput) throws -> (embeddings: Tensor, dtype: ComputeDType) { try encoder.encode(input) }
}

extension VisionLanguageModel {
    public var family: String { Self.family }

    /// Answers `prompts` in order from ONE encoding of `input` (nil: text only): the visual input
    /// is encoded and the prompt prefix prefilled once, every prompt is answered from a fork of
    /// that state; the answers decode together, `parameters.batch` at a time, each as it would
    /// alone. `onToken(i, id)` sees each token of prompt i, `onDone(i)` its end.
    /// `cacheBytes` receives the most bytes the answers' KV caches held at once.
    public func answer(_ prompts: [String], about input: VisualInput?, parameters: GenerationParameters,
                       onToken: (Int, Int) -> Void = { _, _ in }, onDone: (Int) -> Void = { _ in },
                       cacheBytes: (Int) -> Void = { _ in }) throws -> [Answer] {
        try withoutActuallyEscaping(onToken) { onToken in
            try withoutActuallyEscaping(onDone) { onDone in
                let batch = answerBatch(capacity: parameters.batch)
                var answers: [Answer] = []
                try batch.submit(prompts, about: input, parameters: parameters, onToken: onToken, onPromptDone: onDone) { answers = $0 }
                while try batch.step() {}
                cacheBytes(batch.peakCacheBytes)
                return answers
            }
        }
    }
}

/// The families reelql runs, keyed by config.json's `model_type`.
public enum ModelRegistry {
    /// One line per family.
    public static let families: [any VisionLanguageModel.Type] = [
        Qwen2VLFamily.self,
        Qwen25VLFamily.self,
        Qwen3VLFamily.self,
    ]

    /// Every supported `model_type`.
    public static var supportedModelTypes: [String] { families.flatMap { $0.modelTypes }.sorted() }

    /// The `model_type` a checkpoint's config.json declares.
    public static func modelType(directory: String) throws -> String {
        let path = (directory as NSString).appendingPathComponent("config.json")
        struct Declared: Decodable { var modelType: String?; enum CodingKeys: String, CodingKey { case modelType = "model_type" } }
        let declared = try Qwen2VLModelFiles.decode(Declared.self, at: path)
        guard let type = declared.modelType else {
            throw VLMError.invalidConfig(path: path, key: "model_type", reason: "missing (supported: \(supportedModelTypes.joined(separator: ", ")))")
        }
        return type
    }

    /// The family that loads a checkpoint, or an error naming its `model_type` and the supported ones.
    public static func family(directory: String) throws -> any VisionLanguageModel.Type {
        let type = try modelType(directory: directory)
        guard let family = families.first(where: { $0.modelTypes.contains(type) }) else {
            throw VLMError.unsupportedModel(path: (directory as NSString).appendingPathComponent("config.json"), modelType: type,
                                            supported: supportedModelTypes)
        }
        return family
    }

    /// The tokenizer fits the configuration: its ids are within the model's `vocab_size` (an id
    /// past it indexed no embedding: every prompt failed, blamed on the video), and the four
    /// vision tokens are added tokens (matched whole in a prompt, never split into pieces) with
    /// four different ids, the ones config.json names (a mismatch gave prompts without a single
    /// pad, and an error that blamed the video). `config` is the directory's config.json.
    public static func checkTokenizer(_ tokenizer: Tokenizer, against ids: some VisionTokenIDs, directory: String) throws {
        let config = (directory as NSString).appendingPathComponent("config.json"), vocabSize = ids.vocabSize
        if tokenizer.vocabularySize > vocabSize {
            let top = tokenizer.vocabularySize - 1
            throw VLMError.invalidConfig(path: config, key: "vocab_size", reason: "\(vocabSize) is too small for \(tokenizer.path), whose ids go up to \(top) ('\(tokenizer.token(top) ?? "?")')")
        }
        var seen: [Int: String] = [:]
        for (key, id, token) in [("image_token_id", ids.imageTokenId, "<|image_pad|>"), ("video_token_id", ids.videoTokenId, "<|video_pad|>"),
                                 ("vision_start_token_id", ids.visionStartTokenId, "<|vision_start|>"),
                                 ("vision_end_token_id", ids.visionEndTokenId, "<|vision_end|>")] {
            guard let own = tokenizer.addedTokens.first(where: { $0.content.utf8.elementsEqual(token.utf8) })?.id else {
                throw VLMError.invalidConfig(path: tokenizer.path, key: "added_tokens",
                                             reason: "\(token) is not among them (a prompt would split it into pieces); \(config) names it as \(key) \(id)")
            }
            guard own == id else {
                throw VLMError.invalidConfig(path: config, key: key, reason: "\(id) is not the tokenizer's \(token), which is \(own) (\(tokenizer.path))")
            }
            if let other = seen.updateValue(key, forKey: id) {
                throw VLMError.invalidConfig(path: config, key: key, reason: "\(id) is also \(other): the vision tokens need ids of their own")
            }
        }
    }

    /// Where a chat model's answer ends: the checkpoint's eos ids, <|im_end|> and <|endoftext|>.
    public static func stopTokens(eos: [Int], tokenizer: Tokenizer) -> Set<Int> {
        Set(eos).union(["<|im_end|>", "<|endoftext|>"].compactMap { tokenizer.id($0) })
    }

    /// Loads the visual half of a checkpoint (no tokenizer, no language weights).
    public static func loadEncoder(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws -> any VisualEncoder {
        try family(directory: directory).loadEncoder(directory: directory, dtype: dtype, visionDType: visionDType)
    }

    /// Loads a checkpoint with the family its `model_type` names.
    public static func load(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws -> any VisionLanguageModel {
        try family(directory: directory).load(directory: directory, dtype: dtype, visionDType: visionDType)
    }
}

/// The token ids a family's config.json gives its vision tokens, and its vocabulary size: what
/// `ModelRegistry.checkTokenizer` compares with the tokenizer.
public protocol VisionTokenIDs {
    var imageTokenId: Int { get }
    var videoTokenId: Int { get }
    var visionStartTokenId: Int { get }
    var visionEndTokenId: Int { get }
    var vocabSize: Int { get }
}

extension Qwen2VLConfiguration: VisionTokenIDs { public var vocabSize: Int { text.vocabSize } }
extension Qwen25VLConfiguration: VisionTokenIDs { public var vocabSize: Int { text.vocabSize } }
extension Qwen3VLConfiguration: VisionTokenIDs { public var vocabSize: Int { text.vocabSize } }
