import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A whole file mapped read-only into memory. Tensors that point into it keep it alive.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        // O_NONBLOCK: a FIFO in place of a checkpoint file must not block the open (fstat below
        // refuses it); for a regular file the flag changes nothing.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { throw TensorError.fileNotFound(path: path) }
            throw TensorError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TensorError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TensorError.unreadable(path: path, reason: "not a regular file") }
        guard st.st_size <= Int64(Int.max / 2) else { throw TensorError.unreadable(path: path, reason: "size \(st.st_size) is out of range") }
        size = Int(st.st_size)
        guard size > 0 else { throw TensorError.invalidSafetensors(path: path, tensor: nil, reason: "the file is empty") }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw TensorError.unreadable(path: path, reason: "mmap: \(String(cString: strerror(errno)))") }
        base = UnsafeRawPointer(p)
    }

    /// The bytes of a small regular file (a JSON index): a FIFO, device or folder is refused
    /// without blocking, and so is a file larger than `limit`.
    public static func readSmallFile(_ path: String, limit: Int = 256 << 20) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { throw TensorError.fileNotFound(path: path) }
            throw TensorError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TensorError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TensorError.unreadable(path: path, reason: "not a regular file") }
        guard st.st_size <= Int64(limit) else { throw TensorError.unreadable(path: path, reason: "\(st.st_size) bytes, more than the \(limit) expected") }
        var data = Data(count: Int(st.st_size))
        var done = 0
        while done < data.count {
            let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            done += n
        }
        return data.prefix(done)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}
