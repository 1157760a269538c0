import Foundation
import Tensors
import Tokenizers

/// Answering prompts over an M-RoPE decoder (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): one encoding of
/// the visual input, its prefix (up to its last <|vision_end|>) prefilled once, every prompt
/// answered from a fork of that cache; text-only prompts each their own conversation. `encode`
/// gives a prompt's ids in the family's chat template (with the input's pads when it has one).
enum ChatAnswering {
    typealias Encoder = (_ prompt: String, _ input: VisualInput?) throws -> [Int]

    /// Qwen2-VL's chat template (Qwen2.5-VL uses it too): the input's pads are t·h·w / merge².
    static func qwen2Template(tokenizer: Tokenizer, merge: Int) -> Encoder {
        { text, input in
            guard let input else { return try Qwen2VLPrompt.encode([ChatMessage(role: "user", text: text)], tokenizer: tokenizer) }
            guard merge > 0 else { throw VLMError.invalidInput("spatial merge size must be > 0") }
            let tokens = input.grid.patches / (merge * merge)
            let part: ChatContent = input.kind == .video ? .video : .image
            return try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [part, .text(text)])], tokenizer: tokenizer,
                                            videoTokens: input.kind == .video ? [tokens] : [],
                                            imageTokens: input.kind == .image ? [tokens] : [])
        }
    }

    static func answer<Model: MRoPEDecoderModel>(
        _ prompts: [String], about input: VisualInput?, model: Model, tokenizer: Tokenizer, stopTokens: Set<Int>,
        parameters: GenerationParameters, onStart: (Int) -> Void, onToken: (Int, Int) -> Void,
        encode: Encoder, visionItem: (VisualInput) throws -> Model.VisionItem
    ) throws -> [Answer] {
        var parameters = parameters
        parameters.stopTokens.formUnion(stopTokens)
        // A prompt is plain text: chat-format tokens in it would be read as the template's own
        // (a <|video_pad|> would ask for a second video).
        for (i, prompt) in prompts.enumerated() {
            if let r = prompt.range(of: #"<\|[A-Za-z0-9_]+\|>"#, options: .regularExpression), tokenizer.id(String(prompt[r])) != nil {
                throw VLMError.invalidInput("prompt \(i + 1) contains the special token \(prompt[r]); prompts are plain text")
            }
        }
        func decode(_ tokens: [Int]) -> String {
            tokenizer.decode(tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let input else {
            return try prompts.enumerated().map { i, prompt in
                let ids = try encode(prompt, nil)
                onStart(i)
                let start = DispatchTime.now().uptimeNanoseconds
                let session = try PrefixSession(model: model, prefix: Array(ids.prefix(1)), vision: [])
                let out = try session.generate(continuation: Array(ids.dropFirst()), parameters: parameters) { onToken(i, $0) }
                return Answer(prompt: prompt, text: decode(out), tokens: out, promptTokens: ids.count,
                              generateSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
        }
        guard let firstPrompt = prompts.first else { return [] }
        func ids(_ text: String) throws -> [Int] { try encode(text, input) }
        // The shared prefix: the prompt up to and including its last <|vision_end|>, encoded and prefilled once.
        let first = try ids(firstPrompt)
        guard let end = tokenizer.id("<|vision_end|>"), let cut = first.lastIndex(of: end) else {
            throw VLMError.invalidInput("\(tokenizer.path): the tokenizer has no <|vision_end|>")
        }
        let prefix = Array(first[...cut])
        let session = try PrefixSession(model: model, prefix: prefix, vision: [visionItem(input)])
        var answers: [Answer] = []
        for (i, prompt) in prompts.enumerated() {
            let full = i == 0 ? first : try ids(prompt)
            guard full.count > prefix.count, Array(full[..<prefix.count]) == prefix else {
                throw VLMError.invalidInput("prompt \(i) does not share the clip's prefix")
            }
            onStart(i)
            let start = DispatchTime.now().uptimeNanoseconds
            let out = try session.generate(continuation: Array(full[prefix.count...]), parameters: parameters) { onToken(i, $0) }
            answers.append(Answer(prompt: prompt, text: decode(out), tokens: out, promptTokens: full.count,
                                  visionSeconds: i == 0 ? session.timing.vision : 0, prefillSeconds: i == 0 ? session.timing.prefill : 0,
                                  generateSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        }
        return answers
    }
}
