import Foundation
import Testing
import Tensors
import Tokenizers
@testable import VLM

/// The whole model against the release (fixtures/scripts/reference_qwen25vl.py): 4.49's positions,
/// and full-prompt logits and 10 greedy tokens of the transformers model run with them, for text,
/// video (whole, 0.5 and 1.5 s per temporal patch) and image prompts.
@Suite struct Qwen25VLModelTests {
    static let cases = Qwen25VLRoPETests.cases

    static func vision(_ c: Qwen25Fixtures.V5.Case) throws -> [Qwen25VLVisionInput] {
        guard let input = c.input else { return [] }
        let (pixels, grid) = try Qwen25Fixtures.pixels(input)
        return [Qwen25VLVisionInput(pixels: pixels, grid: grid, isVideo: c.kind == "video", secondsPerGrid: c.secondPerGridT)]
    }

    /// Logits within the f32 tolerance of LanguageTests (max |Δ| ≤ 1e-4 · max |ref|) and the
    /// greedy tokens identical.
    @Test(arguments: cases)
    func positionsLogitsAndGreedyMatchTheRelease(model: String, name: String) throws {
        let c = Qwen25Fixtures.v5.models[model]!.cases[name]!
        let release = Qwen25Fixtures.v4.models[model]!.cases[name]!
        let m = try Qwen25VLModel(directory: VisionFixtures.model(model))
        let inputs = try Self.vision(c)
        let prepared = try m.prepare(ids: c.ids, vision: inputs)
        #expect(prepared.positions == release.positionIds, "\(model) \(name) positions")
        #expect(prepared.ropeDelta == release.ropeDelta)
        let logits = try m.logits(ids: c.ids, vision: inputs)
        #expect(logits.shape == release.logitsShape)
        let ref = try Qwen25Fixtures.values("\(model)_\(name)_logits")
        #expect(relativeError(logits.values, ref) <= 1e-4, "\(model) \(name) logits")
        let greedy = try m.generateGreedy(ids: c.ids, vision: inputs, maxNewTokens: release.greedy.count)
        #expect(greedy == release.greedy, "\(model) \(name) greedy")
    }

    /// The transformers-4 layout copy is the same model.
    @Test func v4LayoutGivesTheSameLogits() throws {
        let c = Qwen25Fixtures.v5.models["tiny-qwen25vl-a"]!.cases["video"]!
        let m = try Qwen25VLModel(directory: VisionFixtures.model("tiny-qwen25vl-a-v4"))
        let logits = try m.logits(ids: c.ids, vision: try Self.vision(c))
        let ref = try Qwen25Fixtures.values("tiny-qwen25vl-a_video_logits")
        #expect(relativeError(logits.values, ref) <= 1e-4)
    }

    /// tiny-qwen25vl-a's prompts are Qwen2-VL chat prompts of its own tokenizer: Qwen2VLPrompt
    /// reproduces their ids from the messages.
    @Test func chatPromptsTokenizeAsRecorded() throws {
        let tokenizer = try Tokenizer(path: VisionFixtures.model("tiny-qwen25vl-a") + "/tokenizer.json")
        let cases = Qwen25Fixtures.v5.models["tiny-qwen25vl-a"]!.cases
        let video = cases["video"]!
        let ids = try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [.video, .text("What happens in the video?")])],
                                           tokenizer: tokenizer, videoTokens: [video.grid!.reduce(1, *) / 4])
        #expect(ids == video.ids)
        let text = try Qwen2VLPrompt.encode([ChatMessage(role: "user", text: "What is a camera for?")], tokenizer: tokenizer)
        #expect(text == cases["text"]!.ids)
    }

    @Test func fpsSetsTheSecondsPerGrid() throws {
        let (pixels, grid) = try Qwen25Fixtures.pixels("video_odd_frames")
        #expect(Qwen25VLVisionInput(video: pixels, grid: grid, fps: 4).secondsPerGrid == 0.5)
        #expect(Qwen25VLVisionInput(video: pixels, grid: grid, fps: 1).secondsPerGrid == 2)
    }

    @Test func badPromptsAreErrors() throws {
        let m = try Qwen25VLModel(directory: VisionFixtures.model("tiny-qwen25vl-b"))
        let c = Qwen25Fixtures.v5.models["tiny-qwen25vl-b"]!.cases["video"]!
        let inputs = try Self.vision(c)
        #expect(throws: VLMError.self) { try m.logits(ids: c.ids, vision: []) }                        // pads without a video
        #expect(throws: VLMError.self) { try m.logits(ids: Array(c.ids.prefix(10)), vision: inputs) }  // too few pads
        #expect(throws: VLMError.self) { try m.logits(ids: c.ids.map { $0 == 393 ? 392 : $0 }, vision: inputs) } // image pads
        #expect(throws: VLMError.self) { try m.logits(ids: [5, 400]) }                                 // outside the vocabulary
        #expect(throws: VLMError.self) { try m.logits(ids: Array(repeating: 5, count: 513)) }          // beyond the context
        #expect(try m.generateGreedy(ids: [5, 6], maxNewTokens: 0) == [])
        let greedy = try m.generateGreedy(ids: c.ids, vision: inputs, maxNewTokens: 10)
        let stop = greedy[2]
        #expect(try m.generateGreedy(ids: c.ids, vision: inputs, maxNewTokens: 10, stop: [stop]) == Array(greedy[...greedy.firstIndex(of: stop)!]))
    }
}
