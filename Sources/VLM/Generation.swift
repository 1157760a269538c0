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
    /// At most this many sequences decode together, one pass over the weights per step
    /// (`DecodeBatch`); 1 decodes one prompt after another. Outputs do not depend on it.
    public var batch: Int = 1

    public init(maxNewTokens: Int = 256, temperature: Double = 0, topK: Int? = nil, topP: Double? = nil,
                repetitionPenalty: Double = 1, seed: UInt64 = 0, stopTokens: Set<Int> = [], batch: Int = 1) {
        self.batch = batch
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
        guard Self.batchRange.contains(batch) else {
            throw VLMError.invalidInput("batch must be between \(Self.batchRange.lowerBound) and \(Self.batchRange.upperBound), got \(batch)")
        }
    }

    /// Sequences decoding together: 1 (one after another) to 64.
    public static let batchRange = 1...64
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
    /// Runs text tokens at `positions` [3][n] through the decoder, each row into its segment's
    /// cache (one segment: a prompt's continuation; one row per cache: a batched step; several
    /// continuations where `rowsIndependentOfPass`): their final hidden states. A row of a
    /// one-row segment comes out as in a pass of its own; a longer segment's rows do where
    /// `rowsIndependentOfPass` (bf16 and f32 products of many rows add in another order than the
    /// one-row products a pass of several segments uses).
    func decode(_ ids: [Int], positions: [[Int]], segments: CacheSegments) throws -> Tensor
    /// Logits [rows, vocab] of every row of `hidden`, each as a one-row product computes it.
    func rowLogits(_ hidden: Tensor) throws -> Tensor
    /// Whether every row of a decoder pass of many rows comes out the same whatever other rows
    /// and segments share it (int8 weights: exact integer products, in any kernel). Then several
    /// prompts' continuations run in one pass; otherwise each runs in a pass of its own, as when
    /// it is decoded alone (a bf16 product of many rows adds in another order than a one-row one).
    var rowsIndependentOfPass: Bool { get }
}

extension MRoPEDecoderModel {
    /// Runs text tokens at `positions` [3][n] through the decoder into `cache`.
    public func decode(_ ids: [Int], positions: [[Int]], cache: KVCache) throws -> Tensor {
        try decode(ids, positions: positions, segments: CacheSegments(cache, rows: ids.count))
    }

    /// Logits [1, vocab] of the last row of `hidden`; NaN or ±Inf among them (damaged weights) is
    /// an error naming decoding step `step`, rather than a stream of arbitrary tokens.
    public func nextTokenLogits(_ hidden: Tensor, step: Int) throws -> Tensor {
        try finiteLogits(hidden.rows((hidden.shape[0] - 1)..<hidden.shape[0]), step: step)
    }

    /// `rowLogits` of `hidden`, checked finite (`step` names the decoding step in errors).
    public func finiteLogits(_ hidden: Tensor, step: Int) throws -> Tensor {
        let logits = try rowLogits(hidden)
        // x − x is 0 for finite x and NaN for NaN and ±Inf: one pass, no branch per element.
        let values = logits.buffer
        var lanes = SIMD16<Float>(repeating: 0)
        var i = 0
        if let base = values.baseAddress {
            while i + 16 <= values.count {
                let v = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD16<Float>.self)
                lanes += v - v
                i += 16
            }
        }
        var probe = lanes.sum()
        while i < values.count { probe += values[i] - values[i]; i += 1 }
        guard probe == 0 else { throw VLMError.nonFiniteLogits(step: step) }
        return logits
    }

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
        // A prompt that fills the context leaves no room: an empty answer stored as done would
        // read as the model's.
        guard requested == 0 || promptTokens < contextLength else {
            throw VLMError.invalidInput("the prompt has \(promptTokens) tokens, the whole of the model's context (max_position_embeddings \(contextLength)): no room for an answer")
        }
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

    /// `onPrefill` runs between the vision tower and the prefill (progress displays).
    public init(model: Model, prefix: [Int], vision: [Model.VisionItem], onPrefill: () -> Void = {}) throws {
        self.model = model
        self.prefix = prefix
        self.vision = vision
        // Before the vision tower runs: a prefix longer than the context can never be answered.
        try model.checkContext(prefix.count)
        let t0 = DispatchTime.now().uptimeNanoseconds
        prepared = try model.prepare(ids: prefix, vision: vision)
        onPrefill()
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
        try withoutActuallyEscaping(onToken) { onToken in
            let batch = DecodeBatch<Model>(capacity: 1)
            var result: [Int] = []
            try batch.add(self, continuation: continuation, parameters: parameters, onToken: onToken) { result = $0 }
            while try batch.step() {}
            return result
        }
    }

    /// A continuation about to run: a fork of the prefix cache with room for the answer, the
    /// positions of the continuation's tokens, and the state its sampling starts from (nil when
    /// no new token fits the context).
    func start(continuation: [Int], parameters: GenerationParameters) throws -> DecodeBatch<Model>.Joining? {
        try parameters.validate()
        if continuation.isEmpty {
            throw VLMError.invalidInput("a prompt continuation is needed after the shared prefix")
        }
        let ids = prefix + continuation
        let budget = try model.newTokenBudget(promptTokens: ids.count, requested: parameters.maxNewTokens)
        guard budget > 0 else { return nil }
        // Positions of the whole prompt; the prefix part is what the cache already holds.
        let (positions, delta) = try model.positions(ids: ids, vision: vision)
        let forked = try cache.fork(extra: continuation.count + budget)
        let sequence = DecodeBatch<Model>.Sequence(cache: forked, seen: ids, budget: budget, delta: delta, parameters: parameters)
        return .init(sequence: sequence, tokens: continuation, positions: positions.map { Array($0[prefix.count...]) })
    }
}

