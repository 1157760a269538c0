import Foundation
import Tensors

/// The vision tower's outputs for one video or image.
public struct Qwen3VLVisionOutput: @unchecked Sendable {
    /// [t·h·w / merge², out_hidden_size]: one embedding per vision pad token.
    public var merged: Tensor
    /// One [t·h·w / merge², out_hidden_size] feature per `deepstack_visual_indexes` entry, in that
    /// order; feature k is added to the output of decoder layer k at the vision positions.
    public var deepstack: [Tensor]
}

/// The Qwen3-VL vision tower: Conv3d patch embedding with bias (as one GEMM), learned position
/// embeddings bilinearly interpolated to the grid, `depth` ViT blocks (LayerNorm, 2D rotary,
/// attention block-diagonal per temporal patch, MLP with the config's activation), the 2×2 patch
/// merger and the DeepStack mergers tapping the blocks of `deepstack_visual_indexes`.
/// Port of transformers 4.57's `Qwen3VLVisionModel.forward`.
public final class Qwen3VLVision: @unchecked Sendable {
    public let config: Qwen3VLVisionConfiguration
    public let dtype: ComputeDType
    let weights: Weights
    private let pool: ThreadPool
    private let scratch = AttentionScratch()

    struct Block {
        var norm1: (Tensor, Tensor), norm2: (Tensor, Tensor)
        var qkv: WeightTensor, qkvBias: Tensor
        var proj: WeightTensor, projBias: Tensor
        var fc1: WeightTensor, fc1Bias: Tensor
        var fc2: WeightTensor, fc2Bias: Tensor
    }

    /// `Qwen3VLVisionPatchMerger`: LayerNorm (over one patch before the 2×2 shuffle, or over the
    /// shuffled row when `postShuffleNorm`), fc1, GELU, fc2.
    struct Merger {
        var norm: (Tensor, Tensor)
        var fc1: WeightTensor, fc1Bias: Tensor
        var fc2: WeightTensor, fc2Bias: Tensor
        var postShuffleNorm: Bool
    }

    struct Weights {
        var patchEmbed: WeightTensor, patchBias: Tensor // [hidden, C·T·P·P], [hidden]
        var positions: Tensor                           // [num_position_embeddings, hidden]
        var blocks: [Block]
        var merger: Merger
        var deepstack: [Merger]
    }

