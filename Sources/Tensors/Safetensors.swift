import Foundation

/// A read-only checkpoint tensor: its bytes stay in the mapped file (no copy), in the file's dtype.
public struct WeightTensor: @unchecked Sendable, CustomStringConvertible {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let pointer: UnsafeRawPointer
    /// Keeps the mapping (or other memory) alive.
    let owner: AnyObject
    /// The same weight reordered into oneDNN's blocked layout (see `Linear.pack`).
    var packed: PackedWeight?
    /// An int8 weight packed for reelql's VNNI GEMM (see `Linear.packInt8`).
    var vnni: VNNIPack?
    /// An int8 weight's per-row scales and sums (see `Linear.quantize`).
    var quantization: Int8Rows?

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * dtype.size }

    /// A weight that lives in memory rather than in a file (built in code, e.g. for benchmarks).
    public init(name: String, dtype: DType, shape: [Int], data: Data) {
        precondition(data.count == shape.reduce(1, *) * dtype.size, "\(data.count) bytes do not fill \(shape) of \(dtype)")
        let box = AlignedBytes(data)
        self.init(name: name, dtype: dtype, shape: shape, pointer: UnsafeRawPointer(box.pointer), owner: box)
    }

    init(name: String, dtype: DType, shape: [Int], pointer: UnsafeRawPointer, owner: AnyObject) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.pointer = pointer
        self.owner = owner
    }

    /// Lets the kernel drop this tensor's pages from memory when it lives in a mapped file (they are
    /// read again from the file if ever touched). For weights whose bytes were copied elsewhere.
    public func releasePages() {
        guard owner is MappedFile else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: pointer) + page - 1) / page * page
        let end = (Int(bitPattern: pointer) + byteCount) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, 4 /* MADV_DONTNEED */) }
    }

    /// The same bytes viewed with another shape of equal size (an int8 weight keeps its per-row
    /// scales when its rows stay the rows).
    public func reshaped(_ newShape: [Int]) -> WeightTensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(name) \(shape) to \(newShape)")
        var w = WeightTensor(name: name, dtype: dtype, shape: newShape, pointer: pointer, owner: owner)
        if newShape.first == shape.first { w.quantization = quantization }
        return w
    }

    /// The weight in another computable dtype (an in-memory copy; itself when already so).
    public func converted(to target: DType) throws -> WeightTensor {
        if target == dtype { return self }
        let f = try toF32()
        switch target {
        case .f32:
            return WeightTensor(name: name, dtype: .f32, shape: shape, data: Data(bytes: f.pointer, count: count * 4))
        case .bf16:
            var bits = [UInt16](repeating: 0, count: count)
            bits.withUnsafeMutableBufferPointer { Convert.bf16(f.pointer, count: count, into: $0.baseAddress!) }
            return WeightTensor(name: name, dtype: .bf16, shape: shape, data: bits.withUnsafeBytes { Data($0) })
        default:
            throw TensorError.unsupportedDType(operation: "conversion of '\(name)'", dtype: target.rawValue)
        }
    }

    /// The values as f32 (a copy).
    public func toF32() throws -> Tensor {
        let t = try Tensor(zeros: shape)
        try Convert.toF32(self, into: t.pointer)
        return t
    }

    public var description: String { "\(name) \(dtype.rawValue)\(shape)" }
}

final class AlignedBytes {
    let pointer: UnsafeMutableRawPointer
    /// Data callers build in code (small: a failed allocation here is a programming error).
    convenience init(_ data: Data) {
        do { try self.init(byteCount: data.count, what: "in-memory weight") } catch { preconditionFailure("\(error)") }
        data.withUnsafeBytes { if let b = $0.baseAddress { pointer.copyMemory(from: b, byteCount: data.count) } }
    }
    /// Uninitialised, 64-byte aligned memory; throws when the system has none to give.
    init(byteCount: Int, what: String) throws {
        var raw: UnsafeMutableRawPointer? = nil
        guard byteCount >= 0, posix_memalign(&raw, 64, max(64, byteCount)) == 0, let raw else {
            throw TensorError.allocationFailed(what: what, size: "\(byteCount) bytes")
        }
        pointer = raw
    }
    deinit { free(pointer) }
}

/// One `.safetensors` file: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the data. Everything is validated on open.
public final class SafetensorsFile: @unchecked Sendable {
    public struct Entry: Sendable, Equatable {
        public var dtype: DType
        public var shape: [Int]
        /// Byte range within the data section (after the header).
        public var begin: Int
        public var end: Int
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    let file: MappedFile
    let dataStart: Int

    public init(path: String) throws {
        file = try MappedFile(path: path)
        self.path = path
        let header = try SafetensorsFile.parse(file.bytes, path: path)
        entries = header.entries
        metadata = header.metadata
        dataStart = header.dataStart
    }

    public var names: [String] { entries.keys.sorted() }

