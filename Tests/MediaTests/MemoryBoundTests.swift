import Foundation
import Testing
@testable import Media

/// One sampling's decoded RGB is bounded (`VideoDecoder.maxSampledBytes`, frames × width ×
/// height × 3) and so is one frame (`maxFramePixels`, decoded or delivered): settings beyond
/// them are refused by the plan, before any decoding, naming the numbers and what to lower.
@Suite struct MemoryBoundTests {
    func refusal(_ video: String, _ options: SamplingOptions) -> String? {
        do { _ = try VideoDecoder(path: Fixtures.video(video)).plan(options); return nil }
        catch MediaError.invalidArgument(let message) { return message }
        catch { return "unexpected: \(error)" }
    }

    /// 268M-pixel frames (the CLI's largest --max-pixels) of a tiny video: over the per-frame cap.
    @Test func framesOverThePixelCapAreRefused() throws {
        let huge = 1 << 28
        let message = try #require(refusal("h264_cfr.mp4", SamplingOptions(fps: 4, resize: ResizeOptions(minPixels: huge, maxPixels: huge))))
        #expect(message.contains("h264_cfr.mp4") && message.contains("\(VideoDecoder.maxFramePixels)") && message.contains("--max-pixels"), "\(message)")
    }

    /// Many large frames, each under the cap: over the sampling bound (12 frames of 100M pixels
    /// would be 3.6 GB); the message names frames, size, bytes, and --fps / --max-frames.
    @Test func samplingsOverTheByteBoundAreRefused() throws {
        let big = 100_000_000
        let message = try #require(refusal("h264_cfr.mp4", SamplingOptions(fps: 4, resize: ResizeOptions(minPixels: big, maxPixels: big))))
        #expect(message.contains("12 frames") && message.contains("bytes of RGB") && message.contains("\(VideoDecoder.maxSampledBytes)")
                && message.contains("--fps") && message.contains("--max-frames"), "\(message)")
        // Fewer frames fit.
        #expect(refusal("h264_cfr.mp4", SamplingOptions(fps: 4, maxFrames: 4, resize: ResizeOptions(minPixels: big, maxPixels: big))) == nil)
    }

    /// A video whose frames are larger than the cap (12000×12000) is refused even when resized
    /// small, and with --native: decoding one frame would take hundreds of MB per thread.
    @Test func hugeVideoFramesAreRefusedBeforeDecoding() throws {
        for options in [SamplingOptions(), SamplingOptions(resize: ResizeOptions(native: true))] {
            let message = try #require(refusal("huge12000.webm", options))
            #expect(message.contains("12000×12000") && message.contains("\(VideoDecoder.maxFramePixels)"), "\(message)")
            #expect(throws: MediaError.self) { try VideoDecoder(path: Fixtures.video("huge12000.webm")).sample(options) }
        }
    }

    /// Default settings stay far below the bound: the longest default sampling (768 frames
    /// within qwen-vl-utils' total_pixels budget) is under a sixth of it.
    @Test func defaultsAreFarBelowTheBound() throws {
        let options = ResizeOptions()
        let size = try options.outputSize(width: 3840, height: 2160, frameCount: 768)
        #expect(768 * size.width * size.height * 3 < VideoDecoder.maxSampledBytes / 6)
        let image = try ResizeOptions(image: true).outputSize(width: 8000, height: 8000, frameCount: 1)
        #expect(image.width * image.height <= VideoDecoder.maxFramePixels / 8)
        #expect(refusal("h264_cfr.mp4", SamplingOptions()) == nil)
        #expect(refusal("h264_cfr.mp4", SamplingOptions(fps: 30, resize: ResizeOptions(native: true))) == nil)
    }
}
