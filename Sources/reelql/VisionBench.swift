import ArgumentParser
import Foundation
import Tensors
import VLM

/// `reelql bench vision`: a family's vision tower (its smallest release's configuration, random
/// weights built in memory; Qwen2-VL-2B by default) on 8 frames at 448×448, against the bf16 GEMM
/// peak measured in the same run.
struct VisionBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vision",
        abstract: "Time a vision tower (default Qwen2-VL-2B: depth 32, width 1280, 16 heads) on 8 frames at 448×448.",
        discussion: """
        --family picks the configuration: qwen2_vl (Qwen2-VL-2B), qwen2_5_vl (Qwen2.5-VL-3B: depth 32, width 1280, \
        gated MLP 3420, windows of 112 px, full attention in blocks 7, 15, 23, 31), qwen3_vl (Qwen3-VL-2B: depth 24, \
        width 1024, MLP 4096, DeepStack mergers after blocks 5, 11, 17). Weights are random and built in memory \
        (nothing is read or written). Run a release build.
        """)

    @Option(help: "Model family: qwen2_vl, qwen2_5_vl or qwen3_vl.")
    var family: BenchFamily = .qwen2_vl
    @Option(help: "Compute precision: bf16 (the checkpoint's), int8 or f32.")
    var dtype: ComputeDType = .bf16
    @Option(parsing: .unconditional, help: "Frames (an even number) at --size × --size.")
    var frames: Int = 8
    @Option(parsing: .unconditional, help: "Frame side in pixels (a multiple of 28; of 32 for qwen3_vl).")
    var size: Int = 448
    @Option(parsing: .unconditional, help: "Tower depth (the family's: 32, or 24 for qwen3_vl; fewer for a quick look).")
    var depth: Int?
    @Option(parsing: .unconditional, help: "Timed runs (the median is reported).")
    var runs: Int = 1

    func validate() throws {
        try requireOption("--frames", frames, (1...64).contains(frames), "between 1 and 64")
        try requireOption("--size", size, (28...2016).contains(size), "between 28 and 2016")
        if let depth {
            try requireOption("--depth", depth, (1...family.fullDepth).contains(depth), "between 1 and \(family.fullDepth)")
        }
        try requireOption("--runs", runs, (1...maxBenchRuns).contains(runs), "between 1 and \(maxBenchRuns)")
    }

    func run() throws {
        let depth = self.depth ?? family.fullDepth
        let t0 = DispatchTime.now().uptimeNanoseconds
        let shapes = try family.visionShapes(depth: depth)
        let weights = randomWeights(shapes, dtype: dtype == .f32 ? .f32 : .bf16)
        let configData = try JSONSerialization.data(withJSONObject: family.visionConfig(depth: depth))
        let forward: (Tensor, VisionGrid) throws -> Void
        let width: Int, mlp: Int, patchDim: Int
        var windows: [Int]? = nil, fullBlocks: Set<Int> = []
        switch family {
        case .qwen2_vl:
            let c = try JSONDecoder().decode(Qwen2VLVisionConfiguration.self, from: configData)
            let vision = try Qwen2VLVision(config: c, checkpoint: weights, dtype: dtype)
            forward = { _ = try vision.forward(pixels: $0, grid: $1) }
            (width, mlp, patchDim) = (c.embedDim, c.mlpHiddenDim, c.patchDim)
        case .qwen2_5_vl:
            let c = try JSONDecoder().decode(Qwen25VLVisionConfiguration.self, from: configData)
            let vision = try Qwen25VLVision(config: c, checkpoint: weights, dtype: dtype)
            forward = { _ = try vision.forward(pixels: $0, grid: $1) }
            (width, mlp, patchDim) = (c.hiddenSize, c.intermediateSize, c.patchDim)
            windows = [c.mergedWindow, c.spatialMergeSize]
            fullBlocks = Set(c.fullattBlockIndexes)
        case .qwen3_vl:
            let c = try JSONDecoder().decode(Qwen3VLVisionConfiguration.self, from: configData)
            let vision = try Qwen3VLVision(config: c, checkpoint: weights, dtype: dtype)
            forward = { _ = try vision.forward(pixels: $0, grid: $1) }
            (width, mlp, patchDim) = (c.hiddenSize, c.intermediateSize, c.patchDim)
        }
        print(String(format: "built %d-block %@ tower (%@) in %.1f s", depth, family.title, dtype.rawValue,
                     Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))

        let unit = 2 * family.patch
        let side = size / unit * unit
        let grid = VisionGrid(t: (frames + 1) / 2, h: side / family.patch, w: side / family.patch)
        let pixels = try Tensor(uninitialized: [grid.patches, patchDim])
        for i in 0..<pixels.count { pixels.pointer[i] = Float((i * 7919) % 2001) / 1000 - 1 }
        // Attention spans: whole frames, or (Qwen2.5-VL, blocks outside fullatt_block_indexes) windows.
        let frameSpans = [Int](repeating: grid.h * grid.w, count: grid.t)
        var windowSpans = frameSpans
        if let w = windows {
            let cu = try Qwen25VLVision.windowIndex(grid: grid, mergedWindow: w[0], merge: w[1]).cuSeqlens
            windowSpans = zip(cu.dropFirst(), cu).map { $0 - $1 }
        }
        let flop = flops(shapes, patches: grid.patches, width: width, depth: depth,
                         spans: { fullBlocks.contains($0) || windows == nil ? frameSpans : windowSpans })
        print("input: \(frames) frames at \(side)×\(side) → grid \(grid), \(grid.patches) patches; \(String(format: "%.2f", flop / 1e12)) TFLOP")

        // The bf16 GEMM peak at the tower's own MLP shape, measured now.
        let peak = try gemmPeak(rows: grid.patches, k: width, n: mlp)
        print(String(format: "bf16 GEMM peak (%d×%d×%d): %.1f GFLOP/s", grid.patches, width, mlp, peak))
        if dtype == .int8 {
            let int8 = try gemmPeak(rows: grid.patches, k: width, n: mlp, int8: true)
            print(String(format: "int8 GEMM, same shape, activations quantized per row: %.1f GFLOP/s = %.2f× bf16", int8, int8 / peak))
        }

        var times: [Double] = []
        for _ in 0..<runs {
            times.append(try medianTime(runs: 1) { try forward(pixels, grid) })
        }
        times.sort()
        let t = times[times.count / 2]
        let achieved = flop / t / 1e9
        print(String(format: "vision tower: %.2f s, %.1f GFLOP/s = %.2f of the bf16 GEMM peak (target ≥ 0.80)", t, achieved, achieved / peak))
    }

    /// Matrix-product FLOPs of one forward pass (2 per multiply-add): every matrix of the loader's
    /// table over the rows it multiplies (all patches, or the merged rows for the mergers; the
    /// learned position table is not a product), plus attention, 4·width·span² per span per block.
    func flops(_ shapes: [String: [Int]], patches n: Int, width: Int, depth: Int, spans: (Int) -> [Int]) -> Double {
        var total = 0.0
        for (name, shape) in shapes where shape.count >= 2 && !name.hasPrefix("pos_embed") {
            let rows = name.contains("merger") ? n / 4 : n
            total += 2 * Double(rows) * Double(shape.reduce(1, *))
        }
        for b in 0..<depth {
            total += spans(b).reduce(0.0) { $0 + 4 * Double(width) * Double($1) * Double($1) }
        }
        return total
    }

    func gemmPeak(rows: Int, k: Int, n: Int, int8: Bool = false) throws -> Double {
        let x = try Tensor(uninitialized: [rows, k])
        for i in 0..<x.count { x.pointer[i] = Float(i % 97) / 97 - 0.5 }
        // Packed into oneDNN's blocked layout, as the tower's weights are (a plain bf16 weight is
        // reordered on every call, which halves the figure at these shapes).
        let plain = random("peak", .bf16, [n, k], seed: 99)
        let w = try Linear.pack(int8 ? try Linear.quantize(plain) : plain, rows: 4096)
        let y = try Tensor(uninitialized: [rows, n])
        try Linear.forward(x, w, into: y, rows: rows)
        let t = try medianTime(runs: 3) { try Linear.forward(x, w, into: y, rows: rows) }
        return 2.0 * Double(rows * k * n) / t / 1e9
    }

    /// The loader's tensors under `family.visionPrefix`, random: matrices in `dtype`, vectors f32.
    func randomWeights(_ shapes: [String: [Int]], dtype: DType) -> InMemoryWeights {
        var store = InMemoryWeights(label: "random \(family.title) vision tower")
        var seed: UInt64 = 1
        for (name, shape) in shapes.sorted(by: { $0.key < $1.key }) {
            seed += 1
            let (scale, offset) = randomInit(name, shape)
            let full = family.visionPrefix + name
            store.tensors[full] = random(full, shape.count >= 2 ? dtype : .f32, shape, seed: seed, scale: scale, offset: offset)
        }
        return store
    }

    func random(_ name: String, _ dtype: DType, _ shape: [Int], seed: UInt64, scale: Float = 0.02, offset: Float = 0) -> WeightTensor {
        var state = seed &* 0x9E3779B97F4A7C15
        let values = randomValues(shape.reduce(1, *), scale: scale, offset: offset, state: &state)
        let data = dtype == .bf16 ? Convert.bf16(values).withUnsafeBytes { Data($0) } : values.withUnsafeBytes { Data($0) }
        return WeightTensor(name: name, dtype: dtype, shape: shape, data: data)
    }
}
