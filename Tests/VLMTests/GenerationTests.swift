import Foundation
import Testing
import Tensors
@testable import VLM

@Suite struct GenerationTests {
    func videoInput() throws -> [VisionInput] {
        let pixels = try VisionFixtures.values("pixels_video_nonsquare")
        return [VisionInput(pixels: try Tensor(shape: [pixels.count / 1176, 1176], values: pixels), grid: VisionGrid(t: 2, h: 4, w: 6))]
    }

    /// Two questions about one video, both answered from one encoding and one prefix prefill:
    /// each answer equals transformers' greedy generation on that question's full prompt.
    @Test(arguments: ["tiny-qwen2vl-a", "tiny-qwen2vl-b"])
    func forkedSessionAnswersEqualFullRuns(model name: String) throws {
        let cases = LanguageTests.reference.models[name]!
        let q1 = cases["video_q1"]!, q2 = cases["video_q2"]!
        let prefixLength = q1.ids.firstIndex(of: 391)! + 1
        #expect(Array(q1.ids[..<prefixLength]) == Array(q2.ids[..<prefixLength]))
        let model = try Qwen2VLModel(directory: VisionFixtures.model(name))
        let session = try Qwen2VLSession(model: model, prefix: Array(q1.ids[..<prefixLength]), vision: try videoInput())
        let params = GenerationParameters(maxNewTokens: 32)
        for q in [q1, q2, q1] {
            var streamed: [Int] = []
            let answer = try session.generate(continuation: Array(q.ids[prefixLength...]), parameters: params) { streamed.append($0) }
            #expect(answer == q.greedy, "\(name)")
            #expect(streamed == answer)
            // And a fresh full run gives the same.
            #expect(try model.generateGreedy(ids: q.ids, vision: try videoInput(), maxNewTokens: 32) == answer)
        }
    }

