import ArgumentParser
import Foundation
import Media

struct FramesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "frames",
        abstract: "Sample frames from a video by presentation time, as the model will see them.",
        discussion: """
        A still image (jpg, jpeg, png, webp, bmp, tif, tiff) gives its one frame as describe gives it to the model: \
        sized by qwen-vl-utils' fetch_image bounds (4·28² to 16384·28² pixels) unless --min-pixels or --max-pixels \
        say otherwise, its transparency on white.
        """)

    @Argument(help: "The video (or image) file.")
    var file: String
    @OptionGroup var sampling: SamplingOptionGroup
    @Option(help: "Write the frames as PNG files into this directory.")
    var out: String?
    @Flag(help: "Print one JSON object with indices, timestamps, width and height.")
    var json = false
    @Option(parsing: .unconditional, help: "FFmpeg decoder threads (0: automatic, at most \(maxDecoderThreads)).")
    var threads: Int = 0

    struct Output: Encodable {
        var file: String
        var indices: [Int]
        var timestamps: [Double]
        var width: Int
        var height: Int
        var totalFrames: Int
        var videoFps: Double
        var variableFrameRate: Bool
        var files: [String]?
        var damage: DecodeDamage?
    }

    func validate() throws {
        try requireOption("--threads", threads, (0...maxDecoderThreads).contains(threads), "between 0 (automatic) and \(maxDecoderThreads)")
    }

    /// The sampling: a still image (by its extension, as `describe` decides) is one frame sized
    /// by qwen-vl-utils' `fetch_image` bounds unless --min-pixels/--max-pixels say otherwise,
    /// its transparency on white, as the model sees it.
    var options: SamplingOptions {
        var o = sampling.options
        guard isImageFile(file) else { return o }
        o.maxFrames = 1
        o.resize.image = true
        o.resize.minPixels = sampling.minimum(default: SmartResize.imageMinPixels)
        // (No --max-pixels: an image's resize takes fetch_image's maximum itself.)
        return o
    }

    func run() throws {
        let sampled = try reportingErrors {
            try VideoDecoder(path: file, options: DecodeOptions(threads: threads)).sample(options)
        }
        var written: [String]? = nil
        if let out {
            written = try reportingErrors {
                try makeDirectories(out)
                return try sampled.frames.enumerated().map { (i, frame) in
                    let name = (out as NSString).appendingPathComponent(String(format: "frame-%04d-%06d.png", i, frame.index))
                    // A frame's name in the folder may be a link to the video itself.
                    try OutputFile.checkNotAnInput(name, inputs: [file])
                    try PNGWriter.write(rgb: frame.rgb, width: frame.width, height: frame.height, to: name)
                    return name
                }
            }
        }
        let plan = sampled.plan
        if json {
            try printJSON(Output(file: file, indices: sampled.indices, timestamps: sampled.timestamps,
                                 width: plan.width, height: plan.height, totalFrames: plan.totalFrames,
                                 videoFps: plan.videoFPS, variableFrameRate: plan.variableFrameRate,
                                 files: written, damage: sampled.damage))
        } else {
            print("\(sampled.frames.count) frame\(sampled.frames.count == 1 ? "" : "s") of \(plan.totalFrames) at \(plan.width)×\(plan.height)\(plan.variableFrameRate ? " (variable frame rate: nearest timestamps)" : "")")
            for f in sampled.frames {
                print(String(format: "  frame %6d  t=%9.3f s", f.index, f.timestamp))
            }
            if let written, let out { print("wrote \(written.count) PNG files to \(PathBytes.display(out))") }
        }
        try checkResultOutput()
        try reportDamage(sampled, file: file)
    }
}

/// The most FFmpeg decoder threads an option may ask for (each one holds frames in memory).
let maxDecoderThreads = 64
