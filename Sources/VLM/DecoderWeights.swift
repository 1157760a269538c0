import Foundation
import Tensors

/// A decoder's tensors, read as every family loads them: under `model.language_model.` (transformers
/// 5 module names) or `model.`, exactly the layers the config names (a config claiming 10⁹ layers
/// fails before any loop follows it), each tensor of the shape its family's table
/// (`expectedShapes`) gives; matrices in the compute precision (the checkpoint's unless `dtype`
/// says otherwise), vectors in f32; the embedding table, the final norm, and the LM head (the
/// embedding when tied; an untied head is `lm_head.weight`, outside the prefix — using the
/// embedding in its place would be a different model).
struct DecoderWeights {
    let checkpoint: any WeightStore
    let prefix: String
    let expected: [String: [Int]]
    let computeType: ComputeDType
    let vocab: Int, hidden: Int
    /// The embedding table as stored.
    private let embedding: WeightTensor

    /// `layersKey` names num_hidden_layers in errors (as the family's config.json nests it).
    init(checkpoint: any WeightStore, configPath: String, layersKey: String, layers: Int, vocab: Int, hidden: Int,
         dtype: ComputeDType?, expected: [String: [Int]]) throws {
        self.checkpoint = checkpoint
        self.vocab = vocab
        self.hidden = hidden
        self.expected = expected
        let prefix = checkpoint.contains("model.language_model.embed_tokens.weight") ? "model.language_model." : "model."
        self.prefix = prefix
        let found = layerIndices(in: checkpoint.names, prefix: prefix + "layers.")
        guard found == Set(0..<found.count), found.count == layers else {
            throw VLMError.invalidConfig(path: configPath, key: layersKey,
                                         reason: "is \(layers) but the checkpoint has \(describeLayers(found)) (\(prefix)layers.N)")
        }
        embedding = try Self.weight(checkpoint, prefix + "embed_tokens.weight", [vocab, hidden])
        computeType = dtype ?? (embedding.dtype == .bf16 ? .bf16 : .f32)
    }

    /// The final norm, the embedding table in the compute precision and the LM head (read after
    /// the layers, so a checkpoint's first missing tensor is the one named).
    func ends(tied: Bool) throws -> (norm: Tensor, embed: WeightTensor, head: WeightTensor) {
        let norm = try Self.weight(checkpoint, prefix + "norm.weight", [hidden]).toF32()
        let embed = try embedding.converted(to: computeType.plain)
        let head = tied ? embed : try Self.weight(checkpoint, "lm_head.weight", [vocab, hidden]).converted(to: computeType.plain)
        // int8: the head is quantized too (the embedding table, read by rows, stays bf16).
        return (norm, embed, computeType == .int8 ? try Linear.quantize(head) : head)
    }

    static func weight(_ checkpoint: any WeightStore, _ name: String, _ shape: [Int]) throws -> WeightTensor {
        guard checkpoint.contains(name) else { throw VLMError.missingWeight(name: name, checkpoint: checkpoint.directory) }
        let w = try checkpoint.tensor(name)
        guard w.shape == shape else { throw VLMError.weightShape(name: name, expected: shape, got: w.shape) }
        return w
    }

    /// A tensor of the table, by its name under the prefix ("layers.0.mlp.up_proj.weight").
    func weight(_ name: String) throws -> WeightTensor {
        guard let shape = expected[name] else { throw VLMError.missingWeight(name: prefix + name, checkpoint: checkpoint.directory) }
        return try Self.weight(checkpoint, prefix + name, shape)
    }

    func matrix(_ name: String) throws -> WeightTensor {
        // int8: also packed for oneDNN (prefill 1.3× faster than from the plain rows, measured
        // with `bench generate`; the plain rows stay for decoding).
        computeType == .int8 ? try Linear.pack(try Linear.quantize(try weight(name)), rows: 1024) : try weight(name).converted(to: computeType.plain)
    }

    func vector(_ name: String) throws -> Tensor { try weight(name).toF32() }
}

/// What both decoders share around their layers: activation buffers kept between passes (fresh
/// large allocations fault every page in again; one pass at a time uses them), token embeddings
/// and the LM head.
final class DecoderWorkspace: @unchecked Sendable {
    private var buffers: [String: TensorStorage] = [:]
    /// Held for a whole forward pass: one pass at a time uses the buffers.
    let lock = NSLock()

    /// A buffer of `shape` (reused when one of that name is large enough).
    func buffer(_ name: String, _ shape: [Int]) throws -> Tensor {
        guard let n = checkedElementCount(shape) else {
            throw TensorError.allocationFailed(what: "language workspace '\(name)'", size: "shape \(shape) (overflowing)")
        }
        if let s = buffers[name], s.count >= n { return Tensor(storage: s, offset: 0, shape: shape) }
        let s = try TensorStorage(count: n, zeroed: false, what: "language workspace '\(name)' \(shape)")
        buffers[name] = s
        return Tensor(storage: s, offset: 0, shape: shape)
    }

    /// Embedding rows of `ids` [T, hidden] (f32) from `table` [vocab, hidden].
    static func embed(_ ids: [Int], table: WeightTensor) throws -> Tensor {
        let vocab = table.shape[0], h = table.shape[1]
        let out = try Tensor(uninitialized: [ids.count, h], what: "prompt embeddings")
        let row = table.dtype.size * h
        for (r, id) in ids.enumerated() {
            guard id >= 0 && id < vocab else { throw VLMError.invalidInput("token id \(id) is outside the vocabulary (\(vocab))") }
            let one = WeightTensor(name: "embed", dtype: table.dtype, shape: [h], data: Data(bytes: table.pointer + id * row, count: row))
            try Convert.toF32(one, into: out.pointer + r * h)
        }
        return out
    }

    /// Logits [rows, vocab] of hidden states [rows, hidden]; `rowwise`: each row as a one-row
    /// product computes it (batched decoding).
    static func logits(_ hidden: Tensor, head: WeightTensor, rowwise: Bool, pool: ThreadPool) throws -> Tensor {
        let rows = hidden.shape[0]
        let y = try Tensor(uninitialized: [rows, head.shape[0]], what: "logits")
        try Linear.forward(hidden, head, into: y, rows: rows, rowwise: rowwise, pool: pool)
        return y
    }
}
