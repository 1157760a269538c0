import Foundation
import GRDB
import Testing
@testable import Pipeline

@Suite struct SpecTests {
    @Test func unknownKeysAndWrongTypesNameTheKey() {
        func error(_ yaml: String) -> PipelineError? {
            do { _ = try PipelineSpec.parse(yaml, path: "s.yaml"); return nil } catch let e as PipelineError { return e } catch { return nil }
        }
        guard case .invalidSpec(_, "sampling.fsp", let why)? = error("inputs: {paths: [v]}\nsampling: {fsp: 2}") else { Issue.record("fsp"); return }
        #expect(why.contains("allowed: fps, min_pixels"))
        guard case .invalidSpec(_, "colour", _)? = error("inputs: {paths: [v]}\ncolour: red") else { Issue.record("top"); return }
        guard case .invalidSpec(_, "clips.seconds", "expected a number")? = error("inputs: {paths: [v]}\nclips: {seconds: ten}") else { Issue.record("type"); return }
        guard case .invalidSpec(_, "sampling.fps", _)? = error("inputs: {paths: [v]}\nsampling: {fps: 99}") else { Issue.record("range"); return }
        guard case .invalidSpec(_, "dtype", let d)? = error("inputs: {paths: [v]}\ndtype: f16") else { Issue.record("dtype"); return }
        #expect(d.contains("f32, bf16, int8"))
        guard case .invalidSpec(_, "inputs.paths", _)? = error("model: m") else { Issue.record("paths"); return }
        guard case .invalidSpec(_, "generation.top_p", _)? = error("inputs: {paths: [v]}\ngeneration: {top_p: 2}") else { Issue.record("top_p"); return }
        // YAML tags that would be misread are refused by key: outside the core types, or !!str on
        // a number or flag; quoting is not a tag, and core tags on text or keeping a type pass.
        for (yaml, key) in [("generation: {batch: !!str 3}", "generation.batch"), ("sampling: {fps: !!str 1.5}", "sampling.fps"),
                            ("prompts: {questions: [a, !!binary aGk=]}", "prompts.questions[1]"), ("model: !custom m", "model"),
                            ("inputs: {paths: [v], recursive: !!str true}", "inputs.recursive"),
                            ("generation: !custom {batch: 3}", "generation"), ("prompts: {questions: !!set {a}}", "prompts.questions"),
                            ("generation: {batch: !!str 3x}", "generation.batch"), ("sampling: {fps: !!str 0x1p4}", "sampling.fps"),
                            ("prompts: {summary: !!str null}", "prompts.summary"), ("dtype: ! ~", "dtype")] {
            let spec = yaml.hasPrefix("inputs") ? yaml : "inputs: {paths: [v]}\n" + yaml
            guard case .invalidSpec(_, key, let why)? = error(spec) else { Issue.record("tag: \(yaml)"); continue }
            #expect(why.contains("tagged !") && why.contains("YAML tags"), "\(yaml): \(why)")
        }
        for yaml in ["generation: {batch: 3}", "generation: {batch: !!int 3}", "prompts: {description: \"3\"}",
                     "prompts: {questions: [!!str 7, !!int 8]}", "model: !!str m", "sampling: {fps: !!float 1}",
                     "prompts: {questions: [!!str null]}"] {
            #expect(error("inputs: {paths: [v]}\n" + yaml) == nil, "\(yaml)")
        }
        // A quoted number is text, which a number's key refuses as such (not as a tag).
        for yaml in ["generation:\n  batch: \"3\"", "generation: {batch: '3'}"] {
            guard case .invalidSpec(_, "generation.batch", "expected an integer")? = error("inputs: {paths: [v]}\n" + yaml) else { Issue.record("\(yaml)"); continue }
        }
    }

    @Test func checkedInSpecsParse() throws {
        let pipelines = Workspace.fixtures.deletingLastPathComponent().appendingPathComponent("pipelines")
        for name in ["demo.yaml", "nightly.yaml", "fixtures.yaml"] {
            let spec = try PipelineSpec.load(path: pipelines.appendingPathComponent(name).path)
            #expect(!spec.inputs.paths.isEmpty && !spec.prompts.questions.isEmpty)
        }
        let demo = try PipelineSpec.load(path: pipelines.appendingPathComponent("demo.yaml").path)
        #expect(demo.model.map(demo.resolve)?.hasSuffix("/models/demo") == true)
    }

