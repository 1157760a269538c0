import Testing
@testable import Tokenizers

/// A hostile tokenizer.json can carry a pre-tokenizer regex that backtracks exponentially
/// (`(a+)+$` takes 18 s on 49 characters): such patterns are refused when the tokenizer loads;
/// the real ones load.
@Suite struct RegexSafetyTests {
    @Test(arguments: ["(a+)+$", "(x*)*", "((ab)+c)+", "(\\w+\\s?)*$", "([a-z]{2,})+", "(?:a|aa)+(b+)*"])
    func nestedRepetitionIsRefused(pattern: String) {
        #expect(RegexSplitter.nestedQuantifier(pattern) != nil, "\(pattern)")
        #expect(throws: (any Error).self) { _ = try RegexSplitter(pattern: pattern) }
    }

    @Test func realPatternsLoad() throws {
        let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        for p in [qwen2, llama3, RegexSplitter.gpt2, "(\\p{L})+", "(ab){1}+", "[(+)]+"] {
            #expect(RegexSplitter.nestedQuantifier(p) == nil, "\(p)")
            _ = try RegexSplitter(pattern: p)
        }
    }
}
