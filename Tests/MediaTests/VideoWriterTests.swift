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

    /// A complete Matroska file that starts 10⁹ s in (a cut from a stream): its muxer writes the
    /// end time as the duration, which must not read as 10⁹ s of missing video.
    @Test func lateStartIsNotTruncated() throws {
        let path = temporary("late.mkv")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try VideoWriter(path: path, width: 64, height: 48, fps: 10, keyframeInterval: 5, firstFrame: 10_000_000_000)
        for n in 0..<20 { try writer.append(rgb: [UInt8](repeating: UInt8(40 + 8 * n), count: 64 * 48 * 3)) }
        try writer.finish()
        let decoder = try VideoDecoder(path: path)
        #expect(decoder.frameIndex().count == 20)
        let sampled = try decoder.sample(SamplingOptions(fps: 2))
        #expect(sampled.damage == nil, "\(String(describing: sampled.damage))")
        #expect(sampled.frames.count == 4)
        // A late start whose frames stop short of its end is still truncated: 100 textured
        // frames, cut at 60 % of the file.
        let long = temporary("late-long.mkv"), cut = temporary("late-cut.mkv")
        defer { for p in [long, cut] { try? FileManager.default.removeItem(atPath: p) } }
        let longWriter = try VideoWriter(path: long, width: 64, height: 48, fps: 10, keyframeInterval: 5, firstFrame: 10_000_000_000)
        for n in 0..<100 { try longWriter.append(rgb: (0..<(64 * 48 * 3)).map { UInt8(truncatingIfNeeded: $0 * 7 + n * 13 + ($0 / 192) * n) }) }
        try longWriter.finish()
        let data = try Data(contentsOf: URL(fileURLWithPath: long))
        try data.prefix(data.count * 6 / 10).write(to: URL(fileURLWithPath: cut))
        do {
            let damaged = try VideoDecoder(path: cut).sample(SamplingOptions(fps: 2))
            #expect(damaged.damage?.truncated == true)
        } catch let e as MediaError {
            guard case .truncated = e else { Issue.record("\(e)"); return }
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
