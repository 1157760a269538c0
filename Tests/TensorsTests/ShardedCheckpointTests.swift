import Foundation
import Testing
@testable import Tensors

/// Checkpoints in shards (model.safetensors.index.json): tensors found in their shard, an index
/// that lies is named, and the shards' headers together stay within one header's budget (six
/// hard links to one 99 MB header took minutes and gigabytes).
@Suite struct ShardedCheckpointTests {
    /// A directory with shards `one` (a, b) and `two` (c) and an index over `map`.
    func checkpoint(_ map: [String: String]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("shards-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (file, names) in [("one.safetensors", ["a", "b"]), ("two.safetensors", ["c"])] {
            let w = try SafetensorsWriter(path: dir + "/" + file, tensors: names.map { .init(name: $0, dtype: .f32, shape: [2]) })
            for (i, _) in names.enumerated() { try [Float(i), 1].withUnsafeBytes { try w.write($0) } }
            try w.close()
        }
        try JSONSerialization.data(withJSONObject: ["weight_map": map]).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        return dir
    }

    static let good = ["a": "one.safetensors", "b": "one.safetensors", "c": "two.safetensors"]

    @Test func tensorsComeFromTheirShards() throws {
        let dir = try checkpoint(Self.good)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try Checkpoint(directory: dir)
        #expect(c.names == ["a", "b", "c"])
        #expect(try c.tensor("b").toF32().values == [1, 1])
    }

    @Test(arguments: [["a": "one.safetensors", "c": "one.safetensors"], ["a": "../one.safetensors"], ["a": "three.safetensors"]])
    func lyingIndexesAreNamed(map: [String: String]) throws {
        let dir = try checkpoint(map)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: TensorError.self) { _ = try Checkpoint(directory: dir) }
    }

    @Test func theShardsHeadersShareOneBudget() throws {
        let dir = try checkpoint(Self.good)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try Checkpoint(directory: dir)
        let total = c.files.reduce(0) { $0 + $1.headerBytes }
        #expect(c.files.count == 2 && total > 0)
        _ = try Checkpoint(directory: dir, headerBudget: total)
        do {
            _ = try Checkpoint(directory: dir, headerBudget: total - 1)
            Issue.record("loaded past its budget")
        } catch TensorError.invalidIndex(let path, let reason) {
            #expect(path.hasSuffix("model.safetensors.index.json") && reason.contains("\(total - 1)"), "\(reason)")
        }
    }
}
