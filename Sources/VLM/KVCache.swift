import Foundation
import Tensors

/// The keys and values of a shared prompt prefix: rows 0..<count of every layer, read — never
/// written — by every cache forked from it. The forks hold it; it is freed with the last of them
/// (and the cache it was filled in).
public final class KVPrefix: @unchecked Sendable {
    /// Per layer [≥ count, width]: the storage of the cache the prefix was filled in.
    let keys: [Tensor]
    let values: [Tensor]
    public let count: Int
    let width: Int

    init(keys: [Tensor], values: [Tensor], count: Int, width: Int) {
        self.keys = keys
        self.values = values
        self.count = count
        self.width = width
    }

    /// Bytes of the storage it holds.
    public var bytes: Int { (keys + values).reduce(0) { $0 + $1.storage.count * MemoryLayout<Float>.size } }
}

/// Keys and values of every layer for one sequence, preallocated for `capacity` positions.
/// `fork()` starts a sequence after what is filled so far (a shared prefix, to answer several
/// prompts about one clip): the fork reads the filled rows in place (`KVPrefix`) and owns only
/// the rows that follow.
public final class KVCache: @unchecked Sendable {
    /// Positions, the shared prefix included.
    public let capacity: Int
    let width: Int
    /// Rows 0..<prefix.count, shared with the other forks of the same cache.
    let prefix: KVPrefix?
    /// Own rows after the prefix, per layer [capacity − prefix rows, width].
    let keys: [Tensor]
    let values: [Tensor]
    /// Positions filled, the shared prefix included.
    public private(set) var count = 0
    private var shared: KVPrefix?
    private let lock = NSLock()

    /// Keys and values of `layers` layers for `capacity` positions. A size that overflows or
    /// memory the system refuses is a thrown `TensorError.allocationFailed`, not a crash.
    public convenience init(layers: Int, capacity: Int, width: Int) throws {
        try self.init(layers: layers, own: capacity, width: width, prefix: nil)
    }

    private init(layers: Int, own: Int, width: Int, prefix: KVPrefix?) throws {
        guard layers >= 0 else { throw TensorError.allocationFailed(what: "KV cache", size: "\(layers) layers") }
        let base = prefix?.count ?? 0
        let (capacity, overflow) = own.addingReportingOverflow(base)
        guard own >= 0, !overflow else { throw TensorError.allocationFailed(what: "KV cache", size: "\(base) + \(own) positions") }
        self.capacity = capacity
        self.width = width
        self.prefix = prefix
        keys = try (0..<layers).map { _ in try Tensor(uninitialized: [own, width], what: "KV cache keys") }
        values = try (0..<layers).map { _ in try Tensor(uninitialized: [own, width], what: "KV cache values") }
        count = base
    }

    /// Rows of the shared prefix (0 without one).
    var base: Int { prefix?.count ?? 0 }
    /// Rows filled after the shared prefix.
    var ownCount: Int { count - base }

    /// A cache that continues from what is filled so far, with room for `extra` more positions.
    /// The filled rows are shared, not copied (the fork of a fork shares the same prefix and
    /// copies only the rows its parent added after it); writing past them later never changes
    /// what a fork reads.
    public func fork(extra: Int) throws -> KVCache {
        let (_, overflow) = count.addingReportingOverflow(extra)
        guard extra >= 0, !overflow else {
            throw TensorError.allocationFailed(what: "KV cache", size: "\(count) + \(extra) positions")
        }
        guard let p = try sharedPrefix() else {
            return try KVCache(layers: keys.count, own: extra, width: width, prefix: nil)
        }
        // Rows to copy: those after the shared prefix (none when all filled rows are in it).
        let own = p === prefix ? ownCount : 0
        let c = try KVCache(layers: keys.count, own: own + extra, width: width, prefix: p)
        for l in keys.indices {
            c.keys[l].pointer.update(from: keys[l].pointer, count: own * width)
            c.values[l].pointer.update(from: values[l].pointer, count: own * width)
        }
        c.count = count
        return c
    }

    /// The prefix forks share: this cache's own prefix when it has one, else its filled rows (one
    /// object for all forks made at the same count). Nil when nothing is filled.
    private func sharedPrefix() throws -> KVPrefix? {
        if let prefix { return prefix }
        guard count > 0 else { return nil }
        lock.lock()
        defer { lock.unlock() }
        if let s = shared, s.count == count { return s }
        let s = KVPrefix(keys: keys, values: values, count: count, width: width)
        shared = s
        return s
    }

