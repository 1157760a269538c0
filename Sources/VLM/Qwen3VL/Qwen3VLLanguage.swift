import Foundation
import Tensors

/// DeepStack features for one forward pass: `features[k]` [rows.count, hidden] is added, after
/// decoder layer k, to the hidden states of the tokens at `rows` (indices into the pass's tokens).
public struct Qwen3VLDeepStack: @unchecked Sendable {
    public var rows: [Int]
    public var features: [Tensor]
    public init(rows: [Int], features: [Tensor]) { self.rows = rows; self.features = features }
}

/// The Qwen3 decoder of Qwen3-VL: token embeddings, `num_hidden_layers` blocks of RMSNorm →
/// q/k/v (no biases) → per-head RMSNorm of q and k → interleaved M-RoPE → grouped-query causal
/// attention over the KV cache → o → residual → RMSNorm → SwiGLU MLP → residual, then (DeepStack)
/// the vision features of layer k added at the vision positions; a final RMSNorm and the LM head.
/// Port of transformers 4.57's `Qwen3VLTextModel` (forward, `_deepstack_process`) and the head of
/// `Qwen3VLForConditionalGeneration`.
public final class Qwen3VLLanguage: @unchecked Sendable {
    public let config: Qwen3VLTextConfiguration
    public let dtype: ComputeDType
    private let pool: ThreadPool
    private let scratch = AttentionScratch()
    private let workspace = DecoderWorkspace()

    struct Layer {
        var inputNorm: Tensor, postNorm: Tensor
        var q: WeightTensor, k: WeightTensor, v: WeightTensor, o: WeightTensor
        var qNorm: Tensor, kNorm: Tensor // [headDim]
        var gate: WeightTensor, up: WeightTensor, down: WeightTensor
    }
    let embed: WeightTensor // [vocab, hidden]
    let layers: [Layer]
    let norm: Tensor
    let head: WeightTensor  // [vocab, hidden] (the embedding when tied)

    /// Every decoder tensor (after the `model.language_model.` / `model.` prefix) with its shape:
    /// what the loader requires, and what `reelql bench` fills with random values. An untied head
    /// is `lm_head.weight` [vocab, hidden], outside the prefix.
    public static func expectedShapes(_ c: Qwen3VLTextConfiguration) -> [String: [Int]] {
        let h = c.hiddenSize, hd = c.headDim, qw = c.numAttentionHeads * hd, kvw = c.numKeyValueHeads * hd, inter = c.intermediateSize
        var expected: [String: [Int]] = ["embed_tokens.weight": [c.vocabSize, h], "norm.weight": [h]]
        for i in 0..<c.numHiddenLayers {
            let p = "layers.\(i)."
            expected[p + "input_layernorm.weight"] = [h]; expected[p + "post_attention_layernorm.weight"] = [h]
            expected[p + "self_attn.q_proj.weight"] = [qw, h]; expected[p + "self_attn.k_proj.weight"] = [kvw, h]
            expected[p + "self_attn.v_proj.weight"] = [kvw, h]; expected[p + "self_attn.o_proj.weight"] = [h, qw]
            expected[p + "self_attn.q_norm.weight"] = [hd]; expected[p + "self_attn.k_norm.weight"] = [hd]
            expected[p + "mlp.gate_proj.weight"] = [inter, h]; expected[p + "mlp.up_proj.weight"] = [inter, h]
            expected[p + "mlp.down_proj.weight"] = [h, inter]
        }
        return expected
    }

    /// Loads `model.language_model.*` (4.57 and 5.x saves) or `model.*`, and `lm_head.weight`
    /// unless the embeddings are tied. `dtype` nil follows the checkpoint.
    public init(config: Qwen3VLTextConfiguration, tieWordEmbeddings: Bool, checkpoint: any WeightStore,
                dtype: ComputeDType? = nil, pool: ThreadPool = .shared) throws {
        self.config = config
        self.pool = pool
        let configPath = (checkpoint.directory as NSString).appendingPathComponent("config.json")
        try config.validate(path: configPath)
        let c = config
        let w = try DecoderWeights(checkpoint: checkpoint, configPath: configPath, layersKey: "text_config.num_hidden_layers",
                                   layers: c.numHiddenLayers, vocab: c.vocabSize, hidden: c.hiddenSize, dtype: dtype,
                                   expected: Self.expectedShapes(c))
        self.dtype = w.computeType
        layers = try (0..<c.numHiddenLayers).map { i in
            let p = "layers.\(i)."
            return Layer(inputNorm: try w.vector(p + "input_layernorm.weight"), postNorm: try w.vector(p + "post_attention_layernorm.weight"),
                         q: try w.matrix(p + "self_attn.q_proj.weight"), k: try w.matrix(p + "self_attn.k_proj.weight"),
                         v: try w.matrix(p + "self_attn.v_proj.weight"), o: try w.matrix(p + "self_attn.o_proj.weight"),
                         qNorm: try w.vector(p + "self_attn.q_norm.weight"), kNorm: try w.vector(p + "self_attn.k_norm.weight"),
                         gate: try w.matrix(p + "mlp.gate_proj.weight"),
                         up: try w.matrix(p + "mlp.up_proj.weight"),
                         down: try w.matrix(p + "mlp.down_proj.weight"))
        }
        (norm, embed, head) = try w.ends(tied: tieWordEmbeddings)
    }

