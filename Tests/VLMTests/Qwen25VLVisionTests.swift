import Foundation
import Testing
import Tensors
@testable import VLM

/// The vision half against transformers (fixtures/scripts/reference_qwen25vl.py, 5.24 run; the
/// 4.57 run checks that the released tower gives the same merger output to 1e-5).
@Suite struct Qwen25VLVisionTests {
    static let inputs = Qwen25Fixtures.v5.inputs.keys.sorted()

    @Test(arguments: inputs)
    func pixelsMatchTransformers(name: String) throws {
        let input = Qwen25Fixtures.v5.inputs[name]!
        let processor = Qwen2VLProcessor(config: try Qwen25VLModelFiles(directory: VisionFixtures.model("tiny-qwen25vl-a")).preprocessor)
        let frames = VisionFixtures.frames(input)
        let (pixels, grid) = name == "image" ? try processor.patches(image: frames[0]) : try processor.patches(frames: frames)
        #expect([grid.t, grid.h, grid.w] == input.grid)
        #expect(pixels.shape == input.pixelsShape)
        let reference = try Qwen25Fixtures.values("pixels_\(name)")
        let maxDiff = zip(pixels.values, reference).map { abs($0 - $1) }.max()!
        #expect(maxDiff <= 1e-6, "\(name): max |Δ| \(maxDiff)")
    }

    /// The window permutation equals transformers' get_window_index for windows that do and do
    /// not divide the merged grid (2 and 3 cells).
    @Test(arguments: Qwen25Fixtures.models)
    func windowIndexMatchesTransformers(model: String) throws {
        let files = try Qwen25VLModelFiles(directory: VisionFixtures.model(model))
        for name in Self.inputs {
            let g = Qwen25Fixtures.v5.inputs[name]!.grid
            let (index, cu) = try Qwen25VLVision.windowIndex(grid: VisionGrid(t: g[0], h: g[1], w: g[2]),
                                                             mergedWindow: files.config.vision.mergedWindow, merge: 2)
            #expect(index == Qwen25Fixtures.v5.models[model]!.outputs[name]!.windowIndex, "\(model) \(name)")
            #expect(cu.first == 0 && cu.last == g[0] * g[1] * g[2] && zip(cu, cu.dropFirst()).allSatisfy { $0 < $1 })
        }
        // grid (1, 10, 8) with windows of 2 cells: merged 5×4 → 3×2 windows, the last row half empty.
        let (_, cu) = try Qwen25VLVision.windowIndex(grid: VisionGrid(t: 1, h: 10, w: 8), mergedWindow: 2, merge: 2)
        #expect(cu == [0, 16, 32, 48, 64, 72, 80])
        #expect(throws: VLMError.self) { try Qwen25VLVision.windowIndex(grid: VisionGrid(t: 1, h: 3, w: 4), mergedWindow: 2, merge: 2) }
    }

    static let cases: [(String, String)] = ["tiny-qwen25vl-a", "tiny-qwen25vl-b", "tiny-qwen25vl-a-v4"].flatMap { m in inputs.map { (m, $0) } }

    func run(_ model: String, _ input: String, dtype: ComputeDType? = nil) throws -> (hidden: Tensor, merged: Tensor) {
        let files = try Qwen25VLModelFiles(directory: VisionFixtures.model(model))
        let vision = try Qwen25VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: files.directory), dtype: dtype)
        let (pixels, grid) = try Qwen25Fixtures.pixels(input)
        return try vision.forward(pixels: pixels, grid: grid)
    }

    /// f32 end to end: max |Δ| ≤ 1e-4 · max |ref| for the last block's output and the merger's.
    @Test(arguments: cases)
    func f32MatchesTransformers(model: String, input: String) throws {
        let refModel = model.replacingOccurrences(of: "-v4", with: "")
        let out = try run(model, input)
        let shapes = Qwen25Fixtures.v5.models[refModel]!.outputs[input]!
        #expect(out.hidden.shape == shapes.hidden && out.merged.shape == shapes.merged)
        let hidden = try Qwen25Fixtures.values("\(refModel)_\(input)_hidden")
        let merged = try Qwen25Fixtures.values("\(refModel)_\(input)_merged")
        #expect(relativeError(out.hidden.values, hidden) <= 1e-4, "\(model) \(input) hidden")
        #expect(relativeError(out.merged.values, merged) <= 1e-4, "\(model) \(input) merged")
    }

    /// bf16: the error bf16 itself introduces in transformers (its bf16 output against its f32
    /// output), doubled, bounds reelql's bf16 output against transformers' bf16 output (as
    /// VisionTowerTests.bf16WithinBF16sOwnError for Qwen2-VL).
    @Test(arguments: Qwen25Fixtures.models)
    func bf16WithinBF16sOwnError(model: String) throws {
        for input in Self.inputs {
            let out = try run(model, input, dtype: .bf16)
            #expect(out.merged.shape == Qwen25Fixtures.v5.models[model]!.outputs[input]!.mergedBf16)
            let f32 = try Qwen25Fixtures.values("\(model)_\(input)_merged")
            let bf16 = try Qwen25Fixtures.values("\(model)_\(input)_merged_bf16")
            let intrinsic = relativeError(bf16, f32)
            #expect(intrinsic > 0 && intrinsic < 0.1, "\(model) \(input): transformers bf16 vs f32 \(intrinsic)")
            let ours = relativeError(out.merged.values, bf16)
            #expect(ours <= 2 * intrinsic, "\(model) \(input): \(ours) vs bf16's own \(intrinsic)")
            #expect(relativeError(out.merged.values, f32) <= intrinsic * 1.5, "\(model) \(input): no worse than transformers bf16 against f32")
        }
    }

    @Test func rejectsInputsThatDoNotFit() throws {
        let files = try Qwen25VLModelFiles(directory: VisionFixtures.model("tiny-qwen25vl-a"))
        let vision = try Qwen25VLVision(config: files.config.vision, checkpoint: try Checkpoint(directory: files.directory))
        let (pixels, _) = try Qwen25Fixtures.pixels("video_nonsquare")
        #expect(throws: VLMError.self) { try vision.forward(pixels: pixels, grid: VisionGrid(t: 2, h: 4, w: 4)) }
        #expect(throws: VLMError.self) { try vision.forward(pixels: pixels.reshaped([24, 2352]), grid: VisionGrid(t: 1, h: 4, w: 6)) }
        #expect(throws: VLMError.self) { try vision.forward(pixels: pixels, grid: VisionGrid(t: 4, h: 3, w: 4)) }
        #expect(throws: VLMError.self) { try vision.forward(pixels: pixels, grid: VisionGrid(t: 0, h: 4, w: 6)) }
    }
}

