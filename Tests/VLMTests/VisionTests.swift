import Foundation
import Testing
import Tensors
@testable import VLM

@Suite struct ConfigurationTests {
    @Test func bothLayoutsDecodeAlike() throws {
        let v5 = try Qwen2VLModelFiles(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let v4 = try Qwen2VLModelFiles(directory: VisionFixtures.model("tiny-qwen2vl-a-v4"))
        #expect(v5.config.vision == v4.config.vision)
        var t5 = v5.config.text, t4 = v4.config.text
        t5.tieWordEmbeddings = nil; t4.tieWordEmbeddings = nil // 4.x repeats it at the top level
        #expect(t5 == t4)
        #expect(v5.config.tieWordEmbeddings == v4.config.tieWordEmbeddings)
        #expect(v5.config.vision.depth == 2 && v5.config.vision.embedDim == 32 && v5.config.vision.numHeads == 2)
        #expect(v5.config.vision.inChannels == 3 && v5.config.vision.hiddenSize == 24 && v5.config.vision.mlpRatio == 2)
        #expect(v5.config.text.hiddenSize == 24 && v5.config.text.numKeyValueHeads == 1)
        #expect(v5.config.text.mropeSection == [2, 2, 2] && v5.config.text.ropeTheta == 10000)
        #expect(v5.config.videoTokenId == 393 && v5.config.visionStartTokenId == 390)
        #expect(v5.preprocessor.minPixels == 784 && v5.preprocessor.maxPixels == 50176)
        #expect(v5.generation.eosTokenId == TokenIDs([399]))
    }

    @Test func absentKeysTakeTransformersDefaults() throws {
        let c = try Qwen2VLModelFiles.decode(Qwen2VLConfiguration.self, from: Data(#"{"model_type":"qwen2_vl"}"#.utf8), path: "x")
        #expect(c.vision == Qwen2VLVisionConfiguration())
        #expect(c.vision.depth == 32 && c.vision.embedDim == 1280 && c.vision.hiddenAct == "quick_gelu")
        #expect(c.text.mropeSection == [16, 24, 24] && c.imageTokenId == 151655)
        let g = try Qwen2VLModelFiles.decode(GenerationConfiguration.self, from: Data(#"{"eos_token_id":[1,2]}"#.utf8), path: "g")
        #expect(g.eosTokenId == TokenIDs([1, 2]))
    }

    @Test func wrongTypesNameTheKey() throws {
        func error(_ json: String) -> VLMError? {
            do { _ = try Qwen2VLModelFiles.decode(Qwen2VLConfiguration.self, from: Data(json.utf8), path: "config.json"); return nil }
            catch let e as VLMError { return e } catch { return nil }
        }
        #expect(error(#"{"vision_config":{"depth":"two"}}"#) == .invalidConfig(path: "config.json", key: "vision_config.depth", reason: "expected an integer"))
        #expect(error(#"{"text_config":{"rope_parameters":{"mrope_section":[1,"a",2]}}}"#)?.errorDescription?.contains("text_config.rope_parameters.mrope_section[1]") == true)
        #expect(error(#"{"hidden_size":1.5}"#)?.errorDescription?.contains("hidden_size") == true)
    }

    @Test func inconsistentConfigsAreRejected() throws {
        var v = Qwen2VLVisionConfiguration()
        v.numHeads = 7
        #expect(throws: VLMError.self) { try v.validate(path: "c") }
        var t = Qwen2VLTextConfiguration()
        t.mropeSection = [1, 2, 3]
        #expect(throws: VLMError.self) { try t.validate(path: "c") }
    }
}

@Suite struct ProcessorTests {
    @Test(arguments: VisionFixtures.index.inputs.keys.sorted())
    func pixelsMatchTransformers(name: String) throws {
        let input = VisionFixtures.index.inputs[name]!
        let processor = Qwen2VLProcessor(config: try Qwen2VLModelFiles(directory: VisionFixtures.model("tiny-qwen2vl-a")).preprocessor)
        let frames = VisionFixtures.frames(input)
        let (pixels, grid) = name == "image" ? try processor.patches(image: frames[0]) : try processor.patches(frames: frames)
        #expect([grid.t, grid.h, grid.w] == input.grid)
        #expect(pixels.shape == input.pixelsShape)
        let reference = try VisionFixtures.values("pixels_\(name)")
        let maxDiff = zip(pixels.values, reference).map { abs($0 - $1) }.max()!
        #expect(maxDiff <= 1e-6, "\(name): max |Δ| \(maxDiff)")
    }

    @Test func rejectsUnsizedFrames() {
        let p = Qwen2VLProcessor()
        #expect(throws: VLMError.self) { try p.patches(frames: [RGBImage(width: 30, height: 28, pixels: .init(repeating: 0, count: 30 * 28 * 3))]) }
        #expect(throws: VLMError.self) { try p.patches(frames: []) }
    }
}

@Suite struct VisionTowerTests {
    static let cases: [(String, String)] = ["tiny-qwen2vl-a", "tiny-qwen2vl-b", "tiny-qwen2vl-a-v4"].flatMap { m in
        VisionFixtures.index.inputs.keys.sorted().map { (m, $0) }
    }

    func run(_ model: String, _ input: String, dtype: ComputeDType? = nil) throws -> (hidden: Tensor, merged: Tensor) {
        let files = try Qwen2VLModelFiles(directory: VisionFixtures.model(model))
        let vision = try Qwen2VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: files.directory), dtype: dtype)
        let pixels = try VisionFixtures.values("pixels_\(input)")
        let g = VisionFixtures.index.inputs[input]!.grid
        return try vision.forward(pixels: Tensor(shape: [pixels.count / 1176, 1176], values: pixels), grid: VisionGrid(t: g[0], h: g[1], w: g[2]))
    }

    /// f32 end to end: max |Δ| ≤ 1e-4 · max |ref| for the tower's last hidden state and the merger.
    @Test(arguments: cases)
    func f32MatchesTransformers(model: String, input: String) throws {
        let refModel = model.replacingOccurrences(of: "-v4", with: "")
        let out = try run(model, input)
        let hidden = try VisionFixtures.values("\(refModel)_\(input)_hidden")
        let merged = try VisionFixtures.values("\(refModel)_\(input)_merged")
        #expect(out.hidden.count == hidden.count && out.merged.count == merged.count)
        #expect(relativeError(out.hidden.values, hidden) <= 1e-4, "\(model) \(input) hidden")
        #expect(relativeError(out.merged.values, merged) <= 1e-4, "\(model) \(input) merged")
    }

    /// bf16: transformers runs every tensor in bf16; reelql rounds weights and the inputs of each
    /// matrix product to bf16 but keeps the residual stream and attention in f32. The tolerance is
    /// therefore the error bf16 itself introduces in transformers (its bf16 output against its f32
    /// output), doubled: reelql's bf16 output may be no further from transformers' bf16 output than
    /// twice that.
    @Test(arguments: ["tiny-qwen2vl-a", "tiny-qwen2vl-b"])
    func bf16WithinBF16sOwnError(model: String) throws {
        for input in VisionFixtures.index.inputs.keys.sorted() {
            let out = try run(model, input, dtype: .bf16)
            let f32 = try VisionFixtures.values("\(model)_\(input)_merged")
            let bf16 = try VisionFixtures.values("\(model)_\(input)_merged_bf16")
            let intrinsic = relativeError(bf16, f32)
            #expect(intrinsic > 0 && intrinsic < 0.1, "\(model) \(input): transformers bf16 vs f32 \(intrinsic)")
            let ours = relativeError(out.merged.values, bf16)
            #expect(ours <= 2 * intrinsic, "\(model) \(input): \(ours) vs bf16's own \(intrinsic)")
            #expect(relativeError(out.merged.values, f32) <= intrinsic * 1.5, "\(model) \(input): no worse than transformers bf16 against f32")
        }
    }
}

@Suite struct StrictLoadingTests {
    /// A copy of tiny-qwen2vl-a's vision tensors with `edit` applied.
    func brokenCheckpoint(_ edit: (inout [(String, DType, [Int], Data)]) -> Void) throws -> (String, Qwen2VLVisionConfiguration) {
        let files = try Qwen2VLModelFiles(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let ck = try Checkpoint(directory: files.directory)
        var tensors = try ck.names.filter { $0.hasPrefix("visual.") }.map { name -> (String, DType, [Int], Data) in
            let t = try ck.tensor(name)
            return (name, t.dtype, t.shape, Data(bytes: t.pointer, count: t.byteCount))
        }
        edit(&tensors)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("broken-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeSafetensors(tensors, to: dir + "/model.safetensors")
        return (dir, files.config.vision)
    }

    func loadError(_ edit: (inout [(String, DType, [Int], Data)]) -> Void) throws -> VLMError? {
        let (dir, config) = try brokenCheckpoint(edit)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do { _ = try Qwen2VLVision(config: config, checkpoint: try Checkpoint(directory: dir)); return nil }
        catch let e as VLMError { return e }
    }

    @Test func missingTensor() throws {
        let e = try loadError { $0.removeAll { $0.0 == "visual.blocks.1.mlp.fc2.bias" } }
        #expect(e == .missingWeight(name: "visual.blocks.1.mlp.fc2.bias", checkpoint: e.map { if case .missingWeight(_, let c) = $0 { return c }; return "" } ?? ""))
    }

    @Test func wrongShape() throws {
        let e = try loadError { t in
            let i = t.firstIndex { $0.0 == "visual.merger.mlp.2.bias" }!
            t[i] = (t[i].0, .f32, [20], Data(count: 80))
        }
        #expect(e == .weightShape(name: "visual.merger.mlp.2.bias", expected: [24], got: [20]))
    }

    @Test func unknownVisionTensor() throws {
        let e = try loadError { $0.append(("visual.blocks.2.norm1.weight", .f32, [32], Data(count: 128))) }
        guard case .unexpectedWeights(let names, _) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(names == ["visual.blocks.2.norm1.weight"])
    }

    @Test func bf16CheckpointComputesInBF16() throws {
        let (dir, config) = try brokenCheckpoint { t in
            t = t.map { name, dtype, shape, data in
                let floats = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                return (name, .bf16, shape, Convert.bf16(floats).withUnsafeBytes { Data($0) })
            }
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Qwen2VLVision(config: config, checkpoint: try Checkpoint(directory: dir)).dtype == .bf16)
        #expect(try Qwen2VLVision(config: config, checkpoint: try Checkpoint(directory: dir), dtype: .f32).dtype == .f32)
    }
}