    /// Every tensor name (after the `model.visual.` / `visual.` prefix) with its shape: what the
    /// loader requires, and what `reelql bench` fills with random values.
    public static func expectedShapes(_ c: Qwen3VLVisionConfiguration) -> [String: [Int]] {
        let e = c.hiddenSize, mlp = c.intermediateSize, merged = e * c.spatialMergeSize * c.spatialMergeSize
        var expected: [String: [Int]] = [
            "patch_embed.proj.weight": [e, c.inChannels, c.temporalPatchSize, c.patchSize, c.patchSize],
            "patch_embed.proj.bias": [e],
            "pos_embed.weight": [c.numPositionEmbeddings, e],
        ]
        func mergerShapes(_ p: String, normWidth: Int) {
            expected[p + "norm.weight"] = [normWidth]; expected[p + "norm.bias"] = [normWidth]
            expected[p + "linear_fc1.weight"] = [merged, merged]; expected[p + "linear_fc1.bias"] = [merged]
            expected[p + "linear_fc2.weight"] = [c.outHiddenSize, merged]; expected[p + "linear_fc2.bias"] = [c.outHiddenSize]
        }
        mergerShapes("merger.", normWidth: e)
        for k in c.deepstackVisualIndexes.indices { mergerShapes("deepstack_merger_list.\(k).", normWidth: merged) }
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            expected[b + "norm1.weight"] = [e]; expected[b + "norm1.bias"] = [e]
            expected[b + "norm2.weight"] = [e]; expected[b + "norm2.bias"] = [e]
            expected[b + "attn.qkv.weight"] = [3 * e, e]; expected[b + "attn.qkv.bias"] = [3 * e]
            expected[b + "attn.proj.weight"] = [e, e]; expected[b + "attn.proj.bias"] = [e]
            expected[b + "mlp.linear_fc1.weight"] = [mlp, e]; expected[b + "mlp.linear_fc1.bias"] = [mlp]
            expected[b + "mlp.linear_fc2.weight"] = [e, mlp]; expected[b + "mlp.linear_fc2.bias"] = [e]
        }
        return expected
    }

    /// Loads the `model.visual.*` tensors (transformers 4.57 and 5 saves) or `visual.*`, strictly:
    /// every expected tensor with its expected shape and no unknown vision tensor. `dtype` nil
    /// follows the checkpoint (bf16 weights compute in bf16, others in f32).
    public init(config: Qwen3VLVisionConfiguration, checkpoint: any WeightStore, dtype: ComputeDType? = nil,
                pool: ThreadPool = .shared) throws {
        self.config = config
        self.pool = pool
        let configPath = (checkpoint.directory as NSString).appendingPathComponent("config.json")
        try config.validate(path: configPath)
        let c = config
        let w = try VisionWeights(checkpoint: checkpoint, configPath: configPath, depth: c.depth, prefixes: ["model.visual.", "visual."],
                                  dtype: dtype) { Self.expectedShapes(c) }
        self.dtype = w.computeType
        let e = c.hiddenSize
        func matrix(_ name: String) throws -> WeightTensor { try w.matrix(name) }
        func vector(_ name: String) throws -> Tensor { try w.vector(name) }
        func norm(_ name: String) throws -> (Tensor, Tensor) { try w.norm(name) }
        func merger(_ p: String, post: Bool) throws -> Merger {
            Merger(norm: try norm(p + "norm"), fc1: try matrix(p + "linear_fc1.weight"), fc1Bias: try vector(p + "linear_fc1.bias"),
                   fc2: try matrix(p + "linear_fc2.weight"), fc2Bias: try vector(p + "linear_fc2.bias"), postShuffleNorm: post)
        }
        let blocks = try (0..<c.depth).map { i -> Block in
            let b = "blocks.\(i)."
            return Block(norm1: try norm(b + "norm1"), norm2: try norm(b + "norm2"),
                         qkv: try matrix(b + "attn.qkv.weight"), qkvBias: try vector(b + "attn.qkv.bias"),
                         proj: try matrix(b + "attn.proj.weight"), projBias: try vector(b + "attn.proj.bias"),
                         fc1: try matrix(b + "mlp.linear_fc1.weight"), fc1Bias: try vector(b + "mlp.linear_fc1.bias"),
                         fc2: try matrix(b + "mlp.linear_fc2.weight"), fc2Bias: try vector(b + "mlp.linear_fc2.bias"))
        }
        weights = Weights(
            patchEmbed: try w.plainMatrix(try w.weight("patch_embed.proj.weight")).reshaped([e, c.patchDim]), patchBias: try vector("patch_embed.proj.bias"),
            positions: try vector("pos_embed.weight"), blocks: blocks, merger: try merger("merger.", post: false),
            deepstack: try c.deepstackVisualIndexes.indices.map { try merger("deepstack_merger_list.\($0).", post: true) })
    }

    /// The tower's outputs for one video or image: pixels [t·h·w, C·T·P·P] in merge order (as
    /// the processor flattens them) and their grid.
    public func forward(pixels: Tensor, grid: VisionGrid) throws -> Qwen3VLVisionOutput {
        let c = config, e = c.hiddenSize, m = c.spatialMergeSize
        guard grid.t > 0, grid.h > 0, grid.w > 0, let n = checkedElementCount([grid.t, grid.h, grid.w]) else {
            throw VLMError.invalidInput("grid \(grid) must have positive sides and a representable size")
        }
        guard pixels.shape == [n, c.patchDim] else {
            throw VLMError.invalidInput("pixel values \(pixels.shape) do not match grid \(grid) × \(c.patchDim)")
        }
        guard grid.h % m == 0, grid.w % m == 0 else {
            throw VLMError.invalidInput("grid \(grid) is not a multiple of the \(m)×\(m) merge")
        }
        // Conv3d with stride = kernel is one GEMM over flattened patches, plus its bias.
        let x = try Tensor(uninitialized: [n, e], what: "vision patch embeddings")
        try Linear.forward(pixels, weights.patchEmbed, bias: weights.patchBias, into: x, rows: n, pool: pool) // [N, e]
        try addPositionEmbeddings(x, grid: grid)
        let (cos, sin) = try rotary(grid: grid)                                                                 // [N, headDim]
        let cuSeqlens = (0...grid.t).map { $0 * grid.h * grid.w }
        let heads = c.numHeads, hd = c.headDim
        let act = activation

        let qkv = try Tensor(uninitialized: [n, 3 * e], what: "vision qkv")
        let proj = try Tensor(uninitialized: [n, e], what: "vision projection")
        let hidden = try Tensor(uninitialized: [n, c.intermediateSize], what: "vision MLP")
        let normed = try Tensor(uninitialized: [n, e], what: "vision norm")
        // Reused by every block: a fresh tensor of this size faults its pages in again each time.
        let attendedRows = try Tensor(uninitialized: [n, heads * hd], what: "vision attention output")
        var deepstack: [Tensor] = []
        var profile = StageTimer(enabled: StageTimer.requested)
        defer { profile.report("vision") }
        for (index, block) in weights.blocks.enumerated() {
            // x += proj(attention(rotary(qkv(norm1(x)))))   (Qwen3VLVisionBlock.forward)
            profile.mark("other")
            _ = try Ops.layerNorm(x, weight: block.norm1.0, bias: block.norm1.1, eps: 1e-6, into: normed, pool: pool)
            // [N, 3e]: q | k | v, queries and keys rotated as each block of rows is finished
            try Linear.forward(normed, block.qkv, bias: block.qkvBias, into: qkv, rows: n, then: { r in
                Ops.rotaryQK(qkv, cos: cos, sin: sin, heads: heads, headDim: hd, rows: r)
            }, pool: pool)
            profile.mark("qkv+rope")
            let attended = try Attention.forward(qkv: qkv, heads: heads, headDim: hd, mask: .blockDiagonal(cuSeqlens),
                                                 precision: dtype.towerAttention, scratch: scratch, into: attendedRows, pool: pool)
            profile.mark("attn")
            try Linear.forward(attended, block.proj, bias: block.projBias, into: proj, rows: n, pool: pool)
            Ops.add(x, proj, pool: pool)
            profile.mark("proj")
            // x += fc2(act(fc1(norm2(x))))
            _ = try Ops.layerNorm(x, weight: block.norm2.0, bias: block.norm2.1, eps: 1e-6, into: normed, pool: pool)
            try Linear.mlp(normed, rows: n, fc1: block.fc1, bias1: block.fc1Bias, activation: act, fc2: block.fc2,
                           bias2: block.fc2Bias, hidden: hidden, into: proj, pool: pool)
            Ops.add(x, proj, pool: pool)
            profile.mark("mlp")
            if let k = c.deepstackVisualIndexes.firstIndex(of: index) {
                deepstack.append(try merge(x, weights.deepstack[k]))
                profile.mark("merger")
            }
        }
        let merged = try merge(x, weights.merger)
        profile.mark("merger")
        return Qwen3VLVisionOutput(merged: merged, deepstack: deepstack)
    }

    /// `Qwen3VLVisionPatchMerger.forward`: x [N, e] (4 consecutive rows = one 2×2 window) →
    /// [N/4, out_hidden_size].
    private func merge(_ x: Tensor, _ mg: Merger) throws -> Tensor {
        let m = config.spatialMergeSize, n = x.shape[0], e = config.hiddenSize
        let rows = n / (m * m), width = e * m * m
        let normed = try Tensor(uninitialized: [rows, width], what: "vision merger norm")
        // Pre-shuffle: LayerNorm over each patch; post-shuffle (DeepStack): over each window's row.
        _ = try Ops.layerNorm(mg.postShuffleNorm ? x.reshaped([rows, width]) : x, weight: mg.norm.0, bias: mg.norm.1, eps: 1e-6,
                          into: mg.postShuffleNorm ? normed : normed.reshaped([n, e]), pool: pool)
        let h1 = try Linear.forward(normed, mg.fc1, bias: mg.fc1Bias, pool: pool) // [N/4, 4e]
        Ops.activate(h1, .gelu, pool: pool)                                      // nn.GELU(): the erf form
        return try Linear.forward(h1, mg.fc2, bias: mg.fc2Bias, pool: pool)      // [N/4, out]
    }

    var activation: Ops.Activation {
        switch config.hiddenAct {
        case "gelu": return .gelu
        case "quick_gelu": return .quickGelu
        case "silu": return .silu
        default: return .geluTanh
        }
    }

    /// Adds the learned position embeddings, bilinearly interpolated from the side × side table to
    /// the h × w grid and laid out in merge order, repeated for every temporal patch. Port of
    /// `Qwen3VLVisionModel.fast_pos_embed_interpolate` (4.57) in its float32 arithmetic:
    /// torch.linspace(0, side − 1, h) (start + step·i for the first half, end − step·(h − 1 − i)
    /// after), truncated to the floor index, ceil clipped to side − 1, weights (1 − dh)(1 − dw),
    /// (1 − dh)dw, dh(1 − dw), dh·dw summed in that order.
    func addPositionEmbeddings(_ x: Tensor, grid: VisionGrid) throws {
        let side = config.gridSide, e = config.hiddenSize, m = config.spatialMergeSize
        func linspace(_ steps: Int) -> [Float] {
            let end = Float(side - 1)
            guard steps > 1 else { return [0] }
            let step = end / Float(steps - 1)
            return (0..<steps).map { i in i < steps / 2 ? 0 + step * Float(i) : end - step * Float(steps - 1 - i) }
        }
        struct Axis { var floor: Int, ceil: Int, frac: Float }
        func axis(_ steps: Int) -> [Axis] {
            linspace(steps).map { v in
                let f = Int(v)
                return Axis(floor: f, ceil: min(f + 1, side - 1), frac: v - Float(f))
            }
        }
        let hs = axis(grid.h), ws = axis(grid.w)
        let table = weights.positions.pointer
        // One interpolated row per (y, x) of a frame, in merge order, then added to every temporal patch.
        let frame = grid.h * grid.w
        let rows = try Tensor(uninitialized: [frame, e], what: "vision position embeddings")
        var r = 0
        for hb in 0..<(grid.h / m) { for wb in 0..<(grid.w / m) { for mh in 0..<m { for mw in 0..<m {
            let a = hs[hb * m + mh], b = ws[wb * m + mw]
            let w00 = (1 - a.frac) * (1 - b.frac), w01 = (1 - a.frac) * b.frac
            let w10 = a.frac * (1 - b.frac), w11 = a.frac * b.frac
            let p00 = table + (a.floor * side + b.floor) * e, p01 = table + (a.floor * side + b.ceil) * e
            let p10 = table + (a.ceil * side + b.floor) * e, p11 = table + (a.ceil * side + b.ceil) * e
            let dst = rows.pointer + r * e
            for j in 0..<e {
                let s0 = p00[j] * w00, s1 = p01[j] * w01, s2 = p10[j] * w10, s3 = p11[j] * w11
                dst[j] = ((s0 + s1) + s2) + s3
            }
            r += 1
        } } } }
        for t in 0..<grid.t { Ops.add(x.rows((t * frame)..<((t + 1) * frame)), rows, pool: pool) }
    }

    /// cos/sin [N, headDim] of the 2D rotary: each patch's (h, w) in merge order, repeated for
    /// every temporal patch; per row [cos(h·f), cos(w·f)] twice, f = θ^(−2i/(headDim/2)).
    /// Port of `Qwen3VLVisionModel.rot_pos_emb` and `Qwen3VLVisionRotaryEmbedding` (float32).
    func rotary(grid: VisionGrid) throws -> (Tensor, Tensor) {
        let hd = config.headDim, quarter = hd / 4, spatial = hd / 2, m = config.spatialMergeSize
        let invFreq = (0..<quarter).map { i in 1 / powf(Float(config.ropeTheta), Float(2 * i) / Float(spatial)) }
        let n = grid.patches
        let cos = try Tensor(uninitialized: [n, hd], what: "vision rotary"), sin = try Tensor(uninitialized: [n, hd], what: "vision rotary")
        var row = 0
        for _ in 0..<grid.t { for hb in 0..<(grid.h / m) { for wb in 0..<(grid.w / m) { for mh in 0..<m { for mw in 0..<m {
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
        } } } } }
        return (cos, sin)
    }
}
