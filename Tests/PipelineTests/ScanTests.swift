import Foundation
import Testing
import Media
@testable import Pipeline
#if canImport(Glibc)
import Glibc
#endif

/// A scratch folder for hostile file-system layouts, built with raw system calls.
struct ScanScratch {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-scan-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/videos", withIntermediateDirectories: true)
    }

    var videos: String { root + "/videos" }

    func remove() { try? FileManager.default.removeItem(atPath: root) }

    /// Creates a file whose path is `bytes` exactly (a name need not be UTF-8) holding `content`.
    @discardableResult
    static func write(bytes: [UInt8], _ content: [UInt8]) -> Bool {
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

    static func write(_ path: String, _ content: [UInt8] = Array("not really a video".utf8)) {
        write(bytes: Array(path.utf8), content)
    }

    func inputs(_ paths: String...) -> PipelineSpec.Inputs {
        var inputs = PipelineSpec.Inputs()
        inputs.paths = paths
        return inputs
    }
}

/// Holds a result across threads; the semaphore orders the write before the read.
final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Runs `body` on its own thread and waits at most `seconds`: a regression that blocks (on a
/// FIFO, in a link loop) fails the test instead of hanging the run. On a timeout, `fifo` is
/// opened for writing, which releases a reader stuck in open(2).
func withDeadline<T>(_ seconds: Double = 20, releasing fifo: String? = nil, _ body: @escaping @Sendable () -> T) -> T? {
    let box = ResultBox<T>()
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

@Suite struct ScanTests {
    func listing(_ inputs: PipelineSpec.Inputs, releasing fifo: String? = nil) throws -> Scan.Listing {
        guard let result = withDeadline(releasing: fifo, { Result { try Scan.listing(inputs, resolve: { $0 }) } }) else {
            Issue.record("the scan did not finish")
            throw CancellationError()
        }
        return try result.get()
    }

    @Test func specialFilesAreSkippedWithoutBlocking() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        ScanScratch.write(s.videos + "/a.mp4")
        let fifo = s.videos + "/pipe.mp4"
        #expect(mkfifo(fifo, 0o644) == 0)
        #expect(symlink("/dev/null", s.videos + "/null.mp4") == 0)

        for inputs in [s.inputs(s.videos), s.inputs(s.videos + "/*.mp4"), s.inputs(s.root + "/**")] {
            let found = try listing(inputs, releasing: fifo)
            #expect(found.files == [s.videos + "/a.mp4"])
            let reasons = Dictionary(uniqueKeysWithValues: found.skipped.map { ($0.path, $0.reason) })
            #expect(reasons[fifo]?.contains("named pipe") == true, "\(found.skipped)")
            #expect(reasons[s.videos + "/null.mp4"]?.contains("character device") == true, "\(found.skipped)")
            #expect(try Scan.files(inputs, resolve: { $0 }) == found.files)
        }

        // Named directly: passed over with its reason, never opened.
        let direct = try listing(s.inputs(fifo), releasing: fifo)
        #expect(direct.files.isEmpty)
        #expect(direct.skipped.first?.reason.contains("named pipe") == true)
    }

    @Test func directoryLinkLoopsListOneVideo() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        ScanScratch.write(s.videos + "/a.mp4")
        #expect(symlink(".", s.videos + "/loop") == 0)
        #expect(symlink("..", s.videos + "/up") == 0)
        try FileManager.default.createDirectory(atPath: s.videos + "/sub", withIntermediateDirectories: true)
        #expect(symlink("../..", s.videos + "/sub/back") == 0)

        for inputs in [s.inputs(s.videos), s.inputs(s.videos + "/**/*.mp4"), s.inputs(s.root + "/**/a.mp4"),
                       s.inputs(s.videos, s.videos + "/loop", s.videos + "/up/videos")] {
            let found = try listing(inputs)
            #expect(found.files == [s.videos + "/a.mp4"], "\(inputs.paths)")
        }
        let found = try listing(s.inputs(s.videos))
        #expect(found.skipped.contains { $0.path == s.videos + "/loop" })
    }

    @Test func linksToOneFileAreOneVideo() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        ScanScratch.write(s.videos + "/b.mp4")
        #expect(link(s.videos + "/b.mp4", s.videos + "/c.mp4") == 0)
        #expect(symlink("b.mp4", s.videos + "/a.mp4") == 0)
        #expect(symlink("gone.mp4", s.videos + "/dangling.mp4") == 0)
        try FileManager.default.createDirectory(atPath: s.root + "/zother", withIntermediateDirectories: true)
        #expect(symlink("../videos/c.mp4", s.root + "/zother/d.mp4") == 0)

        let found = try listing(s.inputs(s.videos, s.root + "/zother", s.videos + "/c.mp4"))
        #expect(found.files == [s.videos + "/a.mp4"])
        #expect(found.skipped.contains { $0.path == s.videos + "/dangling.mp4" && $0.reason.contains("dangling") }, "\(found.skipped)")
        #expect(try Scan.files(s.inputs(s.videos + "/*.mp4"), resolve: { $0 }) == [s.videos + "/a.mp4"])
    }

    @Test func nameThatIsNotUTF8IsFoundAndFingerprinted() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        let content = (0..<(200 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let raw = Array((s.videos + "/caf").utf8) + [0xFF] + Array(".mp4".utf8)
        #expect(ScanScratch.write(bytes: raw, content))
        ScanScratch.write(s.videos + "/plain.mp4", content)

        for inputs in [s.inputs(s.videos), s.inputs(s.videos + "/caf?.mp4")] {
            let files = try Scan.files(inputs, resolve: { $0 })
            #expect(files.contains { PathBytes.bytes($0) == raw }, "\(files.map(PathBytes.display))")
        }
        let path = PathBytes.string(raw)
        #expect(try Scan.files(s.inputs(path), resolve: { $0 }).map(PathBytes.bytes) == [raw])

        // The fingerprint hashes the size and the first and last 64 KiB, as it always has.
        let (fingerprint, size, mtime) = try Scan.fingerprint(path)
        var hash = Scan.fnv1a(withUnsafeBytes(of: Int64(content.count).littleEndian) { Array($0) })
        hash = Scan.fnv1a(content.prefix(64 << 10), seed: hash)
        hash = Scan.fnv1a(content.suffix(64 << 10), seed: hash)
        #expect(fingerprint == String(format: "%016llx", hash))
        #expect(size == Int64(content.count))
        #expect(abs(mtime - Date().timeIntervalSince1970) < 600)
        #expect(try Scan.fingerprint(s.videos + "/plain.mp4").fingerprint == fingerprint)
    }

    @Test func fingerprintRefusesAFIFOWithoutBlocking() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        let fifo = s.videos + "/pipe.mp4"
        #expect(mkfifo(fifo, 0o644) == 0)
        guard let result = withDeadline(releasing: fifo, { Result { try Scan.fingerprint(fifo) } }) else {
            Issue.record("fingerprint blocked on a FIFO")
            return
        }
        guard case .failure(let error) = result, case MediaError.notAVideo(let path, let reason)? = error as? MediaError else {
            Issue.record("expected notAVideo, got \(result)")
            return
        }
        #expect(path == fifo)
        #expect(reason.contains("named pipe"))
        #expect(throws: MediaError.self) { try Scan.fingerprint(s.videos) }
    }
}

