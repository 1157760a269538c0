import Foundation
import Testing
@testable import Tensors

@Suite struct WriterTests {
    @Test func writtenFilesReadBack() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("w-\(UUID()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b = Convert.bf16([0.5, -2, 3.25])
        let w = try SafetensorsWriter(path: path, tensors: [.init(name: "a", dtype: .f32, shape: [2, 3]), .init(name: "b", dtype: .bf16, shape: [3])])
        try a.withUnsafeBytes { try w.write($0) }
        #expect(throws: TensorError.self) { try w.close() }
        try b.withUnsafeBytes { try w.write($0) }
        try w.close()
        let f = try SafetensorsFile(path: path)
        #expect(try f.tensor("a").toF32().values == a)
        #expect(try f.tensor("b").toF32().values == [0.5, -2, 3.25])
        #expect(f.metadata["format"] == "pt")
    }
}
