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

    init(width: Int, height: Int, rotation: Int, path: String = "") {
        self.path = path
        self.width = width
        self.height = height
        self.rotation = [90, 180, 270].contains(rotation) ? rotation : 0
    }

    deinit { sws_freeContext(sws) }

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
        // Bicubic with B = 0, C = 0.5: the Keys kernel (a = −0.5) of PIL and torchvision.
        var cubic: [Double] = [0, 0.5]
        sws = sws_getCachedContext(sws, f.width, f.height, format, Int32(codedW), Int32(codedH),
                                   AV_PIX_FMT_RGB24, flags, nil, nil, &cubic)
        guard let sws else {
            throw MediaError.decodeFailed(path: path, reason: "no pixel conversion from \(FFmpeg.pixelFormatName(f.format) ?? "format \(f.format)") \(f.width)×\(f.height)")
        }
        reelql_sws_set_source_colorspace(sws, Int32(f.colorspace.rawValue), full)
        // libswscale writes whole SIMD blocks past the end of a row (seen: a 56-pixel-wide
        // frame overran an exact-size buffer), so it writes into padded, aligned rows.
        let dst = try PaddedImage(width: codedW, height: codedH)
        let rows = dst.withDestination { planes, strides in reelql_sws_scale_frame(sws, frame, planes[0], strides[0]) }
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
