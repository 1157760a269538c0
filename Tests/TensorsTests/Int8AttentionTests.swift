import CKernels
import Foundation
import Testing
@testable import Tensors

/// int8 attention (`AttentionPrecision.int8`, int8 vision towers): close to exact attention, the
/// same bits on every CPU path and in any block of queries, non-finite inputs kept visible, and
/// bf16's roundings where it does not apply.
@Suite(.serialized) struct Int8AttentionTests {
    /// Attention at the best kernel level, forced, so that int8 attention runs its kernel on any CPU
    /// (unforced, CPUs without AVX-512 VNNI take bf16's path).
    static func run(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, kvHeads: Int, d: Int, mask: AttentionMask,
                    precision: AttentionPrecision = .int8, scale: Float? = nil) throws -> Tensor {
        let best = rq_set_cpu_level(-1)
        rq_set_cpu_level(best)
        defer { rq_set_cpu_level(-1) }
        return try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: d, mask: mask, scale: scale,
                                     precision: precision)
    }

    /// Values that are not on a short cycle (Reference.pattern repeats every 2003): a mean, a
    /// spread, and per-channel offsets shared by every row (what centring keys and values is for).
    static func tensor(rows: Int, width: Int, seed: UInt64, scale: Float, offset: Float = 0) throws -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) - 0.5
        }
        let channel = (0..<width).map { _ in next() * 2 * offset }
        var values = [Float](repeating: 0, count: rows * width)
        for i in 0..<rows { for c in 0..<width { values[i * width + c] = (next() + next() + next()) * 2 * scale + channel[c] } }
        return try Tensor(shape: [rows, width], values: values)
    }

    /// Against PyTorch's float64 attention (fixtures/scripts/reference_kernels.py), the cases
    /// without a causal mask: 8-bit queries, keys, values and probabilities stay within 3 %.
    @Test(arguments: ["attn_block_65", "attn_full_5x9"])
    func closeToReference(name: String) throws {
        let c = try #require(AttentionTests.cases[name])
        let q = try Reference.tensor([c.t, c.heads * c.headDim], seed: 10)
        let k = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 11)
        let v = try Reference.tensor([c.s, c.kvHeads * c.headDim], seed: 12)
        let mask: AttentionMask = c.mask == "block" ? .blockDiagonal(c.cuSeqlens ?? []) : .none
        let out = try Self.run(q, k, v, heads: c.heads, kvHeads: c.kvHeads, d: c.headDim, mask: mask)
        let error = relativeError(out.values, try Reference.values(name))
        // Not bf16's result (which is within 2⁻⁸), and within the int8 bound.
        #expect(error < 0.03 && error > 1e-4, "\(name): \(error)")
    }

    /// Head sizes of every P·V chunking (16: 1 vector, 72: 4 + a partial one, 80: 5, 128: 8, 256: two
    /// passes), GQA, segments off the 32-key and 4-key grids, offsets on every channel, peaked
    /// scores, segments over several 256-key blocks; against exact attention (float64).
    @Test(arguments: [(4, 2, 16, 45, 45, AttentionMask.blockDiagonal([0, 45]), Float(1)), (3, 3, 80, 70, 70, .blockDiagonal([0, 33, 70]), 1),
                      (2, 2, 72, 40, 45, .none, 2), (1, 1, 128, 9, 21, .none, 1), (2, 1, 256, 33, 37, .none, 1),
                      (6, 2, 80, 100, 100, .blockDiagonal([0, 3, 64, 100]), 3), (2, 2, 4, 50, 50, .none, 1),
                      (1, 1, 80, 40, 600, .none, 1), (2, 1, 72, 37, 530, .none, 2)])
    func closeToExact(heads: Int, kvHeads: Int, d: Int, t: Int, s: Int, mask: AttentionMask, scale: Float) throws {
        let q = try Self.tensor(rows: t, width: heads * d, seed: 1, scale: scale)
        let k = try Self.tensor(rows: s, width: kvHeads * d, seed: 2, scale: 1, offset: 3)
        let v = try Self.tensor(rows: s, width: kvHeads * d, seed: 3, scale: 1, offset: 2)
        let out = try Self.run(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask)
        let exact = AttentionTests.exact(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask)
        let error = relativeError(out.values, exact)
        // 8-bit queries and keys move peaked scores most: 0.4–3.9 % of the largest output here.
        #expect(error < 0.05, "heads \(heads)/\(kvHeads), d \(d), \(t)×\(s), \(mask), scale \(scale): \(error)")
    }

    /// The VNNI kernel and the portable one give the same bits (compared where the CPU has VNNI),
    /// and a query's result does not depend on which other queries share its call; keys across
    /// several 256-key blocks of the P·V product.
    @Test(arguments: [77, 600])
    func sameBitsOnEveryPathAndInAnyBlock(s: Int) throws {
        let heads = 3, d = 80, t = s
        let q = try Self.tensor(rows: t, width: heads * d, seed: 4, scale: 2)
        let k = try Self.tensor(rows: s, width: heads * d, seed: 5, scale: 1, offset: 1)
        let v = try Self.tensor(rows: s, width: heads * d, seed: 6, scale: 1, offset: 1)
        let full = try Self.run(q, k, v, heads: heads, kvHeads: heads, d: d, mask: .none)
        let best = rq_set_cpu_level(-1)
        defer { rq_set_cpu_level(-1) }
        if rq_has_vnni() != 0 {
            // Unforced, the dispatch takes the VNNI kernel too.
            let unforced = try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: heads, headDim: d, mask: .none, precision: .int8)
            #expect(unforced.values.map(\.bitPattern) == full.values.map(\.bitPattern))
        }
        for level in 0...best {
            rq_set_cpu_level(level)
            let other = try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: heads, headDim: d, mask: .none, precision: .int8)
            #expect(other.values.map(\.bitPattern) == full.values.map(\.bitPattern), "level \(level)")
        }
        rq_set_cpu_level(-1)
        // Queries 5..<40 on their own (blocks of 32 fall elsewhere).
        let w = heads * d
        let part = try Tensor(shape: [35, w], values: Array(q.values[(5 * w)..<(40 * w)]))
        let alone = try Self.run(part, k, v, heads: heads, kvHeads: heads, d: d, mask: .none)
        #expect(alone.values.map(\.bitPattern) == Array(full.values[(5 * w)..<(40 * w)]).map(\.bitPattern))
    }

    /// Non-finite inputs are made NaN, never hidden: a NaN or infinite key makes NaN the rows of its
    /// segment for the query heads of its key/value head, a value its channel of them, a query its
    /// own row and head; other segments and heads are untouched (here 4 query heads on 2
    /// key/value heads).
    @Test func nonFiniteInputsStayVisible() throws {
        let heads = 4, kvHeads = 2, d = 16, t = 40, w = heads * d, kw = kvHeads * d
        let q = try Self.tensor(rows: t, width: w, seed: 7, scale: 1)
        let k = try Self.tensor(rows: t, width: kw, seed: 8, scale: 1)
        let v = try Self.tensor(rows: t, width: kw, seed: 9, scale: 1)
        let mask = AttentionMask.blockDiagonal([0, 20, 40])
        let clean = try Self.run(q, k, v, heads: heads, kvHeads: kvHeads, d: d, mask: mask)
        for (which, value) in [("k", Float.nan), ("k", -.infinity), ("v", .infinity), ("v", .nan), ("q", .nan), ("q", .infinity)] {
            var qv = q.values, kv = k.values, vv = v.values
            switch which {
            case "k": kv[25 * kw + d + 3] = value // segment 2, key/value head 1 (query heads 2, 3)
            case "v": vv[25 * kw + d + 3] = value
            default: qv[25 * w + 3] = value // query 25, head 0
            }
            let out = try Self.run(try Tensor(shape: [t, w], values: qv), try Tensor(shape: [t, kw], values: kv),
                                   try Tensor(shape: [t, kw], values: vv), heads: heads, kvHeads: kvHeads, d: d, mask: mask)
            for i in 0..<t {
                for c in 0..<w {
                    let x = out.values[i * w + c]
                    let hit: Bool
                    switch which {
                    case "k": hit = i >= 20 && c >= 2 * d
                    case "v": hit = i >= 20 && c >= 2 * d && c % d == 3
                    default: hit = i == 25 && c < d
                    }
                    if hit { #expect(x.isNaN, "\(which) \(value): row \(i), value \(c) is \(x)") } else {
                        #expect(x.bitPattern == clean.values[i * w + c].bitPattern, "\(which) \(value): row \(i), value \(c)")
                    }
                }
            }
        }
    }

    /// A head's packed keys and values (`rq_attend_pack_s8`) equal the scheme written out here,
    /// byte for byte: keys centred on their mean (each channel summed over the keys in order)
    /// and quantized per key ([d/4][ldk][4], zero keys up to ldk, 128·Σk8 and the scale per key),
    /// values centred per channel and quantized per channel ([ldk/4][d][4]), the flag of a
    /// non-finite key; rows strided as the tower's fused q, k, v rows are; on every kernel level.
    @Test(arguments: [(1, 4), (33, 80), (77, 132), (100, 8), (40, 512)])
    func packEqualsTheScheme(n: Int, d: Int) throws {
        let stride = 3 * d + 5
        let rows = try Self.tensor(rows: n, width: stride, seed: UInt64(n * 1000 + d), scale: 1, offset: 3)
        for poison in [Float?.none, .infinity, .nan] {
            var x = rows.values
            if let poison { x[(n / 2) * stride + 2] = poison; x[(n / 3) * stride + d + 1] = poison }
            let ldk = (n + 31) / 32 * 32
            let bytes = rq_attend_s8_pack_bytes(n, d)
            // Each compiled version of the pack (AVX-512, AVX2, portable) gives the same bytes.
            let best = Int(rq_set_cpu_level(-1))
            let versions = (0...best).map { level in
                var bytesOut = [UInt8](repeating: 0xAA, count: bytes)
                rq_set_cpu_level(Int32(level))
                x.withUnsafeBufferPointer { p in
                    bytesOut.withUnsafeMutableBytes { rq_attend_pack_s8(p.baseAddress!, p.baseAddress! + d, stride, n, d, $0.baseAddress!) }
                }
                rq_set_cpu_level(-1)
                return bytesOut
            }
            let packed = versions[best]
            for (level, other) in versions.enumerated() { #expect(other == packed, "kernel level \(level) against \(best)") }
            func load<T>(_ offset: Int, _: T.Type) -> T { packed.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) } }
            let corrAt = ldk * d, ksAt = corrAt + 4 * ldk, vAt = ksAt + 4 * ldk, vsAt = vAt + ldk * d, vmAt = vsAt + 4 * d, badAt = vmAt + 4 * d
            func means(_ column: Int) -> [Float] {
                var m = [Float](repeating: 0, count: d)
                for j in 0..<n { for c in 0..<d { m[c] += x[j * stride + column + c] } }
                return m.map { $0 / Float(n) }
            }
            // Largest magnitude on the bit patterns (inf and NaN above every finite value).
            func top(_ values: [Float]) -> UInt32 { values.map { $0.bitPattern & 0x7fff_ffff }.max() ?? 0 }
            func q8(_ value: Float, _ inv: Float) -> UInt8 {
                let r = (value * inv).rounded(.toNearestOrEven)
                return UInt8(bitPattern: Int8(r.isNaN ? 0 : min(127, max(-127, r))))
            }
            let km = means(0)
            var bad: Int32 = 0
            for j in 0..<ldk {
                var sum: Int32 = 0, scale: Float = 0
                var key = [UInt8](repeating: 0, count: d)
                if j < n {
                    let row = (0..<d).map { x[j * stride + $0] - km[$0] }
                    let t = top(row), amax = Float(bitPattern: t)
                    if t >= 0x7f80_0000 { bad = 1; scale = .nan } else if amax >= 1e-30 {
                        key = row.map { q8($0, 127 / amax) }
                        scale = amax / 127
                    }
                    sum = key.reduce(0) { $0 + Int32(Int8(bitPattern: $1)) }
                }
                #expect(load(corrAt + 4 * j, Int32.self) == 128 * sum, "n \(n) d \(d) \(String(describing: poison)): key \(j)")
                #expect(load(ksAt + 4 * j, Float.self).bitPattern == scale.bitPattern, "key \(j) scale")
                for c in 0..<d { #expect(packed[((c / 4) * ldk + j) * 4 + c % 4] == key[c], "key \(j) value \(c)") }
            }
            let vm = means(d)
            for c in 0..<d {
                let column = (0..<n).map { x[$0 * stride + d + c] - vm[c] }
                let t = top(column), amax = Float(bitPattern: t), nonfinite = t >= 0x7f80_0000
                let inv: Float = nonfinite || amax < 1e-30 ? 0 : 127 / amax
                let vs: Float = nonfinite ? .nan : (amax < 1e-30 ? 0 : amax / 127)
                #expect(load(vsAt + 4 * c, Float.self).bitPattern == vs.bitPattern, "value scale \(c)")
                #expect(load(vmAt + 4 * c, Float.self).bitPattern == vm[c].bitPattern, "value mean \(c)")
                for j in 0..<ldk {
                    let expected: UInt8 = j < n ? q8(column[j], inv) : 0
                    #expect(packed[vAt + ((j / 4) * d + c) * 4 + j % 4] == expected, "value \(c) of key \(j)")
                }
            }
            #expect(load(badAt, Int32.self) == bad)
        }
    }

    /// Where int8 attention does not apply, the result is bf16's, bit for bit: a causal mask, a
    /// head size that is not a multiple of 4 or above 512, a segment beyond 65,536 keys, a scale
    /// that is not positive and finite.
    @Test func otherwiseBf16() throws {
        for (heads, d, t, s, mask, scale) in [(2, 16, 30, 30, AttentionMask.causal(offset: 0), Float?.none), (2, 6, 30, 30, .none, nil),
                                              (1, 516, 9, 9, .none, nil), (1, 4, 2, Attention.int8Keys + 1, .none, nil),
                                              (2, 16, 30, 30, .none, -0.25), (2, 16, 30, 30, .none, .infinity)] {
            let q = try Self.tensor(rows: t, width: heads * d, seed: 10, scale: 1)
            let k = try Self.tensor(rows: s, width: heads * d, seed: 11, scale: 1)
            let v = try Self.tensor(rows: s, width: heads * d, seed: 12, scale: 1)
            let int8 = try Self.run(q, k, v, heads: heads, kvHeads: heads, d: d, mask: mask, scale: scale)
            let bf16 = try Self.run(q, k, v, heads: heads, kvHeads: heads, d: d, mask: mask, precision: .bf16, scale: scale)
            #expect(int8.values.map(\.bitPattern) == bf16.values.map(\.bitPattern), "d \(d), \(t)×\(s), \(mask), scale \(String(describing: scale))")
        }
        // Just at the limit, int8's own result (not bf16's).
        let s = Attention.int8Keys
        let q = try Self.tensor(rows: 2, width: 4, seed: 13, scale: 1)
        let k = try Self.tensor(rows: s, width: 4, seed: 14, scale: 1), v = try Self.tensor(rows: s, width: 4, seed: 15, scale: 1)
        let int8 = try Self.run(q, k, v, heads: 1, kvHeads: 1, d: 4, mask: .none)
        let bf16 = try Self.run(q, k, v, heads: 1, kvHeads: 1, d: 4, mask: .none, precision: .bf16)
        #expect(int8.values.map(\.bitPattern) != bf16.values.map(\.bitPattern))
        #expect(relativeError(int8.values, bf16.values) < 0.05)
    }

    /// An output buffer given to attention (the towers and the decoder reuse one per pass) gets
    /// the same bits as a fresh result on every path, is what comes back, and must be the
    /// output's size.
    @Test func intoAGivenBuffer() throws {
        let best = rq_set_cpu_level(-1)
        rq_set_cpu_level(best)
        defer { rq_set_cpu_level(-1) }
        let heads = 2, d = 16, t = 40
        let qkv = try Self.tensor(rows: t, width: 3 * heads * d, seed: 21, scale: 1)
        let q = try Self.tensor(rows: t, width: heads * d, seed: 22, scale: 1)
        let k = try Self.tensor(rows: t, width: d, seed: 23, scale: 1), v = try Self.tensor(rows: t, width: d, seed: 24, scale: 1)
        for precision in [AttentionPrecision.f32, .bf16, .int8] {
            for mask in [AttentionMask.blockDiagonal([0, 17, 40]), .causal(offset: 0), .none] {
                let buffer = try Tensor(shape: [t, heads * d], values: [Float](repeating: .nan, count: t * heads * d))
                let fresh = try Attention.forward(qkv: qkv, heads: heads, headDim: d, mask: mask, precision: precision)
                let given = try Attention.forward(qkv: qkv, heads: heads, headDim: d, mask: mask, precision: precision, into: buffer)
                #expect(given.storage === buffer.storage)
                #expect(buffer.values.map(\.bitPattern) == fresh.values.map(\.bitPattern), "\(precision), \(mask)")

                let gqaBuffer = try Tensor(shape: [t, heads * d], values: [Float](repeating: .nan, count: t * heads * d))
                let gqaFresh = try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: 1, headDim: d, mask: mask, precision: precision)
                _ = try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: 1, headDim: d, mask: mask, precision: precision,
                                          into: gqaBuffer)
                #expect(gqaBuffer.values.map(\.bitPattern) == gqaFresh.values.map(\.bitPattern), "GQA, \(precision), \(mask)")
            }
        }
        let short = try Tensor(uninitialized: [t - 1, heads * d])
        #expect(throws: TensorError.self) {
            try Attention.forward(qkv: qkv, heads: heads, headDim: d, mask: .none, precision: .int8, into: short)
        }
    }
}
