import Foundation

/// Writes a `.safetensors` file, one tensor at a time (nothing is held in memory but the header):
/// declare every tensor first, then `write` their bytes in the same order.
public final class SafetensorsWriter {
    public struct Declaration {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public init(name: String, dtype: DType, shape: [Int]) { self.name = name; self.dtype = dtype; self.shape = shape }
    }

    private let handle: FileHandle
    private let declarations: [Declaration]
    private var next = 0
    public let path: String

    public init(path: String, tensors: [Declaration], metadata: [String: String] = ["format": "pt"]) throws {
        self.path = path
        declarations = tensors
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in tensors {
            let bytes = t.shape.reduce(1, *) * t.dtype.size
            header[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw TensorError.unreadable(path: path, reason: "cannot create the file")
        }
        handle = h
        var n = UInt64(json.count).littleEndian
        try handle.write(contentsOf: Data(bytes: &n, count: 8))
        try handle.write(contentsOf: json)
    }

    /// The bytes of the next declared tensor.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard next < declarations.count else { throw TensorError.invalidSafetensors(path: path, tensor: nil, reason: "more tensors written than declared") }
        let d = declarations[next]
        guard bytes.count == d.shape.reduce(1, *) * d.dtype.size else {
            throw TensorError.invalidSafetensors(path: path, tensor: d.name, reason: "\(bytes.count) bytes for shape \(d.shape) of \(d.dtype.rawValue)")
        }
        try handle.write(contentsOf: bytes)
        next += 1
    }

    public func close() throws {
        guard next == declarations.count else {
            throw TensorError.invalidSafetensors(path: path, tensor: declarations[next].name, reason: "not written")
        }
        try handle.close()
    }
}
