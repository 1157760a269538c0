import Foundation
import Tensors

/// The Qwen2.5-VL vision tower: Conv3d patch embedding (as one GEMM), `depth` blocks of RMSNorm →
/// attention with 2D rotary positions → RMSNorm → gated MLP with biases, where most blocks attend
/// within windows of `window_size` pixels and the `fullatt_block_indexes` blocks over each whole
/// frame; then the merger (RMSNorm `ln_q`, 2×2 cells as one row, Linear → GELU → Linear).
/// Port of transformers' `Qwen2_5_VisionTransformerPretrainedModel` (4.57 `forward`,
/// `get_window_index`, `rot_pos_emb`; 5.x computes the same through `get_vision_window_index`).
public final class Qwen25VLVision: @unchecked Sendable {
    public let config: Qwen25VLVisionConfiguration
    public let dtype: ComputeDType
    let weights: Weights
    private let pool: ThreadPool
    private let scratch = AttentionScratch()

    struct Block {
        var norm1: Tensor, norm2: Tensor
        var qkv: WeightTensor, qkvBias: Tensor
        var proj: WeightTensor, projBias: Tensor
        var gate: WeightTensor, gateBias: Tensor
        var up: WeightTensor, upBias: Tensor
        var down: WeightTensor, downBias: Tensor
    }

    struct Weights {
        var patchEmbed: WeightTensor // [hidden, C·T·P·P]
        var blocks: [Block]
        var mergerNorm: Tensor
        var merger0: WeightTensor, merger0Bias: Tensor
        var merger2: WeightTensor, merger2Bias: Tensor
    }

