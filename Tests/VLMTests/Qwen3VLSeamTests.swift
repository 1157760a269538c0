import Foundation
import Media
import Testing
import Tensors
@testable import VLM

/// Qwen3-VL through the model seam, as Pipeline and the CLI use it: loaded by `model_type`, an
/// image prompted as an image, a video (timestamped frames) with a description and two questions
/// answered from one encoding, a text-only prompt — every token equal to the released
/// transformers' (4.57) greedy generation on the full prompt
/// (fixtures/scripts/reference_seam_qwen3vl.py NAME), for both tiny checkpoints: tiny-qwen3vl-a
/// (untied head, DeepStack after blocks 0 and 2) and tiny-qwen3vl-b (tied embeddings, three
/// DeepStack layers, one KV head). b's random tied head makes each greedy answer repeat its first
/// token, so for b these tests pin the first tokens and the path to them; its logits are held to
/// transformers' by Qwen3VLLanguageTests.
@Suite struct Qwen3VLSeamTests {
    struct Reference: Decodable {
        struct Input: Decodable { var frames: Int, height: Int, width: Int, seed: Int }
        struct Answer: Decodable { var prompt: String, ids: [Int], greedy: [Int], margins: [Double] }
        struct Case: Decodable { var input: Input?; var grid: [Int]?; var fps: Double?; var frameIndices: [Int]?; var answers: [Answer] }
        var model: String
        var newTokens: Int
        var eos: [Int]
        var image: Case, video: Case, text: Case
    }

    /// The tiny checkpoints, each with its reference (fixtures/reference/seam/qwen3vl-X.json).
    static let checkpoints = ["tiny-qwen3vl-a", "tiny-qwen3vl-b"]

    static func reference(_ checkpoint: String) throws -> Reference {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        let name = checkpoint.replacingOccurrences(of: "tiny-", with: "")
        let url = VisionFixtures.fixtures.appendingPathComponent("reference/seam/\(name).json")
        return try d.decode(Reference.self, from: Data(contentsOf: url))
    }

    static func directory(_ checkpoint: String) -> String { VisionFixtures.model(checkpoint) }

    static func frames(_ i: Reference.Input) -> [RGBImage] {
        VisionFixtures.frames(.init(frames: i.frames, height: i.height, width: i.width, seed: i.seed, grid: [], pixelsShape: []))
    }

    static func load(_ checkpoint: String) throws -> any VisionLanguageModel { try ModelRegistry.load(directory: directory(checkpoint)) }

    /// The reference video's frames at their presentation times (index / fps).
    static func videoFrames(_ checkpoint: String) throws -> [VideoFrame] {
        let ref = try reference(checkpoint).video
        let input = try #require(ref.input), indices = try #require(ref.frameIndices), fps = try #require(ref.fps)
        return zip(indices, frames(input)).map { i, im in
            VideoFrame(index: i, timestamp: Double(i) / fps, width: im.width, height: im.height, rgb: im.pixels)
        }
    }

    @Test(arguments: checkpoints) func registryLoadsTheFamilyByModelType(checkpoint: String) throws {
        let model = try Self.load(checkpoint)
        #expect(model.family == "Qwen3-VL" && model is Qwen3VLFamily)
        #expect(ModelRegistry.supportedModelTypes.contains("qwen3_vl"))
        #expect(try ModelRegistry.family(directory: Self.directory(checkpoint)) == Qwen3VLFamily.self)
        let reference = try Self.reference(checkpoint)
        #expect(reference.model == checkpoint && model.stopTokens == Set(reference.eos))
        let parts = try Qwen3VLFamily.parts(directory: Self.directory(checkpoint))
        #expect(parts.map(\.name) == ["vision", "merger", "language", "positions"])
    }

    /// What each checkpoint is chosen to exercise: b ties its head to the embeddings and feeds
    /// three DeepStack features to the decoder.
    @Test func theCheckpointsDifferWhereTheyShould() throws {
        let a = try #require(try Self.load("tiny-qwen3vl-a") as? Qwen3VLFamily).model.config
        let b = try #require(try Self.load("tiny-qwen3vl-b") as? Qwen3VLFamily).model.config
        #expect(!a.tieWordEmbeddings && a.vision.deepstackVisualIndexes == [0, 2])
        #expect(b.tieWordEmbeddings && b.vision.deepstackVisualIndexes == [1, 2, 3] && b.text.numKeyValueHeads == 1)
    }

