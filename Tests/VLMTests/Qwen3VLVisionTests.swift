import Foundation
import Testing
import Tensors
@testable import VLM

@Suite struct Qwen3VLProcessorTests {
    /// Pixels and grids as Qwen3VLVideoProcessor / Qwen2VLImageProcessor (Qwen3-VL settings) give them.
    @Test(arguments: ["video_nonsquare", "video_odd_frames", "image"])
    func pixelsMatchTransformers(name: String) throws {
        let input = Qwen3VLFixtures.index.inputs[name]!
        let processor = Qwen3VLProcessor(files: try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-a")))
        let frames = Qwen3VLFixtures.frames(name)
        let (pixels, grid) = name == "image" ? try processor.patches(image: frames[0]) : try processor.patches(frames: frames)
        #expect([grid.t, grid.h, grid.w] == input.grid)
        #expect(pixels.shape == input.pixelsShape)
        let reference = try Qwen3VLFixtures.values("pixels_\(name)")
        let maxDiff = zip(pixels.values, reference).map { abs($0 - $1) }.max()!
        #expect(maxDiff <= 1e-6, "\(name): max |Δ| \(maxDiff)")
    }

    /// Frame indices as Qwen3VLVideoProcessor.sample_frames picks them (fps 2, 4…768 frames).
    @Test func framesSampleAsTransformers() throws {
        struct Case: Decodable { var totalFrames: Int; var videoFps: Double; var indices: [Int] }
        struct File: Decodable { var sampling: [String: [Case]] }
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        let file = try d.decode(File.self, from: Data(contentsOf: Qwen3VLFixtures.dir.appendingPathComponent("qwen3vl.json")))
        let processor = Qwen3VLProcessor(files: try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-a")))
        let cases = try #require(file.sampling["v4"])
        #expect(cases.count == 8)
        for c in cases {
            #expect(try processor.frameIndices(totalFrames: c.totalFrames, videoFPS: c.videoFps) == c.indices, "\(c.totalFrames) frames at \(c.videoFps)")
        }
        #expect(throws: VLMError.self) { try processor.frameIndices(totalFrames: 0, videoFPS: 25) }
        #expect(throws: VLMError.self) { try processor.frameIndices(totalFrames: 10, videoFPS: .nan) }
    }

    @Test func timestampsAverageEachTemporalPatch() throws {
        #expect(try Qwen3VLProcessor.timestamps(frameIndices: [0, 1, 2, 3], fps: 2, mergeSize: 2) == [0.25, 1.25])
        let odd = try Qwen3VLProcessor.timestamps(frameIndices: [0, 7, 14, 21, 28], fps: 24, mergeSize: 2)
        #expect(odd.count == 3 && abs(odd[2] - 28.0 / 24) < 1e-12)
        #expect(throws: VLMError.self) { try Qwen3VLProcessor.timestamps(frameIndices: [], fps: 2, mergeSize: 2) }
        #expect(throws: VLMError.self) { try Qwen3VLProcessor.timestamps(frameIndices: [1], fps: 0, mergeSize: 2) }
    }
}

@Suite struct Qwen3VLVisionTests {
    static let cases: [(String, String)] = Qwen3VLFixtures.models.flatMap { m in
        ["video_nonsquare", "video_odd_frames", "image"].map { (m, $0) }
    }

    func run(_ model: String, _ input: String, dtype: ComputeDType? = nil, checkpoint: (any WeightStore)? = nil) throws -> Qwen3VLVisionOutput {
        let files = try Qwen3VLModelFiles(directory: VisionFixtures.model(model))
        let vision = try Qwen3VLVision(config: files.config.vision, checkpoint: checkpoint ?? Checkpoint(directory: files.directory), dtype: dtype)
        let pixels = try Qwen3VLFixtures.values("pixels_\(input)")
        let g = Qwen3VLFixtures.index.inputs[input]!.grid
        return try vision.forward(pixels: Tensor(shape: [pixels.count / 1536, 1536], values: pixels), grid: VisionGrid(t: g[0], h: g[1], w: g[2]))
    }

    /// f32 end to end: max |Δ| ≤ 1e-4 · max |ref| for the merged output and every DeepStack
    /// feature (transformers 4.57; 5.24 agrees with it to 4e-7).
    @Test(arguments: cases)
    func f32MatchesTransformers(model: String, input: String) throws {
        let out = try run(model, input)
        let ref = Qwen3VLFixtures.index.models[model]!.outputs[input]!
        let merged = try Qwen3VLFixtures.values("\(model)_\(input)_merged_v4")
        #expect(out.merged.shape == ref.mergedV4)
        #expect(relativeError(out.merged.values, merged) <= 1e-4, "\(model) \(input) merged")
        #expect(out.deepstack.count == ref.deepstackV4.count)
        for (k, feature) in out.deepstack.enumerated() where k < ref.deepstackV4.count {
            #expect(feature.shape == ref.deepstackV4[k])
            let expected = try Qwen3VLFixtures.values("\(model)_\(input)_deepstack\(k)_v4")
            #expect(relativeError(feature.values, expected) <= 1e-4, "\(model) \(input) deepstack \(k)")
        }
    }

    /// 4.57 and 5.24 compute the same tower; the committed outputs of both agree.
    @Test func releasesAgreeOnTheTower() throws {
        for (model, input) in Self.cases {
            let ref = Qwen3VLFixtures.index.models[model]!.outputs[input]!
            for name in ["merged"] + ref.deepstackV4.indices.map({ "deepstack\($0)" }) {
                let v4 = try Qwen3VLFixtures.values("\(model)_\(input)_\(name)_v4"), v5 = try Qwen3VLFixtures.values("\(model)_\(input)_\(name)_v5")
                #expect(relativeError(v5, v4) <= 1e-5, "\(model) \(input) \(name)")
            }
        }
    }

    /// bf16: the tolerance is the error bf16 itself introduces in transformers (its bf16 merged
    /// output against its f32 output), doubled — as VisionTests' bf16 check for Qwen2-VL.
    @Test(arguments: Qwen3VLFixtures.models)
    func bf16WithinBF16sOwnError(model: String) throws {
        for input in ["video_nonsquare", "video_odd_frames", "image"] {
            let out = try run(model, input, dtype: .bf16)
            #expect(out.merged.values.allSatisfy { $0.isFinite })
            let f32 = try Qwen3VLFixtures.values("\(model)_\(input)_merged_v4")
            let bf16 = try Qwen3VLFixtures.values("\(model)_\(input)_merged_bf16_v4")
            let intrinsic = relativeError(bf16, f32)
            #expect(intrinsic > 0 && intrinsic < 0.1, "\(model) \(input): transformers bf16 vs f32 \(intrinsic)")
            let ours = relativeError(out.merged.values, bf16)
            #expect(ours <= 2 * intrinsic, "\(model) \(input): \(ours) vs bf16's own \(intrinsic)")
        }
    }

    func tensors(_ model: String) throws -> [String: WeightTensor] {
        let ck = try Checkpoint(directory: VisionFixtures.model(model))
        return try Dictionary(uniqueKeysWithValues: ck.names.map { ($0, try ck.tensor($0)) })
    }

    func loadError(_ edit: (inout [String: WeightTensor]) -> Void) throws -> VLMError? {
        var t = try tensors("tiny-qwen3vl-a")
        edit(&t)
        let config = try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-a")).config.vision
        do { _ = try Qwen3VLVision(config: config, checkpoint: InMemoryWeights(label: "mem", tensors: t)); return nil }
        catch let e as VLMError { return e }
    }

    @Test func strictLoading() throws {
        #expect(try loadError { $0.removeValue(forKey: "model.visual.deepstack_merger_list.1.linear_fc2.bias") }
                == .missingWeight(name: "model.visual.deepstack_merger_list.1.linear_fc2.bias", checkpoint: "mem"))
        let e = try loadError { t in
            t["model.visual.pos_embed.weight"] = WeightTensor(name: "p", dtype: .f32, shape: [9, 32], data: Data(count: 9 * 32 * 4))
        }
        #expect(e == .weightShape(name: "model.visual.pos_embed.weight", expected: [16, 32], got: [9, 32]))
        let u = try loadError { t in
            t["model.visual.deepstack_merger_list.2.norm.bias"] = WeightTensor(name: "x", dtype: .f32, shape: [128], data: Data(count: 512))
        }
        guard case .unexpectedWeights(let names, _) = u else { Issue.record("got \(String(describing: u))"); return }
        #expect(names == ["model.visual.deepstack_merger_list.2.norm.bias"])
        let b = try loadError { $0.removeValue(forKey: "model.visual.patch_embed.proj.bias") }
        #expect(b == .missingWeight(name: "model.visual.patch_embed.proj.bias", checkpoint: "mem"))
    }

    /// `visual.*` names (the language-model-free layout) load the same tower.
    @Test func visualPrefixLoadsAlike() throws {
        var renamed: [String: WeightTensor] = [:]
        for (k, v) in try tensors("tiny-qwen3vl-b") where k.hasPrefix("model.visual.") { renamed[String(k.dropFirst("model.".count))] = v }
        let out = try run("tiny-qwen3vl-b", "video_nonsquare", checkpoint: InMemoryWeights(label: "mem", tensors: renamed))
        let merged = try Qwen3VLFixtures.values("tiny-qwen3vl-b_video_nonsquare_merged_v4")
        #expect(relativeError(out.merged.values, merged) <= 1e-4)
    }

    @Test func badInputsThrow() throws {
        let files = try Qwen3VLModelFiles(directory: VisionFixtures.model("tiny-qwen3vl-a"))
        let vision = try Qwen3VLVision(config: files.config.vision, checkpoint: Checkpoint(directory: files.directory))
        #expect(throws: VLMError.self) { try vision.forward(pixels: Tensor(zeros: [16, 1536]), grid: VisionGrid(t: 1, h: 4, w: 5)) }
        #expect(throws: VLMError.self) { try vision.forward(pixels: Tensor(zeros: [15, 1536]), grid: VisionGrid(t: 1, h: 3, w: 5)) }
        #expect(throws: VLMError.self) { try vision.forward(pixels: Tensor(zeros: [0, 1536]), grid: VisionGrid(t: 0, h: 2, w: 2)) }
    }
}