    /// Every tensor name (after the `visual.` / `model.visual.` prefix) with its shape: what the
    /// loader requires, and what `reelql bench` fills with random values.
    public static func expectedShapes(_ c: Qwen25VLVisionConfiguration) -> [String: [Int]] {
        let e = c.hiddenSize, mlp = c.intermediateSize, merged = e * c.spatialMergeSize * c.spatialMergeSize
        var expected: [String: [Int]] = [
            "patch_embed.proj.weight": [e, c.inChannels, c.temporalPatchSize, c.patchSize, c.patchSize],
            "merger.ln_q.weight": [e],
            "merger.mlp.0.weight": [merged, merged], "merger.mlp.0.bias": [merged],
            "merger.mlp.2.weight": [c.outHiddenSize, merged], "merger.mlp.2.bias": [c.outHiddenSize],
        ]
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            expected[b + "norm1.weight"] = [e]; expected[b + "norm2.weight"] = [e]
            expected[b + "attn.qkv.weight"] = [3 * e, e]; expected[b + "attn.qkv.bias"] = [3 * e]
            expected[b + "attn.proj.weight"] = [e, e]; expected[b + "attn.proj.bias"] = [e]
            for m in ["gate_proj", "up_proj"] {
                expected[b + "mlp.\(m).weight"] = [mlp, e]; expected[b + "mlp.\(m).bias"] = [mlp]
            }
            expected[b + "mlp.down_proj.weight"] = [e, mlp]; expected[b + "mlp.down_proj.bias"] = [e]
        }
        return expected
    }

    /// Loads the `visual.*` tensors (or `model.visual.*`, as transformers 5 modules name them),
    /// strictly: every expected tensor with its expected shape, and no unknown vision tensor.
    /// `dtype` nil follows the checkpoint (bf16 weights compute in bf16, others in f32).
    public init(config: Qwen25VLVisionConfiguration, checkpoint: any WeightStore, dtype: ComputeDType? = nil,
                pool: ThreadPool = .shared) throws {
        self.config = config
        self.pool = pool
        let configPath = (checkpoint.directory as NSString).appendingPathComponent("config.json")
        try config.validate(path: configPath)
        let c = config
        let w = try VisionWeights(checkpoint: checkpoint, configPath: configPath, depth: c.depth, prefixes: ["visual.", "model.visual."],
                                  dtype: dtype) { Self.expectedShapes(c) }
        self.dtype = w.computeType
        func matrix(_ name: String) throws -> WeightTensor { try w.matrix(name) }
        func vector(_ name: String) throws -> Tensor { try w.vector(name) }

        let blocks = try (0..<c.depth).map { i -> Block in
            let b = "blocks.\(i)."
            return Block(norm1: try vector(b + "norm1.weight"), norm2: try vector(b + "norm2.weight"),
                         qkv: try matrix(b + "attn.qkv.weight"), qkvBias: try vector(b + "attn.qkv.bias"),
                         proj: try matrix(b + "attn.proj.weight"), projBias: try vector(b + "attn.proj.bias"),
                         gate: try matrix(b + "mlp.gate_proj.weight"), gateBias: try vector(b + "mlp.gate_proj.bias"),
                         up: try matrix(b + "mlp.up_proj.weight"), upBias: try vector(b + "mlp.up_proj.bias"),
                         down: try matrix(b + "mlp.down_proj.weight"), downBias: try vector(b + "mlp.down_proj.bias"))
        }
        // The Conv3d kernel as a matrix: reshape the weight before packing it.
        let patch = try w.weight("patch_embed.proj.weight").reshaped([c.hiddenSize, c.patchDim])
        weights = Weights(
            patchEmbed: try w.plainMatrix(patch),
            blocks: blocks, mergerNorm: try vector("merger.ln_q.weight"),
            merger0: try matrix("merger.mlp.0.weight"), merger0Bias: try vector("merger.mlp.0.bias"),
            merger2: try matrix("merger.mlp.2.weight"), merger2Bias: try vector("merger.mlp.2.bias"))
    }

    /// The window permutation of one grid, over merged cells (units of merge² patches): `index[k]`
    /// is the cell at window-ordered position k; `cuSeqlens` [0, …, N] are the window boundaries in
    /// patches, empty windows dropped (`torch.unique_consecutive`). Within each temporal patch the
    /// merged grid is padded to whole windows of `mergedWindow` cells, windows are taken row by
    /// row, cells within a window row by row. Port of `get_window_index` (transformers 4.57).
    public static func windowIndex(grid: VisionGrid, mergedWindow: Int, merge: Int) throws -> (index: [Int], cuSeqlens: [Int]) {
        guard mergedWindow > 0, merge > 0, grid.t > 0, grid.h > 0, grid.w > 0, grid.h % merge == 0, grid.w % merge == 0,
              checkedElementCount([grid.t, grid.h, grid.w]) != nil else {
            throw VLMError.invalidInput("grid \(grid) cannot be split into \(merge)×\(merge) cells and windows of \(mergedWindow)")
        }
        let gh = grid.h / merge, gw = grid.w / merge, unit = merge * merge, ws = mergedWindow
        // F.pad adds a whole window where the side is already a multiple (ws − side % ws = ws);
        // those windows are empty and dropped below.
        let nh = (gh + ws - gh % ws) / ws, nw = (gw + ws - gw % ws) / ws
        var index: [Int] = []
        index.reserveCapacity(grid.t * gh * gw)
        var cu = [0]
        for t in 0..<grid.t {
            for wh in 0..<nh {
                for ww in 0..<nw {
                    var cells = 0
                    for y in (wh * ws)..<min(gh, (wh + 1) * ws) {
                        for x in (ww * ws)..<min(gw, (ww + 1) * ws) {
                            index.append((t * gh + y) * gw + x)
                            cells += 1
                        }
                    }
                    if cells > 0 { cu.append(cu[cu.count - 1] + cells * unit) }
                }
            }
        }
        return (index, cu)
    }

    /// The tower's output for one video or image: `hidden` [t·h·w, hidden_size], the last block's
    /// output in patch order (transformers returns it in window order), and `merged`
    /// [t·h·w / merge², out_hidden_size], one embedding per vision token in patch order.
    public func forward(pixels: Tensor, grid: VisionGrid) throws -> (hidden: Tensor, merged: Tensor) {
        let c = config, e = c.hiddenSize, m = c.spatialMergeSize, unit = m * m
        guard grid.t > 0, grid.h > 0, grid.w > 0, let n = checkedElementCount([grid.t, grid.h, grid.w]) else {
            throw VLMError.invalidInput("grid \(grid) must have positive sides and a representable size")
        }
        guard pixels.shape == [n, c.patchDim] else {
            throw VLMError.invalidInput("pixel values \(pixels.shape) do not match grid \(grid) × \(c.patchDim)")
        }
        guard grid.h % m == 0, grid.w % m == 0 else {
            throw VLMError.invalidInput("grid \(grid) is not a multiple of the \(m)×\(m) merge")
        }
        let (window, cuWindow) = try Self.windowIndex(grid: grid, mergedWindow: c.mergedWindow, merge: m)
        // Full attention stays within each temporal patch: h·w patches per block (frames stay
        // contiguous in window order, which is frame-major).
        let cuFull = (0...grid.t).map { $0 * grid.h * grid.w }

        // Conv3d with stride = kernel is one GEMM over flattened patches.
        let embedded = try Linear.forward(pixels, weights.patchEmbed, pool: pool) // [N, e], patch order
        // Window order: row k·unit + j is patch window[k]·unit + j.
        let x = try Tensor(uninitialized: [n, e], what: "vision hidden")     // [N, e], window order
        for (k, cell) in window.enumerated() {
            (x.pointer + k * unit * e).update(from: embedded.pointer + cell * unit * e, count: unit * e)
        }
        let (cos, sin) = try rotary(grid: grid, window: window)                   // [N, headDim], window order

        let heads = c.numHeads, hd = c.headDim, inter = c.intermediateSize
        let qkv = try Tensor(uninitialized: [n, 3 * e], what: "vision qkv")
        let proj = try Tensor(uninitialized: [n, e], what: "vision projection")
        let gate = try Tensor(uninitialized: [n, inter], what: "vision MLP gate")
        let up = try Tensor(uninitialized: [n, inter], what: "vision MLP up")
        let normed = try Tensor(uninitialized: [n, e], what: "vision norm")
        // Reused by every block: a fresh tensor of this size faults its pages in again each time.
        let attendedRows = try Tensor(uninitialized: [n, heads * hd], what: "vision attention output")
        let full = Set(c.fullattBlockIndexes)
        var profile = StageTimer(enabled: StageTimer.requested)
        defer { profile.report("vision") }
        for (i, block) in weights.blocks.enumerated() {
            // x += proj(attention(rotary(qkv(norm1(x))))), within windows or whole frames
            profile.mark("other")
            _ = try Ops.rmsNorm(x, weight: block.norm1, eps: 1e-6, into: normed, pool: pool)
            // [N, 3e]: q | k | v, queries and keys rotated as each block of rows is finished
            try Linear.forward(normed, block.qkv, bias: block.qkvBias, into: qkv, rows: n, then: { r in
                Ops.rotaryQK(qkv, cos: cos, sin: sin, heads: heads, headDim: hd, rows: r)
            }, pool: pool)
            profile.mark("qkv+rope")
            let attended = try Attention.forward(qkv: qkv, heads: heads, headDim: hd,
                                                 mask: .blockDiagonal(full.contains(i) ? cuFull : cuWindow),
                                                 precision: dtype.towerAttention, scratch: scratch, into: attendedRows, pool: pool)
            profile.mark("attn")
            try Linear.forward(attended, block.proj, bias: block.projBias, into: proj, rows: n, pool: pool)
            Ops.add(x, proj, pool: pool)
            // x += down(act(gate(norm2(x))) · up(norm2(x)))   (Qwen2_5_VLMLP, with biases)
            _ = try Ops.rmsNorm(x, weight: block.norm2, eps: 1e-6, into: normed, pool: pool)
            try Linear.forward(normed, block.gate, bias: block.gateBias, into: gate, rows: n, pool: pool)
            try Linear.forward(normed, block.up, bias: block.upBias, into: up, rows: n, pool: pool)
            profile.mark("gate+up")
            try gatedActivation(gate: gate, up: up)
            try Linear.forward(gate, block.down, bias: block.downBias, into: proj, rows: n, pool: pool)
            profile.mark("down")
            Ops.add(x, proj, pool: pool)
        }

        // Merger: RMSNorm, then each merge² group of rows (one merged cell) as one row.
        let mergedRows = n / unit, mergedWidth = e * unit
        let ln = try Ops.rmsNorm(x, weight: weights.mergerNorm, eps: 1e-6,
                             into: try Tensor(uninitialized: [n, e], what: "vision merger norm"), pool: pool)
        let h1 = try Linear.forward(ln.reshaped([mergedRows, mergedWidth]), weights.merger0, bias: weights.merger0Bias, pool: pool)
        Ops.activate(h1, .gelu, pool: pool)
        let mergedWindowOrder = try Linear.forward(h1, weights.merger2, bias: weights.merger2Bias, pool: pool) // [N/unit, out]
        // Back to patch order (transformers: `hidden_states[argsort(window_index)]`).
        let out = c.outHiddenSize
        let merged = try Tensor(uninitialized: [mergedRows, out], what: "vision merger output")
        let hidden = try Tensor(uninitialized: [n, e], what: "vision hidden (patch order)")
        for (k, cell) in window.enumerated() {
            (merged.pointer + cell * out).update(from: mergedWindowOrder.pointer + k * out, count: out)
            (hidden.pointer + cell * unit * e).update(from: x.pointer + k * unit * e, count: unit * e)
        }
        return (hidden, merged)
    }

    /// gate = act(gate) · up, in place.
    private func gatedActivation(gate: Tensor, up: Tensor) throws {
        switch config.hiddenAct {
        case "silu":
            _ = try Ops.siluMul(gate: gate, up: up, into: gate, pool: pool)
        default:
            let f: Ops.Activation = config.hiddenAct == "gelu" ? .gelu : config.hiddenAct == "gelu_pytorch_tanh" ? .geluTanh : .quickGelu
            Ops.activate(gate, f, pool: pool)
            pool.parallelRanges(gate.count, grain: 8192) { r in
                for i in r { gate.pointer[i] *= up.pointer[i] }
            }
        }
    }

    /// cos/sin [N, headDim] of the 2D rotary in window order: each patch's (h, w) position, per
    /// row [cos(h·f), cos(w·f)] twice, f = θ^(−2i/(headDim/2)) (float32 throughout).
    /// Port of `rot_pos_emb` and `Qwen2_5_VisionRotaryEmbedding`, permuted as `forward` does.
    func rotary(grid: VisionGrid, window: [Int]) throws -> (Tensor, Tensor) {
        let hd = config.headDim, quarter = hd / 4, spatial = hd / 2, m = config.spatialMergeSize
        let invFreq = (0..<quarter).map { i in 1 / powf(Float(config.ropeTheta), Float(2 * i) / Float(spatial)) }
        let n = grid.patches, gw = grid.w / m, gh = grid.h / m
        let cos = try Tensor(uninitialized: [n, hd], what: "vision rotary")
        let sin = try Tensor(uninitialized: [n, hd], what: "vision rotary")
        var row = 0
        for cell in window {
            let within = cell % (gh * gw), hb = within / gw, wb = within % gw
            for mh in 0..<m {
                for mw in 0..<m {
                    let pos = [Float(hb * m + mh), Float(wb * m + mw)]
                    let cr = cos.pointer + row * hd, sr = sin.pointer + row * hd
                    for (axis, p) in pos.enumerated() {
                        for i in 0..<quarter {
                            let angle = p * invFreq[i]
                            let (c, s) = (Foundation.cos(angle), Foundation.sin(angle))
                            for copy in 0..<2 {
                                cr[copy * spatial + axis * quarter + i] = c
                                sr[copy * spatial + axis * quarter + i] = s
                            }
                        }
                    }
                    row += 1
                }
            }
        }
        return (cos, sin)
    }
}
