import Foundation

/// Which frames to take from a video, by presentation time. Pure functions, ported from
/// qwen-vl-utils 0.0.14 (`smart_nframes`, the `torch.linspace(...).round()` index rule).
public enum FrameSampler {
    public static let minFrames = 4        // FPS_MIN_FRAMES
    public static let maxFrames = 768      // FPS_MAX_FRAMES
    public static let fpsRange: ClosedRange<Double> = 0.1...30

    /// `smart_nframes` for the fps mode: n = total / video_fps × fps, clamped to
    /// [4, min(768, total)] (and to `maxFrames`), floored to an even number: 2 of a video of 2
    /// or 3 frames. Where it would raise (one frame, or `maxFrames` 1) this gives one frame.
    public static func frameCount(total: Int, videoFPS: Double, fps: Double, maxFrames: Int? = nil) -> Int {
        guard total > 0 else { return 0 }
        let minF = Double(ceilEven(minFrames))
        let maxF = Double(floorEven(maxFrames ?? min(Self.maxFrames, total)))
        var n = Double(total) / videoFPS * fps
        n = min(min(max(n, minF), maxF), Double(total))
        let even = Int((n / 2).rounded(.down)) * 2
        // qwen-vl-utils rejects fewer than 2 frames; we deliver one rather than fail.
        return max(even, 1)
    }

    /// `torch.linspace(start, end, count).round()` exactly as torch computes it on the CPU (the
    /// tensor is float32): step = (end − start) / (count − 1) in float32; the first half of the
    /// values is start + step·i and the second half end − step·(count − 1 − i), each a fused
    /// multiply-add; then rounded half to even. On videos of many thousand frames this differs
    /// from exact arithmetic by one frame now and then, and qwen-vl-utils sees torch's values.
    /// Past 2^24 frames float32 cannot hold every index: a value rounded beyond the window (where
    /// torch's index would fail) is taken as the window's nearest end.
    public static func linspaceIndices(start: Int, end: Int, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        if count == 1 { return [start] }
        let first = Float(start), last = Float(end)
        let step = (last - first) / Float(count - 1)
        let halfway = count / 2
        let low = min(start, end), high = max(start, end)
        return (0..<count).map { i in
            let value = i < halfway
                ? first.addingProduct(step, Float(i))
                : last.addingProduct(-step, Float(count - 1 - i))
            let rounded = Double(value.rounded(.toNearestOrEven))
            guard rounded.isFinite else { return low }
            return rounded <= Double(low) ? low : (rounded >= Double(high) ? high : Int(rounded))
        }
    }

    /// `numpy.linspace(0, count − 1, n)` rounded half to even, offset by `start` (float64: i · step,
    /// the last exactly count − 1), as transformers' video processors index frames.
    public static func numpyLinspaceIndices(start: Int, count: Int, n: Int) -> [Int] {
        guard count > 0, n > 0 else { return [] }
        guard n > 1 else { return [start] }
        let stop = Double(count - 1), step = stop / Double(n - 1)
        return (0..<n).map { i in start + (i == n - 1 ? count - 1 : Int((Double(i) * step).rounded(.toNearestOrEven))) }
    }

    /// The number of frames `rule` takes from a window of `total` frames at `videoFPS`.
    public static func frameCount(total: Int, videoFPS: Double, fps: Double, maxFrames: Int?, rule: FrameRule) -> Int {
        switch rule {
        case .qwenVLUtils:
            return frameCount(total: total, videoFPS: videoFPS, fps: fps, maxFrames: maxFrames)
        case .uniform(let minF, let maxF):
            guard total > 0 else { return 0 }
            // Python's int(total / video_fps * fps): truncation toward zero.
            let wanted = Double(total) / videoFPS * fps
            let n = wanted.isFinite ? (wanted < Double(Int.max) ? Int(max(wanted, 0)) : Int.max) : minF
            return max(1, min(max(n, minF), min(maxF, maxFrames ?? maxF), total))
        }
    }

