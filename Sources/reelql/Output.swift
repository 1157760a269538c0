#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import Foundation
import Media

// The CLI's output, made safe for hostile conditions. Foundation's `FileHandle.write(_:)` traps
// (a forced try inside swift-corelibs-foundation) when stdout or stderr is /dev/full or a closed pipe, so everything here goes
// through write(2). Diagnostics on stderr are best effort; a result that cannot be written to
// stdout is an error of its own: a message on stderr and exit status 74 (sysexits' EX_IOERR).

/// Exit status when the command's result could not be written to standard output.
let outputFailedExitCode: Int32 = 74

/// Writes all of `bytes` to `fd` with write(2), resuming after partial writes and EINTR.
/// Returns 0, or the errno of the write that failed.
func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
    guard var p = bytes.baseAddress else { return 0 }
    var left = bytes.count
    while left > 0 {
        let n = write(fd, p, left)
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

/// Writes `text` as UTF-8 to `fd`; 0 or an errno, as `writeAll(fd:_:)`.
func writeAll(fd: Int32, _ text: String) -> Int32 {
    var text = text
    return text.withUTF8 { writeAll(fd: fd, UnsafeRawBufferPointer($0)) }
}

/// A diagnostic line on stderr. Best effort: a full or closed stderr is ignored.
func printError(_ message: String) {
    // Messages quote names and stored text: nothing in them may drive the terminal.
    _ = writeAll(fd: STDERR_FILENO, TerminalText.safe(message) + "\n")
}

/// Whether the result on stdout has failed; set once, read at the end of the program.
final class ResultOutput: @unchecked Sendable {
    static let shared = ResultOutput()
    private let lock = NSLock()
    private var failure: Int32?

    var failed: Bool { lock.withLock { failure != nil } }

    /// Records the first failure and reports it on stderr (once).
    func fail(_ code: Int32) {
        let first = lock.withLock { () -> Bool in
            guard failure == nil else { return false }
            failure = code
            return true
        }
        if first {
            let reason = code == 0 ? "" : " (\(String(cString: strerror(code))))"
            printError("error[output]: could not write the result to standard output\(reason)")
        }
    }
}

/// Writes part of the command's result to stdout, after whatever `print` has buffered (so the
/// order holds). On failure it reports once on stderr and returns false; later writes are
/// skipped, and the program exits 74 (see `finishOutput(status:)`).
@discardableResult
func writeResult(_ text: String) -> Bool {
    let output = ResultOutput.shared
    guard !output.failed else { return false }
    if fflush(stdout) != 0 || ferror(stdout) != 0 {
        output.fail(errno)
        return false
    }
    let code = writeAll(fd: STDOUT_FILENO, text)
    if code != 0 { output.fail(code); return false }
    return true
}

/// Throws exit status 74 if the result could not be written to stdout (already reported).
func checkResultOutput() throws {
    if ResultOutput.shared.failed { throw ExitCode(outputFailedExitCode) }
}

/// JSON as the CLI prints it: snake_case keys, sorted, pretty. Throws exit status 74 when
/// stdout cannot take it.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    writeResult(String(decoding: data, as: UTF8.self) + "\n")
    try checkResultOutput()
}

/// Ends the program: flushes what `print` buffered and exits with `status`, or with 74 if any
/// of the result could not be written to stdout (it overrides every other status: the result
/// is lost).
func finishOutput(status: Int32) -> Never {
    let output = ResultOutput.shared
    if !output.failed {
        errno = 0
        if fflush(stdout) != 0 || ferror(stdout) != 0 { output.fail(errno) }
    }
    fflush(stderr)
    // _exit, not exit: everything reelql writes is flushed or closed by now, and library exit
    // handlers (FFmpeg's, OpenBLAS's, oneDNN's) must not run while their own threads may still
    // be working.
    _exit(output.failed ? outputFailedExitCode : status)
}

