import Foundation

/// Splits normalised text into the pieces BPE encodes separately: the pre-tokenizer's regex
/// (`Split` with behaviour `Isolated`: every match is a piece, and so is every gap between them).
struct RegexSplitter: @unchecked Sendable {
    let regex: NSRegularExpression

    init(pattern: String) throws {
        regex = try NSRegularExpression(pattern: pattern, options: [])
    }

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
