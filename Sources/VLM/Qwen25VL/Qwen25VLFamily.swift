import Foundation
import Media
import Tensors
import Tokenizers

/// Qwen2.5-VL's visual half: Qwen2-VL's processors (its video and image settings) and the
/// window-attention vision tower. A video's input carries its sampling rate, from which its
/// temporal patches get absolute time positions (`second_per_grid_ts`).
public final class Qwen25VLEncoder: VisualEncoder, CheckpointLoadable, @unchecked Sendable {
    public let files: Qwen25VLModelFiles
    public let vision: Qwen25VLVision
    let videoProcessor: Qwen2VLProcessor
    let imageProcessor: Qwen2VLProcessor
    public var directory: String { files.directory }

    init(files: Qwen25VLModelFiles, vision: Qwen25VLVision) {
        self.files = files
        self.vision = vision
        videoProcessor = Qwen2VLProcessor(config: files.preprocessor)
        imageProcessor = Qwen2VLProcessor(config: files.imagePreprocessor)
    }

    public convenience init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType? = nil) throws {
        let files = try Qwen25VLModelFiles(directory: directory)
        self.init(files: files, vision: try Qwen25VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: directory), dtype: visionDType ?? dtype))
    }

    /// qwen-vl-utils' rule for Qwen2.5-VL is Qwen2-VL's (fps, even frame counts, smart_resize
    /// within the processor's bounds).
    public func videoSampling(_ options: SamplingOptions) -> SamplingOptions { videoProcessor.sampling(options) }

    public func imageSampling(_ options: SamplingOptions) -> SamplingOptions { imageProcessor.imageSampling(options) }

    public func videoInput(_ frames: [VideoFrame], fps: Double) throws -> VisualInput {
        guard let first = frames.first else { throw VLMError.invalidInput("no frames to encode") }
        guard fps.isFinite, fps > 0 else { throw VLMError.invalidInput("the sampling rate must be a positive number, got \(fps)") }
        let (pixels, grid) = try videoProcessor.patches(frames: frames.map(RGBImage.init))
        return VisualInput(kind: .video, pixels: pixels, grid: grid, timestamps: frames.map { $0.timestamp - first.timestamp }, fps: fps)
    }

    public func imageInput(_ image: RGBImage) throws -> VisualInput {
        let (pixels, grid) = try imageProcessor.patches(image: image)
        return VisualInput(kind: .image, pixels: pixels, grid: grid, timestamps: [0], fps: nil)
    }

    public func encode(_ input: VisualInput) throws -> (embeddings: Tensor, dtype: ComputeDType) {
        (try vision.forward(pixels: input.pixels, grid: input.grid).merged, vision.dtype)
    }

    /// The model's vision item: a video's seconds per temporal patch = temporal_patch_size / fps.
    func item(_ input: VisualInput) -> Qwen25VLVisionInput {
        guard input.kind == .video, let fps = input.fps else { return Qwen25VLVisionInput(pixels: input.pixels, grid: input.grid, isVideo: false) }
        return Qwen25VLVisionInput(video: input.pixels, grid: input.grid, fps: fps, temporalPatchSize: files.config.vision.temporalPatchSize)
    }
}

/// Qwen2.5-VL behind the model seam: Qwen2-VL's decoder and chat template, the window-attention
/// tower, absolute-time M-RoPE.
public final class Qwen25VLFamily: EncoderBackedModel, CheckpointLoadable, @unchecked Sendable {
    public static let modelTypes = ["qwen2_5_vl"]
    public static let family = "Qwen2.5-VL"

    public let model: Qwen25VLModel
    public let tokenizer: Tokenizer
    public let stopTokens: Set<Int>
    public let encoder: Qwen25VLEncoder
    public var directory: String { model.files.directory }
    public var contextLength: Int { model.contextLength }

    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        model = try Qwen25VLModel(directory: directory, dtype: dtype, visionDType: visionDType)
        tokenizer = try Tokenizer(directory: directory)
        try ModelRegistry.checkTokenizer(tokenizer, against: model.config, directory: directory)
        stopTokens = ModelRegistry.stopTokens(eos: model.files.generation.eosTokenId?.ids ?? model.config.text.eosTokenId?.ids ?? [],
                                              tokenizer: tokenizer)
        encoder = Qwen25VLEncoder(files: model.files, vision: model.vision)
    }

    public static func parts(directory: String) throws -> [ModelPart] {
        let config = try Qwen25VLModelFiles(directory: directory).config
        let v = config.vision, t = config.text
        return [
            ModelPart(name: "vision", summary: "ViT: depth \(v.depth), width \(v.hiddenSize), \(v.numHeads) heads, gated SiLU MLP \(v.intermediateSize), RMSNorm, "
                      + "patch \(v.patchSize)×\(v.patchSize)×\(v.temporalPatchSize), 2D rotary, window attention (\(v.windowSize) px) "
                      + "with full attention in blocks \(v.fullattBlockIndexes)"),
            ModelPart(name: "merger", summary: "RMSNorm, \(v.spatialMergeSize)×\(v.spatialMergeSize) cells → MLP (GELU) → \(v.outHiddenSize)"),
            ModelPart(name: "language", summary: "Qwen2 decoder: \(t.numHiddenLayers) layers, hidden \(t.hiddenSize), \(t.numAttentionHeads) heads / "
                      + "\(t.numKeyValueHeads) KV heads of \(t.headDim), q/k/v biases, SwiGLU MLP \(t.intermediateSize), vocab \(t.vocabSize)"),
            ModelPart(name: "positions", summary: "M-RoPE \(t.mropeSection) with absolute time (\(v.tokensPerSecond) positions per second) "
                      + "θ=\(t.ropeTheta), context \(t.maxPositionEmbeddings)"),
        ]
    }

    public func answerBatch(capacity: Int) -> any AnswerBatch {
        ChatBatch(capacity: capacity, model: model, tokenizer: tokenizer, stopTokens: stopTokens,
                  encode: ChatAnswering.qwen2Template(tokenizer: tokenizer, merge: model.config.vision.spatialMergeSize), visionItem: encoder.item)
    }
}
