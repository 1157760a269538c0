import ArgumentParser
import Foundation
import Tensors
import VLM

/// `reelql bench vision`: the Qwen2-VL-2B vision tower (random weights, built in memory) on
/// 8 frames at 448×448, against the bf16 GEMM peak measured in the same run.
struct VisionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vision",
        abstract: "Time the Qwen2-VL-2B vision tower (depth 32, width 1280, 16 heads) on 8 frames at 448×448.",
        discussion: "Weights are random and built in memory (nothing is read or written). Run a release build.")

    @Option(help: "Compute precision: bf16 (the checkpoint's) or f32.")
    var dtype: ComputeDType = .bf16
    @Option(help: "Frames (an even number) at --size × --size.")
    var frames: Int = 8
    @Option(help: "Frame side in pixels (a multiple of 28).")
    var size: Int = 448
    @Option(help: "Tower depth (32 for Qwen2-VL; fewer for a quick look).")
    var depth: Int = 32
    @Option(help: "Timed runs (the median is reported).")
    var runs: Int = 1

    func validate() throws {
        try requireOption("--frames", frames, (1...64).contains(frames), "between 1 and 64")
        try requireOption("--size", size, (28...2016).contains(size), "between 28 and 2016")
        try requireOption("--depth", depth, (1...32).contains(depth), "between 1 and 32")
        try requireOption("--runs", runs, (1...maxBenchRuns).contains(runs), "between 1 and \(maxBenchRuns)")
    }

    func run() throws {
        var config = Qwen2VLVisionConfiguration()
        config.depth = depth
        config.embedDim = 1280
        config.numHeads = 16
        config.mlpRatio = 4
        config.hiddenSize = 1536
        let t0 = DispatchTime.now().uptimeNanoseconds
        let weights = randomWeights(config, dtype: dtype == .bf16 ? .bf16 : .f32)
        let vision = try Qwen2VLVision(config: config, checkpoint: weights, dtype: dtype)
        print(String(format: "built %d-block tower (%@) in %.1f s", depth, dtype.rawValue,
                     Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))

        let side = size / 28 * 28
        let grid = VisionGrid(t: (frames + 1) / 2, h: side / 14, w: side / 14)
        let pixels = Tensor(uninitialized: [grid.patches, config.patchDim])
        for i in 0..<pixels.count { pixels.pointer[i] = Float((i * 7919) % 2001) / 1000 - 1 }
        let flop = flops(config, grid: grid)
        print("input: \(frames) frames at \(side)×\(side) → grid \(grid), \(grid.patches) patches; \(String(format: "%.2f", flop / 1e12)) TFLOP")

        // The bf16 GEMM peak at the tower's own MLP shape, measured now.
        let peak = try gemmPeak(rows: grid.patches)
        print(String(format: "bf16 GEMM peak (%d×1280×5120): %.1f GFLOP/s", grid.patches, peak))

        var times: [Double] = []
        for _ in 0..<runs {
            times.append(try medianTime(runs: 1) { _ = try vision.forward(pixels: pixels, grid: grid) })
        }
        times.sort()
        let t = times[times.count / 2]
        let achieved = flop / t / 1e9
        print(String(format: "vision tower: %.2f s, %.1f GFLOP/s = %.2f of the bf16 GEMM peak (target ≥ 0.80)", t, achieved, achieved / peak))
    }

    /// Matrix-product FLOPs of one forward pass (2 per multiply-add), attention included.
    func flops(_ c: Qwen2VLVisionConfiguration, grid: VisionGrid) -> Double {
        let n = Double(grid.patches), e = Double(c.embedDim), mlp = Double(c.mlpHiddenDim)
        let perFrameGroup = Double(grid.h * grid.w)
        let block = 2 * n * e * 3 * e + 2 * n * e * e + 2 * 2 * n * e * mlp + 4 * n * perFrameGroup * e
        let merged = Double(c.embedDim * c.spatialMergeSize * c.spatialMergeSize)
        let merger = 2 * (n / 4) * merged * merged + 2 * (n / 4) * merged * Double(c.hiddenSize)
        return 2 * n * Double(c.patchDim) * e + Double(c.depth) * block + merger
    }

    func gemmPeak(rows: Int) throws -> Double {
        let x = Tensor(uninitialized: [rows, 1280])
        for i in 0..<x.count { x.pointer[i] = Float(i % 97) / 97 - 0.5 }
        let w = random("peak", .bf16, [5120, 1280], seed: 99)
        let y = Tensor(uninitialized: [rows, 5120])
        try Linear.forward(x, w, into: y, rows: rows)
        let t = try medianTime(runs: 3) { try Linear.forward(x, w, into: y, rows: rows) }
        return 2.0 * Double(rows * 1280 * 5120) / t / 1e9
    }

    func randomWeights(_ c: Qwen2VLVisionConfiguration, dtype: DType) -> InMemoryWeights {
        let e = c.embedDim, mlp = c.mlpHiddenDim, merged = e * 4
        var store = InMemoryWeights(label: "random Qwen2-VL-2B vision tower")
        var seed: UInt64 = 1
        func add(_ name: String, _ shape: [Int], scale: Float = 0.02, dtype: DType = .f32, offset: Float = 0) {
            seed += 1
            store.tensors["visual." + name] = random("visual." + name, dtype, shape, seed: seed, scale: scale, offset: offset)
        }
        add("patch_embed.proj.weight", [e, 3, 2, 14, 14], dtype: dtype)
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            add(b + "norm1.weight", [e], offset: 1); add(b + "norm1.bias", [e])
            add(b + "norm2.weight", [e], offset: 1); add(b + "norm2.bias", [e])
            add(b + "attn.qkv.weight", [3 * e, e], dtype: dtype); add(b + "attn.qkv.bias", [3 * e])
            add(b + "attn.proj.weight", [e, e], dtype: dtype); add(b + "attn.proj.bias", [e])
            add(b + "mlp.fc1.weight", [mlp, e], dtype: dtype); add(b + "mlp.fc1.bias", [mlp])
            add(b + "mlp.fc2.weight", [e, mlp], dtype: dtype); add(b + "mlp.fc2.bias", [e])
        }
        add("merger.ln_q.weight", [e], offset: 1); add("merger.ln_q.bias", [e])
        add("merger.mlp.0.weight", [merged, merged], dtype: dtype); add("merger.mlp.0.bias", [merged])
        add("merger.mlp.2.weight", [c.hiddenSize, merged], dtype: dtype); add("merger.mlp.2.bias", [c.hiddenSize])
        return store
    }

    func random(_ name: String, _ dtype: DType, _ shape: [Int], seed: UInt64, scale: Float = 0.02, offset: Float = 0) -> WeightTensor {
        let n = shape.reduce(1, *)
        var state = seed &* 0x9E3779B97F4A7C15
        var values = [Float](repeating: 0, count: n)
        for i in 0..<n {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            values[i] = offset + scale * (Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max))
        }
        let data = dtype == .bf16 ? Convert.bf16(values).withUnsafeBytes { Data($0) } : values.withUnsafeBytes { Data($0) }
        return WeightTensor(name: name, dtype: dtype, shape: shape, data: data)
    }
}