    @Test(arguments: checkpoints) func anImageIsPromptedAsAnImage(checkpoint: String) throws {
        let model = try Self.load(checkpoint)
        let reference = try Self.reference(checkpoint), ref = reference.image
        let refInput = try #require(ref.input)
        let input = try model.imageInput(try #require(Self.frames(refInput).first))
        #expect(input.kind == .image && [input.grid.t, input.grid.h, input.grid.w] == ref.grid)
        let family = try #require(model as? Qwen3VLFamily)
        let encode = Qwen3VLFamily.template(tokenizer: family.tokenizer, merge: 2)
        #expect(try ref.answers.map { try encode($0.prompt, input) } == ref.answers.map(\.ids))
        let answers = try model.answer(ref.answers.map(\.prompt), about: input, parameters: GenerationParameters(maxNewTokens: reference.newTokens))
        #expect(answers.map(\.tokens) == ref.answers.map(\.greedy))
        #expect(answers.map(\.promptTokens) == ref.answers.map(\.ids.count))
    }

    @Test(arguments: checkpoints) func aVideoAnswersSeveralPromptsFromOneEncoding(checkpoint: String) throws {
        let model = try Self.load(checkpoint)
        let reference = try Self.reference(checkpoint), ref = reference.video
        let frames = try Self.videoFrames(checkpoint)
        let input = try model.videoInput(frames, fps: try #require(ref.fps))
        #expect(input.kind == .video && [input.grid.t, input.grid.h, input.grid.w] == ref.grid)
        // Equal to the processor's timestamps from the frame indices and fps (the last patch padded).
        let indices = try #require(ref.frameIndices), fps = try #require(ref.fps)
        #expect(input.timestamps == (try Qwen3VLProcessor.timestamps(frameIndices: indices, fps: fps, mergeSize: 2)))
        #expect(input.timestamps == [0.25, 1.25, 2.0])
        let family = try #require(model as? Qwen3VLFamily)
        let encode = Qwen3VLFamily.template(tokenizer: family.tokenizer, merge: 2)
        #expect(try ref.answers.map { try encode($0.prompt, input) } == ref.answers.map(\.ids))
        // One prompt after another, and all three decoding together: the same tokens.
        for batch in [1, 3] {
            var done: [Int] = [], streamed: [[Int]] = [[], [], []]
            let answers = try model.answer(ref.answers.map(\.prompt), about: input,
                                           parameters: GenerationParameters(maxNewTokens: reference.newTokens, batch: batch),
                                           onToken: { streamed[$0].append($1) }, onDone: { done.append($0) })
            #expect(answers.map(\.tokens) == ref.answers.map(\.greedy), "batch \(batch)")
            #expect(answers.map(\.promptTokens) == ref.answers.map(\.ids.count))
            #expect(streamed == answers.map(\.tokens) && done.sorted() == [0, 1, 2] && (batch > 1 || done == [0, 1, 2]))
            // Encoded once: only the first answer carries vision and prefill time.
            #expect(answers[0].visionSeconds > 0 && answers.dropFirst().allSatisfy { $0.visionSeconds == 0 && $0.prefillSeconds == 0 })
        }
    }

    /// A clip that starts later in the video is timed from its own first frame.
    @Test func videoTimesAreRelativeToTheClip() throws {
        let a0 = "tiny-qwen3vl-a"
        let model = try Self.load(a0)
        let shifted = try Self.videoFrames(a0).map { f -> VideoFrame in var f = f; f.timestamp += 30; return f }
        let a = try model.videoInput(try Self.videoFrames(a0), fps: 2), b = try model.videoInput(shifted, fps: 2)
        #expect(a.timestamps == b.timestamps)
    }

    @Test(arguments: checkpoints) func textOnlyAnswers(checkpoint: String) throws {
        let model = try Self.load(checkpoint)
        let reference = try Self.reference(checkpoint), ref = try #require(reference.text.answers.first)
        let answers = try model.answer([ref.prompt], about: nil, parameters: GenerationParameters(maxNewTokens: reference.newTokens))
        #expect(answers.map(\.tokens) == [ref.greedy] && answers[0].promptTokens == ref.ids.count)
    }

    /// Sampling for this checkpoint: Qwen3-VL's frame rule within its processor's min/max frames,
    /// factor 32, the frame stack within its size; the reference frames need no resize under it.
    @Test(arguments: zip(checkpoints, [32, 40])) func samplingFollowsTheProcessors(checkpoint: String, width: Int) throws {
        let model = try Self.load(checkpoint)
        let reference = try Self.reference(checkpoint)
        let video = model.videoSampling(SamplingOptions())
        #expect(video.frameRule == .uniform(minFrames: 4, maxFrames: 768) && video.fps == 2)
        #expect(video.resize.factor == 32 && video.resize.stack == FrameStack(temporalFactor: 2, minPixels: 1024, maxPixels: 65536))
        let v = try #require(reference.video.input)
        #expect(try video.resize.outputSize(width: v.width, height: v.height, frameCount: v.frames) == (v.width, v.height))
        let image = model.imageSampling(SamplingOptions())
        #expect(image.resize.image && image.resize.factor == 32 && image.resize.minPixels == 1024 && image.resize.maxPixels == 65536 && image.maxFrames == 1)
        let i = try #require(reference.image.input)
        #expect(try image.resize.outputSize(width: i.width, height: i.height, frameCount: 1) == (i.width, i.height))
        // The visual half alone: the same embeddings as the whole model's.
        let encoder = try ModelRegistry.loadEncoder(directory: Self.directory(checkpoint))
        #expect(encoder is Qwen3VLEncoder)
        let input = try model.imageInput(try #require(Self.frames(i).first))
        let (a, b) = (try encoder.encode(input).embeddings, try model.encode(input).embeddings)
        #expect(a.shape == [input.grid.patches / 4, width] && Array(a.buffer) == Array(b.buffer))
    }
}
