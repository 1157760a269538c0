import ArgumentParser
import Foundation
import Media
import Tensors
import VLM

/// `reelql bench int8`: how far int8 weights move a model's output. For each video, its first
/// 10 s clip (1 fps, at most 448² pixels a frame, as `reelql run` samples) with the description
/// prompt goes through the same Qwen2-VL checkpoint loaded twice, bf16 and int8 (tower and
/// decoder); the last position's logits — what chooses the first generated token — are compared.
struct Int8Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "int8",
        abstract: "int8 against bf16 on real clips: cosine similarity of the last-position logits (Qwen2-VL).",
        discussion: """
        Loads one Qwen2-VL checkpoint twice, in bf16 and in int8 (weights quantized at load; --vision-dtype \
        keeps the tower in another precision), and for each VIDEO (default: the decodable videos of \
        fixtures/videos) samples its first 10 s at 1 fps and at most 448² pixels a frame, asks for a \
        description, and compares the two models' logits at the prompt's last position: cosine similarity, \
        whether the top token agrees, and the relative size of the difference. Without --model it writes the \
        Qwen2-VL-2B-shaped random bf16 checkpoint of `bench pipeline`. Exits 1 when a cosine is below --gate.
        """)

    @Argument(help: "Video files (default: fixtures/videos' decodable videos).")
    var videos: [String] = []
    @Option(help: "A Qwen2-VL checkpoint directory (default: the random Qwen2-VL-2B-shaped one, written to --directory).")
    var model: String?
    @Option(help: "Where to write the random checkpoint (default: the reelql-bench-2b folder of bench generate and bench pipeline).")
    var directory: String?
    @Flag(help: "Keep the random checkpoint (and reuse it next time).")
    var keep = false
    @OptionGroup var shape: RandomQwen2VLShape
    @Option(name: .customLong("vision-dtype"), help: "The int8 model's tower precision (default: int8).")
    var visionDType: ComputeDType?
    @Option(parsing: .unconditional, help: "The smallest cosine similarity accepted.")
    var gate: Double = 0.99
    @Flag(help: "Print one JSON object.")
    var json = false

    static let defaultVideos = ["h264_cfr.mp4", "bt709.mp4", "hevc.mp4", "av1.mp4", "mpeg4.avi", "mjpeg.mov", "rotated90.mp4",
                                "longgop.mp4", "opengop.mp4", "editlist.mp4", "h264_odd.mkv", "native224x112.mp4"]

    func validate() throws {
        try requireOption("--gate", gate, (-1...1).contains(gate), "between -1 and 1")
        if model != nil && shape.isSet {
            throw ValidationError("--layers and --depth shape the random checkpoint; --model runs an existing one")
        }
    }

    struct Clip: Encodable {
        var video: String
        var frames: Int
        var grid: [Int]
        var promptTokens: Int
        var cosine: Double
        /// max |int8 − bf16| / max |bf16| over the vocabulary.
        var relativeDifference: Double
        var topAgrees: Bool
    }

    struct Output: Encodable {
        var model: String
        var visionDtype: String
        var clips: [Clip]
        var minCosine: Double
        var meanCosine: Double
        var topAgreement: Int
        var gate: Double
        var passed: Bool
    }

    func run() throws {
        let fm = FileManager.default
        if let model { return try compare(model) }
        let directory = self.directory ?? fm.temporaryDirectory.appendingPathComponent("reelql-bench-2b").path
        // A checkpoint found there (kept by an earlier bench) stays; one written now goes unless --keep.
        let existed = fm.fileExists(atPath: (directory as NSString).appendingPathComponent("model.safetensors"))
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { if !keep && !existed { PipelineBench.removeCheckpoint(directory) } }
        try PipelineBench.writeCheckpoint(directory, layers: shape.layers, depth: shape.depth, tokenizer: nil, quiet: json)
        try compare(directory)
    }

    func compare(_ checkpoint: String) throws {
        let paths: [String]
        if videos.isEmpty {
            guard let folder = PipelineBench.findInCheckout("fixtures/videos") else {
                throw ValidationError("no fixtures/videos found from the current directory or the executable's; name the videos")
            }
            paths = Self.defaultVideos.map { (folder as NSString).appendingPathComponent($0) }
        } else {
            paths = videos
        }
        try reportingModelErrors {
            let bf16 = try Qwen2VLFamily(directory: checkpoint, dtype: .bf16)
            let int8 = try Qwen2VLFamily(directory: checkpoint, dtype: .int8, visionDType: visionDType)
            let prompt = "Describe what happens in this clip, naming people, animals, vehicles and actions."
            var clips: [Clip] = []
            for path in paths {
                let decoder = try reportingErrors { try VideoDecoder(path: path) }
                let span = decoder.frameIndex().span
                let options = bf16.videoSampling(SamplingOptions(fps: 1, start: 0, end: min(span, 10),
                                                                 resize: ResizeOptions(maxPixels: 448 * 448)))
                let sampled = try reportingErrors { try decoder.sample(options) }
                let input = try bf16.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
                let merge = bf16.model.config.vision.spatialMergeSize
                let ids = try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [.video, .text(prompt)])], tokenizer: bf16.tokenizer,
                                                   videoTokens: [input.grid.patches / (merge * merge)])
                let vision = [VisionInput(pixels: input.pixels, grid: input.grid, isVideo: true)]
                let a = try Self.lastLogits(bf16.model, ids: ids, vision: vision)
                let b = try Self.lastLogits(int8.model, ids: ids, vision: vision)
                var dot = 0.0, na = 0.0, nb = 0.0, diff = 0.0, peak = 0.0
                for i in a.indices {
                    dot += Double(a[i]) * Double(b[i]); na += Double(a[i]) * Double(a[i]); nb += Double(b[i]) * Double(b[i])
                    diff = max(diff, abs(Double(a[i]) - Double(b[i]))); peak = max(peak, abs(Double(a[i])))
                }
                let top = { (v: [Float]) in v.indices.max { v[$0] < v[$1] } ?? 0 }
                let clip = Clip(video: path, frames: sampled.frames.count, grid: [input.grid.t, input.grid.h, input.grid.w], promptTokens: ids.count,
                                cosine: na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : 0,
                                relativeDifference: peak > 0 ? diff / peak : diff, topAgrees: top(a) == top(b))
                clips.append(clip)
                if !json {
                    print(String(format: "%@: %d frames, grid %d×%d×%d, %d prompt tokens: cosine %.5f, max difference %.3f of max |logit|, top token %@",
                                 (path as NSString).lastPathComponent, clip.frames, input.grid.t, input.grid.h, input.grid.w, ids.count,
                                 clip.cosine, clip.relativeDifference, clip.topAgrees ? "agrees" : "DIFFERS"))
                }
            }
            let cosines = clips.map(\.cosine)
            let out = Output(model: checkpoint, visionDtype: (visionDType ?? .int8).rawValue, clips: clips, minCosine: cosines.min() ?? 0,
                             meanCosine: cosines.reduce(0, +) / Double(max(1, cosines.count)), topAgreement: clips.filter(\.topAgrees).count,
                             gate: gate, passed: (cosines.min() ?? 0) >= gate)
            if json {
                try printJSON(out)
            } else {
                print(String(format: "int8 (tower %@) vs bf16 over %d clips: cosine min %.5f, mean %.5f (gate ≥ %.2f: %@); top token agrees in %d of %d",
                             out.visionDtype, clips.count, out.minCosine, out.meanCosine, gate, out.passed ? "met" : "NOT MET", out.topAgreement, clips.count))
            }
            if !out.passed { throw ExitCode(1) }
        }
    }

    /// The logits at the prompt's last position.
    static func lastLogits(_ model: Qwen2VLModel, ids: [Int], vision: [VisionInput]) throws -> [Float] {
        let prepared = try model.prepare(ids: ids, vision: vision)
        let cache = try model.makeCache(capacity: ids.count)
        let hidden = try model.prefill(prepared, cache: cache)
        let last = try model.language.logits(hidden.rows((hidden.shape[0] - 1)..<hidden.shape[0]))
        return last.values
    }
}
