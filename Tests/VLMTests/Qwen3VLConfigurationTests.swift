import Foundation
import Testing
@testable import VLM

/// Loads the reference index written by fixtures/scripts/reference_qwen3vl.py.
enum Qwen3VLFixtures {
    static let dir = VisionFixtures.fixtures.appendingPathComponent("reference/qwen3vl")
    static let models = ["tiny-qwen3vl-a", "tiny-qwen3vl-b"]

    struct Index: Decodable {
        struct Input: Decodable {
            var frames: Int, height: Int, width: Int, seed: Int, grid: [Int], pixelsShape: [Int]
            var fps: Double?, frameIndices: [Int]?
        }
        struct Output: Decodable { var mergedV4: [Int], deepstackV4: [[Int]], mergedBf16: [Int] }
        struct Prompt: Decodable {
            var input: String?
            var text: String
            var idsV4: [Int], idsV5: [Int]
            var positionsV4: [[Int]], positionsV5: [[Int]]
            var ropeDeltaV4: Int
            var logitsShape: [Int]
            var greedy: [Int]
        }
        struct Model: Decodable { var outputs: [String: Output]; var prompts: [String: Prompt] }
        var inputs: [String: Input]
        var models: [String: Model]
    }

    static let index: Index = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode(Index.self, from: Data(contentsOf: dir.appendingPathComponent("qwen3vl.json")))
    }()

    static func values(_ name: String) throws -> [Float] {
        try Data(contentsOf: dir.appendingPathComponent("\(name).f32")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    static func frames(_ name: String) -> [RGBImage] {
        let i = index.inputs[name]!
        return VisionFixtures.frames(.init(frames: i.frames, height: i.height, width: i.width, seed: i.seed, grid: i.grid, pixelsShape: i.pixelsShape))
    }
}

@Suite struct Qwen3VLConfigurationTests {
    @Test func tinyCheckpointsDecode() throws {
        let a = try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-a"))
        let v = a.config.vision, t = a.config.text
        #expect(v.depth == 3 && v.hiddenSize == 32 && v.numHeads == 2 && v.intermediateSize == 64 && v.patchSize == 16)
        #expect(v.outHiddenSize == 32 && v.numPositionEmbeddings == 16 && v.gridSide == 4 && v.deepstackVisualIndexes == [0, 2])
        #expect(v.hiddenAct == "gelu_pytorch_tanh" && v.ropeTheta == 10000 && v.patchDim == 1536)
        #expect(t.hiddenSize == 32 && t.numHiddenLayers == 3 && t.numAttentionHeads == 4 && t.numKeyValueHeads == 2 && t.headDim == 16)
        #expect(t.mropeSection == [3, 3, 2] && t.mropeInterleaved == true && t.ropeTheta == 5_000_000 && t.vocabSize == 811)
        #expect(a.config.tieWordEmbeddings == false && a.config.videoTokenId == 810 && a.config.visionStartTokenId == 806)
        #expect(a.video.patchSize == 16 && a.video.imageMean == [0.5, 0.5, 0.5] && a.video.minPixels == 1024 && a.video.maxPixels == 65536)
        #expect(a.video.fps == 2 && a.video.minFrames == 4 && a.video.maxFrames == 768)
        #expect(a.image.patchSize == 16 && a.image.maxPixels == 65536)
        let b = try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-b"))
        #expect(b.config.tieWordEmbeddings == true && b.config.vision.gridSide == 5 && b.config.vision.deepstackVisualIndexes == [1, 2, 3])
        #expect(b.config.text.headDim == 24 && b.config.text.mropeSection == [4, 4, 4])
    }

    /// The 4.57 layout (rope_theta + rope_scaling in text_config, no vision rope_parameters,
    /// separate preprocessor files) decodes to the same configuration as the 5.x save.
    @Test func releasedLayoutDecodesAlike() throws {
        let src = VisionFixtures.model("tiny-qwen3vl-a")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/config.json"))) as! [String: Any]
        var text = json["text_config"] as! [String: Any]
        let rope = text.removeValue(forKey: "rope_parameters") as! [String: Any]
        text["rope_theta"] = rope["rope_theta"]
        text["rope_scaling"] = ["rope_type": "default", "mrope_section": rope["mrope_section"]!, "mrope_interleaved": true]
        json["text_config"] = text
        var vision = json["vision_config"] as! [String: Any]
        vision.removeValue(forKey: "rope_parameters")
        json["vision_config"] = vision
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("q3v4-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let nested = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/processor_config.json"))) as! [String: Any]
        try JSONSerialization.data(withJSONObject: nested["video_processor"]!).write(to: URL(fileURLWithPath: dir + "/video_preprocessor_config.json"))
        try JSONSerialization.data(withJSONObject: nested["image_processor"]!).write(to: URL(fileURLWithPath: dir + "/preprocessor_config.json"))
        let v4 = try Qwen3VLModelFiles(directory: dir), v5 = try Qwen3VLModelFiles(directory: src)
        #expect(v4.config == v5.config)
        #expect(v4.video == v5.video && v4.image == v5.image)
    }

    @Test func absentKeysTakeReleasedDefaults() throws {
        let c = try Qwen2VLModelFiles.decode(Qwen3VLConfiguration.self, from: Data(#"{"model_type":"qwen3_vl"}"#.utf8), path: "x")
        #expect(c.vision == Qwen3VLVisionConfiguration() && c.text == Qwen3VLTextConfiguration())
        #expect(c.vision.depth == 27 && c.vision.hiddenSize == 1152 && c.vision.deepstackVisualIndexes == [8, 16, 24])
        #expect(c.vision.numPositionEmbeddings == 2304 && c.vision.gridSide == 48 && c.vision.outHiddenSize == 3584)
        #expect(c.text.ropeTheta == 5_000_000 && c.text.mropeSection == [24, 20, 20] && c.text.headDim == 128)
        #expect(c.imageTokenId == 151655 && c.videoTokenId == 151656 && !c.tieWordEmbeddings)
        let p = try Qwen2VLModelFiles.decode(Qwen3VLPreprocessorConfiguration.self, from: Data("{}".utf8), path: "p")
        #expect(p.minPixels == 131072 && p.maxPixels == 786432 && p.patchSize == 16 && p.fps == 2)
    }

    @Test func wrongTypesNameTheKey() throws {
        func error(_ json: String) -> VLMError? {
            do { _ = try Qwen2VLModelFiles.decode(Qwen3VLConfiguration.self, from: Data(json.utf8), path: "config.json"); return nil }
            catch let e as VLMError { return e } catch { return nil }
        }
        #expect(error(#"{"vision_config":{"depth":"two"}}"#) == .invalidConfig(path: "config.json", key: "vision_config.depth", reason: "expected an integer"))
        #expect(error(#"{"text_config":{"head_dim":1.5}}"#)?.errorDescription?.contains("text_config.head_dim") == true)
        #expect(error(#"{"vision_config":{"deepstack_visual_indexes":[1,"x"]}}"#)?.errorDescription?.contains("deepstack_visual_indexes[1]") == true)
    }

    @Test func inconsistentConfigsAreRejected() throws {
        func rejects(_ edit: (inout Qwen3VLConfiguration) -> Void, key: String) {
            var c = Qwen3VLConfiguration()
            c.vision.outHiddenSize = c.text.hiddenSize
            edit(&c)
            do { try c.validate(path: "c"); Issue.record("accepted \(key)") } catch let VLMError.invalidConfig(_, k, _) {
                #expect(k == key)
            } catch { Issue.record("\(error)") }
        }
        rejects({ $0.vision.numHeads = 7 }, key: "vision_config.num_heads")
        rejects({ $0.vision.deepstackVisualIndexes = [0, 27] }, key: "vision_config.deepstack_visual_indexes")
        rejects({ $0.vision.deepstackVisualIndexes = [3, 3] }, key: "vision_config.deepstack_visual_indexes")
        rejects({ $0.vision.numPositionEmbeddings = 0 }, key: "vision_config.num_position_embeddings")
        rejects({ $0.vision.outHiddenSize = 100 }, key: "vision_config.out_hidden_size")
        rejects({ $0.text.mropeSection = [24, 20, 21] }, key: "text_config.rope_parameters.mrope_section")
        rejects({ $0.text.attentionBias = true }, key: "text_config.attention_bias")
        rejects({ $0.text.ropeType = "yarn" }, key: "text_config.rope_parameters.rope_type")
        rejects({ $0.text.headDim = 1 << 40 }, key: "text_config.head_dim")
        rejects({ $0.videoTokenId = 1 << 30 }, key: "video_token_id")
        var p = Qwen3VLPreprocessorConfiguration()
        p.fps = 0
        #expect(throws: VLMError.self) { try p.validate(path: "p") }
        p = Qwen3VLPreprocessorConfiguration()
        p.patchSize = 14
        #expect(throws: VLMError.self) { try p.validate(path: "p", vision: Qwen3VLVisionConfiguration()) }
    }
}
