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
