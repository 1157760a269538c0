import Foundation
import Tensors

/// Compute precision of a model's matrix products.
public enum ComputeDType: String, Sendable, Codable, CaseIterable {
    /// f32 weights and f32 products end to end (what the parity tests use).
    case f32
    /// bf16 weights, activations rounded to bf16 at each product, f32 accumulation.
    case bf16
    /// Matrix weights quantized once at load to int8 (symmetric, one scale per output row),
    /// activations quantized per row at each product, exact integer sums (`Linear`); a vision
    /// tower's attention in 8 bits too (`AttentionPrecision.int8`); everything else (embeddings,
    /// the decoder's attention, norms, a tower's patch embedding) as bf16.
    case int8

    /// How a decoder's attention computes under this precision.
    public var attention: AttentionPrecision { self == .f32 ? .f32 : .bf16 }
    /// How a vision tower's attention computes under this precision.
    public var towerAttention: AttentionPrecision { self == .int8 ? .int8 : attention }
    /// The type of weights kept as they are (not quantized): f32 or bf16.
    public var plain: DType { self == .f32 ? .f32 : .bf16 }
}

/// The Qwen2-VL vision tower: Conv3d patch embedding (as one GEMM), `depth` ViT blocks with 2D
/// rotary positions and attention that is block-diagonal per temporal patch, and the 2×2
/// PatchMerger. Port of transformers' `Qwen2VisionTransformerPretrainedModel`.
public final class Qwen2VLVision: @unchecked Sendable {
    public let config: Qwen2VLVisionConfiguration
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

    struct Weights {
        var patchEmbed: WeightTensor // [embed, C·T·P·P]
        var blocks: [Block]
        var mergerNorm: (Tensor, Tensor)
        var merger0: WeightTensor, merger0Bias: Tensor
        var merger2: WeightTensor, merger2Bias: Tensor
    }

    /// Every tensor name (after the `visual.` / `model.visual.` prefix) with its shape: what the
    /// loader requires, and what `reelql bench` fills with random values.
    public static func expectedShapes(_ c: Qwen2VLVisionConfiguration) -> [String: [Int]] {
        let e = c.embedDim, mlp = c.mlpHiddenDim, merged = e * c.spatialMergeSize * c.spatialMergeSize
        var expected: [String: [Int]] = [
            "patch_embed.proj.weight": [e, c.inChannels, c.temporalPatchSize, c.patchSize, c.patchSize],
            "merger.ln_q.weight": [e], "merger.ln_q.bias": [e],
            "merger.mlp.0.weight": [merged, merged], "merger.mlp.0.bias": [merged],
            "merger.mlp.2.weight": [c.hiddenSize, merged], "merger.mlp.2.bias": [c.hiddenSize],
        ]
        for i in 0..<c.depth {
            let b = "blocks.\(i)."
            expected[b + "norm1.weight"] = [e]; expected[b + "norm1.bias"] = [e]
            expected[b + "norm2.weight"] = [e]; expected[b + "norm2.bias"] = [e]
            expected[b + "attn.qkv.weight"] = [3 * e, e]; expected[b + "attn.qkv.bias"] = [3 * e]
            expected[b + "attn.proj.weight"] = [e, e]; expected[b + "attn.proj.bias"] = [e]
            expected[b + "mlp.fc1.weight"] = [mlp, e]; expected[b + "mlp.fc1.bias"] = [mlp]
            expected[b + "mlp.fc2.weight"] = [e, mlp]; expected[b + "mlp.fc2.bias"] = [e]
        }
        return expected
    }

