import CFFmpeg
import Foundation

/// Converts decoded frames to packed RGB24 at a target display size with libswscale (bicubic),
/// honouring the stream's display rotation. One scaler per output; re-created only when the
/// source geometry or format changes mid-stream.
final class FrameScaler {
    let width: Int
    let height: Int
    /// Clockwise rotation applied after scaling: 0, 90, 180 or 270.
    let rotation: Int
    private var sws: OpaquePointer? = nil

    let path: String
    /// A still image's transparency lies on white, as qwen-vl-utils' `to_rgb` puts a picture PIL
    /// opens as RGBA (`VideoDecoder.pastesOnWhite`; video frames drop their alpha, as video
    /// readers do).
    let alphaOnWhite: Bool
    private var alphaSws: OpaquePointer? = nil

    init(width: Int, height: Int, rotation: Int, path: String = "", alphaOnWhite: Bool = false) {
        self.path = path
        self.width = width
        self.height = height
        self.rotation = [90, 180, 270].contains(rotation) ? rotation : 0
        self.alphaOnWhite = alphaOnWhite
    }

    deinit {
        sws_freeContext(sws)
        sws_freeContext(alphaSws)
    }

    /// Whether frames of this format carry an alpha plane (a palette's alpha is PIL's P: dropped).
    /// Which pictures PIL opens as RGBA is the file's to say (`VideoDecoder.pastesOnWhite`).
    static func hasAlpha(_ format: AVPixelFormat) -> Bool {
        guard let d = av_pix_fmt_desc_get(format)?.pointee else { return false }
        return d.flags & UInt64(AV_PIX_FMT_FLAG_ALPHA) != 0 && d.flags & UInt64(AV_PIX_FMT_FLAG_PAL) == 0
    }

    /// `out` = `rgb` over white by `alpha`, as PIL's paste with a mask: (v·a + 255·(255 − a)) / 255,
    /// rounded by its DIV255.
    @inline(__always) static func overWhite(_ v: UInt8, alpha a: UInt8) -> UInt8 {
        let t = Int(v) * Int(a) + 255 * (255 - Int(a)) + 128
        return UInt8(((t >> 8) + t) >> 8)
    }

    /// The frame at its own size, its transparency on white: packed RGB24 in padded rows.
    private func onWhite(_ frame: UnsafeMutablePointer<AVFrame>, format: AVPixelFormat, full: Int32) throws -> PaddedImage {
        let f = frame.pointee
        let w = Int(f.width), h = Int(f.height)
        let out = try PaddedImage(width: w, height: h)
        // 8-bit RGBA (PNG, TIFF) is already what PIL pastes: composited from the decoder's own
        // picture, without an RGBA copy (an 11500² PNG: 0.5 GB less at its peak).
        if format == AV_PIX_FMT_RGBA, let data = f.data.0 {
            let stride = Int(f.linesize.0)
            for y in 0..<h { Self.composite(UnsafePointer(data + y * stride), into: out.row(y), width: w) }
            return out
        }
        alphaSws = sws_getCachedContext(alphaSws, f.width, f.height, format, f.width, f.height, AV_PIX_FMT_RGBA,
                                        SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP, nil, nil, nil)
        guard let alphaSws else {
            throw MediaError.decodeFailed(path: path, reason: "no pixel conversion from \(FFmpeg.pixelFormatName(f.format) ?? "format \(f.format)") to RGBA")
        }
        reelql_sws_set_source_colorspace(alphaSws, Int32(f.colorspace.rawValue), full)
        let rgba = try PaddedImage(width: w, height: h, channels: 4)
        let rows = rgba.withDestination { planes, strides in reelql_sws_scale_frame(alphaSws, frame, planes[0], strides[0]) }
        guard rows == f.height else { throw scaleError(rows) }
        for y in 0..<h { Self.composite(UnsafePointer(rgba.row(y)), into: out.row(y), width: w) }
        return out
    }

    /// One row of RGBA over white into RGB.
    private static func composite(_ s: UnsafePointer<UInt8>, into d: UnsafeMutablePointer<UInt8>, width w: Int) {
        for x in 0..<w {
            let a = s[4 * x + 3]
            d[3 * x] = overWhite(s[4 * x], alpha: a)
            d[3 * x + 1] = overWhite(s[4 * x + 1], alpha: a)
            d[3 * x + 2] = overWhite(s[4 * x + 2], alpha: a)
        }
    }

