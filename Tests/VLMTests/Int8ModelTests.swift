import Foundation
import Media
import Testing
import Tensors
@testable import VLM

/// `--dtype int8` through the registry, for every family: the tower really computes in int8
/// (its embeddings move, within int8's error of bf16's), `--vision-dtype bf16` keeps it exactly
/// bf16, and the int8 decoder answers.
@Suite struct Int8ModelTests {
    static let checkpoints = ["tiny-qwen2vl-chat", "tiny-qwen25vl-a", "tiny-qwen3vl-a", "tiny-qwen3vl-b"]

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
        return dot / (na.squareRoot() * nb.squareRoot())
    }

    @Test(arguments: checkpoints)
    func int8TowerAndDecoder(checkpoint: String) throws {
        let directory = VisionFixtures.model(checkpoint)
        let bf16 = try ModelRegistry.load(directory: directory, dtype: .bf16)
        let int8 = try ModelRegistry.load(directory: directory, dtype: .int8)
        let mixed = try ModelRegistry.load(directory: directory, dtype: .int8, visionDType: .bf16)
        let frames = VisionFixtures.frames(.init(frames: 2, height: 224, width: 224, seed: 5, grid: [], pixelsShape: []))
        let image = try #require(frames.first)
        let input = try bf16.imageInput(image)

        let (reference, referenceType) = try bf16.encode(input)
        let (quantized, quantizedType) = try int8.encode(input)
        let (kept, keptType) = try mixed.encode(input)
        #expect(referenceType == .bf16 && quantizedType == .int8 && keptType == .bf16)
        let c = Self.cosine(quantized.values, reference.values)
        #expect(c >= 0.99 && c < 1, "\(checkpoint): cosine \(c)")
        #expect(kept.values == reference.values, "\(checkpoint): --vision-dtype bf16 keeps the tower's arithmetic")

        let parameters = GenerationParameters(maxNewTokens: 4)
        for model in [int8, mixed] {
            let answers = try model.answer(["Describe this image.", "What color is it?"], about: input, parameters: parameters)
            #expect(answers.count == 2 && answers.allSatisfy { !$0.tokens.isEmpty && $0.tokens.count <= 4 }, "\(checkpoint)")
        }
        // The encoder alone loads in the tower's precision.
        let encoder = try ModelRegistry.loadEncoder(directory: directory, dtype: .bf16, visionDType: .int8)
        #expect(try encoder.encode(input).embeddings.values == quantized.values)
    }
}
