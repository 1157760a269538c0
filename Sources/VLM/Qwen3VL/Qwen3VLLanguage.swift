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
    private var workspace: [String: TensorStorage] = [:]
    private let forwardLock = NSLock()

    private func buffer(_ name: String, _ shape: [Int]) throws -> Tensor {
        guard let n = checkedElementCount(shape) else {
            throw TensorError.allocationFailed(what: "language workspace '\(name)'", size: "shape \(shape) (overflowing)")
        }
        if let s = workspace[name], s.count >= n { return Tensor(storage: s, offset: 0, shape: shape) }
        let s = try TensorStorage(count: n, zeroed: false, what: "language workspace '\(name)' \(shape)")
        workspace[name] = s
        return Tensor(storage: s, offset: 0, shape: shape)
    }

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
        let prefix = checkpoint.contains("model.language_model.embed_tokens.weight") ? "model.language_model." : "model."
        let c = config, h = c.hiddenSize, hd = c.headDim
        let found = layerIndices(in: checkpoint.names, prefix: prefix + "layers.")
        guard found == Set(0..<found.count), found.count == c.numHiddenLayers else {
            throw VLMError.invalidConfig(path: configPath, key: "text_config.num_hidden_layers",
                                         reason: "is \(c.numHiddenLayers) but the checkpoint has \(describeLayers(found)) (\(prefix)layers.N)")
        }
        func weight(_ name: String, _ shape: [Int]) throws -> WeightTensor {
            guard checkpoint.contains(name) else { throw VLMError.missingWeight(name: name, checkpoint: checkpoint.directory) }
            let w = try checkpoint.tensor(name)
            guard w.shape == shape else { throw VLMError.weightShape(name: name, expected: shape, got: w.shape) }
            return w
        }
        let embedding = try weight(prefix + "embed_tokens.weight", [c.vocabSize, h])
        let computeType = dtype ?? (embedding.dtype == .bf16 ? .bf16 : .f32)
        self.dtype = computeType
        func matrix(_ name: String, _ shape: [Int]) throws -> WeightTensor {
            try weight(name, shape).converted(to: computeType == .bf16 ? .bf16 : .f32)
        }
        // Decoder tensors take their shapes from the one table (`expectedShapes`).
        let expected = Self.expectedShapes(c)
        func matrix(_ name: String) throws -> WeightTensor { try matrix(name, expected[String(name.dropFirst(prefix.count))]!) }
        func vector(_ name: String) throws -> Tensor { try weight(name, expected[String(name.dropFirst(prefix.count))]!).toF32() }
        let qw = c.numAttentionHeads * hd, kvw = c.numKeyValueHeads * hd
        layers = try (0..<c.numHiddenLayers).map { i in
            let p = "\(prefix)layers.\(i)."
            return Layer(inputNorm: try vector(p + "input_layernorm.weight"), postNorm: try vector(p + "post_attention_layernorm.weight"),
                         q: try matrix(p + "self_attn.q_proj.weight"), k: try matrix(p + "self_attn.k_proj.weight"),
                         v: try matrix(p + "self_attn.v_proj.weight"), o: try matrix(p + "self_attn.o_proj.weight"),
                         qNorm: try vector(p + "self_attn.q_norm.weight"), kNorm: try vector(p + "self_attn.k_norm.weight"),
                         gate: try matrix(p + "mlp.gate_proj.weight"),
                         up: try matrix(p + "mlp.up_proj.weight"),
                         down: try matrix(p + "mlp.down_proj.weight"))
        }
        norm = try vector(prefix + "norm.weight")
        embed = try embedding.converted(to: computeType == .bf16 ? .bf16 : .f32)
        head = tieWordEmbeddings ? embed : try matrix("lm_head.weight", [c.vocabSize, h])
    }

    /// Embedding rows of `ids` [T, hidden] (f32).
    public func embed(_ ids: [Int]) throws -> Tensor {
        let h = config.hiddenSize
        let out = try Tensor(uninitialized: [ids.count, h], what: "prompt embeddings")
        let row = embed.dtype.size * h
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < config.vocabSize else { throw VLMError.invalidInput("token id \(id) is outside the vocabulary (\(config.vocabSize))") }
            let one = WeightTensor(name: "embed", dtype: embed.dtype, shape: [h], data: Data(bytes: embed.pointer + id * row, count: row))
            try Convert.toF32(one, into: out.pointer + r * h)
        }
        return out
    }

    /// Runs `x` [T, hidden] (embeddings of the next T tokens) through the decoder, appending their
    /// keys and values to `cache`; cos/sin [T, headDim] are their M-RoPE rotations; `deepstack`
    /// (prefill of a prompt with vision) adds feature k after layer k. Returns the final-normed
    /// hidden states [T, hidden].
    public func forward(_ x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache, deepstack: Qwen3VLDeepStack? = nil) throws -> Tensor {
        try forward(x, cos: cos, sin: sin, segments: CacheSegments(cache, rows: x.shape[0]), deepstack: deepstack)
    }

    /// `forward` over rows of one or several sequences (`segments`, as `Qwen2VLLanguage`'s): each
    /// row computed exactly as in a pass of its own segment alone.
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
        forwardLock.lock()
        defer { forwardLock.unlock() }
        let normed = try buffer("normed", [t, h])
        let q = try buffer("q", [t, heads * hd])
        let gate = try buffer("gate", [t, c.intermediateSize]), up = try buffer("up", [t, c.intermediateSize])
        let out = try buffer("out", [t, h])
        let (kBuffer, vBuffer, attendedBuffer) = rowwise
            ? (try buffer("k", [t, kvw]), try buffer("v", [t, kvw]), try buffer("attended", [t, heads * hd])) : (q, q, q)
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
                                               precision: dtype == .bf16 ? .bf16 : .f32, scratch: scratch, into: attendedBuffer, pool: pool)
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
        let rows = hidden.shape[0]
        let y = try Tensor(uninitialized: [rows, head.shape[0]], what: "logits")
        try Linear.forward(hidden, head, into: y, rows: rows, rowwise: rowwise, pool: pool)
        return y
    }
}
