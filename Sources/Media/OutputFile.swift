import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writing a command's output file safely against hostile paths.
///
/// - A regular file (or a new one) is written to a temporary file beside it and renamed into
///   place: a failed write leaves no partial file and the old one intact, and a symbolic link at
///   the path is replaced, never followed into whatever it names.
/// - Anything else — a device such as /dev/null or /dev/stdout — is written in place and never
///   removed or replaced. It is opened with `O_NONBLOCK`, so a named pipe without a reader (or a
///   socket) fails at once (ENXIO) instead of blocking the program forever; once open, writes
///   block as usual (a pipe with a reader drains).
/// - An output that is one of the command's inputs (the same file through any path or link) is
///   refused before anything is written: see `checkNotAnInput(_:inputs:)`.
public enum OutputFile {
    /// Writes `bytes` to the file at `path` (a lossless path string, see `PathBytes`), replacing
    /// it. Throws `MediaError.writeFailed` naming the path with the system's reason.
    public static func write(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
        func failed(_ why: String) -> MediaError { .writeFailed(path: PathBytes.display(path), reason: why) }
        func failed(_ code: Int32) -> MediaError { failed(String(cString: strerror(code))) }
        var st = stat()
        let exists = PathBytes.withCString(path) { stat($0, &st) } == 0
        let atomic = !exists || (st.st_mode & S_IFMT) == S_IFREG
        // Beside it; a short name when the path's own name leaves no room for the suffix (a
        // name may have 255 bytes).
        let suffix = ".tmp-\(getpid())"
        let name = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).last?.count ?? 0
        let parent = PathBytes.parent(path)
        let target = !atomic ? path : name + suffix.utf8.count <= 255 ? path + suffix
            : (parent.isEmpty ? "" : parent.hasSuffix("/") ? parent : parent + "/") + ".reelql-out" + suffix
        let flags = atomic ? O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC : O_WRONLY | O_TRUNC | O_CLOEXEC | O_NONBLOCK
        let fd = PathBytes.withCString(target) { open($0, flags, exists ? st.st_mode & 0o7777 : 0o644) }
        guard fd >= 0 else {
            let code = errno
            if !atomic && code == ENXIO {
                throw failed("it is a named pipe with no reader, or a socket: writing to it would block (\(String(cString: strerror(code))))")
            }
            throw failed(code)
        }
        if !atomic {
            // What was opened decides (the path may have changed since stat): a pipe with a
            // reader is written blocking, as a pipe on standard output is.
            let fl = fcntl(fd, F_GETFL)
            if fl >= 0 { _ = fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) }
        }
        var code = writeAll(fd: fd, bytes)
        if close(fd) != 0 && code == 0 { code = errno }
        guard atomic else {
            if code != 0 { throw failed(code) }
            return
        }
        if code == 0 && PathBytes.withCString(target, { from in PathBytes.withCString(path) { rename(from, $0) } }) != 0 {
            code = errno
        }
        if code != 0 {
            _ = PathBytes.withCString(target) { unlink($0) } // only the temporary file made above (O_EXCL)
            throw failed(code)
        }
    }

    /// Throws `MediaError.writeFailed` naming `output` and the input when `output` exists and is
    /// the same file (same device and inode, through any path, hard or symbolic link) as one of
    /// `inputs`. A directory among the inputs stands for itself and every file in it (a model
    /// checkpoint), a database for itself and its `-wal`, `-shm` and `-journal` files.
    public static func checkNotAnInput(_ output: String, inputs: [String]) throws {
        guard let out = FileStatus.of(output).status else { return } // not there: not an input
        for input in inputs {
            for candidate in expand(input) where FileStatus.of(candidate).status?.id == out.id {
                let same = candidate == input ? PathBytes.display(input) : "\(PathBytes.display(candidate)) (in \(PathBytes.display(input)))"
                throw MediaError.writeFailed(path: PathBytes.display(output),
                                             reason: "it is the same file as the input \(same); writing it would destroy what this command reads. Choose another output path")
            }
        }
    }

    /// `input`, the files of a directory input, the side files of a SQLite database.
    static func expand(_ input: String) -> [String] {
        var paths = [input] + ["-wal", "-shm", "-journal"].map { input + $0 }
        // SQLite keeps a database's side files beside the file a link names, not the link.
        if let real = PathBytes.withCString(input, { realpath($0, nil) }) {
            defer { free(real) }
            let resolved = PathBytes.string(cString: real)
            if resolved != input { paths += ["-wal", "-shm", "-journal"].map { resolved + $0 } }
        }
        if FileStatus.of(input).status?.kind == .directory,
           let d = PathBytes.withCString(input, { opendir($0) }) {
            defer { closedir(d) }
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { raw in PathBytes.string(raw.prefix { $0 != 0 }) }
                if name == "." || name == ".." || name.isEmpty { continue }
                paths.append(input.hasSuffix("/") ? input + name : input + "/" + name)
            }
        }
        return paths
    }

    /// Writes all of `bytes` to `fd`, resuming after partial writes and EINTR: 0 or an errno.
    static func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard var p = bytes.baseAddress else { return 0 }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 { return EIO }
            p += n
            left -= n
        }
        return 0
    }
}
