import CKernels
import Foundation

extension Attention {
    /// One decoding row of a sequence whose keys and values are a shared prefix (read by every
    /// sequence forked from it) followed by rows of its own.
    public struct PrefixQuery {
        /// The row's queries [heads·D] and where its attention output goes [heads·D].
        public var q: UnsafePointer<Float>
        public var out: UnsafeMutablePointer<Float>
        /// The sequence's own keys and values after the prefix [ownCount, kvHeads·D], its new
        /// row (this one's key and value) included: the row attends to all of them.
        public var keys: UnsafePointer<Float>
        public var values: UnsafePointer<Float>
        public var ownCount: Int

        public init(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, keys: UnsafePointer<Float>,
                    values: UnsafePointer<Float>, ownCount: Int) {
            self.q = q
            self.out = out
            self.keys = keys
            self.values = values
            self.ownCount = ownCount
        }
    }

    /// Scratch floats per job for the prefix part's scores (more queries are split into jobs
    /// that read the prefix again; a query's result does not change).
    public static let prefixScoreBudget = 1 << 20

    /// Attention of one decoding row of each of several sequences that share a prefix of
    /// `prefixCount` keys and values ([prefixCount, kvHeads·D]): per key/value head, the prefix
    /// rows are read once for the query heads of every sequence (a split softmax: max, sum of
    /// exponentials and weighted values per query), each sequence's own rows once for its own
    /// query heads, and the two parts joined exactly (flash-decoding). A row's arithmetic is the
    /// same whichever sequences share the pass (`rq_attend_partial` does not depend on how many
    /// queries it serves), so batching changes no output bit. f32 throughout.
    public static func sharedPrefix(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, prefixCount: Int,
                                    rows: [PrefixQuery], heads: Int, kvHeads: Int, headDim d: Int, scale: Float? = nil,
                                    maxScoreFloats: Int = prefixScoreBudget, pool: ThreadPool = .shared) throws {
        guard kvHeads > 0, d > 0, heads % kvHeads == 0, prefixCount >= 0, rows.allSatisfy({ $0.ownCount >= 1 }) else {
            throw TensorError.shapeMismatch(operation: "shared-prefix attention",
                                            expected: "heads a multiple of kvHeads, a prefix of ≥ 0 rows, ≥ 1 own row per sequence",
                                            got: "heads \(heads), kvHeads \(kvHeads), headDim \(d), prefix \(prefixCount), own rows \(rows.map(\.ownCount))")
        }
        guard !rows.isEmpty else { return }
        let g = heads / kvHeads, kvw = kvHeads * d
        let scale = scale ?? 1 / Float(d).squareRoot()
        // Whole sequences per job, as many as the score budget holds.
        let perJob = max(1, min(rows.count, maxScoreFloats / (g * (prefixCount + 32))))
        let chunks = (rows.count + perJob - 1) / perJob
        let longestOwn = rows.map(\.ownCount).max() ?? 1
        let nq = perJob * g
        // Per job: gathered queries, the prefix part (acc, m, s), one sequence's own part, scores.
        // (`rq_attend_partial` pads each query's scores to n_keys + 32 floats.)
        let (scoreFloats, o1) = (nq * (prefixCount + 32)).addingReportingOverflow(g * (longestOwn + 32))
        let (floats, o2) = scoreFloats.addingReportingOverflow(2 * nq * d + 2 * nq + g * d + 2 * g)
        guard !o1, !o2 else { throw TensorError.allocationFailed(what: "shared-prefix attention scratch", size: "overflow") }
        let jobs = kvHeads * chunks, workers = min(max(1, pool.threads), jobs)
        try ScratchPool.shared.withBuffer(bytes: workers * floats * MemoryLayout<Float>.size) { raw in
            let base = raw.assumingMemoryBound(to: Float.self)
            pool.parallelRanges(workers, grain: 1) { range in
                for w in range {
                    // Worker w's own scratch; it takes jobs w, w + workers, …
                    let scratch = base + w * floats
                    let q = scratch, acc = q + nq * d, m = acc + nq * d, s = m + nq
                    let acc2 = s + nq, m2 = acc2 + g * d, s2 = m2 + g, scores = s2 + g
                    for job in stride(from: w, to: jobs, by: workers) {
                        let kv = job / chunks, chunk = job % chunks
                        let members = rows[(chunk * perJob)..<min(rows.count, (chunk + 1) * perJob)]
                        for (i, r) in members.enumerated() {
                            (q + i * g * d).update(from: r.q + kv * g * d, count: g * d)
                        }
                        rq_attend_partial(q, members.count * g, keys + kv * d, values + kv * d, kvw, prefixCount, d, scale,
                                          scores, acc, m, s)
                        for (i, r) in members.enumerated() {
                            rq_attend_partial(q + i * g * d, g, r.keys + kv * d, r.values + kv * d, kvw, r.ownCount, d, scale,
                                              scores, acc2, m2, s2)
                            rq_attend_merge(acc + i * g * d, m + i * g, s + i * g, acc2, m2, s2, g, d, r.out + kv * g * d)
                        }
                    }
                }
            }
        }
    }
}
