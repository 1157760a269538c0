import Foundation

/// Splits normalised text into the pieces BPE encodes separately: the pre-tokenizer's regex
/// (`Split` with behaviour `Isolated`: every match is a piece, and so is every gap between them).
struct RegexSplitter: @unchecked Sendable {
    let regex: NSRegularExpression

    /// A splitter on one of the `known` regexes (a tokenizer's own pattern), or on a literal
    /// string. Any other regex is refused: ICU's backtracking takes exponential time on some
    /// patterns and text (`(a|a)*c` took minutes on 300 characters; a shape test let it through),
    /// and parity with Hugging Face's tokenizers is proven for the known patterns only.
    init(pattern: String, literal: Bool = false) throws {
        guard literal || Self.known.values.contains(pattern) else {
            let shown = pattern.count > 80 ? String(pattern.prefix(80)) + "…" : pattern
            throw NSError(domain: "reelql.tokenizer", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "'\(shown)' is not a pattern reelql splits text with; it knows those of \(Self.known.keys.sorted().joined(separator: ", "))"])
        }
        regex = try NSRegularExpression(pattern: literal ? NSRegularExpression.escapedPattern(for: pattern) : pattern, options: [])
    }

    /// The pre-tokenizer regexes of the tokenizers reelql reads, by the models that use them.
    static let known = [
        "GPT-2": gpt2,
        "Qwen2": #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
        "Llama 3": #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
    ]

    /// GPT-2's pattern, for `ByteLevel` with `use_regex: true`.
    static let gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    func split(_ text: String) -> [Substring] {
        let ns = text as NSString
        var pieces: [Substring] = []
        var last = 0
        let utf16 = text.utf16
        func piece(_ from: Int, _ to: Int) -> Substring {
            let a = utf16.index(utf16.startIndex, offsetBy: from), b = utf16.index(utf16.startIndex, offsetBy: to)
            return text[a..<b]
        }
        for m in regex.matches(in: text, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
            if m.range.location > last { pieces.append(piece(last, m.range.location)) }
            pieces.append(piece(m.range.location, m.range.location + m.range.length))
            last = m.range.location + m.range.length
        }
        if last < ns.length { pieces.append(piece(last, ns.length)) }
        return pieces
    }
}
