import Foundation
import Testing
import Tensors
@testable import VLM

/// The reference outputs of fixtures/scripts/reference_qwen25vl.py: transformers5.json (5.24:
/// inputs, vision outputs, cases and 5.24's positions) and transformers4.json (the release: 4.49's
/// get_rope_index positions, logits and greedy tokens of the 4.57 model run with them; 4.57's own
/// positions beside them).
enum Qwen25Fixtures {
    static let directory = VisionFixtures.fixtures.appendingPathComponent("reference/qwen25vl")
    static let models = ["tiny-qwen25vl-a", "tiny-qwen25vl-b"]

    struct V5: Decodable {
        struct Output: Decodable { var hidden: [Int], merged: [Int], mergedBf16: [Int], windowIndex: [Int] }
        struct Case: Decodable {
            var ids: [Int]
            var kind: String
            var input: String?
            var grid: [Int]?
            var secondPerGridT: Double?
            var fps: Double?
            var chat: String?
            var positionIdsTransformers5: [[Int]]?
            var ropeDeltaTransformers5: Int?
        }
        struct Model: Decodable { var outputs: [String: Output], cases: [String: Case] }
        var inputs: [String: VisionFixtures.Index.Input]
        var models: [String: Model]
    }
    struct V4: Decodable {
        struct Case: Decodable {
            var positionIds: [[Int]]
            var ropeDelta: Int
            var logitsShape: [Int]
            var greedy: [Int]
            var positionIdsTransformers4: [[Int]]
            var ropeDeltaTransformers4: Int
            var agreesWithTransformers4: Bool
            var agreesWithTransformers5: Bool?
        }
        struct Model: Decodable { var cases: [String: Case] }
        var versions: [String: String]
        var models: [String: Model]
    }

