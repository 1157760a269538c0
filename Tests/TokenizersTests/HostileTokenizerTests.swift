import Foundation
import Testing
@testable import Tokenizers

/// tokenizer.json files with hostile ids: an error naming the token and the id, never a trap or
/// a table sized by the id.
@Suite struct HostileTokenizerTests {
    static let small = ParityTests.root.appendingPathComponent("small/tokenizer.json")

    /// A copy of the small tokenizer with `edit` applied to its JSON; returns the load error's text.
    func loadError(_ edit: (inout [String: Any]) -> Void) throws -> String? {
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.small)) as? [String: Any])
        edit(&json)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try Tokenizer(path: path)
            return nil
        } catch let e as TokenizerError {
            return e.errorDescription
        }
    }

    func settingAddedTokenId(_ id: Any) -> (inout [String: Any]) -> Void {
        { json in
            var added = json["added_tokens"] as! [[String: Any]]
            added[2]["id"] = id // <|im_end|>
            json["added_tokens"] = added
        }
    }

    @Test(arguments: [-1, -1_000_000, 1_000_000_000_000, Int.max])
    func addedTokenIdOutOfRange(id: Int) throws {
        let message = try #require(try loadError(settingAddedTokenId(id)))
        #expect(message.contains("'<|im_end|>'"), "\(message)")
        #expect(message.contains("\(id)"), "\(message)")
    }

    /// Added tokens get the ids Hugging Face's tokenizers gives them on load, not the ids the
    /// file lists: a gap, a vocabulary token's text or id, swapped entries, one id for two texts,
    /// one text twice (two entries '<dup>' with ids 1000 and 5 trapped on a table sized without
    /// 1000). Expected ids from fixtures/scripts/reference_added_tokens.py (tokenizers 0.23.3).
    @Test func addedTokensTakeTheReferencesIds() throws {
        let url = ParityTests.root.appendingPathComponent("added_tokens.json")
        let fixture = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let variants = try #require(fixture["variants"] as? [[String: Any]])
        #expect(variants.count == 8)
        for v in variants {
            let name = v["name"] as? String ?? "?"
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tok-\(UUID().uuidString).json").path
            var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.small)) as? [String: Any])
            json["added_tokens"] = v["added_tokens"]
            if let extra = v["vocab"] as? [String: Int], !extra.isEmpty, var model = json["model"] as? [String: Any],
               var vocab = model["vocab"] as? [String: Int] {
                vocab.merge(extra) { $1 }
                model["vocab"] = vocab
                json["model"] = model
            }
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            let t = try Tokenizer(path: path)
            for (text, id) in try #require(v["ids"] as? [String: Int]) {
                #expect(t.id(text) == id, "\(name): '\(text)'")
            }
            for e in try #require(v["encodings"] as? [[String: Any]]) {
                let text = e["text"] as? String ?? ""
                let ids = t.encode(text)
                #expect(ids == e["ids"] as? [Int], "\(name): '\(text)'")
                #expect(t.decode(ids, skipSpecialTokens: true) == e["decoded_without_special"] as? String, "\(name): decoding '\(text)'")
            }
        }
        // The trap's own case loads, each text with one id.
        #expect(try loadError { json in
            var added = json["added_tokens"] as! [[String: Any]]
            added.append(["id": 1000, "content": "<dup>", "special": true])
            added.append(["id": 5, "content": "<dup>", "special": false])
            json["added_tokens"] = added
        } == nil)
    }

    /// Removing an added token can join the text around it into another; what is left holds none
    /// (a summary's prompt was refused for a <|video_pad|> formed so).
    @Test func removedTokensDoNotReform() throws {
        let t = try Tokenizer(path: Self.small.path)
        let cleaned = t.removingAddedTokens("a <|video_<|im_<|im_end|>end|>pad|> b")
        #expect(cleaned == "a  b" && t.addedTokens(in: cleaned).isEmpty, "\(cleaned)")
    }

    @Test func addedTokenIdNotAnInteger() throws {
        let message = try #require(try loadError(settingAddedTokenId(1e30)))
        #expect(message.contains("'<|im_end|>'"), "\(message)")
    }

    @Test(arguments: [-7, 1_000_000_000_000])
    func vocabularyIdOutOfRange(id: Int) throws {
        let message = try #require(try loadError { json in
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Int]
            vocab["a"] = id
            model["vocab"] = vocab
            json["model"] = model
        })
        #expect(message.contains("'a'"), "\(message)")
        #expect(message.contains("\(id)"), "\(message)")
    }

    /// Ids with gaps (a padded vocabulary) still load.
    @Test func sparseButReasonableIdsLoad() throws {
        #expect(try loadError(settingAddedTokenId(1500)) == nil)
    }
}
