import CFFmpeg
import Foundation

/// A small JPEG picture: what the database keeps of a clip so that people can see it.
public struct Thumbnail: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// One sampled frame: the middle one.
        case frame
        /// Up to `Thumbnail.stripFrames` sampled frames side by side, in time order.
        case strip
    }
    public var kind: Kind
    public var width: Int
    public var height: Int
    /// JPEG (JFIF) bytes.
    public var jpeg: Data
    public static let mimeType = "image/jpeg"
    public static let stripFrames = 8

    /// The middle sampled frame and a contact strip of up to 8 frames, each scaled (never
    /// enlarged) so that its frames' longest side is at most `maxSide`, encoded with FFmpeg's MJPEG
    /// encoder. No frames: no thumbnails.
    public static func make(frames: [VideoFrame], maxSide: Int = 320, quality: Int = 4) throws -> [Thumbnail] {
        guard let middle = frames.isEmpty ? nil : frames[(frames.count - 1) / 2] else { return [] }
        var out = [try encode(middle, maxSide: maxSide, quality: quality, kind: .frame)]
        // Strip: evenly spread frames, each at most maxSide / 2 on its longest side.
        let count = min(stripFrames, frames.count)
        let picks = (0..<count).map { count == 1 ? 0 : Int((Double($0) * Double(frames.count - 1) / Double(count - 1)).rounded()) }
        let cell = max(1, maxSide / 2)
        let scaled = try picks.map { try scale(frames[$0], maxSide: cell) }
        let h = scaled.map(\.height).max() ?? 1
        let w = scaled.reduce(0) { $0 + $1.width }
        var strip = [UInt8](repeating: 0, count: w * h * 3)
        var x0 = 0
        for s in scaled {
            let top = (h - s.height) / 2
            for y in 0..<s.height {
                let src = y * s.width * 3, dst = ((top + y) * w + x0) * 3
                strip.replaceSubrange(dst..<(dst + s.width * 3), with: s.rgb[src..<(src + s.width * 3)])
            }
            x0 += s.width
        }
        out.append(Thumbnail(kind: .strip, width: w, height: h, jpeg: try jpeg(rgb: strip, width: w, height: h, quality: quality)))
        return out
    }

    static func encode(_ frame: VideoFrame, maxSide: Int, quality: Int, kind: Kind) throws -> Thumbnail {
        let s = try scale(frame, maxSide: maxSide)
        return Thumbnail(kind: kind, width: s.width, height: s.height, jpeg: try jpeg(rgb: s.rgb, width: s.width, height: s.height, quality: quality))
    }

    /// `frame` with its longest side at most `maxSide` (aspect kept; never enlarged), packed RGB24.
    static func scale(_ frame: VideoFrame, maxSide: Int) throws -> (rgb: [UInt8], width: Int, height: Int) {
        let longest = max(frame.width, frame.height)
        guard longest > maxSide else { return (frame.rgb, frame.width, frame.height) }
        let f = Double(maxSide) / Double(longest)
        let w = max(1, Int((Double(frame.width) * f).rounded())), h = max(1, Int((Double(frame.height) * f).rounded()))
        return (try resize(rgb: frame.rgb, width: frame.width, height: frame.height, to: w, h), w, h)
    }

    /// Packed RGB24 resized with libswscale (bicubic) to `dw`×`dh`. libswscale reads and writes
    /// whole SIMD blocks past the end of a row, so both sides go through padded, aligned rows.
    private static func resize(rgb: [UInt8], width: Int, height: Int, to dw: Int, _ dh: Int) throws -> [UInt8] {
        guard let sws = sws_getContext(Int32(width), Int32(height), AV_PIX_FMT_RGB24, Int32(dw), Int32(dh), AV_PIX_FMT_RGB24,
                                       SWS_BICUBIC | SWS_ACCURATE_RND, nil, nil, nil) else {
            throw MediaError.ffmpeg(path: "", operation: "scaling a thumbnail", message: "no scaler for \(width)×\(height) → \(dw)×\(dh)")
        }
        defer { sws_freeContext(sws) }
        let src = try PaddedImage(rgb: rgb, width: width, height: height)
        let dst = try PaddedImage(width: dw, height: dh)
        let rows = src.withSource { sp, ss in dst.withDestination { dp, ds in sws_scale(sws, sp, ss, 0, Int32(height), dp, ds) } }
        guard rows == Int32(dh) else {
            throw MediaError.ffmpeg(path: "", operation: "scaling a thumbnail", message: "the scaler returned \(rows) of \(dh) rows")
        }
        return dst.packed()
    }

    /// Baseline JPEG of a packed RGB24 image through FFmpeg's MJPEG encoder (full-range 4:2:0;
    /// `quality` is the encoder's quantiser scale, 2 best … 31 worst).
    public static func jpeg(rgb: [UInt8], width: Int, height: Int, quality: Int = 4) throws -> Data {
        guard width > 0, height > 0, rgb.count == width * height * 3 else {
            throw MediaError.invalidArgument("a thumbnail needs \(width)×\(height)×3 bytes of RGB, got \(rgb.count)")
        }
        func fail(_ operation: String, _ r: Int32) -> MediaError {
            .ffmpeg(path: "", operation: operation, message: FFmpeg.errorString(r))
        }
        guard let codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG) else {
            throw MediaError.ffmpeg(path: "", operation: "finding the MJPEG encoder", message: "this FFmpeg build has none")
        }
        var ctx = avcodec_alloc_context3(codec)
        guard let c = ctx else { throw MediaError.ffmpeg(path: "", operation: "allocating the MJPEG encoder", message: "out of memory") }
        defer { avcodec_free_context(&ctx) }
        let q = Int32(min(31, max(2, quality)))
        c.pointee.width = Int32(width)
        c.pointee.height = Int32(height)
        c.pointee.pix_fmt = AV_PIX_FMT_YUVJ420P
        c.pointee.color_range = AVCOL_RANGE_JPEG
        c.pointee.time_base = AVRational(num: 1, den: 1)
        // A square-pixel aspect makes the encoder write a JFIF APP0 header (tools that sniff JPEG
        // by its JFIF marker, as Datasette's image plugin does, then recognise it); BITEXACT drops
        // the "Lavc" version comment, so the bytes do not depend on the FFmpeg build's version.
        c.pointee.sample_aspect_ratio = AVRational(num: 1, den: 1)
        c.pointee.flags |= AV_CODEC_FLAG_QSCALE | AV_CODEC_FLAG_BITEXACT
        c.pointee.global_quality = q * FF_QP2LAMBDA
        var r = avcodec_open2(c, codec, nil)
        guard r >= 0 else { throw fail("opening the MJPEG encoder", r) }
        var frame = av_frame_alloc()
        guard let f = frame else { throw MediaError.ffmpeg(path: "", operation: "allocating a frame", message: "out of memory") }
        defer { av_frame_free(&frame) }
        f.pointee.format = AV_PIX_FMT_YUVJ420P.rawValue
        f.pointee.width = Int32(width)
        f.pointee.height = Int32(height)
        f.pointee.color_range = AVCOL_RANGE_JPEG
        r = av_frame_get_buffer(f, 0)
        guard r >= 0 else { throw fail("allocating a frame", r) }
        guard let sws = sws_getContext(Int32(width), Int32(height), AV_PIX_FMT_RGB24, Int32(width), Int32(height), AV_PIX_FMT_YUVJ420P,
                                       SWS_BICUBIC | SWS_ACCURATE_RND, nil, nil, nil) else {
            throw MediaError.ffmpeg(path: "", operation: "converting a thumbnail to YUV", message: "no scaler")
        }
        defer { sws_freeContext(sws) }
        let src = try PaddedImage(rgb: rgb, width: width, height: height)
        let rows = src.scale(with: sws, into: f)
        guard rows == Int32(height) else { throw MediaError.ffmpeg(path: "", operation: "converting a thumbnail to YUV", message: "\(rows) rows") }
        f.pointee.pts = 0
        f.pointee.quality = c.pointee.global_quality
        r = avcodec_send_frame(c, f)
        guard r >= 0 else { throw fail("encoding a thumbnail", r) }
        r = avcodec_send_frame(c, nil)
        guard r >= 0 else { throw fail("encoding a thumbnail", r) }
        var packet = av_packet_alloc()
        guard let p = packet else { throw MediaError.ffmpeg(path: "", operation: "allocating a packet", message: "out of memory") }
        defer { av_packet_free(&packet) }
        r = avcodec_receive_packet(c, p)
        guard r >= 0, let bytes = p.pointee.data, p.pointee.size > 0 else { throw fail("encoding a thumbnail", r) }
        return Data(bytes: bytes, count: Int(p.pointee.size))
    }
}

