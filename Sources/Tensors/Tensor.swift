import Foundation

/// Element types of checkpoint tensors (safetensors names).
public enum DType: String, Sendable, Codable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var size: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// Types the kernels compute with; the others are read as metadata only.
    public var isComputable: Bool { self == .f32 || self == .bf16 || self == .f16 }
}

/// 64-byte aligned f32 memory owned by tensors (and shared by their views).
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    /// `count` floats, 64-byte aligned. A negative count, a byte size that overflows, or memory
    /// the system refuses is a `TensorError.allocationFailed` naming `what` and the size, never a
    /// crash (sizes often derive from input or configuration).
    public init(count: Int, zeroed: Bool = true, what: String = "a tensor") throws {
        guard count >= 0 else { throw TensorError.allocationFailed(what: what, size: "\(count) floats (negative)") }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        guard !overflow, bytes <= Int.max - 63 else {
            throw TensorError.allocationFailed(what: what, size: "\(count) floats (the byte size overflows)")
        }
        guard let raw = TensorStorage.allocate(count: count, zeroed: zeroed) else {
            throw TensorError.allocationFailed(what: what, size: "\(TensorStorage.byteSize(count)) bytes")
        }
        self.count = count
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 16))
    }

    static func byteSize(_ count: Int) -> Int { max(64, (count * MemoryLayout<Float>.size + 63) & ~63) }

    private static func allocate(count: Int, zeroed: Bool) -> UnsafeMutableRawPointer? {
        var raw: UnsafeMutableRawPointer? = nil
        let bytes = byteSize(count)
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { return nil }
        if zeroed { memset(raw, 0, bytes) }
        return raw
    }

    deinit { free(pointer) }
}

/// The element count of `shape`, or nil when a dimension is negative or the product overflows.
public func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        if overflow { return nil }
        n = p
    }
    return n
}

/// A contiguous row-major f32 tensor. Views (`rows`, `reshaped`) share storage with the tensor
/// they come from: writing through one is seen by the others, as with a buffer.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public let storage: TensorStorage
    public let offset: Int
    public let shape: [Int]

    /// A zero-filled tensor. A negative dimension, an overflowing size or a refused allocation
    /// throws `TensorError.allocationFailed` naming `what`.
    public init(zeros shape: [Int], what: String = "a tensor") throws {
        try self.init(checkedShape: shape, zeroed: true, what: what)
    }

    /// Scratch space, contents undefined until written; failures throw as `init(zeros:what:)`.
    public init(uninitialized shape: [Int], what: String = "a tensor") throws {
        try self.init(checkedShape: shape, zeroed: false, what: what)
    }

    private init(checkedShape shape: [Int], zeroed: Bool, what: String) throws {
        guard let count = checkedElementCount(shape) else {
            throw TensorError.allocationFailed(what: what, size: "shape \(shape) (negative or overflowing)")
        }
        do { storage = try TensorStorage(count: count, zeroed: zeroed, what: what) } catch TensorError.allocationFailed(_, let size) {
            throw TensorError.allocationFailed(what: "\(what) \(shape)", size: size)
        }
        offset = 0
        self.shape = shape
    }

    public init(shape: [Int], values: [Float]) throws {
        precondition(shape.reduce(1, *) == values.count, "\(values.count) values do not fill \(shape)")
        try self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    /// A view of `storage` from `offset` (in floats) with `shape`.
    public init(storage: TensorStorage, offset: Int, shape: [Int]) {
        precondition(offset >= 0 && offset + shape.reduce(1, *) <= storage.count, "view \(shape) at \(offset) outside \(storage.count) floats")
        self.storage = storage
        self.offset = offset
        self.shape = shape
    }

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer + offset }
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var values: [Float] { Array(buffer) }
    /// Elements per index of the first dimension.
    public var rowSize: Int { shape.dropFirst().reduce(1, *) }

    /// The same elements with another shape of equal size.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(storage: storage, offset: offset, shape: newShape)
    }

    /// A view of a range along the first dimension.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[0], "rows \(range) out of \(shape)")
        var s = shape
        s[0] = range.count
        return Tensor(storage: storage, offset: offset + range.lowerBound * rowSize, shape: s)
    }

    /// A deep copy.
    public func copy() throws -> Tensor {
        let t = try Tensor(uninitialized: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    public var description: String { "Tensor\(shape)" }
}
