import Foundation
import Testing
import CKernels
@testable import Tensors

@Suite struct LinearTests {
    static let shapes = [(1, 7, 65), (7, 65, 1), (65, 1000, 33), (3, 1537, 130), (130, 257, 96), (9, 96, 1000)]

    @Test(arguments: shapes)
    func f32(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 7)
        let w = Reference.f32Weight("w", Reference.pattern(n * k, seed: 8, scale: 0.25), shape: [n, k])
        let b = try Reference.tensor([n], seed: 9, scale: 0.1)
        let y = try Linear.forward(x, w, bias: b)
        #expect(y.shape == [m, n])
        #expect(relativeError(y.values, try Reference.values("linear_f32_\(m)x\(k)x\(n)")) < 1e-5)
    }

    /// bf16 weights: few rows go through the GEMV kernels with f32 activations; many rows through
    /// oneDNN with activations rounded to bf16 (as PyTorch's bf16 matmul). Accumulation is f32
    /// in both, so the only difference from the float64 reference is summation rounding.
    @Test(arguments: shapes)
    func bf16(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 7)
        let w = Reference.bf16Weight("w", Reference.pattern(n * k, seed: 8, scale: 0.25), shape: [n, k])
        let b = try Reference.tensor([n], seed: 9, scale: 0.1)
        let y = try Linear.forward(x, w, bias: b)
        #expect(relativeError(y.values, try Reference.values("linear_bf16_\(m)x\(k)x\(n)")) < 1e-5)
    }

    /// Batched decoding: with `rowwise`, every row of a many-row product is bit-identical to the
    /// same row computed alone, for every weight type and for row counts past the GEMV limit,
    /// columns that are not a multiple of 64 and rows that are not a multiple of 4.
    @Test(arguments: [(13, 100, 37), (9, 2048 + 17, 70), (3, 64, 4), (20, 130, 5)])
    func rowwiseRowsEqualSingleRows(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 3)
        let values = Reference.pattern(n * k, seed: 4, scale: 0.25)
        for w in [Reference.bf16Weight("w", values, shape: [n, k]), Reference.f32Weight("w", values, shape: [n, k])] {
            let all = try Tensor(zeros: [m, n])
            try Linear.forward(x, w, into: all, rows: m, rowwise: true)
            for r in 0..<m {
                let one = try Tensor(zeros: [1, n])
                try Linear.forward(x.rows(r..<(r + 1)), w, into: one, rows: 1)
                #expect(Array(all.values[(r * n)..<((r + 1) * n)]) == one.values, "\(w.dtype) row \(r) of \(m)")
            }
        }
    }

    /// The product CPUs without oneDNN bf16 matmul (no AVX-512) take: the same bf16 roundings,
    /// widened to f32 for OpenBLAS. Same PyTorch references as the oneDNN path.
    @Test(arguments: shapes.filter { $0.0 > Linear.gemvRows })
    func bf16Widened(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 7)
        let w = Reference.bf16Weight("w", Reference.pattern(n * k, seed: 8, scale: 0.25), shape: [n, k])
        let b = try Reference.tensor([n], seed: 9, scale: 0.1)
        let y = try Tensor(zeros: [m, n])
        try Linear.gemmBF16Widened(x: x.pointer, m: m, k: k, w: w.pointer.assumingMemoryBound(to: UInt16.self), n: n,
                               y: y.pointer, pool: .shared)
        for i in 0..<m { for j in 0..<n { y.pointer[i * n + j] += b.pointer[j] } }
        #expect(relativeError(y.values, try Reference.values("linear_bf16_\(m)x\(k)x\(n)")) < 1e-5)
    }

    @Test func shapesAreChecked() throws {
        let x = try Tensor(zeros: [2, 5])
        let w = Reference.f32Weight("w", [Float](repeating: 0, count: 12), shape: [3, 4])
        #expect(throws: TensorError.self) { try Linear.forward(x, w) }
    }
}

@Suite struct AttentionTests {
    struct Case: Decodable {
        var t: Int, s: Int, heads: Int, kvHeads: Int, headDim: Int, mask: String, cuSeqlens: [Int]?, offset: Int
    }

