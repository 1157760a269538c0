import Foundation
import Media
import Testing
import Tensors
@testable import VLM

/// The model seam as Pipeline and the CLI use it: a checkpoint loaded by `model_type` through the
/// registry, an image prompted as an image, a video with a description and two questions answered
/// from one encoding, a text-only prompt — each equal to transformers' greedy generation on the
/// full prompt (fixtures/scripts/reference_seam.py).
@Suite struct SeamTests {
    struct Reference: Decodable {
        struct Input: Decodable { var frames: Int, height: Int, width: Int, seed: Int }
        struct Answer: Decodable { var prompt: String, ids: [Int], greedy: [Int] }
        struct Case: Decodable { var input: Input?; var grid: [Int]?; var answers: [Answer] }
        var newTokens: Int
        var image: Case, video: Case, text: Case
    }

    static let reference: Reference = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        let url = VisionFixtures.fixtures.appendingPathComponent("reference/seam/qwen2vl-chat.json")
        return try! d.decode(Reference.self, from: Data(contentsOf: url))
    }()

    static func frames(_ i: Reference.Input) -> [RGBImage] {
        VisionFixtures.frames(.init(frames: i.frames, height: i.height, width: i.width, seed: i.seed, grid: [], pixelsShape: []))
    }

    static func load() throws -> any VisionLanguageModel {
        try ModelRegistry.load(directory: VisionFixtures.model("tiny-qwen2vl-chat"))
    }

    @Test func registryLoadsTheFamilyByModelType() throws {
        let model = try Self.load()
        #expect(model.family == "Qwen2-VL" && model is Qwen2VLFamily)
        #expect(ModelRegistry.supportedModelTypes.contains("qwen2_vl"))
    }

    @Test func anImageIsPromptedAsAnImage() throws {
        let model = try Self.load()
        let ref = Self.reference.image
        let refInput = try #require(ref.input)
        let input = try model.imageInput(try #require(Self.frames(refInput).first))
        #expect(input.kind == .image && [input.grid.t, input.grid.h, input.grid.w] == ref.grid)
        let answers = try model.answer(ref.answers.map(\.prompt), about: input, parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens))
        #expect(answers.map(\.tokens) == ref.answers.map(\.greedy))
        #expect(answers.map(\.promptTokens) == ref.answers.map(\.ids.count))
    }

    /// A prompt beyond the context is refused when its input is submitted, before any of the
    /// input's prompts join the batch: the other inputs in flight decode on, unaffected.
    @Test func aPromptBeyondTheContextFailsOnlyItsInput() throws {
        let model = try Self.load()
        let ref = Self.reference.image
        let refInput = try #require(ref.input)
        let input = try model.imageInput(try #require(Self.frames(refInput).first))
        let batch = model.answerBatch(capacity: 4)
        var first: [Answer] = []
        let parameters = GenerationParameters(maxNewTokens: Self.reference.newTokens)
        try batch.submit(ref.answers.map(\.prompt), about: input, parameters: parameters, onToken: { _, _ in }, onPromptDone: { _ in }) { first = $0 }
        let long = Array(repeating: "word", count: model.contextLength).joined(separator: " ")
        #expect(throws: VLMError.self) {
            try batch.submit(["Describe.", long], about: input, parameters: parameters, onToken: { _, _ in }, onPromptDone: { _ in }) { _ in }
        }
        #expect(batch.activeCount + batch.waitingCount == ref.answers.count)
        while try batch.step() {}
        #expect(first.map(\.tokens) == ref.answers.map(\.greedy))
    }

    @Test func aVideoAnswersSeveralPromptsFromOneEncoding() throws {
        let model = try Self.load()
        let ref = Self.reference.video
        let refInput = try #require(ref.input)
        let images = Self.frames(refInput)
        let frames = images.enumerated().map { i, im in
            VideoFrame(index: i, timestamp: Double(i) / 2, width: im.width, height: im.height, rgb: im.pixels, concealed: false)
        }
        let input = try model.videoInput(frames, fps: 2)
        #expect(input.kind == .video && [input.grid.t, input.grid.h, input.grid.w] == ref.grid && input.timestamps == [0, 0.5, 1, 1.5])
        // One prompt after another, and all three decoding together: the same tokens.
        for batch in [1, 3] {
            var done: [Int] = [], streamed: [[Int]] = [[], [], []]
            let answers = try model.answer(ref.answers.map(\.prompt), about: input,
                                           parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens, batch: batch),
                                           onToken: { streamed[$0].append($1) }, onDone: { done.append($0) })
            #expect(answers.map(\.tokens) == ref.answers.map(\.greedy), "batch \(batch)")
            #expect(streamed == answers.map(\.tokens) && done.sorted() == [0, 1, 2] && (batch > 1 || done == [0, 1, 2]))
            // Encoded once: only the first answer carries vision and prefill time.
            #expect(answers[0].visionSeconds > 0 && answers.dropFirst().allSatisfy { $0.visionSeconds == 0 && $0.prefillSeconds == 0 })
        }
    }

    /// int8 weights, every family: a clip's three prompts decoded together (their continuations
    /// in one pass, `rowsIndependentOfPass`) give the tokens each gets decoded alone, with
    /// different lengths so that the pass holds segments of different sizes.
    @Test(arguments: ["tiny-qwen2vl-chat", "tiny-qwen25vl-a", "tiny-qwen3vl-a", "tiny-qwen3vl-b"])
    func int8PromptsTogetherEqualAlone(checkpoint: String) throws {
        let model = try ModelRegistry.load(directory: VisionFixtures.model(checkpoint), dtype: .int8)
        // Frames already at a size the family's processor takes (multiples of 28, or 32 for Qwen3-VL).
        let unit = checkpoint.contains("qwen3") ? 32 : 28, (w, h) = (3 * unit, 2 * unit)
        var frames: [VideoFrame] = []
        for i in 0..<4 {
            var rgb = [UInt8](repeating: 0, count: w * h * 3)
            for j in rgb.indices { rgb[j] = UInt8(truncatingIfNeeded: j * 7 + i * 31 + j / w) }
            frames.append(VideoFrame(index: i, timestamp: Double(i) / 2, width: w, height: h, rgb: rgb))
        }
        let input = try model.videoInput(frames, fps: 2)
        let prompts = ["Describe the clip.", "What colour is the largest object, and where does it move?", "Count."]
        let alone = try model.answer(prompts, about: input, parameters: GenerationParameters(maxNewTokens: 6, batch: 1))
        let together = try model.answer(prompts, about: input, parameters: GenerationParameters(maxNewTokens: 6, batch: 3))
        let a: [[Int]] = alone.map { $0.tokens }, t: [[Int]] = together.map { $0.tokens }
        #expect(t == a, "\(checkpoint)")
        #expect(a.allSatisfy { !$0.isEmpty })
    }

    @Test func textOnlyAnswers() throws {
        let model = try Self.load()
        let ref = Self.reference.text.answers[0]
        let answers = try model.answer([ref.prompt], about: nil, parameters: GenerationParameters(maxNewTokens: Self.reference.newTokens))
        #expect(answers.map(\.tokens) == [ref.greedy] && answers[0].promptTokens == ref.ids.count)
    }

    /// An unsupported `model_type` is an error naming it and the supported ones.
    @Test func unsupportedModelTypeNamesTheSupportedOnes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-seam-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"model_type": "llava_next_video"}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect {
            _ = try ModelRegistry.load(directory: dir.path)
        } throws: { error in
            let message = (error as? VLMError)?.errorDescription ?? ""
            return message.contains("'llava_next_video'") && message.contains("qwen2_vl")
        }
    }

    /// transformers 5 saves processor settings nested in processor_config.json; they are read, not
    /// replaced by defaults, and the image processor's settings stay apart from the video's.
    @Test func nestedProcessorConfigIsRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-seam-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: VisionFixtures.model("tiny-qwen2vl-chat"), toPath: dir.path)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("video_preprocessor_config.json"))
        let nested: [String: Any] = [
            "processor_class": "Qwen2VLProcessor",
            "video_processor": ["size": ["shortest_edge": 3136, "longest_edge": 12544], "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2],
            "image_processor": ["size": ["shortest_edge": 1568, "longest_edge": 9408], "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]],
        ]
        try JSONSerialization.data(withJSONObject: nested).write(to: dir.appendingPathComponent("processor_config.json"))
        let files = try Qwen2VLModelFiles(directory: dir.path)
        #expect(files.preprocessor.minPixels == 3136 && files.preprocessor.maxPixels == 12544)
        #expect(files.imagePreprocessor.minPixels == 1568 && files.imagePreprocessor.maxPixels == 9408 && files.imagePreprocessor.imageMean == [0.5, 0.5, 0.5])
        #expect(files.processorFiles == [dir.appendingPathComponent("processor_config.json").path])
        // The bounds reach sampling: video frames within 12544 pixels, images within 9408.
        let model = try ModelRegistry.load(directory: dir.path)
        #expect(model.videoSampling(SamplingOptions()).resize.maxPixels == 12544)
        let image = model.imageSampling(SamplingOptions())
        #expect(image.resize.image && image.resize.maxPixels == 9408 && image.resize.minPixels == 3136 && image.maxFrames == 1)
    }
}
