import Foundation
import Media
import Tensors
import GRDB
import VLM

/// Where a run's progress goes: a live line on a terminal, timestamped lines otherwise, and
/// every event to the log file. Progress is best-effort: a full or closed stderr or log never
/// stops the run or touches what it stores (a log that fails is reported once, then dropped).
public final class Progress: @unchecked Sendable {
    public let quiet: Bool
    let live: Bool
    private var log: Int32 = -1
    private let logPath: String?
    private let lock = NSLock()
    private var lastLine = 0

    /// Opens (appends to) `logFile`, creating its folder; a log that cannot be opened is an error
    /// before the run starts, naming the file.
    public init(quiet: Bool, logFile: String?) throws {
        self.quiet = quiet
        live = !quiet && isatty(STDERR_FILENO) != 0
        logPath = logFile
        guard let logFile else { return }
        var st = stat()
        if stat(logFile, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            throw PipelineError.invalidArgument("--log \(logFile): is a folder; name a file to append progress lines to")
        }
        let dir = PathBytes.parent(logFile)
        if !dir.isEmpty && !FileManager.default.fileExists(atPath: dir) {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw PipelineError.invalidArgument("--log \(logFile): cannot create its folder \(dir): \(error.localizedDescription)")
            }
        }
        let fd = open(logFile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o644)
        guard fd >= 0 else {
            throw PipelineError.invalidArgument("--log \(logFile): cannot open it for appending: \(String(cString: strerror(errno)))")
        }
        log = fd
        logID = FileStatus.of(descriptor: fd).status?.id
    }

    /// The log file's identity (to keep it out of the inputs).
    public private(set) var logID: FileStatus.FileID?

    deinit { if log >= 0 { close(log) } }

    /// Writes all of `text` to `fd`; false when the descriptor refuses (full, closed, gone).
    @discardableResult
    public static func write(_ fd: Int32, _ text: String) -> Bool {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        bytes.removeAll()
        return true
    }

    private func toLog(_ line: String) {
        guard log >= 0 else { return }
        if !Self.write(log, line) {
            let why = String(cString: strerror(errno))
            close(log)
            log = -1
            Self.write(STDERR_FILENO, "warning: log \(logPath ?? ""): cannot write (\(why)); progress is no longer logged there\n")
        }
    }

    /// A message worth keeping (file done, failure, summary): to the log always, and to stderr
    /// unless quiet.
    public func event(_ message: String) {
        lock.lock(); defer { lock.unlock() }
        // Events quote file names and model text: nothing in them may drive the terminal.
        let message = TerminalText.safe(message)
        let line = "\(Store.now()) \(message)\n"
        toLog(line)
        guard !quiet else { return }
        if live {
            Self.write(STDERR_FILENO, "\r\u{1B}[K" + message + "\n")
            lastLine = 0
        } else {
            Self.write(STDERR_FILENO, line)
        }
    }

    /// The live status line (terminals only).
    public func status(_ message: String) {
        guard live else { return }
        let message = TerminalText.safe(message, keepNewlines: false)
        lock.lock(); defer { lock.unlock() }
        guard !finished else { return }
        Self.write(STDERR_FILENO, "\r\u{1B}[K" + message)
        lastLine = message.count
    }

    private var summaryText = ""
    private var activityText = ""
    private var activitySince = DispatchTime.now()
    private var ticker: DispatchSourceTimer?
    private var finished = false

    /// The run's totals on the live line (files, clips, elapsed, ETA).
    public func summary(_ text: String) {
        lock.withLock { summaryText = text }
        redraw()
    }

    /// What the run is doing now (decoding, encoding a clip, generating …), with the seconds it
    /// has been at it; the line is redrawn every second, so a long stage shows from its start.
    public func activity(_ text: String) {
        lock.withLock {
            if text != activityText { activitySince = DispatchTime.now() }
            activityText = text
        }
        redraw()
        startTicker()
    }

    /// The live line now: totals, then the activity and its seconds.
    public var line: String {
        lock.withLock {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - activitySince.uptimeNanoseconds) / 1e9
            guard !activityText.isEmpty else { return summaryText }
            return summaryText + " · " + activityText + (seconds >= 1 ? String(format: " (%.0f s)", seconds) : "")
        }
    }

    private func redraw() { status(line) }

    private func startTicker() {
        guard live else { return }
        lock.lock(); defer { lock.unlock() }
        guard ticker == nil else { return }
        let t = DispatchSource.makeTimerSource(queue: .global(qos: .utility))
        t.schedule(deadline: .now() + 1, repeating: 1)
        t.setEventHandler { [weak self] in self?.redraw() }
        t.resume()
        ticker = t
    }

    /// Ends the live line: nothing redraws it afterwards (a tick already under way included).
    public func finish() {
        lock.lock(); defer { lock.unlock() }
        ticker?.cancel()
        ticker = nil
        finished = true
        guard live, lastLine > 0 else { return }
        Self.write(STDERR_FILENO, "\n")
        lastLine = 0
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
    /// Of `model`: decoding steps (sequences of every clip in flight), and the tokens they chose.
    public var generating = 0.0
    public var stepTokens = 0
    /// The most KV-cache memory the decoding batch held at once (bytes).
    public var peakCacheBytes = 0
    /// Time the model waited for decoded clips (decoding on the critical path).
    public var waiting = 0.0
    /// Decoding and preprocessing time (overlapped with the model's work).
    public var decoding = 0.0
    /// Loading the model; scanning and run setup before it; writing finished clips.
    public var loading = 0.0, setup = 0.0, storing = 0.0
    /// Everything else on the critical path: scanning, fingerprints, the database, bookkeeping.
    public var overhead: Double { max(0, wall - model - waiting) }
    public var failed: [String] = []
    /// Entries of the inputs that were not opened (special files, dangling links, loops).
    public var skipped: [Scan.Skipped] = []
}

