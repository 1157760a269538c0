import CDNNL
import CKernels
import COpenBLAS
import Foundation

/// Matrix products with checkpoint weights laid out as PyTorch's nn.Linear stores them
/// (W [out, in]): y [M, N] = x [M, K] · Wᵀ (+ bias).
///
/// f32 weights go to OpenBLAS. bf16 weights stay bf16 and the activations are rounded to bf16
/// (as PyTorch computes a bf16 model), with f32 accumulation: few rows (decoding) use the bf16
/// GEMV kernels, which read each weight once per step; many rows (prefill, vision) use oneDNN
/// where it has bf16 products (AVX-512), else OpenBLAS on the same bf16 values widened to f32.
public enum Linear {
    /// Rows at or below this count use the GEMV kernels rather than a GEMM.
    public static let gemvRows = 8

    public static func forward(_ x: Tensor, _ w: WeightTensor, bias: Tensor? = nil,
                               pool: ThreadPool = .shared) throws -> Tensor {
        let m = x.count / max(1, x.shape.last ?? 1)
        let y = try Tensor(zeros: Array(x.shape.dropLast()) + [w.shape[0]], what: "linear output")
        try forward(x, w, bias: bias, into: y, rows: m, pool: pool)
        return y
    }

    /// Writes x · Wᵀ (+ bias) into `y` ([rows, N], contiguous). `rowwise`: each row's result is
    /// exactly what a one-row product gives (batched decoding: a sequence's tokens do not depend
    /// on the batch it shares a step with), whatever the row count.
    public static func forward(_ x: Tensor, _ w: WeightTensor, bias: Tensor? = nil, into y: Tensor,
                               rows m: Int, rowwise: Bool = false, pool: ThreadPool = .shared) throws {
        guard w.shape.count == 2 else { throw TensorError.shapeMismatch(operation: "linear \(w.name)", expected: "[out, in]", got: "\(w.shape)") }
        let n = w.shape[0], k = w.shape[1]
        guard x.count == m * k else { throw TensorError.shapeMismatch(operation: "linear \(w.name)", expected: "[\(m), \(k)]", got: "\(x.shape)") }
        guard y.count == m * n else { throw TensorError.shapeMismatch(operation: "linear \(w.name) output", expected: "[\(m), \(n)]", got: "\(y.shape)") }
        if let bias, bias.count != n { throw TensorError.shapeMismatch(operation: "linear \(w.name) bias", expected: "[\(n)]", got: "\(bias.shape)") }
        switch w.dtype {
        case .f32 where rowwise:
            // One product per row: what a one-row call computes (OpenBLAS's order depends on m).
            for r in 0..<m {
                sgemm(m: 1, n: n, k: k, a: x.pointer + r * k, b: w.pointer.assumingMemoryBound(to: Float.self), c: y.pointer + r * n)
            }
        case .f32:
            sgemm(m: m, n: n, k: k, a: x.pointer, b: w.pointer.assumingMemoryBound(to: Float.self), c: y.pointer)
        case .bf16 where m <= gemvRows || rowwise:
            // The GEMV kernels give each row the arithmetic of a one-row product, for any row count.
            try gemvBF16(x: x.pointer, batch: m, w: w.pointer.assumingMemoryBound(to: UInt16.self), rows: n, cols: k, y: y.pointer, pool: pool)
        case .bf16:
            try gemmBF16(x: x.pointer, m: m, k: k, w: w, n: n, y: y.pointer, pool: pool)
        case .f16 where m <= gemvRows || rowwise:
            let wp = w.pointer.assumingMemoryBound(to: UInt16.self)
            for b in 0..<m {
                let xb = x.pointer + b * k, yb = y.pointer + b * n
                pool.parallelRanges(n, grain: 64) { r in rq_gemv_f16(wp, xb, yb, k, r.lowerBound, r.upperBound) }
            }
        case .f16:
            // No f16 matmul on this CPU class: widen the weight for this product.
            let wide = try w.toF32()
            sgemm(m: m, n: n, k: k, a: x.pointer, b: wide.pointer, c: y.pointer)
        default:
            throw TensorError.unsupportedDType(operation: "linear \(w.name)", dtype: w.dtype.rawValue)
        }
        if let bias {
            pool.parallelRanges(m, grain: 16) { r in rq_add_bias(y.pointer + r.lowerBound * n, bias.pointer, r.count, n) }
        }
    }

