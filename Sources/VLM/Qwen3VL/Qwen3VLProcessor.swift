import Foundation
import Tensors

/// Frames → pixel values [t·h·w, C·T·P·P] and the grid, as transformers' Qwen3VLVideoProcessor
/// (videos) and Qwen2VLImageProcessor (images, with Qwen3-VL's settings) compute them: rescale,
/// normalise (mean = std = 0.5 for Qwen3-VL), pad to whole temporal patches with the last frame,
/// flatten in 2×2-merge order. The flattening is Qwen2-VL's, shared by calling `Qwen2VLProcessor`
/// with these settings. Frames arrive already sized (multiples of patch × merge); no resizing here.
public struct Qwen3VLProcessor: Sendable {
    public var video: Qwen3VLPreprocessorConfiguration
    public var image: Qwen3VLPreprocessorConfiguration

    public init(video: Qwen3VLPreprocessorConfiguration = Qwen3VLPreprocessorConfiguration(),
                image: Qwen3VLPreprocessorConfiguration? = nil) {
        self.video = video
        self.image = image ?? video
    }

    public init(files: Qwen3VLModelFiles) { self.init(video: files.video, image: files.image) }

    /// A video's frames (an odd count is padded with its last frame).
    public func patches(frames: [RGBImage]) throws -> (pixels: Tensor, grid: VisionGrid) {
        try Qwen2VLProcessor(config: video.patching).patches(frames: frames)
    }

    /// A single image: its frame repeated to fill one temporal patch.
    public func patches(image frame: RGBImage) throws -> (pixels: Tensor, grid: VisionGrid) {
        try Qwen2VLProcessor(config: image.patching).patches(image: frame)
    }

    /// Seconds of each temporal patch: the frame indices padded to a multiple of `mergeSize` with
    /// the last, each index / fps, then the mean of the first and last time of each group.
    /// Port of `Qwen3VLProcessor._calculate_timestamps`, which the processor calls with the video
    /// processor's (spatial) `merge_size`.
    public static func timestamps(frameIndices: [Int], fps: Double, mergeSize: Int) throws -> [Double] {
        guard let last = frameIndices.last else { throw VLMError.invalidInput("no frame indices to time") }
        guard fps.isFinite, fps > 0 else { throw VLMError.invalidInput("video fps must be a finite number > 0, got \(fps)") }
        guard mergeSize > 0 else { throw VLMError.invalidInput("merge size must be > 0, got \(mergeSize)") }
        var indices = frameIndices
        if indices.count % mergeSize != 0 { indices += Array(repeating: last, count: mergeSize - indices.count % mergeSize) }
        let times = indices.map { Double($0) / fps }
        return stride(from: 0, to: times.count, by: mergeSize).map { (times[$0] + times[$0 + mergeSize - 1]) / 2 }
    }
}
