import Foundation
import Tensors

/// Multimodal rotary positions of Qwen3-VL: get_rope_index over timestamped frames and the
/// interleaved M-RoPE tables.
public enum Qwen3VLRoPE {
    /// One vision input of a prompt, in prompt order: a video (each temporal patch becomes its own
    /// t = 1 block, as the timestamps split the frames) or an image.
    public struct Input: Sendable, Equatable {
        public var grid: VisionGrid
        public var isVideo: Bool
        public init(grid: VisionGrid, isVideo: Bool) { self.grid = grid; self.isVideo = isVideo }
    }

    /// `get_rope_index` for one sequence (transformers 4.57, `Qwen3VLModel.get_rope_index`): each
    /// video grid is split into grid.t blocks of (1, h, w); text counts up on all three axes; a
    /// block of (h/merge)·(w/merge) pads starts after the text before it, takes (t, h, w) positions
    /// over merged cells, and text after it resumes at max(position) + 1. Blocks are taken in
    /// prompt order, the next image grid at an `imageToken`, the next video frame at a `videoToken`.
    /// Returns positions [3][T] and rope_delta = max + 1 − T, which decoding adds to the token index.
    public static func positions(ids: [Int], imageToken: Int, videoToken: Int, inputs: [Input], merge: Int) throws
        -> (positions: [[Int]], delta: Int) {
        guard merge > 0 else { throw VLMError.invalidInput("merge size must be > 0, got \(merge)") }
        var images: [VisionGrid] = [], frames: [VisionGrid] = []
        for input in inputs {
            let g = input.grid
            guard g.t > 0, g.h > 0, g.w > 0, g.h % merge == 0, g.w % merge == 0, checkedElementCount([g.t, g.h, g.w]) != nil else {
                throw VLMError.invalidInput("grid \(g) must have positive sides, multiples of the \(merge)×\(merge) merge")
            }
            if input.isVideo { frames += Array(repeating: VisionGrid(t: 1, h: g.h, w: g.w), count: g.t) } else { images.append(g) }
        }
        var pos: [[Int]] = [[], [], []]
        for a in 0..<3 { pos[a].reserveCapacity(ids.count) }
        var next = 0 // max(position) + 1 so far
        var imageIndex = 0, frameIndex = 0
        var i = 0
        while i < ids.count {
            let id = ids[i]
            guard id == imageToken || id == videoToken else {
                for a in 0..<3 { pos[a].append(next) }
                next += 1
                i += 1
                continue
            }
            let g: VisionGrid
            if id == imageToken {
                guard imageIndex < images.count else { throw VLMError.invalidInput("more image blocks in the prompt than images given") }
                g = images[imageIndex]; imageIndex += 1
            } else {
                guard frameIndex < frames.count else { throw VLMError.invalidInput("more video frame blocks in the prompt than video frames given") }
                g = frames[frameIndex]; frameIndex += 1
            }
            let (t, h, w) = (g.t, g.h / merge, g.w / merge)
            let n = t * h * w
            guard i + n <= ids.count, ids[i..<(i + n)].allSatisfy({ $0 == id }) else {
                throw VLMError.invalidInput("the prompt has fewer pad tokens than grid \(g) needs (\(n)) at token \(i)")
            }
            for a in 0..<t { for b in 0..<h { for c in 0..<w {
                pos[0].append(next + a); pos[1].append(next + b); pos[2].append(next + c)
            } } }
            next += max(t, h, w)
            i += n
        }
        guard imageIndex == images.count, frameIndex == frames.count else {
            throw VLMError.invalidInput("\(images.count) images and \(frames.count) video frames given, but the prompt has \(imageIndex) and \(frameIndex) blocks")
        }
        return (pos, next - ids.count)
    }

    /// Which axis (0 t, 1 h, 2 w) frequency j of the half head uses: `apply_interleaved_mrope`
    /// takes h at j ≡ 1 (mod 3) below 3·section[1], w at j ≡ 2 (mod 3) below 3·section[2], else t.
    static func axes(half: Int, section: [Int]) -> [Int] {
        (0..<half).map { j in
            if j % 3 == 1 && j < 3 * section[1] { return 1 }
            if j % 3 == 2 && j < 3 * section[2] { return 2 }
            return 0
        }
    }

    /// cos/sin [T, headDim] for positions [3][T]: inv_freq = θ^(−2j/headDim) (float32), frequency j
    /// at the position of its interleaved axis, the half repeated (rotate-half layout).
    /// Port of `Qwen3VLTextRotaryEmbedding.forward` (4.57).
    public static func cosSin(positions: [[Int]], theta: Double, headDim: Int, section: [Int]) throws -> (Tensor, Tensor) {
        guard positions.count == 3, positions[1].count == positions[0].count, positions[2].count == positions[0].count else {
            throw VLMError.invalidInput("positions must be 3 rows of equal length")
        }
        guard section.count == 3, headDim > 0, headDim % 2 == 0 else {
            throw VLMError.invalidInput("M-RoPE needs 3 sections and an even head dim, got \(section) and \(headDim)")
        }
        let t = positions[0].count, half = headDim / 2
        let cos = try Tensor(uninitialized: [t, headDim], what: "rotary cos")
        let sin = try Tensor(uninitialized: [t, headDim], what: "rotary sin")
        let invFreq = (0..<half).map { j in 1 / powf(Float(theta), Float(2 * j) / Float(headDim)) }
        let axisOf = axes(half: half, section: section)
        for r in 0..<t {
            for j in 0..<half {
                let angle = Float(positions[axisOf[j]][r]) * invFreq[j]
                let c = Foundation.cos(angle), s = Foundation.sin(angle)
                cos.pointer[r * headDim + j] = c; cos.pointer[r * headDim + j + half] = c
                sin.pointer[r * headDim + j] = s; sin.pointer[r * headDim + j + half] = s
            }
        }
        return (cos, sin)
    }
}
