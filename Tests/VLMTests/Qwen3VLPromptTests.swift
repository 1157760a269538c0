import Foundation
import Testing
import Tokenizers
@testable import VLM

/// Prompts and M-RoPE positions as transformers builds them (fixtures/scripts/reference_qwen3vl.py):
/// the chat template, the processor's timestamped expansion, the tokenizer, get_rope_index.
@Suite struct Qwen3VLPromptTests {
    static let tokenizer = try! Tokenizer(directory: VisionFixtures.model("tiny-qwen3vl-a"))
    static let prompts = ["video", "video_odd", "image", "text"]

    /// The messages of each reference prompt (PROMPTS in the script).
    static func messages(_ name: String) -> [ChatMessage] {
        switch name {
        case "video": return [ChatMessage(role: "user", content: [.video, .text("What happens here?")])]
        case "video_odd": return [ChatMessage(role: "system", text: "You describe clips."),
                                  ChatMessage(role: "user", content: [.text("Look: "), .video, .text(" Describe it.")])]
        case "image": return [ChatMessage(role: "user", content: [.image, .text("What is this?")])]
        default: return [ChatMessage(role: "system", text: "You are terse."), ChatMessage(role: "user", text: "Hello, how are you?")]
        }
    }

    /// The vision inputs of a reference prompt, with timestamps from the recorded fps and frame indices.
    static func vision(_ prompt: Qwen3VLFixtures.Index.Prompt, merge: Int = 2) throws -> (videos: [Qwen3VLPromptVideo], images: [Int], rope: [Qwen3VLRoPE.Input]) {
        guard let name = prompt.input else { return ([], [], []) }
        let input = Qwen3VLFixtures.index.inputs[name]!
        let grid = VisionGrid(t: input.grid[0], h: input.grid[1], w: input.grid[2])
        if name == "image" { return ([], [grid.patches / (merge * merge)], [.init(grid: grid, isVideo: false)]) }
        let times = try Qwen3VLProcessor.timestamps(frameIndices: input.frameIndices!, fps: input.fps!, mergeSize: merge)
        return ([try Qwen3VLPromptVideo(grid: grid, timestamps: times, merge: merge)], [], [.init(grid: grid, isVideo: true)])
    }

    @Test(arguments: Qwen3VLFixtures.models.flatMap { m in prompts.map { (m, $0) } })
    func idsMatchTheReleasedProcessor(model: String, name: String) throws {
        let p = Qwen3VLFixtures.index.models[model]!.prompts[name]!
        #expect(Qwen3VLPrompt.render(Self.messages(name)) == p.text)
        let (videos, images, _) = try Self.vision(p)
        let ids = try Qwen3VLPrompt.encode(Self.messages(name), tokenizer: Self.tokenizer, videos: videos, imageTokens: images)
        #expect(ids == p.idsV4, "\(model) \(name): released (4.57) ids")
        let v5 = try Qwen3VLPrompt.encode(Self.messages(name), tokenizer: Self.tokenizer, videos: videos, imageTokens: images, layout: .transformers5)
        #expect(v5 == p.idsV5, "\(model) \(name): transformers 5.24 ids")
    }

    /// 5.24 keeps the template's outer <|vision_start|>…<|vision_end|> around timestamped frames;
    /// the release does not. The reference records both; reelql follows the release.
    @Test func transformers5KeepsOuterVisionTokens() throws {
        let p = Qwen3VLFixtures.index.models["tiny-qwen3vl-a"]!.prompts["video"]!
        let start = Self.tokenizer.id("<|vision_start|>")!
        #expect(p.idsV5.count == p.idsV4.count + 2)
        #expect(p.idsV5.filter { $0 == start }.count == p.idsV4.filter { $0 == start }.count + 1)
        #expect(Qwen3VLPrompt.timestamp(0.25) == "<0.2 seconds>" && Qwen3VLPrompt.timestamp(1.25) == "<1.2 seconds>")
    }

    @Test(arguments: Qwen3VLFixtures.models.flatMap { m in prompts.map { (m, $0) } })
    func positionsMatchGetRopeIndex(model: String, name: String) throws {
        let p = Qwen3VLFixtures.index.models[model]!.prompts[name]!
        let c = try Qwen3VLModelFiles(directory: VisionFixtures.model(model)).config
        let (_, _, inputs) = try Self.vision(p)
        let (pos, delta) = try Qwen3VLRoPE.positions(ids: p.idsV4, imageToken: c.imageTokenId, videoToken: c.videoTokenId,
                                                     inputs: inputs, merge: c.vision.spatialMergeSize)
        #expect(pos == p.positionsV4, "\(model) \(name)")
        #expect(delta == p.ropeDeltaV4)
        // The same rule over 5.24's ids gives 5.24's positions: the versions differ only in the outer tokens.
        let (pos5, _) = try Qwen3VLRoPE.positions(ids: p.idsV5, imageToken: c.imageTokenId, videoToken: c.videoTokenId,
                                                  inputs: inputs, merge: c.vision.spatialMergeSize)
        #expect(pos5 == p.positionsV5, "\(model) \(name) 5.24")
    }

    /// The expansion finds the template's placeholder scalar by scalar, as Python's str.replace
    /// in the processor: a question starting with a combining mark (one grapheme with the
    /// template's '>') left the release's outer <|vision_start|>…<|vision_end|> in place.
    @Test func expansionIgnoresGraphemes() throws {
        let v = Qwen3VLPromptVideo(timestamps: [0.25, 1.25], tokensPerPatch: 2)
        let text = "<|vision_start|><|video_pad|><|vision_end|>\u{301}How many?"
        let frames = "<0.2 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
            + "<1.2 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>"
        #expect(try Qwen3VLPrompt.expand(text, videos: [v]).unicodeScalars.elementsEqual((frames + "\u{301}How many?").unicodeScalars))
        let image = try Qwen3VLPrompt.expand("<|image_pad|>\u{301}x", imageTokens: [3])
        #expect(image.unicodeScalars.elementsEqual("<|image_pad|><|image_pad|><|image_pad|>\u{301}x".unicodeScalars))
    }

    @Test func mismatchedInputsThrow() throws {
        let m = [ChatMessage(role: "user", content: [.video, .text("hi")])]
        #expect(throws: VLMError.self) { try Qwen3VLPrompt.encode(m, tokenizer: Self.tokenizer) }
        let v = Qwen3VLPromptVideo(timestamps: [0.5], tokensPerPatch: 2)
        #expect(throws: VLMError.self) { try Qwen3VLPrompt.encode(m, tokenizer: Self.tokenizer, videos: [v, v]) }
        #expect(throws: VLMError.self) { try Qwen3VLPromptVideo(grid: VisionGrid(t: 2, h: 4, w: 4), timestamps: [0.5], merge: 2) }
        #expect(throws: VLMError.self) { try Qwen3VLRoPE.positions(ids: [1, 810, 810, 2], imageToken: 809, videoToken: 810,
                                                                    inputs: [.init(grid: VisionGrid(t: 1, h: 4, w: 4), isVideo: true)], merge: 2) }
        #expect(throws: VLMError.self) { try Qwen3VLRoPE.positions(ids: [1, 2], imageToken: 809, videoToken: 810,
                                                                    inputs: [.init(grid: VisionGrid(t: 1, h: 2, w: 2), isVideo: false)], merge: 2) }
    }
}
