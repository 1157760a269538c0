import Foundation
import Tensors
@testable import VLM

enum VisionFixtures {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures")
    static func model(_ name: String) -> String { fixtures.appendingPathComponent("models/\(name)").path }

    struct Index: Decodable {
        struct Input: Decodable { var frames: Int, height: Int, width: Int, seed: Int, grid: [Int], pixelsShape: [Int] }
        struct Output: Decodable { var hidden: [Int], merged: [Int], mergedBf16: [Int] }
        struct Model: Decodable { var outputs: [String: Output] }
        var inputs: [String: Input]
        var models: [String: Model]
    }

    static let index: Index = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode(Index.self, from: Data(contentsOf: fixtures.appendingPathComponent("reference/vision/vision.json")))
    }()

    static func values(_ name: String) throws -> [Float] {
        try Data(contentsOf: fixtures.appendingPathComponent("reference/vision/\(name).f32"))
            .withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// The script's frames: (i·31 + y·7 + x·13 + c·101 + seed·17) mod 251.
    static func frames(_ input: Index.Input) -> [RGBImage] {
        (0..<input.frames).map { f in
            var px = [UInt8](repeating: 0, count: input.width * input.height * 3)
            for y in 0..<input.height {
                for x in 0..<input.width {
                    for c in 0..<3 {
                        px[(y * input.width + x) * 3 + c] = UInt8((f * 31 + y * 7 + x * 13 + c * 101 + input.seed * 17) % 251)
                    }
                }
            }
            return RGBImage(width: input.width, height: input.height, pixels: px)
        }
    }
}

/// max |a − b| / max |b|.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var d = 0.0, m = 0.0
    for (x, y) in zip(a, b) { d = max(d, abs(Double(x) - Double(y))); m = max(m, abs(Double(y))) }
    return m == 0 ? d : d / m
}

/// Writes a safetensors file (for building broken checkpoints in tests).
func writeSafetensors(_ tensors: [(String, DType, [Int], Data)], to path: String) throws {
    var header: [String: Any] = [:]
    var offset = 0
    for (name, dtype, shape, data) in tensors {
        header[name] = ["dtype": dtype.rawValue, "shape": shape, "data_offsets": [offset, offset + data.count]]
        offset += data.count
    }
    var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while json.count % 8 != 0 { json.append(0x20) }
    var out = Data()
    var n = UInt64(json.count).littleEndian
    out.append(Data(bytes: &n, count: 8))
    out.append(json)
    for (_, _, _, data) in tensors { out.append(data) }
    try out.write(to: URL(fileURLWithPath: path))
}
