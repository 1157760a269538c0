import CDNNL
import CKernels
import Foundation

/// Which keys each query may attend to.
public enum AttentionMask: Sendable, Equatable {
    /// Every key.
    case none
    /// Query i attends keys 0...i + offset (offset = keys already cached before these queries).
    case causal(offset: Int)
    /// Queries and keys are cut into blocks at `cuSeqlens` boundaries ([0, a, b, …, total]); a
    /// query attends only keys of its own block (the ViT's per-frame-group attention).
    case blockDiagonal([Int])
}

/// Reusable score memory for attention: grows to the largest block seen, never shrinks.
public final class AttentionScratch: @unchecked Sendable {
    private var storage = TensorStorage(count: 0, zeroed: false)
    private var halves = TensorStorage(count: 0, zeroed: false)
    public init() {}
    func floats(_ n: Int) -> UnsafeMutablePointer<Float> {
        if storage.count < n { storage = TensorStorage(count: n, zeroed: false) }
        return storage.pointer
    }
    /// Room for n 16-bit values.
    func halfs(_ n: Int) -> UnsafeMutablePointer<UInt16> {
        if halves.count * 2 < n { halves = TensorStorage(count: (n + 1) / 2, zeroed: false) }
        return UnsafeMutableRawPointer(halves.pointer).assumingMemoryBound(to: UInt16.self)
    }
}

/// Precision of attention's two matrix products.
public enum AttentionPrecision: Sendable {
    /// f32 throughout.
    case f32
    /// q, k, v and the softmax probabilities rounded to bf16, f32 scores, softmax and accumulation:
    /// how PyTorch computes attention for a bf16 model.
    case bf16
}

/// Scaled dot-product attention with grouped-query heads.
///
/// q [T, heads·D], k and v [S, kvHeads·D] (rows contiguous), out [T, heads·D]. Query head h uses
/// key/value head h / (heads / kvHeads). Long inputs run as two batched oneDNN matmuls per block
/// of queries (scores for all heads of a group at once, never materialising more than a bounded
/// block), with a masked softmax between them; short ones (decoding) run a direct kernel.
public enum Attention {
    /// Scratch floats for one block of scores.
    public static let scoreBudget = 2 << 20

    public static func forward(q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int, headDim d: Int,
                               mask: AttentionMask, scale: Float? = nil, precision: AttentionPrecision = .f32,
                               scratch: AttentionScratch? = nil, maxScoreFloats: Int = scoreBudget,
                               pool: ThreadPool = .shared) throws -> Tensor {
        let t = q.count / (heads * d), s = k.count / (kvHeads * d)
        guard heads % kvHeads == 0, q.count == t * heads * d, k.count == s * kvHeads * d, v.count == k.count else {
            throw TensorError.shapeMismatch(operation: "attention", expected: "q [T, \(heads)·\(d)], k/v [S, \(kvHeads)·\(d)]",
                                            got: "q \(q.shape), k \(k.shape), v \(v.shape)")
        }
        let out = Tensor(uninitialized: [t, heads * d])
        let scale = scale ?? 1 / Float(d).squareRoot()
        let blocks = try Self.blocks(t: t, s: s, heads: heads, mask: mask, budget: maxScoreFloats)
        let scratch = scratch ?? AttentionScratch()
        // bf16: q, k, v rounded once; the probabilities per block.
        var halves: (q: UnsafeMutablePointer<UInt16>, k: UnsafeMutablePointer<UInt16>, v: UnsafeMutablePointer<UInt16>)? = nil
        var probabilities: UnsafeMutablePointer<UInt16>? = nil
        var owned: [UnsafeMutablePointer<UInt16>] = []
        defer { owned.forEach { $0.deallocate() } }
        if precision == .bf16 && blocks.contains(where: { $0.queries.count > 4 }) {
            let qb = UnsafeMutablePointer<UInt16>.allocate(capacity: q.count)
            let kb = UnsafeMutablePointer<UInt16>.allocate(capacity: k.count)
            let vb = UnsafeMutablePointer<UInt16>.allocate(capacity: v.count)
            owned = [qb, kb, vb]
            for (src, dst) in [(q, qb), (k, kb), (v, vb)] {
                pool.parallelRanges(src.count, grain: 1 << 14) { r in
                    Convert.bf16(src.pointer + r.lowerBound, count: r.count, into: dst + r.lowerBound)
                }
            }
            halves = (qb, kb, vb)
            probabilities = scratch.halfs(blocks.map { heads * $0.queries.count * $0.keys.count }.max() ?? 0)
        }
        for b in blocks {
            if b.queries.count <= 4 {
                direct(q: q, k: k, v: v, out: out, heads: heads, kvHeads: kvHeads, d: d, block: b, scale: scale, pool: pool)
            } else {
                let scores = scratch.floats(heads * b.queries.count * b.keys.count)
                try batched(q: q, k: k, v: v, out: out, heads: heads, kvHeads: kvHeads, d: d, block: b, scale: scale,
                            scores: scores, halves: halves, probabilities: probabilities, pool: pool)
            }
        }
        return out
    }

    /// A block of queries and the keys they see; with `causalBase`, query i (block-relative)
    /// sees the first causalBase + i + 1 of those keys.
    struct Block {
        var queries: Range<Int>
        var keys: Range<Int>
        var causalBase: Int?
    }

