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

    public init(directory: String, dtype: ComputeDType? = nil) throws {
        files = try Qwen25VLModelFiles(directory: directory)
        let checkpoint = try Checkpoint(directory: directory)
        vision = try Qwen25VLVision(config: files.config.vision, checkpoint: checkpoint, dtype: dtype)
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
        let h = c.text.hiddenSize
        var cursor = 0
        for input in inputs {
            let pad = input.isVideo ? c.videoTokenId : c.imageTokenId
            let merged = try vision.forward(pixels: input.pixels, grid: input.grid).merged // [t·h·w / merge², hidden]
            guard merged.shape[1] == h else {
                throw VLMError.invalidInput("vision output width \(merged.shape[1]) differs from the language model's \(h)")
            }
            var row = 0
            while cursor < ids.count && row < merged.shape[0] {
                if ids[cursor] == pad {
                    (x.pointer + cursor * h).update(from: merged.pointer + row * h, count: h)
                    row += 1
                }
                cursor += 1
            }
            guard row == merged.shape[0] else {
                throw VLMError.invalidInput("the prompt has fewer pad tokens than the \(merged.shape[0]) embeddings of grid \(input.grid)")
            }
        }
        return Prepared(ids: ids, embeddings: x, positions: positions, ropeDelta: delta)
    }

    /// Runs a prepared prompt through the decoder into `cache`; returns the final-normed hidden
    /// states [T, hidden].
    public func prefill(_ p: Prepared, cache: KVCache) throws -> Tensor {
        let (cos, sin) = try Qwen2VLRoPE.cosSin(positions: p.positions, theta: config.text.ropeTheta,
                                                       headDim: config.text.headDim, section: config.text.mropeSection)
        return try language.forward(p.embeddings, cos: cos, sin: sin, cache: cache)
    }

    /// Logits of every position of a prompt [T, vocab].
    public func logits(ids: [Int], vision: [Qwen25VLVisionInput] = []) throws -> Tensor {
        try checkContext(ids.count)
        let p = try prepare(ids: ids, vision: vision)
        let cache = try makeCache(capacity: ids.count)
        return try language.logits(try prefill(p, cache: cache))
    }

    /// Greedy decoding: the `maxNewTokens` most likely next tokens, stopping early at one of `stop`
    /// or where the context (`max_position_embeddings`) ends. Each new token sits at its index
    /// plus rope_delta on all three axes (4.57 `prepare_inputs_for_generation`).
    public func generateGreedy(ids: [Int], vision: [Qwen25VLVisionInput] = [], maxNewTokens: Int, stop: Set<Int> = []) throws -> [Int] {
        let budget = try newTokenBudget(promptTokens: ids.count, requested: maxNewTokens)
        guard budget > 0 else { return [] }
        let p = try prepare(ids: ids, vision: vision)
        let cache = try makeCache(capacity: ids.count + budget)
        var hidden = try prefill(p, cache: cache)
        var out: [Int] = []
        for step in 0..<budget {
            let logits = try language.nextTokenLogits(hidden, step: step)
            let next = argmax(logits.buffer)
            out.append(next)
            if stop.contains(next) || step == budget - 1 { break }
            let position = cache.count + p.ropeDelta
            let (cos, sin) = try Qwen2VLRoPE.cosSin(positions: [[position], [position], [position]], theta: config.text.ropeTheta,
                                                           headDim: config.text.headDim, section: config.text.mropeSection)
            hidden = try language.forward(try language.embed([next]), cos: cos, sin: sin, cache: cache)
        }
        return out
    }
}
