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
    private var storage: TensorStorage?
    private var halves: TensorStorage?
    private var gathered: TensorStorage?
    public init() {}
    /// Room for `n` floats that outlives one attention call (keys and values gathered into
    /// contiguous rows before `Attention.forward` reads them); grows, never shrinks.
    public func rows(_ n: Int) throws -> TensorStorage {
        if let s = gathered, s.count >= n { return s }
        let s = try TensorStorage(count: n, zeroed: false, what: "gathered keys and values")
        gathered = s
        return s
    }
    func floats(_ n: Int) throws -> UnsafeMutablePointer<Float> {
        if let s = storage, s.count >= n { return s.pointer }
        let s = try TensorStorage(count: n, zeroed: false, what: "attention scores")
        storage = s
        return s.pointer
    }
    /// Room for n 16-bit values.
    func halfs(_ n: Int) throws -> UnsafeMutablePointer<UInt16> {
        if let h = halves, h.count * 2 >= n { return UnsafeMutableRawPointer(h.pointer).assumingMemoryBound(to: UInt16.self) }
        let h = try TensorStorage(count: n / 2 + n % 2, zeroed: false, what: "attention probabilities")
        halves = h
        return UnsafeMutableRawPointer(h.pointer).assumingMemoryBound(to: UInt16.self)
    }
}