    /// Indices for a constant-frame-rate video of `total` frames at `videoFPS`, within the
    /// half-open time window [start, end) (seconds from the first frame), by `rule` over the
    /// window's frames.
    public static func constantRateIndices(total: Int, videoFPS: Double, fps: Double,
                                           start: Double? = nil, end: Double? = nil,
                                           maxFrames: Int? = nil, rule: FrameRule = .qwenVLUtils) throws -> [Int] {
        guard total > 0 else { return [] }
        var first = 0, last = total - 1
        if start != nil || end != nil {
            let duration = Double(total) / videoFPS
            // The first frame at or after t, edges within `edgeTolerance` (a window computed as
            // 3 × 0.2 s = 0.6000000000000001 starts at the frame at 0.6 s).
            let frame = { (t: Double) -> Int in Int(((t - edgeTolerance(t)) * videoFPS).rounded(.up)) }
            if let s = start {
                first = frame(max(0, min(s, duration)))
            }
            if let e = end {
                // Frame i is at i / fps; the last frame strictly before `end`.
                last = min(frame(max(0, min(e, duration))) - 1, total - 1)
            }
            guard first <= last else {
                throw MediaError.invalidArgument(
                    "the time window [\(start ?? 0), \(end.map { String($0) } ?? "end")) holds no frame of this \(String(format: "%.2f", duration)) s video")
            }
        }
        let count = last - first + 1
        let n = frameCount(total: count, videoFPS: videoFPS, fps: fps, maxFrames: maxFrames, rule: rule)
        if case .uniform = rule { return numpyLinspaceIndices(start: first, count: count, n: n) }
        return linspaceIndices(start: first, end: last, count: n)
    }

    /// How far from a window's edge a time still counts as at the edge: a billionth of it (float
    /// noise such as 3 × 0.2 = 0.6000000000000001), at least a nanosecond.
    public static func edgeTolerance(_ t: Double) -> Double { 1e-9 * max(1, abs(t)) }

    /// The first and last of `times` (ascending) within [start, end), edges within
    /// `edgeTolerance`; lo > hi when none is. Binary searches: a long video's clips each ask.
    public static func window(times: [Double], start: Double?, end: Double?) -> (lo: Int, hi: Int) {
        /// The number of times below t.
        func below(_ t: Double) -> Int {
            var lo = 0, hi = times.count
            while lo < hi { let m = (lo + hi) / 2; if times[m] < t { lo = m + 1 } else { hi = m } }
            return lo
        }
        let lo = start.map { below($0 - edgeTolerance($0)) } ?? 0
        let hi = end.map { below($0 - edgeTolerance($0)) - 1 } ?? (times.count - 1)
        return (lo, hi)
    }

    /// Indices for a variable-frame-rate video: `times` are the presentation times (seconds,
    /// ascending) of every frame. The number of frames follows `rule` with the window's
    /// duration; each sample is the frame whose timestamp is nearest its evenly spaced target time.
    public static func variableRateIndices(times: [Double], fps: Double,
                                           start: Double? = nil, end: Double? = nil,
                                           maxFrames: Int? = nil, rule: FrameRule = .qwenVLUtils) throws -> [Int] {
        guard !times.isEmpty else { return [] }
        let (lo, hi) = window(times: times, start: start, end: end)
        guard lo <= hi else {
            throw MediaError.invalidArgument(
                "the time window [\(start ?? 0), \(end.map { String($0) } ?? "end")) holds no frame of this video")
        }
        let count = hi - lo + 1
        let span = times[hi] - times[lo]
        // Average rate over the window, so that n = duration × fps as for constant rate.
        let videoFPS = span > 0 ? Double(count - 1) / span : fps
        let n = frameCount(total: count, videoFPS: videoFPS, fps: fps, maxFrames: maxFrames, rule: rule)
        if case .uniform = rule, n == count { return Array(lo...hi) }
        var result: [Int] = []
        result.reserveCapacity(n)
        var j = lo
        for i in 0..<n {
            let target = n == 1 ? times[lo] : times[lo] + span * Double(i) / Double(n - 1)
            while j < hi && abs(times[j + 1] - target) < abs(times[j] - target) { j += 1 }
            result.append(j)
        }
        return result
    }