    /// The most header bytes one file may have (Hugging Face's limit), and all the shards of a
    /// checkpoint together: each header is parsed whole, and a hundred million bytes of it take
    /// seconds and a gigabyte.
    public static let headerLimit = 100_000_000
    /// This file's header bytes.
    public var headerBytes: Int { dataStart - 8 }

    public func tensor(_ name: String) throws -> WeightTensor {
        guard let e = entries[name] else { throw TensorError.missingTensor(name: name, checkpoint: path) }
        return WeightTensor(name: name, dtype: e.dtype, shape: e.shape,
                            pointer: file.base + dataStart + e.begin, owner: file)
    }

    /// Parses and validates a whole file's bytes. Never reads outside `bytes`; every problem is a
    /// thrown `TensorError.invalidSafetensors` naming the file and, where one is at fault, the tensor.
    public static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws
        -> (entries: [String: Entry], metadata: [String: String], dataStart: Int) {
        func fail(_ reason: String, _ tensor: String? = nil) -> TensorError {
            .invalidSafetensors(path: path, tensor: tensor, reason: reason)
        }
        guard bytes.count >= 8 else { throw fail("\(bytes.count) bytes is too short for a header") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n >= 2 else { throw fail("header length \(n) is too small") }
        guard n <= UInt64(headerLimit) else { throw fail("header length \(n) exceeds the 100 MB limit") }
        guard n <= UInt64(bytes.count - 8) else {
            throw fail("header length \(n) runs past the end of the \(bytes.count)-byte file (truncated?)")
        }
        let headerLength = Int(n)
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        let json = Data(headerBytes)
        let raw: RawHeader
        do {
            raw = try JSONDecoder().decode(RawHeader.self, from: json)
        } catch let error as DecodingError {
            throw fail("header is not valid: \(describe(error))")
        } catch {
            throw fail("header is not valid JSON: \(error.localizedDescription)")
        }
        // A name listed twice: JSONDecoder keeps the first, the reference (Rust's serde) the last.
        if let (_, name) = JSONText.duplicateKey(in: json) { throw fail("listed twice in the header", name) }
        let dataStart = 8 + headerLength
        let dataSize = bytes.count - dataStart
        var entries: [String: Entry] = [:]
        for (name, t) in raw.tensors {
            guard let dtype = DType(rawValue: t.dtype) else { throw fail("unknown dtype '\(t.dtype)'", name) }
            guard t.shape.allSatisfy({ $0 >= 0 }) else { throw fail("negative dimension in shape \(t.shape)", name) }
            guard t.dataOffsets.count == 2 else { throw fail("data_offsets must hold 2 numbers, not \(t.dataOffsets.count)", name) }
            let begin = t.dataOffsets[0], end = t.dataOffsets[1]
            guard begin >= 0, begin <= end else { throw fail("data_offsets [\(begin), \(end)] are not an ascending range", name) }
            guard end <= dataSize else {
                throw fail("data_offsets end \(end) is past the \(dataSize)-byte data section (truncated?)", name)
            }
            var elements = 1
            for d in t.shape {
                let (m, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail("shape \(t.shape) overflows", name) }
                elements = m
            }
            let (bytesNeeded, overflow) = elements.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, bytesNeeded == end - begin else {
                throw fail("shape \(t.shape) of \(dtype.rawValue) needs \(overflow ? "too many" : String(bytesNeeded)) bytes but data_offsets hold \(end - begin)", name)
            }
            entries[name] = Entry(dtype: dtype, shape: t.shape, begin: begin, end: end)
        }
        // No two tensors may share bytes. Empty ones hold none and are left out: sorted between two
        // overlapping tensors, one would hide them. Among the others, sorted by start, any overlap
        // shows between neighbours.
        let sorted = entries.filter { $0.value.begin != $0.value.end }.sorted { ($0.value.begin, $0.value.end) < ($1.value.begin, $1.value.end) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.value.begin < a.value.end {
            throw fail("tensor overlaps '\(a.key)' (bytes \(b.value.begin)..<\(b.value.end) vs \(a.value.begin)..<\(a.value.end))", b.key)
        }
        return (entries, raw.metadata, dataStart)
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map(\.stringValue).joined(separator: ".")
            return p.isEmpty ? c.debugDescription : "\(p): \(c.debugDescription)"
        }
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): return path(c)
        case .keyNotFound(let key, let c):
            let p = c.codingPath.map(\.stringValue).joined(separator: ".")
            return "\(p.isEmpty ? "" : "tensor '\(p)': ")missing key '\(key.stringValue)'"
        @unknown default: return "\(error)"
        }
    }

    struct RawTensor: Decodable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]
        enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
    }

    struct RawHeader: Decodable {
        var tensors: [String: RawTensor] = [:]
        var metadata: [String: String] = [:]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            for key in c.allKeys {
                if key.stringValue == "__metadata__" {
                    metadata = try c.decode([String: String].self, forKey: key)
                } else {
                    tensors[key.stringValue] = try c.decode(RawTensor.self, forKey: key)
                }
            }
        }
    }
}