    /// No model given: $REELQL_MODEL, else models/demo above the current directory, else above
    /// the executable; else an error that says how to give one.
    @Test func defaultModelIsFoundFromTheEnvironmentTheDirectoryOrTheExecutable() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-default-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let checkout = root.appendingPathComponent("checkout"), elsewhere = root.appendingPathComponent("elsewhere/deep")
        let model = checkout.appendingPathComponent("models/demo")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: model.appendingPathComponent("config.json"))
        let exe = checkout.appendingPathComponent(".build/release/reelql").path
        #expect(try ClipModel.defaultDirectory(environment: [:], executable: exe, currentDirectory: elsewhere.path) == model.path)
        #expect(try ClipModel.defaultDirectory(environment: [:], executable: "/usr/bin/reelql",
                                               currentDirectory: checkout.appendingPathComponent("pipelines").path) == model.path)
        #expect(try ClipModel.defaultDirectory(environment: ["REELQL_MODEL": "/m"], executable: exe, currentDirectory: elsewhere.path) == "/m")
        #expect(throws: (any Error).self) {
            try ClipModel.defaultDirectory(environment: [:], executable: "/usr/bin/reelql", currentDirectory: elsewhere.path)
        }
    }

    @Test func scanFindsVideosByExtensionAndGlob() throws {
        let ws = try Workspace()
        defer { ws.remove() }
        var inputs = PipelineSpec.Inputs()
        inputs.paths = [ws.videoDir]
        #expect(try Scan.files(inputs, resolve: { $0 }).count == Workspace.videos.count)
        inputs.paths = [ws.videoDir + "/*.mp4"]
        #expect(try Scan.files(inputs, resolve: { $0 }).map { ($0 as NSString).lastPathComponent } == ["empty.mp4", "h264_cfr.mp4", "hevc.mp4", "not_a_video.mp4", "shortgop.mp4"])
        inputs.paths = [ws.root + "/**/*.webm"]
        #expect(try Scan.files(inputs, resolve: { $0 }).count == 1)
        inputs.paths = [ws.root + "/nope"]
        #expect(throws: PipelineError.self) { try Scan.files(inputs, resolve: { $0 }) }
    }

    @Test func shardsPartitionPaths() {
        let paths = (0..<300).map { "/srv/footage/cam\($0 % 7)/clip-\($0).mp4" }
        let counts = (1...3).map { k in paths.filter { Scan.shard(of: $0, count: 3) == k }.count }
        #expect(counts.reduce(0, +) == 300)
        #expect(counts.allSatisfy { $0 > 60 }, "\(counts)")
        // Shards are a stable function of the path: FNV-1a 64 of its UTF-8 bytes, mod N, plus 1.
        // Known answers from an independent implementation (Python), so a change of hash or of
        // byte order moves files between shards and fails here.
        #expect(Scan.fnv1a(Array("a".utf8)) == 0xaf63dc4c8601ec8c)
        #expect(paths.prefix(12).map { Scan.shard(of: $0, count: 3) } == [1, 1, 1, 3, 2, 3, 2, 3, 3, 2, 2, 1])
    }
}

@Suite(.serialized) struct RunTests {
    @Test func goodFilesProcessedBrokenOnesRecorded() throws {
        let ws = try Workspace()
        defer { ws.remove() }
        let report = try ws.run()
        #expect(report.stats.videosFailed == Workspace.broken.count)
        #expect(Set(report.failed.map { ($0 as NSString).lastPathComponent }) == Set(Workspace.broken))
        let store = try Store(path: ws.root + "/results.sqlite")
        try store.db.read { db in
            for v in Workspace.good {
                let status = try String.fetchOne(db, sql: "SELECT status FROM videos WHERE path LIKE ?", arguments: ["%/" + v])
                #expect(status == "done", "\(v)")
                let described = try Int.fetchOne(db, sql: "SELECT count(*) FROM clip_results WHERE path LIKE ? AND description IS NOT NULL", arguments: ["%/" + v])!
                let clips = try Int.fetchOne(db, sql: "SELECT count(*) FROM clips c JOIN videos v ON v.id = c.video_id WHERE v.path LIKE ?", arguments: ["%/" + v])!
                #expect(clips > 0 && described == clips, "\(v)")
                #expect(try String.fetchOne(db, sql: "SELECT summary FROM video_results WHERE path LIKE ?", arguments: ["%/" + v]) != nil)
            }
            for v in Workspace.broken {
                let rows = try Row.fetchAll(db, sql: "SELECT status, error FROM videos WHERE path LIKE ?", arguments: ["%/" + v])
                #expect(rows.count == 1 && rows[0]["status"] == "failed" && (rows[0]["error"] as String?)?.isEmpty == false, "\(v)")
            }
            #expect(try String.fetchOne(db, sql: "SELECT status FROM videos WHERE path LIKE '%/truncated.mkv'") == "damaged")
            // 20 s in 2-second clips.
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM clip_results WHERE path LIKE '%/shortgop.mp4'") == 10)
            let indexed = try Int.fetchOne(db, sql: "SELECT count(*) FROM results_fts")
            let results = try Int.fetchOne(db, sql: "SELECT count(*) FROM results")
            #expect(indexed == results)
        }
    }

