import Testing
@testable import Media

@Suite struct ClipSegmenterTests {
    @Test func consecutiveClipsCoverTheVideo() throws {
        let clips = try ClipSegmenter.segments(duration: 95, length: 30)
        #expect(clips == [ClipRange(start: 0, end: 30), ClipRange(start: 30, end: 60), ClipRange(start: 60, end: 95)])
    }

    @Test func longRemainderStandsAlone() throws {
        let clips = try ClipSegmenter.segments(duration: 100, length: 30, minRemainder: 5)
        #expect(clips.last == ClipRange(start: 90, end: 100))
        #expect(clips.count == 4)
    }

    @Test func overlapRepeatsTheTail() throws {
        let clips = try ClipSegmenter.segments(duration: 25, length: 10, overlap: 2, minRemainder: 1)
        #expect(clips.map(\.start) == [0, 8, 16])
        #expect(clips.map(\.end) == [10, 18, 25])
        for (a, b) in zip(clips, clips.dropFirst()) { #expect(a.end - b.start == 2) }
    }

    @Test func shortVideoIsOneClip() throws {
        #expect(try ClipSegmenter.segments(duration: 4, length: 30) == [ClipRange(start: 0, end: 4)])
    }

    @Test func exactMultipleHasNoSliver() throws {
        let clips = try ClipSegmenter.segments(duration: 0.1 + 0.2 + 0.3, length: 0.3)
        #expect(clips.count == 2)
        #expect(abs(clips.last!.end - 0.6) < 1e-12)
    }

    @Test func invalidArgumentsThrow() {
        #expect(throws: MediaError.self) { try ClipSegmenter.segments(duration: 0, length: 10) }
        #expect(throws: MediaError.self) { try ClipSegmenter.segments(duration: 10, length: 0) }
        #expect(throws: MediaError.self) { try ClipSegmenter.segments(duration: 10, length: 5, overlap: 5) }
        #expect(throws: MediaError.self) { try ClipSegmenter.segments(duration: .nan, length: 5) }
    }
}

/// Clip windows whose edges carry float noise (3 × 0.2 = 0.6000000000000001) still hold the
/// frame at their edge: a healthy video never fails with "holds no frame".
@Suite struct ClipEdgeTests {
    @Test(arguments: [(5.0, 0.2), (10.0, 0.1), (30.0, 0.1), (3.0, 1.0 / 3)])
    func everyClipHoldsItsFrames(videoFPS: Double, seconds: Double) throws {
        let total = Int(4 * videoFPS)
        let clips = try ClipSegmenter.segments(duration: Double(total) / videoFPS, length: seconds, minimumStride: 1 / videoFPS)
        let times = (0..<total).map { Double($0) / videoFPS }
        var seen: [Int] = []
        for c in clips {
            let constant = try FrameSampler.constantRateIndices(total: total, videoFPS: videoFPS, fps: videoFPS, start: c.start, end: c.end)
            let variable = try FrameSampler.variableRateIndices(times: times, fps: videoFPS, start: c.start, end: c.end)
            #expect(constant == variable, "\(c)")
            // The samples span the window's frames, first to last (a 3-frame window gives
            // smart_nframes' 2: its first and last).
            let (lo, hi) = FrameSampler.window(times: times, start: c.start, end: c.end)
            #expect(constant.first == lo && constant.last == hi, "\(c)")
            seen += Array(lo...hi)
        }
        // Every frame lands in exactly one clip's window (clips of whole frames, no overlap).
        #expect(seen == Array(0..<total), "\(clips.prefix(8))")
    }

    /// Clip i starts at i × stride: no running-sum drift after many clips.
    @Test func startsDoNotDrift() throws {
        let clips = try ClipSegmenter.segments(duration: 10_000, length: 0.1)
        #expect(clips.count == 100_000)
        #expect(clips[99_999].start == 99_999 * 0.1)
    }
}
