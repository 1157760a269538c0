import Foundation
import Testing
@testable import Media

/// Every kind of unreadable input is a distinct, clear error; damaged files deliver what they can.
@Suite struct ErrorTests {
    func openError(_ name: String) -> MediaError? {
        do { _ = try VideoDecoder(path: Fixtures.video(name)).sample(SamplingOptions()); return nil }
        catch let e as MediaError { return e }
        catch { return nil }
    }

    /// A frame count estimated from a header's duration and rate never traps on numbers past
    /// any Int (2⁶³ time-base units of 1 s at 30000 fps), NaN or infinities.
    @Test func estimatedFramesFromHostileHeaders() {
        #expect(VideoProbe.estimatedFrames(duration: 10, rate: 25) == 250)
        #expect(VideoProbe.estimatedFrames(duration: 0.01, rate: 25) == 1)
        #expect(VideoProbe.estimatedFrames(duration: 9.223372036854775807e18, rate: 30000) == 1 << 53)
        #expect(VideoProbe.estimatedFrames(duration: .infinity, rate: 25) == 1 << 53)
        #expect(VideoProbe.estimatedFrames(duration: .nan, rate: 25) == 1)
        #expect(VideoProbe.estimatedFrames(duration: 10, rate: -25) == 1)
        #expect(VideoProbe.estimatedFrames(duration: -.infinity, rate: 25) == 1)
    }

    /// Sampling counts with a rate that is one: a header's negative, zero or infinite rate gives
    /// way to the next source (real rate, packet spacing, 25).
    @Test func samplingRateFromHostileHeaders() {
        #expect(VideoDecoder.samplingRate(average: 30, real: 25, medianFrameDuration: 0.04) == 30)
        #expect(VideoDecoder.samplingRate(average: -30, real: 25, medianFrameDuration: 0.04) == 25)
        #expect(VideoDecoder.samplingRate(average: .infinity, real: nil, medianFrameDuration: 0.05) == 20)
        #expect(VideoDecoder.samplingRate(average: nil, real: -1, medianFrameDuration: 0) == 25)
        #expect(VideoDecoder.samplingRate(average: nil, real: nil, medianFrameDuration: .nan) == 25)
    }

    /// Time-base ticks between two timestamps: exact when the difference fits, no trap when
    /// the timestamps lie 2⁶³ or more apart.
    @Test func ticksBetweenHostileTimestamps() {
        #expect(FrameIndex.ticks(from: 1000, to: 4000) == 3000)
        #expect(FrameIndex.ticks(from: Int64.min, to: Int64.max) == Double(Int64.max) - Double(Int64.min))
        #expect(FrameIndex.ticks(from: Int64.max, to: Int64.min) < 0)
    }

    /// Matroska's DURATION tag: a finite time ≥ 0, or none.
    @Test func matroskaDurationTags() {
        #expect(VideoProbe.matroskaDuration("00:01:02.500000000") == 62.5)
        #expect(VideoProbe.matroskaDuration("inf:00:00.000000000") == nil)
        #expect(VideoProbe.matroskaDuration("nan:00:00.0") == nil)
        #expect(VideoProbe.matroskaDuration("-01:00:00.0") == nil)
        #expect(VideoProbe.matroskaDuration("1e308:1e308:0") == nil)
        #expect(VideoProbe.matroskaDuration("00:00") == nil)
    }

    @Test func missingFile() {
        guard case .fileNotFound(let path) = openError("does-not-exist.mp4") else { Issue.record("wrong error"); return }
        #expect(path.hasSuffix("does-not-exist.mp4"))
    }

    @Test func emptyFile() {
        guard case .emptyFile = openError("empty.mp4") else { Issue.record("wrong error"); return }
    }

    @Test func notAVideo() {
        guard case .notAVideo = openError("not_a_video.mp4") else { Issue.record("wrong error"); return }
        guard case .notAVideo(_, let reason) = openError("../videos") else { Issue.record("a directory"); return }
        #expect(reason.contains("directory"))
    }

