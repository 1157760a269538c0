import Foundation
import Tokenizers

/// One video of a Qwen3-VL prompt: the time of each temporal patch and its token count.
public struct Qwen3VLPromptVideo: Sendable, Equatable {
    /// Seconds of each temporal patch (`Qwen3VLProcessor.timestamps`): one per grid.t.
    public var timestamps: [Double]
    /// Pad tokens per temporal patch: h·w / merge².
    public var tokensPerPatch: Int

    public init(timestamps: [Double], tokensPerPatch: Int) {
        self.timestamps = timestamps
        self.tokensPerPatch = tokensPerPatch
    }

    /// A video of `grid` (patches before merging) whose patches are at `timestamps`.
    public init(grid: VisionGrid, timestamps: [Double], merge: Int) throws {
        guard timestamps.count == grid.t else {
            throw VLMError.invalidInput("\(timestamps.count) timestamps for a grid of \(grid.t) temporal patches")
        }
        guard merge > 0, grid.h % merge == 0, grid.w % merge == 0 else {
            throw VLMError.invalidInput("grid \(grid) is not a multiple of the \(merge)×\(merge) merge")
        }
        self.init(timestamps: timestamps, tokensPerPatch: (grid.h / merge) * (grid.w / merge))
    }
}

/// Qwen3-VL's chat prompt: the chat template of Qwen3-VL-*-Instruct (system, user and assistant
/// turns with text, image and video parts; rendered here, not by a template engine — unlike
/// Qwen2-VL's there is no default system turn), then the processor's expansion of each video to
/// `<t seconds><|vision_start|>` + pads + `<|vision_end|>` per temporal patch ("%.1f") and of each
/// image to its pads, then the tokenizer over the whole text. Special tokens come from the
/// tokenizer. Port of `Qwen3VLProcessor.__call__` (transformers 4.57).
public enum Qwen3VLPrompt {
    /// Where transformers versions place a video's frames.
    public enum Layout: Sendable {
        /// transformers 4.57 (the release): the template's `<|vision_start|><|video_pad|><|vision_end|>`
        /// is replaced whole by the timestamped frames.
        case released
        /// transformers 5.x: only `<|video_pad|>` is replaced, so the template's outer
        /// `<|vision_start|>` … `<|vision_end|>` stays around the timestamped frames.
        case transformers5
    }

    /// The template's text (`apply_chat_template(..., tokenize=False)`).
    public static func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var s = ""
        for (i, m) in messages.enumerated() {
            if m.role == "system" {
                // Only a first system turn is rendered, and only its text.
                guard i == 0 else { continue }
                s += "<|im_start|>system\n"
                for case .text(let t) in m.content { s += t }
                s += "<|im_end|>\n"
                continue
            }
            guard m.role == "user" || m.role == "assistant" else { continue }
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

    /// "<0.2 seconds>": Python's `f"<{t:.1f} seconds>"` (exact binary value, rounded half to even).
    public static func timestamp(_ seconds: Double) -> String {
        "<" + String(format: "%.1f", seconds) + " seconds>"
    }

    /// The processor's text expansion, in its order: each `<|image_pad|>` (in order) becomes
    /// `imageTokens[i]` pads; then each video (in order) its timestamped frames, replacing the
    /// first `<|vision_start|><|video_pad|><|vision_end|>` left in the text (released layout; else
    /// the first bare `<|video_pad|>`). Expanded pads are held as `<|placeholder|>` until the end,
    /// as transformers does, so that they are not taken for placeholders.
    public static func expand(_ text: String, videos: [Qwen3VLPromptVideo] = [], imageTokens: [Int] = [],
                              layout: Layout = .released) throws -> String {
        let start = "<|vision_start|>", end = "<|vision_end|>", videoPad = "<|video_pad|>", imagePad = "<|image_pad|>"
        let held = "<|placeholder|>"
        // Scalar by scalar, as transformers' str.replace: Foundation's search compares
        // Characters, so a question that starts with a combining mark (one grapheme with the
        // template's '>') hid the placeholder.
        func firstRange(_ s: String, _ target: String) -> Range<String.Index>? {
            let hay = s.unicodeScalars, needle = Array(target.unicodeScalars)
            var i = hay.startIndex
            while i < hay.endIndex {
                if hay[i...].starts(with: needle) { return i..<hay.index(i, offsetBy: needle.count) }
                i = hay.index(after: i)
            }
            return nil
        }
        func replaceFirst(_ s: inout String, _ target: String, _ with: String) -> Bool {
            guard let r = firstRange(s, target) else { return false }
            s.unicodeScalars.replaceSubrange(r, with: with.unicodeScalars)
            return true
        }
        func replaceAll(_ s: String, _ target: String, _ with: String) -> String {
            let hay = s.unicodeScalars, needle = Array(target.unicodeScalars)
            var out = String.UnicodeScalarView()
            var i = hay.startIndex
            while i < hay.endIndex {
                if hay[i...].starts(with: needle) {
                    out.append(contentsOf: with.unicodeScalars)
                    i = hay.index(i, offsetBy: needle.count)
                } else {
                    out.append(hay[i])
                    i = hay.index(after: i)
                }
            }
            return String(out)
        }
        var s = text
        var images = imageTokens.makeIterator()
        while let r = firstRange(s, imagePad) {
            guard let n = images.next() else { throw VLMError.invalidInput("more images in the prompt than token counts given") }
            guard n >= 0 else { throw VLMError.invalidInput("an image needs a token count ≥ 0, got \(n)") }
            s.unicodeScalars.replaceSubrange(r, with: String(repeating: held, count: n).unicodeScalars)
        }
        guard images.next() == nil else { throw VLMError.invalidInput("fewer images in the prompt than token counts given") }
        s = replaceAll(s, held, imagePad)
        var clips = videos.makeIterator()
        while let pad = firstRange(s, videoPad) {
            guard let v = clips.next() else { throw VLMError.invalidInput("more videos in the prompt than timings given") }
            guard v.tokensPerPatch >= 0, !v.timestamps.isEmpty else {
                throw VLMError.invalidInput("a video needs ≥ 1 timestamp and a token count ≥ 0, got \(v.timestamps.count) and \(v.tokensPerPatch)")
            }
            let frames = v.timestamps.map { timestamp($0) + start + String(repeating: held, count: v.tokensPerPatch) + end }.joined()
            if !(layout == .released && replaceFirst(&s, start + videoPad + end, frames)) {
                s.unicodeScalars.replaceSubrange(pad, with: frames.unicodeScalars) // (s unchanged: pad still stands)
            }
        }
        guard clips.next() == nil else { throw VLMError.invalidInput("fewer videos in the prompt than timings given") }
        return replaceAll(s, held, videoPad)
    }

    /// Token ids of `messages` with every video and image expanded.
    public static func encode(_ messages: [ChatMessage], tokenizer: Tokenizer, videos: [Qwen3VLPromptVideo] = [],
                              imageTokens: [Int] = [], addGenerationPrompt: Bool = true, layout: Layout = .released) throws -> [Int] {
        for token in ["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"] where tokenizer.id(token) == nil {
            throw VLMError.invalidInput("\(tokenizer.path): the tokenizer has no \(token) token")
        }
        let text = try expand(render(messages, addGenerationPrompt: addGenerationPrompt), videos: videos,
                              imageTokens: imageTokens, layout: layout)
        return tokenizer.encode(text)
    }
}
