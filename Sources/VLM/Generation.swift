import Foundation
import Tensors

/// How to pick each next token.
public struct GenerationParameters: Sendable, Equatable {
    public var maxNewTokens: Int = 256
    /// 0: greedy. Otherwise logits are divided by it before sampling.
    public var temperature: Double = 0
    public var topK: Int? = nil
    public var topP: Double? = nil
    /// > 1 discourages tokens already in the prompt or the output (HF's RepetitionPenaltyLogitsProcessor).
    public var repetitionPenalty: Double = 1
    public var seed: UInt64 = 0
    /// Generation stops after emitting one of these (the checkpoint's eos ids).
    public var stopTokens: Set<Int> = []

    public init(maxNewTokens: Int = 256, temperature: Double = 0, topK: Int? = nil, topP: Double? = nil,
                repetitionPenalty: Double = 1, seed: UInt64 = 0, stopTokens: Set<Int> = []) {
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
        self.stopTokens = stopTokens
    }

    public func validate() throws {
        guard maxNewTokens >= 0 else { throw VLMError.invalidInput("max_new_tokens must be ≥ 0, got \(maxNewTokens)") }
        guard temperature.isFinite, temperature >= 0 else {
            throw VLMError.invalidInput("temperature must be a finite number ≥ 0, got \(temperature)")
        }
        if let k = topK, k < 1 { throw VLMError.invalidInput("top_k must be ≥ 1, got \(k)") }
        if let p = topP, !(p.isFinite && p > 0 && p <= 1) { throw VLMError.invalidInput("top_p must be in (0, 1], got \(p)") }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw VLMError.invalidInput("repetition_penalty must be a finite number > 0, got \(repetitionPenalty)")
        }
    }
}

/// Picks tokens from logits as transformers' generate does: repetition penalty, then (sampling)
/// temperature, top-k, top-p, softmax and a draw; greedy takes the first maximum.
public struct TokenSampler {
    let parameters: GenerationParameters
    private var rng: SplitMix64

    public init(_ parameters: GenerationParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed)
    }

    public mutating func next(logits: UnsafeMutableBufferPointer<Float>, seen: [Int]) -> Int {
        let p = parameters
        if p.repetitionPenalty != 1 {
            let penalty = Float(p.repetitionPenalty)
            for id in Set(seen) where id >= 0 && id < logits.count {
                logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty
            }
        }
        if p.temperature == 0 { return argmax(logits) }
        // Scaled in Double after subtracting the largest logit: a tiny temperature (1e-50) makes
        // (x − max) / t a large negative number or 0, never inf − inf = NaN.
        let t = p.temperature
        let top = logits.max() ?? 0
        var candidates = (0..<logits.count).map { ($0, (Double(logits[$0]) - Double(top)) / t) }
        candidates.sort { $0.1 > $1.1 }
        if let k = p.topK, k < candidates.count { candidates.removeLast(candidates.count - k) }
        let m = candidates[0].1
        var probs = candidates.map { exp($0.1 - m) }
        var total = probs.reduce(0, +)
        if let topP = p.topP, topP < 1 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            var mass = 0.0, keep = 0
            for q in probs { mass += q / total; keep += 1; if mass >= topP { break } }
            probs.removeLast(probs.count - keep)
            candidates.removeLast(candidates.count - keep)
            total = probs.reduce(0, +)
        }
        var draw = rng.nextDouble() * total
        for (i, q) in probs.enumerated() {
            draw -= q
            if draw <= 0 { return candidates[i].0 }
        }
        return candidates[candidates.count - 1].0
    }
}