/// Makes sure descriptors 0, 1 and 2 are open before anything else opens a file: a file opened
/// while stdout is closed would get descriptor 1 and receive the result. A closed 1 or 2 is
/// taken by /dev/null opened read-only, so writing to it still fails (EBADF) as it would have.
func reserveStandardDescriptors() {
    for fd in Int32(0)...2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
        let opened = open("/dev/null", O_RDONLY)
        if opened >= 0 && opened != fd {
            _ = dup2(opened, fd)
            _ = close(opened)
        }
    }
}

// MARK: - Files

/// `strerror` of an errno, for messages.
func reason(errno code: Int32) -> String { String(cString: strerror(code)) }

/// Writes `bytes` to the file at `path` (a lossless path string, see `PathBytes`), replacing
/// it: see `OutputFile.write` (atomic for regular files; a device is written in place; a named
/// pipe without a reader or a socket is refused at once, never waited on). Throws
/// `MediaError.writeFailed` naming the path with the system's reason.
func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
    try OutputFile.write(path, bytes)
}

/// Creates the directory at `path` and any missing parents (`mkdir -p`). Throws
/// `MediaError.writeFailed` naming the path with the system's reason.
func makeDirectories(_ path: String) throws {
    func isDirectory(_ p: String) -> Bool {
        var st = stat()
        return PathBytes.withCString(p) { stat($0, &st) } == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + part
        if PathBytes.withCString(prefix, { mkdir($0, 0o777) }) != 0 {
            let code = errno
            guard code == EEXIST else {
                throw MediaError.writeFailed(path: PathBytes.display(path), reason: reason(errno: code))
            }
            guard isDirectory(prefix) else {
                throw MediaError.writeFailed(path: PathBytes.display(path), reason: "\(PathBytes.display(prefix)) is not a directory")
            }
        }
    }
}

// MARK: - Damage

/// After a command has printed its result from a truncated or corrupt video: the warning on
/// stderr (what was lost, how many sampled frames were delivered) and the exit status of the
/// damage, 15 (truncated) or 16 (corrupt). Does nothing for a clean file.
func reportDamage(_ sampled: SampledVideo, file: String) throws {
    guard let damage = sampled.damage else { return }
    let path = PathBytes.display(file)
    let error: MediaError = damage.truncated
        ? .truncated(path: path, damage: damage) : .corruptData(path: path, damage: damage)
    printError("warning[\(error.kind)]: \(error.localizedDescription); delivered \(sampled.frames.count) of \(sampled.plan.indices.count) sampled frames")
    throw ExitCode(error.exitCode)
}

// MARK: - Option checks

/// Throws a `ValidationError` naming the option and the value given unless `ok`:
/// "--fps must be between 0.1 and 30, got nan".
func requireOption<V>(_ option: String, _ value: V, _ ok: Bool, _ requirement: String) throws {
    guard ok else { throw ValidationError("\(option) must be \(requirement), got \(value)") }
}

/// A text argument (a prompt, a question, text to tokenize) must be UTF-8: a byte that is not
/// would reach the model as a private-use character.
func requireUTF8(_ option: String, _ text: String) throws {
    if let byte = PathBytes.foreignByte(in: text) {
        throw ValidationError("\(option) must be UTF-8 text; it holds the byte \\x\(String(format: "%02X", byte))")
    }
}

/// The largest frame smart_resize may be asked for, in pixels (16384²): beyond it a frame would
/// not fit in memory, whatever the video.
let maxFramePixels = 1 << 28

/// A byte count for people: "0 B", "412 KB", "3.2 MB", "1.21 GB" (powers of 1000).
func byteCount(_ bytes: Int) -> String {
    let b = Double(max(0, bytes))
    if b < 1e3 { return "\(max(0, bytes)) B" }
    if b < 1e6 { return String(format: "%.0f KB", b / 1e3) }
    if b < 1e9 { return String(format: b < 1e7 ? "%.1f MB" : "%.0f MB", b / 1e6) }
    return String(format: "%.2f GB", b / 1e9)
}
