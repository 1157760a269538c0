import Foundation
import Testing
@testable import Tensors

/// Allocations sized by input or configuration throw instead of stopping the process.
@Suite struct CheckedAllocationTests {
    @Test func overflowingShapeThrowsNamingIt() {
        #expect(throws: TensorError.self) { _ = try Tensor(uninitialized: [1 << 40, 1 << 40], what: "KV cache") }
        do {
            _ = try Tensor(zeros: [Int.max / 2, 3], what: "KV cache")
            Issue.record("no error")
        } catch {
            let message = (error as? TensorError)?.errorDescription ?? ""
            #expect(message.contains("KV cache"), "\(message)")
            #expect(message.contains("\(Int.max / 2)"), "\(message)")
        }
    }

    @Test func countWhoseByteSizeOverflowsThrows() {
        #expect(throws: TensorError.self) { _ = try TensorStorage(count: Int.max / 2) }
        #expect(throws: TensorError.self) { _ = try TensorStorage(count: -1) }
        #expect(throws: TensorError.self) { _ = try Tensor(uninitialized: [-3, 4]) }
    }

    /// 4 EiB: no system grants it; the refusal is an error naming the byte count.
    @Test func refusedAllocationThrowsNamingTheBytes() {
        do {
            _ = try TensorStorage(count: 1 << 60, zeroed: false, what: "workspace")
            Issue.record("no error")
        } catch {
            let message = (error as? TensorError)?.errorDescription ?? ""
            #expect(message.contains("\(4 << 60) bytes"), "\(message)")
            #expect(message.contains("workspace"), "\(message)")
        }
    }

    @Test func scratchPoolRefusalThrows() {
        #expect(throws: TensorError.self) { try ScratchPool.shared.withBuffer(bytes: 1 << 62) { _ in () } }
        #expect(throws: TensorError.self) { try ScratchPool.shared.withHalfs(Int.max / 2 + 1) { _ in () } }
        #expect(throws: TensorError.self) { try ScratchPool.shared.withBuffer(bytes: -5) { _ in () } }
        // And ordinary sizes still work.
        #expect(throws: Never.self) { try ScratchPool.shared.withHalfs(1024) { $0[1023] = 7 } }
    }

    @Test func checkedTensorsAreUsable() throws {
        let t = try Tensor(zeros: [3, 5])
        #expect(t.values == [Float](repeating: 0, count: 15))
        let u = try Tensor(uninitialized: [0, 8])
        #expect(u.count == 0)
    }
}
