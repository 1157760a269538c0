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
/// temporal axis of videos (seconds-per-grid × tokens_per_second in float, truncated per patch),
/// as the model was released with transformers 4.49.0. The rotary tables themselves are Qwen2-VL's (`Qwen2VLRoPE.cosSin`).
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

    /// Largest temporal position a vision block may reach (keeps every sum below Int.max).
    static let maxTemporalPosition = Int.max / 8

    /// The temporal positions (relative to the block start) of a video's `count` temporal
    /// patches, as released: transformers 4.49.0 `get_rope_index` (modeling_qwen2_5_vl.py, lines
    /// 1679-1685) computes `(arange(t) * second_per_grid_t * tokens_per_second).long()` — an int64
    /// arange times a float32 tensor element, so the product is float32, ((a · spg) · tps) rounded
    /// per operation, then truncated toward zero per patch (inputs are ≥ 0: truncation is floor).
    /// 0.5 s per grid at 3 tokens/s: 0, 1, 3, 4 (1.5 → 1, 4.5 → 4). Images use
    /// second_per_grid_t = 0 (all at the start); a video without seconds-per-grid, 1.0.
    /// (transformers 4.57 instead casts second_per_grid_t to int64 before multiplying — 0.5 s → 0,
    /// every patch at the start — and 5.24 computes the same times as 4.49.)
    public static func temporalPositions(count: Int, secondsPerGrid: Double?, isVideo: Bool, tokensPerSecond: Int) throws -> [Int] {
        guard count >= 0 else { throw VLMError.invalidInput("temporal patch count must be ≥ 0, got \(count)") }
        guard isVideo else { return Array(repeating: 0, count: count) }
        let spg = secondsPerGrid ?? 1.0
        guard spg.isFinite, spg >= 0, spg <= maxSecondsPerGrid else {
            throw VLMError.invalidInput("seconds per temporal patch must be a finite number in 0...\(maxSecondsPerGrid), got \(spg)")
        }
        guard tokensPerSecond >= 0 else { throw VLMError.invalidInput("tokens_per_second must be ≥ 0, got \(tokensPerSecond)") }
        // float32 as torch: the processor's second_per_grid_ts tensor, the promoted product.
        let (seconds, rate) = (Float(spg), Float(tokensPerSecond))
        return try (0..<count).map { a in
            let time = Float(a) * seconds * rate
            guard time.isFinite, time < Float(maxTemporalPosition) else {
                throw VLMError.invalidInput("temporal position of patch \(a) at \(spg) s × \(tokensPerSecond) tokens/s overflows")
            }
            return Int(time) // truncation toward zero, as .long()
        }
    }

    /// `get_rope_index` as released (transformers 4.49.0, lines 1625-1699) for one sequence: text
    /// tokens count up on all three axes; a vision block (t·h·w / merge² pad tokens, video or image
    /// pads as its `Block` says) starts at the position after the text before it, st, and takes
    /// (st + time(a), st + b, st + c) over temporal patches a (`temporalPositions`) and merged
    /// cells (b, c); text after it resumes at max(position) + 1. Returns positions [3][T] and
    /// rope_delta = max + 1 − T, which decoding adds to the token index. (transformers 5.24 resumes
    /// at st + max(h, w) / merge, which differs whenever the last patch's time is the largest
    /// extent; 4.57 resumes as 4.49 but truncates seconds-per-grid before multiplying.)
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
            let times = try temporalPositions(count: t, secondsPerGrid: block.secondsPerGrid, isVideo: block.isVideo,
                                              tokensPerSecond: tokensPerSecond)
            let extent = max(times.max() ?? 0, h - 1, w - 1)
            guard extent <= Int.max / 4 - next else {
                throw VLMError.invalidInput("positions of grid \(g) after position \(next) overflow")
            }
            for a in 0..<t { for b in 0..<h { for c in 0..<w {
                pos[0].append(next + times[a]); pos[1].append(next + b); pos[2].append(next + c)
            } } }
            next += extent + 1
            i += count
        }
        guard blockIndex == blocks.count else {
            throw VLMError.invalidInput("\(blocks.count) videos/images but \(blockIndex) vision blocks in the prompt")
        }
        return (pos, next - ids.count)
    }
}
