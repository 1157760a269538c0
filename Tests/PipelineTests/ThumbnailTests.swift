import Foundation
import GRDB
@testable import Media
import Testing
@testable import Pipeline

/// Pictures in the database: every clip's middle frame and contact strip, written with its results,
/// carried by merge; databases from before the thumbnails table migrate without loss.
@Suite struct ThumbnailTests {
    static func thumbnails(_ path: String) throws -> [(clip: Int64, kind: String, mime: String, width: Int, height: Int, bytes: Data)] {
        try Store(path: path).db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM thumbnails ORDER BY clip_id, kind").map {
                ($0["clip_id"], $0["kind"], $0["mime_type"], $0["width"], $0["height"], $0["bytes"])
            }
        }
    }

    /// JPEG bytes decoded back by FFmpeg (its image demuxer): width, height and RGB.
    static func decode(_ jpeg: Data) throws -> VideoFrame? {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-thumb-\(UUID().uuidString).jpg")
        try jpeg.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let video = try VideoDecoder(path: file.path)
        return try video.sample(SamplingOptions(fps: 1, resize: ResizeOptions(native: true))).frames.first
    }

    @Test func everyClipGetsAFrameAndAStripInItsTransaction() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4", "rotated90.mp4", "not_a_video.mp4"])
        defer { ws.remove() }
        try ws.run()
        let db = ws.root + "/results.sqlite"
        let store = try Store(path: db)
        let clips = try store.db.read { db in try Row.fetchAll(db, sql: "SELECT id, width, height, frames FROM clips") }
        let thumbs = try Self.thumbnails(db)
        #expect(!clips.isEmpty)
        #expect(thumbs.count == 2 * clips.count, "\(thumbs.count) thumbnails for \(clips.count) clips")
        for c in clips {
            let id: Int64 = c["id"], w: Int = c["width"], h: Int = c["height"], frames: Int = c["frames"]
            let mine = thumbs.filter { $0.clip == id }
            guard let frame = mine.first(where: { $0.kind == "frame" }), let strip = mine.first(where: { $0.kind == "strip" }) else {
                Issue.record("clip \(id) lacks a frame or a strip"); continue
            }
            // JPEG with a JFIF header (as image sniffers such as Datasette's plugin look for).
            #expect(frame.mime == "image/jpeg" && frame.bytes.starts(with: [0xFF, 0xD8, 0xFF, 0xE0]) && frame.bytes[6..<10] == Data("JFIF".utf8))
            // The sampled frames here are smaller than 320: kept at their size, never enlarged.
            #expect(frame.width == w && frame.height == h)
            // The strip: every sampled frame (up to 8) side by side, each within 160 px (not scaled here).
            #expect(max(w, h) <= 160 && strip.width == min(8, frames) * w && strip.height == h, "\(strip.width)x\(strip.height) for \(frames) frames of \(w)x\(h)")
            let decoded = try #require(try Self.decode(frame.bytes))
            #expect(decoded.width == frame.width && decoded.height == frame.height)
            let s = try #require(try Self.decode(strip.bytes))
            #expect(s.width == strip.width && s.height == strip.height)
        }
    }

    @Test func theMiddleFrameIsEncodedFaithfully() throws {
        // A 64×48 image: left half red, right half a blue-green gradient.
        var rgb = [UInt8](repeating: 0, count: 64 * 48 * 3)
        for y in 0..<48 { for x in 0..<64 {
            let i = (y * 64 + x) * 3
            if x < 32 { rgb[i] = 220; rgb[i + 1] = 30; rgb[i + 2] = 30 } else { rgb[i + 1] = UInt8(4 * y); rgb[i + 2] = 200 }
        } }
        let frames = (0..<5).map { VideoFrame(index: $0, timestamp: Double($0), width: 64, height: 48, rgb: $0 == 2 ? rgb : [UInt8](repeating: 0, count: rgb.count), concealed: false) }
        let made = try Thumbnail.make(frames: frames, maxSide: 32)
        #expect(made.map(\.kind) == [.frame, .strip])
        #expect(made[0].width == 32 && made[0].height == 24)
        #expect(made[1].width == 5 * 16 && made[1].height == 12) // 5 frames, each within 16 px
        let big = try Thumbnail.make(frames: frames, maxSide: 320)[0]
        #expect(big.width == 64 && big.height == 48)
        let back = try #require(try Self.decode(big.jpeg))
        var error = 0.0
        for i in rgb.indices { error += abs(Double(back.rgb[i]) - Double(rgb[i])) }
        #expect(error / Double(rgb.count) < 6, "mean absolute error \(error / Double(rgb.count))")
        #expect(try Thumbnail.make(frames: []).isEmpty)
    }

    @Test func specChoosesTheSizeOrNone() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4"])
        defer { ws.remove() }
        try (Workspace.spec(model: Workspace.fixtures.appendingPathComponent("models/tiny-qwen2vl-chat").path)
             + "\n  thumbnails: false\n").write(toFile: ws.specPath, atomically: true, encoding: .utf8)
        try ws.run()
        #expect(try Self.thumbnails(ws.root + "/results.sqlite").isEmpty)
        try (Workspace.spec(model: Workspace.fixtures.appendingPathComponent("models/tiny-qwen2vl-chat").path, database: "small.sqlite")
             + "\n  thumbnails: 40\n").write(toFile: ws.specPath, atomically: true, encoding: .utf8)
        try ws.run()
        let small = try Self.thumbnails(ws.root + "/small.sqlite").filter { $0.kind == "frame" }
        #expect(!small.isEmpty && small.allSatisfy { max($0.width, $0.height) <= 40 })
        for bad in ["8", "-5", "99999", "big", "1.5"] {
            #expect(throws: PipelineError.self) {
                try PipelineSpec.parse("inputs: {paths: [v]}\noutput: {thumbnails: \(bad)}", path: "s.yaml").validate(path: "s.yaml")
            }
        }
    }

    /// A database written by the version before thumbnails (schema v1 only, with rows) opens,
    /// gains the table, keeps every row, searches, and merges with a new database both ways.
    @Test func aVersionOneDatabaseMigratesAndMerges() throws {
        let ws = try Workspace(videos: ["h264_cfr.mp4", "hevc.mp4"])
        defer { ws.remove() }
        try ws.run(database: ws.root + "/new.sqlite")
        let old = ws.root + "/old.sqlite"
        do {
            let queue = try DatabaseQueue(path: old)
            try Store.migrator.migrate(queue, upTo: "v1")
            // The old database holds the same footage: copy the new one's rows but thumbnails.
            try queue.writeWithoutTransaction { db in
                try db.execute(sql: "ATTACH DATABASE ? AS n", arguments: [ws.root + "/new.sqlite"])
                for t in ["runs", "videos", "clips", "results"] {
                    // v1's columns only (later versions add some).
                    let columns = try db.columns(in: t, in: "main").map(\.name).joined(separator: ", ")
                    try db.execute(sql: "INSERT INTO main.\(t) (\(columns)) SELECT \(columns) FROM n.\(t)")
                }
                try db.execute(sql: "DETACH DATABASE n")
            }
            #expect(try queue.read { db in try db.tableExists("thumbnails") } == false)
        }
        let before = try canonicalRows(ws.root + "/new.sqlite")
        let store = try Store(path: old)
        #expect(try canonicalRows(old) == before)
        #expect(try store.db.read { db in try db.tableExists("thumbnails") })
        let word = try #require(try store.db.read { db in try String.fetchOne(db, sql: "SELECT text FROM results LIMIT 1") }?
            .split(separator: " ").first.map(String.init))
        #expect(!(try store.search("\"\(word.replacingOccurrences(of: "\"", with: ""))\"")).isEmpty, "the rebuilt index finds '\(word)'")
        // old + new: the thumbnails come along; new + old: nothing lost.
        let merged = ws.root + "/merged.sqlite", merged2 = ws.root + "/merged2.sqlite"
        try Store(path: merged).merge(from: old)
        try Store(path: merged).merge(from: ws.root + "/new.sqlite")
        try Store(path: merged2).merge(from: ws.root + "/new.sqlite")
        try Store(path: merged2).merge(from: old)
        let newThumbs = try Self.thumbnails(ws.root + "/new.sqlite")
        #expect(!newThumbs.isEmpty)
        for m in [merged, merged2] {
            #expect(try canonicalRows(m) == before)
            #expect(try Self.thumbnails(m).map { "\($0.kind) \($0.width)x\($0.height) \($0.bytes.count)" }.sorted()
                    == newThumbs.map { "\($0.kind) \($0.width)x\($0.height) \($0.bytes.count)" }.sorted())
        }
    }
}
