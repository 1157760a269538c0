import Foundation
import Tensors

/// A Qwen2.5-VL checkpoint: vision tower, language model and their configuration. The language
/// model is Qwen2-VL's decoder (`Qwen2VLLanguage`: the same Qwen2 blocks, M-RoPE and tensor
/// names), driven by Qwen2.5-VL's positions. Port of transformers' (4.57)
/// `Qwen2_5_VLForConditionalGeneration` (forward, generate), with get_rope_index as released
/// (4.49, `Qwen25VLRoPE`: 4.57 truncates seconds-per-grid before multiplying).
public final class Qwen25VLModel: @unchecked Sendable {
    public let files: Qwen25VLModelFiles
    public let vision: Qwen25VLVision
    public let language: Qwen2VLLanguage
    public var config: Qwen25VLConfiguration { files.config }

    /// `visionDType` nil: the tower computes in `dtype` too.
    public init(directory: String, dtype: ComputeDType? = nil, visionDType: ComputeDType? = nil) throws {
        files = try Qwen25VLModelFiles(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        vision = try Qwen25VLVision(config: files.config.vision, checkpoint: checkpoint, dtype: visionDType ?? dtype)
        language = try Qwen2VLLanguage(config: files.config.text, tieWordEmbeddings: files.config.tieWordEmbeddings,
                                       checkpoint: checkpoint, dtype: dtype)
    }

    /// A prompt ready for the decoder: embeddings with the vision embeddings spliced in at the
    /// pad tokens, and its M-RoPE positions.
    public struct Prepared {
        public var ids: [Int]
        public var embeddings: Tensor // [T, hidden]
        public var positions: [[Int]] // [3][T]
        public var ropeDelta: Int
    }

    /// The model's context: `max_position_embeddings` tokens.
    public var contextLength: Int { config.text.maxPositionEmbeddings }

    /// The KV cache's shape: decoder layers and key/value width per position.
    public var cacheLayout: (layers: Int, width: Int) { (config.text.numHiddenLayers, config.text.numKeyValueHeads * config.text.headDim) }

    /// M-RoPE positions [3][T] and rope_delta of a prompt (`Qwen25VLRoPE.positions`).
    public func positions(ids: [Int], vision inputs: [Qwen25VLVisionInput]) throws -> (positions: [[Int]], delta: Int) {
        let c = config
        return try Qwen25VLRoPE.positions(
            ids: ids, videoToken: c.videoTokenId, imageToken: c.imageTokenId,
            blocks: inputs.map { .init(grid: $0.grid, isVideo: $0.isVideo, secondsPerGrid: $0.secondsPerGrid) },
            merge: c.vision.spatialMergeSize, tokensPerSecond: c.vision.tokensPerSecond)
    }

    /// Embeds `ids`, runs the vision tower on each input and splices its embeddings, in order,
    /// over that input's pad tokens (`get_placeholder_mask` + `masked_scatter`).
    public func prepare(ids: [Int], vision inputs: [Qwen25VLVisionInput]) throws -> Prepared {
        let c = config
        try checkContext(ids.count)
        // Positions first: they check that the prompt's pads match the inputs before any encoding.
        let (positions, delta) = try self.positions(ids: ids, vision: inputs)
        let x = try language.embed(ids) // [T, hidden]
        var cursor = 0
        for input in inputs {
            let merged = try vision.forward(pixels: input.pixels, grid: input.grid).merged // [t·h·w / merge², hidden]
            try spliceVision(merged, into: x, ids: ids, pad: input.isVideo ? c.videoTokenId : c.imageTokenId, grid: input.grid, cursor: &cursor)
        }
        return Prepared(ids: ids, embeddings: x, positions: positions, ropeDelta: delta)
    }

    /// Runs a prepared prompt through the decoder into `cache`; returns the final-normed hidden
    /// states [T, hidden].
    public func prefill(_ p: Prepared, cache: KVCache) throws -> Tensor {
        try language.forward(p.embeddings, positions: p.positions, cache: cache)
    }

    /// Logits of every position of a prompt [T, vocab].
    public func logits(ids: [Int], vision: [Qwen25VLVisionInput] = []) throws -> Tensor {
        try checkContext(ids.count)
        let p = try prepare(ids: ids, vision: vision)
        let cache = try makeCache(capacity: ids.count)
        return try language.logits(try prefill(p, cache: cache))
    }

}
