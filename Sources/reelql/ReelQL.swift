import ArgumentParser
import Foundation
import Media

@main
struct ReelQL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reelql",
        abstract: "Turn directories of video into searchable text with Qwen2-VL, natively on the CPU.",
        version: "0.1.0",
        subcommands: [RunCommand.self, SearchCommand.self, MergeCommand.self, ReportCommand.self, DescribeCommand.self, ProbeCommand.self, FramesCommand.self, EncodeCommand.self, TokenizeCommand.self, InspectCommand.self, BenchCommand.self]
    )
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

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// JSON as the CLI prints it: snake_case keys, sorted, pretty.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Sampling options shared by every command that reads frames from a video.
struct SamplingOptionGroup: ParsableArguments {
    @Option(help: "Frames per second of video time to sample (0.1–30).")
    var fps: Double = 2
    @Option(help: "Start of the time window, seconds (inclusive).")
    var start: Double?
    @Option(help: "End of the time window, seconds (exclusive).")
    var end: Double?
    @Option(help: "Minimum pixels per frame for smart_resize (default 128·28²).")
    var minPixels: Int = SmartResize.videoMinPixels
    @Option(help: "Maximum pixels per frame for smart_resize (default 768·28², limited by --total-pixels).")
    var maxPixels: Int?
    @Option(help: "Pixel budget of the whole clip, as qwen-vl-utils' total_pixels (default 128000·28²·0.9).")
    var totalPixels: Double?
    @Option(help: "At most this many frames.")
    var maxFrames: Int?
    @Flag(help: "Keep the decoded size: no smart_resize.")
    var native = false

    var options: SamplingOptions {
        SamplingOptions(fps: fps, start: start, end: end, maxFrames: maxFrames,
                        resize: ResizeOptions(native: native, minPixels: minPixels,
                                              maxPixels: maxPixels, totalPixels: totalPixels))
    }

    func validate() throws {
        do { try options.validate() } catch let e as MediaError {
            throw ValidationError(e.localizedDescription)
        }
    }
}