/// Sequences decoding together: each step advances every active sequence by one token with one
/// pass over the weights (a decoding step's rows through the GEMV kernels, which read each
/// weight once for all of them; attention per sequence over its own cache). A sequence's
/// tokens are exactly those it gets decoded alone: its continuation runs in a pass of its own
/// (or, where the model's rows do not depend on the pass, in one pass with the others joining
/// with it), every step computes its row as a one-row pass would, and its sampler (seeded from
/// the parameters) is its own. At most `capacity` sequences decode at once; more wait and join as
/// others finish (continuous batching). Single-threaded: one caller drives `add` and `step`.
public final class DecodeBatch<Model: MRoPEDecoderModel> {
    /// One sequence: its cache (a fork of a prefix), sampling state and output.
    final class Sequence {
        let cache: KVCache
        var seen: [Int]
        var out: [Int] = []
        let budget: Int
        let delta: Int
        let stop: Set<Int>
        var sampler: TokenSampler
        var onToken: (Int) -> Void = { _ in }
        var onDone: ([Int]) -> Void = { _ in }

        init(cache: KVCache, seen: [Int], budget: Int, delta: Int, parameters: GenerationParameters) {
            self.cache = cache
            self.seen = seen
            self.budget = budget
            self.delta = delta
            stop = parameters.stopTokens
            sampler = TokenSampler(parameters)
        }

        /// Takes a token from `logits`; true when the sequence is finished.
        func choose(_ logits: UnsafeMutableBufferPointer<Float>) -> Bool {
            let next = sampler.next(logits: logits, seen: seen)
            out.append(next)
            seen.append(next)
            onToken(next)
            return stop.contains(next) || out.count == budget
        }
    }

    /// A sequence joining the batch: its continuation (tokens at positions [3][n]) still to run.
    struct Joining {
        let sequence: Sequence
        let tokens: [Int]
        let positions: [[Int]]
    }

    public let capacity: Int
    private var waiting: [() throws -> Joining?] = []
    private var active: [Sequence] = []
    private var model: Model?

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Sequences decoding now, and waiting for a place.
    public var activeCount: Int { active.count }
    public var waitingCount: Int { waiting.count }
    public var isEmpty: Bool { active.isEmpty && waiting.isEmpty }
    /// Bytes of the active sequences' KV caches (their own rows, and each shared prefix once),
    /// now and at most so far.
    private var cacheBytes: Int { KVCache.bytes(of: active.map(\.cache)) }
    public private(set) var peakCacheBytes = 0
    /// Decoder passes run so far for joining sequences' continuations (one per sequence, or one
    /// for all that join together where the model's rows do not depend on the pass).
    public private(set) var continuationPasses = 0

    /// Queues the answer to `continuation` after `session`'s prefix; `onDone` receives its tokens
    /// (at once, when no token fits the context). Its cache is forked when it joins.
    public func add(_ session: PrefixSession<Model>, continuation: [Int], parameters: GenerationParameters,
                    onToken: @escaping (Int) -> Void = { _ in }, onDone: @escaping ([Int]) -> Void) throws {
        if let m = model, m !== session.model { throw VLMError.invalidInput("a decoding batch serves one model") }
        model = session.model
        try parameters.validate()
        waiting.append {
            guard let j = try session.start(continuation: continuation, parameters: parameters) else { onDone([]); return nil }
            j.sequence.onToken = onToken
            j.sequence.onDone = onDone
            return j
        }
    }

