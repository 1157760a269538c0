import Foundation
import Testing
@testable import Media

/// Videos written from RGB frames with FFmpeg's encoders read back as what was written.
@Suite struct VideoWriterTests {
    func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("reelql-writer-\(UUID().uuidString)-\(name)").path
    }

    @Test func writtenFramesReadBack() throws {
        let path = temporary("clip.mp4")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (w, h) = (64, 48)
        let writer = try VideoWriter(path: path, width: w, height: h, fps: 10, keyframeInterval: 5)
        // Frame n: a flat grey level that rises with n.
        for n in 0..<20 { try writer.append(rgb: [UInt8](repeating: UInt8(40 + 8 * n), count: w * h * 3)) }
        try writer.finish()
        #expect(writer.frames == 20)
        let decoder = try VideoDecoder(path: path)
        #expect(decoder.frameIndex().count == 20)
        #expect(abs(decoder.frameIndex().span - 2.0) < 1e-6)
        let sampled = try decoder.sample(SamplingOptions(fps: 10, resize: ResizeOptions(native: true)))
        #expect(sampled.frames.count == 20)
        for (n, frame) in sampled.frames.enumerated() {
            #expect(frame.width == w && frame.height == h)
            let mean = frame.rgb.reduce(0) { $0 + Int($1) } / frame.rgb.count
            #expect(abs(mean - (40 + 8 * n)) <= 2, "frame \(n): mean \(mean)")
        }
    }

    @Test func badArgumentsAreErrors() throws {
        #expect(throws: MediaError.self) { try VideoWriter(path: temporary("odd.mp4"), width: 63, height: 48, fps: 10) }
        #expect(throws: MediaError.self) { try VideoWriter(path: temporary("fps.mp4"), width: 64, height: 48, fps: 0) }
        #expect(throws: MediaError.self) { try VideoWriter(path: temporary("clip.unknown-extension"), width: 64, height: 48, fps: 10) }
        let path = temporary("short.mp4")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try VideoWriter(path: path, width: 64, height: 48, fps: 10)
        #expect(throws: MediaError.self) { try writer.append(rgb: [UInt8](repeating: 0, count: 10)) }
        try writer.finish()
        #expect(throws: MediaError.self) { try writer.append(rgb: [UInt8](repeating: 0, count: 64 * 48 * 3)) }
    }
}
