import CFFmpeg
import Foundation

/// Small helpers over FFmpeg's C API shared by the Media types.
enum FFmpeg {
    /// FFmpeg logs to stderr by default; reelql reports problems itself, so FFmpeg stays quiet
    /// unless REELQL_FFMPEG_LOG is set (to an av_log level number, e.g. 24 for warnings).
    static let configured: Void = {
        reelql_install_log_counter()
        if let level = ProcessInfo.processInfo.environment["REELQL_FFMPEG_LOG"], let n = Int32(level) {
            reelql_set_log_level(n)
        } else {
            reelql_set_log_level(reelql_log_quiet())
        }
    }()

    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        if av_strerror(code, &buffer, buffer.count) < 0 { return "error \(code)" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    static let eagain = reelql_averror_eagain()
    static let eof = reelql_averror_eof()
    static let invalidData = reelql_averror_invaliddata()
    static let noPTS = reelql_nopts()

    static func double(_ q: AVRational) -> Double? {
        guard q.num != 0, q.den != 0 else { return nil }
        return Double(q.num) / Double(q.den)
    }

    static func string(_ q: AVRational) -> String? {
        guard q.num != 0, q.den != 0 else { return nil }
        return "\(q.num)/\(q.den)"
    }

    static func codecName(_ id: AVCodecID) -> String {
        guard let name = avcodec_get_name(id) else { return "unknown" }
        return String(cString: name)
    }

    static func pixelFormatName(_ raw: Int32) -> String? {
        guard let name = av_get_pix_fmt_name(AVPixelFormat(rawValue: raw)) else { return nil }
        return String(cString: name)
    }

    /// A FourCC codec tag as text ("avc1"), or nil when it is not printable.
    static func fourCC(_ tag: UInt32) -> String? {
        guard tag != 0 else { return nil }
        let bytes = (0..<4).map { UInt8((tag >> (8 * UInt32($0))) & 0xff) }
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// An open demuxer on one file, positioned on its video stream. Owns the AVFormatContext.
final class Demuxer {
    let path: String
    private(set) var context: UnsafeMutablePointer<AVFormatContext>
    let streamIndex: Int32
    /// Packets of the video stream returned so far.
    private(set) var packetsRead = 0

    /// Opens `path` and selects its video stream, turning every failure into a `MediaError`.
    init(path: String) throws {
        _ = FFmpeg.configured
        self.path = path
        try Demuxer.checkOpenable(path)

        var ctx: UnsafeMutablePointer<AVFormatContext>? = nil
        // The path's own bytes (it may not be UTF-8); a relative path is marked as a file so a
        // name holding ':' is not taken for a protocol.
        let url = path.hasPrefix("/") ? path : "file:" + path
        let openResult = PathBytes.withCString(url) { avformat_open_input(&ctx, $0, nil, nil) }
        guard openResult >= 0, let opened = ctx else {
            if Demuxer.looksLikeUnfinishedMP4(path: path) {
                var damage = DecodeDamage()
                damage.truncated = true
                damage.missingIndex = true
                throw MediaError.truncated(path: path, damage: damage)
            }
            if openResult == -EACCES {
                throw MediaError.notAVideo(path: path, reason: "permission denied")
            }
            throw MediaError.notAVideo(path: path, reason: FFmpeg.errorString(openResult))
        }
        var owned: UnsafeMutablePointer<AVFormatContext>? = opened
        // Probing decodes a first frame: its decoders allocate no picture past the frame limit
        // (a 69-byte PNG can declare 16250×16250 at 16 bits: 2 GB). A size the container declared
        // stays known when the decoder refused it, so that it is said, and refused, as such.
        let streams = Int(opened.pointee.nb_streams)
        let declared = (0..<streams).map { i in opened.pointee.streams[i].map { ($0.pointee.codecpar.pointee.width, $0.pointee.codecpar.pointee.height) } }
        var probeOptions = [OpaquePointer?](repeating: nil, count: streams)
        for i in probeOptions.indices { av_dict_set(&probeOptions[i], "max_pixels", String(VideoDecoder.ffmpegMaxPixels), 0) }
        let infoResult = probeOptions.withUnsafeMutableBufferPointer { avformat_find_stream_info(opened, $0.baseAddress) }
        for i in probeOptions.indices { av_dict_free(&probeOptions[i]) }
        for i in 0..<min(streams, Int(opened.pointee.nb_streams)) {
            guard let size = declared[i], size.0 > 0, size.1 > 0, let par = opened.pointee.streams[i]?.pointee.codecpar,
                  par.pointee.width == 0 && par.pointee.height == 0 else { continue }
            par.pointee.width = size.0
            par.pointee.height = size.1
        }
        if infoResult < 0 {
            avformat_close_input(&owned)
            throw MediaError.notAVideo(path: path, reason: FFmpeg.errorString(infoResult))
        }
        guard let index = Demuxer.videoStreamIndex(opened) else {
            let kinds = Demuxer.streamKinds(opened)
            avformat_close_input(&owned)
            if kinds.isEmpty {
                throw MediaError.notAVideo(path: path, reason: "no media streams found")
            }
            throw MediaError.noVideoStream(path: path, streams: kinds)
        }
        let codecID = opened.pointee.streams[Int(index)]!.pointee.codecpar.pointee.codec_id
        if Demuxer.textArtCodecs.contains(codecID) {
            avformat_close_input(&owned)
            throw MediaError.notAVideo(path: path, reason: "text, not video")
        }
        self.context = opened
        self.streamIndex = index
        logCounts.initialize(repeating: 0, count: 2)
        opened.pointee.opaque = UnsafeMutableRawPointer(logCounts)
        // Only our stream is demuxed; the others are skipped by the demuxer.
        for i in 0..<Int(opened.pointee.nb_streams) where i != Int(index) {
            opened.pointee.streams[i]!.pointee.discard = AVDISCARD_ALL
        }
    }

    deinit {
        var ctx: UnsafeMutablePointer<AVFormatContext>? = context
        avformat_close_input(&ctx)
        logCounts.deallocate()
    }

    /// Errors the demuxer logged: [0] damage, [1] the file ending early.
    private let logCounts = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
    var loggedErrors: Int { Int(reelql_atomic_load(logCounts)) }
    var endedPrematurely: Bool { reelql_atomic_load(logCounts + 1) > 0 }

    var stream: UnsafeMutablePointer<AVStream> { context.pointee.streams[Int(streamIndex)]! }
    var codecParameters: UnsafeMutablePointer<AVCodecParameters> { stream.pointee.codecpar }

    /// Reads the next packet of the video stream into `packet`. Returns 0, AVERROR_EOF or an error.
    func read(into packet: UnsafeMutablePointer<AVPacket>) -> Int32 {
        while true {
            let r = av_read_frame(context, packet)
            if r < 0 { return r }
            if packet.pointee.stream_index == streamIndex { packetsRead += 1; return 0 }
            av_packet_unref(packet)
        }
    }

    /// Seeks to the keyframe at or before `timestamp` (in stream time base).
    func seek(to timestamp: Int64) -> Bool {
        av_seek_frame(context, streamIndex, timestamp, AVSEEK_FLAG_BACKWARD) >= 0
    }

    // MARK: - Stream selection

    /// Codecs FFmpeg exposes as "video" that are text art (the tty demuxer claims any .txt file).
    static let textArtCodecs: Set<AVCodecID> = [AV_CODEC_ID_ANSI, AV_CODEC_ID_BINTEXT, AV_CODEC_ID_XBIN, AV_CODEC_ID_IDF]

    /// The video stream to decode: FFmpeg's best video stream, never a cover-art picture.
    static func videoStreamIndex(_ ctx: UnsafeMutablePointer<AVFormatContext>) -> Int32? {
        func usable(_ i: Int) -> Bool {
            let st = ctx.pointee.streams[i]!.pointee
            return st.codecpar.pointee.codec_type == AVMEDIA_TYPE_VIDEO
                && (st.disposition & AV_DISPOSITION_ATTACHED_PIC) == 0
        }
        let best = av_find_best_stream(ctx, AVMEDIA_TYPE_VIDEO, -1, -1, nil, 0)
        if best >= 0 && usable(Int(best)) { return best }
        var chosen: Int32? = nil
        var chosenArea = -1
        for i in 0..<Int(ctx.pointee.nb_streams) where usable(i) {
            let par = ctx.pointee.streams[i]!.pointee.codecpar.pointee
            let area = Int(par.width) * Int(par.height)
            if area > chosenArea { chosen = Int32(i); chosenArea = area }
        }
        return chosen
    }

    static func streamKinds(_ ctx: UnsafeMutablePointer<AVFormatContext>) -> [String] {
        (0..<Int(ctx.pointee.nb_streams)).map { i in
            let st = ctx.pointee.streams[i]!.pointee
            let par = st.codecpar.pointee
            let codec = FFmpeg.codecName(par.codec_id)
            if par.codec_type == AVMEDIA_TYPE_VIDEO && (st.disposition & AV_DISPOSITION_ATTACHED_PIC) != 0 {
                return "cover art (\(codec))"
            }
            let kind: String
            switch par.codec_type {
            case AVMEDIA_TYPE_AUDIO: kind = "audio"
            case AVMEDIA_TYPE_SUBTITLE: kind = "subtitles"
            case AVMEDIA_TYPE_DATA: kind = "data"
            case AVMEDIA_TYPE_ATTACHMENT: kind = "attachment"
            case AVMEDIA_TYPE_VIDEO: kind = "video"
            default: kind = "unknown"
            }
            return "\(kind) (\(codec))"
        }
    }

    /// Refuses, before anything opens it, a path that is missing, a directory, a special file
    /// (opening a FIFO blocks until a writer appears; a device may have side effects) or an
    /// empty file. A regular file whose size `stat` gives as 0 but that has content (under /proc,
    /// say) passes, and FFmpeg has the last word.
    static func checkOpenable(_ path: String) throws {
        let (found, code) = FileStatus.of(path)
        guard let status = found else {
            switch code {
            case ENOENT, ENOTDIR: throw MediaError.fileNotFound(path: path)
            case EACCES: throw MediaError.notAVideo(path: path, reason: "permission denied")
            default: throw MediaError.notAVideo(path: path, reason: FileStatus.describe(errno: code))
            }
        }
        if status.kind == .directory { throw MediaError.notAVideo(path: path, reason: "it is a directory") }
        if let reason = status.notRegularReason { throw MediaError.notAVideo(path: path, reason: reason) }
        if status.size == 0 && !FileStatus.hasContent(path) { throw MediaError.emptyFile(path: path) }
    }

    /// An ISO-BMFF file ('ftyp' first) that FFmpeg cannot open has almost always lost its
    /// index ('moov'): a download or recording that never finished.
    static func looksLikeUnfinishedMP4(path: String) -> Bool {
        let head = FileStatus.head(path, count: 12)
        guard head.count == 12 else { return false }
        return Array(head[4..<8]) == Array("ftyp".utf8)
    }
}
