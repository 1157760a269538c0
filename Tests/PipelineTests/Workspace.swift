import Foundation
@testable import Pipeline

/// A temporary folder with copies of some fixture videos, a spec over them and its database.
struct Workspace {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures")
    static let videos = ["h264_cfr.mp4", "hevc.mp4", "shortgop.mp4", "vp9.webm", "truncated.mkv", "not_a_video.mp4", "empty.mp4"]
    static let good = ["h264_cfr.mp4", "hevc.mp4", "shortgop.mp4", "vp9.webm"]
    static let broken = ["not_a_video.mp4", "empty.mp4"]

    let root: String
    var videoDir: String { root + "/videos" }
    var specPath: String { root + "/spec.yaml" }

    init(videos: [String] = Workspace.videos) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-ws-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/videos", withIntermediateDirectories: true)
        for v in videos {
            try FileManager.default.copyItem(atPath: Workspace.fixtures.appendingPathComponent("videos/\(v)").path, toPath: "\(root)/videos/\(v)")
        }
        try Workspace.spec(model: Workspace.fixtures.appendingPathComponent("models/tiny-qwen2vl-chat").path)
            .write(toFile: specPath, atomically: true, encoding: .utf8)
    }

    static func spec(model: String, database: String = "results.sqlite") -> String {
        """
        inputs:
          paths: [videos]
        sampling:
          fps: 2
          min_pixels: 3136
          max_pixels: 9408
          max_frames: 4
        clips:
          seconds: 2
          min_remainder: 0.5
        model: \(model)
        prompts:
          description: Describe this clip.
          questions: [Is there a dog?]
        generation:
          max_new_tokens: 6
        output:
          database: \(database)
        """
    }

    func spec() throws -> PipelineSpec { try PipelineSpec.load(path: specPath) }

    func remove() { try? FileManager.default.removeItem(atPath: root) }

    /// Runs the spec in-process.
    @discardableResult
    func run(database: String? = nil, shard: (k: Int, n: Int)? = nil) throws -> RunReport {
        let runner = try Runner(spec: try spec(), databasePath: database, shard: shard, progress: Progress(quiet: true, logFile: nil))
        return try runner.run()
    }
}

/// Everything a run produced but ids and timings: what must be equal between runs.
func canonicalRows(_ database: String) throws -> [String] {
    let store = try Store(path: database)
    return try store.db.read { db in
        var rows = try String.fetchAll(db, sql: """
            SELECT 'video|' || path || '|' || status || '|' || ifnull(error_kind, '') || '|' || ifnull(duration, '') FROM videos
            """)
        rows += try String.fetchAll(db, sql: """
            SELECT 'clip|' || v.path || '|' || c.clip_index || '|' || c.start_seconds || '|' || c.end_seconds || '|' || c.frames
                   || '|' || c.width || 'x' || c.height
            FROM clips c JOIN videos v ON v.id = c.video_id
            """)
        rows += try String.fetchAll(db, sql: """
            SELECT 'result|' || v.path || '|' || r.clip_index || '|' || r.kind || '|' || r.prompt || '|' || r.text || '|' || r.generated_tokens
            FROM results r JOIN videos v ON v.id = r.video_id
            """)
        return rows.sorted()
    }
}
