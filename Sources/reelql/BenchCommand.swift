import ArgumentParser
import Foundation
import Media

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (run a release build: swift build -c release).",
        subcommands: [DecodeBench.self, IngestBench.self, KernelBench.self, VisionBench.self, GenerateBench.self, PipelineBench.self, Int8Bench.self])
}

/// The most timed runs a benchmark option may ask for.
let maxBenchRuns = 1000
/// The most files `bench ingest` may be asked to open.
let maxIngestFiles = 1_000_000

/// Median wall time of `runs` calls of `body`, in seconds.
func medianTime(runs: Int, _ body: () throws -> Void) rethrows -> Double {
    var times: [Double] = []
    for _ in 0..<runs {
        let t0 = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }
    times.sort()
    return times[times.count / 2]
}

struct DecodeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Time reelql's frame sampling against the ffmpeg CLI doing the same work.",
        discussion: """
        Samples FILE at --fps, resized by smart_resize with --max-pixels, and in the same run times \
        `ffmpeg -i FILE -vf fps=F,scale=W:H -f rawvideo -pix_fmt rgb24 -` at the same size. \
        Runs alternate between the two; the medians and their ratio are printed. \
        Make the standard clip with `make bench-clip` (1280×720, 30 fps, 20 s, H.264).
        """)

    @Argument(help: "The video file.")
    var file: String
    @Option(parsing: .unconditional, help: "Sampling rate.")
    var fps: Double = 2
    @Option(parsing: .unconditional, help: "smart_resize max_pixels.")
    var maxPixels: Int = 448 * 448
    @Option(parsing: .unconditional, help: "Timed runs of each (the median is reported).")
    var runs: Int = 5
    @Option(help: "The ffmpeg executable.")
    var ffmpeg: String = "ffmpeg"
    @Option(parsing: .unconditional, help: "Decoder threads (0: automatic).")
    var threads: Int = 0
    @Option(parsing: .unconditional, help: "Parallel segment decoders (default: one per core when there is enough work).")
    var workers: Int?
    @Flag(help: "Decode non-reference frames that are not sampled (to measure what skipping them saves).")
    var noSkipNonReference = false
    @Flag(help: "Decode GOPs that hold no sampled frame.")
    var noSkipGops = false

    func validate() throws {
        try requireOption("--fps", fps, FrameSampler.fpsRange.contains(fps), "between 0.1 and 30")
        try requireOption("--max-pixels", maxPixels, (1...maxFramePixels).contains(maxPixels), "between 1 and \(maxFramePixels)")
        try requireOption("--runs", runs, (1...maxBenchRuns).contains(runs), "between 1 and \(maxBenchRuns)")
        try requireOption("--threads", threads, (0...maxDecoderThreads).contains(threads), "between 0 (automatic) and \(maxDecoderThreads)")
        if let workers { try requireOption("--workers", workers, (1...maxDecoderThreads).contains(workers), "between 1 and \(maxDecoderThreads)") }
    }

    var decodeOptions: DecodeOptions {
        DecodeOptions(threads: threads, skipNonReference: !noSkipNonReference, skipGOPs: !noSkipGops, workers: workers)
    }

    func run() throws {
        let options = SamplingOptions(fps: fps, resize: ResizeOptions(maxPixels: maxPixels))
        let first = try reportingErrors { try VideoDecoder(path: file, options: decodeOptions).sample(options) }
        let plan = first.plan
        print("file: \(file)")
        print("reelql: \(first.frames.count) frames at \(plan.width)×\(plan.height), decoded \(first.packetsDecoded) of \(first.packetsTotal) packets, \(first.workers) worker(s), \(first.seeks) seek(s)")

        let ffmpegArgs = ["-nostdin", "-v", "error", "-i", file, "-vf", "fps=\(fps),scale=\(plan.width):\(plan.height)",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        print("ffmpeg: \(ffmpeg) \(ffmpegArgs.joined(separator: " "))")
        var ours: [Double] = [], theirs: [Double] = []
        for _ in 0..<runs {
            ours.append(try medianTime(runs: 1) { _ = try VideoDecoder(path: file, options: decodeOptions).sample(options) })
            theirs.append(try medianTime(runs: 1) { try runFFmpeg(ffmpegArgs) })
        }
        ours.sort(); theirs.sort()
        let a = ours[ours.count / 2], b = theirs[theirs.count / 2]
        print(String(format: "reelql  median %.3f s", a))
        print(String(format: "ffmpeg  median %.3f s", b))
        print(String(format: "ratio   %.3f (reelql / ffmpeg; target ≤ 0.70)", a / b))
    }

    func runFFmpeg(_ args: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [ffmpeg] + args
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle.standardError
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("ffmpeg exited with status \(process.terminationStatus)")
        }
    }
}