    /// Continuous batching across clips stores exactly what one sequence at a time stores: every
    /// video, clip, description, answer and summary, with failures and damage recorded the same.
    @Test func batchedRunEqualsOneSequenceAtATime() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4", "shortgop.mp4", "truncated.mkv", "not_a_video.mp4", "vp9.webm"])
        defer { ws.remove() }
        var rows: [[String]] = []
        for batch in [1, 2, 7] {
            var spec = try ws.spec()
            spec.generation.batch = batch
            let db = ws.root + "/batch\(batch).sqlite"
            let report = try Runner(spec: spec, databasePath: db, progress: Progress(quiet: true, logFile: nil)).run()
            #expect(report.stats.clipsDone > 10 && report.stepTokens > 0 && report.generating > 0, "batch \(batch)")
            rows.append(try canonicalRows(db).map { $0.replacingOccurrences(of: "/batch\(batch).sqlite", with: "") })
        }
        #expect(rows[0].contains { $0.hasPrefix("result|") && $0.contains("|summary|") })
        #expect(rows[1] == rows[0] && rows[2] == rows[0])
        // The batch size is not a setting results depend on: a rerun with another reuses every clip.
        var spec = try ws.spec()
        spec.generation.batch = 3
        let rerun = try Runner(spec: spec, databasePath: ws.root + "/batch1.sqlite", progress: Progress(quiet: true, logFile: nil)).run()
        #expect(rerun.stats.clipsDone == 0 && rerun.stats.clipsSkipped > 10)
    }

    /// int8 runs batched store what int8 one at a time stores; dtype and vision_dtype are settings
    /// results depend on: a run in another precision redoes the clips instead of reusing them.
    @Test func int8RunIsBatchIndependentAndItsOwnSetting() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4", "shortgop.mp4"])
        defer { ws.remove() }
        var rows: [[String]] = []
        for batch in [1, 5] {
            var spec = try ws.spec()
            spec.dtype = "int8"
            spec.generation.batch = batch
            let db = ws.root + "/int8-\(batch).sqlite"
            let report = try Runner(spec: spec, databasePath: db, progress: Progress(quiet: true, logFile: nil)).run()
            #expect(report.stats.clipsDone > 5, "batch \(batch)")
            rows.append(try canonicalRows(db).map { $0.replacingOccurrences(of: "/int8-\(batch).sqlite", with: "") })
        }
        #expect(rows[1] == rows[0])
        for (dtype, vision) in [("bf16", nil), ("int8", "bf16"), ("int8", "int8"), ("int8", nil)] as [(String, String?)] {
            var spec = try ws.spec()
            spec.dtype = dtype
            spec.visionDType = vision
            let again = try Runner(spec: spec, databasePath: ws.root + "/int8-1.sqlite", progress: Progress(quiet: true, logFile: nil)).run()
            // vision_dtype equal to dtype is dtype's setting: the int8 rows are reused.
            let reused = dtype == "int8" && (vision == nil || vision == "int8")
            #expect(reused ? again.stats.clipsDone == 0 : again.stats.clipsDone > 5, "\(dtype) / \(vision ?? "-")")
        }
        let parsed = try PipelineSpec.parse("inputs: {paths: [v]}\ndtype: int8\nvision_dtype: bf16", path: "s.yaml")
        #expect(parsed.dtype == "int8" && parsed.visionDType == "bf16")
        do {
            _ = try PipelineSpec.parse("inputs: {paths: [v]}\nvision_dtype: int4", path: "s.yaml").validate(path: "s.yaml")
            Issue.record("vision_dtype int4 accepted")
        } catch let PipelineError.invalidSpec(_, key, why) {
            #expect(key == "vision_dtype" && why.contains("f32, bf16, int8") && why.contains("int4"), "\(why)")
        }
    }

    /// A database from before a migration that added a column reads as it did (checked against
    /// its own migrations' columns); a column its migrations made and it lacks is damage, named.
    @Test func olderDatabasesReadAndDroppedColumnsAreNamed() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-v2-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let q = try DatabaseQueue(path: path)
        try Store.migrator.migrate(q, upTo: "v2: thumbnails, FTS found by Datasette")
        try q.close()
        #expect(Store.expectedColumns(upTo: Store.migrator.migrations.last ?? "")["videos"]?.contains("media") == true)
        #expect(Store.expectedColumns(upTo: "v2: thumbnails, FTS found by Datasette")["videos"]?.contains("media") == false)
        try Store.openReadOnly(path).close()
        let damaged = try DatabaseQueue(path: path)
        try damaged.write { db in try db.execute(sql: "ALTER TABLE runs DROP COLUMN reelql_version") }
        try damaged.close()
        do {
            try Store.openReadOnly(path).close()
            Issue.record("a database without runs.reelql_version opened")
        } catch let PipelineError.database(p, reason) {
            #expect(p == path && reason.contains("'runs'") && reason.contains("'reelql_version'"), "\(reason)")
        }
    }

    /// A value of the wrong shape is named in words (Yams' Scalar/Sequence/Mapping were shown),
    /// a negative seed says what a seed is, and a byte that is not UTF-8 is located.
    @Test func wrongShapesAreNamedInWords() throws {
        for (yaml, key, words) in [("inputs:\n  paths: v\n", "inputs.paths", "expected a list"),
                                   ("inputs:\n  paths: [[a]]\n", "inputs.paths[0]", "a single value"),
                                   ("inputs: [a]\n", "inputs", "a mapping of keys"),
                                   ("inputs: {paths: [v]}\ngeneration: {seed: -1}\n", "generation.seed", "from 0 to")] {
            do {
                _ = try PipelineSpec.parse(yaml, path: "s.yaml")
                Issue.record("accepted \(yaml)")
            } catch let PipelineError.invalidSpec(_, k, reason) {
                #expect(k == key && reason.contains(words) && !reason.contains("Scalar") && !reason.contains("Sequence"), "\(k): \(reason)")
            }
        }
        #expect(PipelineSpec.firstInvalidUTF8(Data("caf\u{E9} ok".utf8)) == nil)
        #expect(PipelineSpec.firstInvalidUTF8(Data([0x61, 0x0A, 0x62, 0xE9, 0x20])) == 3)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("inputs:\n  paths: [v]\n# caf".utf8 + [0xE9, 0x0A]).write(to: URL(fileURLWithPath: path))
        do {
            _ = try PipelineSpec.load(path: path)
            Issue.record("a spec with a Latin-1 byte loaded")
        } catch let PipelineError.invalidSpec(_, _, reason) {
            #expect(reason.contains("byte 26, line 3"), "\(reason)")
        }
    }

    /// A NUL in any string of a spec is refused, naming the key (paths were cut at it, prompts
    /// stored truncated, questions differing after it collided in the database).
    @Test func nulCharactersAreRefused() throws {
        for (yaml, key) in [("inputs: {paths: [\"v\\0x\"]}", "inputs.paths[0]"),
                            ("inputs: {paths: [v]}\noutput: {database: \"b.sqlite\\0.evil\"}", "output.database"),
                            ("inputs: {paths: [v]}\nmodel: \"m\\0\"", "model"),
                            ("inputs: {paths: [v], extensions: [\"mp4\\0\"]}", "inputs.extensions[0]"),
                            ("inputs: {paths: [v]}\nprompts: {questions: [\"a\\0b\", \"a\\0c\"]}", "prompts.questions[0]"),
                            ("inputs: {paths: [v]}\nprompts: {description: \"Describe\\0 this.\"}", "prompts.description")] {
            do {
                _ = try PipelineSpec.parse(yaml, path: "s.yaml")
                Issue.record("accepted \(key)")
            } catch let PipelineError.invalidSpec(_, k, reason) {
                #expect(k == key && reason.contains("NUL"), "\(k): \(reason)")
            }
        }
    }

    /// Aliases cannot make a small spec expand without bound: 10,000 aliases of a 100 KB string
    /// (a 140 KB file that took 2 GB and then trapped in SQLite), nested aliases a billion values
    /// wide, and a chain of aliases nested 5,000 deep (200,000 crashed releasing the tree) are
    /// refused by name before anything is decoded.
    @Test func aliasBombsAreRefused() throws {
        let wide = "inputs:\n  paths: [v]\n  extensions: [mp4, &a \"" + String(repeating: "x", count: 100_000) + "\""
            + String(repeating: ", *a", count: 10_000) + "]\n"
        var laughs = "dummy:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        for i in 1...9 { laughs += "  a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        laughs += "inputs:\n  paths: [v]\n"
        var chain = "dummy:\n  c0: &c0 [x]\n"
        for i in 1..<5_000 { chain += "  c\(i): &c\(i) [*c\(i - 1)]\n" }
        chain += "inputs:\n  paths: [v]\n"
        for (yaml, why) in [(wide, "bytes of text"), (laughs, "values"), (chain, "levels deep")] {
            do {
                _ = try PipelineSpec.parse(yaml, path: "s.yaml")
                Issue.record("accepted: \(why)")
            } catch let PipelineError.invalidSpec(_, key, reason) {
                #expect(key == "(file)" && reason.contains(why), "\(reason)")
            }
        }
        // An alias a spec may well use stays accepted.
        let shared = try PipelineSpec.parse("prompts:\n  description: &d Describe this video.\n  questions: [*d]\ninputs: {paths: [v]}", path: "s.yaml")
        #expect(shared.prompts.questions == ["Describe this video."])
    }

    /// Sampling defaults are sized for a CPU; `max_pixels: null` leaves the processor's limit alone.
    @Test func cpuDefaultsAndAnExplicitNoCap() throws {
        let defaults = try PipelineSpec.parse("inputs: {paths: [v]}", path: "s.yaml")
        #expect(defaults.sampling.fps == 1 && defaults.sampling.maxPixels == 448 * 448 && defaults.decodingBatch == 8)
        // The decoding batch's default follows the language model's precision; a spec's own stays.
        let int8 = try PipelineSpec.parse("inputs: {paths: [v]}\ndtype: int8", path: "s.yaml")
        #expect(int8.generation.batch == nil && int8.decodingBatch == 9)
        #expect(try PipelineSpec.parse("inputs: {paths: [v]}\ndtype: int8\nvision_dtype: bf16", path: "s.yaml").decodingBatch == 9)
        #expect(try PipelineSpec.parse("inputs: {paths: [v]}\ndtype: bf16\nvision_dtype: int8", path: "s.yaml").decodingBatch == 8)
        #expect(try PipelineSpec.parse("inputs: {paths: [v]}\ndtype: int8\ngeneration: {batch: 4}", path: "s.yaml").decodingBatch == 4)
        let uncapped = try PipelineSpec.parse("inputs: {paths: [v]}\nsampling: {max_pixels: null}", path: "s.yaml")
        #expect(uncapped.sampling.maxPixels == nil)
        let set = try PipelineSpec.parse("inputs: {paths: [v]}\nsampling: {max_pixels: 602112, fps: 2}", path: "s.yaml")
        #expect(set.sampling.maxPixels == 602112 && set.sampling.fps == 2)
        #expect(defaults.sampling.minimumPixels == 128 * 28 * 28)
        // The settings key's sampling part is what it was when min_pixels always had a value (the
        // JSON 1ffde21 wrote for the defaults), and naming the default changes nothing: done
        // clips stay reusable.
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        #expect(String(decoding: try e.encode(defaults.sampling), as: UTF8.self) == #"{"fps":1,"max_pixels":200704,"min_pixels":100352}"#)
        let named = try PipelineSpec.parse("inputs: {paths: [v]}\nsampling: {min_pixels: 100352}", path: "s.yaml")
        #expect(try Runner.settingsKey(named, modelDirectory: "/m").key == Runner.settingsKey(defaults, modelDirectory: "/m").key)
        // A max_pixels alone under the default minimum lowers the minimum; one under an explicit
        // min_pixels is refused, naming both.
        let small = try PipelineSpec.parse("inputs: {paths: [v]}\nsampling: {max_pixels: 50000}", path: "s.yaml")
        try small.validate(path: "s.yaml")
        #expect(small.sampling.minimumPixels == 50000)
        do {
            try PipelineSpec.parse("inputs: {paths: [v]}\nsampling: {min_pixels: 60000, max_pixels: 50000}", path: "s.yaml").validate(path: "s.yaml")
            Issue.record("max_pixels under min_pixels accepted")
        } catch let PipelineError.invalidSpec(_, key, why) {
            #expect(key == "sampling.max_pixels" && why.contains("60000") && why.contains("50000"), "\(why)")
        }
    }

    @Test func rerunsReuseRedoChangedAndMarkMissing() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4", "hevc.mp4", "vp9.webm"])
        defer { ws.remove() }
        let db = ws.root + "/results.sqlite"
        let first = try ws.run()
        let before = try canonicalRows(db)
        let second = try ws.run()
        #expect(second.stats.clipsDone == 0 && second.stats.clipsSkipped == first.stats.clipsDone)
        #expect(try canonicalRows(db) == before)
        // Replace one file's content, delete another.
        try FileManager.default.removeItem(atPath: ws.videoDir + "/hevc.mp4")
        try FileManager.default.copyItem(atPath: Workspace.fixtures.appendingPathComponent("videos/h264.ts").path, toPath: ws.videoDir + "/hevc.mp4")
        try FileManager.default.removeItem(atPath: ws.videoDir + "/vp9.webm")
        let third = try ws.run()
        #expect(third.stats.clipsDone > 0 && third.videosMissing == 1)
        let store = try Store(path: db)
        try store.db.read { db in
            #expect(try String.fetchOne(db, sql: "SELECT status FROM videos WHERE path LIKE '%/vp9.webm'") == "missing")
            #expect(try String.fetchOne(db, sql: "SELECT codec FROM videos WHERE path LIKE '%/hevc.mp4'") == "h264")
            // Only the new content's clips remain for the replaced file.
            let frames = try Int.fetchAll(db, sql: "SELECT frames FROM clip_results WHERE path LIKE '%/hevc.mp4'")
            #expect(!frames.isEmpty)
        }
    }

    /// A clip beyond the model's context fails its file; what the run stores does not depend
    /// on the batch: before, clips still in flight when a later clip failed were dropped, so
    /// batch 1 kept clip 0 and batch 8 (clips in flight) kept nothing, or either, by timing.
    @Test func aClipBeyondTheContextStoresTheSameAtEveryBatch() throws {
        let ws = try Workspace(videos: [])
        defer { ws.remove() }
        for name in ["a.mp4", "b.mp4"] {
            try FileManager.default.copyItem(atPath: Workspace.fixtures.appendingPathComponent("videos/longgop.mp4").path, toPath: ws.videoDir + "/" + name)
        }
        // The tiny model with a context of 100: clip 0 (5 s, 10 frames) fits, clip 1 (7 s) does not.
        let model = ws.root + "/model"
        try FileManager.default.copyItem(atPath: Workspace.fixtures.appendingPathComponent("models/tiny-qwen2vl-chat").path, toPath: model)
        let config = model + "/config.json"
        var json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        var text = try #require(json["text_config"] as? [String: Any])
        text["max_position_embeddings"] = 100
        json["text_config"] = text
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: config))
        var rows: [[String]] = []
        for batch in [1, 3, 8] {
            try Workspace.spec(model: model).replacingOccurrences(of: "  max_new_tokens: 6", with: "  max_new_tokens: 4\n  batch: \(batch)")
                .replacingOccurrences(of: "seconds: 2\n  min_remainder: 0.5", with: "seconds: 5\n  min_remainder: 3")
                .replacingOccurrences(of: "  max_frames: 4\n", with: "")
                .replacingOccurrences(of: "  questions: [Is there a dog?]", with: "  questions: [Is there a dog?]\n  summary: \"\"")
                .write(toFile: ws.specPath, atomically: true, encoding: .utf8)
            let db = ws.root + "/batch\(batch).sqlite"
            let report = try ws.run(database: db)
            #expect(report.stats.videosFailed == 2 && report.stats.clipsDone == 2, "batch \(batch): \(report.stats)")
            rows.append(try canonicalRows(db))
            let errors = try Store(path: db).db.read { db in try String.fetchAll(db, sql: "SELECT error FROM videos") }
            #expect(errors.count == 2 && errors.allSatisfy { $0.hasPrefix("clip 1: ") && $0.contains("100") }, "\(errors)")
        }
        #expect(rows[1] == rows[0] && rows[2] == rows[0])
    }

    /// A dtype the checkpoint runs in anyway keys as no dtype (explicit --dtype f32 on an f32
    /// checkpoint redid every finished clip, identically); other dtypes, and a tower dtype other
    /// than the one implied, still key apart. Keys without a dtype are unchanged.
    @Test func theCheckpointsOwnDTypeIsNoSetting() throws {
        let model = Workspace.fixtures.appendingPathComponent("models/tiny-qwen2vl-chat").path // f32 weights
        func key(_ dtype: String?, _ vision: String?) throws -> String {
            var spec = try PipelineSpec.parse("inputs: {paths: [v]}", path: "s.yaml")
            spec.dtype = dtype
            spec.visionDType = vision
            return try Runner.settingsKey(spec, modelDirectory: model).key
        }
        let plain = try key(nil, nil)
        #expect(try key("f32", nil) == plain && key("f32", "f32") == plain && key(nil, "f32") == plain)
        #expect(try key("bf16", nil) != plain && key("int8", nil) != plain && key(nil, "bf16") != plain)
        #expect(try key("f32", "bf16") == key(nil, "bf16") && key("int8", "int8") == key("int8", nil))
        #expect(try key("int8", "f32") != key("int8", nil))
        // A checkpoint whose tower is stored in bf16 and language model in f32 (and the mirror):
        // the key follows what each part runs in.
        func keyed(_ d: String?, _ v: String?, _ defaults: (String?, String?)) -> [String?] {
            let k = Runner.keyedDTypes(dtype: d, visionDType: v, defaults: (language: defaults.0, vision: defaults.1))
            return [k.dtype, k.vision]
        }
        let mixed: (String?, String?) = ("f32", "bf16"), mirror: (String?, String?) = ("bf16", "f32")
        #expect(keyed(nil, nil, mixed) == [nil, nil] && keyed("f32", nil, mixed) == [nil, "f32"])
        #expect(keyed(nil, "f32", mixed) == keyed("f32", nil, mixed) && keyed("f32", "bf16", mixed) == keyed(nil, nil, mixed))
        #expect(keyed("bf16", nil, mirror) == [nil, "bf16"] && keyed("bf16", nil, mirror) != keyed(nil, nil, mirror))
        // Unreadable weights: nothing is assumed, as before.
        var spec = try PipelineSpec.parse("inputs: {paths: [v]}", path: "s.yaml")
        spec.dtype = "f32"
        #expect(try Runner.settingsKey(spec, modelDirectory: "/m").key != Runner.settingsKey(PipelineSpec.parse("inputs: {paths: [v]}", path: "s.yaml"), modelDirectory: "/m").key)
    }

    /// A shard's run marks its own deleted files missing, and only those: another shard's run
    /// over the same database leaves them be.
    @Test func shardsMarkTheirOwnFilesMissing() throws {
        let ws = try Workspace(videos: ["not_a_video.mp4", "empty.mp4"])
        defer { ws.remove() }
        let db = ws.root + "/results.sqlite"
        try ws.run(database: db)
        let gone = ws.videoDir + "/empty.mp4"
        let own = Scan.shard(of: gone, count: 2), other = 3 - own
        try FileManager.default.removeItem(atPath: gone)
        func status() throws -> String? {
            try Store(path: db).db.read { db in try String.fetchOne(db, sql: "SELECT status FROM videos WHERE path = ?", arguments: [gone]) }
        }
        #expect(try ws.run(database: db, shard: (other, 2)).videosMissing == 0)
        #expect(try status() != "missing")
        #expect(try ws.run(database: db, shard: (own, 2)).videosMissing == 1)
        #expect(try status() == "missing")
    }

    @Test func threeShardsMergedEqualOneRun() throws {
        let ws = try Workspace()
        defer { ws.remove() }
        try ws.run(database: ws.root + "/single.sqlite")
        for k in 1...3 { try ws.run(database: ws.root + "/shard-\(k).sqlite", shard: (k, 3)) }
        let merged = try Store(path: ws.root + "/merged.sqlite")
        for k in 1...3 { try merged.merge(from: ws.root + "/shard-\(k).sqlite") }
        let single = try canonicalRows(ws.root + "/single.sqlite")
        #expect(try canonicalRows(ws.root + "/merged.sqlite") == single)
        // Merging again adds nothing.
        for k in 1...3 { try merged.merge(from: ws.root + "/shard-\(k).sqlite") }
        #expect(try canonicalRows(ws.root + "/merged.sqlite") == single)
        try merged.db.read { db in
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM runs") == 3)
            let indexed = try Int.fetchOne(db, sql: "SELECT count(*) FROM results_fts")
            let results = try Int.fetchOne(db, sql: "SELECT count(*) FROM results")
            #expect(indexed == results)
        }
    }

    /// Stored text is copied byte for byte, whatever it holds: a NUL inside an answer or a path (a
    /// byte-level model can emit one), bytes that are not UTF-8, in every text column a merge
    /// copies. Matching a video by path, too, compares the stored bytes.
    @Test func mergeCopiesTextByteForByte() throws {
        let ws = try Workspace()
        defer { ws.remove() }
        let shard = ws.root + "/shard.sqlite"
        try ws.run(database: shard)
        let odd = try Store(path: shard)
        try odd.db.write { db in
            let first = try #require(try Int64.fetchOne(db, sql: "SELECT min(id) FROM videos WHERE status = 'done'"))
            try db.execute(sql: "UPDATE videos SET path = path || char(0) || 'b', error = 'e' || char(0) || 'f' WHERE id = ?", arguments: [first])
            try db.execute(sql: "UPDATE videos SET path = path || CAST(x'ff41fe' AS TEXT) WHERE id = (SELECT max(id) FROM videos)")
            try db.execute(sql: "UPDATE results SET text = text || char(0) || 'tail' WHERE id % 3 = 0")
            try db.execute(sql: "UPDATE results SET text = CAST(x'c328' AS TEXT) || text, prompt = prompt || CAST(x'80' AS TEXT) WHERE id % 3 = 1")
            try db.execute(sql: "UPDATE runs SET spec = spec || char(0) || CAST(x'ff' AS TEXT)")
        }
        func bytes(_ path: String) throws -> [String] {
            try Store(path: path).db.read { db in
                var rows = try String.fetchAll(db, sql: "SELECT 'v ' || hex(path) || ' ' || hex(ifnull(error, '')) || ' ' || status FROM videos")
                rows += try String.fetchAll(db, sql: """
                    SELECT 'r ' || hex(v.path) || ' ' || r.clip_index || ' ' || r.kind || ' ' || hex(r.prompt) || ' ' || hex(r.text)
                    FROM results r JOIN videos v ON v.id = r.video_id
                    """)
                rows += try String.fetchAll(db, sql: """
                    SELECT 'c ' || hex(v.path) || ' ' || c.clip_index || ' ' || c.frames FROM clips c JOIN videos v ON v.id = c.video_id
                    """)
                rows += try String.fetchAll(db, sql: "SELECT 's ' || hex(spec) FROM runs")
                return rows.sorted()
            }
        }
        let expected = try bytes(shard)
        #expect(expected.contains { $0.hasPrefix("r ") && $0.contains("007461696C") }) // "\0tail"
        let merged = try Store(path: ws.root + "/merged.sqlite")
        try merged.merge(from: shard)
        #expect(try bytes(ws.root + "/merged.sqlite") == expected)
        // Merged again: matched by the stored bytes, nothing added or altered.
        try merged.merge(from: shard)
        #expect(try bytes(ws.root + "/merged.sqlite") == expected)
    }

    /// An input missing a table its migrations made (thumbnails dropped), holding a clip's result
    /// that names no clip, or a video whose updated_at is no timestamp (it would win every
    /// comparison) is damaged: named, and nothing of it is merged.
    @Test func mergeRefusesMissingTablesAndDetachedResults() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4"])
        defer { ws.remove() }
        let shard = ws.root + "/shard.sqlite"
        try ws.run(database: shard)
        let noThumbs = ws.root + "/no-thumbnails.sqlite", detached = ws.root + "/detached.sqlite", undated = ws.root + "/undated.sqlite"
        for copy in [noThumbs, detached, undated] { try FileManager.default.copyItem(atPath: shard, toPath: copy) }
        try DatabaseQueue(path: undated).write { db in try db.execute(sql: "UPDATE videos SET updated_at = 'zzz' WHERE id = (SELECT max(id) FROM videos)") }
        try DatabaseQueue(path: noThumbs).writeWithoutTransaction { db in try db.execute(sql: "DROP TABLE thumbnails") }
        let row = try DatabaseQueue(path: detached).write { db -> Int64 in
            let id = try #require(try Int64.fetchOne(db, sql: "SELECT min(id) FROM results WHERE clip_index >= 0"))
            try db.execute(sql: "UPDATE results SET clip_index = 99 WHERE id = ?", arguments: [id])
            return id
        }
        let output = ws.root + "/merged.sqlite"
        for (input, named) in [(noThumbs, "no table 'thumbnails'"), (detached, "table results, row \(row): clip_index 99"),
                               (undated, "updated_at 'zzz' is not a timestamp")] {
            do {
                try Store.checkMergeable(input, output: output)
                Issue.record("\(input) was not refused")
            } catch {
                let message = (error as? PipelineError)?.errorDescription ?? "\(error)"
                #expect(message.contains(named), "\(message)")
            }
        }
        // Through merge itself: refused before anything is copied.
        let store = try Store(path: output)
        #expect(throws: PipelineError.self) { try store.merge(from: [shard, detached]) }
        #expect(try store.db.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM results") } == 0)
    }

    /// Every query in the README runs against a produced database and returns the rows computed
    /// here from the same data independently.
    @Test func readmeQueriesReturnTheExpectedRows() throws {
        let ws = try Workspace()
        defer { ws.remove() }
        try ws.run()
        let readme = try String(contentsOf: Workspace.fixtures.deletingLastPathComponent().appendingPathComponent("README.md"), encoding: .utf8)
        var queries: [String: String] = [:]
        for block in readme.components(separatedBy: "```sql").dropFirst() {
            let sql = block.components(separatedBy: "```")[0]
            if let name = sql.split(separator: "\n").first(where: { $0.hasPrefix("-- query: ") })?.dropFirst(10) { queries[String(name)] = sql }
        }
        #expect(Set(queries.keys) == ["time-range", "mentions", "answers", "failures", "throughput"])
        let store = try Store(path: ws.root + "/results.sqlite")
        try store.db.read { db in
            // What happened in shortgop.mp4 between 0:04 and 0:08 (the README's 10:00–12:00).
            let range = queries["time-range"]!.replacingOccurrences(of: "%/parking-lot.mp4", with: "%/shortgop.mp4")
                .replacingOccurrences(of: "10 * 60", with: "4").replacingOccurrences(of: "12 * 60", with: "8")
            let got = try Row.fetchAll(db, sql: range).map { "\($0[0] as Double)-\($0[1] as Double)" }
            #expect(got == ["4.0-6.0", "6.0-8.0"])
            // Which clips mention a word: every result whose text has it. (The tiny random model's
            // texts are random words; the query is run for its most frequent word and for "dog".)
            let all = try String.fetchAll(db, sql: "SELECT text FROM results")
            let words = all.flatMap { $0.lowercased().split(whereSeparator: { !$0.isLetter }).map(String.init) }
            let common = Dictionary(grouping: words, by: { $0 }).max { $0.value.count < $1.value.count }!.key
            for word in ["dog", common] {
                let mentions = try Row.fetchAll(db, sql: queries["mentions"]!.replacingOccurrences(of: "'dog'", with: "'\(word)'"))
                    .map { $0["text"] as String }
                let expected = all.filter { $0.lowercased().split(whereSeparator: { !$0.isLetter }).contains(Substring(word)) }
                #expect(mentions.sorted() == expected.sorted(), "\(word)")
                if word == common { #expect(!mentions.isEmpty) }
            }
            // Answers to the question, one per clip of every processed video.
            let answers = try Row.fetchAll(db, sql: queries["answers"]!)
            #expect(answers.count == (try Int.fetchOne(db, sql: "SELECT count(*) FROM clips"))!)
            // Failures: the broken files and the damaged one.
            let failures = try Row.fetchAll(db, sql: queries["failures"]!).map { (($0["path"] as String) as NSString).lastPathComponent }
            #expect(failures == ["empty.mp4", "not_a_video.mp4", "truncated.mkv"])
            let runs = try Row.fetchAll(db, sql: queries["throughput"]!)
            #expect(runs.count == 1 && (runs[0]["clips_done"] as Int) > 0 && (runs[0]["tokens_per_second"] as Double) > 0)
        }
        // And `search` finds the same matches.
        #expect(try store.search("dog").count == (try store.db.read { db in try Row.fetchAll(db, sql: queries["mentions"]!) }).count)
    }
}

