import Foundation
import Testing
import Tensors
@testable import VLM

/// M-RoPE positions against get_rope_index as released (transformers 4.49, ported in
/// reference_qwen25vl.py), with 4.57's and 5.24's recorded beside them where they disagree.
@Suite struct Qwen25VLRoPETests {
    static let cases: [(String, String)] = Qwen25Fixtures.models.flatMap { m in
        Qwen25Fixtures.v5.models[m]!.cases.keys.sorted().map { (m, $0) }
    }

    static func blocks(_ c: Qwen25Fixtures.V5.Case) -> [Qwen25VLRoPE.Block] {
        guard let g = c.grid else { return [] }
        return [Qwen25VLRoPE.Block(grid: VisionGrid(t: g[0], h: g[1], w: g[2]), isVideo: c.kind == "video", secondsPerGrid: c.secondPerGridT)]
    }

    @Test(arguments: cases)
    func positionsMatchTheRelease(model: String, name: String) throws {
        let c = Qwen25Fixtures.v5.models[model]!.cases[name]!
        let release = Qwen25Fixtures.v4.models[model]!.cases[name]!
        let config = try Qwen25VLModelFiles(directory: VisionFixtures.model(model)).config
        let (pos, delta) = try Qwen25VLRoPE.positions(ids: c.ids, videoToken: config.videoTokenId, imageToken: config.imageTokenId,
                                                      blocks: Self.blocks(c), merge: config.vision.spatialMergeSize,
                                                      tokensPerSecond: config.vision.tokensPerSecond)
        #expect(pos == release.positionIds, "\(model) \(name)")
        #expect(delta == release.ropeDelta, "\(model) \(name)")
        #expect((pos == release.positionIdsTransformers4) == release.agreesWithTransformers4, "\(model) \(name): 4.57 as recorded")
        if let agrees = release.agreesWithTransformers5 {
            #expect((pos == c.positionIdsTransformers5) == agrees, "\(model) \(name): 5.24 agreement as recorded")
        }
    }

    /// The recorded cases cover each way 4.57 and 5.24 depart from the release.
    @Test func casesCoverTheDisagreements() throws {
        let a = Qwen25Fixtures.v4.models["tiny-qwen25vl-a"]!.cases
        let cases = Qwen25Fixtures.v5.models["tiny-qwen25vl-a"]!.cases
        #expect(Qwen25Fixtures.v4.versions["transformers"] == "4.57.6")
        /// Temporal positions of the block's patches (0, every h·w-th pad), relative to its start.
        func times(_ positions: [[Int]], _ name: String) -> [Int] {
            let c = cases[name]!
            let g = c.grid!, first = c.ids.firstIndex(of: 810)!, cells = g[1] * g[2] / 4
            return stride(from: first, to: first + g[0] * cells, by: cells).map { positions[0][$0] - positions[0][first] }
        }
        // Text after the video: (t − 1)·3 = 6 beats the merged sides 2 and 3 (3 tokens/s, 2 s per
        // grid); 5.24 resumes at start + 3, the release and 4.57 at max + 1.
        for name in ["video", "video_long_t"] {
            #expect(a[name]!.agreesWithTransformers4 && a[name]!.agreesWithTransformers5 == false, "\(name)")
        }
        // 0.5 s per grid at 3 tokens/s: the release's times 0, 1.5, 3 truncate to 0, 1, 3; 4.57
        // truncates 0.5 s to 0 first: every temporal patch at the block start. 5.24 has the
        // release's times but resumes text at start + 3 instead of start + 4.
        #expect(times(a["video_fps4"]!.positionIds, "video_fps4") == [0, 1, 3])
        #expect(times(a["video_fps4"]!.positionIdsTransformers4, "video_fps4") == [0, 0, 0])
        #expect(times(cases["video_fps4"]!.positionIdsTransformers5!, "video_fps4") == [0, 1, 3])
        #expect(a["video_fps4"]!.ropeDelta == a["video_fps4"]!.ropeDeltaTransformers4 + 1)
        #expect(!a["video_fps4"]!.agreesWithTransformers4 && a["video_fps4"]!.agreesWithTransformers5 == false)
        // 1.5 s per grid: 0, 4.5, 9 → 0, 4, 9; 4.57: 1 s → 0, 3, 6. 5.24 resumes text at start + 3.
        #expect(times(a["video_frac"]!.positionIds, "video_frac") == [0, 4, 9])
        #expect(times(a["video_frac"]!.positionIdsTransformers4, "video_frac") == [0, 3, 6])
        #expect(times(cases["video_frac"]!.positionIdsTransformers5!, "video_frac") == [0, 4, 9])
        #expect(!a["video_frac"]!.agreesWithTransformers4 && a["video_frac"]!.agreesWithTransformers5 == false)
        // Images and text agree everywhere.
        #expect(a["image"]!.agreesWithTransformers4 && a["image"]!.agreesWithTransformers5 == true)
        #expect(a["text"]!.agreesWithTransformers4)
    }

