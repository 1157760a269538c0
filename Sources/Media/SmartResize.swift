import Foundation

/// Qwen2-VL's resizing rules, ported from qwen-vl-utils 0.0.14 (`vision_process.py`), and the
/// frame-stack rule of transformers' Qwen3-VL video processor.
public enum SmartResize {
    /// Side lengths are multiples of patch_size (14) × spatial merge (2).
    public static let factor = 28
    /// Per-frame pixel bounds for video (VIDEO_MIN_TOKEN_NUM / VIDEO_MAX_TOKEN_NUM × 28²).
    public static let videoMinPixels = 128 * 28 * 28
    public static let videoMaxPixels = 768 * 28 * 28
    /// Per-image bounds of qwen-vl-utils' `fetch_image` (MIN_PIXELS / MAX_PIXELS).
    public static let imageMinPixels = 4 * 28 * 28
    public static let imageMaxPixels = 16384 * 28 * 28
    /// Default pixel budget of a whole clip: MODEL_SEQ_LEN (128000) × 28² × 0.9.
    public static let videoTotalPixels = 128_000.0 * 28 * 28 * 0.9
    public static let maxAspectRatio = 200.0
    static let frameFactor = 2

    /// `smart_resize(height, width, factor, min_pixels, max_pixels)`: both sides multiples of
    /// `factor`, area within [minPixels, maxPixels], aspect ratio kept as closely as possible.
    /// Returns (height, width).
    public static func resize(height: Int, width: Int, factor: Int = factor,
                              minPixels: Double, maxPixels: Double) throws -> (height: Int, width: Int) {
        guard height > 0, width > 0 else {
            throw MediaError.invalidArgument("smart_resize: invalid size \(width)×\(height)")
        }
        guard maxPixels >= minPixels else {
            throw MediaError.invalidArgument("max_pixels (\(Int(maxPixels))) must be at least min_pixels (\(Int(minPixels)))")
        }
        let h = Double(height), w = Double(width), f = Double(factor)
        let ratio = max(h, w) / min(h, w)
        guard ratio <= maxAspectRatio else {
            throw MediaError.invalidArgument("absolute aspect ratio must be at most \(Int(maxAspectRatio)), got \(ratio)")
        }
        // round_by_factor uses Python's round(): ties go to the even neighbour.
        var hBar = max(factor, Int((h / f).rounded(.toNearestOrEven)) * factor)
        var wBar = max(factor, Int((w / f).rounded(.toNearestOrEven)) * factor)
        if Double(hBar * wBar) > maxPixels {
            let beta = ((h * w) / maxPixels).squareRoot()
            hBar = Int(((h / beta) / f).rounded(.down)) * factor
            wBar = Int(((w / beta) / f).rounded(.down)) * factor
        } else if Double(hBar * wBar) < minPixels {
            let beta = (minPixels / (h * w)).squareRoot()
            hBar = Int(((h * beta) / f).rounded(.up)) * factor
            wBar = Int(((w * beta) / f).rounded(.up)) * factor
        }
        // qwen-vl-utils would hand a zero side to its resize and fail there.
        guard hBar > 0, wBar > 0 else {
            throw MediaError.invalidArgument("\(width)×\(height) cannot be fitted into \(Int(maxPixels)) pixels at sides that are multiples of \(factor) (smart_resize gives \(wBar)×\(hBar)); raise max_pixels")
        }
        return (hBar, wBar)
    }

