import Foundation
import Tensors

/// A Qwen3-VL checkpoint (dense): vision tower, language model and their configuration.
/// Port of transformers 4.57's `Qwen3VLForConditionalGeneration` (forward, get_rope_index,
/// generate), with the API of `Qwen2VLModel`.
public final class Qwen3VLModel: @unchecked Sendable {
    public let files: Qwen3VLModelFiles
    public let vision: Qwen3VLVision
    public let language: Qwen3VLLanguage
    public var config: Qwen3VLConfiguration { files.config }

    /// `visionDType` nil: the tower computes in `dtype` too.
    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        files = try Qwen3VLModelFiles(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        vision = try Qwen3VLVision(config: files.config.vision, checkpoint: checkpoint, dtype: visionDType ?? dtype)
        language = try Qwen3VLLanguage(config: files.config.text, tieWordEmbeddings: files.config.tieWordEmbeddings,
                                       checkpoint: checkpoint, dtype: dtype)
    }

    /// A prompt ready for the decoder: embeddings with the vision embeddings spliced in at the pad
    /// tokens, the DeepStack features for those positions, and the M-RoPE positions.
    public struct Prepared: @unchecked Sendable {
        public var ids: [Int]
        public var embeddings: Tensor
        public var deepstack: Qwen3VLDeepStack?
        public var positions: [[Int]]
        public var ropeDelta: Int
    }

    /// The model's context: `max_position_embeddings` tokens.
    public var contextLength: Int { config.text.maxPositionEmbeddings }

    /// The KV cache's shape: decoder layers and key/value width per position.
    public var cacheLayout: (layers: Int, width: Int) { (config.text.numHiddenLayers, config.text.numKeyValueHeads * config.text.headDim) }

    /// Embeds `ids` and splices in the vision inputs: images fill the image pads and videos the
    /// video pads, each modality in order (`masked_scatter`); the DeepStack features of every
    /// filled position are gathered in prompt order (the joint visual mask of `Qwen3VLModel.forward`).
    public func prepare(ids: [Int], vision inputs: [VisionInput]) throws -> Prepared {
        let c = config, h = c.text.hiddenSize
        try checkContext(ids.count)
        let x = try language.embed(ids)
        let imagePads = ids.indices.filter { ids[$0] == c.imageTokenId }
        let videoPads = ids.indices.filter { ids[$0] == c.videoTokenId }
        let visualRows = ids.indices.filter { ids[$0] == c.imageTokenId || ids[$0] == c.videoTokenId }
        var joint = [Int: Int]()
        for (i, r) in visualRows.enumerated() { joint[r] = i }
        let layers = c.vision.deepstackVisualIndexes.count
        let features = try (0..<(inputs.isEmpty ? 0 : layers)).map { _ in
            try Tensor(zeros: [visualRows.count, h], what: "DeepStack features")
        }
        var imageCursor = 0, videoCursor = 0
        for input in inputs {
            let out = try vision.forward(pixels: input.pixels, grid: input.grid)
            let n = out.merged.shape[0]
            let pads = input.isVideo ? videoPads : imagePads
            let cursor = input.isVideo ? videoCursor : imageCursor
            guard cursor + n <= pads.count else {
                throw VLMError.invalidInput("the prompt has fewer \(input.isVideo ? "video" : "image") pad tokens (\(pads.count)) than the embeddings of its vision inputs")
            }
            for row in 0..<n {
                let p = pads[cursor + row]
                (x.pointer + p * h).update(from: out.merged.pointer + row * h, count: h)
                for (k, f) in out.deepstack.enumerated() {
                    (features[k].pointer + joint[p]! * h).update(from: f.pointer + row * h, count: h)
                }
            }
            if input.isVideo { videoCursor += n } else { imageCursor += n }
        }
        guard inputs.isEmpty || (imageCursor == imagePads.count && videoCursor == videoPads.count) else {
            throw VLMError.invalidInput("the prompt has \(imagePads.count) image and \(videoPads.count) video pad tokens; the vision inputs give \(imageCursor) and \(videoCursor) embeddings")
        }
        let (positions, delta) = try Qwen3VLRoPE.positions(
            ids: ids, imageToken: c.imageTokenId, videoToken: c.videoTokenId,
            inputs: inputs.map { .init(grid: $0.grid, isVideo: $0.isVideo) }, merge: c.vision.spatialMergeSize)
        let deepstack = inputs.isEmpty ? nil : Qwen3VLDeepStack(rows: visualRows, features: features)
        return Prepared(ids: ids, embeddings: x, deepstack: deepstack, positions: positions, ropeDelta: delta)
    }

    /// Runs a prepared prompt through the decoder into `cache`; returns its final hidden states.
    public func prefill(_ p: Prepared, cache: KVCache) throws -> Tensor {
        let t = config.text
        let (cos, sin) = try Qwen3VLRoPE.cosSin(positions: p.positions, theta: t.ropeTheta, headDim: t.headDim, section: t.mropeSection)
        return try language.forward(p.embeddings, cos: cos, sin: sin, cache: cache, deepstack: p.deepstack)
    }

    /// Logits of every position of a prompt [T, vocab].
    public func logits(ids: [Int], vision: [VisionInput] = []) throws -> Tensor {
        let p = try prepare(ids: ids, vision: vision)
        let cache = try makeCache(capacity: ids.count)
        return try language.logits(try prefill(p, cache: cache))
    }

}