/// A small deterministic generator (SplitMix64).
public struct SplitMix64 {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// A model whose decoder places tokens by M-RoPE positions (Qwen2-VL, Qwen2.5-VL, Qwen3-VL):
/// what a shared-prefix session needs from it.
public protocol MRoPEDecoderModel: AnyObject, Sendable {
    /// A video or image of a prompt, as the family describes it.
    associatedtype VisionItem
    associatedtype Prepared
    /// Prompt plus answer fit in this many positions (`max_position_embeddings`).
    var contextLength: Int { get }
    /// The KV cache's shape: decoder layers and key/value width per position.
    var cacheLayout: (layers: Int, width: Int) { get }
    /// Embeddings (with the vision embeddings spliced in) and positions of a prompt.
    func prepare(ids: [Int], vision: [VisionItem]) throws -> Prepared
    /// Runs a prepared prompt through the decoder into `cache`: its final hidden states.
    func prefill(_ p: Prepared, cache: KVCache) throws -> Tensor
    /// M-RoPE positions [3][T] of a prompt and rope_delta.
    func positions(ids: [Int], vision: [VisionItem]) throws -> (positions: [[Int]], delta: Int)
    /// Runs text tokens at `positions` [3][n] through the decoder into `cache`: their final hidden states.
    func decode(_ ids: [Int], positions: [[Int]], cache: KVCache) throws -> Tensor
    /// Logits [1, vocab] of the last row of `hidden` (checked finite; `step` names it in errors).
    func nextTokenLogits(_ hidden: Tensor, step: Int) throws -> Tensor
}

extension MRoPEDecoderModel {
    /// Throws `invalidInput` when `tokens` prompt tokens exceed the model's context.
    public func checkContext(_ tokens: Int) throws {
        guard tokens <= contextLength else {
            throw VLMError.invalidInput("the prompt has \(tokens) tokens; the model's context (max_position_embeddings) is \(contextLength)")
        }
    }

    /// How many of `requested` new tokens fit after a prompt of `promptTokens` tokens.
    public func newTokenBudget(promptTokens: Int, requested: Int) throws -> Int {
        guard requested >= 0 else { throw VLMError.invalidInput("max_new_tokens must be ≥ 0, got \(requested)") }
        try checkContext(promptTokens)
        return min(requested, contextLength - promptTokens)
    }

    /// Greedy decoding of a whole prompt: the `maxNewTokens` most likely next tokens, stopping
    /// early at one of `stop` or where the context ends (a session whose prefix is all but the
    /// prompt's last token).
    public func generateGreedy(ids: [Int], vision: [VisionItem] = [], maxNewTokens: Int, stop: Set<Int> = []) throws -> [Int] {
        guard let last = ids.last, ids.count >= 2 else { throw VLMError.invalidInput("greedy decoding needs a prompt of 2 tokens or more") }
        try checkContext(ids.count)
        let session = try PrefixSession(model: self, prefix: Array(ids.dropLast()), vision: vision)
        return try session.generate(continuation: [last], parameters: GenerationParameters(maxNewTokens: maxNewTokens, stopTokens: stop))
    }

    /// A KV cache for `capacity` positions (a refused allocation throws).
    public func makeCache(capacity: Int) throws -> KVCache {
        try KVCache(layers: cacheLayout.layers, capacity: capacity, width: cacheLayout.width)
    }
}

/// Writes one vision block's embeddings `merged` [n, hidden] over the next n `pad` tokens of
/// `ids` in `x` [T, hidden], from `cursor` on (transformers' `masked_scatter`, block by block).
func spliceVision(_ merged: Tensor, into x: Tensor, ids: [Int], pad: Int, grid: VisionGrid, cursor: inout Int) throws {
    let h = x.shape[1]
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
        throw VLMError.invalidInput("the prompt has fewer pad tokens than the \(merged.shape[0]) embeddings of grid \(grid)")
    }
}

/// One clip encoded once: the vision tower and the prefill of the shared prefix (the prompt up
/// to and including <|vision_end|>) run when the session opens; every prompt continuation is
/// answered from a fork of that KV cache.
public final class PrefixSession<Model: MRoPEDecoderModel>: @unchecked Sendable {
    public let model: Model
    public let prefix: [Int]
    let prepared: Model.Prepared
    let cache: KVCache
    let vision: [Model.VisionItem]
    public private(set) var timing: (vision: Double, prefill: Double) = (0, 0)

    public init(model: Model, prefix: [Int], vision: [Model.VisionItem]) throws {
        self.model = model
        self.prefix = prefix
        self.vision = vision
        // Before the vision tower runs: a prefix longer than the context can never be answered.
        try model.checkContext(prefix.count)
        let t0 = DispatchTime.now().uptimeNanoseconds
        prepared = try model.prepare(ids: prefix, vision: vision)
        let t1 = DispatchTime.now().uptimeNanoseconds
        cache = try model.makeCache(capacity: prefix.count)
        _ = try model.prefill(prepared, cache: cache)
        let t2 = DispatchTime.now().uptimeNanoseconds
        timing = (Double(t1 - t0) / 1e9, Double(t2 - t1) / 1e9)
    }

