import Foundation
import Testing
import Tensors
@testable import VLM

/// The language model against transformers (fixtures/scripts/reference_language.py).
@Suite struct LanguageTests {
    struct Case: Decodable {
        var ids: [Int]
        var grid: [Int]?
        var kind: String
        var positionIds: [[Int]]?
        var positionIdsTransformers5: [[Int]]?
        var rulesAgree: Bool?
        var logitsShape: [Int]?
        var greedy: [Int]?
        var prefixLength: Int?
    }
    struct File: Decodable { var models: [String: [String: Case]] }

    static let reference: File = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode(File.self, from: Data(contentsOf: VisionFixtures.fixtures.appendingPathComponent("reference/language/language.json")))
    }()

    static let cases: [(String, String)] = reference.models.keys.sorted().flatMap { m in
        reference.models[m]!.keys.sorted().filter { reference.models[m]![$0]!.logitsShape != nil }.map { (m, $0) }
    }

    func vision(for c: Case) throws -> [VisionInput] {
        guard let g = c.grid else { return [] }
        let name = c.kind == "image" ? "image" : (g == [3, 2, 4] ? "video_three_groups" : "video_nonsquare")
        let pixels = try VisionFixtures.values("pixels_\(name)")
        return [VisionInput(pixels: try Tensor(shape: [pixels.count / 1176, 1176], values: pixels),
                            grid: VisionGrid(t: g[0], h: g[1], w: g[2]), isVideo: c.kind == "video")]
    }

    @Test(arguments: cases)
    func positionsLogitsAndGreedyMatch(model: String, name: String) throws {
        let c = Self.reference.models[model]![name]!
        let m = try Qwen2VLModel(directory: VisionFixtures.model(model))
        let inputs = try vision(for: c)
        let prepared = try m.prepare(ids: c.ids, vision: inputs)
        #expect(prepared.positions == c.positionIds!, "\(model) \(name) positions")
        let logits = try m.logits(ids: c.ids, vision: inputs)
        #expect(logits.shape == c.logitsShape!)
        let ref = try VisionFixtures.values("../language/\(model)_\(name)_logits")
        #expect(relativeError(logits.values, ref) <= 1e-4, "\(model) \(name) logits")
        if let greedy = c.greedy {
            let out = try m.generateGreedy(ids: c.ids, vision: inputs, maxNewTokens: greedy.count)
            #expect(out == greedy, "\(model) \(name) greedy")
        }
    }

    /// transformers 5.24 resumes text after a vision block at start + max(h, w)/merge; Qwen's
    /// released rule (and ours) at max(position) + 1. They differ only when the temporal grid is
    /// the longest side, as in this case; the reference records both.
    @Test func longTemporalGridFollowsTheReleasedRule() throws {
        let c = Self.reference.models["tiny-qwen2vl-a"]!["longt"]!
        #expect(c.rulesAgree == false)
        #expect(c.positionIds != c.positionIdsTransformers5)
        let (pos, delta) = try Qwen2VLRoPE.positions(ids: c.ids, visionTokens: [392, 393], grids: [VisionGrid(t: 3, h: 2, w: 4)], merge: 2)
        #expect(pos == c.positionIds)
        #expect(delta == pos.flatMap { $0 }.max()! + 1 - c.ids.count)
    }

    @Test func promptsMustMatchTheirVision() throws {
        #expect(throws: VLMError.self) { try Qwen2VLRoPE.positions(ids: [1, 393, 393, 2], visionTokens: [393], grids: [VisionGrid(t: 1, h: 4, w: 4)], merge: 2) }
        #expect(throws: VLMError.self) { try Qwen2VLRoPE.positions(ids: [1, 2], visionTokens: [393], grids: [VisionGrid(t: 1, h: 2, w: 2)], merge: 2) }
    }
}
