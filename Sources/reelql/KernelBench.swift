import ArgumentParser
import COpenBLAS
import CKernels
import Foundation
import Tensors

/// `reelql bench kernels`: GEMM, GEMV and attention throughput, each against a baseline measured
/// in the same run.
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GEMM (f32 wrapper vs cblas_sgemm, bf16 vs f32), bf16 GEMV bandwidth vs a memory-read probe, attention.",
        discussion: "Shapes are M×K×N: x [M, K] · Wᵀ with W [N, K]. Run a release build.")

    @Option(parsing: .unconditional, help: "Timed repetitions per measurement (the median is reported).")
    var runs: Int = 3
    @Option(parsing: .unconditional, help: "Rows of the language model's prefill GEMMs.")
    var prefill: Int = 1024
    @Flag(help: "Skip the largest shapes (quick check).")
    var quick = false

    func validate() throws {
        try requireOption("--runs", runs, (1...maxBenchRuns).contains(runs), "between 1 and \(maxBenchRuns)")
        try requireOption("--prefill", prefill, (1...16384).contains(prefill), "between 1 and 16384")
    }

    func run() throws {
        let pool = ThreadPool.shared
        print("threads: \(pool.threads) (physical cores), kernel level \(rq_cpu_level()) (3 = AVX-512 BF16)")
        try gemm()
        try gemv()
        try int8Rows()
        try attention()
    }

    func median(_ body: () throws -> Void) rethrows -> Double {
        try body() // warm-up: primitive creation, page faults
        return try medianTime(runs: runs, body)
    }

    func randomWeight(_ name: String, _ dtype: DType, rows: Int, cols: Int, seed: UInt64 = 1) -> WeightTensor {
        var state = seed &* 0x9E3779B97F4A7C15
        var floats = [Float](repeating: 0, count: rows * cols)
        for i in floats.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            floats[i] = Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 40_000
        }
        let data: Data = dtype == .bf16 ? Convert.bf16(floats).withUnsafeBytes { Data($0) } : floats.withUnsafeBytes { Data($0) }
        return WeightTensor(name: name, dtype: dtype, shape: [rows, cols], data: data)
    }

    func gemm() throws {
        print("\nGEMM (GFLOP/s)                 cblas_sgemm   f32 wrapper  ratio   bf16 (oneDNN)  bf16/f32   bf16 packed  packed/f32")
        var shapes = [(4096, 1280, 3840), (4096, 1280, 5120), (4096, 5120, 1280)]
        shapes += [(prefill, 1536, 1536), (prefill, 1536, 8960), (prefill, 8960, 1536)]
        if quick { shapes = [(1024, 1280, 1280)] }
        for (m, k, n) in shapes {
            let flop = 2.0 * Double(m * k * n)
            let x = try Tensor(zeros: [m, k])
            for i in 0..<x.count { x.pointer[i] = Float(i % 97) / 97 - 0.5 }
            let wf = randomWeight("w", .f32, rows: n, cols: k)
            let wb = randomWeight("w", .bf16, rows: n, cols: k)
            let y = try Tensor(zeros: [m, n])
            let direct = median {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, x.pointer, Int32(k),
                            wf.pointer.assumingMemoryBound(to: Float.self), Int32(k), 0, y.pointer, Int32(n))
            }
            let wrapped = try median { try Linear.forward(x, wf, into: y, rows: m) }
            let bf16 = try median { try Linear.forward(x, wb, into: y, rows: m) }
            let wp = try Linear.pack(wb, rows: m)
            let packed = try median { try Linear.forward(x, wp, into: y, rows: m) }
            let g = { (t: Double) in flop / t / 1e9 }
            print(String(format: "  %5d×%5d×%-6d           %8.1f      %8.1f    %5.2f   %8.1f       %5.2f      %8.1f     %5.2f",
                         m, k, n, g(direct), g(wrapped), direct / wrapped, g(bf16), wrapped / bf16, g(packed), wrapped / packed))
        }
    }

    func gemv() throws {
        print("\nbf16 GEMV (GB/s of weights)  K×N            GEMV   probe (one pass) ratio   probe (per matrix) ratio")
        // Enough distinct copies of each matrix that they do not fit in the caches (≥ 512 MB),
        // as when decoding walks through every layer's weights.
        let probeBuffer = try Tensor(zeros: [128 << 20]) // 512 MB
        for i in stride(from: 0, to: probeBuffer.count, by: 1024) { probeBuffer.pointer[i] = 1 }
        let pool = ThreadPool.shared
        let probeBytes = Double(probeBuffer.count * 4)
        var shapes = [(1536, 1536), (1536, 8960), (8960, 1536), (1536, 151936)]
        if quick { shapes = [(1536, 1536)] }
        for (k, n) in shapes {
            let bytes = n * k * 2
            let copies = max(1, (512 << 20) / bytes)
            let weights = (0..<copies).map { randomWeight("w\($0)", .bf16, rows: n, cols: k, seed: UInt64($0 + 1)) }
            let x = try Tensor(zeros: [1, k])
            for i in 0..<k { x.pointer[i] = Float(i % 13) / 13 }
            let y = try Tensor(zeros: [1, n])
            var gemvTimes: [Double] = [], probeTimes: [Double] = [], chunkTimes: [Double] = []
            try Linear.forward(x, weights[0], into: y, rows: 1)
            for _ in 0..<max(3, runs) {
                // Interleaved: the machine's bandwidth swings from moment to moment.
                probeTimes.append(medianTime(runs: 1) {
                    pool.parallelRanges(probeBuffer.count, grain: 1 << 20) { r in
                        _ = rq_sum_f32(probeBuffer.pointer + r.lowerBound, r.count)
                    }
                })
                gemvTimes.append(try medianTime(runs: 1) {
                    for w in weights { try Linear.forward(x, w, into: y, rows: 1) }
                })
                // The same bytes read in the same number of calls: what streaming alone achieves
                // at this granularity (thread hand-off and ramp-up included).
                chunkTimes.append(medianTime(runs: 1) {
                    for w in weights {
                        let p = UnsafeRawPointer(w.pointer).assumingMemoryBound(to: Float.self)
                        pool.parallelRanges(bytes / 4, grain: 1 << 14) { r in _ = rq_sum_f32(p + r.lowerBound, r.count) }
                    }
                })
            }
            gemvTimes.sort(); probeTimes.sort(); chunkTimes.sort()
            let gemvBW = Double(bytes * copies) / gemvTimes[gemvTimes.count / 2] / 1e9
            let probeBW = probeBytes / probeTimes[probeTimes.count / 2] / 1e9
            let chunkBW = Double(bytes * copies) / chunkTimes[chunkTimes.count / 2] / 1e9
            print(String(format: "  %6d×%-7d (%3d copies) %7.1f   %7.1f       %5.2f   %7.1f        %5.2f",
                         k, n, copies, gemvBW, probeBW, gemvBW / probeBW, chunkBW, gemvBW / chunkBW))
        }
    }

    /// int8 products of a few to a few dozen rows (batched decoding, prompt continuations): the
    /// GEMV kernels against the GEMM (reelql's, on weights packed for it; oneDNN's where a row is
    /// not a multiple of 4 bytes), weights from memory. Both give every row the same bits, so
    /// `Linear` takes whichever is faster for the row count.
    func int8Rows() throws {
        guard Linear.hasInt8GEMM else { print("\n(no int8 GEMM here: int8 rows skipped)"); return }
        print("\nint8 products by rows (ms per matrix, weights from memory)  K×N     rows:" +
              Self.int8RowCounts.map { String(format: "%7d", $0) }.joined())
        var shapes = [(1536, 1536), (1536, 8960), (8960, 1536), (4096, 4096)]
        if quick { shapes = [(1536, 8960)] }
        for (k, n) in shapes {
            let copies = max(1, (256 << 20) / (n * k))
            let weights = try (0..<copies).map { try Linear.pack(Linear.quantize(randomWeight("w\($0)", .bf16, rows: n, cols: k, seed: UInt64($0 + 1)))) }
            var lines = (gemv: [String](), gemm: [String]())
            for m in Self.int8RowCounts {
                let x = try Tensor(zeros: [m, k])
                for i in 0..<x.count { x.pointer[i] = Float(i % 89) / 89 - 0.5 }
                let y = try Tensor(zeros: [m, n])
                var a: [Double] = [], b: [Double] = []
                for _ in 0..<max(3, runs) { // interleaved: the bandwidth swings from moment to moment
                    a.append(try medianTime(runs: 1) { for w in weights { try Linear.forwardInt8(x, w, into: y, rows: m, kernel: .gemv) } })
                    b.append(try medianTime(runs: 1) { for w in weights { try Linear.forwardInt8(x, w, into: y, rows: m, kernel: .gemm) } })
                }
                a.sort(); b.sort()
                lines.gemv.append(String(format: "%7.2f", a[a.count / 2] * 1e3 / Double(copies)))
                lines.gemm.append(String(format: "%7.2f", b[b.count / 2] * 1e3 / Double(copies)))
            }
            print(String(format: "  GEMV kernels                                   %5d×%-6d      ", k, n) + lines.gemv.joined())
            print(String(format: "  GEMM                                           %5d×%-6d      ", k, n) + lines.gemm.joined())
        }
    }
    static let int8RowCounts = [1, 2, 3, 4, 6, 8, 9, 12, 16, 24, 32, 64]

    func attention() throws {
        if rq_cpu_level() < 3 { print("\n(no AVX-512 BF16 here: \"bf16 tiles\" runs oneDNN's products too)") }
        print("\nattention (GFLOP/s)           tokens  heads×dim  kv heads  mask    precision   time      GFLOP/s")
        let configs: [(Int, Int, Int, Int, String)] = quick ? [(1024, 16, 80, 16, "full")]
            : [(1024, 16, 80, 16, "full"), (4096, 16, 80, 16, "full"), (1024, 12, 128, 2, "causal"), (4096, 12, 128, 2, "causal")]
        for (t, h, d, kv, mask) in configs {
            let q = try Tensor(zeros: [t, h * d]), k = try Tensor(zeros: [t, kv * d]), v = try Tensor(zeros: [t, kv * d])
            for tensor in [q, k, v] { for i in 0..<tensor.count { tensor.pointer[i] = Float((i * 7919) % 1000) / 1000 - 0.5 } }
            let m: AttentionMask = mask == "causal" ? .causal(offset: 0) : .blockDiagonal([0, t])
            // bf16 by the tile kernel (AVX-512 BF16) and by oneDNN's two products, in the same run.
            var times: [String: Double] = [:]
            for (name, precision, tiles) in [("f32", AttentionPrecision.f32, false), ("bf16 oneDNN", .bf16, false), ("bf16 tiles", .bf16, true)] {
                let time = try median {
                    _ = try Attention.forward(q: q, k: k, v: v, heads: h, kvHeads: kv, headDim: d, mask: m, precision: precision, tiles: tiles)
                }
                times[name] = time
                let flop = 4.0 * Double(t * t * d * h) * (mask == "causal" ? 0.5 : 1)
                let versus = name == "bf16 tiles" ? String(format: "  %.2f× oneDNN", (times["bf16 oneDNN"] ?? time) / time) : ""
                let labels = mask.padding(toLength: 8, withPad: " ", startingAt: 0) + name.padding(toLength: 12, withPad: " ", startingAt: 0)
                print(String(format: "                               %6d  %3d×%-4d   %3d      ", t, h, d, kv) + labels
                      + String(format: "%7.3f s   %7.1f", time, flop / time / 1e9) + versus)
            }
        }
    }
}
