import Foundation

/// A time range of a video, in seconds: [start, end).
public struct ClipRange: Sendable, Equatable, Codable, CustomStringConvertible {
    public var start: Double
    public var end: Double
    public init(start: Double, end: Double) { self.start = start; self.end = end }
    public var duration: Double { end - start }
    public var description: String { String(format: "[%.3f, %.3f)", start, end) }
}

/// Splits a video into consecutive clips of a fixed length.
public enum ClipSegmenter {
    /// Clips of `length` seconds starting every `length − overlap` seconds. A final remainder
    /// shorter than `minRemainder` seconds joins the previous clip instead of standing alone.
    /// A video no longer than one clip is one clip. Clips must advance by at least
    /// `minimumStride` seconds (a caller passes one frame's duration) and a video yields at most
    /// `maxClips` clips: hostile settings (a clip per nanosecond) are an error, not an
    /// allocation that takes the machine's memory.
    public static let maxClips = 100_000

    public static func segments(duration: Double, length: Double, overlap: Double = 0,
                                minRemainder: Double? = nil, minimumStride: Double = 1e-3) throws -> [ClipRange] {
        guard duration.isFinite, duration > 0 else {
            throw MediaError.invalidArgument("clip segmentation needs a positive duration, got \(duration)")
        }
        guard length.isFinite, length > 0 else {
            throw MediaError.invalidArgument("clip length must be positive, got \(length)")
        }
        guard overlap.isFinite, overlap >= 0, overlap < length else {
            throw MediaError.invalidArgument("clip overlap must be in [0, \(length)), got \(overlap)")
        }
        if let r = minRemainder, !(r.isFinite && r >= 0) {
            throw MediaError.invalidArgument("clip min_remainder must be a number ≥ 0, got \(r)")
        }
        let threshold = minRemainder ?? length / 4
        let stride = length - overlap
        let floor = minimumStride.isFinite && minimumStride > 0 ? minimumStride : 1e-3
        guard stride >= floor else {
            throw MediaError.invalidArgument(String(format: "clips of %g s with %g s overlap advance by %g s; a clip must advance by at least %g s (one frame)",
                                                    length, overlap, stride, floor))
        }
        guard duration / stride <= Double(maxClips) else {
            throw MediaError.invalidArgument(String(format: "clips advancing by %g s would cut this %.1f s video into more than %d clips; use longer clips",
                                                    stride, duration, maxClips))
        }
        var clips: [ClipRange] = []
        // Clip i starts at i × stride (not a running sum, whose rounding grows with the count). A
        // small tolerance keeps float noise (3 × 0.2 …) from creating sliver clips.
        let eps = 1e-9 * max(1, duration)
        var i = 0.0, start = 0.0
        while start < duration - eps {
            let end = min(start + length, duration)
            clips.append(ClipRange(start: start, end: end))
            if end >= duration - eps { break }
            i += 1
            start = i * stride
        }
        // The last clip, if short, merges into the one before it.
        if clips.count >= 2, let last = clips.last, last.duration < threshold - eps {
            clips.removeLast()
            clips[clips.count - 1].end = last.end
        }
        return clips
    }
}
