import ArgumentParser
import Foundation
import Media
import Pipeline
import Tensors
import VLM

/// `reelql bench pipeline`: clips per hour of a nightly-like workload on a Qwen2-VL-2B-shaped
/// random bf16 checkpoint (the one `bench generate` writes, plus Qwen2's tokenizer and the
/// released preprocessor settings), in four configurations of the same run: one prompt at a
/// time, a clip's prompts decoded together, several clips' prompts decoded together
/// (continuous batching through the seam's `AnswerBatch`), and that with int8 weights.
struct PipelineBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Clips per hour of a nightly-like workload on a Qwen2-VL-2B-sized model (random bf16 weights), unbatched and batched.",
        discussion: """
        Writes the random checkpoint (as `bench generate`, with Qwen2's tokenizer.json and Qwen2-VL-2B's \
        preprocessor_config.json) and a generated 448×448, 25 fps test video of --clips × 10 s (H.264 through \
        FFmpeg's encoder) to --directory, deleted afterwards unless --keep. Each 10 s clip is sampled at 1 fps with \
        max_pixels 448·448 (10 frames, 1,280 video tokens) and gets a description and two questions, --tokens greedy \
        tokens each, in three configurations: (a) B = 1, through ClipModel.describe; (b) the clip's three prompts \
        decoded together (batch 3); (c) continuous batching across clips: the seam's AnswerBatch of capacity \
        --batch (default: reelql run's for the precision, 8 for bf16 and 9 for int8), a clip submitted (vision and prefill) whenever the batch has room (as reelql run), else one decoding step; \
        (d) as (c) with the model loaded with int8 weights (--dtype int8: tower and decoder; skipped with --no-int8). \
        Wall time splits into vision, prefill (of the shared prefix), generation (continuation prefill and \
        decoding: describe's time less vision and prefill in (a) and (b), the time in step() in (c)) and other \
        (frame decoding and preprocessing, prompts, bookkeeping). (a), (b) and (c) must generate the same \
        tokens for every prompt: a difference is an error (exit 1); (d)'s agreement with (a) is reported. Each batched \
        configuration's clips/h against (a) is also given as it would be were generation to take no time (vision, prefill \
        and other unchanged): the most decoder batching can give it. --model runs the workload on an existing \
        checkpoint instead. Run a release build.
        """)

    @Option(parsing: .unconditional, help: "Clips of 10 s (the test video's length).")
    var clips: Int = 6
    @Option(parsing: .unconditional, help: "New tokens per prompt (greedy).")
    var tokens: Int = 48
    @Option(parsing: .unconditional, help: "Capacity of the continuous batch in (c) and (d): sequences decoding together (default: reelql run's, 8 for bf16, 9 for int8).")
    var batch: Int?
    @Option(help: "Where to write the checkpoint and the video (default: the reelql-bench-2b folder bench generate uses, in the temporary directory).")
    var directory: String?
    @Flag(help: "Keep the checkpoint and the video (and reuse them next time).")
    var keep = false
    @OptionGroup var shape: RandomQwen2VLShape
    @Option(help: "A Qwen2 tokenizer.json for the random checkpoint (default: fixtures/tokenizers/qwen2/tokenizer.json of this checkout).")
    var tokenizer: String?
    @Option(help: "Run the workload on this checkpoint directory instead of a random one.")
    var model: String?
    @Flag(inversion: .prefixedNo, help: "Run (d), batched with int8 weights.")
    var int8 = true
    @Flag(help: "Print one JSON object.")
    var json = false

    static let clipSeconds = 10.0
    static let sampleFPS = 1.0
    static let side = 448
    static let videoFPS = 25
    static let description = "Describe what happens in this clip, naming people, animals, vehicles and actions."
    static let questions = ["Is there a person in the clip? Answer yes or no, then say what they do.", "Is there a dog?"]
    static var prompts: [String] { [description] + questions }

    func validate() throws {
        try requireOption("--clips", clips, (1...1000).contains(clips), "between 1 and 1000")
        try requireOption("--tokens", tokens, (1...4096).contains(tokens), "between 1 and 4096")
        let p = Self.prompts.count, most = GenerationParameters.batchRange.upperBound
        if let batch { try requireOption("--batch", batch, (p...most).contains(batch), "between \(p) (a clip's prompts) and \(most)") }
        if model != nil && (shape.isSet || tokenizer != nil) {
            throw ValidationError("--layers, --depth and --tokenizer shape the random checkpoint; --model runs an existing one")
        }
    }

    /// One configuration's run.
    struct Figures: Encodable {
        var name: String
        var batch: Int
        var clips: Int
        var wallSeconds = 0.0
        var visionSeconds = 0.0
        var prefillSeconds = 0.0
        var generationSeconds = 0.0
        /// Frame decoding and preprocessing (part of `otherSeconds`).
        var framesSeconds = 0.0
        var otherSeconds = 0.0
        var generatedTokens = 0
        var clipsPerHour = 0.0
        var generationTokensPerSecond = 0.0
        var clipsPerHourVsA = 1.0
        /// clips/h against (a)'s were generation to take no time at all: the most batching the
        /// decoder could give this configuration, its vision, prefill and other times unchanged.
        var withoutGenerationVsA = 1.0
        var peakResidentBytes = 0.0
        /// `AnswerBatch.peakCacheBytes` (continuous batching only).
        var maxCacheBytes: Int?
        /// Decoding steps (continuous batching only).
        var steps: Int?
        /// tokens[clip][prompt]
        var tokens: [[[Int]]] = []

        enum CodingKeys: String, CodingKey {
            case name, batch, clips, wallSeconds, visionSeconds, prefillSeconds, generationSeconds, framesSeconds, otherSeconds
            case generatedTokens, clipsPerHour, generationTokensPerSecond, clipsPerHourVsA, withoutGenerationVsA, peakResidentBytes, maxCacheBytes, steps
        }

        mutating func finish(wall: Double, answers: [[Answer]]) {
            wallSeconds = wall
            tokens = answers.map { $0.map(\.tokens) }
            generatedTokens = tokens.joined().reduce(0) { $0 + $1.count }
            otherSeconds = max(0, wall - visionSeconds - prefillSeconds - generationSeconds)
            clipsPerHour = Double(clips) / wall * 3600
            generationTokensPerSecond = generationSeconds > 0 ? Double(generatedTokens) / generationSeconds : 0
            peakResidentBytes = processStatus("VmHWM")
        }
    }

    struct Output: Encodable {
        var model: String
        var checkpointBytes: Double
        var video: String
        var clips: Int
        var tokens: Int
        var grid: [Int]
        var configurations: [Figures]
        var identical: Bool
        var mismatches: [String]
        /// (d)'s prompts whose tokens equal (a)'s, of all prompts.
        var int8IdenticalPrompts: Int?
    }

    func run() throws {
        let fm = FileManager.default
        let random = model == nil
        let directory = self.directory ?? fm.temporaryDirectory
            .appendingPathComponent(random ? "reelql-bench-2b" : "reelql-bench-pipeline-\(getpid())").path
        var written: [String] = []
        let createdDirectory = !fm.fileExists(atPath: directory)
        defer {
            if !keep {
                for path in written { try? fm.removeItem(atPath: path) }
                if createdDirectory || random, (try? fm.contentsOfDirectory(atPath: directory))?.isEmpty == true { try? fm.removeItem(atPath: directory) }
            }
        }
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let checkpointDirectory: String
        if let model {
            checkpointDirectory = model
        } else {
            written += Self.checkpointFiles.map { (directory as NSString).appendingPathComponent($0) }
            try writeCheckpoint(directory)
            checkpointDirectory = directory
        }
        let video = (directory as NSString).appendingPathComponent("bench-pipeline-\(clips)x10s-\(Self.side)p\(Self.videoFPS).mp4")
        written.append(video)
        try reportingErrors { try writeVideo(video) }

        try reportingModelErrors {
            let checkpointBytes = (try? fm.contentsOfDirectory(atPath: checkpointDirectory))?.filter { $0.hasSuffix(".safetensors") }
                .reduce(0.0) { $0 + ((try? fm.attributesOfItem(atPath: (checkpointDirectory as NSString).appendingPathComponent($1))[.size] as? NSNumber)?.doubleValue ?? 0) } ?? 0
            let decoder = try reportingErrors { try VideoDecoder(path: video) }
            let ranges = try reportingErrors {
                try ClipSegmenter.segments(duration: decoder.frameIndex().span, length: Self.clipSeconds, overlap: 0)
            }
            guard ranges.count == clips else {
                throw VLMError.invalidInput("\(video): the test video holds \(ranges.count) clips of 10 s, not \(clips)")
            }
            let sampling = { (model: any VisionLanguageModel, r: ClipRange) in
                model.videoSampling(SamplingOptions(fps: Self.sampleFPS, start: r.start, end: r.end,
                                                     resize: ResizeOptions(maxPixels: Self.side * Self.side)))
            }
            // (c) and (d), continuous batching: submit a clip whenever the batch has room (as reelql run), else step.
            func continuous(_ model: any VisionLanguageModel, batch: Int, name: String) throws -> Figures {
                var f = Figures(name: name, batch: batch, clips: clips)
                f.maxCacheBytes = 0
                f.steps = 0
                resetPeakResident()
                var all = [[Answer]](repeating: [], count: clips)
                let parameters = ClipModel(model: model, parameters: GenerationParameters(maxNewTokens: tokens, batch: batch)).parameters
                let wall = try medianTime(runs: 1) {
                    let answering = model.answerBatch(capacity: batch)
                    var next = 0
                    while true {
                        if next < clips && answering.hasRoom {
                            let i = next
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            let sampled = try reportingErrors { try decoder.sample(sampling(model, ranges[i])) }
                            let input = try model.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
                            f.framesSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                            try answering.submit(Self.prompts, about: input, parameters: parameters, onToken: { _, _ in }, onPromptDone: { _ in }) {
                                all[i] = $0
                            }
                            next += 1
                            continue
                        }
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        let more = try answering.step()
                        f.steps? += 1
                        f.generationSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                        f.maxCacheBytes = answering.peakCacheBytes
                        if !more && next == clips { break }
                    }
                }
                for answers in all {
                    f.visionSeconds += answers.first?.visionSeconds ?? 0
                    f.prefillSeconds += answers.first?.prefillSeconds ?? 0
                }
                f.finish(wall: wall, answers: all)
                return f
            }
            var results: [Figures] = []
            // (a), (b), (c) with the bf16 model, which leaves memory before (d) loads its own.
            let grid = try { (loaded: any VisionLanguageModel) throws -> VisionGrid in
                let first = try reportingErrors { try decoder.sample(sampling(loaded, ranges[0])) }
                let firstInput = try loaded.videoInput(first.frames, fps: first.plan.sampleFPS)
                let grid = firstInput.grid
                let header = String(format: "model: %@ (%@), checkpoint %.2f GB; video: %d s, %d×%d at %d fps; %d clips of 10 s, each %d frames at %d×%d (1 fps) = grid %d×%d×%d, %d video tokens; 3 prompts × %d new tokens (greedy)",
                                    random ? BenchFamily.qwen2_vl.title + "-shaped" : loaded.family,
                                    random ? "random bf16, \(shape.layers ?? BenchFamily.qwen2_vl.fullLayers) layers, vision depth \(shape.depth ?? BenchFamily.qwen2_vl.fullDepth)" : checkpointDirectory,
                                    checkpointBytes / 1e9, clips * 10, Self.side, Self.side, Self.videoFPS, clips, first.frames.count,
                                    first.plan.width, first.plan.height, grid.t, grid.h, grid.w, grid.patches / 4, tokens)
                if !json { print(header) }

                // Warm-up, not counted: the first clip's prompts with one new token each, so that paging
                // the weights in and first-use costs (vision, prefill, decoding) fall on no configuration.
                let warm = try medianTime(runs: 1) {
                    _ = try ClipModel(model: loaded, parameters: GenerationParameters(maxNewTokens: 1))
                        .describe(firstInput, description: Self.description, questions: Self.questions)
                }
                if !json { print(String(format: "warm-up (clip 1, 1 token per prompt, not counted): %.1f s", warm)) }

                for (name, b) in [("(a) B = 1", 1), ("(b) batch 3 within a clip", Self.prompts.count)] {
                    let clipModel = ClipModel(model: loaded, parameters: GenerationParameters(maxNewTokens: tokens, batch: b))
                    var f = Figures(name: name, batch: b, clips: clips)
                    resetPeakResident()
                    var all: [[Answer]] = []
                    let wall = try medianTime(runs: 1) {
                        for r in ranges {
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            let sampled = try reportingErrors { try decoder.sample(sampling(loaded, r)) }
                            let input = try loaded.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
                            let t1 = DispatchTime.now().uptimeNanoseconds
                            let answers = try clipModel.describe(input, description: Self.description, questions: Self.questions)
                            let t2 = DispatchTime.now().uptimeNanoseconds
                            let vision = answers.first?.visionSeconds ?? 0, prefill = answers.first?.prefillSeconds ?? 0
                            f.framesSeconds += Double(t1 - t0) / 1e9
                            f.visionSeconds += vision
                            f.prefillSeconds += prefill
                            f.generationSeconds += max(0, Double(t2 - t1) / 1e9 - vision - prefill)
                            all.append(answers)
                        }
                    }
                    f.finish(wall: wall, answers: all)
                    results.append(f)
                    if !json { print(line(f, reference: results[0])) }
                }

                let c = batch ?? PipelineSpec.Generation.defaultBatch(dtype: .bf16)
                results.append(try continuous(loaded, batch: c, name: "(c) batch \(c) across clips"))
                if !json { print(line(results[2], reference: results[0])) }
                return grid
            }(try ModelRegistry.load(directory: checkpointDirectory))

            // (d) The same with int8 weights, loaded (quantized) now.
            var int8Figures: Figures? = nil
            if int8 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let quantized = try ModelRegistry.load(directory: checkpointDirectory, dtype: .int8)
                let load = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                let warm = try medianTime(runs: 1) {
                    _ = try ClipModel(model: quantized, parameters: GenerationParameters(maxNewTokens: 1))
                        .describe(try quantized.videoInput(try decoder.sample(sampling(quantized, ranges[0])).frames, fps: Self.sampleFPS), description: Self.description, questions: Self.questions)
                }
                if !json { print(String(format: "int8: loaded and quantized in %.1f s; warm-up (not counted) %.1f s", load, warm)) }
                let d = batch ?? PipelineSpec.Generation.defaultBatch(dtype: .int8)
                let f = try continuous(quantized, batch: d, name: "(d) batch \(d) across clips, int8")
                int8Figures = f
                results.append(f)
                if !json { print(line(f, reference: results[0])) }
            }
            for i in results.indices {
                results[i].clipsPerHourVsA = results[i].clipsPerHour / results[0].clipsPerHour
                results[i].withoutGenerationVsA = results[0].wallSeconds / max(1e-9, results[i].wallSeconds - results[i].generationSeconds)
            }

            // The same tokens for every prompt in every configuration.
            var mismatches: [String] = []
            for f in results.dropFirst() where f.name != int8Figures?.name {
                for clip in 0..<clips {
                    for prompt in Self.prompts.indices {
                        let a = results[0].tokens[clip][prompt], b = f.tokens.indices.contains(clip) && f.tokens[clip].indices.contains(prompt) ? f.tokens[clip][prompt] : []
                        guard a != b else { continue }
                        let at = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
                        mismatches.append("\(f.name), clip \(clip + 1), prompt \(prompt + 1): \(b.count) tokens differ from (a)'s \(a.count) at token \(at + 1)")
                    }
                }
            }
            // int8 is another model's arithmetic: how many prompts still give bf16's tokens.
            let int8Same = int8Figures.map { d in
                (0..<clips).reduce(0) { n, clip in n + Self.prompts.indices.filter { d.tokens[clip].indices.contains($0) && d.tokens[clip][$0] == results[0].tokens[clip][$0] }.count }
            }
            if json {
                try printJSON(Output(model: checkpointDirectory, checkpointBytes: checkpointBytes, video: video, clips: clips, tokens: tokens,
                                     grid: [grid.t, grid.h, grid.w], configurations: results, identical: mismatches.isEmpty, mismatches: mismatches,
                                     int8IdenticalPrompts: int8Same))
            } else {
                if let int8Same { print("(d) int8: \(int8Same) of \(clips * Self.prompts.count) prompts generate (a)'s bf16 tokens exactly") }
                let c = results[2], cache = Double(c.maxCacheBytes ?? 0)
                print(mismatches.isEmpty
                      ? "tokens: identical in (a), (b) and (c) (\(clips) clips × \(Self.prompts.count) prompts, \(results[0].generatedTokens) tokens)"
                      : "tokens: DIFFER in \(mismatches.count) prompts")
                // Vision and prefill run one clip at a time in every configuration: what they and
                // the rest take bounds what any decoder batching can give.
                for f in results.dropFirst() {
                    print(String(format: "%@: %.2f× (a) measured; %.2f× (a) were generation to take no time (vision %.1f + prefill %.1f + other %.1f s)",
                                 f.name, f.clipsPerHourVsA, f.withoutGenerationVsA, f.visionSeconds, f.prefillSeconds, f.otherSeconds))
                }
                print(String(format: "%@: %d decoding steps, %.2f tokens chosen per step",
                             c.name, c.steps ?? 0, Double(c.generatedTokens) / Double(max(1, c.steps ?? 0))))
                print(String(format: "%@: peak resident memory %.2f GB = %.2f× (checkpoint %.2f GB + largest KV cache %.0f MB); largest KV cache %.0f MB",
                             c.name, c.peakResidentBytes / 1e9, c.peakResidentBytes / max(1, checkpointBytes + cache), checkpointBytes / 1e9,
                             cache / 1e6, cache / 1e6))
            }
            if !mismatches.isEmpty {
                for m in mismatches.prefix(20) { printError("error[bench]: batched decoding differs from B = 1: \(m)") }
                throw ExitCode(1)
            }
        }
    }

    /// One configuration's figures as a line, with its clips/h against (a)'s.
    func line(_ f: Figures, reference a: Figures) -> String {
        func part(_ name: String, _ s: Double) -> String { String(format: "%@ %.1f s %.0f%%", name, s, 100 * s / f.wallSeconds) }
        return String(format: "%@: %.1f clips/h (%.2f× (a)); wall %.1f s = %@, %@, %@, %@ (frames %.1f s); generation %.1f tokens/s (%d tokens); peak RSS %.2f GB",
                      f.name, f.clipsPerHour, f.clipsPerHour / a.clipsPerHour, f.wallSeconds,
                      part("vision", f.visionSeconds), part("prefill", f.prefillSeconds), part("generation", f.generationSeconds),
                      part("other", f.otherSeconds), f.framesSeconds, f.generationTokensPerSecond, f.generatedTokens, f.peakResidentBytes / 1e9)
    }

    /// The random Qwen2-VL-2B checkpoint (as `bench generate` writes it) with what a full
    /// checkpoint directory needs besides: Qwen2's tokenizer and the released preprocessor settings.
    func writeCheckpoint(_ directory: String) throws {
        try Self.writeCheckpoint(directory, layers: shape.layers, depth: shape.depth, tokenizer: tokenizer, quiet: json)
    }

    /// The files `writeCheckpoint` writes.
    static let checkpointFiles = ["model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json"]

    /// Deletes what `writeCheckpoint` wrote, and the folder when that leaves it empty.
    static func removeCheckpoint(_ directory: String) {
        let fm = FileManager.default
        for f in checkpointFiles { try? fm.removeItem(atPath: (directory as NSString).appendingPathComponent(f)) }
        if (try? fm.contentsOfDirectory(atPath: directory))?.isEmpty == true { try? fm.removeItem(atPath: directory) }
    }

    static func writeCheckpoint(_ directory: String, layers: Int?, depth: Int?, tokenizer: String?, quiet: Bool) throws {
        let (checkpoint, wrote) = try BenchFamily.qwen2_vl.randomCheckpoint(directory: directory, layers: layers, depth: depth)
        if let wrote, !quiet { print(String(format: "wrote %@ in %.1f s", checkpoint, wrote)) }
        let fm = FileManager.default
        let source = try tokenizer ?? findQwen2Tokenizer()
        let target = (directory as NSString).appendingPathComponent("tokenizer.json")
        if fm.contents(atPath: target) != fm.contents(atPath: source) {
            guard let data = fm.contents(atPath: source) else { throw ValidationError("--tokenizer \(source): cannot read the file") }
            try data.write(to: URL(fileURLWithPath: target))
        }
        // Qwen/Qwen2-VL-2B-Instruct's preprocessor_config.json.
        let preprocessor: [String: Any] = [
            "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        ]
        try JSONSerialization.data(withJSONObject: preprocessor, options: [.sortedKeys, .prettyPrinted])
            .write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent("preprocessor_config.json")))
    }

    /// fixtures/tokenizers/qwen2/tokenizer.json (Qwen2's 151,643-token BPE and its special tokens),
    /// from the current directory or the executable's location upwards.
    static func findQwen2Tokenizer() throws -> String {
        let relative = "fixtures/tokenizers/qwen2/tokenizer.json"
        guard let found = findInCheckout(relative) else {
            throw ValidationError("no \(relative) found from the current directory or the executable's; pass --tokenizer PATH (a Qwen2 tokenizer.json)")
        }
        return found
    }

    /// A path of this checkout (from the current directory or the executable's location upwards).
    static func findInCheckout(_ relative: String) -> String? {
        let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent().path
        for start in [FileManager.default.currentDirectoryPath, exe] {
            var dir = URL(fileURLWithPath: start).standardizedFileURL
            while true {
                let candidate = dir.appendingPathComponent(relative).path
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        return nil
    }

    /// The test video: --clips × 10 s at 448×448 and 25 fps, a textured background panning under
    /// three moving squares (written once; reused while it is kept).
    func writeVideo(_ path: String) throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: path) { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let partial = (path as NSString).deletingPathExtension + ".partial.mp4"
        let side = Self.side, frameCount = clips * Int(Self.clipSeconds) * Self.videoFPS
        let writer = try VideoWriter(path: partial, width: side, height: side, fps: Self.videoFPS)
        // A background twice as wide as the frame: smooth gradients with a little texture.
        let wide = 2 * side
        var background = [UInt8](repeating: 0, count: wide * side * 3)
        var state: UInt32 = 2463534242
        for y in 0..<side {
            for x in 0..<wide {
                state ^= state << 13; state ^= state >> 17; state ^= state << 5
                let noise = Int(state & 15)
                let i = (y * wide + x) * 3
                background[i] = UInt8(truncatingIfNeeded: (x * 255 / wide + noise) & 0xff)
                background[i + 1] = UInt8(truncatingIfNeeded: (y * 255 / side + noise) & 0xff)
                background[i + 2] = UInt8(truncatingIfNeeded: ((x + y) * 255 / (wide + side) + 128 + noise) & 0xff)
            }
        }
        var frame = [UInt8](repeating: 0, count: side * side * 3)
        let squares = [(64, 3, [230, 40, 40] as [UInt8]), (48, 5, [40, 200, 60]), (96, 2, [250, 250, 250])].map { size, speed, rgb in
            (size: size, speed: speed, row: Array([[UInt8]](repeating: rgb, count: size).joined()))
        }
        for n in 0..<frameCount {
            let pan = (n * 2) % side
            for y in 0..<side {
                let from = (y * wide + pan) * 3
                frame.replaceSubrange((y * side * 3)..<((y + 1) * side * 3), with: background[from..<(from + side * 3)])
            }
            for (k, s) in squares.enumerated() {
                let x0 = (n * s.speed + k * 131) % (side - s.size), y0 = (n * s.speed / 2 + k * 97) % (side - s.size)
                for y in y0..<(y0 + s.size) {
                    let from = (y * side + x0) * 3
                    frame.replaceSubrange(from..<(from + s.size * 3), with: s.row)
                }
            }
            try writer.append(rgb: frame)
        }
        try writer.finish()
        try? fm.removeItem(atPath: path)
        try fm.moveItem(atPath: partial, toPath: path)
        if !json {
            print(String(format: "wrote %@ (%d frames, %@) in %.1f s", path, frameCount, writer.encoder, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
        }
    }
}

/// The size of the random Qwen2-VL-2B-shaped checkpoint `bench pipeline` and `bench int8` write:
/// the release's layers and tower depth unless fewer are asked for (a quick look).
struct RandomQwen2VLShape: ParsableArguments {
    @Option(parsing: .unconditional, help: "Language-model layers of the random checkpoint (28; fewer for a quick look).")
    var layers: Int?
    @Option(parsing: .unconditional, help: "Vision-tower depth of the random checkpoint (32; fewer for a quick look).")
    var depth: Int?

    /// Whether either was given (they only apply to the random checkpoint).
    var isSet: Bool { layers != nil || depth != nil }

    func validate() throws {
        let family = BenchFamily.qwen2_vl
        if let layers { try requireOption("--layers", layers, (1...family.fullLayers).contains(layers), "between 1 and \(family.fullLayers)") }
        if let depth { try requireOption("--depth", depth, (1...family.fullDepth).contains(depth), "between 1 and \(family.fullDepth)") }
    }
}