    /// Loads the `visual.*` tensors (or `model.visual.*`, as transformers 5 modules name them),
    /// strictly: every expected tensor with its expected shape, and no unknown vision tensor.
    /// `dtype` nil follows the checkpoint (bf16 weights compute in bf16, others in f32).
    public init(config: Qwen2VLVisionConfiguration, checkpoint: any WeightStore, dtype: ComputeDType? = nil,
                pool: ThreadPool = .shared) throws {
        self.config = config
        self.pool = pool
        // Every number in range before anything is sized by it.
        let configPath = (checkpoint.directory as NSString).appendingPathComponent("config.json")
        try config.validate(path: configPath)
        let c = config
        let w = try VisionWeights(checkpoint: checkpoint, configPath: configPath, depth: c.depth, prefixes: ["visual.", "model.visual."],
                                  dtype: dtype) { Self.expectedShapes(c) }
        self.dtype = w.computeType
        let e = c.embedDim
        func matrix(_ name: String) throws -> WeightTensor { try w.matrix(name) }
        func vector(_ name: String) throws -> Tensor { try w.vector(name) }
        func norm(_ name: String) throws -> (Tensor, Tensor) { try w.norm(name) }

        let blocks = try (0..<c.depth).map { i -> Block in
            let b = "blocks.\(i)."
            return Block(norm1: try norm(b + "norm1"), norm2: try norm(b + "norm2"),
                         qkv: try matrix(b + "attn.qkv.weight"), qkvBias: try vector(b + "attn.qkv.bias"),
                         proj: try matrix(b + "attn.proj.weight"), projBias: try vector(b + "attn.proj.bias"),
                         fc1: try matrix(b + "mlp.fc1.weight"), fc1Bias: try vector(b + "mlp.fc1.bias"),
                         fc2: try matrix(b + "mlp.fc2.weight"), fc2Bias: try vector(b + "mlp.fc2.bias"))
        }
        weights = Weights(
            patchEmbed: try w.plainMatrix(try w.weight("patch_embed.proj.weight")).reshaped([e, c.patchDim]),
            blocks: blocks, mergerNorm: try norm("merger.ln_q"),
            merger0: try matrix("merger.mlp.0.weight"), merger0Bias: try vector("merger.mlp.0.bias"),
            merger2: try matrix("merger.mlp.2.weight"), merger2Bias: try vector("merger.mlp.2.bias"))
    }

    /// The tower's output for one video or image: `hidden` [t·h·w, embed] before the merger,
    /// `merged` [t·h·w / 4, hidden_size] — one embedding per video token.
    public func forward(pixels: Tensor, grid: VisionGrid) throws -> (hidden: Tensor, merged: Tensor) {
        let c = config, e = c.embedDim, m = c.spatialMergeSize
        guard grid.t > 0, grid.h > 0, grid.w > 0, let n = checkedElementCount([grid.t, grid.h, grid.w]) else {
            throw VLMError.invalidInput("grid \(grid) must have positive sides and a representable size")
        }
        guard pixels.shape == [n, c.patchDim] else {
            throw VLMError.invalidInput("pixel values \(pixels.shape) do not match grid \(grid) × \(c.patchDim)")
        }
        guard grid.h % m == 0, grid.w % m == 0 else {
            throw VLMError.invalidInput("grid \(grid) is not a multiple of the \(m)×\(m) merge")
        }
        // Conv3d with stride = kernel is one GEMM over flattened patches.
        let x = try Linear.forward(pixels, weights.patchEmbed, pool: pool) // [N, e]
        let (cos, sin) = try rotary(grid: grid)                            // [N, headDim]
        // Attention stays within each temporal patch: h·w patches per block.
        let cuSeqlens = (0...grid.t).map { $0 * grid.h * grid.w }
        let heads = c.numHeads, hd = c.headDim
        let act = activation

        let qkv = try Tensor(uninitialized: [n, 3 * e], what: "vision qkv")
        let proj = try Tensor(uninitialized: [n, e], what: "vision projection")
        let hidden = try Tensor(uninitialized: [n, c.mlpHiddenDim], what: "vision MLP")
        let normed = try Tensor(uninitialized: [n, e], what: "vision norm")
        // Reused by every block: a fresh tensor of this size faults its pages in again each time.
        let attendedRows = try Tensor(uninitialized: [n, heads * hd], what: "vision attention output")
        var profile = StageTimer(enabled: StageTimer.requested)
        func mark(_ stage: String) { profile.mark(stage) }
        defer { profile.report("vision") }
        for block in weights.blocks {
            // x += proj(attention(rotary(qkv(norm1(x)))))
            mark("other")
            _ = try Ops.layerNorm(x, weight: block.norm1.0, bias: block.norm1.1, eps: 1e-6, into: normed, pool: pool)
            mark("ln")
            // [N, 3e]: q | k | v, queries and keys rotated as each block of rows is finished
            try Linear.forward(normed, block.qkv, bias: block.qkvBias, into: qkv, rows: n, then: { r in
                Ops.rotaryQK(qkv, cos: cos, sin: sin, heads: heads, headDim: hd, rows: r)
            }, pool: pool)
            mark("qkv+rope")
            let attended = try Attention.forward(qkv: qkv, heads: heads, headDim: hd, mask: .blockDiagonal(cuSeqlens),
                                                 precision: dtype.towerAttention, scratch: scratch, into: attendedRows, pool: pool)
            mark("attn")
            try Linear.forward(attended, block.proj, bias: block.projBias, into: proj, rows: n, pool: pool)
            mark("proj")
            Ops.add(x, proj, pool: pool)
            mark("add")
            // x += fc2(act(fc1(norm2(x))))
            _ = try Ops.layerNorm(x, weight: block.norm2.0, bias: block.norm2.1, eps: 1e-6, into: normed, pool: pool)
            mark("ln")
            try Linear.mlp(normed, rows: n, fc1: block.fc1, bias1: block.fc1Bias, activation: act, fc2: block.fc2,
                           bias2: block.fc2Bias, hidden: hidden, into: proj, pool: pool)
            mark("mlp")
            Ops.add(x, proj, pool: pool)
        }

        // PatchMerger: LayerNorm, then each 2×2 window (4 consecutive rows, in merge order) as one row.
        let mergedRows = n / (m * m), mergedWidth = e * m * m
        let ln = try Ops.layerNorm(x, weight: weights.mergerNorm.0, bias: weights.mergerNorm.1, eps: 1e-6,
                               into: try Tensor(uninitialized: [n, e], what: "vision merger norm"), pool: pool)
        let h1 = try Linear.forward(ln.reshaped([mergedRows, mergedWidth]), weights.merger0, bias: weights.merger0Bias, pool: pool)
        Ops.activate(h1, .gelu, pool: pool)
        let merged = try Linear.forward(h1, weights.merger2, bias: weights.merger2Bias, pool: pool) // [N/4, hidden]
        return (x, merged)
    }

