import Foundation
import Media
#if canImport(Glibc)
import Glibc
#endif

/// Finding the videos of a spec, and identifying them.
///
/// Paths are bytes on Linux, and a scan meets whatever a file system holds: names that are not
/// UTF-8, named pipes, sockets and devices, symbolic links that loop, several links to one file.
/// Every name goes through `PathBytes` (lossless), only regular files are ever returned, symbolic
/// links to directories are followed with a cycle check and a depth bound, and a file reached by
/// several paths is one video.
public enum Scan {
    /// How deep a scan descends below an input directory, a safety net under the cycle check.
    public static let maxDepth = 64
    /// How many directories a glob walk visits at most (it follows symbolic links by path, so a
    /// hostile tree of links could otherwise make it exponential).
    public static let maxGlobDirectories = 200_000

    /// A path a scan passed over, and why (a named pipe, a dangling link, a link loop...).
    public struct Skipped: Sendable, Equatable {
        public var path: String
        public var reason: String
        public init(path: String, reason: String) { self.path = path; self.reason = reason }
    }

    /// What a scan found: the video files, and the candidates it passed over.
    public struct Listing: Sendable, Equatable {
        /// Absolute, standardised, sorted by their bytes, one path per file.
        public var files: [String]
        /// Candidates (names with a video extension, directly named inputs, directories) that
        /// are not scanned, sorted by path.
        public var skipped: [Skipped]
    }

    /// The files the inputs name: directories (recursively when asked), files, and glob patterns
    /// (`*`, `?`, `**`), filtered by extension; absolute, standardised, sorted, unique.
    public static func files(_ inputs: PipelineSpec.Inputs, resolve: (String) -> String) throws -> [String] {
        try listing(inputs, resolve: resolve).files
    }

