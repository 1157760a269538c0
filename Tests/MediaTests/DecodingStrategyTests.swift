import Foundation
import Testing
@testable import Media

/// The fast path (skipping non-reference frames and whole GOPs, seeking, parallel segments)
/// must deliver exactly the pixels of decoding every frame in order.
@Suite struct DecodingStrategyTests {
    static let exhaustive = DecodeOptions(skipNonReference: false, skipGOPs: false, workers: 1)

    static let cases: [(String, Double)] = [
        ("h264_cfr.mp4", 2), ("hevc.mp4", 2), ("vp9.webm", 2), ("mpeg4.avi", 4), ("mjpeg.mov", 2),
        ("av1.mp4", 4), ("vfr.mkv", 2), ("h264.ts", 2), ("longgop.mp4", 1), ("shortgop.mp4", 0.5),
        ("shortgop.mp4", 2), ("h264_odd.mkv", 3), ("rotated90.mp4", 2),
        ("opengop.mp4", 2), ("opengop.mp4", 30), ("editlist.mp4", 4), ("midgop.ts", 8),
    ]

    @Test(arguments: cases)
    func fastPathEqualsExhaustiveDecode(name: String, fps: Double) throws {
        let options = SamplingOptions(fps: fps, resize: ResizeOptions(minPixels: 784, maxPixels: 6000))
        let reference = try VideoDecoder(path: Fixtures.video(name), options: Self.exhaustive).sample(options)
        for strategy in [DecodeOptions(), DecodeOptions(workers: 1), DecodeOptions(seekThreshold: 0, workers: 3)] {
            let fast = try VideoDecoder(path: Fixtures.video(name), options: strategy).sample(options)
            #expect(fast.damage == nil, "\(name): \(fast.damage?.summary ?? "")")
            #expect(fast.indices == reference.indices, "\(name)")
            #expect(fast.frames.map(\.rgb) == reference.frames.map(\.rgb), "\(name) with \(strategy)")
            #expect(fast.packetsDecoded <= reference.packetsDecoded)
        }
    }

    @Test func sparseSamplingSkipsWork() throws {
        // 0.5 fps over 20 s of 10-frame GOPs: only the GOPs holding a sample are decoded.
        let sampled = try VideoDecoder(path: Fixtures.video("shortgop.mp4")).sample(SamplingOptions(fps: 0.5))
        #expect(sampled.frames.count == 10)
        #expect(sampled.packetsDecoded < sampled.packetsTotal / 3, "decoded \(sampled.packetsDecoded) of \(sampled.packetsTotal)")
    }

    @Test(arguments: ["shortgop.mp4", "h264.ts", "vp9.webm", "h264_odd.mkv", "mpeg4.avi"])
    func seeksLandWithoutRestarting(name: String) throws {
        // Far keyframes are reached by seeking; a seek must land where the index says it can.
        let options = DecodeOptions(seekThreshold: 0, workers: 1)
        let sampled = try VideoDecoder(path: Fixtures.video(name), options: options).sample(SamplingOptions(fps: 0.5))
        #expect(sampled.seeks > 0)
        #expect(sampled.restarts == 0, "\(name): \(sampled.restarts) restarts")
    }

    @Test func repeatedSamplingOnOneDecoder() throws {
        let video = try VideoDecoder(path: Fixtures.video("shortgop.mp4"))
        let a = try video.sample(SamplingOptions(fps: 1, end: 10))
        let b = try video.sample(SamplingOptions(fps: 1, start: 10))
        let c = try video.sample(SamplingOptions(fps: 1, end: 10))
        #expect(a.frames.map(\.rgb) == c.frames.map(\.rgb))
        #expect(Set(a.indices).isDisjoint(with: Set(b.indices)))
        #expect(b.timestamps.allSatisfy { $0 >= 10 })
        #expect(a.timestamps.allSatisfy { $0 < 10 })
    }

    /// How FFmpeg conceals damage depends on its threads' timing: a damaged stream must give the
    /// same pictures on every run and with every strategy — those of one decoder thread.
    @Test(arguments: ["corrupt.mp4", "truncated.mp4"])
    func damagedStreamsDecodeTheSameEveryTime(name: String) throws {
        let options = SamplingOptions(fps: 2, resize: ResizeOptions(minPixels: 784, maxPixels: 12544))
        let reference = try VideoDecoder(path: Fixtures.video(name), options: DecodeOptions(threads: 1, workers: 1)).sample(options)
        #expect(reference.damage != nil, "\(name) is not damaged")
        for strategy in [DecodeOptions(), DecodeOptions(threads: 2, workers: 1), DecodeOptions(threads: 4), DecodeOptions(seekThreshold: 0, workers: 3)] {
            for _ in 0..<3 {
                let sampled = try VideoDecoder(path: Fixtures.video(name), options: strategy).sample(options)
                #expect(sampled.indices == reference.indices, "\(name)")
                let same = sampled.frames.map(\.rgb) == reference.frames.map(\.rgb)
                #expect(same, "\(name) with \(strategy): other pictures than one decoder thread's")
            }
        }
    }
}