    func advance(_ n: Int) { count += n }

    /// Bytes this cache holds for its own keys and values (a shared prefix is not counted:
    /// `bytes(of:)` counts each once).
    public var bytes: Int { 2 * keys.count * (capacity - base) * width * MemoryLayout<Float>.size }

    /// Bytes held by `caches` together: their own rows, and each shared prefix's storage once
    /// (also when forks made at different fill levels of one cache share it).
    public static func bytes(of caches: [KVCache]) -> Int {
        var seen = Set<ObjectIdentifier>()
        var total = 0
        for c in caches {
            total += c.bytes
            guard let p = c.prefix else { continue }
            let storage = p.keys.first.map { ObjectIdentifier($0.storage) } ?? ObjectIdentifier(p)
            if seen.insert(storage).inserted { total += p.bytes }
        }
        return total
    }
}

/// Which cache each row of one decoder pass belongs to: the first `rows[0]` rows to
/// `caches[0]`, the next `rows[1]` to `caches[1]`, … A prefill or a single sequence's step is one
/// segment; a batched decoding step is one row for each sequence's cache.
public struct CacheSegments {
    public let caches: [KVCache]
    public let rows: [Int]
    public var total: Int { rows.reduce(0, +) }

    public init(_ cache: KVCache, rows: Int) {
        caches = [cache]
        self.rows = [rows]
    }

    /// `rows[i]` rows for `caches[i]` (several continuations in one pass).
    public init(_ caches: [KVCache], rows: [Int]) {
        self.caches = caches
        self.rows = rows
    }

    /// One row for each cache (a step of batched decoding).
    public init(oneRowEach caches: [KVCache]) {
        self.caches = caches
        rows = Array(repeating: 1, count: caches.count)
    }

    /// The single cache of a one-segment pass (its keys and values are written in place).
    var single: KVCache? { caches.count == 1 ? caches[0] : nil }

    /// Every cache fits this model (`layers` × `width`) and has room for its rows.
    func check(rows t: Int, layers: Int, width: Int) throws {
        guard !caches.isEmpty, caches.count == rows.count, total == t, rows.allSatisfy({ $0 >= 1 }) else {
            throw VLMError.invalidInput("\(t) decoder rows do not split into the segments \(rows)")
        }
        for (cache, n) in zip(caches, rows) {
            guard cache.width == width, cache.keys.count == layers else {
                throw VLMError.invalidInput("the KV cache (\(cache.keys.count) layers × \(cache.width)) is not this model's (\(layers) × \(width))")
            }
            guard cache.count + n <= cache.capacity else {
                throw VLMError.invalidInput("the KV cache holds \(cache.capacity) positions; \(cache.count + n) needed")
            }
        }
        guard Set(caches.map(ObjectIdentifier.init)).count == caches.count else {
            throw VLMError.invalidInput("one KV cache appears twice in a decoder pass")
        }
    }

    /// Keys and values [t, width] of layer `l` for the pass's new rows: in place in the cache of a
    /// single segment, else in `k`/`v` (copied to each cache by `attend`).
    func newRows(layer l: Int, k: Tensor, v: Tensor) -> (k: Tensor, v: Tensor) {
        guard let c = single else { return (k, v) }
        let n = rows[0]
        return (Tensor(storage: c.keys[l].storage, offset: c.ownCount * c.width, shape: [n, c.width]),
                Tensor(storage: c.values[l].storage, offset: c.ownCount * c.width, shape: [n, c.width]))
    }

