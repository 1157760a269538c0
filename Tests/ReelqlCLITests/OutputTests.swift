import Foundation
import Testing

/// The `reelql` binary under hostile conditions: full, closed and broken outputs, damaged
/// videos, unwritable `--out` paths, non-UTF-8 arguments, absurd option values.
enum OutputRun {
    struct Result { var status: Int32; var exited: Bool; var stdout: String; var stderr: String }

    /// Runs `executable` (default: reelql) with stdout and stderr as given; nil: a pipe whose
    /// text is returned. Killed after 120 s (status 137), so a regression (an unbounded --runs)
    /// fails instead of hanging the suite.
    static func run(_ args: [String], stdout: FileHandle? = nil, stderr: FileHandle? = nil,
                    executable: URL = CLI.binary) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        p.arguments = ["-s", "KILL", "120", executable.path] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = stdout ?? out
        p.standardError = stderr ?? err
        try p.run()
        let o = stdout == nil ? out.fileHandleForReading.readDataToEndOfFile() : Data()
        let e = stderr == nil ? err.fileHandleForReading.readDataToEndOfFile() : Data()
        p.waitUntilExit()
        // timeout(1) reports a child killed by signal N as status 128 + N.
        return Result(status: p.terminationStatus, exited: p.terminationReason == .exit && p.terminationStatus < 128,
                      stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Runs reelql through /bin/sh: `script` sees the binary as "$0" and `args` as "$1"….
    static func shell(_ script: String, _ args: [String] = []) throws -> Result {
        try run(["-c", script, CLI.binary.path] + args, executable: URL(fileURLWithPath: "/bin/sh"))
    }

    static func full() throws -> FileHandle {
        try #require(FileHandle(forWritingAtPath: "/dev/full"), "/dev/full is needed")
    }

    static var demo: String { CLI.root.appendingPathComponent("models/demo").path }

    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-output-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

@Suite struct OutputTests {
    /// Every command that prints a result: to a full stdout it is an error with status 74 and a
    /// message, never a crash (Foundation's FileHandle.write traps there).
    @Test(arguments: [
        ["probe", "h264_cfr.mp4"], ["probe", "h264_cfr.mp4", "--json"],
        ["frames", "h264_cfr.mp4"], ["frames", "h264_cfr.mp4", "--json"],
        ["describe", "h264_cfr.mp4", "--max-new-tokens", "4"], ["describe", "h264_cfr.mp4", "--max-new-tokens", "4", "--json"],
        ["--help"],
    ])
    func fullStdoutIsExit74(_ args: [String]) throws {
        let argv = args.count > 1 ? [args[0], CLI.video(args[1])] + args.dropFirst(2) : args
        let r = try OutputRun.run(argv, stdout: try OutputRun.full())
        #expect(r.exited && r.status == 74, "\(args): \(r.status) \(r.stderr)")
        #expect(r.stderr.contains("error[output]: could not write the result to standard output (No space left on device)"), "\(r.stderr)")
    }

    @Test func bothOutputsFullIsExit74() throws {
        for args in [["probe", CLI.video("h264_cfr.mp4"), "--json"], ["frames", CLI.video("truncated.mp4"), "--json"]] {
            let r = try OutputRun.run(args, stdout: try OutputRun.full(), stderr: try OutputRun.full())
            #expect(r.exited && r.status == 74, "\(args): \(r.status)")
        }
    }

    /// A diagnostic that cannot be written changes nothing: the result and the status stand.
    @Test func fullStderrWithGoodStdoutExitsNormally() throws {
        let probe = try OutputRun.run(["probe", CLI.video("h264_cfr.mp4"), "--json"], stderr: try OutputRun.full())
        #expect(probe.exited && probe.status == 0)
        #expect(try CLI.json(probe.stdout)["width"] as? Int != nil, "\(probe.stdout)")
        let damaged = try OutputRun.run(["frames", CLI.video("truncated.mp4"), "--json"], stderr: try OutputRun.full())
        #expect(damaged.exited && damaged.status == 15)
        #expect(try CLI.json(damaged.stdout)["damage"] != nil)
        let missing = try OutputRun.run(["probe", "/nonexistent/x.mp4"], stderr: try OutputRun.full())
        #expect(missing.exited && missing.status == 10)
    }

    /// A reader that went away is EPIPE (SIGPIPE is ignored), so status 74, not death by signal.
    @Test func closedPipeIsExit74() throws {
        for args in [["frames", CLI.video("h264_cfr.mp4"), "--json"], ["probe", CLI.video("h264_cfr.mp4")]] {
            let pipe = Pipe()
            try pipe.fileHandleForReading.close()
            let r = try OutputRun.run(args, stdout: pipe.fileHandleForWriting)
            #expect(r.exited && r.status == 74, "\(args): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("Broken pipe"), "\(r.stderr)")
        }
    }

    /// With descriptor 1 closed, the result is not lost silently (nor written into a file that
    /// happened to be opened as descriptor 1).
    @Test func closedStdoutIsExit74() throws {
        let r = try OutputRun.shell(#"exec "$0" probe "$1" --json >&-"#, [CLI.video("h264_cfr.mp4")])
        #expect(r.exited && r.status == 74, "\(r.status) \(r.stderr)")
        let closedErr = try OutputRun.shell(#"exec "$0" probe "$1" --json 2>&-"#, [CLI.video("h264_cfr.mp4")])
        #expect(closedErr.exited && closedErr.status == 0, "\(closedErr.status)")
    }

    /// describe and encode report damage as frames does: the result, a warning naming the file,
    /// status 15 (truncated) or 16 (corrupt).
    @Test(arguments: [("truncated.mp4", Int32(15), "warning[truncated]"), ("corrupt.mp4", Int32(16), "warning[corrupt-data]")])
    func damageIsReportedByEveryCommand(_ video: String, _ status: Int32, _ warning: String) throws {
        let path = CLI.video(video)
        let frames = try OutputRun.run(["frames", path, "--json"])
        let describe = try OutputRun.run(["describe", path, "--max-new-tokens", "4", "--json"])
        let encode = try OutputRun.run(["encode", path, "--model", OutputRun.demo, "--json"])
        for (name, r) in [("frames", frames), ("describe", describe), ("encode", encode)] {
            #expect(r.status == status, "\(name): \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("\(warning): \(path): "), "\(name): \(r.stderr)")
            #expect(r.stderr.contains("sampled frames"), "\(name): \(r.stderr)")
            #expect((try? CLI.json(r.stdout)) != nil, "\(name) printed its result first: \(r.stdout)")
        }
        // The same warning, word for word, from each.
        let line = { (r: OutputRun.Result) in r.stderr.split(separator: "\n").first { $0.hasPrefix("warning[") } }
        #expect(line(describe) == line(frames) && line(encode) == line(frames))
        // Streaming text, not only JSON.
        let text = try OutputRun.run(["describe", path, "--max-new-tokens", "4"])
        #expect(text.status == status && !text.stdout.isEmpty, "\(text.stderr)")
    }

    /// `--out` failures are error[write-failed] with the system's reason, exit 19.
    @Test func outWriteFailures() throws {
        let dir = try OutputRun.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let encode = try OutputRun.run(["encode", CLI.video("h264_cfr.mp4"), "--model", OutputRun.demo, "--out", dir.path + "/missing/e.bin"])
        #expect(encode.status == 19, "\(encode.stderr)")
        #expect(encode.stderr.contains("error[write-failed]: \(dir.path)/missing/e.bin: could not write (No such file or directory)"), "\(encode.stderr)")
        #expect(!encode.stderr.contains("Domain"), "no Foundation dump: \(encode.stderr)")

        let file = dir.appendingPathComponent("plain").path
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        let frames = try OutputRun.run(["frames", CLI.video("h264_cfr.mp4"), "--max-frames", "2", "--out", file + "/pngs"])
        #expect(frames.status == 19, "\(frames.stderr)")
        #expect(frames.stderr.contains("error[write-failed]: \(file)/pngs: could not write ("), "\(frames.stderr)")

        // A device is written in place and never replaced or removed.
        let full = try OutputRun.run(["encode", CLI.video("h264_cfr.mp4"), "--model", OutputRun.demo, "--out", "/dev/full"])
        #expect(full.status == 19 && full.stderr.contains("/dev/full: could not write (No space left on device)"), "\(full.stderr)")
        let type = try FileManager.default.attributesOfItem(atPath: "/dev/full")[.type] as? FileAttributeType
        #expect(type == .typeCharacterSpecial)

        // And a good path gets exactly the embeddings, with no temporary file left beside it.
        let good = try OutputRun.run(["encode", CLI.video("h264_cfr.mp4"), "--model", OutputRun.demo, "--out", dir.path + "/e.bin", "--json"])
        #expect(good.status == 0, "\(good.stderr)")
        let out = try CLI.json(good.stdout)
        let bytes = try Data(contentsOf: dir.appendingPathComponent("e.bin")).count
        #expect(bytes == 4 * (out["tokens"] as? Int ?? -1) * (out["embedding_width"] as? Int ?? -1))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["e.bin", "plain"])
    }

    /// An argument that is not UTF-8 arrives byte for byte (Swift's CommandLine.arguments would
    /// turn 0xFF into U+FFFD): the error names the path with the byte as \xFF. Opening a video
    /// by such a name is Media's part and tested there.
    @Test func nonUTF8ArgumentArrivesIntact() throws {
        let dir = try OutputRun.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("plain").path
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        let r = try OutputRun.shell(#"exec "$0" frames "$1" --max-frames 2 --out "$2/$(printf '\377')dir""#,
                                  [CLI.video("h264_cfr.mp4"), file])
        #expect(r.status == 19, "\(r.stderr)")
        #expect(r.stderr.contains("error[write-failed]: \(file)/\\xFFdir: could not write"), "\(r.stderr)")
    }

    @Test func threadsAreBounded() throws {
        let r = try OutputRun.run(["frames", CLI.video("h264_cfr.mp4"), "--threads", "5000"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("--threads must be between 0 (automatic) and 64, got 5000"), "\(r.stderr)")
    }

    /// Non-finite, negative, zero and huge values: exit 64 with the option and the value named.
    @Test(arguments: [
        ["frames", "--fps", "nan"], ["frames", "--fps", "inf"], ["frames", "--max-frames", "0"],
        ["frames", "--min-pixels=-1"], ["frames", "--total-pixels=-1"], ["frames", "--total-pixels", "nan"],
        ["frames", "--start", "nan"], ["frames", "--end", "inf"], ["frames", "--max-pixels", "1000000000"],
        ["describe", "--temperature", "inf"], ["describe", "--max-new-tokens=-5"], ["describe", "--top-p", "nan"],
        ["describe", "--repetition-penalty", "inf"], ["describe", "--top-k", "0"], ["encode", "--fps", "nan"],
        ["bench", "vision", "--runs", "1000000000"], ["bench", "kernels", "--runs", "0"],
        ["bench", "decode", "--threads", "5000"], ["bench", "generate", "--tokens", "0"],
        ["bench", "ingest", "--count", "0"], ["bench", "vision", "--family", "qwen3_vl", "--depth", "25"],
        ["bench", "generate", "--family", "qwen2_5_vl", "--layers", "37"], ["bench", "pipeline", "--clips", "0"],
        ["bench", "pipeline", "--batch", "2"], ["bench", "pipeline", "--tokens", "0"], ["bench", "pipeline", "--layers", "29"],
        ["bench", "pipeline", "--depth", "33"],
    ])
    func absurdOptionsExit64(_ args: [String]) throws {
        let option = args[args.count - (args.last?.hasPrefix("--") == true ? 1 : 2)]
        let name = String(option.split(separator: "=")[0])
        let value = option.contains("=") ? String(option.split(separator: "=")[1]) : args[args.count - 1]
        var argv = Array(args.dropLast(option.contains("=") ? 1 : 2))
        if argv[0] == "bench" {
            // Arguments that make the unvalidated command fail at once rather than run (and
            // bench generate write a 4 GB checkpoint) if the validation regressed.
            if argv[1] == "decode" || argv[1] == "ingest" { argv.append("/nonexistent/x.mp4") }
            if argv[1] == "generate" || argv[1] == "pipeline" { argv += ["--directory", "/dev/null/reelql-bench"] }
        } else {
            argv.append(CLI.video("h264_cfr.mp4"))
            if argv[0] == "encode" { argv += ["--model", OutputRun.demo] }
        }
        let r = try OutputRun.run(argv + [option] + (option.contains("=") ? [] : [value]))
        #expect(r.status == 64, "\(args): \(r.status) \(r.stderr)")
        #expect(r.stderr.contains("\(name) must be"), "\(r.stderr)")
        #expect(r.stderr.contains("got \(value)"), "\(r.stderr)")
    }
}
