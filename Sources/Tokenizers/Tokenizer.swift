import Foundation

/// A byte-level BPE tokenizer loaded from a Hugging Face `tokenizer.json` (Qwen2's and GPT-2's kind):
/// added/special tokens are matched first, the rest is normalised (NFC), split by the
/// pre-tokenizer's regex, mapped to the byte-level alphabet and merged by rank.
/// Port of the `tokenizers` pipeline stages: added vocabulary, normalizer, pre-tokenizer, model, decoder.
public final class Tokenizer: @unchecked Sendable {
    public struct AddedToken: Sendable, Equatable {
        public var id: Int
        public var content: String
        public var special: Bool
        public var lstrip: Bool
        public var rstrip: Bool
    }

    public let path: String
    public let vocabulary: [String: Int]
    public let addedTokens: [AddedToken]
    private let idToToken: [String]
    private let isSpecial: [Bool]
    private let nfc: Bool
    private let splitter: RegexSplitter?
    /// (left id, right id) → (rank, merged id)
    private let merges: [UInt64: (rank: Int32, merged: Int32)]
    private let byteIds: [Int32]
    private var cache: [Substring: [Int]] = [:]
    private let cacheLock = NSLock()
    /// Added tokens by their first character, longest first.
    private let addedByFirst: [Unicode.Scalar: [AddedToken]]
    private let addedByID: [Int: AddedToken]

    public var vocabularySize: Int { idToToken.count }

    /// Ids a tokenizer of `tokens` tokens may use: twice the count plus 1024 (gaps are allowed),
    /// never more than 2²⁴.
    static func idLimit(tokens: Int) -> Int { min(1 << 24, 2 * tokens + 1024) }

    public convenience init(directory: String) throws {
        try self.init(path: (directory as NSString).appendingPathComponent("tokenizer.json"))
    }

