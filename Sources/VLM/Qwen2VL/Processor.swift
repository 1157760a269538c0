import Foundation
import Media
import Tensors

/// An upright RGB image: `height` rows of `width` pixels, 3 bytes each.
public struct RGBImage: Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "\(pixels.count) bytes do not fill \(width)×\(height) RGB")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    public init(_ frame: VideoFrame) {
        self.init(width: frame.width, height: frame.height, pixels: frame.rgb)
    }
}

/// Temporal × height × width of a video's patch grid (before 2×2 merging).
public struct VisionGrid: Sendable, Equatable, CustomStringConvertible {
    public var t: Int
    public var h: Int
    public var w: Int
    public init(t: Int, h: Int, w: Int) { self.t = t; self.h = h; self.w = w }
    public var patches: Int { t * h * w }
    public var description: String { "(\(t), \(h), \(w))" }
}

/// Frames → `pixel_values_videos` [t·h·w, C·T·P·P] and the grid, as transformers'
/// Qwen2VLVideoProcessor (`rescale_and_normalize`, `patchify`) computes them. Frames arrive
/// already sized by smart_resize (Media does the resize), so no resizing happens here.
public struct Qwen2VLProcessor: Sendable {
    public var config: Qwen2VLPreprocessorConfiguration

    public init(config: Qwen2VLPreprocessorConfiguration = Qwen2VLPreprocessorConfiguration()) {
        self.config = config
    }

    /// Sampling options for this processor: frame sizes within its maximum pixel count (the
    /// checkpoint's `longest_edge` / `max_pixels`), as the reference caps them. Every command that
    /// feeds a checkpoint samples through this.
    public func sampling(_ options: SamplingOptions) -> SamplingOptions {
        var o = options
        o.resize = o.resize.limited(toMaxPixels: config.maxPixels)
        return o
    }

    /// Sampling options for a still image with these settings: qwen-vl-utils' `fetch_image`
    /// bounds within the image processor's (`min_pixels`, `max_pixels`); one frame (the first of
    /// an animated image).
    public func imageSampling(_ options: SamplingOptions) -> SamplingOptions {
        var o = options
        o.resize = ResizeOptions(native: options.resize.native, minPixels: max(SmartResize.imageMinPixels, config.minPixels),
                                 maxPixels: min(SmartResize.imageMaxPixels, config.maxPixels), image: true)
        o.maxFrames = 1
        return o
    }

    /// A single image goes through the same path: its frame is repeated to fill a temporal patch.
    public func patches(image: RGBImage) throws -> (pixels: Tensor, grid: VisionGrid) {
        try patches(frames: [image])
    }

    public func patches(frames: [RGBImage]) throws -> (pixels: Tensor, grid: VisionGrid) {
        guard let first = frames.first else { throw VLMError.invalidInput("no frames to process") }
        // A processor built from an unchecked configuration: no zero patch or merge size below.
        try config.validate(path: "preprocessor configuration")
        let p = config.patchSize, m = config.mergeSize, tp = config.temporalPatchSize
        let factor = p * m
        guard first.width % factor == 0, first.height % factor == 0 else {
            throw VLMError.invalidInput("frame size \(first.width)×\(first.height) is not a multiple of \(factor) (resize with smart_resize first)")
        }
        for f in frames where f.width != first.width || f.height != first.height {
            throw VLMError.invalidInput("frames differ in size: \(first.width)×\(first.height) and \(f.width)×\(f.height)")
        }
        // Pad to a whole number of temporal patches with the last frame.
        let padded = frames.count + (tp - frames.count % tp) % tp
        let grid = VisionGrid(t: padded / tp, h: first.height / p, w: first.width / p)
        let rowSize = 3 * tp * p * p
        let out = try Tensor(uninitialized: [grid.patches, rowSize], what: "pixel values")

        // (x · 1/rescale − mean·(1/rescale)) / (std·(1/rescale)): transformers fuses rescale into
        // mean and std in float32; the same float32 operations give the same bits.
        let scale = Float(1.0 / config.rescaleFactor)
        let mean = config.imageMean.map { config.doNormalize ? (config.doRescale ? Float($0) * scale : Float($0)) : 0 }
        let std = config.imageStd.map { config.doNormalize ? (config.doRescale ? Float($0) * scale : Float($0)) : 1 }
        let rescaleOnly = !config.doNormalize && config.doRescale
        let width = first.width
        var row = 0
        for t in 0..<grid.t {
            for hb in 0..<(grid.h / m) {
                for wb in 0..<(grid.w / m) {
                    for mh in 0..<m {
                        for mw in 0..<m {
                            // [patch: [channel][temporal][py][px]]
                            let dst = out.pointer + row * rowSize
                            var i = 0
                            for c in 0..<3 {
                                for tt in 0..<tp {
                                    let frame = frames[min(t * tp + tt, frames.count - 1)].pixels
                                    for py in 0..<p {
                                        let y = (hb * m + mh) * p + py
                                        let base = (y * width + (wb * m + mw) * p) * 3 + c
                                        for px in 0..<p {
                                            let v = Float(frame[base + px * 3])
                                            dst[i] = rescaleOnly ? v * Float(config.rescaleFactor) : (v - mean[c]) / std[c]
                                            i += 1
                                        }
                                    }
                                }
                            }
                            row += 1
                        }
                    }
                }
            }
        }
        return (out, grid)
    }
}