    /// The frame-stack `smart_resize(num_frames, height, width, temporal_factor, factor, min_pixels,
    /// max_pixels)` of transformers' Qwen3-VL video processor (4.57): both sides multiples of
    /// `factor`, and t̄·h̄·w̄ — t̄ the frame count rounded (half to even) to a multiple of
    /// `temporalFactor` — within [minPixels, maxPixels]. Where transformers refuses, this sizes:
    /// fewer frames than `temporalFactor` count as `temporalFactor` (the processor pads them to
    /// that), and a side shorter than `factor` is first scaled up to it (as transformers 5 does).
    /// Returns (height, width).
    public static func resizeStack(frames: Int, height: Int, width: Int, temporalFactor: Int, factor: Int,
                                   minPixels: Double, maxPixels: Double) throws -> (height: Int, width: Int) {
        guard height > 0, width > 0, frames > 0, temporalFactor > 0, factor > 0 else {
            throw MediaError.invalidArgument("smart_resize: invalid size \(width)×\(height)×\(frames) or factors \(factor), \(temporalFactor)")
        }
        guard maxPixels >= minPixels else {
            throw MediaError.invalidArgument("max_pixels (\(Int(maxPixels))) must be at least min_pixels (\(Int(minPixels)))")
        }
        var h = Double(height), w = Double(width)
        let f = Double(factor)
        if height < factor || width < factor {
            let scale = max(f / h, f / w)
            h = (h * scale).rounded(.towardZero)
            w = (w * scale).rounded(.towardZero)
        }
        let ratio = max(h, w) / min(h, w)
        guard ratio <= maxAspectRatio else {
            throw MediaError.invalidArgument("absolute aspect ratio must be at most \(Int(maxAspectRatio)), got \(ratio)")
        }
        let t = Double(frames)
        var hBar = Int((h / f).rounded(.toNearestOrEven)) * factor
        var wBar = Int((w / f).rounded(.toNearestOrEven)) * factor
        let tBar = max(temporalFactor, Int((t / Double(temporalFactor)).rounded(.toNearestOrEven)) * temporalFactor)
        let volume = Double(tBar) * Double(hBar) * Double(wBar)
        if volume > maxPixels {
            let beta = ((t * h * w) / maxPixels).squareRoot()
            hBar = max(factor, Int((h / beta / f).rounded(.down)) * factor)
            wBar = max(factor, Int((w / beta / f).rounded(.down)) * factor)
        } else if volume < minPixels {
            let beta = (minPixels / (t * h * w)).squareRoot()
            hBar = Int((h * beta / f).rounded(.up)) * factor
            wBar = Int((w * beta / f).rounded(.up)) * factor
        }
        return (hBar, wBar)
    }

    /// The per-frame max_pixels that `fetch_video` derives for a clip of `frameCount` frames:
    /// max(min(VIDEO_MAX, total_pixels / n × 2), int(min_pixels × 1.05)), then capped by an
    /// explicit max_pixels.
    /// The minimum pixels per frame in force: the one given, else `value` (a default) lowered to
    /// the maximum where that is below it, so that a maximum given alone is never refused for
    /// being under a minimum nobody asked for.
    public static func minimumPixels(given: Int?, default value: Int, maximum: Int?) -> Int {
        given ?? min(value, maximum ?? value)
    }

    public static func videoMaxPixels(frameCount: Int, minPixels: Int, maxPixels: Int?,
                                      totalPixels: Double?) -> Double {
        let total = totalPixels ?? videoTotalPixels
        let n = Double(max(frameCount, 1))
        let budget = max(min(Double(videoMaxPixels), total / n * Double(frameFactor)),
                         (Double(minPixels) * 1.05).rounded(.towardZero))
        if let explicit = maxPixels { return min(Double(explicit), budget) }
        return budget
    }
}

/// A clip's frames sized together (Qwen3-VL's video processor): t̄·h·w within bounds.
public struct FrameStack: Sendable, Equatable, Codable {
    /// Frames per temporal patch: the frame count is rounded to a multiple of it.
    public var temporalFactor: Int
    /// Bounds of t̄·h·w (the processor's `size.shortest_edge` / `size.longest_edge`).
    public var minPixels: Int
    public var maxPixels: Int

    public init(temporalFactor: Int, minPixels: Int, maxPixels: Int) {
        self.temporalFactor = temporalFactor
        self.minPixels = minPixels
        self.maxPixels = maxPixels
    }
}

/// How sampled frames are sized.
public struct ResizeOptions: Sendable, Equatable, Codable {
    /// Keep the decoded size (after rotation): no scaling at all.
    public var native: Bool = false
    public var minPixels: Int = SmartResize.videoMinPixels
    /// Per-frame upper bound; nil uses qwen-vl-utils' default (768 × 28²), further limited by
    /// the clip's total pixel budget.
    public var maxPixels: Int?
    /// Pixel budget of the whole clip (qwen-vl-utils `total_pixels`); nil uses its default.
    public var totalPixels: Double?
    /// A still image: one smart_resize within [minPixels, maxPixels] (qwen-vl-utils' `fetch_image`
    /// bounds), with no per-clip budget.
    public var image: Bool = false
    /// Sides are multiples of this: patch size × spatial merge (28 for Qwen2-VL, 32 for Qwen3-VL).
    public var factor: Int = SmartResize.factor
    /// When set, a video's frames are sized as one stack (`SmartResize.resizeStack`) within its
    /// bounds instead of qwen-vl-utils' per-frame rule; an explicit `maxPixels` (per frame) and
    /// `totalPixels` still cap it (t̄ · maxPixels, totalPixels) and `minPixels` is not used.
    public var stack: FrameStack?

