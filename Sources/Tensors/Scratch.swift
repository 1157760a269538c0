import Foundation

/// Reusable scratch memory for kernels' temporaries (bf16 copies of activations and the like).
///
/// Large allocations come straight from the kernel (mmap) and fault every page in again on each
/// call — for a 40 MB temporary that is as slow as the matrix product it serves. Buffers are
/// therefore kept and handed out again (the smallest that fits).
public final class ScratchPool: @unchecked Sendable {
    public static let shared = ScratchPool()
    private var free: [(bytes: Int, pointer: UnsafeMutableRawPointer)] = []
    private let lock = NSLock()
    /// At most this many idle buffers are kept.
    private let keep = 8

    /// `bytes` of scratch for the duration of `body`. Sizes follow the activations (token counts),
    /// so a refused allocation or a negative size throws `TensorError.allocationFailed`.
    public func withBuffer<R>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> R) throws -> R {
        guard bytes >= 0 else { throw TensorError.allocationFailed(what: "scratch memory", size: "\(bytes) bytes (negative)") }
        let buffer = try take(max(64, bytes))
        defer { give(buffer) }
        return try body(buffer.pointer)
    }

    /// `count` UInt16 values.
    public func withHalfs<R>(_ count: Int, _ body: (UnsafeMutablePointer<UInt16>) throws -> R) throws -> R {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: 2)
        guard !overflow else { throw TensorError.allocationFailed(what: "scratch memory", size: "\(count) 16-bit values (the byte size overflows)") }
        return try withBuffer(bytes: bytes) { try body($0.assumingMemoryBound(to: UInt16.self)) }
    }

    private func take(_ bytes: Int) throws -> (bytes: Int, pointer: UnsafeMutableRawPointer) {
        lock.lock()
        if let i = free.indices.filter({ free[$0].bytes >= bytes }).min(by: { free[$0].bytes < free[$1].bytes }) {
            let b = free.remove(at: i)
            lock.unlock()
            return b
        }
        lock.unlock()
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            throw TensorError.allocationFailed(what: "scratch memory", size: "\(bytes) bytes")
        }
        return (bytes, raw)
    }

    private func give(_ buffer: (bytes: Int, pointer: UnsafeMutableRawPointer)) {
        lock.lock()
        free.append(buffer)
        if free.count > keep {
            // Drop the smallest idle buffer.
            let i = free.indices.min { free[$0].bytes < free[$1].bytes }!
            Foundation.free(free.remove(at: i).pointer)
        }
        lock.unlock()
    }
}
