import CKernels
import Foundation
import Testing
@testable import Tensors

/// Row and element kernels against PyTorch, on every instruction-set path this CPU has.
@Suite(.serialized) struct KernelTests {
    /// Runs `body` once per available kernel level (portable, AVX2, AVX-512).
    func onEveryPath(_ body: (Int32) throws -> Void) rethrows {
        let best = rq_set_cpu_level(-1)
        defer { rq_set_cpu_level(-1) }
        for level in 0...best {
            let actual = rq_set_cpu_level(level)
            try body(actual)
        }
    }

    static let sizes = [1, 7, 65, 1000, 1537]

    /// Forcing a level is the calling thread's affair (tests run in parallel in one process) and
    /// holds on the pool's threads for work that thread starts.
    @Test func forcedLevelStaysOnItsThreadAndItsPoolWork() throws {
        let best = rq_set_cpu_level(-1)
        defer { rq_set_cpu_level(-1) }
        #expect(rq_set_cpu_level(0) == 0 && rq_cpu_level() == 0)
        final class Seen: @unchecked Sendable { var level: Int32 = -1 }
        let elsewhere = Seen()
        let other = Thread { elsewhere.level = rq_cpu_level() }
        other.start()
        while !other.isFinished { usleep(1_000) }
        #expect(elsewhere.level == best)
        let levels = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 64)
        defer { levels.deallocate() }
        levels.initialize(repeating: -1)
        ThreadPool(threads: 4).parallelFor(64) { levels[$0] = rq_cpu_level() }
        #expect(levels.allSatisfy { $0 == 0 })
        _ = rq_set_cpu_level(-1)
        #expect(rq_cpu_level() == best && rq_forced_cpu_level() == -1)
    }

    @Test(arguments: sizes)
    func rmsNorm(n: Int) throws {
        let x = try Reference.tensor([3, n], seed: 1, scale: 3), w = try Reference.tensor([n], seed: 2, scale: 1.5)
        let ref = try Reference.values("rmsnorm_\(n)")
        try onEveryPath { level in
            let y = try Ops.rmsNorm(x, weight: w, eps: 1e-6)
            #expect(elementError(y.values, ref, floor: 1e-3) < 2e-5, "level \(level)")
        }
    }

    @Test(arguments: sizes)
    func layerNorm(n: Int) throws {
        let x = try Reference.tensor([3, n], seed: 1, scale: 3)
        let w = try Reference.tensor([n], seed: 2, scale: 1.5), b = try Reference.tensor([n], seed: 3, scale: 0.5)
        let ref = try Reference.values("layernorm_\(n)")
        try onEveryPath { level in
            let y = try Ops.layerNorm(x, weight: w, bias: b, eps: 1e-6)
            #expect(relativeError(y.values, ref) < 2e-5, "level \(level)")
        }
    }

    @Test(arguments: [1, 7, 65, 1000, 4099])
    func softmax(n: Int) throws {
        var values = Reference.pattern(4 * n, seed: 4, scale: 80)
        for j in stride(from: 0, to: n, by: 3) { values[n + j] = -.infinity }
        for j in 0..<n { values[2 * n + j] = -.infinity }
        let ref = try Reference.values("softmax_\(n)")
        try onEveryPath { level in
            let x = try Tensor(shape: [4, n], values: values)
            Ops.softmax(x)
            #expect(relativeError(x.values, ref) < 1e-6, "level \(level)")
            #expect(x.values.allSatisfy { $0.isFinite && $0 >= 0 })
        }
    }

    @Test(arguments: [1, 7, 65, 1000, 4099])
    func activations(n: Int) throws {
        let input = Reference.pattern(n, seed: 5, scale: 20)
        let cases: [(Ops.Activation, String)] = [(.silu, "silu"), (.gelu, "gelu"), (.geluTanh, "gelu_tanh"), (.quickGelu, "quick_gelu")]
        try onEveryPath { level in
            for (f, name) in cases {
                let x = try Tensor(shape: [n], values: input)
                Ops.activate(x, f)
                let ref = try Reference.values("\(name)_\(n)")
                #expect(elementError(x.values, ref, floor: 1e-4) < 1e-5, "\(name) level \(level)")
            }
        }
    }

    @Test func siluMulIsSwiGLU() throws {
        let g = try Reference.tensor([1000], seed: 5, scale: 20), u = try Reference.tensor([1000], seed: 6)
        let silu = try Reference.values("silu_1000")
        let y = try Ops.siluMul(gate: g, up: u)
        #expect(elementError(y.values, zip(silu, u.values).map { $0 * $1 }, floor: 1e-4) < 1e-5)
    }

    @Test(arguments: [(7, 3, 64), (65, 2, 80), (1, 1, 128)])
    func rotaryRotateHalf(rows: Int, heads: Int, d: Int) throws {
        let tag = "\(rows)x\(heads)x\(d)"
        let cos = try Tensor(shape: [rows, d], values: try Reference.values("rope_cos_\(tag)"))
        let sin = try Tensor(shape: [rows, d], values: try Reference.values("rope_sin_\(tag)"))
        let ref = try Reference.values("rope_\(tag)")
        try onEveryPath { level in
            let x = try Reference.tensor([rows, heads * d], seed: 6, scale: 2)
            Ops.rotaryRotateHalf(x.pointer, cos: cos, sin: sin, rows: rows, heads: heads, headDim: d, rowStride: heads * d)
            #expect(relativeError(x.values, ref) < 1e-6, "level \(level)")
        }
    }

    @Test func residualAdd() throws {
        let y = try Reference.tensor([1001], seed: 1), x = try Reference.tensor([1001], seed: 2)
        let expected = zip(y.values, x.values).map { $0 + $1 }
        Ops.add(y, x)
        #expect(y.values == expected)
    }
}

@Suite struct ConversionTests {
    @Test func bf16RoundsAsTorch() throws {
        let input = try Data(contentsOf: Reference.root.appendingPathComponent("bf16_inputs.f32"))
            .withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let expected = try Data(contentsOf: Reference.root.appendingPathComponent("bf16_rounded.i16"))
            .withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(Convert.bf16(input) == expected)
        let nan = Convert.bf16([Float.nan])[0]
        #expect(Float(bitPattern: UInt32(nan) << 16).isNaN)
    }

    @Test func f16WidensEveryValue() {
        let all = (0...UInt16.max).map { $0 }
        var out = [Float](repeating: 0, count: all.count)
        rq_f16_to_f32(all, &out, all.count)
        for (bits, v) in zip(all, out) {
            let expected = Float(Float16(bitPattern: bits))
            #expect(expected.isNaN ? v.isNaN : v.bitPattern == expected.bitPattern, "f16 \(bits)")
        }
    }

    @Test func bf16WidensExactly() {
        let bits: [UInt16] = [0, 0x8000, 0x3f80, 0x7f80, 0xff80, 0x0001, 0x4049, 0xc02e]
        var out = [Float](repeating: 0, count: bits.count)
        rq_bf16_to_f32(bits, &out, bits.count)
        #expect(out.map(\.bitPattern) == bits.map { UInt32($0) << 16 })
    }
}