/// A packed image (RGB24, or RGBA with `channels` 4) in av_malloc'd rows aligned to 64 bytes,
/// with a padded stride and a spare row, as libswscale's SIMD code expects of its source and
/// destination.
final class PaddedImage {
    let width: Int, height: Int, channels: Int, stride: Int
    private let buffer: UnsafeMutablePointer<UInt8>

    init(width: Int, height: Int, channels: Int = 3) throws {
        self.width = width; self.height = height; self.channels = channels
        stride = (width * channels + 63) / 64 * 64
        guard let p = av_mallocz(stride * (height + 1) + 64) else {
            throw MediaError.ffmpeg(path: "", operation: "allocating a \(width)×\(height) image", message: "out of memory")
        }
        buffer = p.assumingMemoryBound(to: UInt8.self)
    }

    /// Row `y`'s first byte.
    func row(_ y: Int) -> UnsafeMutablePointer<UInt8> { buffer + y * stride }

    convenience init(rgb: [UInt8], width: Int, height: Int) throws {
        try self.init(width: width, height: height)
        rgb.withUnsafeBufferPointer { src in
            for y in 0..<height { (buffer + y * stride).update(from: src.baseAddress! + y * width * 3, count: width * 3) }
        }
    }

    deinit { av_free(buffer) }