    /// Continuous batching: five continuations through a batch of two (sequences join as others
    /// finish) and through one batch of five give exactly the tokens of decoding each alone,
    /// greedy and sampled (each prompt's sampler is its own, whatever shares its steps), with f32,
    /// bf16 and int8 weights (int8: continuations joining together run in one pass).
    @Test(arguments: ["tiny-qwen2vl-a", "tiny-qwen2vl-b"])
    func batchedDecodingEqualsOneAtATime(model name: String) throws {
        let cases = LanguageTests.reference.models[name]!
        let q1 = cases["video_q1"]!, q2 = cases["video_q2"]!
        let prefixLength = q1.ids.firstIndex(of: 391)! + 1
        let continuations = [q1, q2, q1, q2, q1].map { Array($0.ids[prefixLength...]) }
        for dtype in [ComputeDType.f32, .bf16, .int8] {
            let model = try Qwen2VLModel(directory: VisionFixtures.model(name), dtype: dtype)
            let session = try Qwen2VLSession(model: model, prefix: Array(q1.ids[..<prefixLength]), vision: try videoInput())
            for sampled in [false, true] {
                // Different budgets and seeds per prompt, so sequences leave the batch at different steps.
                func parameters(_ i: Int, batch: Int) -> GenerationParameters {
                    GenerationParameters(maxNewTokens: 6 + 5 * i, temperature: sampled ? 1 : 0, topP: sampled ? 0.95 : nil,
                                         seed: UInt64(i), batch: batch)
                }
                let alone = try continuations.enumerated().map { i, c in try session.generate(continuation: c, parameters: parameters(i, batch: 1)) }
                if !sampled, dtype != .int8, let greedy = q1.greedy { #expect(alone[0] == Array(greedy.prefix(6)), "\(name) \(dtype)") }
                for capacity in [2, 5] {
                    let batch = DecodeBatch<Qwen2VLModel>(capacity: capacity)
                    var together = [[Int]](repeating: [-1], count: continuations.count)
                    var streamed = [[Int]](repeating: [], count: continuations.count)
                    for (i, c) in continuations.enumerated() {
                        try batch.add(session, continuation: c, parameters: parameters(i, batch: capacity),
                                      onToken: { streamed[i].append($0) }) { together[i] = $0 }
                    }
                    var peak = 0
                    while try batch.step() { peak = max(peak, batch.activeCount) }
                    #expect(together == alone, "\(name) \(dtype) sampled \(sampled) capacity \(capacity)")
                    #expect(streamed == alone && peak == capacity && batch.isEmpty)
                    // int8: continuations that join together run in one pass (5 at once at capacity 5).
                    #expect(dtype == .int8 ? batch.continuationPasses < continuations.count : batch.continuationPasses == continuations.count,
                            "\(dtype) capacity \(capacity): \(batch.continuationPasses) continuation passes")
                    if dtype == .int8 && capacity == 5 { #expect(batch.continuationPasses == 1) }
                }
            }
        }
    }

    /// Joiners that finish on their first token (a budget of one) free their places in the same
    /// step: one step admits all of them, a round at a time, and leaves the batch empty.
    @Test func firstTokenFinishersFreeTheirPlacesAtOnce() throws {
        let cases = LanguageTests.reference.models["tiny-qwen2vl-a"]!
        let q1 = cases["video_q1"]!
        let prefixLength = q1.ids.firstIndex(of: 391)! + 1
        let continuation = Array(q1.ids[prefixLength...])
        for dtype in [ComputeDType.bf16, .int8] {
            let model = try Qwen2VLModel(directory: VisionFixtures.model("tiny-qwen2vl-a"), dtype: dtype)
            let session = try Qwen2VLSession(model: model, prefix: Array(q1.ids[..<prefixLength]), vision: try videoInput())
            let alone = try session.generate(continuation: continuation, parameters: GenerationParameters(maxNewTokens: 1))
            let batch = DecodeBatch<Qwen2VLModel>(capacity: 2)
            var done: [[Int]] = []
            for _ in 0..<5 {
                try batch.add(session, continuation: continuation, parameters: GenerationParameters(maxNewTokens: 1)) { done.append($0) }
            }
            #expect(try !batch.step(), "\(dtype)")
            #expect(done == Array(repeating: alone, count: 5) && batch.isEmpty, "\(dtype)")
            // int8: rounds of two continuations in one pass, the last one alone.
            #expect(batch.continuationPasses == (dtype == .int8 ? 3 : 5), "\(dtype)")
        }
    }

    /// Forks share the filled rows instead of copying them: one prefix object per fill level,
    /// own rows only after it, the prefix's bytes counted once; a fork of a fork copies only the
    /// rows its parent added; writing the parent later leaves its forks' view alone.
    @Test func forksShareTheirPrefix() throws {
        let parent = try KVCache(layers: 2, capacity: 6, width: 4)
        for l in 0..<2 { for i in 0..<24 { parent.keys[l].pointer[i] = Float(100 * l + i); parent.values[l].pointer[i] = -Float(i) } }
        #expect(try parent.fork(extra: 3).prefix == nil) // nothing filled: nothing to share
        parent.advance(4)
        let a = try parent.fork(extra: 3), b = try parent.fork(extra: 5)
        let prefix = try #require(a.prefix)
        #expect(b.prefix === prefix && prefix.count == 4 && a.count == 4 && a.capacity == 7 && b.capacity == 9)
        #expect(a.bytes == 2 * 2 * 3 * 4 * 4 && prefix.bytes == 2 * 2 * 6 * 4 * 4)
        #expect(KVCache.bytes(of: [a, b]) == a.bytes + b.bytes + prefix.bytes)
        // a gains one own row; its fork shares the same prefix and copies that row.
        for l in 0..<2 { for i in 0..<4 { a.keys[l].pointer[i] = Float(7 + l) } }
        a.advance(1)
        let c = try a.fork(extra: 2)
        #expect(c.prefix === prefix && c.count == 5 && c.capacity == 7 && c.keys[1].pointer[3] == 8)
        // The parent writes on: forks made before still see 4 rows; a new fork gets a new prefix.
        parent.advance(1)
        let d = try parent.fork(extra: 1)
        #expect(a.prefix?.count == 4 && d.prefix !== prefix && d.prefix?.count == 5)
        #expect(KVCache.bytes(of: [a, d]) == a.bytes + d.bytes + prefix.bytes) // one storage
    }

    /// The batch's KV memory counts the shared prefix once, not once per sequence.
    @Test func peakCacheBytesCountTheSharedPrefixOnce() throws {
        let name = "tiny-qwen2vl-a"
        let q1 = LanguageTests.reference.models[name]!["video_q1"]!
        let prefixLength = q1.ids.firstIndex(of: 391)! + 1
        let model = try Qwen2VLModel(directory: VisionFixtures.model(name))
        let session = try Qwen2VLSession(model: model, prefix: Array(q1.ids[..<prefixLength]), vision: try videoInput())
        let continuation = Array(q1.ids[prefixLength...])
        let batch = DecodeBatch<Qwen2VLModel>(capacity: 3)
        for _ in 0..<3 {
            try batch.add(session, continuation: continuation, parameters: GenerationParameters(maxNewTokens: 4, batch: 3)) { _ in }
        }
        while try batch.step() {}
        let (layers, width) = model.cacheLayout
        let row = 2 * layers * width * MemoryLayout<Float>.size
        #expect(batch.peakCacheBytes == row * (prefixLength + 3 * (continuation.count + 4)))
    }

    @Test(arguments: ["tiny-qwen2vl-a", "tiny-qwen2vl-b"])
    func repetitionPenaltyMatchesTransformers(model name: String) throws {
        let c = LanguageTests.reference.models[name]!["text"]!
        let model = try Qwen2VLModel(directory: VisionFixtures.model(name))
        let session = try Qwen2VLSession(model: model, prefix: Array(c.ids.prefix(3)), vision: [])
        let out = try session.generate(continuation: Array(c.ids.dropFirst(3)), parameters: GenerationParameters(maxNewTokens: 32, repetitionPenalty: 1.3))
        let expected = try #require(LanguageTests.referenceRaw(name)["text"]?["greedy_repetition_penalty_1_3"] as? [Int])
        #expect(out == expected)
    }

    /// A prompt that fills the context leaves no room for an answer: an error (before, an empty
    /// answer, stored by a run as a done clip); one token short of it leaves room for one.
    @Test func aPromptFillingTheContextIsAnError() throws {
        let model = try Qwen2VLModel(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let n = model.contextLength
        #expect(throws: VLMError.self) { _ = try model.newTokenBudget(promptTokens: n, requested: 4) }
        #expect(try model.newTokenBudget(promptTokens: n - 1, requested: 4) == 1)
        #expect(try model.newTokenBudget(promptTokens: n, requested: 0) == 0)
        #expect(throws: VLMError.self) { _ = try model.newTokenBudget(promptTokens: n + 1, requested: 0) }
    }

    @Test func samplingIsSeededAndBounded() throws {
        let model = try Qwen2VLModel(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let ids = LanguageTests.reference.models["tiny-qwen2vl-a"]!["text"]!.ids
        let session = try Qwen2VLSession(model: model, prefix: Array(ids.prefix(4)), vision: [])
        let rest = Array(ids.dropFirst(4))
        func run(_ p: GenerationParameters) throws -> [Int] { try session.generate(continuation: rest, parameters: p) }
        let a = try run(GenerationParameters(maxNewTokens: 24, temperature: 1.0, topP: 0.9, seed: 1))
        let b = try run(GenerationParameters(maxNewTokens: 24, temperature: 1.0, topP: 0.9, seed: 1))
        let c = try run(GenerationParameters(maxNewTokens: 24, temperature: 1.0, topP: 0.9, seed: 2))
        #expect(a == b)
        #expect(a != c)
        let greedy = try run(GenerationParameters(maxNewTokens: 24))
        #expect(try run(GenerationParameters(maxNewTokens: 24, temperature: 0.7, topK: 1, seed: 5)) == greedy)
        #expect(try run(GenerationParameters(maxNewTokens: 24, temperature: 1e-4, seed: 9)) == greedy)
        // Stops right after a stop token.
        let stop = greedy[3]
        let stopped = try run(GenerationParameters(maxNewTokens: 24, stopTokens: [stop]))
        #expect(stopped == Array(greedy[...greedy.firstIndex(of: stop)!]))
        #expect(throws: VLMError.self) { try run(GenerationParameters(topP: 1.5)) }
    }
}

extension LanguageTests {
    static func referenceRaw(_ model: String) throws -> [String: [String: Any]] {
        let data = try Data(contentsOf: VisionFixtures.fixtures.appendingPathComponent("reference/language/language.json"))
        let all = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return (all["models"] as! [String: Any])[model] as! [String: [String: Any]]
    }
}
