import Foundation
import Testing
import Tensors
@testable import VLM

/// M-RoPE positions against transformers 4.57's get_rope_index (the release), with 5.24's
/// recorded beside them where the two disagree.
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
        if let agrees = release.agreesWithTransformers5 {
            #expect((pos == c.positionIdsTransformers5) == agrees, "\(model) \(name): 5.24 agreement as recorded")
        }
    }

    /// The recorded cases cover each way 5.24 departs from the release.
    @Test func casesCoverTheDisagreements() throws {
        let a = Qwen25Fixtures.v4.models["tiny-qwen25vl-a"]!.cases
        #expect(Qwen25Fixtures.v4.versions["transformers"] == "4.57.6")
        // Text after the video: (t − 1)·step = 6 beats the merged sides 2 and 3 (3 tokens/s, 2 s per grid).
        #expect(a["video"]!.agreesWithTransformers5 == false)
        #expect(a["video_long_t"]!.agreesWithTransformers5 == false)
        // 0.5 s per grid truncates to 0 in the release: every temporal patch at the block start.
        let fps4 = Qwen25Fixtures.v5.models["tiny-qwen25vl-a"]!.cases["video_fps4"]!
        let first = fps4.ids.firstIndex(of: 810)!
        let block = a["video_fps4"]!.positionIds[0][first..<(first + 18)]
        #expect(Set(block).count == 1)
        #expect(Set(fps4.positionIdsTransformers5![0][first..<(first + 18)]).count == 3) // 0, 1, 3 after the start
        // Images agree.
        #expect(a["image"]!.agreesWithTransformers5 == true)
    }

    @Test func temporalStepTruncatesAsReleased() throws {
        func step(_ s: Double?, _ video: Bool = true, _ tps: Int = 3) throws -> Int {
            try Qwen25VLRoPE.temporalStep(secondsPerGrid: s, isVideo: video, tokensPerSecond: tps)
        }
        #expect(try step(nil) == 3 && step(2.0) == 6 && step(0.5) == 0 && step(1.5) == 3 && step(1.99) == 3)
        #expect(try step(2.0, false) == 0)
        // float32 first: 0.99999999 rounds to 1.0f before the integer cast.
        #expect(try step(0.99999999) == 3 && step(0.9999) == 0)
        #expect(throws: VLMError.self) { try step(.nan) }
        #expect(throws: VLMError.self) { try step(-1) }
        #expect(throws: VLMError.self) { try step(1e300) }
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
