import Foundation
@testable import Tensors

/// Inputs and reference outputs of fixtures/scripts/reference_kernels.py.
enum Reference {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/reference/kernels")

    /// The script's `pattern(n, seed, scale)`, bit for bit:
    /// ((i·7919 + seed·104729) mod 2003 − 1001) / 1001 · scale in float32.
    static func pattern(_ n: Int, seed: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { i in (Float((i * 7919 + seed * 104729) % 2003 - 1001) / Float(1001)) * scale }
    }

    static func tensor(_ shape: [Int], seed: Int, scale: Float = 1) throws -> Tensor {
        try Tensor(shape: shape, values: pattern(shape.reduce(1, *), seed: seed, scale: scale))
    }

    static func values(_ name: String) throws -> [Float] {
        let data = try Data(contentsOf: root.appendingPathComponent("\(name).f32"))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    static func bf16Weight(_ name: String, _ values: [Float], shape: [Int]) -> WeightTensor {
        let bits = Convert.bf16(values)
        return WeightTensor(name: name, dtype: .bf16, shape: shape, data: bits.withUnsafeBytes { Data($0) })
    }

    static func f32Weight(_ name: String, _ values: [Float], shape: [Int]) -> WeightTensor {
        WeightTensor(name: name, dtype: .f32, shape: shape, data: values.withUnsafeBytes { Data($0) })
    }
}

/// max |a − b| over max |b| (0 when both are all zero).
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
    var maxDiff = 0.0, maxRef = 0.0
    for (x, y) in zip(a, b) {
        if x.isNaN || y.isNaN { return .infinity }
        maxDiff = max(maxDiff, abs(Double(x) - Double(y)))
        maxRef = max(maxRef, abs(Double(y)))
    }
    return maxRef == 0 ? maxDiff : maxDiff / maxRef
}

/// The largest |a − b| where |b| is tiny, else the relative difference, over all elements.
func elementError(_ a: [Float], _ b: [Float], floor: Double = 1e-6) -> Double {
    precondition(a.count == b.count)
    var worst = 0.0
    for (x, y) in zip(a, b) {
        if x.isNaN != y.isNaN { return .infinity }
        if x.isInfinite || y.isInfinite { if x != y { return .infinity }; continue }
        worst = max(worst, abs(Double(x) - Double(y)) / max(floor, abs(Double(y))))
    }
    return worst
}