    /// The attention cases of kernels.json (other entries there lack these fields).
    static let cases: [String: Case] = {
        struct Entry: Decodable { var t: Int?, s: Int?, heads: Int?, kvHeads: Int?, headDim: Int?, mask: String?, cuSeqlens: [Int]?, offset: Int? }
        struct File: Decodable { var cases: [String: Entry] }
        let data = try! Data(contentsOf: Reference.root.appendingPathComponent("kernels.json"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var out: [String: Case] = [:]
        for (name, c) in try! decoder.decode(File.self, from: data).cases where name.hasPrefix("attn_") {
            out[name] = Case(t: c.t!, s: c.s!, heads: c.heads!, kvHeads: c.kvHeads!, headDim: c.headDim!,
                             mask: c.mask!, cuSeqlens: c.cuSeqlens, offset: c.offset!)
        }
        return out
    }()

    @Test(arguments: cases.keys.sorted())
    func matchesReference(name: String) throws {
        let c = Self.cases[name]!
        let q = try Reference.tensor([c.t, c.heads * c.headDim], seed: 10)
        let k = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 11)
        let v = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 12)
        let mask: AttentionMask
        switch c.mask {
        case "causal": mask = .causal(offset: c.offset)
        case "block": mask = .blockDiagonal(c.cuSeqlens!)
        default: mask = .none
        }
        let ref = try Reference.values(name)
        let out = try Attention.forward(q: q, k: k, v: v, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, mask: mask)
        #expect(relativeError(out.values, ref) < 2e-6, "\(name)")
        // Small score budgets cut the queries into many blocks (and reuse one scratch buffer).
        let scratch = AttentionScratch()
        for budget in [1, 5000] {
            let split = try Attention.forward(q: q, k: k, v: v, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                                              mask: mask, scratch: scratch, maxScoreFloats: budget)
            #expect(relativeError(split.values, ref) < 2e-6, "\(name) with a budget of \(budget)")
        }
    }