/// Runs a pipeline spec over its inputs into its database: resumable, failure-isolated, with
/// decoding of the next clip overlapping the model's work on the current one.
public final class Runner: @unchecked Sendable {
    public let spec: PipelineSpec
    public let store: Store
    public let progress: Progress
    public let shard: (k: Int, n: Int)?
    private let stopFlag = StopFlag()
    /// What the producer is decoding now ("clip 2/6 of a.mp4"), for the live line.
    private let producerActivity = Shared<String?>(nil)

    public init(spec: PipelineSpec, databasePath: String? = nil, shard: (k: Int, n: Int)? = nil, progress: Progress) throws {
        self.spec = spec
        self.shard = shard
        self.progress = progress
        if let s = shard, !(s.n >= 1 && s.k >= 1 && s.k <= s.n) {
            throw PipelineError.invalidArgument("--shard \(s.k)/\(s.n): N must be ≥ 1 and K in 1…N")
        }
        try spec.validate(path: spec.sourcePath)
        store = try Store(path: databasePath ?? spec.resolve(spec.output.database))
        // One writer at a time: a second run on this database is refused here, before any work;
        // runs a killed process left `running` get their final status.
        abandonedRuns = try store.lockForWriting()
    }

    /// Runs found `running` with no live process behind them, marked `abandoned` at start.
    public private(set) var abandonedRuns = 0
    /// The run in progress (0 before it starts).
    private let currentRun = RunID()

    /// Records the run as interrupted at once (a second Ctrl-C, just before the process exits):
    /// waits at most `timeout` seconds for the database.
    public func abandon(timeout: Double = 2) {
        guard let run = currentRun.value else { return }
        let done = DispatchSemaphore(value: 0)
        let store = self.store
        Thread.detachNewThread {
            try? store.setRunStatus(run, .interrupted)
            done.signal()
        }
        _ = done.wait(timeout: .now() + timeout)
    }

    /// Asks the run to stop after the clip in flight (SIGINT/SIGTERM call this).
    public func requestStop() { stopFlag.set() }

    /// The key under which finished clips are reused: the model (its directory and config), the
    /// prompts, sampling, clip and generation settings.
    public static func settingsKey(_ spec: PipelineSpec, modelDirectory: String) throws -> (key: String, json: String) {
        let configBytes = FileManager.default.contents(atPath: (modelDirectory as NSString).appendingPathComponent("config.json")) ?? Data()
        let tokenizerBytes = FileManager.default.contents(atPath: (modelDirectory as NSString).appendingPathComponent("tokenizer.json")) ?? Data()
        struct Settings: Encodable {
            var model: String, modelConfig: UInt64, tokenizer: UInt64, dtype: String?, visionDType: String?
            var sampling: PipelineSpec.Sampling, clips: PipelineSpec.Clips, prompts: PipelineSpec.Prompts, generation: PipelineSpec.Generation
        }
        // A dtype the checkpoint would be run in anyway is no setting: `--dtype f32` on an f32
        // checkpoint (or bf16 on a bf16 one) keys as leaving it out, and reuses those clips.
        let keyed = keyedDTypes(dtype: spec.dtype, visionDType: spec.visionDType, defaults: defaultDTypes(modelDirectory))
        let s = Settings(model: modelDirectory, modelConfig: Scan.fnv1a(configBytes), tokenizer: Scan.fnv1a(tokenizerBytes), dtype: keyed.dtype,
                         visionDType: keyed.vision, sampling: spec.sampling, clips: spec.clips, prompts: spec.prompts, generation: spec.generation)
        let data = try sortedJSON(s)
        return (String(format: "%016llx", Scan.fnv1a(data)), String(decoding: data, as: UTF8.self))
    }

    /// The dtypes as the settings key holds them: the language model's only when it is not the
    /// one the checkpoint runs in anyway, the tower's only where it differs from what the keyed
    /// dtype alone gives it (a checkpoint's tower may be stored otherwise than its language
    /// model). Without flags, or unknown defaults, the key is what it always was.
    static func keyedDTypes(dtype: String?, visionDType: String?, defaults: (language: String?, vision: String?))
        -> (dtype: String?, vision: String?) {
        let keyed = dtype != nil && dtype == defaults.language ? nil : dtype
        let tower = visionDType ?? dtype ?? defaults.vision
        let implied = keyed ?? defaults.vision
        return (keyed, tower == implied ? nil : tower)
    }

