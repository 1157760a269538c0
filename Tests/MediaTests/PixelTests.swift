import Foundation
import Testing
@testable import Media

/// Pixels against PyAV's rgb24 decode (no resize) and torchvision's bicubic resize.
@Suite struct PixelTests {
    static var videos: [String] { Fixtures.readableVideos.filter { Fixtures.reference.videos[$0]!.rgb != nil } }

    @Test(arguments: videos)
    func nativeFramesMatchPyAV(name: String) throws {
        let ref = Fixtures.reference.videos[name]!
        let rgb = ref.rgb!
        let stem = (name as NSString).deletingPathExtension
        let video = try VideoDecoder(path: Fixtures.video(name))
        let plan = try video.plan(SamplingOptions(resize: ResizeOptions(native: true)))
        #expect(plan.width == rgb.width && plan.height == rgb.height)
        var forced = plan
        forced.indices = rgb.indices
        let sampled = try video.decode(forced)
        #expect(sampled.frames.map(\.index) == rgb.indices)
        for frame in sampled.frames {
            let expected = try Fixtures.rgb("\(stem)-\(frame.index).rgb")
            let mad = meanAbsoluteDifference(frame.rgb, expected)
            #expect(mad <= 0.5, "\(name) frame \(frame.index): mean |Δ| \(mad)")
        }
    }

    /// A still image's transparency lies on white, exactly as qwen-vl-utils' `to_rgb` (PIL's
    /// paste through the alpha; fixtures/scripts/reference_alpha.py); a video frame's alpha is
    /// dropped, as video readers do.
    @Test func imageAlphaLiesOnWhite() throws {
        let video = try VideoDecoder(path: Fixtures.video("alpha56.png"))
        let image = try video.sample(SamplingOptions(maxFrames: 1, resize: ResizeOptions(minPixels: 3136, maxPixels: 16384 * 784, image: true)))
        #expect(image.plan.width == 56 && image.plan.height == 56)
        let expected = try Fixtures.rgb("alpha56-56x56.rgb")
        #expect(image.frames.first?.rgb == expected)
        let frame = try video.sample(SamplingOptions(resize: ResizeOptions(native: true)))
        #expect(frame.frames.first.map { meanAbsoluteDifference($0.rgb, expected) } ?? 0 > 20)
        // An RGB PNG with a transparent colour key: FFmpeg decodes it with alpha, PIL as RGB, and
        // to_rgb keeps the key colour.
        let keyed = try VideoDecoder(path: Fixtures.video("alpha56_key.png"))
            .sample(SamplingOptions(maxFrames: 1, resize: ResizeOptions(minPixels: 3136, maxPixels: 16384 * 784, image: true)))
        #expect(keyed.frames.first?.rgb == (try Fixtures.rgb("alpha56_key-56x56.rgb")))
    }

    /// An animated WebP (which this FFmpeg cannot decode) is told by its VP8X flags, so its
    /// error says so instead of "damaged data, or a picture beyond FFmpeg's size limits". The
    /// first header is that of a 3-frame WebP written by PIL (save_all=True).
    @Test func animatedWebPIsToldByItsHeader() {
        let animated: [UInt8] = [0x52, 0x49, 0x46, 0x46, 0x68, 0x01, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50,
                                 0x56, 0x50, 0x38, 0x58, 0x0a, 0x00, 0x00, 0x00, 0x02]
        #expect(VideoDecoder.isAnimatedWebP(animated))
        var alphaOnly = animated
        alphaOnly[20] = 0x10
        #expect(!VideoDecoder.isAnimatedWebP(alphaOnly))
        var lossless = animated
        lossless.replaceSubrange(12..<16, with: Array("VP8L".utf8))
        #expect(!VideoDecoder.isAnimatedWebP(lossless))
        #expect(!VideoDecoder.isAnimatedWebP(Array(animated.prefix(20))))
    }

    /// Which stills PIL opens as RGBA (to_rgb pastes those on white), by codec and PNG header.
    @Test func whichStillsArePastedOnWhite() {
        func png(depth: UInt8, colour: UInt8) -> [UInt8] {
            [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13] + Array("IHDR".utf8) + [0, 0, 0, 56, 0, 0, 0, 56, depth, colour]
        }
        #expect(VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 8, colour: 6)))
        #expect(VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 16, colour: 6)))
        #expect(VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 16, colour: 4)))
        #expect(!VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 8, colour: 4)))
        #expect(!VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 8, colour: 2)))
        #expect(!VideoDecoder.pastesOnWhite(codec: "png", header: png(depth: 8, colour: 3)))
        #expect(!VideoDecoder.pastesOnWhite(codec: "png", header: Array(png(depth: 8, colour: 6).prefix(20))))
        #expect(VideoDecoder.pastesOnWhite(codec: "webp", header: []) && VideoDecoder.pastesOnWhite(codec: "tiff", header: []))
        #expect(!VideoDecoder.pastesOnWhite(codec: "bmp", header: []) && !VideoDecoder.pastesOnWhite(codec: "mjpeg", header: []))
    }

    /// smart_resize that lands on the decoded size itself changes nothing.
    @Test func identitySmartResizeIsNative() throws {
        let video = try VideoDecoder(path: Fixtures.video("native224x112.mp4"))
        let options = SamplingOptions(resize: ResizeOptions(minPixels: 784, maxPixels: 224 * 112))
        let resized = try video.sample(options)
        let native = try video.sample(SamplingOptions(resize: ResizeOptions(native: true)))
        #expect(resized.plan.width == 224 && resized.plan.height == 112)
        #expect(resized.frames.map(\.rgb) == native.frames.map(\.rgb))
        let expected = try Fixtures.rgb("native224x112-0.rgb")
        #expect(meanAbsoluteDifference(resized.frames[0].rgb, expected) <= 0.5)
    }

    @Test(arguments: videos)
    func resizedFramesMatchBicubicReference(name: String) throws {
        let rgb = Fixtures.reference.videos[name]!.rgb!
        let stem = (name as NSString).deletingPathExtension
        let video = try VideoDecoder(path: Fixtures.video(name))
        let resize = ResizeOptions(minPixels: rgb.resized.options.minPixels, maxPixels: rgb.resized.options.maxPixels)
        var plan = try video.plan(SamplingOptions(resize: resize))
        #expect(plan.width == rgb.resized.width && plan.height == rgb.resized.height)
        plan.indices = rgb.indices
        for frame in try video.decode(plan).frames {
            let expected = try Fixtures.rgb("\(stem)-\(frame.index)-\(plan.width)x\(plan.height).rgb")
            let db = psnr(frame.rgb, expected)
            #expect(db >= 30, "\(name) frame \(frame.index): PSNR \(db) dB")
        }
    }

    @Test func rotationTurnsTheImage() {
        // 3×2 image, pixel value = its position, turned a quarter each way and upside down.
        let src: [UInt8] = (0..<6).flatMap { [UInt8($0), 0, 0] }
        let cw = FrameScaler.rotate(src, width: 3, height: 2, clockwise: 90).enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        #expect(cw == [3, 0, 4, 1, 5, 2])
        let ccw = FrameScaler.rotate(src, width: 3, height: 2, clockwise: 270).enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        #expect(ccw == [2, 5, 1, 4, 0, 3])
        let half = FrameScaler.rotate(src, width: 3, height: 2, clockwise: 180).enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        #expect(half == [5, 4, 3, 2, 1, 0])
    }
}
