import Foundation
import Tensors

/// A video or image of a Qwen2.5-VL prompt: its pixels, grid, and for a video the seconds one
/// temporal patch spans (`second_per_grid_ts` = temporal_patch_size / sampled fps).
public struct Qwen25VLVisionInput: Sendable {
    public var pixels: Tensor
    public var grid: VisionGrid
    public var isVideo: Bool
    /// nil: 1.0, as transformers assumes when `second_per_grid_ts` is not given.
    public var secondsPerGrid: Double?

    public init(pixels: Tensor, grid: VisionGrid, isVideo: Bool = true, secondsPerGrid: Double? = nil) {
        self.pixels = pixels
        self.grid = grid
        self.isVideo = isVideo
        self.secondsPerGrid = secondsPerGrid
    }

    /// A video sampled at `fps` frames per second, grouped `temporalPatchSize` frames per patch.
    public init(video pixels: Tensor, grid: VisionGrid, fps: Double, temporalPatchSize: Int = 2) {
        self.init(pixels: pixels, grid: grid, isVideo: true, secondsPerGrid: Double(temporalPatchSize) / fps)
    }
}

/// Multimodal rotary positions (M-RoPE) of Qwen2.5-VL: Qwen2-VL's, with absolute time on the
/// temporal axis of videos. The rotary tables themselves are Qwen2-VL's (`Qwen2VLRoPE.cosSin`).
public enum Qwen25VLRoPE {
    /// One vision block of a prompt, in prompt order.
    public struct Block: Sendable, Equatable {
        public var grid: VisionGrid
        public var isVideo: Bool
        public var secondsPerGrid: Double?
        public init(grid: VisionGrid, isVideo: Bool, secondsPerGrid: Double? = nil) {
            self.grid = grid
            self.isVideo = isVideo
            self.secondsPerGrid = secondsPerGrid
        }
    }

    /// Largest seconds-per-grid accepted (a temporal patch of about 11 days).
    public static let maxSecondsPerGrid = 1e6

    /// The temporal step between a video's temporal patches, as released: transformers 4.57
    /// `get_rope_index` casts `second_per_grid_t` — a float32 tensor element — to the int64 dtype
    /// of `torch.arange` before multiplying (`torch.as_tensor(second_per_grid_t,
    /// dtype=range_tensor.dtype)`, truncation toward zero: 0.5 s → 0, 1.5 s → 1), then
    /// t = a · int(spg) · tokens_per_second. Images use second_per_grid_t = 0. (transformers 5.24
    /// instead truncates a · tokens_per_second · spg per patch; the two agree for whole seconds.)
    public static func temporalStep(secondsPerGrid: Double?, isVideo: Bool, tokensPerSecond: Int) throws -> Int {
        guard isVideo else { return 0 }
        let spg = secondsPerGrid ?? 1.0
        guard spg.isFinite, spg >= 0, spg <= maxSecondsPerGrid else {
            throw VLMError.invalidInput("seconds per temporal patch must be a finite number in 0...\(maxSecondsPerGrid), got \(spg)")
        }
        guard tokensPerSecond >= 0 else { throw VLMError.invalidInput("tokens_per_second must be ≥ 0, got \(tokensPerSecond)") }
        // float32 first (the processor's tensor), then truncation (the int64 cast).
        let (step, overflow) = Int(Float(spg)).multipliedReportingOverflow(by: tokensPerSecond)
        guard !overflow else { throw VLMError.invalidInput("temporal step \(spg) s × \(tokensPerSecond) overflows") }
        return step
    }

    /// `get_rope_index` (transformers 4.57, the release) for one sequence: text tokens count up on
    /// all three axes; a vision block (t·h·w / merge² pad tokens, video or image pads as its
    /// `Block` says) starts at the position after the text before it, st, and takes
    /// (st + a·step, st + b, st + c) over temporal patches a and merged cells (b, c); text after it
    /// resumes at max(position) + 1. Returns positions [3][T] and rope_delta = max + 1 − T, which
    /// decoding adds to the token index. (transformers 5.24 resumes at st + max(h, w) / merge,
    /// which differs whenever (t − 1)·step is the largest extent.)
    public static func positions(ids: [Int], videoToken: Int, imageToken: Int, blocks: [Block], merge: Int,
                                 tokensPerSecond: Int) throws -> (positions: [[Int]], delta: Int) {
        guard merge > 0 else { throw VLMError.invalidInput("spatial merge size must be > 0, got \(merge)") }
        var pos: [[Int]] = [[], [], []]
        for axis in 0..<3 { pos[axis].reserveCapacity(ids.count) }
        var next = 0 // max(position) + 1 so far
        var blockIndex = 0
        var i = 0
        while i < ids.count {
            let id = ids[i]
            guard id == videoToken || id == imageToken else {
                for axis in 0..<3 { pos[axis].append(next) }
                next += 1
                i += 1
                continue
            }
            guard blockIndex < blocks.count else {
                throw VLMError.invalidInput("more vision blocks in the prompt than videos/images given (\(blocks.count))")
            }
            let block = blocks[blockIndex]
            blockIndex += 1
            let g = block.grid
            guard (id == videoToken) == block.isVideo else {
                throw VLMError.invalidInput("vision block \(blockIndex) of the prompt is \(id == videoToken ? "a video" : "an image") but input \(blockIndex) is not")
            }
            guard g.t > 0, g.h > 0, g.w > 0, g.h % merge == 0, g.w % merge == 0, checkedElementCount([g.t, g.h, g.w]) != nil else {
                throw VLMError.invalidInput("grid \(g) must have positive sides, multiples of the \(merge)×\(merge) merge")
            }
            let (t, h, w) = (g.t, g.h / merge, g.w / merge)
            let count = t * h * w
            guard i + count <= ids.count, ids[i..<(i + count)].allSatisfy({ $0 == id }) else {
                throw VLMError.invalidInput("the prompt has fewer pad tokens than grid \(g) needs (\(count))")
            }
            let step = try temporalStep(secondsPerGrid: block.secondsPerGrid, isVideo: block.isVideo, tokensPerSecond: tokensPerSecond)
            let (lastTime, overflow) = (t - 1).multipliedReportingOverflow(by: step)
            guard !overflow, lastTime <= Int.max / 4 - next else {
                throw VLMError.invalidInput("temporal positions of grid \(g) at step \(step) overflow")
            }
            for a in 0..<t { for b in 0..<h { for c in 0..<w {
                pos[0].append(next + a * step); pos[1].append(next + b); pos[2].append(next + c)
            } } }
            next += max(lastTime, h - 1, w - 1) + 1
            i += count
        }
        guard blockIndex == blocks.count else {
            throw VLMError.invalidInput("\(blocks.count) videos/images but \(blockIndex) vision blocks in the prompt")
        }
        return (pos, next - ids.count)
    }
}
