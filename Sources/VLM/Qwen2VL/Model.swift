import Foundation
import Tensors

/// A vision input of a prompt: its pixels, grid, and whether it is a video or an image.
public struct VisionInput: Sendable {
    public var pixels: Tensor
    public var grid: VisionGrid
    public var isVideo: Bool
    public init(pixels: Tensor, grid: VisionGrid, isVideo: Bool = true) {
        self.pixels = pixels
        self.grid = grid
        self.isVideo = isVideo
    }
}

/// A Qwen2-VL checkpoint: vision tower, language model and their configuration.
/// Port of transformers' `Qwen2VLForConditionalGeneration` (forward, get_rope_index, generate).
public final class Qwen2VLModel: @unchecked Sendable {
    public let files: Qwen2VLModelFiles
    public let vision: Qwen2VLVision
    public let language: Qwen2VLLanguage
    public var config: Qwen2VLConfiguration { files.config }

    /// `visionDType` nil: the tower computes in `dtype` too.
    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        files = try Qwen2VLModelFiles(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        vision = try Qwen2VLVision(config: files.config.vision, checkpoint: checkpoint, dtype: visionDType ?? dtype)
        language = try Qwen2VLLanguage(config: files.config.text, tieWordEmbeddings: files.config.tieWordEmbeddings,
                                       checkpoint: checkpoint, dtype: dtype)
    }

    /// A prompt ready for the decoder: embeddings with the vision embeddings spliced in at the
    /// pad tokens, and its M-RoPE positions.
    public struct Prepared {
        public var ids: [Int]
        public var embeddings: Tensor
        public var positions: [[Int]]
        public var ropeDelta: Int
    }

    /// The model's context: `max_position_embeddings` tokens.
    public var contextLength: Int { config.text.maxPositionEmbeddings }

    /// The KV cache's shape: decoder layers and key/value width per position.
    public var cacheLayout: (layers: Int, width: Int) { (config.text.numHiddenLayers, config.text.numKeyValueHeads * config.text.headDim) }

    public func prepare(ids: [Int], vision inputs: [VisionInput]) throws -> Prepared {
        let c = config
        try checkContext(ids.count)
        let x = try language.embed(ids)
        // Splice each vision block's embeddings, in order, over its pad tokens.
        var cursor = 0
        for input in inputs {
            let merged = try vision.forward(pixels: input.pixels, grid: input.grid).merged // [t·h·w / merge², hidden]
            try spliceVision(merged, into: x, ids: ids, pad: input.isVideo ? c.videoTokenId : c.imageTokenId, grid: input.grid, cursor: &cursor)
        }
        let (positions, delta) = try self.positions(ids: ids, vision: inputs)
        return Prepared(ids: ids, embeddings: x, positions: positions, ropeDelta: delta)
    }

    /// Runs a prepared prompt (or its continuation) through the decoder into `cache`.
    public func prefill(_ p: Prepared, cache: KVCache) throws -> Tensor {
        try language.forward(p.embeddings, positions: p.positions, cache: cache)
    }

    /// Logits of every position of a prompt [T, vocab].
    public func logits(ids: [Int], vision: [VisionInput] = []) throws -> Tensor {
        try checkContext(ids.count)
        let p = try prepare(ids: ids, vision: vision)
        let cache = try makeCache(capacity: ids.count)
        return try language.logits(try prefill(p, cache: cache))
    }

}

/// Index of the largest value (the first, on ties).
func argmax(_ values: UnsafeMutableBufferPointer<Float>) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}