    /// A picture FFmpeg cannot decode a first frame of (cut short: its header names the codec
    /// but the size stays 0×0) is a decode failure naming the file, not a resize error.
    @Test func undecodablePicture() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-cut-\(UUID().uuidString).png").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PNGWriter.write(rgb: (0..<(64 * 48 * 3)).map { UInt8($0 % 251) }, width: 64, height: 48, to: path)
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(100).write(to: URL(fileURLWithPath: path))
        do {
            _ = try VideoDecoder(path: path).sample(SamplingOptions())
            Issue.record("a cut picture decoded")
        } catch let e as MediaError {
            guard case .decodeFailed(let p, let reason) = e else { Issue.record("\(e)"); return }
            #expect(p == path && reason.contains("0×0"))
        }
    }

    @Test func audioOnly() {
        guard case .noVideoStream(_, let streams) = openError("audio_only.m4a") else { Issue.record("wrong error"); return }
        #expect(streams == ["audio (aac)"])
        guard case .noVideoStream(_, let withCover) = openError("audio_with_cover.mp3") else { Issue.record("cover art"); return }
        #expect(withCover.contains { $0.hasPrefix("cover art") })
    }

    @Test func unsupportedCodec() {
        guard case .unsupportedCodec(_, let codec) = openError("unsupported_codec.avi") else { Issue.record("wrong error"); return }
        #expect(codec == "RQLX")
    }

    @Test func unfinishedMP4IsTruncated() {
        guard case .truncated(_, let damage) = openError("unfinished.mp4") else { Issue.record("wrong error"); return }
        #expect(damage.missingIndex)
        #expect(MediaError.truncated(path: "x", damage: damage).localizedDescription.contains("moov"))
    }

    @Test(arguments: ["truncated.mp4", "truncated.mkv"])
    func truncatedFileDeliversWhatItHas(name: String) throws {
        let sampled = try VideoDecoder(path: Fixtures.video(name)).sample(SamplingOptions())
        let damage = try #require(sampled.damage)
        #expect(damage.truncated)
        #expect(damage.declaredDuration == 4)
        #expect(damage.readableDuration > 1.5 && damage.readableDuration < 2.6)
        #expect(damage.missingSeconds > 1.4)
        #expect(!sampled.frames.isEmpty)
        #expect(sampled.timestamps.allSatisfy { $0 < damage.readableDuration })
        let error = MediaError.truncated(path: name, damage: damage)
        #expect(error.localizedDescription.contains("lost"))
    }

    @Test func corruptPacketsAreCounted() throws {
        let sampled = try VideoDecoder(path: Fixtures.video("corrupt.mp4"), options: DecodeOptions(skipNonReference: false, skipGOPs: false))
            .sample(SamplingOptions(fps: 4))
        let damage = try #require(sampled.damage)
        #expect(!damage.truncated)
        #expect(damage.corruptPackets > 0)
        #expect(sampled.frames.count == sampled.plan.indices.count - damage.lostSampledFrames)
    }

    @Test func unfittableSizeIsAnErrorNamingTheFile() throws {
        let video = try VideoDecoder(path: Fixtures.video("tallthin.mp4"))
        #expect(throws: MediaError.self) {
            try video.plan(SamplingOptions(resize: ResizeOptions(minPixels: 784, maxPixels: 12544)))
        }
        do { _ = try video.plan(SamplingOptions(resize: ResizeOptions(minPixels: 784, maxPixels: 12544))) } catch {
            #expect(error.localizedDescription.contains("tallthin.mp4"))
            #expect(error.localizedDescription.contains("max_pixels"))
        }
        // With qwen-vl-utils' default bounds it fits.
        let expected = Fixtures.reference.videos["tallthin.mp4"]!.cases[0]
        let sampled = try video.sample(SamplingOptions())
        #expect(sampled.indices == expected.indices)
        #expect(sampled.plan.width == expected.width && sampled.plan.height == expected.height)
    }

    @Test func errorsAreDistinct() {
        let errors: [MediaError] = [
            .fileNotFound(path: "a"), .emptyFile(path: "a"), .notAVideo(path: "a", reason: "r"),
            .noVideoStream(path: "a", streams: []), .unsupportedCodec(path: "a", codec: "c"),
            .truncated(path: "a", damage: DecodeDamage()), .corruptData(path: "a", damage: DecodeDamage()),
            .decodeFailed(path: "a", reason: "r"),
        ]
        #expect(Set(errors.map(\.exitCode)).count == errors.count)
        #expect(Set(errors.map(\.kind)).count == errors.count)
        #expect(Set(errors.map { $0.localizedDescription }).count == errors.count)
        #expect(errors.allSatisfy { $0.exitCode != 0 })
    }
}

