import Foundation
import Tensors

/// Multimodal rotary positions (M-RoPE) of Qwen2-VL.
public enum Qwen2VLRoPE {
    /// `get_rope_index` for one sequence: text tokens count up on all three axes; a vision block
    /// (t·h·w / merge² pad tokens) starts after the text before it and takes (t, h, w) positions
    /// over merged cells; text after it resumes at max(position) + 1 — Qwen's rule as released
    /// (transformers 4.x). Returns positions [3][T] and rope_delta = max + 1 − T, which decoding
    /// adds to the token index.
    public static func positions(ids: [Int], visionTokens: Set<Int>, grids: [VisionGrid], merge: Int) throws
        -> (positions: [[Int]], delta: Int) {
        var pos: [[Int]] = [[], [], []]
        pos[0].reserveCapacity(ids.count); pos[1].reserveCapacity(ids.count); pos[2].reserveCapacity(ids.count)
        var next = 0 // max(position) + 1 so far
        var gridIndex = 0
        var i = 0
        while i < ids.count {
            if visionTokens.contains(ids[i]) {
                guard gridIndex < grids.count else {
                    throw VLMError.invalidInput("more vision blocks in the prompt than videos/images given")
                }
                let g = grids[gridIndex]
                gridIndex += 1
                guard merge > 0, g.t > 0, g.h > 0, g.w > 0, checkedElementCount([g.t, g.h, g.w]) != nil else {
                    throw VLMError.invalidInput("grid \(g) must have positive sides and a representable size")
                }
                let (t, h, w) = (g.t, g.h / merge, g.w / merge)
                guard i + t * h * w <= ids.count, ids[i..<(i + t * h * w)].allSatisfy(visionTokens.contains) else {
                    throw VLMError.invalidInput("the prompt has fewer vision pad tokens than grid \(g) needs (\(t * h * w))")
                }
                for a in 0..<t { for b in 0..<h { for c in 0..<w {
                    pos[0].append(next + a); pos[1].append(next + b); pos[2].append(next + c)
                } } }
                next += max(t, h, w)
                i += t * h * w
            } else {
                for axis in 0..<3 { pos[axis].append(next) }
                next += 1
                i += 1
            }
        }
        guard gridIndex == grids.count else { throw VLMError.invalidInput("\(grids.count) videos/images but \(gridIndex) vision blocks in the prompt") }
        return (pos, next - ids.count)
    }

    /// cos/sin [T, headDim] for positions [3][T]: inv_freq = θ^(−2j/headDim) (float32, as
    /// transformers), frequency j takes the axis of its `mrope_section` (t, h, w in turn), and
    /// the half is repeated (rotate-half layout). Port of `Qwen2VLRotaryEmbedding`.
    /// The tables' size follows the prompt: a refused allocation throws.
    public static func cosSin(positions: [[Int]], theta: Double, headDim: Int, section: [Int]) throws -> (Tensor, Tensor) {
        let t = positions[0].count
        let cos = try Tensor(uninitialized: [t, headDim], what: "rotary cos")
        let sin = try Tensor(uninitialized: [t, headDim], what: "rotary sin")
        fill(cos: cos, sin: sin, positions: positions, theta: theta, headDim: headDim, section: section)
        return (cos, sin)
    }

    private static func fill(cos: Tensor, sin: Tensor, positions: [[Int]], theta: Double, headDim: Int, section: [Int]) {
        let half = headDim / 2, t = positions[0].count
        let invFreq = (0..<half).map { j in 1 / powf(Float(theta), Float(2 * j) / Float(headDim)) }
        var axisOf = [Int](repeating: 2, count: half)
        var j = 0
        for (axis, n) in section.enumerated() { for _ in 0..<n where j < half { axisOf[j] = axis; j += 1 } }
        for r in 0..<t {
            for j in 0..<half {
                let angle = Float(positions[axisOf[j]][r]) * invFreq[j]
                let c = Foundation.cos(angle), s = Foundation.sin(angle)
                cos.pointer[r * headDim + j] = c; cos.pointer[r * headDim + j + half] = c
                sin.pointer[r * headDim + j] = s; sin.pointer[r * headDim + j + half] = s
            }
        }
    }
}
