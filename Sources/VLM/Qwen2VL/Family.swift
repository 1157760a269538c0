import Foundation
import Media
import Tensors
import Tokenizers

/// Qwen2-VL's visual half: its processors (video and image settings) and its vision tower.
public final class Qwen2VLEncoder: VisualEncoder, CheckpointLoadable, @unchecked Sendable {
    public let files: Qwen2VLModelFiles
    public let vision: Qwen2VLVision
    let videoProcessor: Qwen2VLProcessor
    let imageProcessor: Qwen2VLProcessor
    public var directory: String { files.directory }

    init(files: Qwen2VLModelFiles, vision: Qwen2VLVision) {
        self.files = files
        self.vision = vision
        videoProcessor = Qwen2VLProcessor(config: files.preprocessor)
        imageProcessor = Qwen2VLProcessor(config: files.imagePreprocessor)
    }

    public convenience init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType? = nil) throws {
        let files = try Qwen2VLModelFiles(directory: directory)
        self.init(files: files, vision: try Qwen2VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: directory), dtype: visionDType ?? dtype))
    }

    public func videoSampling(_ options: SamplingOptions) -> SamplingOptions {
        videoProcessor.sampling(options)
    }

    public func imageSampling(_ options: SamplingOptions) -> SamplingOptions { imageProcessor.imageSampling(options) }

    public func videoInput(_ frames: [VideoFrame], fps: Double) throws -> VisualInput {
        guard let first = frames.first else { throw VLMError.invalidInput("no frames to encode") }
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
}

/// Qwen2-VL behind the model seam: `Qwen2VLModel` (vision tower and decoder), the checkpoint's
/// tokenizer, its video and image processors, and the shared-prefix sessions of Generation.swift.
public final class Qwen2VLFamily: EncoderBackedModel, CheckpointLoadable, @unchecked Sendable {
    public static let modelTypes = ["qwen2_vl"]
    public static let family = "Qwen2-VL"

    public let model: Qwen2VLModel
    public let tokenizer: Tokenizer
    public let stopTokens: Set<Int>
    public let encoder: Qwen2VLEncoder
    public var directory: String { model.files.directory }
    public var contextLength: Int { model.contextLength }

    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        model = try Qwen2VLModel(directory: directory, dtype: dtype, visionDType: visionDType)
        tokenizer = try Tokenizer(directory: directory)
        try ModelRegistry.checkTokenizer(tokenizer, against: model.config, directory: directory)
        stopTokens = ModelRegistry.stopTokens(eos: model.files.generation.eosTokenId?.ids ?? model.config.text.eosTokenId?.ids ?? [],
                                              tokenizer: tokenizer)
        encoder = Qwen2VLEncoder(files: model.files, vision: model.vision)
    }

    public static func parts(directory: String) throws -> [ModelPart] {
        let config = try Qwen2VLModelFiles(directory: directory, modelTypes: modelTypes).config
        let v = config.vision, t = config.text
        return [
            ModelPart(name: "vision", summary: "ViT: depth \(v.depth), width \(v.embedDim), \(v.numHeads) heads, MLP \(v.mlpHiddenDim) (\(v.hiddenAct)), "
                      + "patch \(v.patchSize)×\(v.patchSize)×\(v.temporalPatchSize), 2D rotary, attention per temporal patch, LayerNorm"),
            ModelPart(name: "merger", summary: "PatchMerger: LayerNorm, \(v.spatialMergeSize)×\(v.spatialMergeSize) cells → MLP (GELU) → \(v.hiddenSize)"),
            ModelPart(name: "language", summary: "Qwen2 decoder: \(t.numHiddenLayers) layers, hidden \(t.hiddenSize), \(t.numAttentionHeads) heads / "
                      + "\(t.numKeyValueHeads) KV heads of \(t.headDim), q/k/v biases, SwiGLU MLP \(t.intermediateSize), vocab \(t.vocabSize)"),
            ModelPart(name: "positions", summary: "M-RoPE \(t.mropeSection) (t, h, w) θ=\(t.ropeTheta), context \(t.maxPositionEmbeddings)"),
        ]
    }

    public func answerBatch(capacity: Int) -> any AnswerBatch {
        ChatBatch(capacity: capacity, model: model, tokenizer: tokenizer, stopTokens: stopTokens,
                  encode: ChatAnswering.qwen2Template(tokenizer: tokenizer, merge: model.config.vision.spatialMergeSize), visionItem: { VisionInput(pixels: $0.pixels, grid: $0.grid, isVideo: $0.kind == .video) })
    }
}