    /// The dtypes a checkpoint runs in without --dtype (bf16 when its weights are bf16, else
    /// f32), for the language model and the tower, as the loaders choose them (nil: unknown).
    static func defaultDTypes(_ modelDirectory: String) -> (language: String?, vision: String?) {
        guard let checkpoint = try? Checkpoint(directory: modelDirectory) else { return (nil, nil) }
        let names = checkpoint.names
        func dtype(ofNameEnding suffix: String) -> String? {
            guard let name = names.first(where: { $0.hasSuffix(suffix) }), let t = try? checkpoint.tensor(name) else { return nil }
            return t.dtype == .bf16 ? "bf16" : "f32"
        }
        return (dtype(ofNameEnding: "embed_tokens.weight"), dtype(ofNameEnding: "patch_embed.proj.weight"))
    }

    /// `value` as JSON with its keys sorted: the same settings are the same bytes in every run
    /// (a dictionary's order changes from process to process).
    static func stableJSON<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? sortedJSON(value)) ?? Data(), as: UTF8.self)
    }

    static func sortedJSON<T: Encodable>(_ value: T) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return try e.encode(value)
    }

    /// One item from the producer: a clip ready for the model, a clip or file that failed, or
    /// the end of a video whose clips were all done before.
    struct Work: @unchecked Sendable {
        var video: Int64
        var path: String
        var clip: Int
        var clipCount: Int
        var range: ClipRange
        /// The clip (or image) as the model takes it.
        var input: VisualInput?
        var frames = 0, width = 0, height = 0
        var failure: (kind: String, message: String)?
        var damage: DecodeDamage?
        var thumbnails: [Store.ThumbnailRow] = []
        var thumbnailError: String?
        /// The last item of its video (the summary may follow).
        var lastOfVideo = false
        /// An error that ends the run (the database failed): no file's status changes.
        var fatal: Error?
        /// Clips of this video already done under the same settings (on its first item).
        var reused = 0

        static func whole(_ video: Int64, _ path: String, clipCount: Int, failure: (kind: String, message: String)? = nil) -> Work {
            Work(video: video, path: path, clip: -1, clipCount: clipCount, range: ClipRange(start: 0, end: 0), failure: failure, lastOfVideo: true)
        }
        static func fatal(_ error: Error) -> Work {
            Work(video: 0, path: "", clip: -1, clipCount: 0, range: ClipRange(start: 0, end: 0), fatal: error)
        }
    }

    /// A message that names the file once (Media's errors already start with the path).
    static func naming(_ path: String, _ message: String) -> String {
        let shown = PathBytes.display(path)
        return message.contains(shown) ? message : "\(shown): \(message)"
    }

    /// Failure kinds that mean the file is damaged (its other clips still count); any other
    /// clip failure fails the file.
    static let damageKinds: Set<String> = ["truncated", "corrupt-data", "decode-failed"]

    /// What the producer and the model share for one run.
    struct Context: @unchecked Sendable {
        var run: Int64
        var files: [String]
        var settingsKey: String
        var modelDirectory: String
        var generationJSON: String
        var sampling: SamplingOptions
        var imageSampling: SamplingOptions
        var model: ClipModel
    }

    /// The rows each done clip has: its description and one answer per question.
    private var resultsPerClip: Int { 1 + spec.prompts.questions.count }

    public func run() throws -> RunReport {
        do { return try runAll() } catch let e as DatabaseError { throw RunDatabaseError(path: store.path, message: Store.reason(e)) }
    }

    private func runAll() throws -> RunReport {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var report = RunReport()
        let modelDirectory = try spec.model.map(spec.resolve) ?? ClipModel.defaultDirectory()
        let (settingsKey, _) = try Self.settingsKey(spec, modelDirectory: modelDirectory)
        let specJSON = Self.stableJSON(spec)
        let listing = try Scan.listing(spec.inputs, resolve: spec.resolve)
        // The run's own database (and its journal files) is never an input, whatever the extensions.
        let own = Set(["", "-wal", "-shm", "-journal"].compactMap { FileStatus.of(store.path + $0).status?.id })
        var files = listing.files.filter { f in FileStatus.of(f).status.map { !own.contains($0.id) } ?? true }
        if let logID = progress.logID, let input = listing.files.first(where: { FileStatus.of($0).status?.id == logID }) {
            throw PipelineError.invalidArgument("--log names \(PathBytes.display(input)), one of the inputs; name another file")
        }
        if let s = shard { files = files.filter { Scan.shard(of: $0, count: s.n) == s.k } }
        let roots = spec.inputs.paths.map(spec.resolve).filter { !$0.contains("*") && !$0.contains("?") }
        let run = try store.startRun(spec: specJSON, model: modelDirectory, settingsKey: settingsKey, shard: shard.map { "\($0.k)/\($0.n)" })
        currentRun.set(run)
        report.run = run
        report.skipped = listing.skipped
        do {
            try execute(&report, run: run, files: files, roots: roots, modelDirectory: modelDirectory, settingsKey: settingsKey, t0: t0)
        } catch {
            // The run ends on an error (a full disk, a damaged database): its row says so when
            // the database still takes writes.
            report.wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            try? store.finishRun(run, status: .failed, stats: report.stats, seconds: report.wall)
            progress.finish()
            throw error
        }
        return report
    }

    private func execute(_ report: inout RunReport, run: Int64, files: [String], roots: [String], modelDirectory: String,
                         settingsKey: String, t0: UInt64) throws {
        report.stats.videosSeen = files.count
        // A shard marks only its own paths: the other shards' files are not its to see.
        report.videosMissing = try store.markMissing(seen: files, roots: roots, inScope: { path in
            shard.map { Scan.shard(of: path, count: $0.n) == $0.k } ?? true
        })
        progress.event("run \(run): \(files.count) video file(s)\(shard.map { " (shard \($0.k)/\($0.n))" } ?? ""), model \(modelDirectory), database \(store.path)")
        // Special files (FIFOs, sockets, devices), dangling links and link loops are never opened.
        for skip in report.skipped.prefix(20) { progress.event("skipped: \(PathBytes.display(skip.path)): \(skip.reason)") }
        if report.skipped.count > 20 { progress.event("skipped \(report.skipped.count - 20) more entries that are not regular files") }
        if abandonedRuns > 0 {
            progress.event("\(abandonedRuns) earlier run(s) had ended without finishing (killed, crashed or stopped by a full disk); marked abandoned")
        }

        let dtype = spec.dtype.flatMap(ComputeDType.init(rawValue:))
        let loadStart = DispatchTime.now().uptimeNanoseconds
        let model = try ClipModel(directory: modelDirectory, dtype: dtype, visionDType: spec.visionDType.flatMap(ComputeDType.init(rawValue:)),
                                  generation: spec.generation)
        report.loading = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
        try checkPromptLengths(model)
        report.setup = Double(loadStart - t0) / 1e9
        let context = Context(run: run, files: files, settingsKey: settingsKey, modelDirectory: modelDirectory,
                              generationJSON: Self.stableJSON(spec.generation),
                              sampling: model.sampling(spec.samplingOptions), imageSampling: model.sampling(spec.samplingOptions, kind: .image),
                              model: model)

        // Producer: decodes and preprocesses clips ahead of the model (a bounded queue of 2).
        let queue = BoundedQueue<Work>(capacity: 2)
        let decodeTime = Accumulator()
        let producerDone = DispatchSemaphore(value: 0)
        let producer = Thread { [self] in
            defer { queue.close(); producerDone.signal() }
            produce(context, into: queue, time: decodeTime)
        }
        producer.stackSize = 8 << 20
        producer.start()
        defer {
            queue.close()
            producerDone.wait() // the producer stops at its next check; nothing it does outlives the run
        }

        // Consumer: clips are encoded one at a time (vision, prefill) and their prompts decode
        // together with those of the other clips in flight (`decodingBatch` sequences); each
        // clip is stored, in one transaction, as soon as its last answer is done.
        var state = VideoState()
        let batch = model.model.answerBatch(capacity: spec.decodingBatch)
        let flight = Flight()
        var doneVideos = 0, tokens = 0
        let started = Date()
        func refresh() {
            let elapsed = Date().timeIntervalSince(started)
            let fraction = Double(doneVideos) / Double(max(1, files.count))
            let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
            progress.summary(String(format: "[%d/%d files] %d clips (%d reused) %@ elapsed, ETA %@",
                                    doneVideos, files.count, report.stats.clipsDone, report.stats.clipsSkipped,
                                    Self.duration(elapsed), Self.duration(eta)))
        }
        refresh()
        var open = true
        while true {
            // Admit clips while the batch has room (or nothing decodes: then wait for one).
            while open && !stopFlag.isSet {
                let busy = batch.activeCount + batch.waitingCount
                guard busy == 0 || batch.hasRoom else { break }
                let next: Work?
                if busy == 0 {
                    progress.activity(producerActivity.value.map { "decoding \($0)" } ?? "decoding")
                    let w0 = DispatchTime.now().uptimeNanoseconds
                    next = queue.pop()
                    report.waiting += Double(DispatchTime.now().uptimeNanoseconds - w0) / 1e9
                } else {
                    switch queue.poll() {
                    case .item(let w): next = w
                    case .empty: next = nil
                    case .closed: next = nil; open = false
                    }
                    guard next != nil else { break }
                }
                guard let work = next else { open = false; break }
                if let fatal = work.fatal { throw fatal }
                try admit(work, batch: batch, flight: flight, context: context, state: &state, report: &report)
                if work.lastOfVideo { flight.last[work.video] = work }
                tokens += try finishReady(flight, doneVideos: &doneVideos, model: model, context: context, state: &state, report: &report)
                refresh()
            }
            if batch.activeCount + batch.waitingCount > 0 {
                let g0 = DispatchTime.now().uptimeNanoseconds, before = flight.tokens
                try batch.step()
                let g = Double(DispatchTime.now().uptimeNanoseconds - g0) / 1e9
                report.model += g
                report.generating += g
                report.stepTokens += flight.tokens - before
                report.peakCacheBytes = batch.peakCacheBytes
            }
            for (work, answers) in flight.takeFinished() {
                tokens += try save(work, answers: answers, context: context, state: &state, report: &report)
            }
            tokens += try finishReady(flight, doneVideos: &doneVideos, model: model, context: context, state: &state, report: &report)
            refresh()
            if batch.activeCount > 0 {
                progress.activity(String(format: "generating: %d sequence%@ of %d clip%@, %d tokens, %.1f tokens/s",
                                         batch.activeCount, batch.activeCount == 1 ? "" : "s", flight.clips, flight.clips == 1 ? "" : "s",
                                         flight.tokens, Double(report.stepTokens) / max(report.generating, 1e-9)))
            }
            if (!open || stopFlag.isSet) && batch.activeCount + batch.waitingCount == 0 { break }
        }
        report.interrupted = stopFlag.isSet
        report.stats.tokensGenerated = tokens
        report.decoding = decodeTime.value
        report.wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        try store.finishRun(run, status: report.interrupted ? .interrupted : .finished, stats: report.stats, seconds: report.wall)
        store.checkpoint()
        progress.finish()
    }

    /// Every prompt's text must leave room in the model's context (the visual tokens and the
    /// answer come on top): a settings error naming the key, before any work.
    private func checkPromptLengths(_ model: ClipModel) throws {
        let context = model.model.contextLength
        let summaryText = spec.prompts.summary.replacingOccurrences(of: "{descriptions}", with: "")
        for (key, text) in [("prompts.description", spec.prompts.description), ("prompts.summary", summaryText)]
            + spec.prompts.questions.enumerated().map({ ("prompts.questions[\($0.offset)]", $0.element) }) {
            // The model's own added tokens too (<think>, <tool_call>, …), not only <|…|>-shaped
            // text: describe would refuse every file's prompt after work had begun.
            if let token = model.tokenizer.addedTokens(in: text).first {
                throw PipelineError.invalidSpec(path: spec.sourcePath, key: key, reason: "contains the special token \(token.content); prompts are plain text")
            }
            let n = model.tokenizer.encode(text).count
            guard n + 64 <= context else {
                throw PipelineError.invalidSpec(path: spec.sourcePath, key: key, reason: "\(n) tokens: too long for the model's context of \(context) (max_position_embeddings)")
            }
        }
    }

    /// Per-video bookkeeping of the consumer.
    struct VideoState {
        /// Files that failed: no further clip of theirs is admitted, and they get no summary.
        var failed = Set<Int64>()
        /// Files with a clip the model could not take (failed, named): their other clips still
        /// run, and they get no summary.
        var clipFailed = Set<Int64>()
        var damage: [Int64: DecodeDamage] = [:]
    }

    /// The producer's loop: every file's clips, sampled and preprocessed, into `queue`. A file's
    /// own failure becomes a failure item; a database failure ends the run (a fatal item).
    private func produce(_ c: Context, into queue: BoundedQueue<Work>, time: Accumulator) {
        for path in c.files {
            if stopFlag.isSet { return }
            let t = DispatchTime.now().uptimeNanoseconds
            defer { time.add(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9) }
            do {
                for work in try produce(path: path, c) {
                    if stopFlag.isSet { return }
                    queue.push(work)
                }
            } catch {
                queue.push(.fatal(error))
                return
            }
        }
    }

    /// One file's items. Throws only what ends the run (database errors).
    private func produce(path: String, _ c: Context) throws -> AnyIterator<Work> {
        let identity: (fingerprint: String, size: Int64, mtime: Double)
        do {
            identity = try Scan.fingerprint(path)
        } catch {
            // Unreadable (permission, a special file, gone): the file fails, named, and the run goes on.
            let video = try store.upsertUnreadable(path: path, run: c.run)
            return AnyIterator([Work.whole(video, path, clipCount: 0, failure: ("unreadable", Self.naming(path, error.localizedDescription)))].makeIterator())
        }
        let video = try store.upsertVideo(path: path, size: identity.size, mtime: identity.mtime, fingerprint: identity.fingerprint, run: c.run)
        if Scan.isImage(path) { return AnyIterator([try image(path, video: video, c)].makeIterator()) }
        let decoder: VideoDecoder
        let clips: [ClipRange]
        let done: Set<Int>
        do {
            decoder = try VideoDecoder(path: path)
            let index = decoder.frameIndex()
            let probe = decoder.probe
            // The duration the frames cover, not the container's claim (a header may declare 10⁹ s
            // over 2 s of frames; a truncated file holds less than it declares).
            try store.setVideoInfo(video, duration: index.count > 0 ? index.span : probe.duration,
                                   width: probe.displayWidth, height: probe.displayHeight,
                                   fps: probe.averageFrameRate, codec: probe.codec, frameCount: index.count)
            let span = max(index.span, 1e-3)
            let planned = try ClipSegmenter.segments(duration: span, length: spec.clips.seconds, overlap: spec.clips.overlap,
                                               minRemainder: spec.clips.minRemainder,
                                               minimumStride: min(index.medianFrameDuration, PipelineSpec.minimumClipStride))
            // A window that holds no frame (a variable-rate video's gap, a paused recording) is
            // not a clip: it is left out rather than failing the file.
            let times = index.times
            clips = planned.filter { r in
                let (lo, hi) = FrameSampler.window(times: times, start: r.start, end: r.end)
                return lo <= hi
            }
            guard !clips.isEmpty else {
                throw MediaError.decodeFailed(path: path, reason: "no clip window holds a frame")
            }
            done = try store.doneClips(video: video, settingsKey: c.settingsKey, results: resultsPerClip)
        } catch let e as MediaError {
            return AnyIterator([Work.whole(video, path, clipCount: 0, failure: (e.kind, e.localizedDescription))].makeIterator())
        }
        let todo = clips.indices.filter { !done.contains($0) }
        if todo.isEmpty {
            var whole = Work.whole(video, path, clipCount: clips.count)
            whole.reused = clips.count
            return AnyIterator([whole].makeIterator())
        }
        var next = 0
        // Lazily: each clip is decoded only when the queue has room for it.
        return AnyIterator { [self] in
            guard next < todo.count else { return nil }
            let i = todo[next]
            next += 1
            var work = clip(i, of: clips, video: video, path: path, decoder: decoder, last: next == todo.count, c)
            if next == 1 { work.reused = clips.count - todo.count }
            return work
        }
    }

    /// Samples, preprocesses and pictures one clip.
    private func clip(_ i: Int, of clips: [ClipRange], video: Int64, path: String, decoder: VideoDecoder, last: Bool, _ c: Context) -> Work {
        var work = Work(video: video, path: path, clip: i, clipCount: clips.count, range: clips[i], lastOfVideo: last)
        producerActivity.value = "clip \(i + 1)/\(clips.count) of \(PathBytes.display((path as NSString).lastPathComponent))"
        do {
            var options = c.sampling
            options.start = clips[i].start
            options.end = clips[i].end
            let sampled = try decoder.sample(options)
            work.input = try c.model.model.videoInput(sampled.frames, fps: sampled.plan.sampleFPS)
            fill(&work, sampled)
        } catch let e as MediaError {
            work.failure = (e.kind, e.localizedDescription)
        } catch {
            work.failure = ("preprocess", "\(error.localizedDescription)")
        }
        return work
    }

    /// What a sampled clip or image adds to its item: size, damage, pictures.
    private func fill(_ work: inout Work, _ sampled: SampledVideo) {
        work.frames = sampled.frames.count; work.width = sampled.plan.width; work.height = sampled.plan.height
        work.damage = sampled.damage
        guard spec.output.thumbnails > 0 else { return }
        do {
            work.thumbnails = try Thumbnail.make(frames: sampled.frames, maxSide: spec.output.thumbnails).map {
                Store.ThumbnailRow(kind: $0.kind.rawValue, mimeType: Thumbnail.mimeType, width: $0.width, height: $0.height, bytes: $0.jpeg)
            }
        } catch {
            work.thumbnailError = error.localizedDescription
        }
    }

    /// An image file: one item, prompted as an image (its first frame, sized by the image rule).
    /// Throws only database errors (they end the run).
    private func image(_ path: String, video: Int64, _ c: Context) throws -> Work {
        var work = Work(video: video, path: path, clip: 0, clipCount: 1, range: ClipRange(start: 0, end: 0), lastOfVideo: true)
        let decoder: VideoDecoder
        do { decoder = try VideoDecoder(path: path) } catch let e as MediaError {
            return Work.whole(video, path, clipCount: 0, failure: (e.kind, e.localizedDescription))
        }
        let probe = decoder.probe
        try store.setVideoInfo(video, duration: nil, width: probe.displayWidth, height: probe.displayHeight, fps: nil,
                               codec: probe.codec, frameCount: 1, media: .image)
        if try store.doneClips(video: video, settingsKey: c.settingsKey, results: resultsPerClip).contains(0) {
            var whole = Work.whole(video, path, clipCount: 1)
            whole.reused = 1
            return whole
        }
        do {
            let sampled = try decoder.sample(c.imageSampling)
            guard let frame = sampled.frames.first else { throw MediaError.decodeFailed(path: path, reason: "the image holds no picture") }
            work.input = try c.model.model.imageInput(RGBImage(frame))
            fill(&work, sampled)
        } catch let e as MediaError {
            return Work.whole(video, path, clipCount: 0, failure: (e.kind, e.localizedDescription))
        } catch {
            return Work.whole(video, path, clipCount: 0, failure: ("preprocess", error.localizedDescription))
        }
        return work
    }

    /// Clips in flight: submitted to the decoding batch, not yet stored. A class: the batch's
    /// callbacks (run inside `step()`, on the consumer's thread) add to it.
    final class Flight {
        /// Clips in flight per video.
        var perVideo: [Int64: Int] = [:]
        /// The last item of each video whose clips are still in flight (its summary and status wait for them).
        var last: [Int64: Work] = [:]
        /// Clips whose answers are all done, in the order they finished.
        var finished: [(Work, [Answer])] = []
        /// Tokens generated so far by the clips in flight.
        var tokens = 0
        var clips: Int { perVideo.values.reduce(0, +) }

        /// The finished clips, no longer in flight.
        func takeFinished() -> [(Work, [Answer])] {
            defer { finished.removeAll() }
            for (work, _) in finished { perVideo[work.video, default: 1] -= 1 }
            return finished
        }
    }

    /// Starts one item: a failed file or clip is recorded at once; a clip is encoded (vision and
    /// prefill, now) and its prompts join `batch`, to be stored by `save` when all are answered.
    private func admit(_ work: Work, batch: any AnswerBatch, flight: Flight, context c: Context,
                       state: inout VideoState, report: inout RunReport) throws {
        let name = PathBytes.display((work.path as NSString).lastPathComponent)
        report.stats.clipsSkipped += work.reused
        if let failure = work.failure, work.clip < 0 || !Self.damageKinds.contains(failure.kind) {
            // The file failed (it cannot be opened, or a clip asks what it cannot give); one
            // that failed already keeps its first error.
            guard !state.failed.contains(work.video) else { return }
            if state.clipFailed.contains(work.video) { state.failed.insert(work.video); return }
            try fail(work, kind: failure.kind, message: failure.message, state: &state, report: &report)
            return
        }
        if let failure = work.failure {
            // A clip that could not be decoded: the video is damaged; later clips still run.
            var d = state.damage[work.video] ?? DecodeDamage()
            d.lostSampledFrames += 1
            state.damage[work.video] = d
            progress.event("clip \(work.clip) of \(name) failed: \(failure.message)")
            return
        }
        guard let input = work.input, !state.failed.contains(work.video) else { return }
        let what = work.clip < 0 || Scan.isImage(work.path) ? name : "clip \(work.clip + 1)/\(work.clipCount) of \(name)"
        batch.onStage = { [progress] stage in progress.activity("\(stage == .encoding ? "encoding" : "prefill") \(what)") }
        defer { batch.onStage = nil }
        let m0 = DispatchTime.now().uptimeNanoseconds
        defer { report.model += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9 }
        // What is stored with the answers, without the pixels (freed once the clip is encoded).
        var stored = work
        stored.input = nil
        do {
            try batch.submit([spec.prompts.description] + spec.prompts.questions, about: input, parameters: c.model.parameters,
                             onToken: { _, _ in flight.tokens += 1 }, onPromptDone: { _ in }) { [stored] in flight.finished.append((stored, $0)) }
        } catch VLMError.invalidInput(let message) {
            // This clip asks the model for what it cannot do (a prompt beyond its context): the
            // file fails, naming its first such clip; its other clips still run, so what is
            // stored does not depend on how many were in flight (the batch size, the timing).
            if !state.clipFailed.contains(work.video) && !state.failed.contains(work.video) {
                try fail(work, kind: "model-input", message: "clip \(work.clip): \(message)", state: &state, report: &report, stopping: false)
            }
            return
        }
        flight.perVideo[work.video, default: 0] += 1
        // Damage is recorded in clip order (clips may finish out of order).
        if let d = work.damage { state.damage[work.video] = d }
    }

    /// Records a file as failed (once), named in the progress; `stopping`: no further clip of it
    /// is admitted (else only its summary is left out).
    private func fail(_ work: Work, kind: String, message: String, state: inout VideoState, report: inout RunReport,
                      stopping: Bool = true) throws {
        var stats = report.stats
        stats.videosFailed += 1
        try store.setVideoStatus(work.video, status: .failed, errorKind: kind, error: message, progress: (report.run, stats))
        report.stats = stats
        report.failed.append(work.path)
        if stopping { state.failed.insert(work.video) } else { state.clipFailed.insert(work.video) }
        progress.event("failed: \(PathBytes.display((work.path as NSString).lastPathComponent)): \(message)")
    }

    /// Stores a clip whose answers are all done (one transaction); returns the tokens generated.
    private func save(_ work: Work, answers: [Answer], context c: Context, state: inout VideoState, report: inout RunReport) throws -> Int {
        // Stored even when its file failed meanwhile: every clip admitted before a failure is
        // kept, however many of them were still in flight.
        let rows = answers.enumerated().map { Store.ResultRow(kind: $0.offset == 0 ? "description" : "answer", $0.element) }
        let s0 = DispatchTime.now().uptimeNanoseconds
        try store.saveClip(video: work.video, index: work.clip, start: work.range.start, end: work.range.end, frames: work.frames,
                           width: work.width, height: work.height, results: rows, thumbnails: work.thumbnails,
                           model: c.modelDirectory, settings: c.generationJSON, settingsKey: c.settingsKey, run: c.run)
        report.storing += Double(DispatchTime.now().uptimeNanoseconds - s0) / 1e9
        report.stats.clipsDone += 1
        if let e = work.thumbnailError {
            progress.event("clip \(work.clip) of \(PathBytes.display((work.path as NSString).lastPathComponent)): no thumbnails: \(e)")
        }
        return rows.reduce(0) { $0 + $1.generatedTokens }
    }

    /// Finishes every video whose last item has come and whose clips are all stored; returns the
    /// tokens its summary generated.
    private func finishReady(_ flight: Flight, doneVideos: inout Int, model: ClipModel, context c: Context,
                             state: inout VideoState, report: inout RunReport) throws -> Int {
        var tokens = 0
        for (video, work) in flight.last.sorted(by: { $0.key < $1.key }) where flight.perVideo[video, default: 0] == 0 {
            flight.last[video] = nil
            guard !state.failed.contains(video) && !state.clipFailed.contains(video) else { continue }
            tokens += try finishVideo(work, model: model, context: c, state: &state, report: &report)
            doneVideos += 1
        }
        return tokens
    }

    /// All of a video's clips are in: its summary, then its status. Returns the tokens generated.
    private func finishVideo(_ work: Work, model: ClipModel, context c: Context, state: inout VideoState, report: inout RunReport) throws -> Int {
        let name = PathBytes.display((work.path as NSString).lastPathComponent)
        let allReused = work.clip < 0 && work.failure == nil
        var tokens = 0
        var summaryProblem: String?
        // A summary sums up a video's clips; an image has one description and no summary.
        if !spec.prompts.summary.isEmpty, !Scan.isImage(work.path), !(try store.hasSummary(video: work.video, settingsKey: c.settingsKey)) {
            let descriptions = try store.descriptions(video: work.video, settingsKey: c.settingsKey)
            if descriptions.count == work.clipCount && !descriptions.isEmpty {
                let prompt = spec.prompts.summary.replacingOccurrences(
                    of: "{descriptions}", with: descriptions.enumerated().map {
                        // A description is text: special-token text the model wrote is left out,
                        // or the template would read it as its own (and refuse the prompt).
                        "\($0.offset + 1). \(model.tokenizer.removingAddedTokens($0.element))"
                    }.joined(separator: "\n"))
                let m0 = DispatchTime.now().uptimeNanoseconds
                do {
                    var row = Store.ResultRow(kind: "summary", try model.text(prompt))
                    report.model += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
                    row.prompt = spec.prompts.summary
                    try store.saveSummary(video: work.video, row, model: c.modelDirectory, settings: c.generationJSON, settingsKey: c.settingsKey)
                    tokens += row.generatedTokens
                } catch VLMError.invalidInput(let message) {
                    // The descriptions of a long video may not fit the model's context: the video
                    // keeps its clips, without a summary, and says why.
                    report.model += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
                    summaryProblem = "no summary: \(message)"
                    progress.event("\(name): \(summaryProblem ?? "")")
                }
            }
        }
        // The video's status and the run's counts so far, in one transaction.
        let damage = state.damage[work.video]
        let status: (Store.VideoStatus, String?, String?)?
        if let d = damage {
            status = (.damaged, d.truncated ? "truncated" : "corrupt-data", d.summary)
        } else if let summaryProblem {
            status = (.done, "summary-skipped", summaryProblem)
        } else if try !allReused || store.videoStatus(work.video) == .pending {
            status = (.done, nil, nil)
        } else {
            status = nil
        }
        if let (s, kind, error) = status {
            try store.setVideoStatus(work.video, status: s, errorKind: kind, error: error, progress: (report.run, report.stats))
        } else {
            try store.recordProgress(report.run, stats: report.stats)
        }
        if let d = damage {
            report.videosDamaged += 1
            progress.event("done with damage: \(name): \(d.summary)")
        }
        return tokens
    }

    static func duration(_ s: Double) -> String { clock(s.rounded()) }

    /// Whole seconds of `s` (toward zero) as H:MM:SS; a time past any clock (a hostile file's
    /// 10¹⁹ s, an infinity) as seconds, never a trap in the conversion.
    public static func clock(_ s: Double) -> String {
        guard s.isFinite, s.magnitude < 1e15 else { return String(format: "%g s", s) }
        let t = Int(s)
        return String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
    }
}

/// The id of the run in progress, shared with a signal handler.
final class RunID: @unchecked Sendable {
    private var id: Int64?
    private let lock = NSLock()
    var value: Int64? { lock.lock(); defer { lock.unlock() }; return id }
    func set(_ v: Int64) { lock.lock(); id = v; lock.unlock() }
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

/// A value shared between the producer and the consumer.
final class Shared<T>: @unchecked Sendable {
    private var stored: T
    private let lock = NSLock()
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
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

    enum Poll { case item(T), empty, closed }

    /// The next item if one is there, without waiting.
    func poll() -> Poll {
        condition.lock()
        defer { condition.unlock() }
        guard !items.isEmpty else { return closed ? .closed : .empty }
        let item = items.removeFirst()
        condition.broadcast()
        return .item(item)
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

/// A database error that ends a run, said as the database's: its path and SQLite's message
/// (not the statement that met it).
public struct RunDatabaseError: LocalizedError {
    public var path: String
    public var message: String
    public var errorDescription: String? { "\(path): \(message)" }
}