    static func blocks(t: Int, s: Int, heads: Int, mask: AttentionMask, budget: Int) throws -> [Block] {
        let chunk = max(16, min(t, budget / max(1, heads * s)))
        switch mask {
        case .none:
            return stride(from: 0, to: t, by: chunk).map { Block(queries: $0..<min(t, $0 + chunk), keys: 0..<s, causalBase: nil) }
        case .causal(let offset):
            guard offset >= 0, offset + t <= s else {
                throw TensorError.shapeMismatch(operation: "causal attention", expected: "keys ≥ offset \(offset) + \(t) queries", got: "\(s) keys")
            }
            return stride(from: 0, to: t, by: chunk).map { q0 in
                let q1 = min(t, q0 + chunk)
                return Block(queries: q0..<q1, keys: 0..<(offset + q1), causalBase: offset + q0)
            }
        case .blockDiagonal(let cu):
            guard t == s, cu.first == 0, cu.last == t, zip(cu, cu.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw TensorError.shapeMismatch(operation: "block-diagonal attention", expected: "cu_seqlens from 0 to \(t), ascending", got: "\(cu)")
            }
            var out: [Block] = []
            for (a, b) in zip(cu, cu.dropFirst()) where a < b {
                let c = max(16, min(b - a, budget / max(1, heads * (b - a))))
                for q0 in stride(from: a, to: b, by: c) { out.append(Block(queries: q0..<min(b, q0 + c), keys: a..<b, causalBase: nil)) }
            }
            return out
        }
    }

    static func direct(q: Tensor, k: Tensor, v: Tensor, out: Tensor, heads: Int, kvHeads: Int, d: Int,
                       block: Block, scale: Float, pool: ThreadPool) {
        let group = heads / kvHeads
        let qs = heads * d, ks = kvHeads * d
        let n = block.queries.count * heads
        pool.parallelRanges(n, grain: 2) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(1, block.keys.count))
            defer { scores.deallocate() }
            for job in range {
                let i = block.queries.lowerBound + job / heads, h = job % heads
                let visible = block.causalBase.map { min(block.keys.count, $0 + (i - block.queries.lowerBound) + 1) } ?? block.keys.count
                let kv = h / group
                rq_attend_one(q.pointer + i * qs + h * d, k.pointer + block.keys.lowerBound * ks + kv * d,
                              v.pointer + block.keys.lowerBound * ks + kv * d, ks, visible, d, scale, scores,
                              out.pointer + i * qs + h * d)
            }
        }
    }

    static func batched(q: Tensor, k: Tensor, v: Tensor, out: Tensor, heads: Int, kvHeads: Int, d: Int,
                        block: Block, scale: Float, scores: UnsafeMutablePointer<Float>,
                        halves: (q: UnsafeMutablePointer<UInt16>, k: UnsafeMutablePointer<UInt16>, v: UnsafeMutablePointer<UInt16>)?,
                        probabilities: UnsafeMutablePointer<UInt16>?, pool: ThreadPool) throws {
        let g = heads / kvHeads
        let tq = block.queries.count, sk = block.keys.count
        let qs = heads * d, ks = kvHeads * d
        let type = halves == nil ? dnnl_f32 : dnnl_bf16
        let qp = halves.map { UnsafeMutableRawPointer($0.q + block.queries.lowerBound * qs) }
            ?? UnsafeMutableRawPointer(q.pointer + block.queries.lowerBound * qs)
        let kp = halves.map { UnsafeMutableRawPointer($0.k + block.keys.lowerBound * ks) }
            ?? UnsafeMutableRawPointer(k.pointer + block.keys.lowerBound * ks)
        let vp = halves.map { UnsafeMutableRawPointer($0.v + block.keys.lowerBound * ks) }
            ?? UnsafeMutableRawPointer(v.pointer + block.keys.lowerBound * ks)
        let op = UnsafeMutableRawPointer(out.pointer + block.queries.lowerBound * qs)
        // scores[kv, g, i, j] = Σ_c q[i, (kv·g + g')·d + c] · k[j, kv·d + c]
        try OneDNN.shared.matmul(
            src: .init(dims: [kvHeads, g, tq, d], strides: [g * d, d, qs, 1], type: type, pointer: qp),
            weights: .init(dims: [kvHeads, 1, d, sk], strides: [d, d, 1, ks], type: type, pointer: kp),
            dst: .init(dims: [kvHeads, g, tq, sk], strides: [g * tq * sk, tq * sk, sk, 1], type: dnnl_f32,
                       pointer: UnsafeMutableRawPointer(scores)))
        let rows = kvHeads * g * tq
        pool.parallelRanges(rows, grain: 4) { r in
            // Rows are (kv, g', i) with i fastest: the causal limit follows i = row % tq.
            rq_softmax_scaled(scores + r.lowerBound * sk, r.count, sk, scale, block.causalBase ?? -1, tq, r.lowerBound)
            if let p = probabilities { Convert.bf16(scores + r.lowerBound * sk, count: r.count * sk, into: p + r.lowerBound * sk) }
        }
        // out[i, (kv·g + g')·d + c] = Σ_j p[kv, g', i, j] · v[j, kv·d + c]
        try OneDNN.shared.matmul(
            src: .init(dims: [kvHeads, g, tq, sk], strides: [g * tq * sk, tq * sk, sk, 1], type: type,
                       pointer: probabilities.map { UnsafeMutableRawPointer($0) } ?? UnsafeMutableRawPointer(scores)),
            weights: .init(dims: [kvHeads, 1, sk, d], strides: [d, d, ks, 1], type: type, pointer: vp),
            dst: .init(dims: [kvHeads, g, tq, d], strides: [g * d, d, qs, 1], type: dnnl_f32, pointer: op))
    }
}