@Suite struct Qwen25VLStrictLoadingTests {
    /// A copy of a checkpoint's vision tensors with `edit` applied.
    func brokenCheckpoint(_ model: String = "tiny-qwen25vl-a", _ edit: (inout [(String, DType, [Int], Data)]) -> Void) throws
        -> (String, Qwen25VLVisionConfiguration) {
        let files = try Qwen25VLModelFiles(directory: VisionFixtures.model(model))
        let ck = try Checkpoint(directory: files.directory)
        var tensors = try ck.names.filter { $0.hasPrefix("visual.") || $0.hasPrefix("model.visual.") }.map { name -> (String, DType, [Int], Data) in
            let t = try ck.tensor(name)
            return (name, t.dtype, t.shape, Data(bytes: t.pointer, count: t.byteCount))
        }
        edit(&tensors)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("broken25-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeSafetensors(tensors, to: dir + "/model.safetensors")
        return (dir, files.config.vision)
    }

    func loadError(_ model: String = "tiny-qwen25vl-a", _ edit: (inout [(String, DType, [Int], Data)]) -> Void) throws -> VLMError? {
        let (dir, config) = try brokenCheckpoint(model, edit)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do { _ = try Qwen25VLVision(config: config, checkpoint: try Checkpoint(directory: dir)); return nil }
        catch let e as VLMError { return e }
    }

    @Test func completeCheckpointsLoadUnderBothNames() throws {
        #expect(try loadError("tiny-qwen25vl-a") { _ in } == nil)  // visual.*
        #expect(try loadError("tiny-qwen25vl-b") { _ in } == nil)  // model.visual.*
    }

    @Test func missingTensor() throws {
        let e = try loadError { $0.removeAll { $0.0 == "visual.blocks.3.mlp.up_proj.bias" } }
        guard case .missingWeight(let name, _) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(name == "visual.blocks.3.mlp.up_proj.bias")
        let b = try loadError("tiny-qwen25vl-b") { $0.removeAll { $0.0 == "model.visual.merger.ln_q.weight" } }
        guard case .missingWeight(let nameB, _) = b else { Issue.record("got \(String(describing: b))"); return }
        #expect(nameB == "model.visual.merger.ln_q.weight")
    }

    @Test func wrongShape() throws {
        let e = try loadError { t in
            let i = t.firstIndex { $0.0 == "visual.blocks.0.mlp.gate_proj.weight" }!
            t[i] = (t[i].0, .f32, [41, 32], Data(count: 41 * 32 * 4))
        }
        #expect(e == .weightShape(name: "visual.blocks.0.mlp.gate_proj.weight", expected: [40, 32], got: [41, 32]))
    }

    @Test func unknownVisionTensors() throws {
        // A Qwen2-VL-style LayerNorm bias and a fifth block are not part of this tower.
        let e = try loadError { $0 += [("visual.blocks.0.norm1.bias", .f32, [32], Data(count: 128)),
                                        ("visual.blocks.4.norm1.weight", .f32, [32], Data(count: 128))] }
        guard case .unexpectedWeights(let names, _) = e else { Issue.record("got \(String(describing: e))"); return }
        #expect(Set(names) == ["visual.blocks.0.norm1.bias", "visual.blocks.4.norm1.weight"])
    }

    @Test func depthBeyondTheCheckpoint() throws {
        let (dir, config) = try brokenCheckpoint { _ in }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var deeper = config
        deeper.depth = 5
        #expect { try Qwen25VLVision(config: deeper, checkpoint: try Checkpoint(directory: dir)) } throws: { e in
            guard case .invalidConfig(_, "vision_config.depth", _) = e as? VLMError else { return false }
            return true
        }
    }

    @Test func bf16CheckpointComputesInBF16() throws {
        let (dir, config) = try brokenCheckpoint { t in
            t = t.map { name, dtype, shape, data in
                let floats = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                return (name, .bf16, shape, Convert.bf16(floats).withUnsafeBytes { Data($0) })
            }
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Qwen25VLVision(config: config, checkpoint: try Checkpoint(directory: dir)).dtype == .bf16)
        #expect(try Qwen25VLVision(config: config, checkpoint: try Checkpoint(directory: dir), dtype: .f32).dtype == .f32)
    }
}
