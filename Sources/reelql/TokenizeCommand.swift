import ArgumentParser
import Foundation
import Tokenizers

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of TEXT as JSON, using a checkpoint's tokenizer.json.")

    @Argument(help: "The text.")
    var text: String
    @Option(help: "A directory holding tokenizer.json (a model checkpoint).")
    var model: String
    @Flag(help: "Also print each token's text.")
    var tokens = false

    func validate() throws { try requireUTF8("TEXT", text) }

    func run() throws {
        let tokenizer = try reportingModelErrors(model: model) { try Tokenizer(directory: model) }
        let ids = tokenizer.encode(text)
        if tokens {
            struct Item: Encodable { var id: Int; var text: String }
            try printJSON(ids.map { Item(id: $0, text: tokenizer.decode([$0])) })
        } else {
            try printJSON(ids)
        }
    }
}
