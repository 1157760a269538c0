import Foundation

/// Qwen2-VL's resizing rules, ported from qwen-vl-utils 0.0.14 (`vision_process.py`).
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

    /// The per-frame max_pixels that `fetch_video` derives for a clip of `frameCount` frames:
    /// max(min(VIDEO_MAX, total_pixels / n × 2), int(min_pixels × 1.05)), then capped by an
    /// explicit max_pixels.
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

    public init(native: Bool = false, minPixels: Int = SmartResize.videoMinPixels,
                maxPixels: Int? = nil, totalPixels: Double? = nil, image: Bool = false) {
        self.image = image
        self.native = native
        self.minPixels = minPixels
        self.maxPixels = maxPixels
        self.totalPixels = totalPixels
    }

    /// The output (width, height) of a clip of `frameCount` frames whose display size is
    /// `width`×`height`.
    public func outputSize(width: Int, height: Int, frameCount: Int) throws -> (width: Int, height: Int) {
        if native { return (width, height) }
        let maxP = image ? Double(maxPixels ?? SmartResize.imageMaxPixels)
            : SmartResize.videoMaxPixels(frameCount: frameCount, minPixels: minPixels, maxPixels: maxPixels, totalPixels: totalPixels)
        let r = try SmartResize.resize(height: height, width: width,
                                       minPixels: Double(minPixels), maxPixels: maxP)
        return (r.width, r.height)
    }

    /// These bounds within a checkpoint processor's per-frame maximum: transformers' processor
    /// resizes frames larger than its `longest_edge` (max_pixels) again, so frames sampled for
    /// that checkpoint are sized within it from the start. Real Qwen2-VL checkpoints allow far
    /// more than qwen-vl-utils' bounds, so for them nothing changes.
    public func limited(toMaxPixels limit: Int) -> ResizeOptions {
        guard !native, limit >= SmartResize.factor * SmartResize.factor else { return self }
        var r = self
        r.minPixels = min(minPixels, limit)
        r.maxPixels = min(maxPixels ?? (image ? SmartResize.imageMaxPixels : SmartResize.videoMaxPixels), limit)
        return r
    }
}
