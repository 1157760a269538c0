import Foundation
import Tensors

/// The Qwen2 decoder of Qwen2-VL: token embeddings, `num_hidden_layers` blocks of RMSNorm →
/// q/k/v (with biases) → M-RoPE → grouped-query causal attention over the KV cache → o →
/// residual → RMSNorm → SwiGLU MLP → residual, a final RMSNorm and the LM head.
/// Port of transformers' `Qwen2VLTextModel` and the head of `Qwen2VLForConditionalGeneration`.
public final class Qwen2VLLanguage: @unchecked Sendable {
    public let config: Qwen2VLTextConfiguration
    public let dtype: ComputeDType
    private let pool: ThreadPool
    private let scratch = AttentionScratch()
    private let workspace = DecoderWorkspace()

    struct Layer {
        var inputNorm: Tensor, postNorm: Tensor
        var q: WeightTensor, qBias: Tensor
        var k: WeightTensor, kBias: Tensor
        var v: WeightTensor, vBias: Tensor
        var o: WeightTensor
        var gate: WeightTensor, up: WeightTensor, down: WeightTensor
    }
    let embed: WeightTensor // [vocab, hidden]
    let layers: [Layer]
    let norm: Tensor
    let head: WeightTensor  // [vocab, hidden] (the embedding when tied)

    /// Every decoder tensor (after the `model.` / `model.language_model.` prefix) with its shape:
    /// what the loader requires, and what `reelql bench` fills with random values. An untied head
    /// is `lm_head.weight` [vocab, hidden], outside the prefix.
    public static func expectedShapes(_ c: Qwen2VLTextConfiguration) -> [String: [Int]] {
        let h = c.hiddenSize, qw = c.numAttentionHeads * c.headDim, kvw = c.numKeyValueHeads * c.headDim, inter = c.intermediateSize
        var expected: [String: [Int]] = ["embed_tokens.weight": [c.vocabSize, h], "norm.weight": [h]]
        for i in 0..<c.numHiddenLayers {
            let p = "layers.\(i)."
            expected[p + "input_layernorm.weight"] = [h]; expected[p + "post_attention_layernorm.weight"] = [h]
            expected[p + "self_attn.q_proj.weight"] = [qw, h]; expected[p + "self_attn.q_proj.bias"] = [qw]
            expected[p + "self_attn.k_proj.weight"] = [kvw, h]; expected[p + "self_attn.k_proj.bias"] = [kvw]
            expected[p + "self_attn.v_proj.weight"] = [kvw, h]; expected[p + "self_attn.v_proj.bias"] = [kvw]
            expected[p + "self_attn.o_proj.weight"] = [h, qw]
            expected[p + "mlp.gate_proj.weight"] = [inter, h]; expected[p + "mlp.up_proj.weight"] = [inter, h]
            expected[p + "mlp.down_proj.weight"] = [h, inter]
        }
        return expected
    }

    public init(config: Qwen2VLTextConfiguration, tieWordEmbeddings: Bool, checkpoint: any WeightStore,
                dtype: ComputeDType? = nil, pool: ThreadPool = .shared) throws {
        self.config = config
        self.pool = pool
        // Every number in range before anything is sized by it.
        let configPath = (checkpoint.directory as NSString).appendingPathComponent("config.json")
        try config.validate(path: configPath)
        let c = config
        let w = try DecoderWeights(checkpoint: checkpoint, configPath: configPath, layersKey: "num_hidden_layers", layers: c.numHiddenLayers,
                                   vocab: c.vocabSize, hidden: c.hiddenSize, dtype: dtype, expected: Self.expectedShapes(c))
        self.dtype = w.computeType
        layers = try (0..<c.numHiddenLayers).map { i in
            let p = "layers.\(i)."
            return Layer(inputNorm: try w.vector(p + "input_layernorm.weight"), postNorm: try w.vector(p + "post_attention_layernorm.weight"),
                         q: try w.matrix(p + "self_attn.q_proj.weight"), qBias: try w.vector(p + "self_attn.q_proj.bias"),
                         k: try w.matrix(p + "self_attn.k_proj.weight"), kBias: try w.vector(p + "self_attn.k_proj.bias"),
                         v: try w.matrix(p + "self_attn.v_proj.weight"), vBias: try w.vector(p + "self_attn.v_proj.bias"),
                         o: try w.matrix(p + "self_attn.o_proj.weight"),
                         gate: try w.matrix(p + "mlp.gate_proj.weight"),
                         up: try w.matrix(p + "mlp.up_proj.weight"),
                         down: try w.matrix(p + "mlp.down_proj.weight"))
        }
        (norm, embed, head) = try w.ends(tied: tieWordEmbeddings)
    }

    /// Embedding rows of `ids` [T, hidden] (f32).
    public func embed(_ ids: [Int]) throws -> Tensor { try DecoderWorkspace.embed(ids, table: embed) }

    /// Runs `x` [T, hidden] (embeddings of the next T tokens) through the decoder, appending their
    /// keys and values to `cache`; cos/sin [T, headDim] are their M-RoPE rotations. Returns the
    /// final-normed hidden states [T, hidden].
    /// `forward` with the M-RoPE rotations of `positions` [3][T] (Qwen2-VL's and Qwen2.5-VL's
    /// rotary tables: the config's θ, head size and `mrope_section`).
    public func forward(_ x: Tensor, positions: [[Int]], cache: KVCache) throws -> Tensor {
        try forward(x, positions: positions, segments: CacheSegments(cache, rows: x.shape[0]))
    }