/// Precision of attention's two matrix products.
public enum AttentionPrecision: Sendable {
    /// f32 throughout.
    case f32
    /// q, k, v and the softmax probabilities rounded to bf16, f32 scores, softmax and accumulation:
    /// how PyTorch computes attention for a bf16 model.
    case bf16
    /// 8-bit products (int8 vision towers): q quantized per row, k per key around the keys'
    /// mean, v per channel around its mean, the probabilities e^(s − max) as u8 (the row's
    /// largest 255); integer sums, f32 scales (`rq_attend_s8_tile`, the same bits on every CPU).
    /// Causal masks, head sizes not a multiple of 4 (or above 512), segments of more than 65,536
    /// keys, scales that are not positive and finite, and CPUs without AVX-512 VNNI take bf16's
    /// roundings instead.
    case int8
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
                               tiles: Bool = true, into output: Tensor? = nil, pool: ThreadPool = .shared) throws -> Tensor {
        let t = q.count / (heads * d), s = k.count / (kvHeads * d)
        guard heads % kvHeads == 0, q.count == t * heads * d, k.count == s * kvHeads * d, v.count == k.count else {
            throw TensorError.shapeMismatch(operation: "attention", expected: "q [T, \(heads)·\(d)], k/v [S, \(kvHeads)·\(d)]",
                                            got: "q \(q.shape), k \(k.shape), v \(v.shape)")
        }
        let inputs = Inputs(q: q.pointer, k: k.pointer, v: v.pointer, qs: heads * d, ks: kvHeads * d, t: t, s: s)
        return try run(inputs, heads: heads, kvHeads: kvHeads, d: d, mask: mask, scale: scale, precision: precision,
                       scratch: scratch, budget: maxScoreFloats, tiles: tiles, output: output, pool: pool)
    }

    /// Self-attention over a fused projection: each row of `qkv` [T, 3·heads·D] holds q, k and v
    /// (as an nn.Linear with 3× the width produces them); read in place, without splitting.
    public static func forward(qkv: Tensor, heads: Int, headDim d: Int, mask: AttentionMask, scale: Float? = nil,
                               precision: AttentionPrecision = .f32, scratch: AttentionScratch? = nil,
                               maxScoreFloats: Int = scoreBudget, into output: Tensor? = nil,
                               pool: ThreadPool = .shared) throws -> Tensor {
        let w = heads * d
        guard qkv.rank == 2, qkv.shape[1] == 3 * w else {
            throw TensorError.shapeMismatch(operation: "attention", expected: "qkv [T, 3·\(heads)·\(d)]", got: "\(qkv.shape)")
        }
        let t = qkv.shape[0]
        let inputs = Inputs(q: qkv.pointer, k: qkv.pointer + w, v: qkv.pointer + 2 * w, qs: 3 * w, ks: 3 * w, t: t, s: t)
        return try run(inputs, heads: heads, kvHeads: heads, d: d, mask: mask, scale: scale, precision: precision,
                       scratch: scratch, budget: maxScoreFloats, output: output, pool: pool)
    }

    /// Where q, k and v rows are: `qs` / `ks` floats apart.
    struct Inputs {
        var q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>
        var qs: Int, ks: Int
        var t: Int, s: Int
    }

    /// bf16 copies of q, k and v, rows contiguous.
    struct Halves {
        var q: UnsafeMutablePointer<UInt16>, k: UnsafeMutablePointer<UInt16>, v: UnsafeMutablePointer<UInt16>
    }

    /// `tiles`: false keeps bf16 attention on oneDNN's products (tests and `bench kernels` compare the two).
    static func run(_ x: Inputs, heads: Int, kvHeads: Int, d: Int, mask: AttentionMask, scale: Float?,
                    precision: AttentionPrecision, scratch: AttentionScratch?, budget: Int, tiles: Bool = true,
                    output: Tensor? = nil, pool: ThreadPool) throws -> Tensor {
        let scale = scale ?? 1 / Float(d).squareRoot()
        let out = try output.map { o in
            guard o.count == x.t * heads * d else {
                throw TensorError.shapeMismatch(operation: "attention", expected: "an output of [\(x.t), \(heads)·\(d)]", got: "\(o.shape)")
            }
            return o
        } ?? Tensor(uninitialized: [x.t, heads * d], what: "attention output")
        if precision == .int8 {
            if try int8(x, heads: heads, kvHeads: kvHeads, d: d, mask: mask, scale: scale, out: out, pool: pool) { return out }
            return try run(x, heads: heads, kvHeads: kvHeads, d: d, mask: mask, scale: scale, precision: .bf16, scratch: scratch,
                           budget: budget, tiles: tiles, output: out, pool: pool)
        }
        // With AVX-512 BF16 and an even head_dim, bf16 takes the tile kernel, which keeps each
        // block of scores in cache (one block per mask segment). Each thread's scores for 32
        // queries stay within the score budget; past it (tens of thousands of keys), oneDNN's blocks.
        let tileable = precision == .bf16 && tiles && OneDNN.shared.bf16Products && d % 2 == 0 && rq_cpu_level() >= 3
            && rq_attend_bf16_scratch(x.s, d) / 4 <= budget
        let blocks = try Self.blocks(t: x.t, s: x.s, heads: heads, mask: mask, budget: tileable ? .max : budget)
        let scratch = scratch ?? AttentionScratch()
        // bf16: q, k, v rounded once (into reused scratch); the probabilities per block. (A block
        // has more than 4 queries whatever the budget when its segment has: blocks hold ≥ 16.)
        let bf16 = precision == .bf16 && blocks.contains { $0.queries.count > 4 }
        // Where oneDNN has no bf16 products (CPUs without AVX-512): the same roundings, with f32
        // products on the rounded values.
        let widen = bf16 && !OneDNN.shared.bf16Products
        let tiled = tileable && bf16
        let qw = heads * d, kw = kvHeads * d
        let rounded = x.t * qw + 2 * x.s * kw
        try ScratchPool.shared.withHalfs(bf16 ? rounded : 1) { buffer in try ScratchPool.shared.withBuffer(bytes: widen ? rounded * 4 : 64) { wide in
            var halves: Halves? = nil
            var probabilities: UnsafeMutablePointer<UInt16>? = nil
            var products = x
            if bf16 {
                let h = Halves(q: buffer, k: buffer + x.t * qw, v: buffer + x.t * qw + x.s * kw)
                for (src, stride, dst, rows, width) in [(x.q, x.qs, h.q, x.t, qw), (x.k, x.ks, h.k, x.s, kw), (x.v, x.ks, h.v, x.s, kw)] {
                    pool.parallelRanges(rows, grain: 64) { r in
                        for i in r { Convert.bf16(src + i * stride, count: width, into: dst + i * width) }
                    }
                }
                if widen {
                    let f = wide.assumingMemoryBound(to: Float.self)
                    pool.parallelRanges(rounded, grain: 1 << 15) { r in rq_bf16_to_f32(buffer + r.lowerBound, f + r.lowerBound, r.count) }
                    products = Inputs(q: f, k: f + x.t * qw, v: f + x.t * qw + x.s * kw, qs: qw, ks: kw, t: x.t, s: x.s)
                } else {
                    halves = h
                }
                if !tiled { probabilities = try scratch.halfs(blocks.map { heads * $0.queries.count * $0.keys.count }.max() ?? 0) }
            }
            for b in blocks {
                if b.queries.count <= 4 {
                    direct(x, out: out, heads: heads, kvHeads: kvHeads, d: d, block: b, scale: scale, pool: pool)
                } else if tiled, let halves {
                    try Self.tiles(halves, out: out, heads: heads, kvHeads: kvHeads, d: d, block: b, scale: scale, pool: pool)
                } else {
                    let scores = try scratch.floats(heads * b.queries.count * b.keys.count)
                    try batched(products, out: out, heads: heads, kvHeads: kvHeads, d: d, block: b, scale: scale,
                                scores: scores, halves: halves, probabilities: probabilities, pool: pool)
                }
            }
        } }
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

    /// bf16 attention of one block by `rq_attend_bf16_tile`: each key/value head packed once, then
    /// jobs of up to 32 queries of one head, whose scores stay in cache between the two products.
    static func tiles(_ h: Halves, out: Tensor, heads: Int, kvHeads: Int, d: Int, block: Block, scale: Float,
                      pool: ThreadPool) throws {
        let g = heads / kvHeads, qs = heads * d, ks = kvHeads * d
        let sk = block.keys.count, k0 = block.keys.lowerBound, q0 = block.queries.lowerBound
        let kSize = rq_attend_bf16_keys(sk) * d, vSize = (sk + 1) / 2 * 2 * d, packSize = kSize + vSize
        let scratchBytes = (rq_attend_bf16_scratch(sk, d) + 63) / 64 * 64
        let workers = pool.threads
        let tilesPerHead = (block.queries.count + 31) / 32
        try ScratchPool.shared.withHalfs(kvHeads * packSize) { packed in
            try ScratchPool.shared.withBuffer(bytes: workers * scratchBytes) { scratch in
                pool.parallelRanges(kvHeads) { r in
                    for kv in r {
                        rq_attend_pack_bf16(h.k + k0 * ks + kv * d, h.v + k0 * ks + kv * d, ks, sk, d,
                                            packed + kv * packSize, packed + kv * packSize + kSize)
                    }
                }
                // Jobs (32 queries of one head) dealt round-robin, head by head without a causal
                // mask (the workers share one head's packed keys and values while it is in cache),
                // heads interleaved with one (later queries see more keys).
                let jobs = heads * tilesPerHead, causalBlock = block.causalBase != nil
                pool.parallelRanges(workers) { r in
                    for w in r {
                        for job in stride(from: w, to: jobs, by: workers) {
                            let head = causalBlock ? job % heads : job / tilesPerHead
                            let i = q0 + (causalBlock ? job / heads : (job % tilesPerHead + head) % tilesPerHead) * 32
                            let n = min(32, block.queries.upperBound - i)
                            let pack = packed + head / g * packSize
                            let causal = block.causalBase.map { $0 + (i - q0) } ?? -1
                            rq_attend_bf16_tile(h.q + i * qs + head * d, qs, n, pack, pack + kSize, sk, d, scale, causal,
                                                scratch + w * scratchBytes, out.pointer + i * qs + head * d, qs)
                        }
                    }
                }
            }
        }
    }

    /// Keys a segment of int8 attention may have: a row's Σ p·v (u8 × s8, at most 255 · 127 a key)
    /// fits 32 bits.
    static let int8Keys = 65_536

    /// int8 attention by `rq_attend_s8_tile` into `out`, or false where it does not apply (see
    /// `AttentionPrecision.int8`). Queries are quantized once; each segment's key/value heads are
    /// packed once, then jobs of up to 32 queries of one head.
    static func int8(_ x: Inputs, heads: Int, kvHeads: Int, d: Int, mask: AttentionMask, scale: Float,
                     out: Tensor, pool: ThreadPool) throws -> Bool {
        if case .causal = mask { return false }
        // Without AVX-512 VNNI the kernel's portable path (the same bits) is scalar: tens of times
        // slower than bf16's. It stays reachable where tests force a kernel level.
        guard rq_has_vnni() != 0 || rq_forced_cpu_level() >= 0 else { return false }
        guard d % 4 == 0, d <= 512, scale.isFinite, scale > 0 else { return false }
        let blocks = try Self.blocks(t: x.t, s: x.s, heads: heads, mask: mask, budget: .max)
        guard blocks.allSatisfy({ $0.keys.count <= int8Keys }) else { return false }
        let g = heads / kvHeads, qw = heads * d, scalesAt = (x.t * qw + 63) / 64 * 64
        let workers = pool.threads
        try ScratchPool.shared.withBuffer(bytes: scalesAt + x.t * heads * 4) { buffer in
            let q8 = buffer.assumingMemoryBound(to: UInt8.self)
            let qsc = (buffer + scalesAt).assumingMemoryBound(to: Float.self)
            pool.parallelRanges(x.t, grain: 64) { r in
                for i in r { rq_quantize_activations(x.q + i * x.qs, heads, d, q8 + i * qw, qsc + i * heads) }
            }
            for b in blocks {
                let sk = b.keys.count, k0 = b.keys.lowerBound, q0 = b.queries.lowerBound
                let packBytes = (rq_attend_s8_pack_bytes(sk, d) + 63) / 64 * 64
                let scratchBytes = (rq_attend_s8_scratch(sk, d) + 63) / 64 * 64
                try ScratchPool.shared.withBuffer(bytes: kvHeads * packBytes) { packed in
                    try ScratchPool.shared.withBuffer(bytes: workers * scratchBytes) { scratch in
                        pool.parallelRanges(kvHeads) { r in
                            for kv in r {
                                rq_attend_pack_s8(x.k + k0 * x.ks + kv * d, x.v + k0 * x.ks + kv * d, x.ks, sk, d, packed + kv * packBytes)
                            }
                        }
                        // Jobs head by head: the workers share one head's packed keys and values
                        // while it is in cache (no causal mask: every job sees every key).
                        let perHead = (b.queries.count + 31) / 32, jobs = heads * perHead
                        pool.parallelRanges(workers) { r in
                            for w in r {
                                for job in stride(from: w, to: jobs, by: workers) {
                                    // Tiles rotated per head: a head's partial last tile falls to
                                    // another worker each head.
                                    let head = job / perHead, i = q0 + (job % perHead + head) % perHead * 32
                                    rq_attend_s8_tile(q8 + i * qw + head * d, qw, qsc + i * heads + head, heads,
                                                      min(32, b.queries.upperBound - i), packed + head / g * packBytes, sk, d, scale,
                                                      scratch + w * scratchBytes, out.pointer + i * qw + head * d, qw)
                                }
                            }
                        }
                    }
                }
            }
        }
        return true
    }

    static func direct(_ x: Inputs, out: Tensor, heads: Int, kvHeads: Int, d: Int,
                       block: Block, scale: Float, pool: ThreadPool) {
        let group = heads / kvHeads
        let os = heads * d
        // One job per query and key/value head: the group's query heads read its keys and values once.
        let n = block.queries.count * kvHeads
        pool.parallelRanges(n, grain: 1) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: group * (block.keys.count + 1))
            defer { scores.deallocate() }
            for job in range {
                let i = block.queries.lowerBound + job / kvHeads, kv = job % kvHeads
                let visible = block.causalBase.map { min(block.keys.count, $0 + (i - block.queries.lowerBound) + 1) } ?? block.keys.count
                rq_attend_group(x.q + i * x.qs + kv * group * d, x.k + block.keys.lowerBound * x.ks + kv * d,
                                x.v + block.keys.lowerBound * x.ks + kv * d, x.ks, visible, d, scale, group, scores,
                                out.pointer + i * os + kv * group * d)
            }
        }
    }

    static func batched(_ x: Inputs, out: Tensor, heads: Int, kvHeads: Int, d: Int,
                        block: Block, scale: Float, scores: UnsafeMutablePointer<Float>,
                        halves: Halves?, probabilities: UnsafeMutablePointer<UInt16>?, pool: ThreadPool) throws {
        let g = heads / kvHeads
        let tq = block.queries.count, sk = block.keys.count
        let os = heads * d
        // f32 reads q, k, v in place (any row stride); bf16 reads the contiguous copies.
        let qs = halves == nil ? x.qs : heads * d, ks = halves == nil ? x.ks : kvHeads * d
        let type = halves == nil ? dnnl_f32 : dnnl_bf16
        let qp = halves.map { UnsafeMutableRawPointer($0.q + block.queries.lowerBound * qs) }
            ?? UnsafeMutableRawPointer(x.q + block.queries.lowerBound * qs)
        let kp = halves.map { UnsafeMutableRawPointer($0.k + block.keys.lowerBound * ks) }
            ?? UnsafeMutableRawPointer(x.k + block.keys.lowerBound * ks)
        let vp = halves.map { UnsafeMutableRawPointer($0.v + block.keys.lowerBound * ks) }
            ?? UnsafeMutableRawPointer(x.v + block.keys.lowerBound * ks)
        let op = UnsafeMutableRawPointer(out.pointer + block.queries.lowerBound * os)
        // scores[kv, g, i, j] = Σ_c q[i, (kv·g + g')·d + c] · k[j, kv·d + c]
        try OneDNN.shared.matmul(
            src: .init(dims: [kvHeads, g, tq, d], strides: [g * d, d, qs, 1], type: type, pointer: qp),
            weights: .init(dims: [kvHeads, 1, d, sk], strides: [d, d, 1, ks], type: type, pointer: kp),
            dst: .init(dims: [kvHeads, g, tq, sk], strides: [g * tq * sk, tq * sk, sk, 1], type: dnnl_f32,
                       pointer: UnsafeMutableRawPointer(scores)))
        let rows = kvHeads * g * tq
        pool.parallelRanges(rows, grain: 4) { r in
            // Rows are (kv, g', i) with i fastest: the causal limit follows i = row % tq.
            if let p = probabilities {
                rq_softmax_scaled_bf16(scores + r.lowerBound * sk, r.count, sk, scale, block.causalBase ?? -1, tq, r.lowerBound,
                                       p + r.lowerBound * sk)
                // Widened (bf16 probabilities without bf16 q, k, v copies): back to f32 for an f32 product.
                if halves == nil { rq_bf16_to_f32(p + r.lowerBound * sk, scores + r.lowerBound * sk, r.count * sk) }
            } else {
                rq_softmax_scaled(scores + r.lowerBound * sk, r.count, sk, scale, block.causalBase ?? -1, tq, r.lowerBound)
            }
        }
        // out[i, (kv·g + g')·d + c] = Σ_j p[kv, g', i, j] · v[j, kv·d + c]
        let weightsOfValues: UnsafeMutableRawPointer
        if halves == nil {
            weightsOfValues = UnsafeMutableRawPointer(scores)
        } else if let probabilities {
            weightsOfValues = UnsafeMutableRawPointer(probabilities)
        } else {
            throw TensorError.backend(operation: "attention", reason: "bf16 products without a probability buffer")
        }
        try OneDNN.shared.matmul(
            src: .init(dims: [kvHeads, g, tq, sk], strides: [g * tq * sk, tq * sk, sk, 1], type: type, pointer: weightsOfValues),
            weights: .init(dims: [kvHeads, 1, sk, d], strides: [d, d, ks, 1], type: type, pointer: vp),
            dst: .init(dims: [kvHeads, g, tq, d], strides: [g * d, d, os, 1], type: dnnl_f32, pointer: op))
    }
}
