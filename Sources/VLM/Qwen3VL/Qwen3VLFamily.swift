import Foundation
import Media
import Tensors
import Tokenizers

/// Qwen3-VL's visual half: its video and image processor settings, and the DeepStack vision
/// tower. Videos are sampled by its video processor's rule (`FrameRule.uniform` within its
/// min/max frames) and sized as one frame stack (factor patch × merge, t̄·h·w within its
/// `size`); a video's input carries the time of each temporal patch, which its prompt states.
public final class Qwen3VLEncoder: VisualEncoder, CheckpointLoadable, @unchecked Sendable {
    public let files: Qwen3VLModelFiles
    public let vision: Qwen3VLVision
    let processor: Qwen3VLProcessor
    public var directory: String { files.directory }

    init(files: Qwen3VLModelFiles, vision: Qwen3VLVision) {
        self.files = files
        self.vision = vision
        processor = Qwen3VLProcessor(files: files)
    }

    public convenience init(directory: String, dtype: ComputeDType?, visionDType: ComputeDType? = nil) throws {
        let files = try Qwen3VLModelFiles(directory: directory)
        self.init(files: files, vision: try Qwen3VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: directory), dtype: visionDType ?? dtype))
    }

    /// `Qwen3VLVideoProcessor`'s rules: n = int(frames / video_fps · fps) within [min_frames,
    /// max_frames] (and `options.maxFrames`), numpy linspace indices over the window; frames sized
    /// together by its smart_resize, factor patch × merge, t̄·h·w within [shortest_edge,
    /// longest_edge]. The requested fps is kept (Qwen3-VL's processors ask for 2, the default);
    /// an explicit per-frame `maxPixels` or `totalPixels` still caps the stack.
    public func videoSampling(_ options: SamplingOptions) -> SamplingOptions {
        var o = options
        let c = files.video
        o.frameRule = .uniform(minFrames: c.minFrames, maxFrames: c.maxFrames)
        o.resize.factor = c.patchSize * c.mergeSize
        o.resize.image = false
        o.resize.stack = FrameStack(temporalFactor: c.temporalPatchSize, minPixels: c.minPixels, maxPixels: c.maxPixels)
        return o
    }

    /// The image processor's bounds (`size.shortest_edge`, `size.longest_edge`) at factor
    /// patch × merge; one frame (the first of an animated image).
    public func imageSampling(_ options: SamplingOptions) -> SamplingOptions {
        var o = options
        let c = files.image
        o.resize = ResizeOptions(native: options.resize.native, minPixels: c.minPixels, maxPixels: c.maxPixels, image: true,
                                 factor: c.patchSize * c.mergeSize)
        o.maxFrames = 1
        o.frameRule = .qwenVLUtils
        return o
    }

    /// The clip's patches, and the seconds of each temporal patch: the frames' times from the
    /// clip's first frame, grouped by the video processor's merge size as
    /// `Qwen3VLProcessor.timestamps` groups index / fps.
    public func videoInput(_ frames: [VideoFrame], fps: Double) throws -> VisualInput {
        guard let first = frames.first else { throw VLMError.invalidInput("no frames to encode") }
        let (pixels, grid) = try processor.patches(frames: frames.map(RGBImage.init))
        let times = try Qwen3VLProcessor.timestamps(frameTimes: frames.map { $0.timestamp - first.timestamp },
                                                    mergeSize: files.video.mergeSize)
        guard times.count == grid.t else {
            throw VLMError.invalidInput("\(times.count) timestamps (merge size \(files.video.mergeSize)) for \(grid.t) temporal patches (temporal patch size \(files.video.temporalPatchSize))")
        }
        return VisualInput(kind: .video, pixels: pixels, grid: grid, timestamps: times, fps: fps)
    }

    public func imageInput(_ image: RGBImage) throws -> VisualInput {
        let (pixels, grid) = try processor.patches(image: image)
        return VisualInput(kind: .image, pixels: pixels, grid: grid, timestamps: [0], fps: nil)
    }

    public func encode(_ input: VisualInput) throws -> (embeddings: Tensor, dtype: ComputeDType) {
        (try vision.forward(pixels: input.pixels, grid: input.grid).merged, vision.dtype)
    }
}

