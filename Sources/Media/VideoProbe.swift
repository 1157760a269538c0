import CFFmpeg
import Foundation

/// A video file's metadata, as its container and codec declare it.
public struct VideoProbe: Sendable, Codable, Equatable {
    public var path: String
    /// Demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm".
    public var container: String
    public var codec: String
    public var codecLongName: String?
    public var profile: String?
    public var pixelFormat: String?
    /// Coded size, as stored.
    public var width: Int
    public var height: Int
    /// Clockwise rotation (degrees) a player applies to show the video upright.
    public var rotation: Int
    /// Size after rotation: what a viewer sees, and what frames are delivered in.
    public var displayWidth: Int
    public var displayHeight: Int
    /// Seconds (stream duration, else container duration); nil when neither is known.
    public var duration: Double?
    public var averageFrameRate: Double?
    public var averageFrameRateRational: String?
    /// FFmpeg's r_frame_rate: the lowest rate that represents all timestamps exactly.
    public var realFrameRate: Double?
    public var realFrameRateRational: String?
    public var frameCount: Int?
    /// True when `frameCount` comes from the container's index or from counting packets;
    /// false when it is estimated from duration × average frame rate.
    public var frameCountExact: Bool
    /// Whether frame timestamps vary in spacing; known only after the frames were indexed.
    public var variableFrameRate: Bool?
    public var startTime: Double?
    public var bitRate: Int?
    public var hasAudio: Bool
}

extension VideoProbe {
    init(demuxer: Demuxer) {
        let ctx = demuxer.context.pointee
        let st = demuxer.stream.pointee
        let par = st.codecpar.pointee
        let tb = st.time_base

        path = demuxer.path
        container = ctx.iformat.map { String(cString: $0.pointee.name) } ?? "unknown"
        codec = FFmpeg.codecName(par.codec_id)
        if let desc = avcodec_descriptor_get(par.codec_id), let long = desc.pointee.long_name {
            codecLongName = String(cString: long)
        }
        if par.profile != FF_PROFILE_UNKNOWN, let name = avcodec_profile_name(par.codec_id, par.profile) {
            profile = String(cString: name)
        }
        pixelFormat = FFmpeg.pixelFormatName(par.format)
        width = Int(par.width)
        height = Int(par.height)
        rotation = VideoProbe.clockwiseRotation(demuxer.stream)
        let quarter = rotation == 90 || rotation == 270
        displayWidth = quarter ? height : width
        displayHeight = quarter ? width : height

        if st.duration != FFmpeg.noPTS && st.duration > 0, let tbd = FFmpeg.double(tb) {
            duration = Double(st.duration) * tbd
        } else if ctx.duration != FFmpeg.noPTS && ctx.duration > 0 {
            duration = Double(ctx.duration) / Double(AV_TIME_BASE)
        }
        averageFrameRate = FFmpeg.double(st.avg_frame_rate)
        averageFrameRateRational = FFmpeg.string(st.avg_frame_rate)
        realFrameRate = FFmpeg.double(st.r_frame_rate)
        realFrameRateRational = FFmpeg.string(st.r_frame_rate)
        if st.nb_frames > 0, VideoProbe.plausible(count: Int(st.nb_frames), duration: duration, rate: averageFrameRate) {
            frameCount = Int(st.nb_frames)
            frameCountExact = true
        } else if let d = duration, let fps = averageFrameRate ?? realFrameRate {
            frameCount = VideoProbe.estimatedFrames(duration: d, rate: fps)
            frameCountExact = false
        } else {
            frameCount = nil
            frameCountExact = false
        }
        if st.start_time != FFmpeg.noPTS, let tbd = FFmpeg.double(tb) {
            startTime = Double(st.start_time) * tbd
        }
        bitRate = par.bit_rate > 0 ? Int(par.bit_rate) : (ctx.bit_rate > 0 ? Int(ctx.bit_rate) : nil)
        hasAudio = (0..<Int(ctx.nb_streams)).contains { ctx.streams[$0]!.pointee.codecpar.pointee.codec_type == AVMEDIA_TYPE_AUDIO }
    }

    /// duration × rate frames, at least 1: a header's numbers (a duration of 2⁶³ time-base
    /// units, a rate of 30000/1) may make the product exceed any Int, or be NaN; it is capped at
    /// 2⁵³ (an estimate, and said so) rather than trapping in the conversion.
    static func estimatedFrames(duration: Double, rate: Double) -> Int {
        let n = (duration * rate).rounded()
        guard n.isFinite else { return n == .infinity ? 1 << 53 : 1 }
        return Int(max(1, min(n, Double(1 << 53))))
    }

    /// A container's sample count is the shown frame count unless an edit list hides some
    /// (a clip cut without re-encoding): then it disagrees with duration × rate.
    static func plausible(count: Int, duration: Double?, rate: Double?) -> Bool {
        guard let d = duration, let r = rate, d > 0, r > 0 else { return true }
        let expected = d * r
        return abs(Double(count) - expected) <= max(2, 0.01 * expected)
    }

    /// Seconds of a Matroska DURATION tag ("HH:MM:SS.nnnnnnnnn"), when it is a finite time ≥ 0
    /// ("inf:00:00", "nan:…" or a negative time is no duration).
    static func matroskaDuration(_ text: String) -> Double? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = Double(parts[0]), let m = Double(parts[1]), let s = Double(parts[2]) else { return nil }
        let seconds = h * 3600 + m * 60 + s
        return seconds.isFinite && seconds >= 0 && h >= 0 && m >= 0 && s >= 0 ? seconds : nil
    }

    /// The video stream's own declared duration, and whether it is its own (not the container's,
    /// which also covers longer audio): the stream's duration, else Matroska's DURATION tag,
    /// else the container's when the video is the only stream.
    static func declaredVideoDuration(_ demuxer: Demuxer) -> (seconds: Double, own: Bool)? {
        let st = demuxer.stream.pointee
        if st.duration != FFmpeg.noPTS && st.duration > 0, let tb = FFmpeg.double(st.time_base) {
            return (Double(st.duration) * tb, true)
        }
        if let tag = av_dict_get(st.metadata, "DURATION", nil, 0), let value = tag.pointee.value,
           let seconds = matroskaDuration(String(cString: value)) {
            return (seconds, true)
        }
        let ctx = demuxer.context.pointee
        guard ctx.duration != FFmpeg.noPTS && ctx.duration > 0 else { return nil }
        return (Double(ctx.duration) / Double(AV_TIME_BASE), ctx.nb_streams == 1)
    }

    /// The display matrix's rotation as the clockwise turn a player applies, normalised to
    /// [0, 360) and rounded to whole degrees (FFmpeg's `get_rotation`).
    static func clockwiseRotation(_ stream: UnsafeMutablePointer<AVStream>) -> Int {
        var flipped: Int32 = 0
        let ccw = reelql_stream_rotation(stream, &flipped)
        guard ccw.isFinite else { return 0 }
        var theta = -ccw.rounded()
        theta -= 360 * (theta / 360 + 0.9 / 360).rounded(.down)
        return Int(theta) % 360
    }
}
