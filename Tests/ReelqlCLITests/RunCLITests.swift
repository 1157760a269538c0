import Foundation
import GRDB
import Pipeline
import Testing

/// `reelql run` as a process: exit codes, interruption and kill -9 recovery.
@Suite(.serialized) struct RunCLITests {
    struct Workspace {
        let root: String
        init(_ videos: [String], clipSeconds: Double = 2, tokens: Int = 6) throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-cli-ws-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: root + "/videos", withIntermediateDirectories: true)
            for v in videos { try FileManager.default.copyItem(atPath: CLI.video(v), toPath: "\(root)/videos/\(v)") }
            let model = CLI.root.appendingPathComponent("fixtures/models/tiny-qwen2vl-chat").path
            try """
            inputs: {paths: [videos]}
            sampling: {fps: 2, min_pixels: 3136, max_pixels: 9408, max_frames: 4}
            clips: {seconds: \(clipSeconds), min_remainder: 0.25}
            model: \(model)
            prompts: {description: Describe this clip., questions: [Is there a dog?]}
            generation: {max_new_tokens: \(tokens)}
            """.write(toFile: root + "/spec.yaml", atomically: true, encoding: .utf8)
        }
        var spec: String { root + "/spec.yaml" }
        func remove() { try? FileManager.default.removeItem(atPath: root) }
    }

    static func rows(_ db: String) throws -> [String] {
        try Store(path: db).db.read { db in
            var r = try String.fetchAll(db, sql: "SELECT path || '|' || status || '|' || ifnull(error_kind, '') FROM videos")
            r += try String.fetchAll(db, sql: "SELECT v.path || '|' || c.clip_index || '|' || c.start_seconds || '|' || c.frames FROM clips c JOIN videos v ON v.id = c.video_id")
            r += try String.fetchAll(db, sql: "SELECT v.path || '|' || r.clip_index || '|' || r.kind || '|' || r.prompt || '|' || r.text FROM results r JOIN videos v ON v.id = r.video_id")
            return r.sorted()
        }
    }

    static func start(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = CLI.binary
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// The settings stored with results and runs are the same bytes in every process (their
    /// JSON followed a dictionary's order, which changes from process to process), and so is
    /// the report page of one database.
    @Test func storedSettingsAreTheSameBytesInEveryRun() throws {
        let ws = try Workspace(["hevc.mp4"])
        defer { ws.remove() }
        var stored: [[String]] = [], pages: [String] = []
        for i in 0..<3 {
            let db = ws.root + "/\(i).sqlite"
            #expect(try CLI.run(["run", ws.spec, "--db", db, "--quiet"]).status == 0)
            stored.append(try Store(path: db).db.read { db in
                try String.fetchAll(db, sql: "SELECT DISTINCT settings FROM results") + String.fetchAll(db, sql: "SELECT spec FROM runs")
            })
            let page = ws.root + "/\(i).html"
            #expect(try CLI.run(["report", ws.root + "/0.sqlite", "--out", page]).status == 0)
            // Less the time it was made.
            let html = try String(contentsOfFile: page, encoding: .utf8)
            pages.append(html.replacingOccurrences(of: #""generated_at":"[^"]*""#, with: "", options: .regularExpression))
        }
        #expect(stored[0].count == 2 && stored[1] == stored[0] && stored[2] == stored[0], "\(stored)")
        #expect(pages[1] == pages[0] && pages[2] == pages[0])
    }

    @Test func failuresGiveExitThreeAndASummary() throws {
        let ws = try Workspace(["hevc.mp4", "not_a_video.mp4", "empty.mp4"])
        defer { ws.remove() }
        let r = try CLI.run(["run", ws.spec, "--db", ws.root + "/a.sqlite", "--json"])
        #expect(r.status == 3, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        #expect(out["failed"] as? Int == 2 && (out["clips_done"] as? Int ?? 0) > 0)
        #expect((out["failed_files"] as? [String])?.count == 2)
        // The KV memory is reported: in the JSON, and in the closing line in units people read.
        #expect((out["kv_cache_bytes"] as? Int ?? 0) > 0, "\(out)")
        let plain = try CLI.run(["run", ws.spec, "--db", ws.root + "/b.sqlite"])
        #expect(plain.stderr.range(of: #"KV caches up to [0-9.]+ (B|KB|MB|GB),"#, options: .regularExpression) != nil, "\(plain.stderr)")
    }

    /// Committed clips in a database another process is writing; 0 until it is in WAL mode (a
    /// reader that opens it while the writer switches to WAL makes that switch fail as busy).
    static func committedClips(_ path: String) -> Int { committedCount(path, "SELECT count(*) FROM clips") }

    /// A count from a database a running process writes (0 until its write-ahead log exists: an
    /// earlier reader would make the writer's switch to WAL fail as busy).
    static func committedCount(_ path: String, _ sql: String) -> Int {
        guard FileManager.default.fileExists(atPath: path + "-wal") else { return 0 }
        var config = Configuration()
        config.readonly = true
        guard let queue = try? DatabaseQueue(path: path, configuration: config) else { return 0 }
        return (try? queue.read { db in try Int.fetchOne(db, sql: sql) ?? 0 }) ?? 0
    }

    /// kill -9 at several points of a run, then a rerun: exactly the rows of an uninterrupted run.
    /// Each kill lands as soon as the database holds a target number of clips, so where it lands
    /// does not depend on how fast this machine is.
    @Test func killNineThenRerunEqualsUninterrupted() throws {
        let ws = try Workspace(["shortgop.mp4", "h264_cfr.mp4", "hevc.mp4", "vp9.webm", "not_a_video.mp4"], clipSeconds: 0.5, tokens: 16)
        defer { ws.remove() }
        let reference = ws.root + "/reference.sqlite", killed = ws.root + "/killed.sqlite"
        _ = try CLI.run(["run", ws.spec, "--db", reference, "--quiet"])
        let total = try Store(path: reference).db.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM clips") ?? 0 }
        var rng = SystemRandomNumberGenerator()
        var partial: [Int] = []
        for fraction in [0.2, 0.45, 0.7, Double.random(in: 0.75...0.95, using: &rng)] {
            let target = max(1, Int(Double(total) * fraction))
            let p = try Self.start(["run", ws.spec, "--db", killed, "--quiet"])
            let deadline = Date().addingTimeInterval(300)
            while p.isRunning && Self.committedClips(killed) < target && Date() < deadline { usleep(2_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            partial.append(Self.committedClips(killed))
        }
        #expect(partial.contains { $0 > 0 && $0 < total }, "kills landed mid-run: \(partial) of \(total) clips")
        let final = try CLI.run(["run", ws.spec, "--db", killed, "--quiet"])
        #expect(final.status == 3) // not_a_video.mp4
        let expected = try Self.rows(reference)
        #expect(try Self.rows(killed) == expected)
        #expect(expected.count > 20)
    }

    /// SIGINT finishes the clip in flight and exits 130; the rerun completes the work. The run has
    /// 40+ clips and the signal lands once the first is committed, so it always interrupts.
    @Test func interruptThenResume() throws {
        let ws = try Workspace(["shortgop.mp4", "hevc.mp4"], clipSeconds: 0.5, tokens: 16)
        defer { ws.remove() }
        let reference = ws.root + "/reference.sqlite", interrupted = ws.root + "/interrupted.sqlite"
        _ = try CLI.run(["run", ws.spec, "--db", reference, "--quiet"])
        let total = try Store(path: reference).db.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM clips") ?? 0 }
        #expect(total >= 40)
        let p = try Self.start(["run", ws.spec, "--db", interrupted, "--quiet", "--log", ws.root + "/interrupted.log"])
        let deadline = Date().addingTimeInterval(300)
        while p.isRunning && Self.committedClips(interrupted) < 1 && Date() < deadline { usleep(2_000) }
        let signalled = p.isRunning
        if signalled { kill(p.processIdentifier, SIGINT) }
        p.waitUntilExit()
        let log = (try? String(contentsOfFile: ws.root + "/interrupted.log", encoding: .utf8)) ?? ""
        #expect(signalled && p.terminationStatus == 130 && p.terminationReason == .exit, "exit \(p.terminationStatus): \(log)")
        let (status, done) = try Store(path: interrupted).db.read { db in
            (try String.fetchOne(db, sql: "SELECT status FROM runs ORDER BY id DESC LIMIT 1"), try Int.fetchOne(db, sql: "SELECT count(*) FROM clips") ?? 0)
        }
        #expect(status == "interrupted" && done >= 1 && done < total, "\(status ?? "none"), \(done) of \(total) clips")
        _ = try CLI.run(["run", ws.spec, "--db", interrupted, "--quiet"])
        #expect(try Self.rows(interrupted) == (try Self.rows(reference)))
    }

    /// On a terminal the live line says what is happening from the start: the clip being decoded,
    /// encoded, prefilled, then generation with its own tokens/s (a pty through script(1)).
    @Test func liveLineShowsTheStageAndGenerationSpeed() throws {
        let ws = try Workspace(["hevc.mp4"])
        defer { ws.remove() }
        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        let command = [CLI.binary.path, "run", ws.spec, "--db", ws.root + "/live.sqlite"].map { "'\($0)'" }.joined(separator: " ")
        script.arguments = ["-qec", command, "/dev/null"]
        let out = Pipe()
        script.standardOutput = out
        script.standardInput = FileHandle.nullDevice
        try script.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        script.waitUntilExit()
        #expect(script.terminationStatus == 0, "\(text)")
        for stage in ["decoding", "encoding clip 1/", "prefill clip 1/", "generating: ", " tokens/s", "[1/1 files]"] {
            #expect(text.contains(stage), "\(stage) missing from: \(text.suffix(600))")
        }
    }

    @Test func searchPrintsMatches() throws {
        let ws = try Workspace(["hevc.mp4"])
        defer { ws.remove() }
        _ = try CLI.run(["run", ws.spec, "--db", ws.root + "/s.sqlite", "--quiet"])
        let texts = try Store(path: ws.root + "/s.sqlite").db.read { db in try String.fetchAll(db, sql: "SELECT text FROM results") }
        let word = texts.joined(separator: " ").split(whereSeparator: { !$0.isLetter }).first.map(String.init) ?? "x"
        let r = try CLI.run(["search", word, "--db", ws.root + "/s.sqlite", "--json"])
        #expect(r.status == 0)
        let matches = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        #expect(!matches.isEmpty && matches.allSatisfy { ($0["path"] as? String)?.hasSuffix("hevc.mp4") == true })
        #expect(try CLI.run(["search", "x", "--db", ws.root + "/nope.sqlite"]).status == 2)
    }
}

@Suite struct RunLogTests {
    @Test func logFileGetsTimestampedLinesAndQuietPrintsNothing() throws {
        let ws = try RunCLITests.Workspace(["hevc.mp4", "empty.mp4"])
        defer { ws.remove() }
        let log = ws.root + "/run.log"
        let r = try CLI.run(["run", ws.spec, "--db", ws.root + "/l.sqlite", "--quiet", "--log", log])
        #expect(r.status == 3 && r.stderr.isEmpty && r.stdout.isEmpty)
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.contains { $0.contains("failed: empty.mp4") })
        #expect(lines.allSatisfy { $0.prefix(4).allSatisfy(\.isNumber) && $0.contains("T") })
        // Without --quiet and not on a terminal: the same lines on stderr.
        let loud = try CLI.run(["run", ws.spec, "--db", ws.root + "/l.sqlite"])
        #expect(loud.stderr.contains("finished: 2 videos") && loud.stderr.contains(" reused"))
    }
}