    /// Causal attention of each segment's queries (rows of `q` [t, heads·headDim]) over its own
    /// cache: what was there before this pass plus its new rows of `k`/`v` (`newRows`).
    ///
    /// A segment of one row whose cache is a fork (a decoding step after a shared prefix) runs
    /// `Attention.sharedPrefix`: all such rows of one prefix read its keys and values once, and
    /// every row's arithmetic is the same in a pass of its own. Other segments (a prefill, a
    /// continuation of several tokens) run `Attention.forward` over their keys and values.
    func attend(layer l: Int, q: Tensor, k: Tensor, v: Tensor, heads: Int, kvHeads: Int, headDim hd: Int,
                precision: AttentionPrecision, scratch: AttentionScratch, into out: Tensor, pool: ThreadPool) throws -> Tensor {
        let kvw = kvHeads * hd, qw = heads * hd
        if let c = single, c.prefix == nil {
            let n = rows[0], past = c.count
            return try Attention.forward(q: q, k: Tensor(storage: c.keys[l].storage, offset: 0, shape: [past + n, kvw]),
                                         v: Tensor(storage: c.values[l].storage, offset: 0, shape: [past + n, kvw]),
                                         heads: heads, kvHeads: kvHeads, headDim: hd, mask: .causal(offset: past),
                                         precision: precision, scratch: scratch, into: out, pool: pool)
        }
        var groups: [(prefix: KVPrefix, rows: [Attention.PrefixQuery])] = []
        var row = 0
        for (c, n) in zip(caches, rows) {
            let own = c.ownCount
            if single == nil {
                (c.keys[l].pointer + own * kvw).update(from: k.pointer + row * kvw, count: n * kvw)
                (c.values[l].pointer + own * kvw).update(from: v.pointer + row * kvw, count: n * kvw)
            }
            let query = Tensor(storage: q.storage, offset: q.offset + row * qw, shape: [n, qw])
            if let p = c.prefix, n == 1 {
                let r = Attention.PrefixQuery(q: query.pointer, out: out.pointer + row * qw, keys: c.keys[l].pointer,
                                              values: c.values[l].pointer, ownCount: own + 1)
                if let i = groups.firstIndex(where: { $0.prefix === p }) { groups[i].rows.append(r) } else { groups.append((p, [r])) }
            } else {
                try Self.attendAlone(c, layer: l, q: query, rows: n, heads: heads, kvHeads: kvHeads, headDim: hd, precision: precision,
                                     scratch: scratch, into: Tensor(storage: out.storage, offset: out.offset + row * qw, shape: [n, qw]),
                                     pool: pool)
            }
            row += n
        }
        for group in groups {
            try Attention.sharedPrefix(keys: group.prefix.keys[l].pointer, values: group.prefix.values[l].pointer,
                                       prefixCount: group.prefix.count, rows: group.rows, heads: heads, kvHeads: kvHeads,
                                       headDim: hd, pool: pool)
        }
        return out
    }

    /// Causal attention of `n` new rows (already in the cache's own rows) over all of `c`'s keys
    /// and values, as one `Attention.forward` into `out` [n, heads·headDim]: in place without a
    /// shared prefix, else over a contiguous copy of the prefix and the own rows.
    private static func attendAlone(_ c: KVCache, layer l: Int, q: Tensor, rows n: Int, heads: Int, kvHeads: Int, headDim hd: Int,
                                    precision: AttentionPrecision, scratch: AttentionScratch, into out: Tensor,
                                    pool: ThreadPool) throws {
        let kvw = kvHeads * hd, past = c.count, total = past + n
        guard let p = c.prefix else {
            _ = try Attention.forward(q: q, k: Tensor(storage: c.keys[l].storage, offset: 0, shape: [total, kvw]),
                                      v: Tensor(storage: c.values[l].storage, offset: 0, shape: [total, kvw]),
                                      heads: heads, kvHeads: kvHeads, headDim: hd, mask: .causal(offset: past),
                                      precision: precision, scratch: scratch, into: out, pool: pool)
            return
        }
        let (floats, overflow) = total.multipliedReportingOverflow(by: 2 * kvw)
        guard !overflow else { throw TensorError.allocationFailed(what: "KV rows", size: "\(total) × \(2 * kvw) floats") }
        let storage = try scratch.rows(floats)
        let keys = Tensor(storage: storage, offset: 0, shape: [total, kvw])
        let values = Tensor(storage: storage, offset: total * kvw, shape: [total, kvw])
        let own = total - p.count
        keys.pointer.update(from: p.keys[l].pointer, count: p.count * kvw)
        values.pointer.update(from: p.values[l].pointer, count: p.count * kvw)
        (keys.pointer + p.count * kvw).update(from: c.keys[l].pointer, count: own * kvw)
        (values.pointer + p.count * kvw).update(from: c.values[l].pointer, count: own * kvw)
        _ = try Attention.forward(q: q, k: keys, v: values, heads: heads, kvHeads: kvHeads, headDim: hd, mask: .causal(offset: past),
                                  precision: precision, scratch: scratch, into: out, pool: pool)
    }

    /// After the pass: every cache holds its new rows.
    func advance() { for (c, n) in zip(caches, rows) { c.advance(n) } }
}
