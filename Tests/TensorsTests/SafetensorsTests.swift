import Foundation
import Testing
@testable import Tensors

/// Loading checkpoints written by the `safetensors` Python package, and refusing bad ones.
@Suite struct SafetensorsTests {
    static let checkpoint = Reference.root.appendingPathComponent("checkpoint").path

    @Test func shardedCheckpointLoads() throws {
        let ck = try Checkpoint(directory: Self.checkpoint)
        #expect(ck.files.count == 2)
        #expect(ck.names == ["model.layers.0.bias", "model.layers.0.weight", "model.norm.weight", "model.position_ids"])
        let values = try Reference.values("checkpoint_values") // [6, 5] f32

        let w = try ck.tensor("model.layers.0.weight")
        #expect(w.dtype == .bf16 && w.shape == [6, 5])
        #expect(try w.toF32().values == values.map { Float(bitPattern: UInt32(Convert.bf16([$0])[0]) << 16) })

        let b = try ck.tensor("model.layers.0.bias")
        #expect(b.dtype == .f16 && b.shape == [5])
        #expect(try b.toF32().values == values[0..<5].map { Float(Float16($0)) })

        let n = try ck.tensor("model.norm.weight")
        #expect(n.dtype == .f32 && n.shape == [5])
        #expect(try n.toF32().values == Array(values[5..<10]))

        let ids = try ck.tensor("model.position_ids")
        #expect(ids.dtype == .i64 && ids.shape == [1, 7])
        let raw = UnsafeBufferPointer(start: ids.pointer.assumingMemoryBound(to: Int64.self), count: 7)
        #expect(Array(raw) == [0, 1, 2, 3, 4, 5, 6])
        #expect(throws: TensorError.self) { try ids.toF32() }

        #expect(ck.files[0].metadata["format"] == "pt")
        #expect(throws: TensorError.missingTensor(name: "nope", checkpoint: Self.checkpoint)) { try ck.tensor("nope") }
    }

    /// A file from bytes, for the malformed cases.
    static func file(header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) throws -> String {
        var bytes = [UInt8]()
        let h = Array(header.utf8)
        let n = lengthOverride ?? UInt64(h.count)
        for i in 0..<8 { bytes.append(UInt8((n >> (8 * UInt64(i))) & 0xff)) }
        bytes += h + data
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString).safetensors").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func rejects(_ header: String, data: [UInt8] = [], length: UInt64? = nil, mentioning fragment: String, tensor: String? = nil) throws {
        let path = try Self.file(header: header, data: data, lengthOverride: length)
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted: \(header)")
        } catch let TensorError.invalidSafetensors(p, t, reason) {
            #expect(p == path)
            #expect(reason.contains(fragment), "\(reason)")
            if let tensor { #expect(t == tensor) }
        }
    }

    @Test func malformedFilesAreErrorsNamingTheTensor() throws {
        let ok = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        try rejects(ok, data: [UInt8](repeating: 0, count: 4), mentioning: "past the", tensor: "a")           // truncated data
        try rejects(ok, data: [UInt8](repeating: 0, count: 8), length: 1 << 40, mentioning: "exceeds")         // absurd header length
        try rejects(ok, data: [UInt8](repeating: 0, count: 8), length: 200, mentioning: "past the end")        // header longer than file
        try rejects("{not json", mentioning: "not valid")
        try rejects(#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8), mentioning: "unknown dtype", tensor: "a")
        try rejects(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 12), mentioning: "needs 12 bytes", tensor: "a")
        try rejects(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8), mentioning: "negative", tensor: "a")
        try rejects(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: .init(repeating: 0, count: 8), mentioning: "ascending", tensor: "a")
        try rejects(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    data: .init(repeating: 0, count: 12), mentioning: "overlaps", tensor: "b")
        // An empty tensor sorted between two overlapping ones hides nothing.
        try rejects(#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},"b":{"dtype":"U8","shape":[7],"data_offsets":[1,8]}}"#,
                    data: .init(repeating: 0, count: 8), mentioning: "overlaps 'a'", tensor: "b")
        try rejects(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8), mentioning: "overflows", tensor: "a")
        try rejects(#"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#, data: .init(repeating: 0, count: 8), mentioning: "not valid")
        try rejects(#"{"__metadata__":{"x":1}}"#, mentioning: "not valid")
        try rejects("", length: 0, mentioning: "too small")
    }

    @Test func emptyAndMissingFiles() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("empty-\(UUID().uuidString).safetensors").path
        _ = FileManager.default.createFile(atPath: path, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TensorError.self) { try SafetensorsFile(path: path) }
        #expect(throws: TensorError.fileNotFound(path: "/nonexistent/x.safetensors")) { try SafetensorsFile(path: "/nonexistent/x.safetensors") }
        #expect(throws: TensorError.self) { try Checkpoint(directory: "/nonexistent") }
    }

    /// Random damage to a valid file's header and length: parsing either throws or yields
    /// entries that all lie inside the file. It never crashes.
    @Test func mutatedHeadersNeverCrash() throws {
        let shard = Reference.root.appendingPathComponent("checkpoint/model-00001-of-00002.safetensors")
        let original = [UInt8](try Data(contentsOf: shard))
        let headerLength = Int(original[0]) | Int(original[1]) << 8
        var rng = SplitMix64(seed: 20261129)
        var accepted = 0, rejected = 0
        for round in 0..<6000 {
            var bytes = original
            switch round % 6 {
            case 0: // flip bytes in the header
                for _ in 0..<(1 + Int(rng.next() % 4)) { bytes[8 + Int(rng.next() % UInt64(headerLength))] ^= UInt8(rng.next() & 0xff) }
            case 1: // replace a digit
                let digits = (8..<(8 + headerLength)).filter { (48...57).contains(bytes[$0]) }
                bytes[digits[Int(rng.next() % UInt64(digits.count))]] = UInt8(48 + rng.next() % 10)
            case 2: // truncate anywhere
                bytes = Array(bytes[0..<Int(rng.next() % UInt64(bytes.count))])
            case 3: // damage the length field
                bytes[Int(rng.next() % 8)] = UInt8(rng.next() & 0xff)
            case 4: // insert a random byte into the header
                bytes.insert(UInt8(rng.next() & 0xff), at: 8 + Int(rng.next() % UInt64(headerLength)))
            default: // random garbage of random size
                bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(rng.next() & 0xff) }
            }
            let result = bytes.withUnsafeBytes { buffer in
                Result { try SafetensorsFile.parse(buffer, path: "fuzz") }
            }
            switch result {
            case .success(let header):
                accepted += 1
                for (_, e) in header.entries {
                    #expect(e.begin >= 0 && e.begin <= e.end && header.dataStart + e.end <= bytes.count)
                    #expect(e.end - e.begin == e.shape.reduce(1, *) * e.dtype.size)
                }
            case .failure(let error):
                rejected += 1
                #expect(error is TensorError)
            }
        }
        #expect(rejected > 1000 && accepted > 10, "accepted \(accepted), rejected \(rejected)")
    }
}

/// A small deterministic generator for the property test.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
