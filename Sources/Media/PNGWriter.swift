import CFFmpeg
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes packed RGB24 images as PNG files with FFmpeg's own PNG encoder.
public enum PNGWriter {
    public static func write(rgb: [UInt8], width: Int, height: Int, to path: String) throws {
        _ = FFmpeg.configured
        guard rgb.count == width * height * 3, width > 0, height > 0 else {
            throw MediaError.invalidArgument("PNG: \(rgb.count) bytes is not a \(width)×\(height) RGB image")
        }
        guard let codec = avcodec_find_encoder(AV_CODEC_ID_PNG) else {
            throw MediaError.writeFailed(path: path, reason: "this FFmpeg has no PNG encoder")
        }
        var ctx = avcodec_alloc_context3(codec)
        defer { avcodec_free_context(&ctx) }
        guard let c = ctx else { throw MediaError.writeFailed(path: path, reason: "out of memory") }
        c.pointee.width = Int32(width)
        c.pointee.height = Int32(height)
        c.pointee.pix_fmt = AV_PIX_FMT_RGB24
        c.pointee.time_base = AVRational(num: 1, den: 1)
        var r = avcodec_open2(c, codec, nil)
        guard r >= 0 else { throw MediaError.writeFailed(path: path, reason: FFmpeg.errorString(r)) }

        var frame = av_frame_alloc()
        defer { av_frame_free(&frame) }
        var packet = av_packet_alloc()
        defer { av_packet_free(&packet) }
        guard let f = frame, let p = packet else { throw MediaError.writeFailed(path: path, reason: "out of memory") }
        f.pointee.width = Int32(width)
        f.pointee.height = Int32(height)
        f.pointee.format = AV_PIX_FMT_RGB24.rawValue
        var bytes = Data()
        try rgb.withUnsafeBufferPointer { buffer in
            reelql_frame_set_packed(f, UnsafeMutablePointer(mutating: buffer.baseAddress), Int32(width * 3))
            r = avcodec_send_frame(c, f)
            guard r >= 0 else { throw MediaError.writeFailed(path: path, reason: FFmpeg.errorString(r)) }
            r = avcodec_send_frame(c, nil)
            while avcodec_receive_packet(c, p) >= 0 {
                bytes.append(p.pointee.data, count: Int(p.pointee.size))
                av_packet_unref(p)
            }
            reelql_frame_set_packed(f, nil, 0)
        }
        guard !bytes.isEmpty else { throw MediaError.writeFailed(path: path, reason: "the PNG encoder produced nothing") }
        try writeFile(bytes, to: path)
    }

    /// Writes `bytes` to `path` by the path's own bytes (a name need not be UTF-8), as
    /// `OutputFile.write`: never blocking on a named pipe, never following a link into a file
    /// elsewhere.
    static func writeFile(_ bytes: Data, to path: String) throws {
        try bytes.withUnsafeBytes { try OutputFile.write(path, $0) }
    }
}