/// Named weights a model loads from: a checkpoint on disk, or weights built in memory.
public protocol WeightStore {
    /// Where the weights come from (a directory, or a description), for error messages.
    var directory: String { get }
    var names: [String] { get }
    func contains(_ name: String) -> Bool
    func tensor(_ name: String) throws -> WeightTensor
}

/// Weights held in memory (random-weight models for benchmarks, converted checkpoints).
public struct InMemoryWeights: WeightStore, @unchecked Sendable {
    public var directory: String
    public var tensors: [String: WeightTensor]
    public init(label: String, tensors: [String: WeightTensor] = [:]) {
        directory = label
        self.tensors = tensors
    }
    public var names: [String] { tensors.keys.sorted() }
    public func contains(_ name: String) -> Bool { tensors[name] != nil }
    public func tensor(_ name: String) throws -> WeightTensor {
        guard let t = tensors[name] else { throw TensorError.missingTensor(name: name, checkpoint: directory) }
        return t
    }
}

/// A checkpoint directory: `model.safetensors`, or shards listed by `model.safetensors.index.json`.
public final class Checkpoint: WeightStore, @unchecked Sendable {
    public let directory: String
    public let files: [SafetensorsFile]
    private let fileOfTensor: [String: Int]

    public convenience init(directory: String) throws {
        try self.init(directory: directory, headerBudget: SafetensorsFile.headerLimit)
    }

    /// `headerBudget`: the most header bytes the shards may have together.
    init(directory: String, headerBudget: Int) throws {
        self.directory = directory
        let fm = FileManager.default
        let indexPath = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        let singlePath = (directory as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: indexPath) {
            let data: Data
            data = try MappedFile.readSmallFile(indexPath)
            struct Index: Decodable {
                var weightMap: [String: String]
                enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
            }
            let index: Index
            do { index = try JSONDecoder().decode(Index.self, from: data) } catch let e as DecodingError {
                throw TensorError.invalidIndex(path: indexPath, reason: SafetensorsFile.describe(e))
            }
            if let (object, key) = JSONText.duplicateKey(in: data) {
                throw TensorError.invalidIndex(path: indexPath, reason: "'\(key)' is written twice in \(object.isEmpty ? "the index" : object): which shard holds it is ambiguous")
            }
            // Shard names as the file system tells them apart: by their bytes (Swift's String
            // equality would take an NFC name and its NFD twin for one file).
            var byBytes: [[UInt8]: String] = [:]
            for shard in index.weightMap.values {
                guard !shard.isEmpty, !shard.utf8.contains(0) else {
                    throw TensorError.invalidIndex(path: indexPath, reason: "shard name '\(shard.replacingOccurrences(of: "\0", with: "\\0"))' is not a file name")
                }
                guard !shard.contains("/"), !shard.hasPrefix(".") else {
                    throw TensorError.invalidIndex(path: indexPath, reason: "shard name '\(shard)' is not a file in the directory")
                }
                byBytes[Array(shard.utf8)] = shard
            }
            let shardNames = byBytes.keys.sorted { $0.lexicographicallyPrecedes($1) }.compactMap { byBytes[$0] }
            var headers = 0
            files = try shardNames.map { shard in
                let file = try SafetensorsFile(path: (directory as NSString).appendingPathComponent(shard))
                headers += file.headerBytes
                guard headers <= headerBudget else {
                    throw TensorError.invalidIndex(path: indexPath, reason: "the shards' headers hold more than \(headerBudget) bytes together (\(headers) with \(shard))")
                }
                return file
            }
            let shardIndex = Dictionary(uniqueKeysWithValues: shardNames.enumerated().map { (Array($1.utf8), $0) })
            var map: [String: Int] = [:]
            for (name, shard) in index.weightMap {
                guard let i = shardIndex[Array(shard.utf8)], files[i].entries[name] != nil else {
                    throw TensorError.invalidIndex(path: indexPath, reason: "'\(name)' is listed in \(shard) but not stored there")
                }
                map[name] = i
            }
            fileOfTensor = map
        } else if fm.fileExists(atPath: singlePath) {
            files = [try SafetensorsFile(path: singlePath)]
            fileOfTensor = Dictionary(uniqueKeysWithValues: files[0].names.map { ($0, 0) })
        } else {
            throw TensorError.fileNotFound(path: (directory as NSString).appendingPathComponent("model.safetensors[.index.json]"))
        }
    }

    public var names: [String] { fileOfTensor.keys.sorted() }

    public func contains(_ name: String) -> Bool { fileOfTensor[name] != nil }

    public func tensor(_ name: String) throws -> WeightTensor {
        guard let i = fileOfTensor[name] else { throw TensorError.missingTensor(name: name, checkpoint: directory) }
        return try files[i].tensor(name)
    }
}