    public init(native: Bool = false, minPixels: Int = SmartResize.videoMinPixels,
                maxPixels: Int? = nil, totalPixels: Double? = nil, image: Bool = false,
                factor: Int = SmartResize.factor, stack: FrameStack? = nil) {
        self.image = image
        self.native = native
        self.minPixels = minPixels
        self.maxPixels = maxPixels
        self.totalPixels = totalPixels
        self.factor = factor
        self.stack = stack
    }

    enum CodingKeys: String, CodingKey { case native, minPixels, maxPixels, totalPixels, image, factor, stack }

    /// The keys of the defaults stay as they were: `factor` and `stack` are optional when read
    /// and written only when they are not the default.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        native = try c.decode(Bool.self, forKey: .native)
        minPixels = try c.decode(Int.self, forKey: .minPixels)
        maxPixels = try c.decodeIfPresent(Int.self, forKey: .maxPixels)
        totalPixels = try c.decodeIfPresent(Double.self, forKey: .totalPixels)
        image = try c.decode(Bool.self, forKey: .image)
        factor = try c.decodeIfPresent(Int.self, forKey: .factor) ?? SmartResize.factor
        stack = try c.decodeIfPresent(FrameStack.self, forKey: .stack)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(native, forKey: .native)
        try c.encode(minPixels, forKey: .minPixels)
        try c.encodeIfPresent(maxPixels, forKey: .maxPixels)
        try c.encodeIfPresent(totalPixels, forKey: .totalPixels)
        try c.encode(image, forKey: .image)
        if factor != SmartResize.factor { try c.encode(factor, forKey: .factor) }
        try c.encodeIfPresent(stack, forKey: .stack)
    }

    func validate() throws {
        guard factor >= 1 else { throw MediaError.invalidArgument("the resize factor must be ≥ 1, got \(factor)") }
        if let s = stack, s.temporalFactor < 1 || s.minPixels < 1 || s.maxPixels < s.minPixels {
            throw MediaError.invalidArgument("the frame stack needs temporal factor ≥ 1 and 1 ≤ min_pixels ≤ max_pixels, got \(s.temporalFactor), \(s.minPixels), \(s.maxPixels)")
        }
    }

    /// The output (width, height) of a clip of `frameCount` frames whose display size is
    /// `width`×`height`.
    public func outputSize(width: Int, height: Int, frameCount: Int) throws -> (width: Int, height: Int) {
        if native { return (width, height) }
        if let s = stack, !image {
            let frames = max(frameCount, 1)
            let tBar = max(s.temporalFactor, Int((Double(frames) / Double(s.temporalFactor)).rounded(.toNearestOrEven)) * s.temporalFactor)
            var maxP = Double(s.maxPixels)
            if let m = maxPixels { maxP = min(maxP, Double(m) * Double(tBar)) }
            if let t = totalPixels { maxP = min(maxP, t) }
            let r = try SmartResize.resizeStack(frames: frames, height: height, width: width, temporalFactor: s.temporalFactor,
                                                factor: factor, minPixels: min(Double(s.minPixels), maxP), maxPixels: maxP)
            return (r.width, r.height)
        }
        let maxP = image ? Double(maxPixels ?? SmartResize.imageMaxPixels)
            : SmartResize.videoMaxPixels(frameCount: frameCount, minPixels: minPixels, maxPixels: maxPixels, totalPixels: totalPixels)
        let r = try SmartResize.resize(height: height, width: width, factor: factor,
                                       minPixels: Double(minPixels), maxPixels: maxP)
        return (r.width, r.height)
    }

    /// These bounds within a checkpoint processor's per-frame maximum: transformers' processor
    /// resizes frames larger than its `longest_edge` (max_pixels) again, so frames sampled for
    /// that checkpoint are sized within it from the start. Real Qwen2-VL checkpoints allow far
    /// more than qwen-vl-utils' bounds, so for them nothing changes.
    public func limited(toMaxPixels limit: Int) -> ResizeOptions {
        guard !native, limit >= factor * factor else { return self }
        var r = self
        r.minPixels = min(minPixels, limit)
        r.maxPixels = min(maxPixels ?? (image ? SmartResize.imageMaxPixels : SmartResize.videoMaxPixels), limit)
        return r
    }
}