    /// Generates the answer to `continuation` (the prompt tokens after the shared prefix).
    /// `onToken` sees each token as it is chosen. Returns the generated ids: at most
    /// `maxNewTokens`, and no more than the context (`max_position_embeddings`) still holds.
    public func generate(continuation: [Int], parameters: GenerationParameters,
                         onToken: (Int) -> Void = { _ in }) throws -> [Int] {
        try parameters.validate()
        if continuation.isEmpty {
            throw VLMError.invalidInput("a prompt continuation is needed after the shared prefix")
        }
        let ids = prefix + continuation
        let budget = try model.newTokenBudget(promptTokens: ids.count, requested: parameters.maxNewTokens)
        guard budget > 0 else { return [] }
        // Positions of the whole prompt; the prefix part is what the cache already holds.
        let (positions, delta) = try model.positions(ids: ids, vision: vision)
        let forked = try cache.fork(extra: continuation.count + budget)
        var hidden = try model.decode(continuation, positions: positions.map { Array($0[prefix.count...]) }, cache: forked)
        var sampler = TokenSampler(parameters)
        var seen = ids
        var out: [Int] = []
        while out.count < budget {
            let logits = try model.nextTokenLogits(hidden, step: out.count)
            let next = sampler.next(logits: logits.buffer, seen: seen)
            out.append(next)
            seen.append(next)
            onToken(next)
            if parameters.stopTokens.contains(next) || out.count == budget { break }
            // Each new token sits at its index plus rope_delta on all three axes.
            let position = forked.count + delta
            hidden = try model.decode([next], positions: [[position], [position], [position]], cache: forked)
        }
        return out
    }
}

/// Qwen2-VL's session (the shared-prefix fork over `Qwen2VLModel`).
public typealias Qwen2VLSession = PrefixSession<Qwen2VLModel>

extension Qwen2VLModel: MRoPEDecoderModel {
    public func positions(ids: [Int], vision: [VisionInput]) throws -> (positions: [[Int]], delta: Int) {
        try Qwen2VLRoPE.positions(ids: ids, visionTokens: [config.videoTokenId, config.imageTokenId],
                                  grids: vision.map(\.grid), merge: config.vision.spatialMergeSize)
    }

    public func decode(_ ids: [Int], positions: [[Int]], cache: KVCache) throws -> Tensor {
        try language.forward(try language.embed(ids), positions: positions, cache: cache)
    }

    public func nextTokenLogits(_ hidden: Tensor, step: Int) throws -> Tensor { try language.nextTokenLogits(hidden, step: step) }
}

extension Qwen25VLModel: MRoPEDecoderModel {
    public func decode(_ ids: [Int], positions: [[Int]], cache: KVCache) throws -> Tensor {
        try language.forward(try language.embed(ids), positions: positions, cache: cache)
    }

    public func nextTokenLogits(_ hidden: Tensor, step: Int) throws -> Tensor { try language.nextTokenLogits(hidden, step: step) }
}

extension Qwen3VLModel: MRoPEDecoderModel {
    public func positions(ids: [Int], vision: [VisionInput]) throws -> (positions: [[Int]], delta: Int) {
        try Qwen3VLRoPE.positions(ids: ids, imageToken: config.imageTokenId, videoToken: config.videoTokenId,
                                  inputs: vision.map { .init(grid: $0.grid, isVideo: $0.isVideo) }, merge: config.vision.spatialMergeSize)
    }

    /// Text tokens only (the continuation of a prompt, generated tokens): no DeepStack rows.
    public func decode(_ ids: [Int], positions: [[Int]], cache: KVCache) throws -> Tensor {
        let t = config.text
        let (cos, sin) = try Qwen3VLRoPE.cosSin(positions: positions, theta: t.ropeTheta, headDim: t.headDim, section: t.mropeSection)
        return try language.forward(try language.embed(ids), cos: cos, sin: sin, cache: cache)
    }

    public func nextTokenLogits(_ hidden: Tensor, step: Int) throws -> Tensor { try language.nextTokenLogits(hidden, step: step) }
}