    /// The weight with a copy in oneDNN's blocked layout for products of many rows (`rows` is
    /// a typical row count). Products of ≤ `gemvRows` rows still read the original. bf16 only;
    /// other dtypes are returned as they are.
    public static func pack(_ w: WeightTensor, rows: Int = 1024) throws -> WeightTensor {
        guard w.dtype == .bf16, w.shape.count == 2, w.packed == nil, OneDNN.shared.bf16Products else { return w }
        let n = w.shape[0], k = w.shape[1]
        let p = try OneDNN.shared.pack(bf16: w.pointer, k: k, n: n, rows: rows)
        var packed = w
        packed.packed = PackedWeight(desc: p.desc, bytes: p.bytes, size: p.size, key: "packed[\(k)x\(n)@\(rows)]")
        // The original stays readable (small products use it) but need not stay resident.
        w.releasePages()
        return packed
    }

    /// C [m, n] = A [m, k] · Bᵀ with B [n, k], row-major, through OpenBLAS.
    public static func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                             c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(k), 0, c, Int32(n))
    }

    /// bf16 weights × a few vectors (rounded to bf16): each weight row is read once for all of
    /// them, rows split over threads.
    static func gemvBF16(x: UnsafePointer<Float>, batch: Int, w: UnsafePointer<UInt16>, rows: Int, cols: Int,
                         y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        try ScratchPool.shared.withHalfs(batch * cols) { xb in
            rq_f32_to_bf16(x, xb, batch * cols)
            pool.parallelRanges(rows, grain: 64) { r in
                rq_gemm_small_bf16(w, xb, y, batch, rows, cols, r.lowerBound, r.upperBound)
            }
        }
    }

    /// bf16 GEMM through oneDNN: activations rounded to bf16, weights read in place, f32 out.
    static func gemmBF16(x: UnsafePointer<Float>, m: Int, k: Int, w: WeightTensor, n: Int,
                         y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        guard OneDNN.shared.bf16Products else {
            return try gemmBF16Widened(x: x, m: m, k: k, w: w.pointer.assumingMemoryBound(to: UInt16.self), n: n, y: y, pool: pool)
        }
        try ScratchPool.shared.withHalfs(m * k) { xb in
            pool.parallelRanges(m * k, grain: 1 << 15) { r in rq_f32_to_bf16(x + r.lowerBound, xb + r.lowerBound, r.count) }
            try OneDNN.shared.matmul(
                src: .init(dims: [m, k], strides: [k, 1], type: dnnl_bf16, pointer: UnsafeMutableRawPointer(xb)),
                weights: w.packed.map { .init(packed: $0.desc, key: $0.key, pointer: $0.bytes) }
                    ?? .init(dims: [k, n], strides: [1, k], type: dnnl_bf16, pointer: UnsafeMutableRawPointer(mutating: w.pointer)),
                dst: .init(dims: [m, n], strides: [n, 1], type: dnnl_f32, pointer: UnsafeMutableRawPointer(y)))
        }
    }

    /// The same product where oneDNN has no bf16 matmul: activations rounded to bf16, then both
    /// operands widened to f32 (exactly) for OpenBLAS — bf16 inputs, f32 accumulation, as above.
    static func gemmBF16Widened(x: UnsafePointer<Float>, m: Int, k: Int, w: UnsafePointer<UInt16>, n: Int,
                                y: UnsafeMutablePointer<Float>, pool: ThreadPool) throws {
        try ScratchPool.shared.withBuffer(bytes: (m + n) * k * 4) { raw in
            let xf = raw.assumingMemoryBound(to: Float.self), wf = xf + m * k
            try ScratchPool.shared.withHalfs(m * k) { xb in
                pool.parallelRanges(m * k, grain: 1 << 15) { r in
                    rq_f32_to_bf16(x + r.lowerBound, xb + r.lowerBound, r.count)
                    rq_bf16_to_f32(xb + r.lowerBound, xf + r.lowerBound, r.count)
                }
            }
            pool.parallelRanges(n * k, grain: 1 << 15) { r in rq_bf16_to_f32(w + r.lowerBound, wf + r.lowerBound, r.count) }
            sgemm(m: m, n: n, k: k, a: xf, b: wf, c: y)
        }
    }
}
