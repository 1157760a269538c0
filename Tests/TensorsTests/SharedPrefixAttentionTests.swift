import CKernels
import Foundation
import Testing
@testable import Tensors

/// `Attention.sharedPrefix` (a split softmax over a shared prefix and each sequence's own rows)
/// against plain attention over the joined keys, and bit for bit the same whatever other
/// sequences share its pass, on every instruction-set path this CPU has.
@Suite(.serialized) struct SharedPrefixAttentionTests {
    func values(_ n: Int, seed: Int) -> [Float] {
        (0..<n).map { i in Float(((i &* 7919 &+ seed &* 104_729) % 2003) - 1001) / 400 }
    }

    @Test(arguments: [(6, 2, 40, 37), (4, 4, 16, 0), (16, 8, 128, 300), (3, 1, 8, 1), (6, 2, 48, 37), (12, 2, 144, 33),
                      (12, 2, 128, 100), (2, 2, 128, 45)])
    func equalsAttentionOverJoinedKeysAndIgnoresCompanions(heads: Int, kvHeads: Int, d: Int, prefix: Int) throws {
        let kvw = kvHeads * d, qw = heads * d
        let own = [1, 3, 8, 2, 5]
        let prefixKeys = values(prefix * kvw, seed: 1), prefixValues = values(prefix * kvw, seed: 2)
        let ownKeys = own.enumerated().map { i, n in values(n * kvw, seed: 10 + i) }
        let ownValues = own.enumerated().map { i, n in values(n * kvw, seed: 20 + i) }
        let queries = own.indices.map { values(qw, seed: 30 + $0) }
        // Plain attention of each row over prefix + own keys (all visible).
        var reference: [[Float]] = []
        for i in own.indices {
            let q = try Tensor(shape: [1, qw], values: queries[i])
            let k = try Tensor(shape: [prefix + own[i], kvw], values: prefixKeys + ownKeys[i])
            let v = try Tensor(shape: [prefix + own[i], kvw], values: prefixValues + ownValues[i])
            reference.append(try Attention.forward(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: d, mask: .none).values)
        }
        let best = rq_set_cpu_level(-1)
        defer { rq_set_cpu_level(-1) }
        for level in 0...best {
            _ = rq_set_cpu_level(level)
            /// Outputs of the rows `members` in one pass (optionally with a small score budget).
            func run(_ members: [Int], budget: Int = Attention.prefixScoreBudget) throws -> [[Float]] {
                var outs = members.map { _ in [Float](repeating: .nan, count: qw) }
                try prefixKeys.withUnsafeBufferPointer { pk in try prefixValues.withUnsafeBufferPointer { pv in
                    var rows: [Attention.PrefixQuery] = []
                    var keep: [UnsafeMutablePointer<Float>] = []
                    defer { keep.forEach { $0.deallocate() } }
                    func copy(_ a: [Float]) -> UnsafeMutablePointer<Float> {
                        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, a.count))
                        p.initialize(from: a, count: a.count)
                        keep.append(p)
                        return p
                    }
                    let outputs = members.map { _ in copy([Float](repeating: .nan, count: qw)) }
                    for (j, i) in members.enumerated() {
                        rows.append(.init(q: copy(queries[i]), out: outputs[j], keys: copy(ownKeys[i]), values: copy(ownValues[i]),
                                          ownCount: own[i]))
                    }
                    try Attention.sharedPrefix(keys: pk.baseAddress ?? UnsafePointer(copy([])), values: pv.baseAddress ?? UnsafePointer(copy([])), prefixCount: prefix,
                                               rows: rows, heads: heads, kvHeads: kvHeads, headDim: d, maxScoreFloats: budget)
                    for j in members.indices { outs[j] = Array(UnsafeBufferPointer(start: outputs[j], count: qw)) }
                } }
                return outs
            }
            let alone = try own.indices.map { try run([$0])[0] }
            for i in own.indices {
                let worst = zip(alone[i], reference[i]).map { abs($0 - $1) }.max() ?? 0
                #expect(worst < 1e-5, "level \(level) row \(i): \(worst)")
            }
            #expect(try run(Array(own.indices)) == alone, "level \(level)")
            #expect(try run([4, 2, 0]) == [alone[4], alone[2], alone[0]], "level \(level)")
            // A budget of one sequence per job: the prefix is read again per sequence; same bits.
            #expect(try run(Array(own.indices), budget: 1) == alone, "level \(level)")
        }
    }

    @Test func badShapesThrow() throws {
        let x = [Float](repeating: 0, count: 64)
        try x.withUnsafeBufferPointer { p in
            let base = try #require(p.baseAddress)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: 64)
            defer { out.deallocate() }
            let row = Attention.PrefixQuery(q: base, out: out, keys: base, values: base, ownCount: 0)
            #expect(throws: TensorError.self) {
                try Attention.sharedPrefix(keys: base, values: base, prefixCount: 1, rows: [row], heads: 2, kvHeads: 1, headDim: 8)
            }
            #expect(throws: TensorError.self) {
                try Attention.sharedPrefix(keys: base, values: base, prefixCount: 1, rows: [], heads: 3, kvHeads: 2, headDim: 8)
            }
        }
    }
}
