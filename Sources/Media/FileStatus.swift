import CFFmpeg
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `stat(2)` says about a path, asked through `PathBytes` so that names that are not UTF-8
/// work. Used before a user's file is opened: a named pipe opened for reading blocks until a
/// writer appears, and a device may have side effects, so only regular files are ever opened.
public struct FileStatus: Sendable, Equatable, Hashable {
    public enum Kind: Sendable, Equatable, Hashable {
        case regular, directory, fifo, socket, characterDevice, blockDevice, symbolicLink, other
    }

    /// A file's identity on this machine: two paths with the same `FileID` are the same file
    /// (hard links, symbolic links, bind mounts).
    public struct FileID: Sendable, Hashable, Comparable {
        public var device: UInt64
        public var inode: UInt64
        public static func < (a: FileID, b: FileID) -> Bool { (a.device, a.inode) < (b.device, b.inode) }
    }

    public var kind: Kind
    public var size: Int64
    /// Modification time, seconds since 1970.
    public var mtime: Double
    public var id: FileID

    /// Why a file of this kind is not read as a video, or nil for a regular file or a directory.
    public var notRegularReason: String? {
        switch kind {
        case .regular, .directory: return nil
        case .fifo: return "a named pipe (FIFO), not a regular file"
        case .socket: return "a socket, not a regular file"
        case .characterDevice: return "a character device, not a regular file"
        case .blockDevice: return "a block device, not a regular file"
        case .symbolicLink: return "a symbolic link, not a regular file"
        case .other: return "not a regular file"
        }
    }

    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        case S_IFLNK: kind = .symbolicLink
        default: kind = .other
        }
        size = Int64(st.st_size)
        mtime = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        id = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The type of the file system holding `path` (statfs `f_type`, a linux/magic.h number,
    /// following symbolic links), or nil when it cannot be asked.
    public static func fileSystemType(_ path: String) -> UInt32? {
        let t = PathBytes.withCString(path) { reelql_fs_type($0) }
        return t < 0 ? nil : UInt32(truncatingIfNeeded: t)
    }

    /// The status of `path` (following symbolic links unless `followingLinks` is false), or the
    /// `errno` that `stat`/`lstat` set.
    public static func of(_ path: String, followingLinks: Bool = true) -> (status: FileStatus?, errno: Int32) {
        var st = stat()
        let r = PathBytes.withCString(path) { followingLinks ? stat($0, &st) : lstat($0, &st) }
        return r == 0 ? (FileStatus(st), 0) : (nil, errno)
    }

    /// The status of an open file descriptor.
    public static func of(descriptor fd: Int32) -> (status: FileStatus?, errno: Int32) {
        var st = stat()
        return fstat(fd, &st) == 0 ? (FileStatus(st), 0) : (nil, errno)
    }

    /// Opens `path` read-only without ever blocking (`O_NONBLOCK`, so a FIFO that slipped past a
    /// check cannot hang the caller) and close-on-exec. Returns the descriptor or -1 and `errno`.
    public static func openForReading(_ path: String) -> (fd: Int32, errno: Int32) {
        let fd = PathBytes.withCString(path) { open($0, O_RDONLY | O_NONBLOCK | O_CLOEXEC) }
        return (fd, fd < 0 ? errno : 0)
    }

    /// Whether a regular file that `stat` calls empty has content after all (files under /proc
    /// and /sys report size 0). Reads at most one byte; false when it cannot be read.
    public static func hasContent(_ path: String) -> Bool { !head(path, count: 1).isEmpty }

    /// The first `count` bytes of a regular file: fewer when it is shorter, none when it is not a
    /// regular file or cannot be read (never blocking on a FIFO).
    public static func head(_ path: String, count: Int) -> [UInt8] {
        let (fd, _) = openForReading(path)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        guard let status = of(descriptor: fd).status, status.kind == .regular else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, 0) }
        return Array(bytes.prefix(max(0, n)))
    }

    /// `strerror(code)` in lower case, as reelql's messages write it ("permission denied").
    public static func describe(errno code: Int32) -> String {
        guard let s = strerror(code) else { return "error \(code)" }
        let text = String(cString: s)
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }
}