    /// Admits waiting sequences into free places (their continuations run, then each picks its
    /// first token), then advances every active sequence by one token in one pass. False when no
    /// sequence is left. A sequence with no room for an answer gets `onDone([])` as it is
    /// admitted. An error ends the batch: the sequences it had admitted or was admitting are
    /// dropped without `onDone` (every caller stops on it).
    @discardableResult
    public func step() throws -> Bool {
        guard let model else { return false }
        // Rounds until the places are full or none waits: a joiner that finishes on its first
        // token (a stop token, a budget of one) frees its place for the next one at once.
        while active.count < capacity, !waiting.isEmpty {
            var joining: [Joining] = []
            while active.count + joining.count < capacity, !waiting.isEmpty {
                if let j = try waiting.removeFirst()() { joining.append(j) }
            }
            guard !joining.isEmpty else { continue }
            let together = joining.count > 1 && model.rowsIndependentOfPass
            let logits = try model.finiteLogits(try Self.continue(joining, model: model, together: together), step: 0)
            continuationPasses += together ? 1 : joining.count
            let vocab = logits.shape[1]
            for (i, j) in joining.enumerated() {
                let s = j.sequence
                if s.choose(UnsafeMutableBufferPointer(start: logits.pointer + i * vocab, count: vocab)) { s.onDone(s.out) } else { active.append(s) }
            }
        }
        peakCacheBytes = max(peakCacheBytes, cacheBytes)
        guard !active.isEmpty else { return !waiting.isEmpty }
        // Each sequence's next token sits at its index plus its rope_delta on all three axes.
        let tokens = active.map { $0.out[$0.out.count - 1] }
        let positions = active.map { $0.cache.count + $0.delta }
        let hidden = try model.decode(tokens, positions: [positions, positions, positions],
                                      segments: CacheSegments(oneRowEach: active.map(\.cache)))
        let logits = try model.finiteLogits(hidden, step: active[0].out.count)
        let vocab = logits.shape[1]
        var still: [Sequence] = []
        for (i, s) in active.enumerated() {
            let row = UnsafeMutableBufferPointer(start: logits.pointer + i * vocab, count: vocab)
            if s.choose(row) { s.onDone(s.out) } else { still.append(s) }
        }
        active = still
        return !(active.isEmpty && waiting.isEmpty)
    }

    /// Runs the joining sequences' continuations into their caches: the final hidden state of
    /// each one's last token [joining, hidden]. `together`: one pass for all (where the model's
    /// rows do not depend on the pass: a clip's prompts read the weights once, not once each),
    /// else a pass per continuation, as each runs when decoded alone.
    static func `continue`(_ joining: [Joining], model: Model, together: Bool) throws -> Tensor {
        var lastRows: [Tensor] = []
        if together {
            let counts = joining.map(\.tokens.count)
            let hidden = try model.decode(joining.flatMap(\.tokens), positions: (0..<3).map { axis in joining.flatMap { $0.positions[axis] } },
                                          segments: CacheSegments(joining.map(\.sequence.cache), rows: counts))
            var end = 0
            for n in counts {
                end += n
                lastRows.append(hidden.rows((end - 1)..<end))
            }
        } else {
            for j in joining {
                let hidden = try model.decode(j.tokens, positions: j.positions, cache: j.sequence.cache)
                lastRows.append(hidden.rows((hidden.shape[0] - 1)..<hidden.shape[0]))
            }
        }
        guard let width = lastRows.first?.shape.last else { throw VLMError.invalidInput("no continuation to run") }
        let out = try Tensor(uninitialized: [lastRows.count, width], what: "continuations' last hidden states")
        for (i, row) in lastRows.enumerated() { (out.pointer + i * width).update(from: row.pointer, count: width) }
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

    public func decode(_ ids: [Int], positions: [[Int]], segments: CacheSegments) throws -> Tensor {
        try language.forward(try language.embed(ids), positions: positions, segments: segments)
    }

    public func rowLogits(_ hidden: Tensor) throws -> Tensor { try language.logits(hidden, rowwise: true) }
    public var rowsIndependentOfPass: Bool { language.dtype == .int8 }
}

extension Qwen25VLModel: MRoPEDecoderModel {
    public func decode(_ ids: [Int], positions: [[Int]], segments: CacheSegments) throws -> Tensor {
        try language.forward(try language.embed(ids), positions: positions, segments: segments)
    }

    public func rowLogits(_ hidden: Tensor) throws -> Tensor { try language.logits(hidden, rowwise: true) }
    public var rowsIndependentOfPass: Bool { language.dtype == .int8 }
}

extension Qwen3VLModel: MRoPEDecoderModel {
    public func positions(ids: [Int], vision: [VisionInput]) throws -> (positions: [[Int]], delta: Int) {
        try Qwen3VLRoPE.positions(ids: ids, imageToken: config.imageTokenId, videoToken: config.videoTokenId,
                                  inputs: vision.map { .init(grid: $0.grid, isVideo: $0.isVideo) }, merge: config.vision.spatialMergeSize)
    }

    /// Text tokens only (the continuation of a prompt, generated tokens): no DeepStack rows.
    public func decode(_ ids: [Int], positions: [[Int]], segments: CacheSegments) throws -> Tensor {
        let t = config.text
        let (cos, sin) = try Qwen3VLRoPE.cosSin(positions: positions, theta: t.ropeTheta, headDim: t.headDim, section: t.mropeSection)
        return try language.forward(try language.embed(ids), cos: cos, sin: sin, segments: segments)
    }

    public func rowLogits(_ hidden: Tensor) throws -> Tensor { try language.logits(hidden, rowwise: true) }
    public var rowsIndependentOfPass: Bool { language.dtype == .int8 }
}