/// Opens and samples many files in one process: throughput, and whether memory stays flat.
struct IngestBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Open and sample FILES round-robin, --files times in all; report files/s and memory growth.",
        discussion: """
        Resident memory is read after a warm-up of --warmup files and again at the end: a leak of \
        FFmpeg contexts or frame buffers shows as growth. Unreadable files count as opened (their \
        error is part of the work).
        """)

    @Argument(help: "Video files (any mix of good and broken).")
    var files: [String]
    @Option(name: .customLong("count"), parsing: .unconditional, help: "Files to open in all, after the warm-up.")
    var count: Int = 500
    @Option(parsing: .unconditional, help: "Files opened before the first memory reading.")
    var warmup: Int = 100
    @Option(parsing: .unconditional, help: "Sampling rate.")
    var fps: Double = 2
    @Option(parsing: .unconditional, help: "smart_resize max_pixels.")
    var maxPixels: Int = 6000
    @Flag(help: "Print one JSON object.")
    var json = false

    struct Output: Encodable {
        var files: Int
        var failed: Int
        var seconds: Double
        var filesPerSecond: Double
        var residentAfterWarmupMib: Double
        var residentAfterMib: Double
        var growthMib: Double
    }

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one video file") }
        try requireOption("--count", count, (1...maxIngestFiles).contains(count), "between 1 and \(maxIngestFiles)")
        try requireOption("--warmup", warmup, (0...maxIngestFiles).contains(warmup), "between 0 and \(maxIngestFiles)")
        try requireOption("--fps", fps, FrameSampler.fpsRange.contains(fps), "between 0.1 and 30")
        try requireOption("--max-pixels", maxPixels, (784...maxFramePixels).contains(maxPixels), "between 784 and \(maxFramePixels)")
    }

    func run() throws {
        let options = SamplingOptions(fps: fps, resize: ResizeOptions(minPixels: 784, maxPixels: maxPixels))
        var failed = 0
        func round(_ n: Int) {
            for i in 0..<n {
                do { _ = try VideoDecoder(path: files[i % files.count]).sample(options) } catch { failed += 1 }
            }
        }
        round(warmup)
        failed = 0
        let before = residentMiB()
        let seconds = medianTime(runs: 1) { round(count) }
        let after = residentMiB()
        let out = Output(files: count, failed: failed, seconds: seconds, filesPerSecond: Double(count) / seconds,
                         residentAfterWarmupMib: before, residentAfterMib: after, growthMib: after - before)
        if json { try printJSON(out); return }
        print(String(format: "%d files (%d unreadable) in %.2f s: %.1f files/s", count, failed, seconds, out.filesPerSecond))
        print(String(format: "resident memory %.1f MiB after warm-up, %.1f MiB after: %+.2f MiB", before, after, after - before))
    }

    func residentMiB() -> Double {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "0 0"
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }
}

/// A memory figure of /proc/self/status ("VmRSS", "VmHWM"), in bytes; 0 where it cannot be read.
func processStatus(_ key: String) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}

/// Starts a fresh peak-resident count (VmHWM) from the current resident size (best effort).
func resetPeakResident() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}
