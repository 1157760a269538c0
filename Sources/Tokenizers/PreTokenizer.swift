import Foundation

/// Splits normalised text into the pieces BPE encodes separately: the pre-tokenizer's regex
/// (`Split` with behaviour `Isolated`: every match is a piece, and so is every gap between them).
struct RegexSplitter: @unchecked Sendable {
    let regex: NSRegularExpression

    init(pattern: String) throws {
        if let nested = Self.nestedQuantifier(pattern) {
            throw NSError(domain: "reelql.tokenizer", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "a repeated group that itself repeats (\(nested)) can take exponential time on some text; refused"])
        }
        regex = try NSRegularExpression(pattern: pattern, options: [])
    }

    /// The first group that contains a repetition (+, *, {n,}) and is itself repeated, as in
    /// `(a+)+` — the shape of catastrophic backtracking in ICU's engine. Real pre-tokenizer
    /// patterns (GPT-2, Qwen2, Llama 3) have none.
    static func nestedQuantifier(_ pattern: String) -> String? {
        let c = Array(pattern)
        var stack: [(start: Int, repeats: Bool)] = []
        var i = 0
        func isQuantifier(_ j: Int) -> Bool {
            guard j < c.count else { return false }
            if c[j] == "+" || c[j] == "*" { return true }
            if c[j] == "{", let close = c[j...].firstIndex(of: "}") {
                // {n,} or {n,m} with m > 1 repeats; {1} or {0,1} does not.
                let body = String(c[(j + 1)..<close])
                let parts = body.split(separator: ",", omittingEmptySubsequences: false)
                if parts.count == 2 { return parts[1].isEmpty || (Int(parts[1]) ?? 2) > 1 }
                return (Int(body) ?? 2) > 1
            }
            return false
        }
        while i < c.count {
            switch c[i] {
            case "\\":
                // An escape; \p{L}, \x{41} and the like take their braces with them.
                if i + 2 < c.count, c[i + 2] == "{", let close = c[(i + 2)...].firstIndex(of: "}") { i = close + 1 } else { i += 2 }
                continue
            case "[":
                // A character class: skip to its closing bracket (escapes and a leading ] inside).
                var j = i + 1
                if j < c.count && c[j] == "^" { j += 1 }
                if j < c.count && c[j] == "]" { j += 1 }
                while j < c.count && c[j] != "]" { j += c[j] == "\\" ? 2 : 1 }
                i = j + 1
                if isQuantifier(i), !stack.isEmpty { stack[stack.count - 1].repeats = true }
                continue
            case "(":
                stack.append((i, false))
            case ")":
                guard let group = stack.popLast() else { break }
                let quantified = isQuantifier(i + 1)
                if quantified && group.repeats { return String(c[group.start...min(i + 1, c.count - 1)]) }
                if (quantified || group.repeats), !stack.isEmpty { stack[stack.count - 1].repeats = true }
            default:
                if isQuantifier(i), !stack.isEmpty { stack[stack.count - 1].repeats = true }
            }
            i += 1
        }
        return nil
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
