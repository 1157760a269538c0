import Foundation
import Testing
@testable import Media

/// The video processor frame rule (`FrameRule.uniform`) and the frame-stack sizing at factor 32,
/// against transformers 4.57's Qwen3VLVideoProcessor (`sample_frames`, `smart_resize`) as
/// fixtures/scripts/reference_seam_qwen3vl.py and reference_qwen3vl.py recorded them.
@Suite struct FrameRuleTests {
    struct Sampling: Decodable { var totalFrames: Int, videoFps: Double, fps: Double, minFrames: Int, maxFrames: Int, indices: [Int] }
    struct Resize: Decodable { var frames: Int, height: Int, width: Int, minPixels: Int, maxPixels: Int, size: [Int] }
    struct Reference: Decodable { var sampling: [Sampling]; var resize: [Resize] }
    struct Qwen3: Decodable {
        struct Case: Decodable { var totalFrames: Int, videoFps: Double, indices: [Int] }
        var sampling: [String: [Case]]
    }

    static func decode<T: Decodable>(_ type: T.Type, _ path: String) throws -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(type, from: Data(contentsOf: Fixtures.root.appendingPathComponent(path)))
    }

    static let reference = try! decode(Reference.self, "reference/seam/qwen3vl-a.json")

    @Test func indicesMatchSampleFrames() throws {
        #expect(Self.reference.sampling.count >= 10)
        for c in Self.reference.sampling {
            let rule = FrameRule.uniform(minFrames: c.minFrames, maxFrames: c.maxFrames)
            let got = try FrameSampler.constantRateIndices(total: c.totalFrames, videoFPS: c.videoFps, fps: c.fps, rule: rule)
            #expect(got == c.indices, "\(c.totalFrames) frames at \(c.videoFps), fps \(c.fps), [\(c.minFrames), \(c.maxFrames)]")
        }
        // The port's own recording (fps 2 within [4, 768]), both transformers versions.
        let port = try Self.decode(Qwen3.self, "reference/qwen3vl/qwen3vl.json")
        for (tag, cases) in port.sampling {
            for c in cases {
                let got = try FrameSampler.constantRateIndices(total: c.totalFrames, videoFPS: c.videoFps, fps: 2,
                                                              rule: .uniform(minFrames: 4, maxFrames: 768))
                #expect(got == c.indices, "\(tag): \(c.totalFrames) frames at \(c.videoFps)")
            }
        }
    }

    /// Over a window the rule runs on the window's frames, offset by its first frame; a smaller
    /// `maxFrames` bounds it as the processor's max_frames does.
    @Test func windowsAndBounds() throws {
        let c = try #require(Self.reference.sampling.first { $0.totalFrames == 100 && $0.videoFps == 25 })
        // 1000 frames at 25 fps; [4 s, 8 s) holds frames 100…199.
        let got = try FrameSampler.constantRateIndices(total: 1000, videoFPS: 25, fps: c.fps, start: 4, end: 8,
                                                      rule: .uniform(minFrames: c.minFrames, maxFrames: c.maxFrames))
        #expect(got == c.indices.map { $0 + 100 })
        let bounded = try #require(Self.reference.sampling.first { $0.maxFrames == 16 })
        let viaOption = try FrameSampler.constantRateIndices(total: bounded.totalFrames, videoFPS: bounded.videoFps, fps: bounded.fps,
                                                            maxFrames: 16, rule: .uniform(minFrames: bounded.minFrames, maxFrames: 768))
        #expect(viaOption == bounded.indices)
        // Unlike qwen-vl-utils' rule, odd counts stay odd.
        let odd = try #require(Self.reference.sampling.first { $0.indices.count % 2 == 1 })
        #expect(FrameSampler.frameCount(total: odd.totalFrames, videoFPS: odd.videoFps, fps: odd.fps, maxFrames: nil,
                                        rule: .uniform(minFrames: odd.minFrames, maxFrames: odd.maxFrames)) == odd.indices.count)
    }

    @Test func frameStackSizingMatchesSmartResize() throws {
        #expect(Self.reference.resize.count >= 8)
        for c in Self.reference.resize {
            let options = ResizeOptions(factor: 32, stack: FrameStack(temporalFactor: 2, minPixels: c.minPixels, maxPixels: c.maxPixels))
            let size = try options.outputSize(width: c.width, height: c.height, frameCount: c.frames)
            #expect([size.height, size.width] == c.size, "\(c.frames)×\(c.height)×\(c.width) in [\(c.minPixels), \(c.maxPixels)]")
            let direct = try SmartResize.resizeStack(frames: c.frames, height: c.height, width: c.width, temporalFactor: 2, factor: 32,
                                                     minPixels: Double(c.minPixels), maxPixels: Double(c.maxPixels))
            #expect([direct.height, direct.width] == c.size)
        }
        // An explicit per-frame maximum still caps the stack (t̄ · max_pixels).
        let capped = ResizeOptions(maxPixels: 32 * 32 * 4, factor: 32, stack: FrameStack(temporalFactor: 2, minPixels: 1024, maxPixels: 1 << 30))
        let s = try capped.outputSize(width: 1920, height: 1080, frameCount: 8)
        #expect(s.width * s.height <= 32 * 32 * 4 && s.width % 32 == 0 && s.height % 32 == 0)
        // Per-frame sizing at factor 32: multiples of 32 within the bounds.
        let image = try ResizeOptions(minPixels: 1024, maxPixels: 65536, image: true, factor: 32).outputSize(width: 1280, height: 720, frameCount: 1)
        #expect(image.width % 32 == 0 && image.height % 32 == 0 && image.width * image.height <= 65536)
    }

    /// The defaults are unchanged: qwen-vl-utils' rule and factor 28, and the settings' keys.
    @Test func defaultsKeepTheirKeys() throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let json = String(decoding: try e.encode(SamplingOptions()), as: UTF8.self)
        #expect(json == #"{"fps":2,"resize":{"image":false,"minPixels":100352,"native":false}}"#)
        let old = try JSONDecoder().decode(SamplingOptions.self, from: Data(json.utf8))
        #expect(old == SamplingOptions() && old.frameRule == .qwenVLUtils && old.resize.factor == 28 && old.resize.stack == nil)
        var custom = SamplingOptions(frameRule: .uniform(minFrames: 4, maxFrames: 768))
        custom.resize = ResizeOptions(factor: 32, stack: FrameStack(temporalFactor: 2, minPixels: 1024, maxPixels: 65536))
        #expect(try JSONDecoder().decode(SamplingOptions.self, from: try e.encode(custom)) == custom)
        #expect(throws: MediaError.self) { try SamplingOptions(frameRule: .uniform(minFrames: 0, maxFrames: 4)).validate() }
        #expect(throws: MediaError.self) { try SamplingOptions(frameRule: .uniform(minFrames: 8, maxFrames: 4)).validate() }
    }

    /// A decoder's plan follows the rule it is given.
    @Test func planUsesTheRule() throws {
        let name = try #require(Fixtures.readableVideos.first { !Fixtures.reference.videos[$0]!.variableFrameRate })
        let video = try VideoDecoder(path: Fixtures.video(name))
        let rule = FrameRule.uniform(minFrames: 4, maxFrames: 768)
        let plan = try video.plan(SamplingOptions(fps: 2, frameRule: rule))
        #expect(plan.indices == (try FrameSampler.constantRateIndices(total: plan.totalFrames, videoFPS: plan.videoFPS, fps: 2, rule: rule)))
    }
}
