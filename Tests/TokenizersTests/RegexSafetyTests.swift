import Foundation
import Testing
@testable import Tokenizers

/// A hostile tokenizer.json can carry a pre-tokenizer regex that backtracks exponentially in
/// ICU (`(a+)+$` took 18 s on 49 characters; `(a|a)*c`, which passed the old shape test, minutes
/// on 300): only the known patterns are taken as regexes, a `String` pattern is split on as
/// written, and anything else is refused when the tokenizer loads, naming the pattern.
@Suite struct RegexSafetyTests {
    @Test(arguments: ["(a+)+$", "(x*)*", "((ab)+c)+", "(\\w+\\s?)*$", "([a-z]{2,})+", "(?:a|aa)+(b+)*", "(a|a)*c",
                      "(?:[^@]|[^@]|[^@]|[^@])*@", "(a?){28}a{28}", "\\s*\\s*\\s*\\s*\\s*\\s*x", "(\\p{L})+"])
    func unknownRegexesAreRefused(pattern: String) {
        #expect(throws: (any Error).self) { _ = try RegexSplitter(pattern: pattern) }
        // As a literal string it is harmless, and splits on exactly that text.
        #expect(throws: Never.self) { _ = try RegexSplitter(pattern: pattern, literal: true) }
    }

    @Test func knownPatternsLoad() throws {
        #expect(RegexSplitter.known.keys.sorted() == ["GPT-2", "Llama 3", "Qwen2"])
        for p in RegexSplitter.known.values { _ = try RegexSplitter(pattern: p) }
        // Every tokenizer this checkout carries uses one of them.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for dir in ["models/demo", "fixtures/tokenizers/qwen2", "fixtures/models/tiny-qwen3vl-a"] {
            _ = try Tokenizer(path: root.appendingPathComponent(dir + "/tokenizer.json").path)
        }
    }

    @Test func aLiteralPatternSplitsOnItsText() throws {
        let s = try RegexSplitter(pattern: ".", literal: true)
        #expect(s.split("a.b").map(String.init) == ["a", ".", "b"])
    }

    /// Pre-tokenizer sequences reelql would split otherwise than the reference (which applies
    /// every stage in order) are refused: a second Split, a Split after ByteLevel, ByteLevel's
    /// own regex after a Split, two ByteLevels, values of the wrong kind. The shapes released
    /// tokenizers use load.
    @Test func preTokenizerShapesAreTheReferences() throws {
        let small = ParityTests.root.appendingPathComponent("small/tokenizer.json")
        let qwen2: [String: Any] = ["type": "Split", "pattern": ["Regex": RegexSplitter.known["Qwen2"] ?? ""], "behavior": "Isolated", "invert": false]
        let space: [String: Any] = ["type": "Split", "pattern": ["String": " "], "behavior": "Isolated", "invert": false]
        func byteLevel(_ useRegex: Any) -> [String: Any] { ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex] }
        func with(_ edit: (inout [String: Any]) -> Void) -> [String: Any] { var q = qwen2; edit(&q); return q }
        func loads(_ stages: [[String: Any]]) throws -> Bool {
            var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: small)) as? [String: Any])
            json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": stages]
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString).json").path
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            do { _ = try Tokenizer(path: path); return true } catch is TokenizerError { return false }
        }
        for stages in [[qwen2, byteLevel(false)], [byteLevel(true)], [byteLevel(false)], [space, byteLevel(false)]] {
            #expect(try loads(stages), "\(stages)")
        }
        let refused: [[[String: Any]]] = [
            [space, qwen2, byteLevel(false)], [byteLevel(false), qwen2], [qwen2, byteLevel(true)], [qwen2, byteLevel(false), byteLevel(false)],
            [with { $0["behavior"] = "ISOLATED" }, byteLevel(false)], [with { $0["behavior"] = 5 }, byteLevel(false)],
            [with { $0["invert"] = true }, byteLevel(false)], [with { $0["invert"] = "true" }, byteLevel(false)],
            [qwen2, byteLevel("false")], [qwen2, byteLevel(0)],
            [with { $0["pattern"] = ["Regex": RegexSplitter.known["Qwen2"] ?? "", "String": " "] }, byteLevel(false)],
            [with { $0["pattern"] = ["String": ""] }, byteLevel(false)],
        ]
        for stages in refused { #expect(try !loads(stages), "\(stages)") }
    }

    /// In a tokenizer.json: refused, naming the file and the pattern.
    @Test func aHostileTokenizerIsRefusedNamingThePattern() throws {
        let small = ParityTests.root.appendingPathComponent("small/tokenizer.json")
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: small)) as? [String: Any])
        var pre = try #require(json["pre_tokenizer"] as? [String: Any])
        var list = try #require(pre["pretokenizers"] as? [[String: Any]])
        list[0]["pattern"] = ["Regex": "(a|a)*c"]
        pre["pretokenizers"] = list
        json["pre_tokenizer"] = pre
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try Tokenizer(path: path)
            Issue.record("loaded")
        } catch let e as TokenizerError {
            let message = e.errorDescription ?? ""
            #expect(message.contains(path) && message.contains("(a|a)*c"), "\(message)")
        }
    }
}
