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

    /// A tensor written twice in the index or in a header: which one is meant is ambiguous
    /// (JSONDecoder kept the first, the reference the last). Names that are not file names.
    @Test func namesWrittenTwiceAreRefused() throws {
        for (map, text) in [(["a": "one.safetensors"], #", "a": "two.safetensors""#), (["a": ""], ""), (["a": "one.safetensors\u{0}x"], "")] {
            let dir = try checkpoint(Self.good.merging(map) { $1 })
            defer { try? FileManager.default.removeItem(atPath: dir) }
            if !text.isEmpty {
                let index = URL(fileURLWithPath: dir + "/model.safetensors.index.json")
                var json = try String(contentsOf: index, encoding: .utf8)
                let inner = try #require(json.range(of: "}")) // weight_map's own close comes first
                json.insert(contentsOf: text, at: inner.lowerBound)
                try json.write(to: index, atomically: true, encoding: .utf8)
            }
            #expect(throws: TensorError.self) { _ = try Checkpoint(directory: dir) }
        }
        // A header listing one name twice.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dup-\(UUID()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8) + [UInt8](repeating: 0, count: 8))
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("a header listing 'a' twice loaded")
        } catch TensorError.invalidSafetensors(_, let tensor, let reason) {
            #expect(tensor == "a" && reason.contains("twice"), "\(reason)")
        }
    }

    /// Two shards whose names are NFC and NFD spellings of one text are two files (they were
    /// taken for one, and the other's tensors were "not stored there").
    @Test func shardNamesAreTheirBytes() throws {
        let dir = try checkpoint(Self.good)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let nfc = "caf\u{E9}.safetensors", nfd = "cafe\u{301}.safetensors"
        try FileManager.default.moveItem(atPath: dir + "/one.safetensors", toPath: dir + "/" + nfc)
        try FileManager.default.moveItem(atPath: dir + "/two.safetensors", toPath: dir + "/" + nfd)
        try JSONSerialization.data(withJSONObject: ["weight_map": ["a": nfc, "b": nfc, "c": nfd]])
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        let c = try Checkpoint(directory: dir)
        #expect(c.files.count == 2 && c.names == ["a", "b", "c"])
        #expect(try c.tensor("c").toF32().values == [0, 1])
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