/// Qwen3-VL behind the model seam: `Qwen3VLModel` (DeepStack vision tower, Qwen3 decoder,
/// interleaved M-RoPE), the checkpoint's tokenizer, its processors, Qwen3-VL's chat template (no
/// default system turn) with timestamped video frames in the released (transformers 4.57) layout.
public final class Qwen3VLFamily: EncoderBackedModel, CheckpointLoadable, @unchecked Sendable {
    public static let modelTypes = ["qwen3_vl"]
    public static let family = "Qwen3-VL"

    public let model: Qwen3VLModel
    public let tokenizer: Tokenizer
    public let stopTokens: Set<Int>
    public let encoder: Qwen3VLEncoder
    public var directory: String { model.files.directory }
    public var contextLength: Int { model.contextLength }

    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        model = try Qwen3VLModel(directory: directory, dtype: dtype, visionDType: visionDType)
        tokenizer = try Tokenizer(directory: directory)
        try ModelRegistry.checkTokenizer(tokenizer, against: model.config, directory: directory)
        stopTokens = ModelRegistry.stopTokens(eos: model.files.generation.eosTokenId?.ids ?? model.config.text.eosTokenId?.ids ?? [],
                                              tokenizer: tokenizer)
        encoder = Qwen3VLEncoder(files: model.files, vision: model.vision)
    }

    public static func parts(directory: String) throws -> [ModelPart] {
        let config = try Qwen3VLModelFiles(directory: directory).config
        let v = config.vision, t = config.text
        return [
            ModelPart(name: "vision", summary: "ViT: depth \(v.depth), width \(v.hiddenSize), \(v.numHeads) heads, MLP \(v.intermediateSize) (\(v.hiddenAct)), LayerNorm, "
                      + "patch \(v.patchSize)×\(v.patchSize)×\(v.temporalPatchSize), learned \(v.gridSide)×\(v.gridSide) position grid (interpolated) + 2D rotary"),
            ModelPart(name: "merger", summary: "\(v.spatialMergeSize)×\(v.spatialMergeSize) cells → MLP (GELU) → \(v.outHiddenSize); "
                      + "DeepStack mergers after blocks \(v.deepstackVisualIndexes) feed decoder layers 0…\(v.deepstackVisualIndexes.count - 1)"),
            ModelPart(name: "language", summary: "Qwen3 decoder: \(t.numHiddenLayers) layers, hidden \(t.hiddenSize), \(t.numAttentionHeads) heads / "
                      + "\(t.numKeyValueHeads) KV heads of \(t.headDim), q/k RMSNorm, SwiGLU MLP \(t.intermediateSize), vocab \(t.vocabSize)"
                      + (config.tieWordEmbeddings ? ", tied embeddings" : "")),
            ModelPart(name: "positions", summary: "interleaved M-RoPE \(t.mropeSection) (t, h, w) θ=\(t.ropeTheta), frame times as text, "
                      + "context \(t.maxPositionEmbeddings)"),
        ]
    }

    public func answerBatch(capacity: Int) -> any AnswerBatch {
        ChatBatch(capacity: capacity, model: model, tokenizer: tokenizer, stopTokens: stopTokens,
                  encode: Self.template(tokenizer: tokenizer, merge: model.config.vision.spatialMergeSize), visionItem: { VisionInput(pixels: $0.pixels, grid: $0.grid, isVideo: $0.kind == .video) })
    }

    /// Qwen3-VL's chat template, one user turn: a video as its timestamped frames (released
    /// layout: `<t seconds><|vision_start|>` + h·w / merge² pads + `<|vision_end|>` per temporal
    /// patch), an image as t·h·w / merge² pads, then the text; text alone without either.
    static func template(tokenizer: Tokenizer, merge: Int) -> ChatAnswering.Encoder {
        { text, input in
            guard let input else { return try Qwen3VLPrompt.encode([ChatMessage(role: "user", text: text)], tokenizer: tokenizer) }
            guard merge > 0 else { throw VLMError.invalidInput("spatial merge size must be > 0") }
            switch input.kind {
            case .video:
                let video = try Qwen3VLPromptVideo(grid: input.grid, timestamps: input.timestamps, merge: merge)
                return try Qwen3VLPrompt.encode([ChatMessage(role: "user", content: [.video, .text(text)])], tokenizer: tokenizer,
                                                videos: [video], layout: .released)
            case .image:
                return try Qwen3VLPrompt.encode([ChatMessage(role: "user", content: [.image, .text(text)])], tokenizer: tokenizer,
                                                imageTokens: [input.grid.patches / (merge * merge)], layout: .released)
            }
        }
    }
}