    /// Embedding rows of `ids` [T, hidden] (f32).
    public func embed(_ ids: [Int]) throws -> Tensor { try DecoderWorkspace.embed(ids, table: embed) }

    /// Runs `x` [T, hidden] (embeddings of the next T tokens) through the decoder, appending their
    /// keys and values to `cache`; cos/sin [T, headDim] are their M-RoPE rotations; `deepstack`
    /// (prefill of a prompt with vision) adds feature k after layer k. Returns the final-normed
    /// hidden states [T, hidden].
    public func forward(_ x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache, deepstack: Qwen3VLDeepStack? = nil) throws -> Tensor {
        try forward(x, cos: cos, sin: sin, segments: CacheSegments(cache, rows: x.shape[0]), deepstack: deepstack)
    }

    /// `forward` over rows of one or several sequences (`segments`, as `Qwen2VLLanguage`'s): each
    /// row as a one-row product computes it (exactly as a pass of its own segment alone for
    /// one-row segments and with int8 weights).
    public func forward(_ x: Tensor, cos: Tensor, sin: Tensor, segments: CacheSegments, deepstack: Qwen3VLDeepStack? = nil) throws -> Tensor {
        let c = config, t = x.shape[0], h = c.hiddenSize, hd = c.headDim
        let heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads, kvw = kvHeads * hd
        guard x.shape == [t, h], cos.shape == [t, hd], sin.shape == [t, hd] else {
            throw VLMError.invalidInput("decoder inputs \(x.shape), cos \(cos.shape), sin \(sin.shape) do not fit [T, \(h)] and [T, \(hd)]")
        }
        try segments.check(rows: t, layers: layers.count, width: kvw)
        let rowwise = segments.single == nil
        if let d = deepstack {
            guard d.rows.allSatisfy({ (0..<t).contains($0) }), d.features.allSatisfy({ $0.shape == [d.rows.count, h] }) else {
                throw VLMError.invalidInput("DeepStack features must be [\(d.rows.count), \(h)] at rows within 0..<\(t)")
            }
        }
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
        for (l, layer) in layers.enumerated() {
            _ = try Ops.rmsNorm(x, weight: layer.inputNorm, eps: eps, into: normed, pool: pool)
            try Linear.forward(normed, layer.q, into: q, rows: t, rowwise: rowwise, pool: pool)
            // One segment: new keys and values go straight into its cache rows past..<past+t.
            let (k, v) = segments.newRows(layer: l, k: kBuffer, v: vBuffer)
            try Linear.forward(normed, layer.k, into: k, rows: t, rowwise: rowwise, pool: pool)
            try Linear.forward(normed, layer.v, into: v, rows: t, rowwise: rowwise, pool: pool)
            // q_norm / k_norm: RMSNorm over each head's head_dim values, before the rotation.
            _ = try Ops.rmsNorm(q.reshaped([t * heads, hd]), weight: layer.qNorm, eps: eps, into: q.reshaped([t * heads, hd]), pool: pool)
            _ = try Ops.rmsNorm(k.reshaped([t * kvHeads, hd]), weight: layer.kNorm, eps: eps, into: k.reshaped([t * kvHeads, hd]), pool: pool)
            Ops.rotaryRotateHalf(q.pointer, cos: cos, sin: sin, rows: t, heads: heads, headDim: hd, rowStride: heads * hd, pool: pool)
            Ops.rotaryRotateHalf(k.pointer, cos: cos, sin: sin, rows: t, heads: kvHeads, headDim: hd, rowStride: kvw, pool: pool)
            let attended = try segments.attend(layer: l, q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: hd,
                                               precision: dtype.attention, scratch: scratch, into: attendedBuffer, pool: pool)
            try Linear.forward(attended, layer.o, into: out, rows: t, rowwise: rowwise, pool: pool)
            Ops.add(x, out, pool: pool)
            _ = try Ops.rmsNorm(x, weight: layer.postNorm, eps: eps, into: normed, pool: pool)
            try Linear.forward(normed, layer.gate, into: gate, rows: t, rowwise: rowwise, pool: pool)
            try Linear.forward(normed, layer.up, into: up, rows: t, rowwise: rowwise, pool: pool)
            _ = try Ops.siluMul(gate: gate, up: up, into: gate, pool: pool)
            try Linear.forward(gate, layer.down, into: out, rows: t, rowwise: rowwise, pool: pool)
            Ops.add(x, out, pool: pool)
            // DeepStack (`_deepstack_process`): hidden[visual rows] += feature of this layer.
            if let d = deepstack, l < d.features.count {
                let f = d.features[l].pointer
                for (i, row) in d.rows.enumerated() {
                    let dst = x.pointer + row * h, src = f + i * h
                    for j in 0..<h { dst[j] += src[j] }
                }
            }
        }
        segments.advance()
        let final = try Tensor(uninitialized: [t, h], what: "final norm")
        return try Ops.rmsNorm(x, weight: norm, eps: eps, into: final, pool: pool)
    }

    /// Logits [rows, vocab] of hidden states [rows, hidden]; `rowwise` as `Qwen2VLLanguage.logits`.
    public func logits(_ hidden: Tensor, rowwise: Bool = false) throws -> Tensor {
        try DecoderWorkspace.logits(hidden, head: head, rowwise: rowwise, pool: pool)
    }
}
