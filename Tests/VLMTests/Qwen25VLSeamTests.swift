import Foundation
import Media
import Testing
import Tensors
@testable import VLM

/// Qwen2.5-VL through the model seam, as Pipeline and the CLI use it: loaded by `model_type`, an
/// image prompted as an image, a video's description and two questions from one encoding (its
/// sampling rate reaching the time positions), a text prompt — each equal to transformers' greedy
/// answer (fixtures/scripts/reference_seam_qwen25vl.py). Random weights leave near ties: tokens
/// must match up to the first step whose reference top-2 margin is below 1e-3; there either of
/// the two may be taken and the comparison ends.
@Suite struct Qwen25VLSeamTests {
    struct Reference: Decodable {
        struct Input: Decodable { var frames: Int, height: Int, width: Int, seed: Int }
        struct Answer: Decodable { var prompt: String, ids: [Int], greedy: [Int], margins: [Double] }
        struct Case: Decodable { var input: Input?; var fps: Double?; var grid: [Int]?; var answers: [Answer] }
        var newTokens: Int
        var image: Case, video: Case, text: Case
    }

    static let reference: Reference = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode(Reference.self, from: Data(contentsOf: VisionFixtures.fixtures.appendingPathComponent("reference/seam/qwen25vl-a.json")))
    }()

    static func frames(_ i: Reference.Input) -> [RGBImage] {
        VisionFixtures.frames(.init(frames: i.frames, height: i.height, width: i.width, seed: i.seed, grid: [], pixelsShape: []))
    }

    /// Equal up to the first near tie of the reference; returns how many steps were compared.
    @discardableResult
    static func expectGreedy(_ got: [Int], _ ref: Reference.Answer, sourceLocation: SourceLocation = #_sourceLocation) -> Int {
        for (i, token) in ref.greedy.enumerated() {
            if ref.margins[i] < 1e-3 { return i }
            guard i < got.count, got[i] == token else {
                Issue.record("step \(i): \(i < got.count ? String(got[i]) : "nothing") instead of \(token) (margin \(ref.margins[i])); got \(got), expected \(ref.greedy)",
                             sourceLocation: sourceLocation)
                return i
            }
        }
        #expect(got.count == ref.greedy.count, sourceLocation: sourceLocation)
        return ref.greedy.count
    }

    static func load() throws -> any VisionLanguageModel { try ModelRegistry.load(directory: VisionFixtures.model("tiny-qwen25vl-a")) }

    @Test func registryLoadsQwen25() throws {
        let model = try Self.load()
        #expect(model is Qwen25VLFamily && model.family == "Qwen2.5-VL")
        #expect(ModelRegistry.supportedModelTypes.contains("qwen2_5_vl"))
    }

    @Test func image() throws {
        let model = try Self.load()
        let ref = Self.reference.image
        let refInput = try #require(ref.input)
        let input = try model.imageInput(try #require(Self.frames(refInput).first))
        #expect([input.grid.t, input.grid.h, input.grid.w] == ref.grid)
        let answers = try model.answer(ref.answers.map(\.prompt), about: input, parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens))
        var compared = 0
        for (a, r) in zip(answers, ref.answers) {
            #expect(a.promptTokens == r.ids.count)
            compared += Self.expectGreedy(a.tokens, r)
        }
        #expect(compared >= 8, "too few steps compared: \(compared)")
    }

    @Test func videoWithTwoQuestions() throws {
        let model = try Self.load()
        let ref = Self.reference.video
        let refInput = try #require(ref.input)
        let fps = try #require(ref.fps)
        let frames = Self.frames(refInput).enumerated().map { i, im in
            VideoFrame(index: i, timestamp: Double(i) / fps, width: im.width, height: im.height, rgb: im.pixels)
        }
        let input = try model.videoInput(frames, fps: fps)
        #expect([input.grid.t, input.grid.h, input.grid.w] == ref.grid)
        let answers = try model.answer(ref.answers.map(\.prompt), about: input, parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens))
        var compared = 0
        for (a, r) in zip(answers, ref.answers) {
            #expect(a.promptTokens == r.ids.count)
            compared += Self.expectGreedy(a.tokens, r)
        }
        #expect(compared >= 8, "too few steps compared: \(compared)")
        // The sampling rate reaches the positions: at 2 fps (1 s per temporal patch, 3 positions
        // per second) the second patch starts 3 positions after the first; at 0.5 fps, 12.
        let family = try #require(model as? Qwen25VLFamily)
        func temporal(_ rate: Double) throws -> [Int] {
            let item = family.encoder.item(try model.videoInput(frames, fps: rate))
            let ids = ref.answers[0].ids
            let t = try family.model.positions(ids: ids, vision: [item]).positions[0]
            return Array(Set(ids.indices.filter { ids[$0] == family.model.config.videoTokenId }.map { t[$0] })).sorted()
        }
        let at2 = try temporal(2), atHalf = try temporal(0.5)
        #expect(at2.count == 2 && at2[1] - at2[0] == 3, "\(at2)")
        #expect(atHalf.count == 2 && atHalf[1] - atHalf[0] == 12, "\(atHalf)")
    }

    @Test func textOnly() throws {
        let model = try Self.load()
        let ref = Self.reference.text.answers[0]
        let answers = try model.answer([ref.prompt], about: nil, parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens))
        #expect(answers[0].promptTokens == ref.ids.count)
        Self.expectGreedy(answers[0].tokens, ref)
    }
}
