import Foundation
import Testing
import Tokenizers
@testable import VLM

/// Chat prompts token-for-token as transformers builds them (fixtures/scripts/reference_chat.py).
@Suite struct PromptTests {
    struct Case: Decodable {
        struct Message: Decodable {
            var role: String
            var content: Content
            enum Content: Decodable {
                case string(String), parts([Part])
                init(from decoder: Decoder) throws {
                    let c = try decoder.singleValueContainer()
                    if let s = try? c.decode(String.self) { self = .string(s) } else { self = .parts(try c.decode([Part].self)) }
                }
            }
            struct Part: Decodable { var type: String; var text: String? }
        }
        var messages: [Message]
        var videoTokens: [Int]
        var imageTokens: [Int]
        var addGenerationPrompt: Bool
        var text: String
        var ids: [Int]

        var chat: [ChatMessage] {
            messages.map { m in
                switch m.content {
                case .string(let s): return ChatMessage(role: m.role, text: s)
                case .parts(let parts):
                    return ChatMessage(role: m.role, content: parts.map { p in
                        p.type == "video" ? .video : p.type == "image" ? .image : .text(p.text ?? "")
                    })
                }
            }
        }
    }

    static let cases: [Case] = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode([Case].self, from: Data(contentsOf: VisionFixtures.fixtures.appendingPathComponent("tokenizers/chat.json")))
    }()
    static let tokenizer = try! Tokenizer(directory: VisionFixtures.fixtures.appendingPathComponent("tokenizers/qwen2").path)

    @Test(arguments: 0..<cases.count)
    func matchesTransformers(index: Int) throws {
        let c = Self.cases[index]
        #expect(Qwen2VLPrompt.render(c.chat, addGenerationPrompt: c.addGenerationPrompt) == c.text)
        let ids = try Qwen2VLPrompt.encode(c.chat, tokenizer: Self.tokenizer, videoTokens: c.videoTokens, imageTokens: c.imageTokens,
                                           addGenerationPrompt: c.addGenerationPrompt)
        #expect(ids == c.ids)
    }

    @Test func countsMustMatchPlaceholders() {
        let m = [ChatMessage(role: "user", content: [.video, .text("hi")])]
        #expect(throws: VLMError.self) { try Qwen2VLPrompt.encode(m, tokenizer: Self.tokenizer) }
        #expect(throws: VLMError.self) { try Qwen2VLPrompt.encode(m, tokenizer: Self.tokenizer, videoTokens: [2, 3]) }
    }
}
