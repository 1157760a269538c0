import Foundation
import Tokenizers

/// One part of a chat message.
public enum ChatContent: Sendable, Equatable {
    case text(String)
    case video
    case image
}

/// A chat turn: `role` is system, user or assistant.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: [ChatContent]
    public init(role: String, content: [ChatContent]) { self.role = role; self.content = content }
    public init(role: String, text: String) { self.init(role: role, content: [.text(text)]) }
}

/// Qwen2-VL's chat prompt: the chat template of Qwen2-VL-*-Instruct (rendered here rather than by
/// a template engine), then the processor's expansion of each vision placeholder to its count of
/// pad tokens, then the tokenizer. Special tokens come from the tokenizer, never from literals.
public struct Qwen2VLPrompt: Sendable {
    public static let defaultSystem = "You are a helpful assistant."

    /// The template's text (`apply_chat_template(..., tokenize=False)`).
    public static func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var s = ""
        for (i, m) in messages.enumerated() {
            if i == 0 && m.role != "system" { s += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n" }
            s += "<|im_start|>\(m.role)\n"
            for part in m.content {
                switch part {
                case .text(let t): s += t
                case .video: s += "<|vision_start|><|video_pad|><|vision_end|>"
                case .image: s += "<|vision_start|><|image_pad|><|vision_end|>"
                }
            }
            s += "<|im_end|>\n"
        }
        if addGenerationPrompt { s += "<|im_start|>assistant\n" }
        return s
    }

    /// Token ids of `messages`, each video placeholder expanded to `videoTokens[i]` pads and each
    /// image placeholder to `imageTokens[i]`.
    public static func encode(_ messages: [ChatMessage], tokenizer: Tokenizer, videoTokens: [Int] = [], imageTokens: [Int] = [],
                              addGenerationPrompt: Bool = true) throws -> [Int] {
        let text = render(messages, addGenerationPrompt: addGenerationPrompt)
        guard let videoPad = tokenizer.id("<|video_pad|>"), let imagePad = tokenizer.id("<|image_pad|>") else {
            throw VLMError.invalidInput("\(tokenizer.path): the tokenizer has no <|video_pad|> / <|image_pad|> tokens")
        }
        var out: [Int] = []
        var videos = videoTokens.makeIterator(), images = imageTokens.makeIterator()
        for id in tokenizer.encode(text) {
            if id == videoPad {
                guard let n = videos.next() else { throw VLMError.invalidInput("more videos in the messages than token counts given") }
                out += Array(repeating: videoPad, count: n)
            } else if id == imagePad {
                guard let n = images.next() else { throw VLMError.invalidInput("more images in the messages than token counts given") }
                out += Array(repeating: imagePad, count: n)
            } else {
                out.append(id)
            }
        }
        guard videos.next() == nil, images.next() == nil else { throw VLMError.invalidInput("fewer videos/images in the messages than token counts given") }
        return out
    }
}
