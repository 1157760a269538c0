import Foundation
import Media
import Tensors
import VLM

/// Where a run's progress goes: a live line on a terminal, timestamped lines otherwise.
public final class Progress: @unchecked Sendable {
    public let quiet: Bool
    let live: Bool
    let log: FileHandle?
    private let lock = NSLock()
    private var lastLine = 0

    public init(quiet: Bool, logFile: String?) {
        self.quiet = quiet
        live = !quiet && isatty(STDERR_FILENO) != 0
        if let logFile {
            if !FileManager.default.fileExists(atPath: logFile) { FileManager.default.createFile(atPath: logFile, contents: nil) }
            log = FileHandle(forWritingAtPath: logFile)
            _ = try? log?.seekToEnd()
        } else {
            log = nil
        }
    }

    /// A message worth keeping (file done, failure, summary).
    public func event(_ message: String) {
        lock.lock(); defer { lock.unlock() }
        let line = "\(Store.now()) \(message)\n"
        log?.write(Data(line.utf8))
        guard !quiet else { return }
        if live {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + message + "\n").utf8))
            lastLine = 0
        } else {
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// The live status line (terminals only).
    public func status(_ message: String) {
        guard live else { return }
        lock.lock(); defer { lock.unlock() }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + message).utf8))
        lastLine = message.count
    }

    public func finish() {
        guard live, lastLine > 0 else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// What a run did.
public struct RunReport: Sendable {
    public var run: Int64 = 0
    public var stats = Store.RunStats()
    public var videosDamaged = 0
    public var videosMissing = 0
    public var interrupted = false
    public var wall = 0.0
    /// Time the model computed (vision, prefill, generation, summaries).
    public var model = 0.0
    /// Time the model waited for decoded clips (decoding on the critical path).
    public var waiting = 0.0
    /// Decoding and preprocessing time (overlapped with the model's work).
    public var decoding = 0.0
    /// Loading the model; scanning and run setup before it; writing finished clips.
    public var loading = 0.0, setup = 0.0, storing = 0.0
    /// Everything else on the critical path: scanning, fingerprints, the database, bookkeeping.
    public var overhead: Double { max(0, wall - model - waiting) }
    public var failed: [String] = []
}

/// Runs a pipeline spec over its inputs into its database: resumable, failure-isolated, with
/// decoding of the next clip overlapping the model's work on the current one.
public final class Runner: @unchecked Sendable {
    public let spec: PipelineSpec
    public let store: Store
    public let progress: Progress
    public let shard: (k: Int, n: Int)?
    private let stopFlag = StopFlag()

    public init(spec: PipelineSpec, databasePath: String? = nil, shard: (k: Int, n: Int)? = nil, progress: Progress) throws {
        self.spec = spec
        self.shard = shard
        self.progress = progress
        if let s = shard, !(1...s.n).contains(s.k) { throw PipelineError.invalidArgument("--shard \(s.k)/\(s.n): K must be in 1…\(s.n)") }
        store = try Store(path: databasePath ?? spec.resolve(spec.output.database))
    }

    /// Asks the run to stop after the clip in flight (SIGINT/SIGTERM call this).
    public func requestStop() { stopFlag.set() }

    /// The key under which finished clips are reused: the model (its directory and config), the
    /// prompts, sampling, clip and generation settings.
    public static func settingsKey(_ spec: PipelineSpec, modelDirectory: String) throws -> (key: String, json: String) {
        let configBytes = FileManager.default.contents(atPath: (modelDirectory as NSString).appendingPathComponent("config.json")) ?? Data()
        let tokenizerBytes = FileManager.default.contents(atPath: (modelDirectory as NSString).appendingPathComponent("tokenizer.json")) ?? Data()
        struct Settings: Encodable {
            var model: String, modelConfig: UInt64, tokenizer: UInt64, dtype: String?
            var sampling: PipelineSpec.Sampling, clips: PipelineSpec.Clips, prompts: PipelineSpec.Prompts, generation: PipelineSpec.Generation
        }
        let s = Settings(model: modelDirectory, modelConfig: Scan.fnv1a(configBytes), tokenizer: Scan.fnv1a(tokenizerBytes), dtype: spec.dtype,
                         sampling: spec.sampling, clips: spec.clips, prompts: spec.prompts, generation: spec.generation)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let data = try e.encode(s)
        return (String(format: "%016llx", Scan.fnv1a(data)), String(decoding: data, as: UTF8.self))
    }

    struct Work: @unchecked Sendable {
        var video: Int64
        var path: String
        var clip: Int
        var clipCount: Int
        var range: ClipRange
        var pixels: Tensor?
        var grid: VisionGrid?
        var frames = 0, width = 0, height = 0
        var failure: (kind: String, message: String)?
        var damage: DecodeDamage?
        var thumbnails: [Store.ThumbnailRow] = []
        var thumbnailError: String?
        /// The last item of its video (the summary may follow).
        var lastOfVideo = false
    }

    public func run() throws -> RunReport {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var report = RunReport()
        let modelDirectory = try spec.model.map(spec.resolve) ?? ClipModel.defaultDirectory()
        let (settingsKey, settingsJSON) = try Self.settingsKey(spec, modelDirectory: modelDirectory)
        let specJSON = String(decoding: (try? JSONEncoder().encode(spec)) ?? Data(), as: UTF8.self)
        var files = try Scan.files(spec.inputs, resolve: spec.resolve)
        if let s = shard { files = files.filter { Scan.shard(of: $0, count: s.n) == s.k } }
        let roots = spec.inputs.paths.map(spec.resolve).filter { !$0.contains("*") && !$0.contains("?") }
        let run = try store.startRun(spec: specJSON, model: modelDirectory, settingsKey: settingsKey, shard: shard.map { "\($0.k)/\($0.n)" })
        report.run = run
        report.stats.videosSeen = files.count
        if shard == nil { report.videosMissing = try store.markMissing(seen: Set(files), roots: roots) }
        progress.event("run \(run): \(files.count) video file(s)\(shard.map { " (shard \($0.k)/\($0.n))" } ?? ""), model \(modelDirectory), database \(store.path)")

        let dtype = spec.dtype.flatMap(ComputeDType.init(rawValue:))
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let model = try ClipModel(directory: modelDirectory, dtype: dtype, generation: spec.generation)
        report.loading = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
        report.setup = Double(loadStart - t0) / 1e9
        let processor = Qwen2VLProcessor(config: model.model.files.preprocessor)
        let sampling = model.sampling(spec.samplingOptions)
        let generationJSON = String(decoding: (try? JSONEncoder().encode(spec.generation)) ?? Data(), as: UTF8.self)
        _ = settingsJSON

        // Producer: decodes and preprocesses clips ahead of the model (a bounded queue of 2).
        let queue = BoundedQueue<Work>(capacity: 2)
        let stop = stopFlag
        let store = self.store
        let spec = self.spec
        let decodeTime = Accumulator()
        let allFiles = files
        let producerDone = DispatchSemaphore(value: 0)
        let producer = Thread {
            defer { queue.close(); producerDone.signal() }
            for path in allFiles {
                if stop.isSet { return }
                let t = DispatchTime.now().uptimeNanoseconds
                defer { decodeTime.add(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9) }
                let video: Int64
                do {
                    let (fp, size, mtime) = try Scan.fingerprint(path)
                    video = try store.upsertVideo(path: path, size: size, mtime: mtime, fingerprint: fp, run: run)
                } catch {
                    continue // unreadable metadata: the decoder below reports it on the next run
                }
                do {
                    let decoder = try VideoDecoder(path: path)
                    let index = decoder.frameIndex()
                    let probe = decoder.probe
                    try store.setVideoInfo(video, duration: probe.duration, width: probe.displayWidth, height: probe.displayHeight,
                                           fps: probe.averageFrameRate, codec: probe.codec, frameCount: index.count)
                    let span = max(index.span, 1e-3)
                    let clips = try ClipSegmenter.segments(duration: span, length: spec.clips.seconds, overlap: spec.clips.overlap,
                                                           minRemainder: spec.clips.minRemainder)
                    let done = try store.doneClips(video: video, settingsKey: settingsKey)
                    let todo = clips.indices.filter { !done.contains($0) }
                    if todo.isEmpty {
                        queue.push(Work(video: video, path: path, clip: -1, clipCount: clips.count, range: ClipRange(start: 0, end: 0), lastOfVideo: true))
                        continue
                    }
                    for (n, i) in todo.enumerated() {
                        if stop.isSet { return }
                        var work = Work(video: video, path: path, clip: i, clipCount: clips.count, range: clips[i], lastOfVideo: n == todo.count - 1)
                        do {
                            var options = sampling
                            options.start = clips[i].start
                            options.end = clips[i].end
                            let sampled = try decoder.sample(options)
                            let (pixels, grid) = try processor.patches(frames: sampled.frames.map(RGBImage.init))
                            work.pixels = pixels; work.grid = grid
                            work.frames = sampled.frames.count; work.width = sampled.plan.width; work.height = sampled.plan.height
                            work.damage = sampled.damage
                            if spec.output.thumbnails > 0 {
                                do {
                                    work.thumbnails = try Thumbnail.make(frames: sampled.frames, maxSide: spec.output.thumbnails).map {
                                        Store.ThumbnailRow(kind: $0.kind.rawValue, mimeType: Thumbnail.mimeType, width: $0.width,
                                                           height: $0.height, bytes: $0.jpeg)
                                    }
                                } catch {
                                    work.thumbnailError = error.localizedDescription
                                }
                            }
                        } catch let e as MediaError {
                            work.failure = (e.kind, e.localizedDescription)
                        } catch {
                            work.failure = ("preprocess", "\(error)")
                        }
                        queue.push(work)
                    }
                } catch let e as MediaError {
                    queue.push(Work(video: video, path: path, clip: -1, clipCount: 0, range: ClipRange(start: 0, end: 0),
                                    failure: (e.kind, e.localizedDescription), lastOfVideo: true))
                } catch {
                    queue.push(Work(video: video, path: path, clip: -1, clipCount: 0, range: ClipRange(start: 0, end: 0),
                                    failure: ("error", "\(error)"), lastOfVideo: true))
                }
            }
        }
        producer.stackSize = 8 << 20
        producer.start()

        // Consumer: the model, one clip at a time; one transaction per finished clip.
        var videoFailed = Set<Int64>(), videoDamage: [Int64: DecodeDamage] = [:]
        var doneVideos = 0, tokens = 0
        let started = Date()
        while true {
            let w0 = DispatchTime.now().uptimeNanoseconds
            guard let work = queue.pop() else { break }
            report.waiting += Double(DispatchTime.now().uptimeNanoseconds - w0) / 1e9
            let name = (work.path as NSString).lastPathComponent
            if let failure = work.failure, work.clip < 0 {
                try store.setVideoStatus(work.video, status: "failed", errorKind: failure.kind, error: failure.message)
                report.stats.videosFailed += 1
                report.failed.append(work.path)
                videoFailed.insert(work.video)
                progress.event("failed: \(name): \(failure.message)")
            } else if let failure = work.failure {
                // A clip that could not be decoded: the video is damaged; later clips still run.
                var d = videoDamage[work.video] ?? DecodeDamage()
                d.lostSampledFrames += 1
                videoDamage[work.video] = d
                progress.event("clip \(work.clip) of \(name) failed: \(failure.message)")
            } else if let pixels = work.pixels, let grid = work.grid {
                let m0 = DispatchTime.now().uptimeNanoseconds
                let rows = try model.describe(pixels: pixels, grid: grid, description: spec.prompts.description, questions: spec.prompts.questions)
                report.model += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
                let s0 = DispatchTime.now().uptimeNanoseconds
                try store.saveClip(video: work.video, index: work.clip, start: work.range.start, end: work.range.end, frames: work.frames,
                                   width: work.width, height: work.height, results: rows, thumbnails: work.thumbnails,
                                   model: modelDirectory, settings: generationJSON,
                                   settingsKey: settingsKey, run: run)
                report.storing += Double(DispatchTime.now().uptimeNanoseconds - s0) / 1e9
                report.stats.clipsDone += 1
                if let e = work.thumbnailError { progress.event("clip \(work.clip) of \(name): no thumbnails: \(e)") }
                tokens += rows.reduce(0) { $0 + $1.generatedTokens }
                if let d = work.damage { videoDamage[work.video] = d }
            }
            let allReused = work.clip < 0 && work.failure == nil
            if allReused { report.stats.clipsSkipped += work.clipCount }
            if work.lastOfVideo && !videoFailed.contains(work.video) {
                // All of the video's clips are in: its summary, then its status.
                if !spec.prompts.summary.isEmpty, !(try store.hasSummary(video: work.video, settingsKey: settingsKey)) {
                    let descriptions = try store.descriptions(video: work.video, settingsKey: settingsKey)
                    if descriptions.count == work.clipCount && !descriptions.isEmpty {
                        let prompt = spec.prompts.summary.replacingOccurrences(
                            of: "{descriptions}", with: descriptions.enumerated().map { "\($0.offset + 1). \($0.element)" }.joined(separator: "\n"))
                        let m0 = DispatchTime.now().uptimeNanoseconds
                        var row = try model.text(prompt)
                        report.model += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
                        row.prompt = spec.prompts.summary
                        try store.saveSummary(video: work.video, row, model: modelDirectory, settings: generationJSON, settingsKey: settingsKey)
                        tokens += row.generatedTokens
                    }
                }
                if let d = videoDamage[work.video] {
                    try store.setVideoStatus(work.video, status: "damaged", errorKind: d.truncated ? "truncated" : "corrupt-data", error: d.summary)
                    report.videosDamaged += 1
                    progress.event("done with damage: \(name): \(d.summary)")
                } else if !allReused {
                    try store.setVideoStatus(work.video, status: "done")
                } else if try store.videoStatus(work.video) == "pending" {
                    try store.setVideoStatus(work.video, status: "done")
                }
                doneVideos += 1
            }
            let elapsed = Date().timeIntervalSince(started)
            let fraction = Double(doneVideos) / Double(max(1, files.count))
            let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
            progress.status(String(format: "[%d/%d files] %d clips (%d reused) %@ elapsed, ETA %@, %.1f tokens/s",
                                   doneVideos, files.count, report.stats.clipsDone, report.stats.clipsSkipped,
                                   Self.duration(elapsed), Self.duration(eta), Double(tokens) / max(elapsed, 1e-9)))
            if stopFlag.isSet { break }
        }
        report.interrupted = stopFlag.isSet
        queue.close()
        producerDone.wait() // the producer stops at its next check; nothing it does outlives the run
        report.stats.tokensGenerated = tokens
        report.decoding = decodeTime.value
        report.wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        try store.finishRun(run, status: report.interrupted ? "interrupted" : "finished", stats: report.stats, seconds: report.wall)
        progress.finish()
        return report
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
    }
}

/// A thread-safe flag.
final class StopFlag: @unchecked Sendable {
    private var value = false
    private let lock = NSLock()
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}

final class Accumulator: @unchecked Sendable {
    private var total = 0.0
    private let lock = NSLock()
    func add(_ x: Double) { lock.lock(); total += x; lock.unlock() }
    var value: Double { lock.lock(); defer { lock.unlock() }; return total }
}

/// A blocking queue of bounded size: the producer waits when it is full, the consumer when empty.
final class BoundedQueue<T>: @unchecked Sendable {
    private var items: [T] = []
    private var closed = false
    private let capacity: Int
    private let condition = NSCondition()

    init(capacity: Int) { self.capacity = capacity }

    func push(_ item: T) {
        condition.lock()
        while items.count >= capacity && !closed { condition.wait() }
        if !closed { items.append(item) }
        condition.broadcast()
        condition.unlock()
    }

    /// The next item, or nil once the queue is closed and empty.
    func pop() -> T? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty && !closed { condition.wait() }
        guard !items.isEmpty else { return nil }
        let item = items.removeFirst()
        condition.broadcast()
        return item
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
