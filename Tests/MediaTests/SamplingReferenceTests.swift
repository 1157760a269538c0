import Foundation
import Testing
@testable import Media

/// Sampled indices, timestamps and sizes against the PyAV / qwen-vl-utils reference
/// (fixtures/reference/sampling.json, written by fixtures/scripts/reference_frames.py).
@Suite struct SamplingReferenceTests {
    @Test(arguments: Fixtures.readableVideos)
    func plansMatchReference(name: String) throws {
        let ref = Fixtures.reference.videos[name]!
        let video = try VideoDecoder(path: Fixtures.video(name))
        #expect(video.frameIndex().count == ref.totalFrames)
        #expect(video.frameIndex().isConstantFrameRate == !ref.variableFrameRate)
        #expect(video.probe.rotation == ref.rotation)
        #expect(video.probe.displayWidth == ref.displayWidth)
        #expect(video.probe.displayHeight == ref.displayHeight)
        #expect(!ref.cases.isEmpty)
        for c in ref.cases {
            let plan = try video.plan(c.options.sampling)
            #expect(plan.indices == c.indices, "\(name) \(c.options)")
            #expect(plan.timestamps.count == c.timestamps.count)
            for (a, b) in zip(plan.timestamps, c.timestamps) {
                #expect(abs(a - b) < 1e-9, "\(name) \(c.options): timestamp \(a) vs \(b)")
            }
            #expect(plan.width == c.width && plan.height == c.height,
                    "\(name) \(c.options): \(plan.width)×\(plan.height) vs \(c.width)×\(c.height)")
        }
    }

    @Test(arguments: Fixtures.readableVideos.filter { $0 != "tallthin.mp4" }) // too thin for the small size
    func decodedFramesAreThePlannedOnes(name: String) throws {
        let ref = Fixtures.reference.videos[name]!
        let c = ref.cases[0]
        var options = c.options.sampling
        options.resize = ResizeOptions(minPixels: 784, maxPixels: 8000)
        let sampled = try VideoDecoder(path: Fixtures.video(name)).sample(options)
        #expect(sampled.damage == nil)
        #expect(sampled.indices == c.indices)
        #expect(sampled.frames.allSatisfy { $0.rgb.count == $0.width * $0.height * 3 })
    }

    @Test func probeMatchesFFprobe() throws {
        for name in Fixtures.readableVideos {
            let p = Fixtures.reference.videos[name]!.ffprobe
            let probe = try VideoDecoder(path: Fixtures.video(name)).probe
            #expect(probe.codec == p.codec, "\(name)")
            #expect(probe.width == p.width && probe.height == p.height, "\(name)")
            #expect(probe.pixelFormat == p.pixelFormat, "\(name)")
            if let r = p.averageFrameRate { #expect(abs(probe.averageFrameRate! - r) < 1e-9, "\(name)") }
            if let r = p.realFrameRate { #expect(abs(probe.realFrameRate! - r) < 1e-9, "\(name)") }
            let shown = Fixtures.reference.videos[name]!.totalFrames
            if let n = p.frameCount, n == shown {
                #expect(probe.frameCount == n && probe.frameCountExact, "\(name)")
            } else if let n = p.frameCount, name == "editlist.mp4" {
                // The container counts hidden pre-roll packets: not the shown frames.
                #expect(!probe.frameCountExact && probe.frameCount != n, "\(name)")
                #expect(abs(probe.frameCount! - shown) <= 1, "\(name)")
            } else {
                #expect(!probe.frameCountExact, "\(name): a count the container does not hold is an estimate")
            }
            if let d = p.duration, d.isFinite { #expect(abs((probe.duration ?? -1) - d) < 1e-3, "\(name)") }
        }
    }

    @Test func countedProbeIsExact() throws {
        for name in ["vfr.mkv", "h264_odd.mkv", "vp9.webm"] {
            let ref = Fixtures.reference.videos[name]!
            let probe = try VideoDecoder(path: Fixtures.video(name)).countedProbe()
            #expect(probe.frameCount == ref.totalFrames && probe.frameCountExact)
            #expect(probe.variableFrameRate == ref.variableFrameRate)
        }
    }
}

/// The pure rules against values computed by qwen-vl-utils and torch.
@Suite struct ProcessorLimitTests {
    /// A checkpoint whose processor allows fewer pixels than the sampling bounds sizes frames
    /// within its maximum; one that allows more (real Qwen2-VL: 12845056) changes nothing.
    @Test func samplingBoundsWithinTheProcessorMaximum() throws {
        let defaults = ResizeOptions()
        let small = defaults.limited(toMaxPixels: 112 * 112)
        #expect(small.minPixels == 112 * 112 && small.maxPixels == 112 * 112)
        let native = try small.outputSize(width: 112, height: 112, frameCount: 8)
        #expect(native.width == 112 && native.height == 112)
        let (w, h) = try small.outputSize(width: 640, height: 360, frameCount: 8)
        #expect(w * h <= 112 * 112 && w % 28 == 0 && h % 28 == 0)
        #expect(try defaults.outputSize(width: 112, height: 112, frameCount: 8).width > 112)
        #expect(defaults.limited(toMaxPixels: 12_845_056) == defaults.limited(toMaxPixels: 12_845_056).limited(toMaxPixels: 12_845_056))
        #expect(defaults.limited(toMaxPixels: 12_845_056).minPixels == defaults.minPixels)
        #expect(defaults.limited(toMaxPixels: 12_845_056).maxPixels == SmartResize.videoMaxPixels)
        #expect(ResizeOptions(native: true).limited(toMaxPixels: 784) == ResizeOptions(native: true))
    }
}

@Suite struct RuleReferenceTests {
    @Test func smartResizeMatchesQwenVLUtils() throws {
        for r in Fixtures.reference.rules.smartResize {
            if r.error == true || r.resizedWidth == 0 || r.resizedHeight == 0 {
                #expect(throws: MediaError.self) {
                    try SmartResize.resize(height: r.height, width: r.width, minPixels: Double(r.minPixels), maxPixels: Double(r.maxPixels))
                }
                continue
            }
            let s = try SmartResize.resize(height: r.height, width: r.width,
                                           minPixels: Double(r.minPixels), maxPixels: Double(r.maxPixels))
            #expect(s.height == r.resizedHeight && s.width == r.resizedWidth, "\(r)")
        }
    }

    @Test func frameCountMatchesSmartNframes() {
        for r in Fixtures.reference.rules.smartNframes {
            let n = FrameSampler.frameCount(total: r.total, videoFPS: r.videoFps, fps: r.fps, maxFrames: r.maxFrames)
            #expect(n == r.nframes, "\(r)")
        }
    }

    @Test func linspaceMatchesTorch() {
        for r in Fixtures.reference.rules.linspace {
            #expect(FrameSampler.linspaceIndices(start: r.start, end: r.end, count: r.count) == r.indices, "\(r.start)…\(r.end) ×\(r.count)")
        }
    }

    /// Past 2^24 frames float32 rounds the last index beyond the window (16777219 becomes
    /// 16777220, and indexing the frame table with it trapped): indices stay within the window.
    @Test func linspaceStaysInTheWindowPastFloatPrecision() {
        for (start, end, count) in [(0, 16_777_219, 768), (16_777_217, 33_554_431, 100), (5, 16_777_221, 2)] {
            let indices = FrameSampler.linspaceIndices(start: start, end: end, count: count)
            #expect(indices.count == count && indices.allSatisfy { (start...end).contains($0) }, "\(start)…\(end) ×\(count): \(indices.suffix(2))")
        }
        #expect(FrameSampler.linspaceIndices(start: 0, end: 16_777_219, count: 768).last == 16_777_219)
    }

    /// Videos (and windows) of 2 or 3 frames get smart_nframes' 2 (in the reference cases above:
    /// the first and the last, as torch's linspace(0, 2, 2) gives them); where qwen-vl-utils would
    /// raise — one frame, or max_frames 1 — one frame, never an error.
    @Test func shortVideosFollowSmartNframes() throws {
        #expect(try FrameSampler.constantRateIndices(total: 1, videoFPS: 30, fps: 2) == [0])
        #expect(try FrameSampler.constantRateIndices(total: 2, videoFPS: 30, fps: 2) == [0, 1])
        #expect(try FrameSampler.constantRateIndices(total: 3, videoFPS: 30, fps: 2) == [0, 2])
        #expect(try FrameSampler.constantRateIndices(total: 10, videoFPS: 30, fps: 2, start: 7.0 / 30) == [7, 9])
        #expect(try FrameSampler.constantRateIndices(total: 3, videoFPS: 30, fps: 2, maxFrames: 1) == [0])
        #expect(try FrameSampler.variableRateIndices(times: [0, 0.5, 2], fps: 2) == [0, 2])
        #expect(try FrameSampler.variableRateIndices(times: [0, 0.5, 2], fps: 2, maxFrames: 1) == [0])
        #expect(try FrameSampler.variableRateIndices(times: [0.4], fps: 2) == [0])
    }

    @Test func emptyWindowIsAnError() {
        #expect(throws: MediaError.self) {
            try FrameSampler.constantRateIndices(total: 30, videoFPS: 30, fps: 2, start: 5, end: 6)
        }
        #expect(throws: MediaError.self) { try SamplingOptions(fps: 31).validate() }
        #expect(throws: MediaError.self) { try SamplingOptions(fps: 0.05).validate() }
        #expect(throws: MediaError.self) { try SamplingOptions(start: 2, end: 1).validate() }
    }
}
