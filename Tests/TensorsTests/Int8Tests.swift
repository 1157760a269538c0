import CKernels
import Foundation
import Testing
@testable import Tensors

/// int8 weights (`Linear.quantize`) × activations quantized per row.
@Suite struct Int8Tests {
    /// The scheme, written out independently of the kernels: symmetric int8 per row (scale
    /// max|v| / 127, nearest with ties to even), activations offset by 128, exact integer sums,
    /// y = (Σ x_u8 · w − 128 · Σ w) · (scale_x · scale_w).
    static func quantized(_ v: ArraySlice<Float>) -> (q: [Int32], scale: Float) {
        let amax = v.map(abs).max() ?? 0
        guard amax >= 1e-30 else { return (Array(repeating: 0, count: v.count), 0) }
        let inv = 127 / amax
        return (v.map { Int32(min(127, max(-127, ($0 * inv).rounded(.toNearestOrEven)))) }, amax / 127)
    }

    static func expected(x: [Float], w: [Float], m: Int, k: Int, n: Int) -> [Float] {
        let ws = (0..<n).map { quantized(w[($0 * k)..<(($0 + 1) * k)]) }
        var y = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            let (xq, xs) = quantized(x[(i * k)..<((i + 1) * k)])
            for j in 0..<n {
                var acc: Int32 = 0, sum: Int32 = 0
                for t in 0..<k { acc += (xq[t] + 128) * ws[j].q[t]; sum += ws[j].q[t] }
                y[i * n + j] = Float(acc - 128 * sum) * (xs * ws[j].scale)
            }
        }
        return y
    }

    static let shapes = LinearTests.shapes

    /// Every path gives the scheme's value exactly: the VNNI kernels (few rows), oneDNN's s32 GEMM
    /// (many rows), its packed weights, and the portable code; and it stays within int8's error of
    /// PyTorch's f32 product (the same fixtures as the f32 test).
    @Test(arguments: shapes)
    func exactOnEveryPath(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 7)
        let values = Reference.pattern(n * k, seed: 8, scale: 0.25)
        let w = try Linear.quantize(Reference.bf16Weight("w", values, shape: [n, k]))
        #expect(w.dtype == .i8)
        // The weights as the model sees them: bf16 values, quantized.
        let wValues = Convert.bf16(values).map { Float(bitPattern: UInt32($0) << 16) }
        let expected = Self.expected(x: x.values, w: wValues, m: m, k: k, n: n)
        let y = try Linear.forward(x, w)
        #expect(y.values == expected, "\(m)×\(k)×\(n)")
        let packed = try Linear.pack(w, rows: m)
        #expect(try Linear.forward(x, packed).values == expected, "packed")
        let rowwise = try Tensor(zeros: [m, n])
        try Linear.forward(x, w, into: rowwise, rows: m, rowwise: true)
        #expect(rowwise.values == expected, "rowwise")
        rq_set_cpu_level(0)
        defer { rq_set_cpu_level(-1) }
        let portable = try Tensor(zeros: [m, n])
        try Linear.forward(x, w, into: portable, rows: m, rowwise: true)
        #expect(portable.values == expected, "portable")
        // The bias (fused into the GEMM's epilogue) adds to the rounded product, as y += b does:
        // the portable epilogue (many rows: oneDNN's sums, this epilogue), then the dispatched one.
        let bias = try Reference.tensor([n], seed: 9, scale: 0.1)
        let plusBias = expected.enumerated().map { $0.element + bias.values[$0.offset % n] }
        #expect(try Linear.forward(x, w, bias: bias).values == plusBias, "portable bias")
        rq_set_cpu_level(-1)
        let withBias = try Linear.forward(x, w, bias: bias)
        #expect(withBias.values == plusBias, "bias")
        #expect(try Linear.forward(x, packed, bias: bias).values == plusBias, "bias, packed")
        try Linear.forward(x, w, bias: bias, into: rowwise, rows: m, rowwise: true)
        #expect(rowwise.values == plusBias, "bias, rowwise")
        let f32 = try Reference.values("linear_f32_\(m)x\(k)x\(n)")
        #expect(relativeError(withBias.values, f32) < 0.02, "\(relativeError(withBias.values, f32)) vs f32")
    }

    /// Every batch the GEMV kernels block differently (1: four weight rows a block; more: two rows ×
    /// up to four vectors a pass, a partial pass last) gives the scheme's value, on odd row counts
    /// (a last single row whatever the thread split) and rows off the 64-byte grid.
    @Test(arguments: [(70, 1000), (9, 64), (131, 130), (64, 131)])
    func everyBatchIsExact(k: Int, n: Int) throws {
        let w = try Linear.quantize(Reference.f32Weight("w", Reference.pattern(n * k, seed: 14, scale: 0.3), shape: [n, k]))
        for m in 1...17 {
            let x = try Reference.tensor([m, k], seed: 15 + m, scale: 1.5)
            let expected = Self.expected(x: x.values, w: Reference.pattern(n * k, seed: 14, scale: 0.3), m: m, k: k, n: n)
            let y = try Tensor(zeros: [m, n])
            try Linear.forward(x, w, into: y, rows: m, rowwise: true)
            #expect(y.values == expected, "batch \(m), \(n)×\(k)")
            // Each kernel at every row count, whichever `forward` picks.
            for kernel in [Linear.Int8Kernel.gemv] + (Linear.hasInt8GEMM ? [.gemm] : []) {
                let z = try Tensor(zeros: [m, n])
                try Linear.forwardInt8(x, w, into: z, rows: m, kernel: kernel)
                #expect(z.values == expected, "batch \(m), \(n)×\(k), \(kernel)")
            }
        }
    }

    /// oneDNN's int8 products are found where they are exact; `forward` takes the GEMV kernels
    /// for one row and for up to 12 rows that fit in 24 KiB together, oneDNN beyond (where it
    /// has exact int8 products), `rowwise` or not; a request
    /// for oneDNN's product where it has none is an error, not a wrong result.
    @Test func kernelByRowsAndColumns() throws {
        // The probe (255 × 127 over 64 columns, which a saturating kernel gets wrong) finds
        // oneDNN's exact products wherever the CPU has VNNI and nothing caps oneDNN.
        let environment = ProcessInfo.processInfo.environment
        if rq_has_vnni() != 0 && environment["ONEDNN_MAX_CPU_ISA"] == nil && environment["DNNL_MAX_CPU_ISA"] == nil
            && environment["REELQL_NO_ONEDNN_INT8"] == nil {
            #expect(Linear.hasInt8GEMM)
        }
        let gemm: Linear.Int8Kernel = Linear.hasInt8GEMM ? .gemm : .gemv
        #expect(Linear.int8Kernel(rows: 1, columns: 65_536) == .gemv)
        #expect(Linear.int8Kernel(rows: 12, columns: 1536) == .gemv)
        #expect(Linear.int8Kernel(rows: 13, columns: 1536) == gemm)
        #expect(Linear.int8Kernel(rows: 2, columns: 8960) == .gemv)
        #expect(Linear.int8Kernel(rows: 3, columns: 8960) == gemm)
        #expect(Linear.int8Kernel(rows: 6, columns: 4096) == .gemv)
        #expect(Linear.int8Kernel(rows: 8, columns: 4096) == gemm)
        // A weight packed for reelql's GEMM: one row too; other row counts as unpacked.
        #expect(Linear.int8Kernel(rows: 1, columns: 8960, packed: true) == gemm)
        #expect(Linear.int8Kernel(rows: 2, columns: 8960, packed: true) == .gemv)
        #expect(Linear.int8Kernel(rows: 13, columns: 1536, packed: true) == gemm)
        if !Linear.hasInt8GEMM {
            let w = try Linear.quantize(Reference.f32Weight("w", Reference.pattern(4 * 8, seed: 1), shape: [4, 8]))
            #expect(throws: TensorError.self) {
                try Linear.forwardInt8(try Tensor(zeros: [2, 8]), w, into: try Tensor(zeros: [2, 4]), rows: 2, kernel: .gemm)
            }
        }
    }

    /// The fused int8 MLP (`Linear.int8MLP`: the first product's epilogue, the activation and the
    /// second's quantization in one pass per row) gives what the three separate steps give, bit
    /// for bit, for every activation, with and without biases; it declines rows the GEMV kernels
    /// take and weights that are not int8.
    @Test(arguments: [Ops.Activation.silu, .gelu, .geluTanh, .quickGelu])
    func fusedMLPIsTheThreeSteps(activation: Ops.Activation) throws {
        // Columns of 70 and 131 (oneDNN's products), and of 72 and 132 (the VNNI GEMM's, packed:
        // 37 rows split by columns, 401 by jobs of 48 rows, on a pool of two threads).
        for (m, k, n1) in [(37, 70, 131), (37, 72, 132), (401, 72, 132)] {
            try fusedMLP(activation, m: m, k: k, n1: n1, n2: 45, pool: ThreadPool(threads: 2))
        }
    }

    func fusedMLP(_ activation: Ops.Activation, m: Int, k: Int, n1: Int, n2: Int, pool: ThreadPool) throws {
        let x = try Reference.tensor([m, k], seed: 31, scale: 2)
        let fc1 = try Linear.quantize(Reference.f32Weight("fc1", Reference.pattern(n1 * k, seed: 32, scale: 0.3), shape: [n1, k]))
        let fc2 = try Linear.quantize(Reference.f32Weight("fc2", Reference.pattern(n2 * n1, seed: 33, scale: 0.2), shape: [n2, n1]))
        for packed in [false, true] {
            let (w1, w2) = packed ? (try Linear.pack(fc1, rows: m), try Linear.pack(fc2, rows: m)) : (fc1, fc2)
            for biases in [false, true] {
                let b1 = biases ? try Reference.tensor([n1], seed: 34, scale: 0.5) : nil
                let b2 = biases ? try Reference.tensor([n2], seed: 35, scale: 0.5) : nil
                let hidden = try Tensor(zeros: [m, n1])
                try Linear.forward(x, w1, bias: b1, into: hidden, rows: m)
                Ops.activate(hidden, activation)
                let expected = try Linear.forward(hidden, w2, bias: b2)
                let fusedHidden = try Tensor(zeros: [m, n1]), y = try Tensor(zeros: [m, n2])
                let fused = try Linear.int8MLP(x, rows: m, fc1: w1, bias1: b1, activation: activation, fc2: w2, bias2: b2,
                                               hidden: fusedHidden, into: y, pool: pool)
                #expect(fused == OneDNN.shared.int8Products)
                if fused {
                    #expect(y.values.map(\.bitPattern) == expected.values.map(\.bitPattern), "\(activation), packed \(packed), biases \(biases)")
                    #expect(fusedHidden.values.map(\.bitPattern) == hidden.values.map(\.bitPattern), "activations")
                }
            }
        }
        // Rows the GEMV kernels take, and bf16 weights: the caller's three steps.
        let few = try Reference.tensor([8, k], seed: 36)
        #expect(try !Linear.int8MLP(few, rows: 8, fc1: fc1, bias1: nil, activation: activation, fc2: fc2, bias2: nil,
                                     hidden: try Tensor(zeros: [8, n1]), into: try Tensor(zeros: [8, n2])))
        let plain = Reference.bf16Weight("fc1", Reference.pattern(n1 * k, seed: 32, scale: 0.3), shape: [n1, k])
        #expect(try !Linear.int8MLP(x, rows: m, fc1: plain, bias1: nil, activation: activation, fc2: fc2, bias2: nil,
                                     hidden: try Tensor(zeros: [m, n1]), into: try Tensor(zeros: [m, n2])))
    }

    /// A product's row epilogue (`then`: a tower's rotary embedding of q and k, applied block by
    /// block right after the int8 GEMM's epilogue) gives every row the values of the product
    /// followed by the separate rotary passes, bit for bit: int8 through reelql's GEMM (packed:
    /// 700 rows in jobs of 48 rows, 37 in jobs of rows × columns) and oneDNN (not packed), the
    /// GEMV kernels (5 rows), bf16 and f32; rows not a multiple of the block size.
    @Test func rowEpilogueEqualsTheSeparatePass() throws {
        let heads = 3, d = 8, e = heads * d, k = 40
        for m in [37, 700, 5] {
            let x = try Reference.tensor([m, k], seed: 41, scale: 2)
            let values = Reference.pattern(3 * e * k, seed: 42, scale: 0.3)
            let bias = try Reference.tensor([3 * e], seed: 43, scale: 0.5)
            let cos = try Reference.tensor([m, d], seed: 44), sin = try Reference.tensor([m, d], seed: 45)
            let int8 = try Linear.quantize(Reference.f32Weight("qkv", values, shape: [3 * e, k]))
            for (name, w) in [("int8", int8), ("int8 packed", try Linear.pack(int8, rows: m)),
                              ("bf16", Reference.bf16Weight("qkv", values, shape: [3 * e, k])),
                              ("f32", Reference.f32Weight("qkv", values, shape: [3 * e, k]))] {
                let separate = try Tensor(zeros: [m, 3 * e]), fused = try Tensor(zeros: [m, 3 * e])
                try Linear.forward(x, w, bias: bias, into: separate, rows: m)
                Ops.rotaryRotateHalf(separate.pointer, cos: cos, sin: sin, rows: m, heads: heads, headDim: d, rowStride: 3 * e)
                Ops.rotaryRotateHalf(separate.pointer + e, cos: cos, sin: sin, rows: m, heads: heads, headDim: d, rowStride: 3 * e)
                try Linear.forward(x, w, bias: bias, into: fused, rows: m, then: { r in
                    Ops.rotaryQK(fused, cos: cos, sin: sin, heads: heads, headDim: d, rows: r)
                }, pool: ThreadPool(threads: 2))
                #expect(fused.values.map(\.bitPattern) == separate.values.map(\.bitPattern), "\(name), \(m) rows")
            }
        }
    }

    /// reelql's VNNI GEMM (`rq_gemm_s8`, on weights `Linear.pack` packed for it) gives the
    /// scheme's value bit for bit, with and without a bias: every row tail of its 6-row tiles, row
    /// counts split by 48-row jobs and by column groups, columns off its 16- and 64-column grid,
    /// short and long rows, a NaN activation row (NaN in its own row only).
    @Test(arguments: [(4, 1), (8, 17), (64, 64), (132, 130), (300, 47), (1028, 16)])
    func vnniGEMMIsTheScheme(k: Int, n: Int) throws {
        let values = Reference.pattern(n * k, seed: 51, scale: 0.3)
        let w = try Linear.pack(try Linear.quantize(Reference.f32Weight("w", values, shape: [n, k])), rows: 64)
        #expect((w.vnni != nil) == (Linear.hasInt8GEMM && rq_has_vnni() != 0), "packed for the VNNI GEMM where it runs")
        guard w.vnni != nil else { return }
        // Jobs of 48 rows need two per thread: a pool of two threads splits 200 and 401 rows by
        // rows, up to 97 by column shares; one of seven threads, all of them by column shares, and
        // by rows too where the weight has fewer than 14 groups of 64 rows (all of these).
        // Whatever this machine's core count.
        let bias = try Reference.tensor([n], seed: 52, scale: 0.5)
        for pool in [ThreadPool(threads: 2), ThreadPool(threads: 7)] {
            for m in Array(1...13) + [47, 48, 49, 97, 200, 401] {
                var xv = try Reference.tensor([m, k], seed: 53 + m, scale: 2).values
                if m == 49 || m == 401 { xv[20 * k + 3] = .nan }
                let x = try Tensor(shape: [m, k], values: xv)
                // (The scheme's NaN row is all NaN; any NaN's bits.)
                let bits = { (v: [Float]) in v.enumerated().map { (m == 49 || m == 401) && $0.offset / n == 20 ? ($0.element.isNaN ? 1 : 0) : $0.element.bitPattern } }
                let expected = Self.expected(x: xv, w: values, m: m, k: k, n: n).enumerated().map { (m == 49 || m == 401) && $0.offset / n == 20 ? .nan : $0.element }
                let y = try Tensor(zeros: [m, n])
                try Linear.forwardInt8(x, w, into: y, rows: m, kernel: .gemm, pool: pool)
                #expect(bits(y.values) == bits(expected), "\(m)×\(k)×\(n), \(pool.threads) threads")
                try Linear.forwardInt8(x, w, bias: bias, into: y, rows: m, kernel: .gemm, pool: pool)
                let plusBias = expected.enumerated().map { $0.element + bias.values[$0.offset % n] }
                #expect(bits(y.values) == bits(plusBias), "\(m)×\(k)×\(n), bias, \(pool.threads) threads")
                // Whichever kernel `forward` picks (one row on a packed weight: this GEMM).
                try Linear.forward(x, w, bias: bias, into: y, rows: m, pool: pool)
                #expect(bits(y.values) == bits(plusBias), "\(m)×\(k)×\(n), forward, \(pool.threads) threads")
            }
        }
    }

    /// Rows through oneDNN (where it has exact int8 products) and one at a time agree bit for bit
    /// (the batch a row decodes in never changes it).
    @Test(arguments: [(37, 300, 70), (12, 128, 9), (9, 4000, 20)])
    func gemmRowsEqualSingleRows(m: Int, k: Int, n: Int) throws {
        let x = try Reference.tensor([m, k], seed: 3, scale: 2)
        let w = try Linear.quantize(Reference.f32Weight("w", Reference.pattern(n * k, seed: 4, scale: 0.1), shape: [n, k]))
        let all = try Tensor(zeros: [m, n])
        try Linear.forwardInt8(x, w, into: all, rows: m, kernel: Linear.hasInt8GEMM ? .gemm : .gemv)
        #expect(all.values == Self.expected(x: x.values, w: Reference.pattern(n * k, seed: 4, scale: 0.1), m: m, k: k, n: n))
        for r in 0..<m {
            let one = try Linear.forward(x.rows(r..<(r + 1)), w)
            #expect(Array(all.values[(r * n)..<((r + 1) * n)]) == one.values, "row \(r)")
        }
    }

    /// Scales and sums as the scheme defines them; a zero row stays zero; a weight with inf or NaN
    /// is refused by name; an activation row with inf or NaN gives NaN in its own row only.
    @Test func scalesZerosAndNonFinite() throws {
        var values = Reference.pattern(4 * 10, seed: 5)
        for i in 10..<20 { values[i] = 0 }
        let w = try Linear.quantize(Reference.f32Weight("blocks.0.fc1.weight", values, shape: [4, 10]))
        let rows = try #require(w.quantization)
        for r in 0..<4 {
            let (q, scale) = Self.quantized(values[(r * 10)..<((r + 1) * 10)])
            #expect(rows.scales[r] == scale)
            #expect(rows.sums[r] == q.reduce(0, +))
            let stored = (0..<10).map { Int32(w.pointer.load(fromByteOffset: r * 10 + $0, as: Int8.self)) }
            #expect(stored == q)
        }
        let x = try Tensor(shape: [3, 10], values: (0..<30).map { $0 == 14 ? .infinity : Float($0 % 7) - 3 })
        let y = try Linear.forward(x, w)
        // Subnormal activations (127 / max would overflow) give zeros, not undefined conversions.
        let tiny = try Linear.forward(try Tensor(shape: [1, 10], values: (0..<10).map { Float($0) * Float.leastNormalMagnitude / 1000 }), w)
        #expect(tiny.values == [0, 0, 0, 0])
        let finite = y.values[0..<4].allSatisfy { $0.isFinite } && y.values[8..<12].allSatisfy { $0.isFinite }
        let nan = y.values[4..<8].allSatisfy { $0.isNaN }
        #expect(finite)
        #expect(nan)
        #expect(y.values[1] == 0 && y.values[9] == 0, "the zero weight row")

        values[17] = .nan
        do {
            _ = try Linear.quantize(Reference.f32Weight("blocks.0.fc1.weight", values, shape: [4, 10]))
            Issue.record("a NaN weight was quantized")
        } catch {
            #expect("\(error)".contains("blocks.0.fc1.weight") && "\(error)".contains("NaN"), "\(error)")
        }
        #expect(throws: TensorError.self) { _ = try Linear.quantize(Reference.f32Weight("v", [1, 2, 3], shape: [3])) }
    }
}
