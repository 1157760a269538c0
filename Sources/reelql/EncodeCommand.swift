import ArgumentParser
import Foundation
import Media
import Pipeline
import Tensors
import VLM

/// `reelql encode`: a video or image through sampling, the processor and the vision tower.

/// Still images by extension (as `reelql run` and `describe` decide).
func isImageFile(_ path: String) -> Bool { Scan.isImage(path) }
struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode a video or an image with a checkpoint's vision tower and print what it produced.",
        discussion: "Prints the patch grid, the number of visual tokens, their embedding width and timings.")

    @Argument(help: "The video or image file.")
    var file: String
    @Option(help: "A checkpoint directory (config.json, model.safetensors[.index.json]), of any supported family.")
    var model: String
    @Option(help: "The tower's precision: f32, bf16 or int8 (default: the checkpoint's).")
    var dtype: ComputeDType?
    @OptionGroup var sampling: SamplingOptionGroup
    @Flag(help: "Print one JSON object.")
    var json = false
    @Option(help: "Also write the video embeddings (f32, row-major [tokens, width]) to this file.")
    var out: String?

    struct Output: Encodable {
        var file: String
        var frames: Int
        var width: Int
        var height: Int
        var grid: [Int]
        var tokens: Int
        var embeddingWidth: Int
        var dtype: String
        var mean: Double
        var std: Double
        var timing: [String: Double]
    }

    func run() throws {
        var timing: [String: Double] = [:]
        func timed<T>(_ key: String, _ body: () throws -> T) rethrows -> T {
            let t0 = DispatchTime.now().uptimeNanoseconds
            defer { timing[key] = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
            return try body()
        }
        // The embeddings must not replace what this command reads: the video, the checkpoint.
        if let out { try reportingErrors { try OutputFile.checkNotAnInput(out, inputs: [file, model]) } }
        try reportingModelErrors(input: file, model: model) {
            let vlm = try timed("load") { try ModelRegistry.loadEncoder(directory: model, dtype: dtype) }
            let kind: VisualKind = isImageFile(file) ? .image : .video
            let options = kind == .image ? sampling.boundingImage(vlm.imageSampling(sampling.options)) : vlm.videoSampling(sampling.options)
            let sampled = try reportingErrors { try timed("decode") { try VideoDecoder(path: file).sample(options) } }
            let input = try timed("processor") { () throws -> VisualInput in
                if kind == .image {
                    guard let frame = sampled.frames.first else { throw VLMError.invalidInput("\(PathBytes.display(file)): the image holds no picture") }
                    return try vlm.imageInput(RGBImage(frame))
                }
                return try vlm.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
            }
            let grid = input.grid
            let (merged, computed) = try timed("vision") { try vlm.encode(input) }
            let values = merged.buffer
            guard values.allSatisfy({ $0.isFinite }) else {
                throw VLMError.invalidConfig(path: model, key: "(vision weights)",
                                             reason: "the tower's embeddings of \(PathBytes.display(file)) hold NaN or ±Inf: its weights, or numbers of its configuration, may be out of range")
            }
            let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
            let variance = values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(values.count)
            if let out {
                try reportingErrors {
                    try OutputFile.checkNotAnInput(out, inputs: [file, model]) // again: it may have appeared since
                    try writeFile(out, UnsafeRawBufferPointer(values))
                }
            }
            let o = Output(file: file, frames: sampled.frames.count, width: sampled.plan.width, height: sampled.plan.height,
                           grid: [grid.t, grid.h, grid.w], tokens: merged.shape[0], embeddingWidth: merged.shape[1],
                           dtype: computed.rawValue, mean: mean, std: variance.squareRoot(), timing: timing)
            if json {
                try printJSON(o)
            } else {
                print("\(o.frames) frame\(o.frames == 1 ? "" : "s") at \(o.width)×\(o.height) → grid \(grid) → \(o.tokens) \(kind.rawValue) tokens × \(o.embeddingWidth) (\(o.dtype))")
                print(String(format: "embeddings: mean %.4f, std %.4f", mean, o.std))
                print(timing.sorted { $0.key < $1.key }.map { String(format: "%@ %.3f s", $0.key, $0.value) }.joined(separator: ", "))
            }
            try reportDamage(sampled, file: file)
        }
    }
}

extension ComputeDType: ExpressibleByArgument {}
