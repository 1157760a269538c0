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

    /// Indices of the frames to sample from a video of `totalFrames` frames at `videoFPS`:
    /// n = int(total / videoFPS · fps), clamped to [min_frames, max_frames] and to the total (no
    /// rounding to an even count, unlike Qwen2-VL), then linspace(0, total − 1, n) rounded half to
    /// even. Port of `Qwen3VLVideoProcessor.sample_frames` (4.57 and 5.24 agree).
    public func frameIndices(totalFrames: Int, videoFPS: Double) throws -> [Int] {
        guard totalFrames > 0 else { throw VLMError.invalidInput("a video needs ≥ 1 frame to sample, got \(totalFrames)") }
        guard videoFPS.isFinite, videoFPS > 0 else { throw VLMError.invalidInput("video fps must be a finite number > 0, got \(videoFPS)") }
        try video.validate(path: "video processor configuration")
        let wanted = Double(totalFrames) / videoFPS * video.fps
        let n = min(max(wanted < Double(Int.max) ? Int(wanted) : Int.max, video.minFrames), video.maxFrames, totalFrames)
        guard n > 1 else { return [0] }
        // numpy.linspace: i · step + start, the last exactly stop.
        let stop = Double(totalFrames - 1), step = stop / Double(n - 1)
        return (0..<n).map { i in i == n - 1 ? totalFrames - 1 : Int((Double(i) * step).rounded(.toNearestOrEven)) }
    }

    /// Seconds of each temporal patch: the frame indices padded to a multiple of `mergeSize` with
    /// the last, each index / fps, then the mean of the first and last time of each group.
    /// Port of `Qwen3VLProcessor._calculate_timestamps`, which the processor calls with the video
    /// processor's (spatial) `merge_size`.
    public static func timestamps(frameIndices: [Int], fps: Double, mergeSize: Int) throws -> [Double] {
        guard !frameIndices.isEmpty else { throw VLMError.invalidInput("no frame indices to time") }
        guard fps.isFinite, fps > 0 else { throw VLMError.invalidInput("video fps must be a finite number > 0, got \(fps)") }
        return try timestamps(frameTimes: frameIndices.map { Double($0) / fps }, mergeSize: mergeSize)
    }

    /// The same grouping over the frames' times (seconds): padded to a multiple of `mergeSize`
    /// with the last, then the mean of the first and last time of each group. Equal to
    /// `timestamps(frameIndices:fps:mergeSize:)` when each time is index / fps.
    public static func timestamps(frameTimes: [Double], mergeSize: Int) throws -> [Double] {
        guard let last = frameTimes.last else { throw VLMError.invalidInput("no frame times to group") }
        guard mergeSize > 0 else { throw VLMError.invalidInput("merge size must be > 0, got \(mergeSize)") }
        var times = frameTimes
        if times.count % mergeSize != 0 { times += Array(repeating: last, count: mergeSize - times.count % mergeSize) }
        return stride(from: 0, to: times.count, by: mergeSize).map { (times[$0] + times[$0 + mergeSize - 1]) / 2 }
    }
}
