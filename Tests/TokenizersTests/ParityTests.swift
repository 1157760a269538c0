import Foundation
import Testing
@testable import Tokenizers

/// Ids identical to Hugging Face `tokenizers` (fixtures/scripts/reference_tokenizers.py) on a
/// corpus of 2212 strings, for a small trained tokenizer and the real Qwen2 vocabulary.
@Suite struct ParityTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/tokenizers")

    struct Corpus: Decodable {
        var texts: [String]
        var ids: [String: [[Int]]]
        var decoded: [String: [String]]
    }

    static let corpus: Corpus = try! JSONDecoder().decode(Corpus.self, from: Data(contentsOf: root.appendingPathComponent("corpus.json")))

    @Test(arguments: ["small", "qwen2"])
    func idsMatchTokenizers(name: String) throws {
        let tokenizer = try Tokenizer(directory: Self.root.appendingPathComponent(name).path)
        let expected = Self.corpus.ids[name]!
        #expect(Self.corpus.texts.count >= 2000)
        var mismatches = 0
        for (text, ids) in zip(Self.corpus.texts, expected) {
            let got = tokenizer.encode(text)
            if got != ids {
                mismatches += 1
                if mismatches <= 5 { Issue.record("\(name): \(text.debugDescription): \(got) vs \(ids)") }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(expected.count) strings differ")
    }

    @Test(arguments: ["small", "qwen2"])
    func decodeMatchesTokenizers(name: String) throws {
        let tokenizer = try Tokenizer(directory: Self.root.appendingPathComponent(name).path)
        for (ids, text) in zip(Self.corpus.ids[name]!, Self.corpus.decoded[name]!) {
            #expect(tokenizer.decode(ids) == text)
        }
    }

    @Test func qwen2SpecialTokens() throws {
        let t = try Tokenizer(directory: Self.root.appendingPathComponent("qwen2").path)
        #expect(t.id("<|endoftext|>") == 151643 && t.id("<|im_start|>") == 151644 && t.id("<|video_pad|>") == 151656)
        #expect(t.isSpecialToken(151656) && !t.isSpecialToken(100))
        #expect(t.encode("<|vision_start|><|video_pad|><|video_pad|><|vision_end|>") == [151652, 151656, 151656, 151653])
        #expect(t.decode(t.encode("a<|im_end|>b"), skipSpecialTokens: true) == "ab")
    }

    @Test func streamingDecodeHoldsSplitCharacters() throws {
        let t = try Tokenizer(directory: Self.root.appendingPathComponent("qwen2").path)
        for text in ["你好世界", "👨‍👩‍👧‍👦 family", "naïve café", "mixed 🎬 and 视频"] {
            let ids = t.encode(text)
            var stream = StreamingDecoder(tokenizer: t)
            var pieces: [String] = []
            for id in ids { pieces.append(stream.add(id)) }
            pieces.append(stream.finish())
            #expect(pieces.joined() == text)
            #expect(!pieces.joined().contains("\u{FFFD}"))
            #expect(pieces.allSatisfy { !$0.contains("\u{FFFD}") }, "\(pieces)")
        }
    }

    @Test func badFilesAreErrors() {
        #expect(throws: TokenizerError.self) { try Tokenizer(path: "/nonexistent/tokenizer.json") }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID()).json").path
        FileManager.default.createFile(atPath: path, contents: Data(#"{"model":{"type":"Unigram"}}"#.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TokenizerError.self) { try Tokenizer(path: path) }
    }
}
