import Foundation

/// Every way a video can fail to become frames. Each case names the file and carries the context
/// a user needs; `exitCode` gives each kind of failure its own process exit status.
public enum MediaError: Error, LocalizedError, Sendable, Equatable {
    case fileNotFound(path: String)
    case emptyFile(path: String)
    case notAVideo(path: String, reason: String)
    /// The file is a media file but has no video stream (an audio-only file, say).
    case noVideoStream(path: String, streams: [String])
    case unsupportedCodec(path: String, codec: String)
    /// The file ends before its container says it should; `damage` says how much is missing.
    case truncated(path: String, damage: DecodeDamage)
    /// Packets in the middle of the stream could not be decoded; `damage` says how many.
    case corruptData(path: String, damage: DecodeDamage)
    /// Not one frame could be decoded.
    case decodeFailed(path: String, reason: String)
    case invalidArgument(String)
    case ffmpeg(path: String, operation: String, message: String)
    case writeFailed(path: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case .fileNotFound(let path):
            return "\(PathBytes.display(path)): no such file"
        case .emptyFile(let path):
            return "\(PathBytes.display(path)): the file is empty (0 bytes)"
        case .notAVideo(let path, let reason):
            return "\(PathBytes.display(path)): not a video file (\(reason))"
        case .noVideoStream(let path, let streams):
            let kinds = streams.isEmpty ? "no streams" : streams.joined(separator: ", ")
            return "\(PathBytes.display(path)): the file has no video stream (it has \(kinds))"
        case .unsupportedCodec(let path, let codec):
            return "\(PathBytes.display(path)): unsupported video codec '\(codec)': this FFmpeg build has no decoder for it"
        case .truncated(let path, let damage):
            return "\(PathBytes.display(path)): the file is truncated: \(damage.summary)"
        case .corruptData(let path, let damage):
            return "\(PathBytes.display(path)): corrupt data in the video stream: \(damage.summary)"
        case .decodeFailed(let path, let reason):
            return "\(PathBytes.display(path)): no frame could be decoded (\(reason))"
        case .invalidArgument(let message):
            return message
        case .ffmpeg(let path, let operation, let message):
            return "\(PathBytes.display(path)): \(operation) failed: \(message)"
        case .writeFailed(let path, let reason):
            return "\(PathBytes.display(path)): could not write (\(reason))"
        }
    }

    /// A distinct, stable process exit status for each kind of failure.
    public var exitCode: Int32 {
        switch self {
        case .fileNotFound: return 10
        case .emptyFile: return 11
        case .notAVideo: return 12
        case .noVideoStream: return 13
        case .unsupportedCodec: return 14
        case .truncated: return 15
        case .corruptData: return 16
        case .decodeFailed: return 17
        case .invalidArgument: return 2
        case .ffmpeg: return 18
        case .writeFailed: return 19
        }
    }

    /// A short machine-readable name of the failure kind.
    public var kind: String {
        switch self {
        case .fileNotFound: return "file-not-found"
        case .emptyFile: return "empty-file"
        case .notAVideo: return "not-a-video"
        case .noVideoStream: return "no-video-stream"
        case .unsupportedCodec: return "unsupported-codec"
        case .truncated: return "truncated"
        case .corruptData: return "corrupt-data"
        case .decodeFailed: return "decode-failed"
        case .invalidArgument: return "invalid-argument"
        case .ffmpeg: return "ffmpeg"
        case .writeFailed: return "write-failed"
        }
    }
}

/// What was lost while sampling a damaged file. Attached to a `SampledVideo` whose file was
/// truncated or held corrupt packets: the decodable frames are still delivered.
public struct DecodeDamage: Sendable, Codable, Equatable {
    /// The file ends before its container says it should.
    public var truncated: Bool = false
    /// Duration the container declares, in seconds (nil when it declares none).
    public var declaredDuration: Double?
    /// Duration actually covered by readable packets, in seconds.
    public var readableDuration: Double = 0
    /// Frames the container declares (nil when it declares none).
    public var declaredFrames: Int?
    /// Frames whose packets could be read.
    public var readableFrames: Int = 0
    /// Packets the decoder rejected, or frames it could only conceal, among those it was given.
    public var corruptPackets: Int = 0
    /// Sampled frames that could not be delivered (their index is missing from the output).
    public var lostSampledFrames: Int = 0
    /// Sampled frames delivered with concealed (damaged) pixels.
    public var concealedSampledFrames: Int = 0
    /// An MP4/MOV file without its index ('moov' box): nothing in it can be located.
    public var missingIndex: Bool = false

    public init() {}

    public var isEmpty: Bool {
        !truncated && corruptPackets == 0 && lostSampledFrames == 0 && concealedSampledFrames == 0
    }

    /// Seconds the container declares but the file does not hold.
    public var missingSeconds: Double {
        guard truncated, let declared = declaredDuration else { return 0 }
        return max(0, declared - readableDuration)
    }

    public var summary: String {
        var parts: [String] = []
        if missingIndex {
            return "its index ('moov' box) is missing, as in a download or recording that never finished; no frame can be located"
        }
        if truncated {
            var s = "readable up to \(Self.format(readableDuration)) s"
            if let declared = declaredDuration { s += " of \(Self.format(declared)) s declared (\(Self.format(missingSeconds)) s lost)" }
            if let frames = declaredFrames { s += ", \(readableFrames) of \(frames) frames" }
            parts.append(s)
        }
        if corruptPackets > 0 { parts.append("\(corruptPackets) packet(s) failed to decode cleanly") }
        if lostSampledFrames > 0 { parts.append("\(lostSampledFrames) sampled frame(s) lost") }
        if concealedSampledFrames > 0 { parts.append("\(concealedSampledFrames) sampled frame(s) concealed") }
        return parts.isEmpty ? "no damage" : parts.joined(separator: "; ")
    }

    static func format(_ x: Double) -> String { String(format: "%.2f", x) }
}