    /// As a destination: sws_scale's `dst` and `dstStride`.
    func withDestination<R>(_ body: (UnsafePointer<UnsafeMutablePointer<UInt8>?>, UnsafePointer<Int32>) -> R) -> R {
        var planes: [UnsafeMutablePointer<UInt8>?] = [buffer, nil, nil, nil]
        var strides: [Int32] = [Int32(stride), 0, 0, 0]
        return body(&planes, &strides)
    }

    /// As a source: sws_scale's `srcSlice` and `srcStride`.
    func withSource<R>(_ body: (UnsafePointer<UnsafePointer<UInt8>?>, UnsafePointer<Int32>) -> R) -> R {
        var planes: [UnsafePointer<UInt8>?] = [UnsafePointer(buffer), nil, nil, nil]
        var strides: [Int32] = [Int32(stride), 0, 0, 0]
        return body(&planes, &strides)
    }

    /// Converts the whole image into `frame`'s planes with `sws` (set up for this size); the rows written.
    func scale(with sws: OpaquePointer, into frame: UnsafeMutablePointer<AVFrame>) -> Int32 {
        withSource { sp, ss -> Int32 in
            withUnsafeMutablePointer(to: &frame.pointee.data) { data in
                withUnsafeMutablePointer(to: &frame.pointee.linesize) { lines in
                    data.withMemoryRebound(to: UnsafeMutablePointer<UInt8>?.self, capacity: 8) { d in
                        lines.withMemoryRebound(to: Int32.self, capacity: 8) { l in
                            sws_scale(sws, sp, ss, 0, Int32(height), d, l)
                        }
                    }
                }
            }
        }
    }

    func packed() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: width * height * channels)
        out.withUnsafeMutableBufferPointer { dst in
            for y in 0..<height { (dst.baseAddress! + y * width * channels).update(from: buffer + y * stride, count: width * channels) }
        }
        return out
    }
}