    public init(path: String) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else { throw TokenizerError.missingFile(path: path) }
        // Only a regular file is read: a FIFO would block, a device never end.
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TokenizerError.invalid(path: path, reason: "not a regular file") }
        guard st.st_size <= 1 << 30 else { throw TokenizerError.invalid(path: path, reason: "\(st.st_size) bytes; a tokenizer.json is far smaller") }
        guard let data = FileManager.default.contents(atPath: path) else { throw TokenizerError.missingFile(path: path) }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TokenizerError.invalid(path: path, reason: "not a JSON object")
        }
        guard let model = json["model"] as? [String: Any] else { throw TokenizerError.invalid(path: path, reason: "no 'model'") }
        let type = model["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw TokenizerError.unsupported(path: path, feature: "model type \(type)") }
        guard let vocab = model["vocab"] as? [String: Int] else { throw TokenizerError.invalid(path: path, reason: "model.vocab") }

        // Added tokens, with ids as Hugging Face's tokenizers gives them on load (it does not take
        // the file's ids; added_vocabulary.rs): in the order listed, an empty text is ignored, a
        // text that is a vocabulary token takes that token's id, a text listed before keeps its id
        // (special if any entry is, the later entry's lstrip/rstrip), and any other text takes the
        // vocabulary's size, or one past the last id so given once that reaches it. For every
        // released tokenizer these are the file's ids; where a file says otherwise (a gap, a
        // reused or repeated id), they are the ids the reference encodes with.
        var added: [AddedToken] = []
        var addedIndex: [[UInt8]: Int] = [:] // by text, as bytes (not by canonical equivalence)
        var largest: Int? = nil
        for item in json["added_tokens"] as? [[String: Any]] ?? [] {
            guard let content = item["content"] as? String else {
                throw TokenizerError.invalid(path: path, reason: "added_tokens entry without content")
            }
            // The file's id must be one (an unsigned 32-bit integer), though it is not used.
            guard let id = item["id"] as? Int, (0...Int(UInt32.max)).contains(id) else {
                throw TokenizerError.invalid(path: path, reason: "added token '\(content)' has id \(item["id"].map { "\($0)" } ?? "(none)"), not an integer from 0 to \(UInt32.max)")
            }
            guard !content.isEmpty else { continue }
            let token = AddedToken(id: 0, content: content, special: item["special"] as? Bool ?? false,
                                   lstrip: item["lstrip"] as? Bool ?? false, rstrip: item["rstrip"] as? Bool ?? false)
            let text = Array(content.utf8)
            if let i = addedIndex[text] {
                added[i] = AddedToken(id: added[i].id, content: added[i].content, special: added[i].special || token.special,
                                      lstrip: token.lstrip, rstrip: token.rstrip)
                continue
            }
            var assigned = token
            if let v = vocab.index(forKey: content), Array(vocab[v].key.utf8) == text {
                assigned.id = vocab[v].value
            } else {
                assigned.id = largest.map { $0 >= vocab.count || vocab.isEmpty ? $0 + 1 : vocab.count } ?? vocab.count
                largest = assigned.id
            }
            addedIndex[text] = added.count
            added.append(assigned)
        }
        // Tables below are indexed by id, so vocabulary ids must be dense enough: in 0..<limit,
        // where limit leaves room for gaps but never for a table sized by a hostile id (-1, 10¹², …).
        let limit = Self.idLimit(tokens: vocab.count + added.count)
        for (token, id) in vocab where !(0..<limit).contains(id) {
            throw TokenizerError.invalid(path: path, reason: "vocabulary token '\(token)' has id \(id); ids must be in 0..<\(limit) for \(vocab.count + added.count) tokens")
        }
        var full = vocab
        for a in added { full[a.content] = a.id }
        let size = max(vocab.values.max() ?? -1, added.map(\.id).max() ?? -1) + 1
        // Id to text: the vocabulary's, then the added tokens' (which the reference prefers).
        var inverse = [String](repeating: "", count: size)
        for (t, i) in vocab { inverse[i] = t }
        for a in added { inverse[a.id] = a.content }
        var special = [Bool](repeating: false, count: size)
        for a in added where a.special { special[a.id] = true }
        vocabulary = full
        idToToken = inverse
        isSpecial = special
        addedTokens = added
        var byFirst: [Unicode.Scalar: [AddedToken]] = [:]
        for a in added { if let first = a.content.unicodeScalars.first { byFirst[first, default: []].append(a) } }
        // Longest first: the leftmost-longest match, as Hugging Face's added-token matcher.
        addedByID = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        addedByFirst = byFirst.mapValues { $0.sorted { $0.content.unicodeScalars.count > $1.content.unicodeScalars.count } }

        // Normalizer: none, NFC, or a sequence of them.
        func normalizerTypes(_ n: Any?) -> [String] {
            guard let n = n as? [String: Any], let t = n["type"] as? String else { return [] }
            if t == "Sequence" { return (n["normalizers"] as? [Any] ?? []).flatMap(normalizerTypes) }
            return [t]
        }
        let norms = normalizerTypes(json["normalizer"])
        for n in norms where n != "NFC" { throw TokenizerError.unsupported(path: path, feature: "normalizer \(n)") }
        nfc = norms.contains("NFC")

        // Pre-tokenizer: Split(regex, Isolated) + ByteLevel(use_regex false), or ByteLevel alone.
        func pretokenizers(_ p: Any?) -> [[String: Any]] {
            guard let p = p as? [String: Any], let t = p["type"] as? String else { return [] }
            if t == "Sequence" { return (p["pretokenizers"] as? [Any] ?? []).flatMap(pretokenizers) }
            return [p]
        }
        // The shapes released tokenizers use, each as the reference applies it: ByteLevel alone
        // (its GPT-2 regex unless use_regex is false), or one Split (Isolated) and then ByteLevel
        // with use_regex false. Any other sequence would be split otherwise than the reference
        // splits it, so it is refused.
        var pattern: String? = nil
        var literal = false
        var sawByteLevel = false
        func flag(_ p: [String: Any], _ key: String, _ stage: String, default value: Bool) throws -> Bool {
            guard let v = p[key] else { return value }
            // JSON true/false only (Foundation would also read 0 and 1 as a Bool).
            guard let b = v as? Bool, String(describing: Swift.type(of: v)).hasSuffix("Boolean") || Swift.type(of: v) == Bool.self else {
                throw TokenizerError.invalid(path: path, reason: "pre_tokenizer \(stage): '\(key)' must be true or false, got \(v)")
            }
            return b
        }
        for p in pretokenizers(json["pre_tokenizer"]) {
            switch p["type"] as? String {
            case "Split":
                guard pattern == nil, !sawByteLevel else {
                    throw TokenizerError.unsupported(path: path, feature: "a Split after another Split or after ByteLevel (reelql splits once, before ByteLevel)")
                }
                // A `String` pattern is split on as it is written, not as a regex.
                let spec = p["pattern"] as? [String: Any] ?? [:]
                let regex = spec["Regex"] as? String, text = spec["String"] as? String
                guard spec.count == 1, let pat = regex ?? text else {
                    throw TokenizerError.invalid(path: path, reason: "a Split's pattern must be one Regex or one String")
                }
                guard !pat.isEmpty else { throw TokenizerError.unsupported(path: path, feature: "an empty Split pattern") }
                literal = regex == nil
                let behavior = p["behavior"].map { "\($0)" } ?? "Isolated"
                guard behavior == "Isolated" else { throw TokenizerError.unsupported(path: path, feature: "Split behavior \(behavior) (only Isolated)") }
                guard try !flag(p, "invert", "Split", default: false) else { throw TokenizerError.unsupported(path: path, feature: "Split with invert") }
                pattern = pat
            case "ByteLevel":
                guard !sawByteLevel else { throw TokenizerError.unsupported(path: path, feature: "two ByteLevel pre-tokenizers") }
                sawByteLevel = true
                if try flag(p, "add_prefix_space", "ByteLevel", default: false) { throw TokenizerError.unsupported(path: path, feature: "ByteLevel add_prefix_space") }
                let useRegex = try flag(p, "use_regex", "ByteLevel", default: true)
                if useRegex && pattern != nil {
                    throw TokenizerError.unsupported(path: path, feature: "ByteLevel use_regex after a Split (two regex splits)")
                }
                if useRegex { (pattern, literal) = (RegexSplitter.gpt2, false) }
            default:
                throw TokenizerError.unsupported(path: path, feature: "pre_tokenizer \(p["type"] ?? "?")")
            }
        }
        guard sawByteLevel else { throw TokenizerError.unsupported(path: path, feature: "a BPE without a ByteLevel pre-tokenizer") }
        do { splitter = try pattern.map { try RegexSplitter(pattern: $0, literal: literal) } } catch {
            throw TokenizerError.invalid(path: path, reason: "pre-tokenizer regex: \(error.localizedDescription)")
        }

        // Byte alphabet and merges.
        var bytes = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = vocab[String(ByteLevel.encoder[b])] else {
                throw TokenizerError.invalid(path: path, reason: "byte \(b) has no token")
            }
            bytes[b] = Int32(id)
        }
        byteIds = bytes
        var table: [UInt64: (Int32, Int32)] = [:]
        let rawMerges = model["merges"] as? [Any] ?? []
        table.reserveCapacity(rawMerges.count)
        for (rank, m) in rawMerges.enumerated() {
            let pair: (String, String)
            if let s = m as? String {
                guard let space = s.firstIndex(of: " ") else { throw TokenizerError.invalid(path: path, reason: "merge '\(s)'") }
                pair = (String(s[..<space]), String(s[s.index(after: space)...]))
            } else if let a = m as? [String], a.count == 2 {
                pair = (a[0], a[1])
            } else {
                throw TokenizerError.invalid(path: path, reason: "merge #\(rank)")
            }
            guard let l = vocab[pair.0], let r = vocab[pair.1], let merged = vocab[pair.0 + pair.1] else { continue }
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if table[key] == nil { table[key] = (Int32(rank), Int32(merged)) }
        }
        merges = table
    }

    // MARK: - Encoding

    /// Token ids of `text`; added and special tokens in the text are recognised.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitAddedTokens(text) {
            switch segment {
            case .added(let id): ids.append(id)
            case .text(let s): encodeOrdinary(s, into: &ids)
            }
        }
        return ids
    }

    enum Segment { case text(Substring), added(Int) }

    /// The text cut at added tokens (longest match at the leftmost position, as `tokenizers`).
    func splitAddedTokens(_ text: String) -> [Segment] {
        guard !addedByFirst.isEmpty else { return [.text(text[...])] }
        // Matched on Unicode scalars, as Hugging Face's tokenizers match them (Rust chars): a
        // token followed by a combining mark or a joiner, or after a prepended mark, is still the
        // token (on Characters, grapheme clusters, it would not be found).
        let scalars = text.unicodeScalars
        var out: [Segment] = []
        var start = scalars.startIndex, i = scalars.startIndex
        while i < scalars.endIndex {
            if let candidates = addedByFirst[scalars[i]],
               let hit = candidates.first(where: { scalars[i...].starts(with: $0.content.unicodeScalars) }) {
                var textEnd = i
                if hit.lstrip {
                    while textEnd > start, scalars[scalars.index(before: textEnd)].properties.isWhitespace { textEnd = scalars.index(before: textEnd) }
                }
                if start < textEnd { out.append(.text(Substring(scalars[start..<textEnd]))) }
                out.append(.added(hit.id))
                i = scalars.index(i, offsetBy: hit.content.unicodeScalars.count)
                if hit.rstrip { while i < scalars.endIndex, scalars[i].properties.isWhitespace { i = scalars.index(after: i) } }
                start = i
            } else {
                i = scalars.index(after: i)
            }
        }
        if start < scalars.endIndex { out.append(.text(Substring(scalars[start...]))) }
        return out
    }

    /// The added (special) tokens `text` holds as the tokenizer splits it, in order: what a prompt
    /// that must be plain text may not contain.
    public func addedTokens(in text: String) -> [AddedToken] {
        splitAddedTokens(text).compactMap { if case .added(let id) = $0 { addedByID[id] } else { nil } }
    }

    /// `text` without the added tokens the tokenizer would split out of it (what is left is read
    /// as text).
    public func removingAddedTokens(_ text: String) -> String {
        // Until none is left: removing one can join the text around it into another
        // ("<|video_<|im_end|>pad|>"). Each pass shortens the text, so this ends.
        var current = text
        while true {
            let parts = splitAddedTokens(current)
            guard parts.contains(where: { if case .text = $0 { false } else { true } }) else { return current }
            current = parts.map { if case .text(let t) = $0 { String(t) } else { "" } }.joined()
        }
    }

    private func encodeOrdinary(_ text: Substring, into ids: inout [Int]) {
        // The standard library's NFC (what String comparison uses). Foundation's on Linux composes
        // a character above U+FFFF with a following mark as if it were the character with the
        // same low 16 bits (U+10065 U+0301 became "é").
        let normalized = nfc ? String(decoding: String(text)._nfcCodeUnits, as: UTF8.self) : String(text)
        let pieces = splitter?.split(normalized) ?? [normalized[...]]
        for piece in pieces { ids += bpe(piece) }
    }

    /// Byte-level BPE of one piece: start from its bytes, repeatedly merge the adjacent pair of
    /// lowest rank (leftmost first).
    func bpe(_ piece: Substring) -> [Int] {
        cacheLock.lock()
        if let hit = cache[piece] { cacheLock.unlock(); return hit }
        cacheLock.unlock()
        var word = piece.utf8.map { byteIds[Int($0)] }
        while word.count > 1 {
            var best = Int32.max, at = -1, merged: Int32 = 0
            for i in 0..<(word.count - 1) {
                let key = UInt64(UInt32(bitPattern: word[i])) << 32 | UInt64(UInt32(bitPattern: word[i + 1]))
                if let m = merges[key], m.rank < best { best = m.rank; at = i; merged = m.merged }
            }
            if at < 0 { break }
            // Merge every occurrence of that pair, left to right.
            let left = word[at], right = word[at + 1]
            var out: [Int32] = []
            out.reserveCapacity(word.count)
            var i = 0
            while i < word.count {
                if i + 1 < word.count && word[i] == left && word[i + 1] == right {
                    out.append(merged)
                    i += 2
                } else {
                    out.append(word[i])
                    i += 1
                }
            }
            word = out
        }
        let ids = word.map(Int.init)
        cacheLock.lock()
        if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
        cache[piece] = ids
        cacheLock.unlock()
        return ids
    }

    // MARK: - Decoding

    public func token(_ id: Int) -> String? { id >= 0 && id < idToToken.count ? idToToken[id] : nil }
    public func id(_ token: String) -> Int? { vocabulary[token] }
    public func isSpecialToken(_ id: Int) -> Bool { id >= 0 && id < isSpecial.count && isSpecial[id] }

    /// The bytes a token stands for: added tokens as their text, others through the byte alphabet.
    public func bytes(of id: Int) -> [UInt8] {
        guard let t = token(id) else { return [] }
        if addedTokens.contains(where: { $0.id == id }) { return Array(t.utf8) }
        return t.compactMap { ByteLevel.decoder[$0] }
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids where !(skipSpecialTokens && isSpecialToken(id)) { bytes += self.bytes(of: id) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Decodes tokens as they are generated: text is released only once its UTF-8 bytes are
/// complete, so a character split across tokens (emoji, CJK) never comes out as garbage.
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// The text that `id` completes (possibly empty).
    public mutating func add(_ id: Int) -> String {
        if skipSpecialTokens && tokenizer.isSpecialToken(id) { return "" }
        pending += tokenizer.bytes(of: id)
        let complete = StreamingDecoder.completePrefix(pending)
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is left (an incomplete sequence decodes with replacement characters).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a UTF-8 sequence.
    static func completePrefix(_ b: [UInt8]) -> Int {
        var i = b.count
        // Look back at most 3 bytes for the start of a sequence that is still incomplete.
        var back = 0
        while back < 3 && i - back - 1 >= 0 {
            let c = b[i - back - 1]
            if c & 0xC0 == 0x80 { back += 1; continue } // continuation byte
            let need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1
            if need > back + 1 { i -= back + 1 }
            return i
        }
        return i
    }
}
