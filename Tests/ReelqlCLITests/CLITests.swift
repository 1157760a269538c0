import Foundation
import Testing
import Media

/// The `reelql` executable, run as a user runs it.
enum CLI {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static func video(_ name: String) -> String { root.appendingPathComponent("fixtures/videos/\(name)").path }

    /// The built binary sits beside the test bundle.
    static var binary: URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("reelql").path), dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("reelql")
    }

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    static func run(_ args: [String], environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        p.executableURL = binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    static func json(_ s: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(s.utf8)) as! [String: Any]
    }

    /// The reference case for a fixture video (fixtures/reference/sampling.json).
    static func referenceCase(_ video: String, _ index: Int) throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent("fixtures/reference/sampling.json"))
        let all = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let v = (all["videos"] as! [String: Any])[video] as! [String: Any]
        return (v["cases"] as! [[String: Any]])[index]
    }
}

@Suite struct CLITests {
    @Test func framesJSONMatchesReference() throws {
        let ref = try CLI.referenceCase("hevc.mp4", 3) // fps 4, window [0.5, 1.75)
        let r = try CLI.run(["frames", CLI.video("hevc.mp4"), "--fps", "4", "--start", "0.5", "--end", "1.75", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        #expect(out["indices"] as? [Int] == ref["indices"] as? [Int])
        #expect(out["width"] as? Int == ref["width"] as? Int)
        #expect(out["height"] as? Int == ref["height"] as? Int)
        let ts = out["timestamps"] as! [Double], refTS = ref["timestamps"] as! [Double]
        #expect(ts.count == refTS.count)
        for (a, b) in zip(ts, refTS) { #expect(abs(a - b) < 1e-9) }
    }

    /// `frames` on a still image shows what `describe` gives the model: one frame at
    /// fetch_image's size (56×56 stays 56×56; video rules would take it to 100,352 pixels or
    /// more), its transparency on white (qwen-vl-utils' to_rgb, fixtures/reference/rgb).
    @Test func framesOfAnImageAreWhatTheModelSees() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-cli-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["frames", CLI.video("alpha56.png"), "--json", "--out", dir])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        #expect(out["width"] as? Int == 56 && out["height"] as? Int == 56 && (out["indices"] as? [Int])?.count == 1)
        let png = try #require((out["files"] as? [String])?.first)
        let frame = try #require(try VideoDecoder(path: png).sample(SamplingOptions(resize: ResizeOptions(native: true))).frames.first)
        let expected = try Data(contentsOf: CLI.root.appendingPathComponent("fixtures/reference/rgb/alpha56-56x56.rgb"))
        #expect(frame.rgb == [UInt8](expected))
    }

    /// --max-pixels alone is never refused for being under the default minimum (128·28² for
    /// video): the minimum lowers to it. Under an explicit --min-pixels it is refused.
    @Test func aMaximumAloneLowersTheDefaultMinimum() throws {
        for (file, cap) in [("alpha56.png", 1000), ("rotated90.mp4", 8000)] {
            let r = try CLI.run(["frames", CLI.video(file), "--max-pixels", "\(cap)", "--max-frames", "1", "--json"])
            #expect(r.status == 0, "\(file): \(r.stderr)")
            let out = try CLI.json(r.stdout)
            let w = try #require(out["width"] as? Int), h = try #require(out["height"] as? Int)
            #expect(w * h <= cap && w % 28 == 0 && h % 28 == 0, "\(file): \(w)×\(h)")
        }
        let r = try CLI.run(["frames", CLI.video("rotated90.mp4"), "--min-pixels", "9000", "--max-pixels", "8000"])
        #expect(r.status == 64 && r.stderr.contains("--max-pixels") && r.stderr.contains("9000"), "\(r.stderr)")
    }

    @Test func framesWritesPNGs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try CLI.run(["frames", CLI.video("rotated90.mp4"), "--max-frames", "4", "--min-pixels", "784",
                             "--max-pixels", "8000", "--out", dir.path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let files = out["files"] as! [String]
        #expect(files.count == 4)
        // Each PNG holds exactly the frame the library delivers.
        let sampled = try VideoDecoder(path: CLI.video("rotated90.mp4"))
            .sample(SamplingOptions(maxFrames: 4, resize: ResizeOptions(minPixels: 784, maxPixels: 8000)))
        for (file, frame) in zip(files, sampled.frames) {
            let png = try VideoDecoder(path: file).sample(SamplingOptions(resize: ResizeOptions(native: true)))
            #expect(png.frames.count == 1)
            #expect(png.plan.width == frame.width && png.plan.height == frame.height)
            #expect(png.frames[0].rgb == frame.rgb)
        }
        #expect(sampled.plan.height > sampled.plan.width, "a portrait video stays portrait")
    }

    @Test func probeJSON() throws {
        let r = try CLI.run(["probe", CLI.video("rotated90.mp4"), "--json"])
        #expect(r.status == 0)
        let out = try CLI.json(r.stdout)
        #expect(out["codec"] as? String == "h264")
        #expect(out["width"] as? Int == 176 && out["height"] as? Int == 96)
        #expect(out["display_width"] as? Int == 96 && out["display_height"] as? Int == 176)
        #expect(out["frame_count"] as? Int == 60 && out["frame_count_exact"] as? Bool == true)
        #expect(abs((out["duration"] as? Double ?? 0) - 2) < 1e-6)
        #expect(out["average_frame_rate"] as? Double == 30)
        #expect(out["pixel_format"] as? String == "yuv420p")
        let counted = try CLI.json(try CLI.run(["probe", CLI.video("vfr.mkv"), "--json", "--count"]).stdout)
        #expect(counted["variable_frame_rate"] as? Bool == true)
        #expect(counted["frame_count"] as? Int == 52 && counted["frame_count_exact"] as? Bool == true)
    }

    @Test(arguments: [
        ("does-not-exist.mp4", Int32(10), "file-not-found"), ("empty.mp4", 11, "empty-file"),
        ("not_a_video.mp4", 12, "not-a-video"), ("audio_only.m4a", 13, "no-video-stream"),
        ("unsupported_codec.avi", 14, "unsupported-codec"), ("unfinished.mp4", 15, "truncated"),
    ])
    func unreadableFilesFailClearly(name: String, status: Int32, kind: String) throws {
        for command in ["frames", "probe"] {
            let r = try CLI.run([command, CLI.video(name), "--json"])
            #expect(r.status == status, "\(command) \(name): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error[\(kind)]: "), "\(r.stderr)")
            #expect(r.stderr.contains(name))
            #expect(r.stdout.isEmpty)
        }
    }

    @Test func damagedFilesDeliverFramesAndWarn() throws {
        let t = try CLI.run(["frames", CLI.video("truncated.mkv"), "--json"])
        #expect(t.status == 15)
        #expect(t.stderr.hasPrefix("warning[truncated]: "))
        #expect(t.stderr.contains("lost"))
        let out = try CLI.json(t.stdout)
        #expect(!(out["indices"] as! [Int]).isEmpty)
        #expect((out["damage"] as! [String: Any])["truncated"] as? Bool == true)
    }

    @Test func invalidOptionsAreUsageErrors() throws {
        let r = try CLI.run(["frames", CLI.video("hevc.mp4"), "--fps", "45"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("fps must be between 0.1 and 30"))
    }

    /// The model's complaints about an input name the input: native frames of 320×240 are not a
    /// multiple of the patch grid.
    @Test func inputErrorsNameTheFile() throws {
        let video = CLI.video("h264_cfr.mp4")
        let r = try CLI.run(["describe", video, "--native", "--max-new-tokens", "1"])
        #expect(r.status == 2 && r.stderr.contains("error[invalid-input]: \(video): ") && r.stderr.contains("multiple of 28"), "\(r.stderr)")
    }
}

@Suite struct CorruptCLITests {
    @Test func corruptPacketsWarnWithTheirOwnStatus() throws {
        let r = try CLI.run(["frames", CLI.video("corrupt.mp4"), "--fps", "4", "--json"])
        #expect(r.status == 16, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("warning[corrupt-data]: "))
        let out = try CLI.json(r.stdout)
        #expect((out["damage"] as! [String: Any])["corrupt_packets"] as! Int > 0)
        #expect(!(out["indices"] as! [Int]).isEmpty)
    }
}

/// Opening and sampling 500 files in one process keeps memory flat (no leaked FFmpeg contexts or
/// buffers). Measured in a process of its own, so that other tests' allocations do not count.
@Suite struct LeakTests {
    @Test func fiveHundredFilesKeepMemoryFlat() throws {
        let files = ["h264_cfr.mp4", "vp9.webm", "hevc.mp4", "mjpeg.mov", "truncated.mkv", "corrupt.mp4",
                     "not_a_video.mp4", "audio_only.m4a", "single_frame.mp4", "unsupported_codec.avi"]
        let r = try CLI.run(["bench", "ingest"] + files.map(CLI.video) + ["--count", "500", "--warmup", "100", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        #expect(out["files"] as? Int == 500)
        #expect(out["failed"] as? Int == 150) // not_a_video, audio_only, unsupported_codec
        let growth = out["growth_mib"] as! Double
        #expect(growth < 8, "resident memory grew \(growth) MiB over 500 files")
    }
}

@Suite struct EncodeCLITests {
    static let model = CLI.root.appendingPathComponent("fixtures/models/tiny-qwen2vl-b").path

    @Test func encodesAVideoIntoVideoTokens() throws {
        let r = try CLI.run(["encode", CLI.video("vp9.webm"), "--model", Self.model, "--min-pixels", "784",
                             "--max-pixels", "12544", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let grid = out["grid"] as! [Int]
        #expect(out["tokens"] as? Int == grid.reduce(1, *) / 4)
        #expect(out["embedding_width"] as? Int == 40)
        #expect(grid[1] * 14 == out["height"] as? Int && grid[2] * 14 == out["width"] as? Int)
        #expect(out["dtype"] as? String == "f32")
        let bf16 = try CLI.json(try CLI.run(["encode", CLI.video("vp9.webm"), "--model", Self.model, "--min-pixels", "784",
                                             "--max-pixels", "12544", "--dtype", "bf16", "--json"]).stdout)
        #expect(bf16["dtype"] as? String == "bf16")
        #expect(abs((bf16["mean"] as! Double) - (out["mean"] as! Double)) < 0.05)
        // Without oneDNN's bf16 products (CPUs without AVX-512), the widened path: same roundings.
        let widened = try CLI.run(["encode", CLI.video("vp9.webm"), "--model", Self.model, "--min-pixels", "784",
                                   "--max-pixels", "12544", "--dtype", "bf16", "--json"], environment: ["REELQL_NO_ONEDNN_BF16": "1"])
        #expect(widened.status == 0, "\(widened.stderr)")
        let w = try CLI.json(widened.stdout)
        #expect(abs((w["mean"] as! Double) - (bf16["mean"] as! Double)) < 1e-4)
        #expect(abs((w["std"] as! Double) - (bf16["std"] as! Double)) < 1e-4)
    }

    /// Frames are sized within the checkpoint's processor maximum (the demo model's longest_edge
    /// is 112×112 pixels), as describe and run size them, whatever --max-pixels asks for.
    @Test func encodeKeepsFramesWithinTheCheckpointsMaximum() throws {
        let demo = CLI.root.appendingPathComponent("models/demo").path
        let limit = try Qwen2VLModelFiles(directory: demo).preprocessor.maxPixels
        let r = try CLI.run(["encode", CLI.video("vp9.webm"), "--model", demo, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let (width, height) = (out["width"] as! Int, out["height"] as! Int)
        #expect(width * height <= limit, "\(width)×\(height) exceeds \(limit) pixels")
        #expect(limit < 160 * 120)  // vp9.webm is 160×120: larger than the limit
    }

    @Test func missingModelIsAClearError() throws {
        let r = try CLI.run(["encode", CLI.video("vp9.webm"), "--model", "/nonexistent"])
        #expect(r.status == 20)
        #expect(r.stderr.contains("config.json"))
    }
}

import Tokenizers
import VLM

@Suite struct DescribeCLITests {
    static let model = CLI.root.appendingPathComponent("fixtures/models/tiny-qwen2vl-chat").path

    /// --min-pixels and --max-pixels size an image as `frames` shows it (they were ignored for
    /// images by describe and encode).
    @Test func imagePixelBoundsAreTaken() throws {
        let image = CLI.video("alpha56.png")
        for (flags, grid, side) in [([String](), [1, 4, 4], 56), (["--max-pixels", "784"], [1, 2, 2], 28), (["--min-pixels", "200704"], [1, 32, 32], 448)] {
            let r = try CLI.run(["encode", image, "--model", Self.model, "--json"] + flags)
            #expect(r.status == 0, "\(flags): \(r.stderr)")
            let out = try CLI.json(r.stdout)
            #expect(out["grid"] as? [Int] == grid && out["width"] as? Int == side, "\(flags): \(out)")
            let f = try CLI.json(try CLI.run(["frames", image, "--json"] + flags).stdout)
            #expect(f["width"] as? Int == side, "frames \(flags): \(f)")
        }
    }

    /// The timings are wall time: prompts decoding together overlap, and their own generation
    /// times added up to more than the whole process took.
    @Test func describeTimingsAreWallTime() throws {
        let questions = (1...7).flatMap { ["--question", "q\($0)"] }
        let model = CLI.root.appendingPathComponent("fixtures/models/tiny-qwen3vl-b").path
        let started = Date()
        let r = try CLI.run(["describe", CLI.video("hevc.mp4"), "--model", model, "--max-new-tokens", "300", "--batch", "8", "--json"] + questions)
        let wall = Date().timeIntervalSince(started)
        #expect(r.status == 0, "\(r.stderr)")
        let timing = try #require(try CLI.json(r.stdout)["timing"] as? [String: Double])
        #expect(timing.values.reduce(0, +) <= wall, "\(timing) in \(wall) s")
        #expect((try CLI.json(r.stdout)["kv_cache_bytes"] as? Int ?? 0) > 0)
    }

    /// The CLI's answers are the library's: sampling, processor, chat prompt, one session.
    @Test func describeAndAnswerFromOneEncoding() throws {
        let args = ["describe", CLI.video("hevc.mp4"), "--model", Self.model, "--min-pixels", "784", "--max-pixels", "12544",
                    "--max-new-tokens", "16", "--question", "What color is it?", "--question", "Where is it?", "--json"]
        let r = try CLI.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let tokens = out["tokens"] as! [Int]
        let answers = out["answers"] as! [[String: Any]]
        #expect(answers.count == 2 && (answers[0]["question"] as? String) == "What color is it?")
        #expect(Set((out["timing"] as! [String: Double]).keys) == ["decode", "vision", "prefill", "generate"])

        let tokenizer = try Tokenizer(directory: Self.model)
        #expect(out["description"] as? String == tokenizer.decode(tokens, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines))
        let vlm = try Qwen2VLModel(directory: Self.model)
        let sampled = try VideoDecoder(path: CLI.video("hevc.mp4")).sample(SamplingOptions(resize: ResizeOptions(minPixels: 784, maxPixels: 12544)))
        let (pixels, grid) = try Qwen2VLProcessor(config: vlm.files.preprocessor).patches(frames: sampled.frames.map(RGBImage.init))
        func ids(_ q: String) throws -> [Int] {
            try Qwen2VLPrompt.encode([ChatMessage(role: "user", content: [.video, .text(q)])], tokenizer: tokenizer, videoTokens: [grid.patches / 4])
        }
        let stop: Set<Int> = [tokenizer.id("<|im_end|>")!, tokenizer.id("<|endoftext|>")!]
        for (q, expected) in [("Describe this video.", tokens), ("What color is it?", answers[0]["tokens"] as! [Int]),
                              ("Where is it?", answers[1]["tokens"] as! [Int])] {
            let full = try ids(q)
            let greedy = try vlm.generateGreedy(ids: full, vision: [VisionInput(pixels: pixels, grid: grid)], maxNewTokens: 16, stop: stop)
            #expect(greedy == expected, "\(q)")
        }
    }

    /// Without --model, describe uses $REELQL_MODEL (else the bundled demo model).
    @Test func describeDefaultsToTheEnvironmentsModel() throws {
        let args = ["describe", CLI.video("hevc.mp4"), "--min-pixels", "784", "--max-pixels", "12544", "--max-new-tokens", "8", "--json"]
        let viaEnvironment = try CLI.run(args, environment: ["REELQL_MODEL": Self.model])
        let explicit = try CLI.run(args + ["--model", Self.model])
        #expect(viaEnvironment.status == 0, "\(viaEnvironment.stderr)")
        #expect((try CLI.json(viaEnvironment.stdout))["tokens"] as? [Int] == (try CLI.json(explicit.stdout))["tokens"] as? [Int])
        let missing = try CLI.run(args, environment: ["REELQL_MODEL": "/nonexistent/model"])
        #expect(missing.status == 20 && missing.stderr.contains("/nonexistent/model"), "\(missing.status) \(missing.stderr)")
    }

    @Test func inspectCountsParameters() throws {
        let r = try CLI.run(["inspect", Self.model, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let params = try #require(out["parameters"] as? [String: Int])
        // The counts of tiny-qwen2vl-chat's tensors, summed from its safetensors header by Python
        // (json + struct, shapes multiplied): not by the command's own arithmetic.
        #expect(params == ["vision": 75424, "language": 44672, "lm_head": 25952, "total": 146048], "\(params)")
        #expect(out["files"] as? Int == 1)
    }

    @Test func tokenizePrintsIds() throws {
        let r = try CLI.run(["tokenize", "<|im_start|>user", "--model", Self.model])
        #expect(r.status == 0)
        let ids = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [Int]
        #expect(ids == (try Tokenizer(directory: Self.model)).encode("<|im_start|>user"))
    }

    /// Every command's help reads as written: ArgumentParser re-wraps discussions to the terminal, so
    /// a hard line break inside a paragraph would show as a ragged break mid-sentence. With a terminal
    /// wide enough for any paragraph, each line of the overview and discussion is a whole paragraph.
    @Test func helpTextHasNoHardLineBreaks() throws {
        var commands: [[String]] = [[]], seen = 0
        while seen < commands.count {
            let path = commands[seen]; seen += 1
            let r = try CLI.run(path + ["--help"], environment: ["COLUMNS": "100000"])
            #expect(r.status == 0, "\(path): \(r.stderr)")
            let lines = r.stdout.components(separatedBy: "\n")
            let usage = lines.firstIndex { $0.hasPrefix("USAGE:") } ?? lines.count
            for line in lines[..<usage] where !line.isEmpty {
                let last = line.trimmingCharacters(in: .whitespaces).last
                #expect(last.map { ".:)`".contains($0) } ?? true, "reelql \(path.joined(separator: " ")) --help: '\(line)'")
            }
            if let start = lines.firstIndex(of: "SUBCOMMANDS:") {
                for line in lines[(start + 1)...] {
                    guard line.hasPrefix("  "), let name = line.split(separator: " ").first, !name.hasPrefix("See") else { break }
                    commands.append(path + [String(name)])
                }
            }
        }
        #expect(commands.count > 12, "found \(commands.map { $0.joined(separator: " ") })")
    }
}

/// `bench pipeline`'s four configurations on a tiny checkpoint (its own 10 s test video, one
/// clip): the bf16 ones answer every prompt with the same tokens, int8's agreement is counted,
/// and the figures add up.
@Suite struct PipelineBenchTests {
    @Test func tinyRunAgreesAcrossConfigurations() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-bench-pipeline-test-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["bench", "pipeline", "--model", CLI.root.appendingPathComponent("fixtures/models/tiny-qwen2vl-chat").path,
                             "--clips", "1", "--tokens", "4", "--batch", "4", "--directory", dir, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        #expect(out["identical"] as? Bool == true)
        #expect(out["grid"] as? [Int] == [5, 16, 16]) // 10 frames at 1 fps, within the model's 224² frames
        let configurations = out["configurations"] as? [[String: Any]] ?? []
        #expect(configurations.map { $0["batch"] as? Int } == [1, 3, 4, 4])
        let lastName = configurations.last.flatMap { $0["name"] as? String } ?? ""
        #expect(lastName.contains("int8"))
        #expect((0...3).contains(out["int8_identical_prompts"] as? Int ?? -1), "\(out)")
        for c in configurations {
            let wall = c["wall_seconds"] as? Double ?? 0
            let parts = ["vision_seconds", "prefill_seconds", "generation_seconds", "other_seconds"].map { c[$0] as? Double ?? -1 }
            #expect(parts.allSatisfy { $0 >= 0 } && abs(parts.reduce(0, +) - wall) < 1e-6 * max(1, wall), "\(c)")
            #expect((c["generated_tokens"] as? Int ?? 0) > 0 && (c["generated_tokens"] as? Int ?? 0) <= 3 * 4)
            #expect(c["clips_per_hour"] as? Double ?? 0 > 0)
        }
        #expect(configurations.dropFirst(2).allSatisfy { ($0["max_cache_bytes"] as? Int ?? 0) > 0 })
        // Nothing is left behind without --keep.
        #expect((try? FileManager.default.contentsOfDirectory(atPath: dir)) == nil)
    }
}

/// `bench int8` on a tiny checkpoint and two real clips: int8 really changes the arithmetic (a
/// cosine of exactly 1 would mean bf16 ran twice) and stays within the gate; --vision-dtype
/// keeps the tower in bf16.
@Suite struct Int8BenchTests {
    @Test func tinyModelWithinGate() throws {
        let model = CLI.root.appendingPathComponent("fixtures/models/tiny-qwen2vl-chat").path
        let videos = ["h264_cfr.mp4", "rotated90.mp4"].map { CLI.root.appendingPathComponent("fixtures/videos/\($0)").path }
        for vision in [[], ["--vision-dtype", "bf16"]] {
            let r = try CLI.run(["bench", "int8", "--model", model, "--json"] + vision + videos)
            #expect(r.status == 0, "\(r.stderr)")
            let out = try CLI.json(r.stdout)
            let clips = out["clips"] as? [[String: Any]] ?? []
            #expect(clips.count == 2)
            for c in clips {
                let cosine = c["cosine"] as? Double ?? 0
                #expect(cosine >= 0.99 && cosine < 1, "\(c)")
            }
            #expect(out["vision_dtype"] as? String == (vision.isEmpty ? "int8" : "bf16"), "\(out)")
        }
        let bad = try CLI.run(["bench", "int8", "--model", model, "--gate", "1", videos[0]])
        #expect(bad.status == 1 && bad.stdout.contains("NOT MET"), "\(bad.stdout) \(bad.stderr)")
    }
}

