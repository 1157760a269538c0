import ArgumentParser
import Foundation
import Media
import Tensors

@main
struct ReelQL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reelql",
        abstract: "Turn directories of video into searchable text with vision–language models, natively on the CPU.",
        version: "0.1.0",
        subcommands: [RunCommand.self, SearchCommand.self, MergeCommand.self, ReportCommand.self, DescribeCommand.self, ProbeCommand.self, FramesCommand.self, EncodeCommand.self, TokenizeCommand.self, InspectCommand.self, BenchCommand.self]
    )

    /// The entry point, instead of `ParsableCommand.main()`: the arguments are decoded
    /// losslessly (a file name that is not UTF-8 arrives as the bytes it names, see `PathBytes`),
    /// a closed pipe is an error (EPIPE) rather than death by SIGPIPE, and on every path out —
    /// success, error, help — what `print` buffered is flushed and checked, so a result that
    /// could not be written exits 74 instead of 0.
    static func main() {
        signal(SIGPIPE, SIG_IGN)
        reserveStandardDescriptors()
        let status: Int32
        do {
            var command = try parseAsRoot(Array(PathBytes.arguments().dropFirst()))
            // Before any kernel sizes its threads from it.
            if let problem = ThreadPool.environmentProblem ?? switchesProblem() {
                printError("Error: \(problem)")
                throw ExitCode.validationFailure
            }
            try command.run()
            status = 0
        } catch {
            // As ParsableCommand.exit(withError:), but through the safe writers and without exiting.
            let code = exitCode(for: error).rawValue
            let message = fullMessage(for: error)
            if !message.isEmpty {
                if code == 0 { writeResult(message + "\n") } else { printError(message) }
            }
            status = code
        }
        finishOutput(status: status)
    }
}

/// Why one of reelql's other environment switches cannot be used, if one cannot: the oneDNN
/// switches take 1 (or 0), FFmpeg's log level a number from -8 to 56 (a value they ignored
/// left the switch silently off).
func switchesProblem(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    for name in ["REELQL_NO_ONEDNN_BF16", "REELQL_NO_ONEDNN_INT8"] {
        if let v = environment[name], v != "0", v != "1" { return "\(name)=\(v.debugDescription): must be 1 (or 0)" }
    }
    if let v = environment["REELQL_FFMPEG_LOG"], !(Int32(v).map { (-8...56).contains($0) } ?? false) {
        return "REELQL_FFMPEG_LOG=\(v.debugDescription): must be an FFmpeg log level from -8 (quiet) to 56 (trace)"
    }
    return nil
}

/// Runs a command body, turning library errors into a clear message and a distinct exit code.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as MediaError {
        printError("error[\(error.kind)]: \(error.localizedDescription)")
        throw ExitCode(error.exitCode)
    }
}

/// Sampling options shared by every command that reads frames from a video.
struct SamplingOptionGroup: ParsableArguments {
    @Option(parsing: .unconditional, help: "Frames per second of video time to sample (0.1–30).")
    var fps: Double = 2
    @Option(parsing: .unconditional, help: "Start of the time window, seconds (inclusive).")
    var start: Double?
    @Option(parsing: .unconditional, help: "End of the time window, seconds (exclusive).")
    var end: Double?
    @Option(parsing: .unconditional, help: "Minimum pixels per frame for smart_resize (default 128·28², or --max-pixels if lower).")
    var minPixels: Int?
    @Option(parsing: .unconditional, help: "Maximum pixels per frame for smart_resize (default 768·28², limited by --total-pixels).")
    var maxPixels: Int?
    @Option(parsing: .unconditional, help: "Pixel budget of the whole clip, as qwen-vl-utils' total_pixels (default 128000·28²·0.9).")
    var totalPixels: Double?
    @Option(parsing: .unconditional, help: "At most this many frames.")
    var maxFrames: Int?
    @Flag(help: "Keep the decoded size: no smart_resize.")
    var native = false

    var options: SamplingOptions {
        SamplingOptions(fps: fps, start: start, end: end, maxFrames: maxFrames,
                        resize: ResizeOptions(native: native, minPixels: minimum(default: SmartResize.videoMinPixels),
                                              maxPixels: maxPixels, totalPixels: totalPixels))
    }

    /// An image's options as the checkpoint sizes it (`imageSampling`), within --min-pixels and
    /// --max-pixels where they are given, as qwen-vl-utils' fetch_image takes them and as
    /// `frames` shows them (a --max-pixels alone lowers the minimum, see `minimum`). These were
    /// ignored for images.
    func boundingImage(_ options: SamplingOptions) -> SamplingOptions {
        var o = options
        let low = minimum(default: o.resize.minPixels)
        let high = [o.resize.maxPixels, maxPixels].compactMap { $0 }.min()
        o.resize.minPixels = low
        o.resize.maxPixels = high.map { max($0, low) }
        return o
    }

    /// --min-pixels, else `default` lowered to --max-pixels where that is below it: a maximum
    /// alone is never refused for being under a minimum nobody asked for.
    func minimum(default value: Int) -> Int {
        SmartResize.minimumPixels(given: minPixels, default: value, maximum: maxPixels)
    }

    func validate() throws {
        try requireOption("--fps", fps, FrameSampler.fpsRange.contains(fps), "between 0.1 and 30")
        if let start { try requireOption("--start", start, start.isFinite && start >= 0, "a number of seconds ≥ 0") }
        if let end {
            try requireOption("--end", end, end.isFinite && end > (start ?? 0), "a number of seconds after --start (\(start ?? 0))")
        }
        if let minPixels {
            try requireOption("--min-pixels", minPixels, (1...maxFramePixels).contains(minPixels), "between 1 and \(maxFramePixels)")
        }
        if let maxPixels {
            // At least one 28×28 cell (the smallest frame), and the minimum if one is given.
            let cell = SmartResize.factor * SmartResize.factor, low = max(minPixels ?? cell, cell)
            try requireOption("--max-pixels", maxPixels, (low...maxFramePixels).contains(maxPixels),
                              minPixels.map { $0 >= cell } == true ? "between --min-pixels (\(low)) and \(maxFramePixels)"
                                  : "between \(low) (one \(SmartResize.factor)×\(SmartResize.factor) cell, the smallest frame) and \(maxFramePixels)")
        }
        if let totalPixels { try requireOption("--total-pixels", totalPixels, totalPixels.isFinite && totalPixels >= 1, "a finite number ≥ 1") }
        if let maxFrames { try requireOption("--max-frames", maxFrames, maxFrames >= 1, "at least 1") }
        do { try options.validate() } catch let e as MediaError {
            throw ValidationError(e.localizedDescription)
        }
    }
}