    /// `forward` over several sequences' rows at once (`segments`), with their positions [3][T].
    public func forward(_ x: Tensor, positions: [[Int]], segments: CacheSegments) throws -> Tensor {
        let (cos, sin) = try Qwen2VLRoPE.cosSin(positions: positions, theta: config.ropeTheta, headDim: config.headDim,
                                                section: config.mropeSection)
        return try forward(x, cos: cos, sin: sin, segments: segments)
    }

    public func forward(_ x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache) throws -> Tensor {
        try forward(x, cos: cos, sin: sin, segments: CacheSegments(cache, rows: x.shape[0]))
    }

    /// Runs rows of one or several sequences (`segments`: which cache each row's keys and values
    /// go to, and whose earlier positions it attends to). A pass of several segments computes
    /// every row as a one-row product would (`Linear` rowwise): exactly as a pass of its segment
    /// alone for one-row segments, and for any segment with int8 weights (exact in every kernel).
    public func forward(_ x: Tensor, cos: Tensor, sin: Tensor, segments: CacheSegments) throws -> Tensor {
        let c = config, t = x.shape[0], h = c.hiddenSize, hd = c.headDim
        let heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads, kvw = kvHeads * hd
        try segments.check(rows: t, layers: layers.count, width: kvw)
        let rowwise = segments.single == nil
        let eps = Float(c.rmsNormEps)
        workspace.lock.lock()
        defer { workspace.lock.unlock() }
        let buffer = workspace.buffer
        let normed = try buffer("normed", [t, h])
        let q = try buffer("q", [t, heads * hd])
        let gate = try buffer("gate", [t, c.intermediateSize]), up = try buffer("up", [t, c.intermediateSize])
        let out = try buffer("out", [t, h])
        // k and v of a single segment go straight into its cache; the attention output always has a
        // buffer of its own (a fresh one each layer would fault its pages in again).
        let (kBuffer, vBuffer) = rowwise ? (try buffer("k", [t, kvw]), try buffer("v", [t, kvw])) : (q, q)
        let attendedBuffer = try buffer("attended", [t, heads * hd])
        var profile = StageTimer(enabled: StageTimer.requested && t > 1)
        defer { profile.report("language (\(t) tokens)") }
        for (l, layer) in layers.enumerated() {
            profile.mark("other")
            _ = try Ops.rmsNorm(x, weight: layer.inputNorm, eps: eps, into: normed, pool: pool)
            profile.mark("norm")
            try Linear.forward(normed, layer.q, bias: layer.qBias, into: q, rows: t, rowwise: rowwise, pool: pool)
            // One segment: new keys and values go straight into its cache rows past..<past+t.
            let (k, v) = segments.newRows(layer: l, k: kBuffer, v: vBuffer)
            try Linear.forward(normed, layer.k, bias: layer.kBias, into: k, rows: t, rowwise: rowwise, pool: pool)
            try Linear.forward(normed, layer.v, bias: layer.vBias, into: v, rows: t, rowwise: rowwise, pool: pool)
            Ops.rotaryRotateHalf(q.pointer, cos: cos, sin: sin, rows: t, heads: heads, headDim: hd, rowStride: heads * hd, pool: pool)
            Ops.rotaryRotateHalf(k.pointer, cos: cos, sin: sin, rows: t, heads: kvHeads, headDim: hd, rowStride: kvw, pool: pool)
            profile.mark("qkv+rope")
            let attended = try segments.attend(layer: l, q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: hd,
                                               precision: dtype.attention, scratch: scratch, into: attendedBuffer, pool: pool)
            profile.mark("attention")
            try Linear.forward(attended, layer.o, into: out, rows: t, rowwise: rowwise, pool: pool)
            profile.mark("o")
            Ops.add(x, out, pool: pool)
            _ = try Ops.rmsNorm(x, weight: layer.postNorm, eps: eps, into: normed, pool: pool)
            profile.mark("norm")
            try Linear.forward(normed, layer.gate, into: gate, rows: t, rowwise: rowwise, pool: pool)
            try Linear.forward(normed, layer.up, into: up, rows: t, rowwise: rowwise, pool: pool)
            profile.mark("gate+up")
            _ = try Ops.siluMul(gate: gate, up: up, into: gate, pool: pool)
            profile.mark("silu")
            try Linear.forward(gate, layer.down, into: out, rows: t, rowwise: rowwise, pool: pool)
            profile.mark("down")
            Ops.add(x, out, pool: pool)
        }
        segments.advance()
        let final = try Tensor(uninitialized: [t, h], what: "final norm")
        return try Ops.rmsNorm(x, weight: norm, eps: eps, into: final, pool: pool)
    }

    /// Logits [rows, vocab] of hidden states [rows, hidden]; `rowwise`: each row as a one-row
    /// product computes it (batched decoding).
    public func logits(_ hidden: Tensor, rowwise: Bool = false) throws -> Tensor {
        try DecoderWorkspace.logits(hidden, head: head, rowwise: rowwise, pool: pool)
    }
}

/// The N of every `<prefix>N.` tensor name.
func layerIndices(in names: [String], prefix: String) -> Set<Int> {
    var found = Set<Int>()
    for name in names where name.hasPrefix(prefix) {
        let rest = name.dropFirst(prefix.count)
        if let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) { found.insert(i) }
    }
    return found
}

/// "2 layers (0…1)", "3 layers (0, 2, 5)", "no layers".
func describeLayers(_ found: Set<Int>) -> String {
    guard !found.isEmpty else { return "no layers" }
    let sorted = found.sorted()
    let list = sorted == Array(0..<sorted.count) ? "0…\(sorted.count - 1)"
        : sorted.prefix(6).map(String.init).joined(separator: ", ") + (sorted.count > 6 ? ", …" : "")
    return "\(found.count) layer\(found.count == 1 ? "" : "s") (\(list))"
}