/// A database whose full-text index was dropped is named as damaged by search, not the query.
@Suite struct SearchIndexTests {
    @Test func aMissingIndexIsTheDatabasesFault() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-fts-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let q = try DatabaseQueue(path: path)
        try Store.migrator.migrate(q)
        try q.write { db in try db.execute(sql: "DROP TABLE results_fts") }
        do {
            _ = try Store.search(q, "circle", path: path)
            Issue.record("searched without an index")
        } catch let PipelineError.database(p, reason) {
            #expect(p == path && reason.contains("results_fts"), "\(reason)")
        }
        try q.close()
    }
}

/// The page's escaping works on Unicode scalars: a "<" that a combining mark follows is one
/// Character to Swift and one grapheme to Foundation's search, but a "<" to the HTML parser.
@Suite struct ReportEscapeTests {
    @Test func everyAngleBracketIsEscaped() {
        let hostile = "\u{600}<title\u{301}> <\u{301}script>\u{2028}&'\""
        #expect(!Report.escape(hostile).unicodeScalars.contains { "<>\"'".unicodeScalars.contains($0) })
        #expect(!Report.scriptSafe(hostile).unicodeScalars.contains { $0 == "<" || $0 == "\u{2028}" })
        #expect(Report.escape("a < b") == "a &lt; b" && Report.scriptSafe("</script>") == "\\u003c/script>")
    }
}
