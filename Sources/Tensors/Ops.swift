import CKernels
import Foundation

/// Row-wise and element-wise operations on f32 tensors (in place where the name says so).
/// Rows are split over the thread pool.
public enum Ops {
    /// RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · weight.
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, into y: Tensor? = nil, pool: ThreadPool = .shared) throws -> Tensor {
        let n = x.shape.last!, rows = x.count / n
        precondition(weight.count == n, "rmsNorm: weight \(weight.shape) for rows of \(n)")
        let out = try y ?? Tensor(uninitialized: x.shape, what: "normalised rows")
        pool.parallelRanges(rows, grain: 16) { r in
            rq_rmsnorm(x.pointer + r.lowerBound * n, weight.pointer, out.pointer + r.lowerBound * n, r.count, n, eps)
        }
        return out
    }

    /// LayerNorm over the last dimension (weight and bias optional).
    public static func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Float, into y: Tensor? = nil,
                                 pool: ThreadPool = .shared) throws -> Tensor {
        let n = x.shape.last!, rows = x.count / n
        let out = try y ?? Tensor(uninitialized: x.shape, what: "normalised rows")
        pool.parallelRanges(rows, grain: 16) { r in
            rq_layernorm(x.pointer + r.lowerBound * n, weight?.pointer, bias?.pointer, out.pointer + r.lowerBound * n, r.count, n, eps)
        }
        return out
    }

    /// Softmax over the last dimension, in place.
    public static func softmax(_ x: Tensor, pool: ThreadPool = .shared) {
        let n = x.shape.last!, rows = x.count / n
        pool.parallelRanges(rows, grain: 8) { r in rq_softmax(x.pointer + r.lowerBound * n, r.count, n) }
    }

    public enum Activation: String, Sendable, Codable {
        case silu, gelu, geluTanh = "gelu_pytorch_tanh", quickGelu = "quick_gelu"
    }

    /// Applies an activation in place.
    public static func activate(_ x: Tensor, _ f: Activation, pool: ThreadPool = .shared) {
        pool.parallelRanges(x.count, grain: 4096) { r in
            let p = x.pointer + r.lowerBound
            switch f {
            case .silu: rq_silu(p, r.count)
            case .gelu: rq_gelu_erf(p, r.count)
            case .geluTanh: rq_gelu_tanh(p, r.count)
            case .quickGelu: rq_quick_gelu(p, r.count)
            }
        }
    }

    /// out = silu(gate) · up (SwiGLU).
    public static func siluMul(gate: Tensor, up: Tensor, into out: Tensor? = nil, pool: ThreadPool = .shared) throws -> Tensor {
        precondition(gate.count == up.count)
        let y = try out ?? Tensor(uninitialized: gate.shape, what: "SwiGLU output")
        pool.parallelRanges(gate.count, grain: 4096) { r in
            rq_silu_mul(gate.pointer + r.lowerBound, up.pointer + r.lowerBound, y.pointer + r.lowerBound, r.count)
        }
        return y
    }

    /// y += x (residual connection).
    public static func add(_ y: Tensor, _ x: Tensor, pool: ThreadPool = .shared) {
        precondition(y.count == x.count, "add: \(y.shape) += \(x.shape)")
        pool.parallelRanges(y.count, grain: 8192) { r in rq_add(y.pointer + r.lowerBound, x.pointer + r.lowerBound, r.count) }
    }

    /// Rotary embedding of the queries and keys of fused q | k | v rows ([rows, 3·heads·headDim]),
    /// rows `range` only, on this thread: `Linear.forward`'s epilogue for a tower's qkv product.
    /// The same values as `rotaryRotateHalf` on the q and then the k columns.
    public static func rotaryQK(_ qkv: Tensor, cos: Tensor, sin: Tensor, heads: Int, headDim: Int, rows range: Range<Int>) {
        let e = heads * headDim, n = qkv.count / max(1, 3 * e)
        precondition(qkv.count == n * 3 * e && cos.count == n * headDim && sin.count == n * headDim && range.upperBound <= n,
                     "rotary: qkv [\(n), 3·\(e)], cos/sin [\(n), \(headDim)], rows \(range)")
        let c = cos.pointer + range.lowerBound * headDim, s = sin.pointer + range.lowerBound * headDim
        let x = qkv.pointer + range.lowerBound * 3 * e
        rq_rope_rotate_half(x, c, s, range.count, heads, headDim, 3 * e)
        rq_rope_rotate_half(x + e, c, s, range.count, heads, headDim, 3 * e)
    }

    /// Rotary embedding, rotate-half form, in place: x [rows, heads·headDim] (rows `rowStride`
    /// floats apart), cos/sin [rows, headDim].
    public static func rotaryRotateHalf(_ x: UnsafeMutablePointer<Float>, cos: Tensor, sin: Tensor, rows: Int, heads: Int,
                                        headDim: Int, rowStride: Int, pool: ThreadPool = .shared) {
        precondition(cos.count == rows * headDim && sin.count == rows * headDim, "rotary: cos/sin must be [\(rows), \(headDim)]")
        pool.parallelRanges(rows, grain: 8) { r in
            rq_rope_rotate_half(x + r.lowerBound * rowStride, cos.pointer + r.lowerBound * headDim,
                                sin.pointer + r.lowerBound * headDim, r.count, heads, headDim, rowStride)
        }
    }
}
