import Foundation
import Testing
@testable import Media
#if canImport(Glibc)
import Glibc
#endif

/// Files that are not regular files, or whose names are not UTF-8, reach the decoder: it must
/// name them clearly and never block.
@Suite struct SpecialFileTests {
    final class Box<T>: @unchecked Sendable { var value: T? }

    /// Runs `body` on its own thread and waits at most `seconds`, so a regression that blocks
    /// in open(2) on a FIFO fails instead of hanging; on a timeout the FIFO is opened for
    /// writing, which releases the stuck reader.
    func withDeadline<T>(_ seconds: Double = 20, releasing fifo: String? = nil, _ body: @escaping @Sendable () -> T) -> T? {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        Thread { box.value = body(); done.signal() }.start()
        guard done.wait(timeout: .now() + seconds) == .success else {
            if let fifo {
                let fd = open(fifo, O_WRONLY | O_NONBLOCK)
                if fd >= 0 { close(fd) }
            }
            return nil
        }
        return box.value
    }

    /// The error opening `path` gives, within the deadline.
    func openError(_ path: String, releasing fifo: String? = nil) -> MediaError? {
        let result = withDeadline(releasing: fifo) { () -> MediaError? in
            do { _ = try VideoDecoder(path: path); return nil } catch { return error as? MediaError }
        }
        guard let result else { Issue.record("opening \(path) did not return"); return nil }
        return result
    }

    func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-special-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Writes `content` to the file whose path is exactly `bytes`.
    func write(bytes: [UInt8], _ content: [UInt8]) -> Bool {
        let fd = (bytes + [0]).withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c -> Int32 in
                guard let base = c.baseAddress else { return -1 }
                return open(base, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            }
        }
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return content.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == content.count
    }

    @Test func fifoIsNotAVideoAndNeverBlocks() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/pipe.mp4"
        #expect(mkfifo(fifo, 0o644) == 0)
        guard case .notAVideo(let path, let reason)? = openError(fifo, releasing: fifo) else {
            Issue.record("a FIFO must be notAVideo")
            return
        }
        #expect(path == fifo)
        #expect(reason.contains("named pipe"), "\(reason)")
    }

    @Test func deviceIsNotAVideo() {
        guard case .notAVideo(_, let reason)? = openError("/dev/null") else { Issue.record("/dev/null must be notAVideo"); return }
        #expect(reason.contains("character device"), "\(reason)")
    }

    @Test func procFileIsNotCalledEmpty() {
        // stat gives /proc files size 0, but they have content.
        let error = openError("/proc/self/status")
        guard case .notAVideo? = error else { Issue.record("expected notAVideo, got \(String(describing: error))"); return }
    }

    @Test func latin1NameDecodes() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let video = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Fixtures.video("h264_cfr.mp4"))))
        let raw = Array((dir + "/caf").utf8) + [0xE9] + Array(".mp4".utf8)
        #expect(write(bytes: raw, video))
        let path = PathBytes.string(raw)
        let sampled = try VideoDecoder(path: path).sample(SamplingOptions(fps: 2, maxFrames: 2))
        #expect(!sampled.frames.isEmpty)

        // Errors show the foreign byte as \xE9, and name the file that failed.
        let bad = Array((dir + "/bad").utf8) + [0xE9] + Array(".mp4".utf8)
        #expect(write(bytes: bad, Array("this is text, not a video".utf8)))
        let error = openError(PathBytes.string(bad))
        guard case .notAVideo(let failed, _)? = error else { Issue.record("expected notAVideo, got \(String(describing: error))"); return }
        #expect(PathBytes.bytes(failed) == bad)
        #expect(error?.errorDescription?.contains("/bad\\xE9.mp4") == true, "\(String(describing: error?.errorDescription))")

        let empty = Array((dir + "/empty").utf8) + [0xE9] + Array(".mp4".utf8)
        #expect(write(bytes: empty, []))
        guard case .emptyFile? = openError(PathBytes.string(empty)) else { Issue.record("an empty file stays emptyFile"); return }
    }

    @Test func pngWritesUnderLatin1Name() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let raw = Array((dir + "/frame").utf8) + [0xE9] + Array(".png".utf8)
        try PNGWriter.write(rgb: [UInt8](repeating: 128, count: 4 * 2 * 3), width: 4, height: 2, to: PathBytes.string(raw))
        // Read back by the raw bytes, not through PathBytes.
        let fd = (raw + [0]).withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c -> Int32 in
                guard let base = c.baseAddress else { return -1 }
                return open(base, O_RDONLY)
            }
        }
        #expect(fd >= 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 8)
        #expect(read(fd, &head, 8) == 8)
        #expect(head == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}

/// PathBytes.parent gives what NSString's deletingLastPathComponent gives (which traps on a
/// one-character path in this Foundation).
@Suite struct PathParentTests {
    @Test func parentsAsFoundationGivesThem() {
        for path in ["a/b", "/a", "/a/b/", "a//b", "/", "", "dir/é.mp4", "./x.yaml", "../y"] {
            #expect(PathBytes.parent(path) == (path as NSString).deletingLastPathComponent, "\(path)")
        }
        #expect(PathBytes.parent("a") == "" && PathBytes.parent("é") == "" && PathBytes.parent("a/") == "")
    }
}
