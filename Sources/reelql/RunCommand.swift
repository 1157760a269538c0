import ArgumentParser
import Dispatch
import Foundation
import Media
import Pipeline
import VLM

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Process a directory of videos (or a pipeline spec) into a SQLite database.",
        discussion: """
        SPEC is a pipeline YAML file, or a directory of videos (processed with default settings). \
        Reruns skip clips already done under the same model, prompts and settings, redo files whose \
        content changed, and mark vanished files. Ctrl-C (SIGINT) or SIGTERM finishes the clip in \
        flight and exits; a second Ctrl-C exits at once. Exit status: 0, 3 when some videos failed, \
        130 when interrupted.
        """)

    @Argument(help: "A pipeline spec (.yaml) or a directory of videos.")
    var spec: String
    @Option(help: "The output database (overrides output.database).")
    var db: String?
    @Option(help: "The model directory (overrides model).")
    var model: String?
    @Option(parsing: .unconditional, help: "Sampling rate (overrides sampling.fps; default 1).")
    var fps: Double?
    @Option(parsing: .unconditional, help: "Pixels per frame at most (overrides sampling.max_pixels; default 200704 = 448²; 602112 = qwen-vl-utils' video default).")
    var maxPixels: Int?
    @Option(help: "Compute precision: f32, bf16 or int8 (overrides dtype; default: the checkpoint's).")
    var dtype: ComputeDType?
    @Option(name: .customLong("vision-dtype"), help: "The vision tower's precision (overrides vision_dtype; default: --dtype), e.g. bf16 with --dtype int8.")
    var visionDType: ComputeDType?
    @Option(parsing: .unconditional, help: "Sequences decoding together, \(GenerationParameters.batchRange.lowerBound)–\(GenerationParameters.batchRange.upperBound) (overrides generation.batch; default \(PipelineSpec.Generation.defaultBatch(dtype: .bf16)), \(PipelineSpec.Generation.defaultBatch(dtype: .int8)) with int8 weights; 1: one at a time).")
    var batch: Int?
    @Option(parsing: .unconditional, help: "Clip length in seconds (overrides clips.seconds).")
    var clipSeconds: Double?
    @Option(parsing: .unconditional, help: "Tokens per answer (overrides generation.max_new_tokens).")
    var maxNewTokens: Int?
    @Option(help: "Process only shard K of N (K in 1…N), partitioned by a stable hash of each path.")
    var shard: String?
    @Flag(help: "No progress output.")
    var quiet = false
    @Option(help: "Append timestamped progress lines to this file.")
    var log: String?
    @Flag(help: "Print the run's report as JSON.")
    var json = false

    struct Output: Encodable {
        var run: Int64, database: String, videos: Int, failed: Int, damaged: Int, missing: Int
        var clipsDone: Int, clipsReused: Int, tokens: Int, interrupted: Bool
        var wallSeconds: Double, modelSeconds: Double, decodeSeconds: Double, waitSeconds: Double, overheadSeconds: Double
        var loadSeconds: Double, setupSeconds: Double, storeSeconds: Double
        /// The most bytes the KV caches of the sequences in flight held at once.
        var kvCacheBytes: Int
        var failedFiles: [String]
    }

    /// The spec keys the options given override, with the option and its value.
    var overrides: [String: String] {
        var o: [String: String] = [:]
        if let fps { o["sampling.fps"] = "--fps \(fps)" }
        if let maxPixels { o["sampling.max_pixels"] = "--max-pixels \(maxPixels)" }
        if let batch { o["generation.batch"] = "--batch \(batch)" }
        if let clipSeconds { o["clips.seconds"] = "--clip-seconds \(clipSeconds)" }
        if let maxNewTokens { o["generation.max_new_tokens"] = "--max-new-tokens \(maxNewTokens)" }
        return o
    }

    func run() throws {
        var pipeline: PipelineSpec
        do {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: spec, isDirectory: &isDir), isDir.boolValue {
                pipeline = PipelineSpec()
                pipeline.inputs.paths = [URL(fileURLWithPath: spec).standardizedFileURL.path]
            } else {
                pipeline = try PipelineSpec.load(path: spec)
            }
            if let model { pipeline.model = URL(fileURLWithPath: model).standardizedFileURL.path }
            if let fps { pipeline.sampling.fps = fps }
            if let maxPixels { pipeline.sampling.maxPixels = maxPixels }
            if let batch { pipeline.generation.batch = batch }
            if let dtype { pipeline.dtype = dtype.rawValue }
            if let visionDType { pipeline.visionDType = visionDType.rawValue }
            if let clipSeconds { pipeline.clips.seconds = clipSeconds }
            if let maxNewTokens { pipeline.generation.maxNewTokens = maxNewTokens }
            do {
                try pipeline.validate(path: spec)
            } catch PipelineError.invalidSpec(_, let key, let reason) where overrides[key] != nil {
                // A value an option gave (the spec's own were checked as it loaded) is named as the option.
                printError("error[spec]: \(overrides[key] ?? key) (\(key)): \(reason)")
                throw ExitCode(2)
            }
        } catch let e as PipelineError {
            printError("error[spec]: \(e.localizedDescription)")
            throw ExitCode(2)
        }
        var shardPair: (k: Int, n: Int)? = nil
        if let shard {
            // Exactly two numbers around one slash ("1/x/2" or "1//2" are not 1/2).
            let fields = shard.split(separator: "/", omittingEmptySubsequences: false)
            let parts = fields.compactMap { Int($0) }
            guard fields.count == 2, parts.count == 2, parts[1] >= 1, (1...parts[1]).contains(parts[0]) else {
                throw ValidationError("--shard must be K/N with 1 ≤ K ≤ N, got '\(shard)'")
            }
            shardPair = (parts[0], parts[1])
        }
        let progress: Pipeline.Progress
        let runner: Runner
        let databasePath = db.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? pipeline.resolve(pipeline.output.database)
        if let log {
            // Log lines appended to the database would damage it.
            let logPath = URL(fileURLWithPath: log).standardizedFileURL.path
            let same = ["", "-wal", "-shm", "-journal"].contains { logPath.utf8.elementsEqual((databasePath + $0).utf8) }
                || (FileStatus.of(log).status?.id).map { $0 == FileStatus.of(databasePath).status?.id } == true
            if same {
                printError("error[run]: --log \(log) is the database itself or one of its files (\(databasePath)); name another file")
                throw ExitCode(2)
            }
            // Nor the spec, a checkpoint file or the database's side files (-wal, -shm): lines
            // appended to them would fail every later run. (A folder given instead of a spec is
            // not listed: its videos are refused by the run itself, and a log beside them is fine.)
            let modelDirectory = try? (pipeline.model.map(pipeline.resolve) ?? ClipModel.defaultDirectory())
            let specFile = FileStatus.of(spec).status?.kind == .directory ? [] : [spec]
            do {
                try OutputFile.checkNotAnInput(log, inputs: specFile + [databasePath] + (modelDirectory.map { [$0] } ?? []))
            } catch let e as MediaError {
                printError("error[run]: --log \(log): \(e.localizedDescription)")
                throw ExitCode(2)
            }
        }
        do {
            progress = try Pipeline.Progress(quiet: quiet || json, logFile: log)
            runner = try Runner(spec: pipeline, databasePath: databasePath, shard: shardPair, progress: progress)
        } catch let e as PipelineError {
            printError("error[run]: \(e.localizedDescription)")
            if case .databaseInUse = e { throw ExitCode(75) }
            throw ExitCode(2)
        }
        // SIGINT / SIGTERM: finish the clip in flight, then stop; a second one stops at once
        // (the run's row is marked interrupted first, waiting at most 2 s for the database).
        var sources: [DispatchSourceSignal] = []
        let signals = SignalCount()
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if signals.increment() > 1 {
                    // Never while the process is already ending: the main thread holds the lock
                    // from the moment the run is over (its row has its final status then).
                    RunEnding.lock.lock()
                    runner.abandon()
                    _exit(130)
                }
                progress.event("stopping after the clips in flight (again to stop at once)")
                runner.requestStop()
            }
            source.resume()
            sources.append(source)
        }
        let report: RunReport
        do {
            // The moment the run is over (its row has its final status, or it failed), this thread
            // holds the lock for good: a later Ctrl-C then neither writes the database nor exits
            // while the process tears down (no thread left running alongside the exit).
            report = try { defer { RunEnding.lock.lock() }; return try runner.run() }()
        } catch let e as PipelineError {
            // Settings found wrong once the model is loaded (a prompt beyond its context).
            printError("error[\({ if case .invalidSpec = e { return "spec" } else { return "run" } }())]: \(e.localizedDescription)")
            throw ExitCode(2)
        } catch {
            let model = try? pipeline.model.map(pipeline.resolve) ?? ClipModel.defaultDirectory()
            printError("error[run]: \(modelErrorMessage(error, model: model) ?? error.localizedDescription)")
            throw ExitCode(1)
        }
        _ = sources
        let out = Output(run: report.run, database: runner.store.path, videos: report.stats.videosSeen, failed: report.stats.videosFailed,
                         damaged: report.videosDamaged, missing: report.videosMissing, clipsDone: report.stats.clipsDone,
                         clipsReused: report.stats.clipsSkipped, tokens: report.stats.tokensGenerated, interrupted: report.interrupted,
                         wallSeconds: report.wall, modelSeconds: report.model, decodeSeconds: report.decoding, waitSeconds: report.waiting,
                         overheadSeconds: report.overhead, loadSeconds: report.loading, setupSeconds: report.setup,
                         storeSeconds: report.storing, kvCacheBytes: report.peakCacheBytes, failedFiles: report.failed)
        if json {
            try printJSON(out)
        }
        do {
            // The closing line goes to the log even when quiet (event() keeps stderr quiet then).
            progress.event(String(format: "run %lld %@: %d videos (%d failed, %d damaged, %d missing), %d clips done, %d reused, %d tokens in %.1f s (model %.1f s of which generating %.1f s at %.1f tokens/s with KV caches up to %@, waiting for decode %.1f s, overhead %.2f s = %.1f%%) → %@",
                                  report.run, report.interrupted ? "interrupted" : "finished", out.videos, out.failed, out.damaged, out.missing,
                                  out.clipsDone, out.clipsReused, out.tokens, out.wallSeconds, out.modelSeconds,
                                  report.generating, Double(report.stepTokens) / max(report.generating, 1e-9),
                                  byteCount(report.peakCacheBytes), out.waitSeconds,
                                  out.overheadSeconds, 100 * out.overheadSeconds / max(out.wallSeconds, 1e-9), out.database))
            for f in report.failed { progress.event("failed: \(f)") }
        }
        if report.interrupted { throw ExitCode(130) }
        if report.stats.videosFailed > 0 { throw ExitCode(3) }
    }
}