/// Links into kernel file systems (/proc, /sys, /dev, cgroups) inside an input folder are never
/// walked: /proc alone leads back to the whole file system through every process's cwd. Each is
/// skipped with its reason, by directory walks and glob walks alike, and given directly too.
@Suite struct VirtualFileSystemScanTests {
    @Test func virtualFileSystemsAreNeverWalked() throws {
        let s = try ScanScratch()
        defer { s.remove() }
        ScanScratch.write(s.videos + "/a.mp4")
        let links = ["proc": "/proc", "sys": "/sys", "dev": "/dev", "self": "/proc/self", "pts": "/dev/pts", "cg": "/sys/fs/cgroup"]
        for (name, target) in links { #expect(symlink(target, s.videos + "/" + name) == 0) }
        for inputs in [s.inputs(s.videos), s.inputs(s.videos + "/**/*.mp4"), s.inputs(s.root + "/**")] {
            guard let result = withDeadline(30, { Result { try Scan.listing(inputs, resolve: { $0 }) } }) else {
                Issue.record("the scan of \(inputs.paths) did not finish: it walked a virtual file system")
                return
            }
            let found = try result.get()
            #expect(found.files == [s.videos + "/a.mp4"], "\(inputs.paths)")
            let reasons = Dictionary(uniqueKeysWithValues: found.skipped.map { ($0.path, $0.reason) })
            #expect(reasons[s.videos + "/proc"]?.contains("procfs") == true, "\(found.skipped)")
            #expect(reasons[s.videos + "/self"]?.contains("procfs") == true, "\(found.skipped)")
            #expect(reasons[s.videos + "/sys"]?.contains("sysfs") == true, "\(found.skipped)")
            #expect(reasons[s.videos + "/dev"]?.contains("/dev") == true, "\(found.skipped)")
            #expect(found.skipped.allSatisfy { !$0.path.contains("/proc/") && !$0.path.hasPrefix(s.videos + "/proc/") }, "\(found.skipped)")
        }
        let proc = s.inputs("/proc")
        guard let direct = withDeadline(30, { Result { try Scan.listing(proc, resolve: { $0 }) } }) else {
            Issue.record("the scan of /proc did not finish")
            return
        }
        let listing = try direct.get()
        #expect(listing.files.isEmpty && listing.skipped.first?.reason.contains("procfs") == true, "\(listing)")
    }
}

/// Times said as H:MM:SS (progress, search): a time past any clock, from a hostile file's
/// timestamps, is said in seconds rather than trapping in the conversion to Int.
@Suite struct ClockTests {
    @Test func clockTimes() {
        #expect(Runner.clock(3725.9) == "1:02:05")
        #expect(Runner.clock(0) == "0:00:00")
        #expect(Runner.clock(1.8e19) == "1.8e+19 s")
        #expect(Runner.clock(.infinity) == "inf s")
        #expect(Runner.duration(59.6) == "0:01:00")
    }
}
