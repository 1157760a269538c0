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

    public func withBuffer<R>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        let buffer = take(max(64, bytes))
        defer { give(buffer) }
        return try body(buffer.pointer)
    }

    /// `count` UInt16 values.
    public func withHalfs<R>(_ count: Int, _ body: (UnsafeMutablePointer<UInt16>) throws -> R) rethrows -> R {
        try withBuffer(bytes: count * 2) { try body($0.assumingMemoryBound(to: UInt16.self)) }
    }

    private func take(_ bytes: Int) -> (bytes: Int, pointer: UnsafeMutableRawPointer) {
        lock.lock()
        if let i = free.indices.filter({ free[$0].bytes >= bytes }).min(by: { free[$0].bytes < free[$1].bytes }) {
            let b = free.remove(at: i)
            lock.unlock()
            return b
        }
        lock.unlock()
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
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