    /// Packed RGB24 of `frame`, `width`×`height`, rows top to bottom.
    func convert(_ frame: UnsafeMutablePointer<AVFrame>) throws -> [UInt8] {
        let f = frame.pointee
        // A stream may change size mid-way: a frame larger than any sampling may hold is refused
        // before the scaler allocates for it.
        guard Int(f.width) * Int(f.height) <= VideoDecoder.maxFramePixels else {
            throw MediaError.decodeFailed(path: path, reason: "a frame of \(f.width)×\(f.height) is more than the \(VideoDecoder.maxFramePixels) pixels a frame may have")
        }
        var full: Int32 = f.color_range == AVCOL_RANGE_JPEG ? 1 : 0
        let format = reelql_dejpeg(AVPixelFormat(rawValue: f.format), &full)
        // Scale in the coded orientation, then turn the RGB image.
        let quarter = rotation == 90 || rotation == 270
        let codedW = quarter ? height : width
        let codedH = quarter ? width : height
        // Same size: FFmpeg's plain YUV→RGB conversion (what PyAV's and ffmpeg's rgb24 give).
        // Resizing: bicubic with accurate rounding and full-resolution chroma.
        let resizing = Int(f.width) != codedW || Int(f.height) != codedH
        let flags = resizing ? SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP : SWS_BICUBIC
        // A still image with colour and alpha: on white at its own size first, then scaled as RGB.
        let white = alphaOnWhite && Self.hasAlpha(format) ? try onWhite(frame, format: format, full: full) : nil
        // Bicubic with B = 0, C = 0.5: the Keys kernel (a = −0.5) of PIL and torchvision.
        var cubic: [Double] = [0, 0.5]
        sws = sws_getCachedContext(sws, f.width, f.height, white == nil ? format : AV_PIX_FMT_RGB24, Int32(codedW), Int32(codedH),
                                   AV_PIX_FMT_RGB24, flags, nil, nil, &cubic)
        guard let sws else {
            throw MediaError.decodeFailed(path: path, reason: "no pixel conversion from \(FFmpeg.pixelFormatName(f.format) ?? "format \(f.format)") \(f.width)×\(f.height)")
        }
        if white == nil { reelql_sws_set_source_colorspace(sws, Int32(f.colorspace.rawValue), full) }
        // libswscale writes whole SIMD blocks past the end of a row (seen: a 56-pixel-wide
        // frame overran an exact-size buffer), so it writes into padded, aligned rows.
        let dst = try PaddedImage(width: codedW, height: codedH)
        let rows = dst.withDestination { planes, strides in
            guard let white else { return reelql_sws_scale_frame(sws, frame, planes[0], strides[0]) }
            return white.withSource { sp, ss in sws_scale(sws, sp, ss, 0, f.height, planes, strides) }
        }
        guard rows == Int32(codedH) else { throw scaleError(rows) }
        if rotation == 0 { return dst.packed() }
        return FrameScaler.rotate(dst.packed(), width: codedW, height: codedH, clockwise: rotation)
    }

    private func scaleError(_ rows: Int32) -> MediaError {
        .decodeFailed(path: path, reason: "pixel conversion returned \(rows) rows")
    }

    /// Turns a packed RGB24 image of `width`×`height` clockwise by 90, 180 or 270 degrees.
    static func rotate(_ src: [UInt8], width: Int, height: Int, clockwise: Int) -> [UInt8] {
        var dst = [UInt8](repeating: 0, count: src.count)
        let outW = clockwise == 180 ? width : height
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                for y in 0..<height {
                    for x in 0..<width {
                        let (ox, oy): (Int, Int)
                        switch clockwise {
                        case 90: (ox, oy) = (height - 1 - y, x)
                        case 180: (ox, oy) = (width - 1 - x, height - 1 - y)
                        default: (ox, oy) = (y, width - 1 - x) // 270
                        }
                        let si = (y * width + x) * 3, di = (oy * outW + ox) * 3
                        d[di] = s[si]; d[di + 1] = s[si + 1]; d[di + 2] = s[si + 2]
                    }
                }
            }
        }
        return dst
    }
}
