import CFFmpeg
import Foundation

/// Writes a video file from packed RGB24 frames with FFmpeg's own encoders: H.264 (libx264, when
/// this FFmpeg has it) or else MPEG-4 part 2, 4:2:0, in the container libavformat picks for the
/// file name (`.mp4`, `.mkv`, …). For generated test footage (`reelql bench pipeline`); frames
/// are shown at a constant `fps`.
public final class VideoWriter {
    public let path: String
    public let width: Int
    public let height: Int
    /// The encoder's name ("libx264", "mpeg4").
    public let encoder: String
    /// Frames appended so far.
    public private(set) var frames = 0

    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var stream: UnsafeMutablePointer<AVStream>
    private var frame: UnsafeMutablePointer<AVFrame>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private let scaler: OpaquePointer
    private var finished = false
    private let firstFrame: Int64

    /// Opens `path` for writing (replacing it) with frames of `width`×`height` (even sides) at
    /// `fps` frames per second and a keyframe every `keyframeInterval` frames. `firstFrame`: the
    /// first frame's timestamp in frames (a video that starts late, as a cut from a stream does).
    public init(path: String, width: Int, height: Int, fps: Int, keyframeInterval: Int = 50, firstFrame: Int64 = 0) throws {
        FFmpeg.configured
        guard (0...(Int64(1) << 50)).contains(firstFrame) else {
            throw MediaError.invalidArgument("a written video's first frame must be at 0 to 2⁵⁰ frames, got \(firstFrame)")
        }
        self.firstFrame = firstFrame
        guard width >= 16, height >= 16, width <= 8192, height <= 8192, width % 2 == 0, height % 2 == 0 else {
            throw MediaError.invalidArgument("a written video's frames must have even sides of 16 to 8192 pixels, got \(width)×\(height)")
        }
        guard (1...240).contains(fps) else { throw MediaError.invalidArgument("a written video's fps must be between 1 and 240, got \(fps)") }
        guard keyframeInterval >= 1 else { throw MediaError.invalidArgument("the keyframe interval must be ≥ 1, got \(keyframeInterval)") }
        self.path = path
        self.width = width
        self.height = height
        func fail(_ operation: String, _ r: Int32) -> MediaError { .ffmpeg(path: path, operation: operation, message: FFmpeg.errorString(r)) }

        var fmt: UnsafeMutablePointer<AVFormatContext>?
        var r = avformat_alloc_output_context2(&fmt, nil, nil, path)
        guard r >= 0, let fmt else { throw MediaError.writeFailed(path: path, reason: "no container format for this file name") }
        format = fmt
        let found = avcodec_find_encoder_by_name("libx264") ?? avcodec_find_encoder(AV_CODEC_ID_MPEG4)
        guard let found, let newStream = avformat_new_stream(fmt, nil) else {
            avformat_free_context(fmt)
            throw MediaError.writeFailed(path: path, reason: "this FFmpeg has neither an H.264 nor an MPEG-4 encoder")
        }
        stream = newStream
        encoder = String(cString: found.pointee.name)
        guard let sws = sws_getContext(Int32(width), Int32(height), AV_PIX_FMT_RGB24, Int32(width), Int32(height), AV_PIX_FMT_YUV420P,
                                       SWS_BICUBIC, nil, nil, nil) else {
            avformat_free_context(fmt)
            throw MediaError.ffmpeg(path: path, operation: "converting frames to YUV", message: "no scaler")
        }
        scaler = sws
        // From here on `deinit` releases whatever was allocated.
        guard let c = avcodec_alloc_context3(found) else { throw MediaError.ffmpeg(path: path, operation: "allocating the encoder", message: "out of memory") }
        codec = c
        c.pointee.width = Int32(width)
        c.pointee.height = Int32(height)
        c.pointee.pix_fmt = AV_PIX_FMT_YUV420P
        c.pointee.time_base = AVRational(num: 1, den: Int32(fps))
        c.pointee.framerate = AVRational(num: Int32(fps), den: 1)
        c.pointee.gop_size = Int32(keyframeInterval)
        c.pointee.max_b_frames = 2
        if (fmt.pointee.oformat.pointee.flags & AVFMT_GLOBALHEADER) != 0 { c.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER }
        var options: OpaquePointer? = nil
        defer { av_dict_free(&options) }
        if encoder == "libx264" {
            av_dict_set(&options, "preset", "veryfast", 0) // and x264's default quality (CRF 23)
        } else {
            c.pointee.bit_rate = Int64(width * height * fps / 4) // ~1.3 Mbit/s at 448² and 25 fps
        }
        r = avcodec_open2(c, found, &options)
        guard r >= 0 else { throw fail("opening the \(encoder) encoder", r) }
        r = avcodec_parameters_from_context(newStream.pointee.codecpar, c)
        guard r >= 0 else { throw fail("describing the video stream", r) }
        newStream.pointee.time_base = c.pointee.time_base
        if (fmt.pointee.oformat.pointee.flags & AVFMT_NOFILE) == 0 {
            r = avio_open(&fmt.pointee.pb, path, AVIO_FLAG_WRITE)
            guard r >= 0 else { throw MediaError.writeFailed(path: path, reason: FFmpeg.errorString(r)) }
        }
        r = avformat_write_header(fmt, nil)
        guard r >= 0 else { throw fail("writing the container header", r) }
        guard let f = av_frame_alloc(), let p = av_packet_alloc() else {
            throw MediaError.ffmpeg(path: path, operation: "allocating a frame", message: "out of memory")
        }
        frame = f
        packet = p
        f.pointee.format = AV_PIX_FMT_YUV420P.rawValue
        f.pointee.width = Int32(width)
        f.pointee.height = Int32(height)
        r = av_frame_get_buffer(f, 0)
        guard r >= 0 else { throw fail("allocating a frame", r) }
    }

