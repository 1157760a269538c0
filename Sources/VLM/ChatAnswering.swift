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
}

/// Prompts about several inputs (clips, images, text) answered together over an M-RoPE decoder
/// (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): each `submit` encodes its input once and prefills its
/// prefix (up to its last <|vision_end|>); every prompt is a continuation decoded from a fork of
/// that cache, in one `DecodeBatch` with every other submitted prompt. Text-only prompts are
/// each their own conversation. `encode` gives a prompt's ids in the family's chat template.
final class ChatBatch<Model: MRoPEDecoderModel>: AnswerBatch {
    let model: Model
    let tokenizer: Tokenizer
    let stopTokens: Set<Int>
    let encode: ChatAnswering.Encoder
    let visionItem: (VisualInput) throws -> Model.VisionItem
    let decoding: DecodeBatch<Model>

    init(capacity: Int, model: Model, tokenizer: Tokenizer, stopTokens: Set<Int>, encode: @escaping ChatAnswering.Encoder,
         visionItem: @escaping (VisualInput) throws -> Model.VisionItem) {
        self.model = model
        self.tokenizer = tokenizer
        self.stopTokens = stopTokens
        self.encode = encode
        self.visionItem = visionItem
        decoding = DecodeBatch(capacity: capacity)
    }

    var onStage: ((AnswerStage) -> Void)?
    var capacity: Int { decoding.capacity }
    var activeCount: Int { decoding.activeCount }
    var waitingCount: Int { decoding.waitingCount }
    var peakCacheBytes: Int { decoding.peakCacheBytes }

    func submit(_ prompts: [String], about input: VisualInput?, parameters: GenerationParameters,
                onToken: @escaping (Int, Int) -> Void, onPromptDone: @escaping (Int) -> Void,
                done: @escaping ([Answer]) -> Void) throws {
        var parameters = parameters
        parameters.stopTokens.formUnion(stopTokens)
        try parameters.validate()
        // A prompt is plain text: chat-format tokens in it would be read as the template's own
        // (a <|video_pad|> would ask for a second video).
        // Every one the tokenizer would split out, wherever it stands (not only the first
        // <|…|>-shaped text: '<|x|><|im_end|>' got through).
        for (i, prompt) in prompts.enumerated() {
            if let token = tokenizer.addedTokens(in: prompt).first {
                throw VLMError.invalidInput("prompt \(i + 1) contains the special token \(token.content); prompts are plain text")
            }
        }
        guard !prompts.isEmpty else { return done([]) }
        var sessions: [PrefixSession<Model>] = []
        var continuations: [[Int]] = []
        var promptTokens: [Int] = []
        if let input {
            // One shared prefix: the prompt up to and including its last <|vision_end|>.
            let first = try encode(prompts[0], input)
            guard let end = tokenizer.id("<|vision_end|>"), let cut = first.lastIndex(of: end) else {
                throw VLMError.invalidInput("\(tokenizer.path): the tokenizer has no <|vision_end|>")
            }
            let prefix = Array(first[...cut])
            onStage?(.encoding)
            let session = try PrefixSession(model: model, prefix: prefix, vision: [visionItem(input)]) { onStage?(.prefill) }
            for (i, prompt) in prompts.enumerated() {
                let full = i == 0 ? first : try encode(prompt, input)
                guard full.count > prefix.count, Array(full[..<prefix.count]) == prefix else {
                    throw VLMError.invalidInput("prompt \(i + 1) does not share the clip's prefix")
                }
                // Before anything joins the batch: a prompt beyond the context fails this input
                // here, not a decoding step that serves other inputs too.
                try model.checkContext(full.count)
                sessions.append(session)
                continuations.append(Array(full[prefix.count...]))
                promptTokens.append(full.count)
            }
        } else {
            // Text only: each prompt its own conversation (its first token the prefix).
            for prompt in prompts {
                let ids = try encode(prompt, nil)
                try model.checkContext(ids.count)
                sessions.append(try PrefixSession(model: model, prefix: Array(ids.prefix(1)), vision: []))
                continuations.append(Array(ids.dropFirst()))
                promptTokens.append(ids.count)
            }
        }
        // The answers, filled in as their sequences finish; `done` when the last one does. The
        // closures keep only numbers: a session and the input's pixels are freed once the last of
        // its sequences has forked it, the prefix's keys and values (shared by the forks) once the
        // last of them finishes.
        let tokenizer = self.tokenizer
        let timings = sessions.map(\.timing), textOnly = input == nil
        var answers: [Answer?] = Array(repeating: nil, count: prompts.count)
        // Generation time of a prompt: from its first token (its continuation run) to its last.
        var firstToken = [UInt64](repeating: 0, count: prompts.count)
        var left = prompts.count
        for i in prompts.indices {
            try decoding.add(sessions[i], continuation: continuations[i], parameters: parameters, onToken: { id in
                if firstToken[i] == 0 { firstToken[i] = DispatchTime.now().uptimeNanoseconds }
                onToken(i, id)
            }) { out in
                let shared = textOnly || i == 0
                let now = DispatchTime.now().uptimeNanoseconds
                answers[i] = Answer(prompt: prompts[i],
                                    text: tokenizer.decode(out, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines),
                                    tokens: out, promptTokens: promptTokens[i],
                                    visionSeconds: shared ? timings[i].vision : 0, prefillSeconds: shared ? timings[i].prefill : 0,
                                    generateSeconds: firstToken[i] == 0 ? 0 : Double(now - firstToken[i]) / 1e9)
                onPromptDone(i)
                left -= 1
                if left == 0 { done(answers.compactMap { $0 }) }
            }
        }
    }

    func step() throws -> Bool { try decoding.step() }
}
