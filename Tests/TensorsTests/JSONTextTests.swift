import Foundation
import Testing
@testable import Tensors

/// Keys written twice in one JSON object, found as Python's json finds keys: by their text after
/// unescaping, byte for byte (not by canonical equivalence, and a surrogate pair as one scalar).
@Suite struct JSONTextTests {
    func duplicate(_ text: String) -> String? {
        JSONText.duplicateKey(in: Data(text.utf8)).map { $0.path.isEmpty ? $0.key : $0.path + "." + $0.key }
    }

    @Test func duplicatesAreFoundWhereverTheyAre() {
        #expect(duplicate(#"{"a": 1, "b": 2, "a": 3}"#) == "a")
        #expect(duplicate(#"{"t": {"x": 1, "x": 2}}"#) == "t.x")
        #expect(duplicate(#"{"l": [{"k": 1}, {"k": 1, "k": 2}]}"#) == "l[1].k")
        #expect(duplicate(#"{"image_token_id": 1, "image\u005ftoken_id": 2}"#) == "image_token_id")
        #expect(duplicate(#"{"a": "\"a\": 1", "b": {"a": 1}}"#) == nil) // a key's text in a value, the same key in another object
    }

    /// One object of 300,000 keys (a safetensors header may hold over a million): found in one
    /// pass; a copy of the key set per key made this quadratic, hours on such a header.
    @Test func aLargeObjectIsScannedOnce() {
        var text = "{"
        for i in 0..<300_000 { text += "\"t\(i)\":0," }
        #expect(duplicate(text + "\"t7\":1}") == "t7")
        #expect(duplicate(text + "\"end\":1}") == nil)
    }

    @Test func keysThatDifferOnlyInTheirBytesAreNotDuplicates() {
        #expect(duplicate("{\"caf\\u00e9\": 1, \"cafe\\u0301\": 2}") == nil)       // NFC and NFD
        #expect(duplicate("{\"x\\ud83d\\ude00\": 1, \"x\\ud83d\\ude01\": 2}") == nil) // two emoji by surrogate pairs
        #expect(duplicate("{\"x\\ud83d\\ude00\": 1, \"x😀\": 2}") == "x😀")           // one emoji, two spellings
        #expect(duplicate("{\"\\ud800\": 1, \"\\ud801\": 2}") == nil)                // lone surrogates
    }
}
