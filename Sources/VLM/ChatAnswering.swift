import Foundation
import Tensors
import Tokenizers

/// Answering prompts with Qwen2-VL's chat template over an M-RoPE decoder (Qwen2-VL, Qwen2.5-VL):
/// one encoding of the visual input, its prefix (up to <|vision_end|>) prefilled once, every
/// prompt answered from a fork of that cache; text-only prompts each their own conversation.
enum ChatAnswering {
    static func answer<Model: MRoPEDecoderModel>(
        _ prompts: [String], about input: VisualInput?, model: Model, tokenizer: Tokenizer, stopTokens: Set<Int>, merge: Int,
        parameters: GenerationParameters, onStart: (Int) -> Void, onToken: (Int, Int) -> Void,
        visionItem: (VisualInput) -> Model.VisionItem
    ) throws -> [Answer] {
        var parameters = parameters
        parameters.stopTokens.formUnion(stopTokens)
        func decode(_ tokens: [Int]) -> String {
            tokenizer.decode(tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let input else {
            return try prompts.enumerated().map { i, prompt in
                let ids = try Qwen2VLPrompt.encode([ChatMessage(role: "user", text: prompt)], tokenizer: tokenizer)
                onStart(i)
                let start = DispatchTime.now().uptimeNanoseconds
                let session = try PrefixSession(model: model, prefix: Array(ids.prefix(1)), vision: [])
                let out = try session.generate(continuation: Array(ids.dropFirst()), parameters: parameters) { onToken(i, $0) }
                return Answer(prompt: prompt, text: decode(out), tokens: out, promptTokens: ids.count,
                              generateSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
        }
        guard let firstPrompt = prompts.first else { return [] }
        guard merge > 0 else { throw VLMError.invalidInput("spatial merge size must be > 0") }
        let tokens = input.grid.patches / (merge * merge)
        func ids(_ text: String) throws -> [Int] {
            let part: ChatContent = input.kind == .video ? .video : .image
            return try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [part, .text(text)])], tokenizer: tokenizer,
                                            videoTokens: input.kind == .video ? [tokens] : [],
                                            imageTokens: input.kind == .image ? [tokens] : [])
        }
        // The shared prefix: the prompt up to and including <|vision_end|>, encoded and prefilled once.
        let first = try ids(firstPrompt)
        guard let end = tokenizer.id("<|vision_end|>"), let cut = first.firstIndex(of: end) else {
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