    /// bf16 attention (q, k, v and probabilities rounded, f32 scores and sums) against the float64
    /// reference: rounding to bf16 (8 significant bits) bounds the error near 2⁻⁸ relative.
    @Test(arguments: ["attn_causal_gqa_65", "attn_block_65", "attn_causal_1030"])
    func bf16IsCloseToReference(name: String) throws {
        let c = Self.cases[name]!
        let q = try Reference.tensor([c.t, c.heads * c.headDim], seed: 10)
        let k = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 11)
        let v = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 12)
        let mask: AttentionMask = c.mask == "block" ? .blockDiagonal(c.cuSeqlens!) : .causal(offset: c.offset)
        // The tile kernel, and oneDNN's products in one block and in many (a small score budget;
        // there the tile kernel's scratch is over budget too).
        for (tiles, budget) in [(true, Attention.scoreBudget), (false, Attention.scoreBudget), (true, 4096)] {
            let out = try Self.bf16(q, k, v, heads: c.heads, kvHeads: c.kvHeads, d: c.headDim, mask: mask, tiles: tiles, budget: budget)
            let error = relativeError(out.values, try Reference.values(name))
            #expect(error < 1.0 / 64 && error > 1e-5, "\(name), tiles \(tiles), budget \(budget): \(error)")
        }
    }

    /// A fused [T, 3·H·D] projection read in place gives what split q, k, v give.
    @Test(arguments: [AttentionPrecision.f32, .bf16])
    func fusedQKVMatchesSplit(precision: AttentionPrecision) throws {
        let t = 37, h = 3, d = 16, w = h * d
        let qkv = try Reference.tensor([t, 3 * w], seed: 21)
        let rows = (0..<t).map { Array(qkv.values[($0 * 3 * w)..<($0 * 3 * w + 3 * w)]) }
        let q = try Tensor(shape: [t, w], values: rows.flatMap { $0[0..<w] })
        let k = try Tensor(shape: [t, w], values: rows.flatMap { $0[w..<(2 * w)] })
        let v = try Tensor(shape: [t, w], values: rows.flatMap { $0[(2 * w)...] })
        for mask in [AttentionMask.blockDiagonal([0, 10, 37]), .causal(offset: 0)] {
            let split = try Attention.forward(q: q, k: k, v: v, heads: h, kvHeads: h, headDim: d, mask: mask, precision: precision)
            let fused = try Attention.forward(qkv: qkv, heads: h, headDim: d, mask: mask, precision: precision)
            #expect(relativeError(fused.values, split.values) < 1e-6)
        }
    }

    /// bf16 attention through `Attention.run`, by the tile kernel or by oneDNN's two products.
    static func bf16(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, kvHeads: Int, d: Int, mask: AttentionMask,
                     tiles: Bool, budget: Int = Attention.scoreBudget) throws -> Tensor {
        let x = Attention.Inputs(q: q.pointer, k: k.pointer, v: v.pointer, qs: heads * d, ks: kvHeads * d,
                                 t: q.shape[0], s: k.shape[0])
        return try Attention.run(x, heads: heads, kvHeads: kvHeads, d: d, mask: mask, scale: nil, precision: .bf16,
                                 scratch: nil, budget: budget, tiles: tiles, pool: .shared)
    }

    /// Exact attention (float64) of q, k, v rounded to bf16, the probabilities unrounded.
    static func exact(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, kvHeads: Int, d: Int, mask: AttentionMask) -> [Float] {
        let round = { (x: [Float]) in Convert.bf16(x).map { Double(Float(bitPattern: UInt32($0) << 16)) } }
        let qv = round(q.values), kv = round(k.values), vv = round(v.values)
        let t = q.shape[0], s = k.shape[0], g = heads / kvHeads
        var out = [Float](repeating: 0, count: t * heads * d)
        for i in 0..<t {
            var keys = 0..<s
            switch mask {
            case .none: break
            case .causal(let offset): keys = 0..<min(s, offset + i + 1)
            case .blockDiagonal(let cu):
                if let b = zip(cu, cu.dropFirst()).first(where: { $0.0 <= i && i < $0.1 }) { keys = b.0..<b.1 }
            }
            for h in 0..<heads {
                let kh = h / g
                let scores = keys.map { j in (0..<d).reduce(0.0) { $0 + qv[i * heads * d + h * d + $1] * kv[j * kvHeads * d + kh * d + $1] } / Double(d).squareRoot() }
                let top = scores.max() ?? 0
                let e = scores.map { Foundation.exp($0 - top) }
                let sum = e.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for (n, j) in keys.enumerated() { acc += e[n] / sum * vv[j * kvHeads * d + kh * d + c] }
                    out[i * heads * d + h * d + c] = Float(acc)
                }
            }
        }
        return out
    }

    /// The tile kernel (AVX-512 BF16; any even head_dim) against oneDNN's products and exact
    /// attention: head sizes of every chunking of its value loop (48: 3 vectors, 80: 5, 128: 8,
    /// 256: two passes of 8) and with a partial last vector (72, 136: 8 + 1 partial, 24, 2),
    /// GQA, masks, key counts off the 32-key and 2-key grids.
    @Test(arguments: [(4, 2, 16, 45, 45, AttentionMask.causal(offset: 0)), (3, 3, 80, 70, 70, .blockDiagonal([0, 33, 70])),
                      (2, 1, 128, 37, 50, .causal(offset: 13)), (2, 2, 64, 33, 71, .none), (2, 2, 48, 40, 40, .none),
                      (1, 1, 256, 9, 21, .none), (6, 2, 80, 100, 100, .blockDiagonal([0, 3, 64, 100])),
                      (2, 2, 72, 40, 45, .none), (1, 1, 136, 33, 40, .causal(offset: 7)), (3, 1, 24, 50, 50, .causal(offset: 0)),
                      (1, 1, 2, 35, 35, .none)])
    func tiledBf16(heads: Int, kvHeads: Int, d: Int, t: Int, s: Int, mask: AttentionMask) throws {
        let q = try Reference.tensor([t, heads * d], seed: 31, scale: 2)
        let k = try Reference.tensor([s, kvHeads * d], seed: 32, scale: 2)
        let v = try Reference.tensor([s, kvHeads * d], seed: 33)
        let tiled = try Self.bf16(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask, tiles: true)
        let onednn = try Self.bf16(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask, tiles: false)
        let exact = Self.exact(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask)
        // Both round the probabilities to bf16 (2⁻⁹ relative); only summation order differs between them.
        #expect(relativeError(tiled.values, exact) < 1.0 / 128)
        #expect(relativeError(onednn.values, exact) < 1.0 / 128)
        #expect(relativeError(tiled.values, onednn.values) < 1.0 / 128)
        #expect(tiled.values.allSatisfy { $0.isFinite })
    }

    /// A query's result does not depend on the block of 32 that holds it: the last queries of a
    /// causal prefill run alone after the first (offset), and the last queries of a full mask
    /// run alone, equal the full runs' rows bit for bit; one segment of a block-diagonal mask
    /// equals that segment run alone with a full mask. (The tile kernel needs AVX-512 BF16.)
    @Test(.enabled(if: rq_cpu_level() >= 3)) func tiledRowsDoNotDependOnTheirBlock() throws {
        let heads = 4, d = 80, t = 90, w = heads * d
        let q = try Reference.tensor([t, w], seed: 41, scale: 2), k = try Reference.tensor([t, w], seed: 42, scale: 2)
        let v = try Reference.tensor([t, w], seed: 43)
        let full = try Self.bf16(q, k, v, heads: heads, kvHeads: heads, d: d, mask: .causal(offset: 0), tiles: true)
        let rows = { (x: Tensor, r: Range<Int>) in try Tensor(shape: [r.count, w], values: Array(x.values[(r.lowerBound * w)..<(r.upperBound * w)])) }
        let tail = try Self.bf16(rows(q, 13..<t), k, v, heads: heads, kvHeads: heads, d: d, mask: .causal(offset: 13), tiles: true)
        #expect(tail.values == Array(full.values[(13 * w)...]))
        let all = try Self.bf16(q, k, v, heads: heads, kvHeads: heads, d: d, mask: .none, tiles: true)
        let last = try Self.bf16(rows(q, 13..<t), k, v, heads: heads, kvHeads: heads, d: d, mask: .none, tiles: true)
        #expect(last.values == Array(all.values[(13 * w)...]))
        let blocks = try Self.bf16(q, k, v, heads: heads, kvHeads: heads, d: d, mask: .blockDiagonal([0, 37, t]), tiles: true)
        let alone = try Self.bf16(rows(q, 37..<t), rows(k, 37..<t), rows(v, 37..<t), heads: heads, kvHeads: heads, d: d,
                                  mask: .none, tiles: true)
        #expect(alone.values == Array(blocks.values[(37 * w)...]))
    }

    /// The kernel's portable path (CPUs without AVX-512 BF16, or any head size) against its vector
    /// path and exact attention, called directly.
    /// (n > 32: the kernel takes blocks of 32 itself.)
    @Test(arguments: [(80, 45, Int(-1), 32), (64, 70, 20, 50), (24, 33, -1, 33)])
    func tileKernelPortablePath(d: Int, s: Int, causal: Int, n: Int) throws {
        let scale = 1 / Float(d).squareRoot()
        let q = try Reference.tensor([n, d], seed: 51, scale: 2), k = try Reference.tensor([s, d], seed: 52, scale: 2)
        let v = try Reference.tensor([s, d], seed: 53)
        let qh = Convert.bf16(q.values), kh = Convert.bf16(k.values), vh = Convert.bf16(v.values)
        var kp = [UInt16](repeating: 1, count: rq_attend_bf16_keys(s) * d), vp = [UInt16](repeating: 1, count: (s + 1) / 2 * 2 * d)
        rq_attend_pack_bf16(kh, vh, d, s, d, &kp, &vp)
        var scratch = [UInt8](repeating: 0, count: rq_attend_bf16_scratch(s, d))
        func run(level: Int32) -> [Float] {
            var out = [Float](repeating: .nan, count: n * d)
            _ = rq_set_cpu_level(level)
            defer { _ = rq_set_cpu_level(-1) }
            rq_attend_bf16_tile(qh, d, n, kp, vp, s, d, scale, causal, &scratch, &out, d)
            return out
        }
        let plain = run(level: 0), best = run(level: -1)
        let mask: AttentionMask = causal < 0 ? .none : .causal(offset: causal)
        let exact = Self.exact(q, k, v, heads: 1, kvHeads: 1, d: d, mask: mask)
        #expect(relativeError(plain, exact) < 1.0 / 128)
        #expect(relativeError(best, exact) < 1.0 / 128)
        // No keys: zeros (nothing read from the packed buffers).
        var none = [Float](repeating: .nan, count: n * d)
        rq_attend_bf16_tile(qh, d, n, kp, vp, 0, d, scale, causal, &scratch, &none, d)
        #expect(none.allSatisfy { $0 == 0 })
    }

    @Test func invalidMasksThrow() throws {
        let q = try Tensor(zeros: [4, 8]), k = try Tensor(zeros: [4, 8])
        #expect(throws: TensorError.self) { try Attention.forward(q: q, k: k, v: k, heads: 1, kvHeads: 1, headDim: 8, mask: .blockDiagonal([0, 3])) }
        #expect(throws: TensorError.self) { try Attention.forward(q: q, k: k, v: k, heads: 1, kvHeads: 1, headDim: 8, mask: .causal(offset: 2)) }
        #expect(throws: TensorError.self) { try Attention.forward(q: q, k: k, v: k, heads: 3, kvHeads: 2, headDim: 8, mask: .none) }
    }
}