    static func floorEven(_ x: Int) -> Int { (x / 2) * 2 }
    static func ceilEven(_ x: Int) -> Int { ((x + 1) / 2) * 2 }
}

/// How many frames of a window to take, and which.
public enum FrameRule: Sendable, Equatable, Codable {
    /// qwen-vl-utils 0.0.14: `smart_nframes` (an even count within [4, 768]) and torch's float32
    /// `linspace(...).round()` (the default).
    case qwenVLUtils
    /// transformers' video processor rule (Qwen3-VL's `sample_frames`): n = int(frames / video_fps ·
    /// fps), clamped to [minFrames, maxFrames] and to the window's frames, not evened; then
    /// `numpy.linspace(0, frames − 1, n)` rounded half to even, over the window's frames.
    case uniform(minFrames: Int, maxFrames: Int)
}

/// What to sample from a video.
public struct SamplingOptions: Sendable, Equatable, Codable {
    /// Frames per second of video time to sample (0.1–30).
    public var fps: Double = 2
    /// Half-open window [start, end) in seconds from the first frame.
    public var start: Double?
    public var end: Double?
    /// Upper bound on the number of frames (before evening).
    public var maxFrames: Int?
    public var resize = ResizeOptions()
    /// How many frames to take and which (qwen-vl-utils' rule unless a model asks for another).
    public var frameRule: FrameRule = .qwenVLUtils

    public init(fps: Double = 2, start: Double? = nil, end: Double? = nil, maxFrames: Int? = nil,
                resize: ResizeOptions = ResizeOptions(), frameRule: FrameRule = .qwenVLUtils) {
        self.fps = fps
        self.start = start
        self.end = end
        self.maxFrames = maxFrames
        self.resize = resize
        self.frameRule = frameRule
    }

    enum CodingKeys: String, CodingKey { case fps, start, end, maxFrames, resize, frameRule }

    /// Keys of the default rule stay as they were: `frameRule` is optional when read and written
    /// only when it is not the default.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fps = try c.decode(Double.self, forKey: .fps)
        start = try c.decodeIfPresent(Double.self, forKey: .start)
        end = try c.decodeIfPresent(Double.self, forKey: .end)
        maxFrames = try c.decodeIfPresent(Int.self, forKey: .maxFrames)
        resize = try c.decode(ResizeOptions.self, forKey: .resize)
        frameRule = try c.decodeIfPresent(FrameRule.self, forKey: .frameRule) ?? .qwenVLUtils
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(fps, forKey: .fps)
        try c.encodeIfPresent(start, forKey: .start)
        try c.encodeIfPresent(end, forKey: .end)
        try c.encodeIfPresent(maxFrames, forKey: .maxFrames)
        try c.encode(resize, forKey: .resize)
        if frameRule != .qwenVLUtils { try c.encode(frameRule, forKey: .frameRule) }
    }

    public func validate() throws {
        guard FrameSampler.fpsRange.contains(fps) else {
            throw MediaError.invalidArgument("fps must be between 0.1 and 30, got \(fps)")
        }
        if let s = start, s < 0 || !s.isFinite { throw MediaError.invalidArgument("start must be ≥ 0, got \(s)") }
        if let e = end, !e.isFinite || e <= (start ?? 0) {
            throw MediaError.invalidArgument("end (\(e)) must be after start (\(start ?? 0))")
        }
        if let m = maxFrames, m < 1 { throw MediaError.invalidArgument("max_frames must be ≥ 1, got \(m)") }
        if case .uniform(let lo, let hi) = frameRule, lo < 1 || hi < lo {
            throw MediaError.invalidArgument("the frame rule needs 1 ≤ min_frames ≤ max_frames, got \(lo) and \(hi)")
        }
        if resize.minPixels < 1 { throw MediaError.invalidArgument("min_pixels must be ≥ 1") }
        if let m = resize.maxPixels, m < resize.minPixels {
            throw MediaError.invalidArgument("max_pixels (\(m)) must be at least min_pixels (\(resize.minPixels))")
        }
        try resize.validate()
    }
}