    static func decode<T: Decodable>(_ type: T.Type, _ file: String) -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try! d.decode(type, from: Data(contentsOf: directory.appendingPathComponent(file)))
    }
    static let v5 = decode(V5.self, "transformers5.json")
    static let v4 = decode(V4.self, "transformers4.json")

    static func values(_ name: String) throws -> [Float] {
        try Data(contentsOf: directory.appendingPathComponent("\(name).f32")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    static func pixels(_ input: String) throws -> (Tensor, VisionGrid) {
        let i = v5.inputs[input]!
        let p = try values("pixels_\(input)")
        return (try Tensor(shape: i.pixelsShape, values: p), VisionGrid(t: i.grid[0], h: i.grid[1], w: i.grid[2]))
    }
}

@Suite struct Qwen25VLConfigurationTests {
    @Test func bothLayoutsDecodeAlike() throws {
        let v5 = try Qwen25VLModelFiles(directory: VisionFixtures.model("tiny-qwen25vl-a"))
        let v4 = try Qwen25VLModelFiles(directory: VisionFixtures.model("tiny-qwen25vl-a-v4"))
        #expect(v5.config.vision == v4.config.vision)
        var t5 = v5.config.text, t4 = v4.config.text
        t5.tieWordEmbeddings = nil; t4.tieWordEmbeddings = nil // 4.x repeats it at the top level
        #expect(t5 == t4)
        #expect(v5.config.tieWordEmbeddings == false && v4.config.tieWordEmbeddings == false)
        let v = v5.config.vision
        #expect(v.depth == 4 && v.hiddenSize == 32 && v.numHeads == 2 && v.intermediateSize == 40 && v.outHiddenSize == 24)
        #expect(v.fullattBlockIndexes == [1, 3] && v.windowSize == 56 && v.mergedWindow == 2 && v.tokensPerSecond == 3)
        #expect(v.hiddenAct == "silu" && v.inChannels == 3 && v.ropeTheta == 10000 && v.patchDim == 1176)
        #expect(v5.config.text.vocabSize == 811 && v5.config.text.hiddenSize == 24 && v5.config.text.mropeSection == [2, 2, 2])
        #expect(v5.config.videoTokenId == 810 && v5.config.imageTokenId == 809 && v5.config.visionStartTokenId == 806)
        #expect(v5.preprocessor.minPixels == 784 && v5.preprocessor.maxPixels == 28 * 28 * 256)
        let b = try Qwen25VLModelFiles(directory: VisionFixtures.model("tiny-qwen25vl-b"))
        #expect(b.config.vision.fullattBlockIndexes == [0] && b.config.vision.mergedWindow == 3 && b.config.vision.tokensPerSecond == 5)
        #expect(b.config.text.mropeSection == [2, 1, 2] && b.config.text.numKeyValueHeads == 2)
    }

    @Test func absentKeysTakeTransformersDefaults() throws {
        let c = try Qwen2VLModelFiles.decode(Qwen25VLConfiguration.self, from: Data(#"{"model_type":"qwen2_5_vl"}"#.utf8), path: "x")
        #expect(c.vision == Qwen25VLVisionConfiguration())
        let v = c.vision
        #expect(v.depth == 32 && v.hiddenSize == 3584 && v.intermediateSize == 3420 && v.numHeads == 16 && v.hiddenAct == "silu")
        #expect(v.tokensPerSecond == 4 && v.windowSize == 112 && v.outHiddenSize == 3584 && v.fullattBlockIndexes == [7, 15, 23, 31])
        #expect(c.text.mropeSection == [16, 24, 24] && c.imageTokenId == 151655 && c.videoTokenId == 151656 && !c.tieWordEmbeddings)
        // The hub's Qwen2.5-VL-7B vision_config (4.x layout).
        let hub = #"{"depth":32,"hidden_act":"silu","hidden_size":1280,"intermediate_size":3420,"num_heads":16,"in_chans":3,"#
            + #""out_hidden_size":3584,"patch_size":14,"spatial_merge_size":2,"spatial_patch_size":14,"window_size":112,"#
            + #""fullatt_block_indexes":[7,15,23,31],"tokens_per_second":2,"temporal_patch_size":2}"#
        let h = try Qwen2VLModelFiles.decode(Qwen25VLVisionConfiguration.self, from: Data(hub.utf8), path: "x")
        try h.validate(path: "x")
        #expect(h.hiddenSize == 1280 && h.headDim == 80 && h.tokensPerSecond == 2 && h.mergedWindow == 4)
    }

    @Test func wrongTypesNameTheKey() throws {
        func error(_ json: String) -> VLMError? {
            do { _ = try Qwen2VLModelFiles.decode(Qwen25VLConfiguration.self, from: Data(json.utf8), path: "config.json"); return nil }
            catch let e as VLMError { return e } catch { return nil }
        }
        #expect(error(#"{"vision_config":{"window_size":"big"}}"#) == .invalidConfig(path: "config.json", key: "vision_config.window_size", reason: "expected an integer"))
        #expect(error(#"{"vision_config":{"fullatt_block_indexes":[1,2.5]}}"#)?.errorDescription?.contains("vision_config.fullatt_block_indexes[1]") == true)
        #expect(error(#"{"vision_config":{"tokens_per_second":1.5}}"#)?.errorDescription?.contains("vision_config.tokens_per_second") == true)
    }

    @Test func everyNumberIsChecked() throws {
        func rejects(_ key: String, sourceLocation: SourceLocation = #_sourceLocation, _ edit: (inout Qwen25VLVisionConfiguration) -> Void) {
            var v = Qwen25VLVisionConfiguration()
            edit(&v)
            #expect(sourceLocation: sourceLocation) { try v.validate(path: "c") } throws: { e in
                guard case .invalidConfig(_, let k, _) = e as? VLMError else { return false }
                return k == "vision_config.\(key)"
            }
        }
        rejects("num_heads") { $0.numHeads = 6 } // 3584 is not a multiple of 6
        rejects("num_heads") { $0.hiddenSize = 48; $0.numHeads = 8 } // head dim 6: not a multiple of 4
        rejects("depth") { $0.depth = 0 }
        rejects("depth") { $0.depth = 1 << 40 }
        rejects("intermediate_size") { $0.intermediateSize = 0 }
        rejects("out_hidden_size") { $0.outHiddenSize = -1 }
        rejects("window_size") { $0.windowSize = 0 }
        rejects("window_size") { $0.windowSize = 27 } // below one 28-px merged cell
        rejects("tokens_per_second") { $0.tokensPerSecond = -2 }
        rejects("fullatt_block_indexes") { $0.fullattBlockIndexes = [7, 32] }
        rejects("fullatt_block_indexes") { $0.fullattBlockIndexes = [-1] }
        rejects("rope_theta") { $0.ropeTheta = .infinity }
        rejects("hidden_act") { $0.hiddenAct = "relu" }
        rejects("patch_size") { $0.patchSize = 0 }
        rejects("spatial_merge_size") { $0.spatialMergeSize = 99 }
        var whole = Qwen2VLTextConfiguration()
        whole.hiddenSize = 24; whole.numAttentionHeads = 2; whole.numKeyValueHeads = 1; whole.mropeSection = [2, 2, 2]
        var c = try Qwen2VLModelFiles.decode(Qwen25VLConfiguration.self, from: Data("{}".utf8), path: "x")
        c.text = whole
        #expect(throws: VLMError.invalidConfig(path: "c", key: "vision_config.out_hidden_size",
                                               reason: "3584 differs from the language model's hidden_size 24")) { try c.validate(path: "c") }
        c.vision.outHiddenSize = 24
        try c.validate(path: "c")
        c.videoTokenId = 1 << 30
        #expect(throws: VLMError.self) { try c.validate(path: "c") }
    }

    @Test func otherModelTypesAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("q25-type-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(#"{"model_type":"qwen2_vl"}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect { try Qwen25VLModelFiles(directory: dir) } throws: { e in
            guard case .unsupportedModel(_, "qwen2_vl", let supported) = e as? VLMError else { return false }
            return supported == ["qwen2_5_vl"]
        }
    }
}