    var activation: Ops.Activation {
        switch config.hiddenAct {
        case "gelu": return .gelu
        case "gelu_pytorch_tanh": return .geluTanh
        case "silu": return .silu
        default: return .quickGelu
        }
    }

    /// cos/sin [N, headDim] of the 2D rotary: each patch's (h, w) in merge order, repeated for
    /// every temporal patch; per row [cos(h·f), cos(w·f)] twice, f = θ^(−2i/(headDim/2)).
    /// Port of `get_vision_position_ids` and `Qwen2VLVisionRotaryEmbedding` (float32 throughout).
    func rotary(grid: VisionGrid) throws -> (Tensor, Tensor) {
        let hd = config.headDim, quarter = hd / 4, spatial = hd / 2, m = config.spatialMergeSize
        let invFreq = (0..<quarter).map { i in 1 / powf(Float(config.ropeTheta), Float(2 * i) / Float(spatial)) }
        let n = grid.patches
        let cos = try Tensor(uninitialized: [n, hd], what: "vision rotary"), sin = try Tensor(uninitialized: [n, hd], what: "vision rotary")
        var row = 0
        for _ in 0..<grid.t {
            for hb in 0..<(grid.h / m) {
                for wb in 0..<(grid.w / m) {
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
            }
        }
        return (cos, sin)
    }

}

/// Time spent per stage of a forward pass, printed to stderr when REELQL_PROFILE is set.
struct StageTimer {
    static let requested = ProcessInfo.processInfo.environment["REELQL_PROFILE"] != nil
    let enabled: Bool
    private var totals: [String: Double] = [:]
    private var last = DispatchTime.now().uptimeNanoseconds

    init(enabled: Bool) { self.enabled = enabled }

    /// Charges the time since the previous mark to `stage`.
    mutating func mark(_ stage: String) {
        guard enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        totals[stage, default: 0] += Double(now - last) / 1e9
        last = now
    }

    func report(_ what: String) {
        guard enabled else { return }
        let lines = totals.sorted { $0.value > $1.value }.map { String(format: "  %-8@ %8.3f s", $0.key, $0.value) }
        // write(2), errors ignored: FileHandle.write traps when stderr cannot be written (/dev/full).
        let text = Array(("\(what) profile:\n" + lines.joined(separator: "\n") + "\n").utf8)
        text.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}