/// Held by whoever ends the process first: the main thread once the run is over, or a second
/// Ctrl-C that marks the run interrupted and exits at once.
enum RunEnding {
    static let lock = NSLock()
}

final class SignalCount: @unchecked Sendable {
    private var n = 0
    private let lock = NSLock()
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
}

struct SearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Full-text search (SQLite FTS5) over descriptions, answers and summaries, ranked.")

    @Argument(help: "Words to find (FTS5 query syntax: AND, OR, NOT, \"phrases\", prefix*).")
    var query: String
    @Option(help: "The database.")
    var db: String = "output/reelql.sqlite"
    @Option(parsing: .unconditional, help: "At most this many matches (1–100000).")
    var limit: Int = 20
    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be between 1 and 100000, got \(limit)") }
    }

    func run() throws {
        let matches: [Store.Match]
        do {
            // Read-only: a search never changes the database, and one on a read-only mount works.
            matches = try Store.search(try Store.openReadOnly(db), query, limit: limit, path: db)
        } catch {
            printError("error[search]: \(error.localizedDescription)")
            throw ExitCode(2)
        }
        if json { try printJSON(matches); return }
        for m in matches {
            let range = m.start.map { String(format: "%@–%@", Runner.clock($0), Runner.clock(m.end ?? $0)) } ?? "whole video"
            // One match a line pair: stored text that holds line breaks or controls is escaped.
            let safe = { TerminalText.safe($0, keepNewlines: false) }
            print("\(safe(m.path))  \(range)  [\(m.kind)\(m.kind == "answer" ? ": \(safe(m.prompt))" : "")]\n    \(safe(m.text))")
        }
        if matches.isEmpty { print("no matches") }
    }
}

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine shard databases into one (idempotent: merging again changes nothing).")

    @Argument(help: "The output database (created if absent).")
    var output: String
    @Argument(help: "Shard databases to merge in.")
    var inputs: [String]

    func run() throws {
        // SIGINT / SIGTERM: say which input was being merged and exit 130. Each input is
        // merged in one transaction, which the exit leaves uncommitted: SQLite rolls it back
        // when the database is next opened, so the output holds exactly the inputs before it.
        let current = MergeProgress()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                let input = current.input.map { " before \($0)" } ?? ""
                printError("error[merge]: interrupted; the output keeps what was merged\(input)")
                _exit(130)
            }
            source.resume()
            sources.append(source)
        }
        defer {
            for source in sources { source.cancel() }
            for sig in [SIGINT, SIGTERM] { signal(sig, SIG_DFL) }
        }
        do {
            // Every input is checked (a reelql database, readable, not the output, no damaged
            // row) before the output is created or touched.
            for i in inputs { try Store.checkMergeable(i, output: output) }
            try Store(path: output).merge(from: inputs, inputsChecked: true) { current.set($0) }
            current.set(nil)
            print("merged \(inputs.count) database(s) into \(output)")
        } catch let e as PipelineError {
            printError("error[merge]: \(e.localizedDescription)")
            if case .databaseInUse = e { throw ExitCode(75) }
            throw ExitCode(2)
        } catch {
            printError("error[merge]: \(error.localizedDescription)")
            throw ExitCode(2)
        }
    }
}

/// The input `merge` is working on, read by its signal handler.
final class MergeProgress: @unchecked Sendable {
    private var current: String?
    private let lock = NSLock()
    var input: String? { lock.lock(); defer { lock.unlock() }; return current }
    func set(_ input: String?) { lock.lock(); current = input; lock.unlock() }
}