    deinit {
        if let fmt = format {
            if (fmt.pointee.oformat.pointee.flags & AVFMT_NOFILE) == 0, fmt.pointee.pb != nil { avio_closep(&fmt.pointee.pb) }
            avformat_free_context(fmt)
        }
        avcodec_free_context(&codec)
        av_frame_free(&frame)
        av_packet_free(&packet)
        sws_freeContext(scaler)
    }

    /// Encodes one frame: `rgb` holds width × height × 3 bytes.
    public func append(rgb: [UInt8]) throws {
        guard !finished else { throw MediaError.invalidArgument("\(path): frames appended after finish()") }
        guard rgb.count == width * height * 3 else {
            throw MediaError.invalidArgument("a \(width)×\(height) frame needs \(width * height * 3) bytes of RGB, got \(rgb.count)")
        }
        guard let f = frame, let c = codec else { return }
        var r = av_frame_make_writable(f)
        guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "reusing a frame", message: FFmpeg.errorString(r)) }
        let rows = try PaddedImage(rgb: rgb, width: width, height: height).scale(with: scaler, into: f)
        guard rows == Int32(height) else { throw MediaError.ffmpeg(path: path, operation: "converting a frame to YUV", message: "\(rows) rows") }
        f.pointee.pts = firstFrame + Int64(frames)
        r = avcodec_send_frame(c, f)
        guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "encoding frame \(frames)", message: FFmpeg.errorString(r)) }
        frames += 1
        try drain()
    }

    /// Flushes the encoder and writes the container's trailer; the file is complete after it.
    public func finish() throws {
        guard !finished, let c = codec, let fmt = format else { return }
        finished = true
        let r = avcodec_send_frame(c, nil)
        guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "flushing the encoder", message: FFmpeg.errorString(r)) }
        try drain()
        let t = av_write_trailer(fmt)
        guard t >= 0 else { throw MediaError.ffmpeg(path: path, operation: "writing the container trailer", message: FFmpeg.errorString(t)) }
        if (fmt.pointee.oformat.pointee.flags & AVFMT_NOFILE) == 0 { avio_closep(&fmt.pointee.pb) }
    }

    /// Moves every packet the encoder has ready into the file.
    private func drain() throws {
        guard let c = codec, let p = packet, let fmt = format else { return }
        while true {
            let r = avcodec_receive_packet(c, p)
            if r == FFmpeg.eagain || r == FFmpeg.eof { return }
            guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "encoding", message: FFmpeg.errorString(r)) }
            // Every frame lasts one tick: without a duration, MP4's edit list would end at the
            // last frame's start and hide that frame.
            if p.pointee.duration <= 0 { p.pointee.duration = 1 }
            av_packet_rescale_ts(p, c.pointee.time_base, stream.pointee.time_base)
            p.pointee.stream_index = stream.pointee.index
            let w = av_interleaved_write_frame(fmt, p)
            guard w >= 0 else { throw MediaError.writeFailed(path: path, reason: FFmpeg.errorString(w)) }
        }
    }
}