    /// `files(_:resolve:)` with the paths it passed over and why. Throws when an input that is
    /// not a glob does not exist.
    public static func listing(_ inputs: PipelineSpec.Inputs, resolve: (String) -> String) throws -> Listing {
        var walker = Walker(extensions: Set(inputs.extensions.map { $0.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: ".")) }))
        for raw in inputs.paths {
            let path = standardized(resolve(raw))
            if isGlob(path) {
                try walker.glob(path)
                continue
            }
            let (found, code) = FileStatus.of(path)
            guard let status = found else {
                let why: String
                if FileStatus.of(path, followingLinks: false).status?.kind == .symbolicLink {
                    why = "is a dangling symbolic link"
                } else if code == ENOENT || code == ENOTDIR {
                    why = "does not exist"
                } else {
                    why = "cannot be read (\(FileStatus.describe(errno: code)))"
                }
                throw PipelineError.noInputs("input '\(PathBytes.display(raw))' \(why) (resolved to \(PathBytes.display(path)))")
            }
            switch status.kind {
            case .directory: walker.walkTree(path, status: status, recursive: inputs.recursive)
            case .regular: walker.add(path, id: status.id)
            default: walker.skip(path, status.notRegularReason ?? "not a regular file")
            }
        }
        return walker.listing
    }

    /// Orders paths by their bytes (Swift's `<` on strings treats canonically equivalent names,
    /// which are different files, as equal).
    static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    static func isGlob(_ path: String) -> Bool { path.unicodeScalars.contains { $0 == "*" || $0 == "?" } }

    /// The path made absolute (against the working directory) with `.`, `..` and empty
    /// components removed, working on bytes so no name is altered.
    static func standardized(_ path: String) -> String {
        let slash = UInt8(ascii: "/")
        let absolute = path.utf8.first == slash ? path : currentDirectory() + "/" + path
        var parts: [String] = []
        for component in absolute.utf8.split(separator: slash, omittingEmptySubsequences: true) {
            let c = String(decoding: component, as: UTF8.self)
            if c.utf8.elementsEqual(".".utf8) { continue }
            if c.utf8.elementsEqual("..".utf8) { _ = parts.popLast(); continue }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    static func currentDirectory() -> String {
        guard let p = getcwd(nil, 0) else { return FileManager.default.currentDirectoryPath }
        defer { free(p) }
        return PathBytes.string(cString: p)
    }

    /// `dir/name`, without doubling the root's slash.
    static func join(_ dir: String, _ name: String) -> String { dir.utf8.last == UInt8(ascii: "/") ? dir + name : dir + "/" + name }

    /// The lower-cased extension of a file name ("MP4" in "a.MP4"), or nil.
    static func pathExtension(_ name: String) -> String? {
        let s = name.unicodeScalars
        guard let dot = s.lastIndex(of: "."), dot != s.startIndex else { return nil }
        return String(s[s.index(after: dot)...]).lowercased()
    }

    /// The names in `dir`, hidden ones left out, sorted by bytes; or the `errno` of `opendir`.
    static func entries(_ dir: String) -> (names: [String]?, errno: Int32) {
        guard let d = PathBytes.withCString(dir, { opendir($0) }) else { return (nil, errno) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in PathBytes.string(raw.prefix { $0 != 0 }) }
            if name.isEmpty || name.utf8.first == UInt8(ascii: ".") { continue }
            names.append(name)
        }
        return (names.sorted(by: precedes), 0)
    }

    /// Kernel file systems that hold no videos and must never be walked: /proc alone reaches
    /// the whole file system again through every process's `cwd` and `root`, and /sys and
    /// cgroup trees are vast. By `statfs` magic number (linux/magic.h).
    static let virtualFileSystems: [Int: String] = [
        0x9fa0: "procfs", 0x6265_6572: "sysfs", 0x1cd1: "devpts", 0x0027_e0eb: "cgroup",
        0x6367_7270: "cgroup2", 0x6462_6720: "debugfs", 0x7472_6163: "tracefs",
        0x7363_6673: "securityfs", 0xcafe_4a11: "bpf", 0x6265_6570: "configfs", 0x6165_676c: "pstore",
    ]

    /// Why the directory at `path` is not walked — it is on a virtual (kernel) file system, or
    /// it is /dev (devtmpfs shares tmpfs's number, so /dev goes by its resolved path) — or nil.
    static func virtualReason(_ dir: String) -> String? {
        if let type = FileStatus.fileSystemType(dir), let name = virtualFileSystems[Int(type)] {
            return "a virtual file system (\(name)), not scanned"
        }
        if let resolved = PathBytes.withCString(dir, { realpath($0, nil) }) {
            defer { free(resolved) }
            if strcmp(resolved, "/dev") == 0 { return "the device directory /dev, not scanned" }
        }
        return nil
    }

    /// One scan's state: the files found (one path per file identity) and the paths passed over.
    struct Walker {
        let extensions: Set<String>
        /// The chosen path of each file: the first met, or the smaller by bytes.
        var found: [FileStatus.FileID: String] = [:]
        /// Keyed by the path's bytes: Swift's String equality would take two names that differ
        /// only in normalisation for one.
        var skips: [[UInt8]: Skipped] = [:]
        /// Directories walked by directory inputs: each is walked once, whatever path reaches it
        /// (a link loop, a second link, the same folder given twice).
        var walked = Set<FileStatus.FileID>()
        var globDirectories = 0

        init(extensions: Set<String>) { self.extensions = extensions }

        var listing: Listing {
            Listing(files: found.values.sorted(by: Scan.precedes),
                    skipped: skips.values.sorted { Scan.precedes($0.path, $1.path) })
        }

        func wanted(_ name: String) -> Bool { pathExtension(name).map(extensions.contains) ?? false }

        mutating func add(_ path: String, id: FileStatus.FileID) {
            if let old = found[id], !Scan.precedes(path, old) { return }
            found[id] = path
        }

        mutating func skip(_ path: String, _ reason: String) { skips[Array(path.utf8)] = Skipped(path: path, reason: reason) }

        /// Why `path`, which `stat` could not follow, is passed over.
        static func unreachable(_ path: String, errno code: Int32) -> String {
            if FileStatus.of(path, followingLinks: false).status?.kind == .symbolicLink {
                return code == ELOOP ? "a symbolic link loop" : "a dangling symbolic link"
            }
            return FileStatus.describe(errno: code)
        }

        mutating func walkTree(_ root: String, status: FileStatus, recursive: Bool) {
            if let why = Scan.virtualReason(root) { skip(root, why); return }
            guard walked.insert(status.id).inserted else { return }
            walk(root, depth: 0, recursive: recursive)
        }

        mutating func walk(_ dir: String, depth: Int, recursive: Bool) {
            let (listed, code) = Scan.entries(dir)
            guard let names = listed else { skip(dir, "the directory cannot be read (\(FileStatus.describe(errno: code)))"); return }
            for name in names {
                let p = Scan.join(dir, name)
                let (found, code) = FileStatus.of(p)
                guard let status = found else {
                    if wanted(name) { skip(p, Self.unreachable(p, errno: code)) }
                    continue
                }
                switch status.kind {
                case .directory:
                    guard recursive else { continue }
                    guard depth < Scan.maxDepth else { skip(p, "more than \(Scan.maxDepth) directories deep"); continue }
                    guard walked.insert(status.id).inserted else {
                        skip(p, "a directory already scanned under another path (a symbolic link loop or a second link)")
                        continue
                    }
                    if let why = Scan.virtualReason(p) { skip(p, why); continue }
                    walk(p, depth: depth + 1, recursive: true)
                case .regular:
                    if wanted(name) { add(p, id: status.id) }
                default:
                    if wanted(name) { skip(p, status.notRegularReason ?? "not a regular file") }
                }
            }
        }

        /// Files matching a glob pattern, under the folder before its first wildcard.
        mutating func glob(_ pattern: String) throws {
            let regex = try Scan.globRegex(pattern)
            let head = String(String.UnicodeScalarView(pattern.unicodeScalars.prefix { $0 != "*" && $0 != "?" }))
            let root = head.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropLast()
                .map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
            let start = root.isEmpty ? "/" : root
            guard let status = FileStatus.of(start).status, status.kind == .directory else { return }
            if let why = Scan.virtualReason(start) { skip(start, why); return }
            // Without `**` a match has as many slashes as the pattern: no need to go deeper.
            let slashes = pattern.contains("**") ? nil : pattern.utf8.count(where: { $0 == UInt8(ascii: "/") })
            var ancestors: Set<FileStatus.FileID> = [status.id]
            globWalk(start, depth: 0, regex: regex, slashes: slashes, ancestors: &ancestors)
        }

        /// A glob matches whole paths, so a directory reached by two paths is walked under each
        /// (files are still one video each); only the directories on the current path are
        /// refused, which breaks cycles.
        mutating func globWalk(_ dir: String, depth: Int, regex: NSRegularExpression, slashes: Int?, ancestors: inout Set<FileStatus.FileID>) {
            globDirectories += 1
            guard globDirectories <= Scan.maxGlobDirectories else {
                skip(dir, "not scanned: the patterns reached more than \(Scan.maxGlobDirectories) directories")
                return
            }
            let (listed, code) = Scan.entries(dir)
            guard let names = listed else { skip(dir, "the directory cannot be read (\(FileStatus.describe(errno: code)))"); return }
            func matches(_ p: String) -> Bool { regex.firstMatch(in: p, range: NSRange(p.startIndex..., in: p)) != nil }
            for name in names {
                let p = Scan.join(dir, name)
                let (found, code) = FileStatus.of(p)
                guard let status = found else {
                    if wanted(name) && matches(p) { skip(p, Self.unreachable(p, errno: code)) }
                    continue
                }
                switch status.kind {
                case .directory:
                    if let limit = slashes, p.utf8.count(where: { $0 == UInt8(ascii: "/") }) >= limit { continue }
                    guard depth < Scan.maxDepth else { skip(p, "more than \(Scan.maxDepth) directories deep"); continue }
                    guard ancestors.insert(status.id).inserted else { skip(p, "a symbolic link loop"); continue }
                    if let why = Scan.virtualReason(p) { ancestors.remove(status.id); skip(p, why); continue }
                    globWalk(p, depth: depth + 1, regex: regex, slashes: slashes, ancestors: &ancestors)
                    ancestors.remove(status.id)
                case .regular:
                    if wanted(name) && matches(p) { add(p, id: status.id) }
                default:
                    if wanted(name) && matches(p) { skip(p, status.notRegularReason ?? "not a regular file") }
                }
            }
        }
    }

    /// The regular expression of a glob pattern: `*` and `?` stay within a path component, `**`
    /// crosses them. Works on scalars, so a wildcard followed by a combining mark is still one.
    static func globRegex(_ glob: String) throws -> NSRegularExpression {
        var re = "^"
        let scalars = Array(glob.unicodeScalars)
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            if c == "*" {
                if i + 1 < scalars.count && scalars[i + 1] == "*" {
                    re += ".*"
                    i += 2
                    if i < scalars.count && scalars[i] == "/" { i += 1; re += "/?" }
                    continue
                }
                re += "[^/]*"
            } else if c == "?" {
                re += "[^/]"
            } else {
                re += NSRegularExpression.escapedPattern(for: String(c))
            }
            i += 1
        }
        return try NSRegularExpression(pattern: re + "$")
    }

    /// Extensions of still images: such files are prompted as images, not cut into clips.
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]

    /// Whether `path` names a still image (by its extension).
    public static func isImage(_ path: String) -> Bool {
        imageExtensions.contains((path as NSString).pathExtension.lowercased())
    }

    /// FNV-1a, 64 bits: a stable hash for shard assignment and fingerprints.
    public static func fnv1a(_ bytes: some Sequence<UInt8>, seed: UInt64 = 0xcbf29ce484222325) -> UInt64 {
        var h = seed
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return h
    }

    /// The shard (1…n) a path belongs to.
    public static func shard(of path: String, count n: Int) -> Int {
        Int(fnv1a(Array(path.utf8)) % UInt64(n)) + 1
    }

    /// A content fingerprint: size and the first and last 64 KiB, hashed. Changes when the file's
    /// content does (for any edit that touches its start or end, or its size). Only a regular
    /// file is opened (a named pipe would block, a device may have side effects), without
    /// blocking and by its bytes; a file that cannot be opened is fingerprinted by its size.
    public static func fingerprint(_ path: String) throws -> (fingerprint: String, size: Int64, mtime: Double) {
        let (found, code) = FileStatus.of(path)
        guard let status = found else {
            if code == ENOENT || code == ENOTDIR { throw MediaError.fileNotFound(path: path) }
            throw MediaError.notAVideo(path: path, reason: FileStatus.describe(errno: code))
        }
        if status.kind == .directory { throw MediaError.notAVideo(path: path, reason: "it is a directory") }
        if let reason = status.notRegularReason { throw MediaError.notAVideo(path: path, reason: reason) }
        let (fd, _) = FileStatus.openForReading(path)
        guard fd >= 0 else { return (String(format: "%016llx", UInt64(bitPattern: status.size)), status.size, status.mtime) }
        defer { close(fd) }
        // The file may have been replaced between stat and open: judge what was opened.
        guard let opened = FileStatus.of(descriptor: fd).status else {
            throw MediaError.notAVideo(path: path, reason: FileStatus.describe(errno: errno))
        }
        if let reason = opened.notRegularReason ?? (opened.kind == .directory ? "it is a directory" : nil) {
            throw MediaError.notAVideo(path: path, reason: reason)
        }
        let size = opened.size
        let chunk = 64 << 10
        var hash = fnv1a(withUnsafeBytes(of: size.littleEndian) { Array($0) })
        hash = fnv1a(try read(fd, at: 0, count: chunk, path: path), seed: hash)
        if size > Int64(chunk) {
            hash = fnv1a(try read(fd, at: max(Int64(chunk), size - Int64(chunk)), count: chunk, path: path), seed: hash)
        }
        return (String(format: "%016llx", hash), size, opened.mtime)
    }

    /// Up to `count` bytes of `fd` from `offset` (fewer at the end of the file).
    static func read(_ fd: Int32, at offset: Int64, count: Int, path: String) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buffer.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return pread(fd, base + got, count - got, off_t(offset) + off_t(got))
            }
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                throw MediaError.notAVideo(path: path, reason: "reading failed: \(FileStatus.describe(errno: code))")
            }
            if n == 0 { break }
            got += n
        }
        return Array(buffer.prefix(got))
    }
}
