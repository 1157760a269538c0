import CKernels
import Foundation

/// Conversions between the 16-bit float formats and f32.
public enum Convert {
    public static func toF32(_ w: WeightTensor, into dst: UnsafeMutablePointer<Float>) throws {
        let n = w.count
        switch w.dtype {
        case .f32: dst.update(from: w.pointer.assumingMemoryBound(to: Float.self), count: n)
        case .bf16: rq_bf16_to_f32(w.pointer.assumingMemoryBound(to: UInt16.self), dst, n)
        case .f16: rq_f16_to_f32(w.pointer.assumingMemoryBound(to: UInt16.self), dst, n)
        default: throw TensorError.unsupportedDType(operation: "conversion of '\(w.name)' to f32", dtype: w.dtype.rawValue)
        }
    }

    /// f32 → bf16, rounding to nearest even (as PyTorch's `.to(torch.bfloat16)`).
    public static func bf16(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutablePointer<UInt16>) {
        rq_f32_to_bf16(x, dst, count)
    }

    public static func bf16(_ values: [Float]) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { rq_f32_to_bf16(src.baseAddress!, $0.baseAddress!, values.count) } }
        return out
    }
}
