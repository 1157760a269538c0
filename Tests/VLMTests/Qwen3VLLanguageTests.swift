import Foundation
import Testing
import Tensors
@testable import VLM

/// The whole model against transformers 4.57 (fixtures/scripts/reference_qwen3vl.py): the
/// processor's prompt ids (with timestamps), logits of the prompt and 10 greedy tokens.
@Suite struct Qwen3VLLanguageTests {
    static let cases: [(String, String)] = Qwen3VLFixtures.models.flatMap { m in Qwen3VLPromptTests.prompts.map { (m, $0) } }

    func vision(_ p: Qwen3VLFixtures.Index.Prompt, model: String) throws -> [VisionInput] {
        guard let name = p.input else { return [] }
        let processor = Qwen3VLProcessor(files: try Qwen3VLModelFiles(directory: VisionFixtures.model(model)))
        let frames = Qwen3VLFixtures.frames(name)
        let (pixels, grid) = name == "image" ? try processor.patches(image: frames[0]) : try processor.patches(frames: frames)
        return [VisionInput(pixels: pixels, grid: grid, isVideo: name != "image")]
    }

    /// Logits within the f32 tolerance of LanguageTests (max |Δ| ≤ 1e-4 · max |ref|) and greedy
    /// tokens identical, for video (DeepStack, timestamps), image and text-only prompts.
    @Test(arguments: cases)
    func logitsAndGreedyMatch(model: String, name: String) throws {
        let p = Qwen3VLFixtures.index.models[model]!.prompts[name]!
        let m = try Qwen3VLModel(directory: VisionFixtures.model(model))
        let inputs = try vision(p, model: model)
        let prepared = try m.prepare(ids: p.idsV4, vision: inputs)
        #expect(prepared.positions == p.positionsV4 && prepared.ropeDelta == p.ropeDeltaV4)
        #expect((prepared.deepstack?.features.count ?? 0) == (inputs.isEmpty ? 0 : m.config.vision.deepstackVisualIndexes.count))
        let logits = try m.logits(ids: p.idsV4, vision: inputs)
        #expect(logits.shape == p.logitsShape)
        let ref = try Qwen3VLFixtures.values("\(model)_\(name)_logits_v4")
        #expect(relativeError(logits.values, ref) <= 1e-4, "\(model) \(name) logits")
        let out = try m.generateGreedy(ids: p.idsV4, vision: inputs, maxNewTokens: p.greedy.count)
        #expect(out == p.greedy, "\(model) \(name) greedy")
    }

    /// DeepStack matters: without it the video logits leave the tolerance (the test above can fail).
    @Test func deepstackChangesTheLogits() throws {
        let p = Qwen3VLFixtures.index.models["tiny-qwen3vl-a"]!.prompts["video"]!
        let m = try Qwen3VLModel(directory: VisionFixtures.model("tiny-qwen3vl-a"))
        var prepared = try m.prepare(ids: p.idsV4, vision: try vision(p, model: "tiny-qwen3vl-a"))
        prepared.deepstack = nil
        let logits = try m.language.logits(try m.prefill(prepared, cache: try m.makeCache(capacity: p.idsV4.count)))
        let ref = try Qwen3VLFixtures.values("tiny-qwen3vl-a_video_logits_v4")
        #expect(relativeError(logits.values, ref) > 1e-3)
    }

    @Test func mismatchedPromptsThrow() throws {
        let p = Qwen3VLFixtures.index.models["tiny-qwen3vl-a"]!.prompts["video"]!
        let m = try Qwen3VLModel(directory: VisionFixtures.model("tiny-qwen3vl-a"))
        let inputs = try vision(p, model: "tiny-qwen3vl-a")
        let pad = m.config.videoTokenId
        var fewer = p.idsV4
        fewer.remove(at: fewer.lastIndex(of: pad)!)
        #expect(throws: VLMError.self) { try m.prepare(ids: fewer, vision: inputs) }
        #expect(throws: VLMError.self) { try m.prepare(ids: p.idsV4 + [pad], vision: inputs) }
        #expect(throws: VLMError.self) { try m.logits(ids: [1, 2, 100_000]) }
        #expect(throws: VLMError.self) { try m.generateGreedy(ids: [1, 2], maxNewTokens: -1) }
        #expect(try m.generateGreedy(ids: [1, 2], maxNewTokens: 0) == [])
    }
}