    @Test func temporalPositionsAreTheFloatProductTruncated() throws {
        func times(_ s: Double?, _ n: Int = 4, _ video: Bool = true, _ tps: Int = 3) throws -> [Int] {
            try Qwen25VLRoPE.temporalPositions(count: n, secondsPerGrid: s, isVideo: video, tokensPerSecond: tps)
        }
        #expect(try times(0.5) == [0, 1, 3, 4])          // 4 fps: 0, 1.5, 3, 4.5
        #expect(try times(1.5) == [0, 4, 9, 13])         // 0, 4.5, 9, 13.5
        #expect(try times(nil) == [0, 3, 6, 9] && times(2.0) == [0, 6, 12, 18] && times(1.99) == [0, 5, 11, 17])
        #expect(try times(2.0, 3, false) == [0, 0, 0])   // images: second_per_grid_t = 0
        #expect(try times(0.5, 0) == [])
        // float32 as torch: 0.99999999 is 1.0f; (9 · 0.7f) · 10 is 62.99999… in float32 — torch gives
        // [0, 7, 14, 21, 28, 35, 42, 49, 56, 62, 70, 77] (exact arithmetic would give 63 at a = 9).
        #expect(try times(0.99999999, 2) == [0, 3] && times(0.9999, 2) == [0, 2])
        #expect(try times(0.7, 12, true, 10) == [0, 7, 14, 21, 28, 35, 42, 49, 56, 62, 70, 77])
        #expect(throws: VLMError.self) { try times(.nan) }
        #expect(throws: VLMError.self) { try times(-1) }
        #expect(throws: VLMError.self) { try times(1e300) }
        #expect(throws: VLMError.self) { try times(1e6, 4, true, Int.max) } // beyond any position
    }

    @Test func promptsMustMatchTheirVision() throws {
        let g = VisionGrid(t: 1, h: 4, w: 4)
        func run(_ ids: [Int], _ blocks: [Qwen25VLRoPE.Block]) throws {
            _ = try Qwen25VLRoPE.positions(ids: ids, videoToken: 9, imageToken: 8, blocks: blocks, merge: 2, tokensPerSecond: 2)
        }
        #expect(throws: VLMError.self) { try run([1, 9, 9, 2], [.init(grid: g, isVideo: true)]) }            // too few pads
        #expect(throws: VLMError.self) { try run([1, 2], [.init(grid: g, isVideo: true)]) }                  // no block
        #expect(throws: VLMError.self) { try run([1, 9, 9, 9, 9], []) }                                       // no input
        #expect(throws: VLMError.self) { try run([1, 8, 8, 8, 8], [.init(grid: g, isVideo: true)]) }         // image pads, video input
        #expect(throws: VLMError.self) { try run([1, 9, 9, 9, 9], [.init(grid: VisionGrid(t: 1, h: 4, w: 3), isVideo: true)]) }
        #expect(throws: VLMError.self) { try run([1, 9, 9, 9, 9], [.init(grid: g, isVideo: true, secondsPerGrid: .infinity)]) }
        // Two videos back to back: each takes its own pads.
        let (pos, delta) = try Qwen25VLRoPE.positions(ids: [1] + Array(repeating: 9, count: 5) + [2], videoToken: 9, imageToken: 8,
                                                      blocks: [.init(grid: VisionGrid(t: 2, h: 4, w: 2), isVideo: true, secondsPerGrid: 2),
                                                               .init(grid: VisionGrid(t: 1, h: 2, w: 2), isVideo: true)],
                                                      merge: 2, tokensPerSecond: 2)
        #expect(pos[0] == [0, 1, 1, 5, 5, 6, 7] && pos[1] == [0, 1, 2, 1, 2, 6, 7] && pos[2] == [0, 1, 1, 1, 1, 6, 7])
        #expect(delta == 8 - 7)
    }
}
