import Foundation

/// Paths on Linux are bytes, not text: a file name may hold bytes that are not UTF-8 (a name
/// written under a Latin-1 locale, say). reelql keeps every path in a `String` losslessly:
/// valid UTF-8 decodes as usual, and each byte that is not part of valid UTF-8 becomes the
/// private-use scalar U+10FF00 + byte (U+10FF80…U+10FFFF), which `bytes(_:)` turns back into
/// that byte. Every system call on a user's path goes through `withCString(_:_:)`, so such a
/// file opens, scans and fingerprints like any other; `display(_:)` shows it in messages with
/// the foreign bytes as `\xNN`.
public enum PathBytes {
    static let base: UInt32 = 0x10FF00

    /// A path's bytes as a lossless `String`.
    public static func string<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let b = Array(bytes)
        if let s = String(validating: b, as: UTF8.self) { return s }
        var scalars = String.UnicodeScalarView()
        var i = 0
        while i < b.count {
            let (scalar, length) = decodeOne(b, at: i)
            if let scalar {
                scalars.append(scalar)
            } else {
                for k in 0..<length { scalars.append(Unicode.Scalar(base + UInt32(b[i + k])) ?? "\u{FFFD}") }
            }
            i += length
        }
        return String(scalars)
    }

    /// A C string's bytes (a `readdir` name, an `argv` entry) as a lossless `String`.
    public static func string(cString: UnsafePointer<CChar>) -> String {
        string(UnsafeBufferPointer(start: UnsafeRawPointer(cString).assumingMemoryBound(to: UInt8.self), count: strlen(cString)))
    }

    /// The bytes a path names on disk.
    public static func bytes(_ path: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(path.utf8.count)
        for s in path.unicodeScalars {
            if s.value >= base + 0x80 && s.value <= base + 0xFF {
                out.append(UInt8(s.value - base))
            } else {
                out.append(contentsOf: String(s).utf8)
            }
        }
        return out
    }

    /// Calls `body` with the path as the NUL-terminated bytes system calls take.
    public static func withCString<R>(_ path: String, _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var b = bytes(path)
        b.append(0)
        return try b.withUnsafeBufferPointer { p in
            try p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { try body($0) }
        }
    }

    /// The folder part of `path` ("" for a bare name, "/" for a name in the root), as NSString's
    /// deletingLastPathComponent gives it (repeated slashes inside are kept); that one traps (SIGILL) on a one-character path in this
    /// Foundation ("a", "é"), which a user may well name.
    public static func parent(_ path: String) -> String {
        var bytes = Array(path.utf8)
        while bytes.count > 1, bytes.last == UInt8(ascii: "/") { bytes.removeLast() }
        guard var end = bytes.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        while end > 0, bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
        return end == 0 ? "/" : String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// The first byte of `text` that was not UTF-8 where it came from (an argument), if any: text
    /// (a prompt) must be UTF-8, unlike a path. (A prompt that really holds one of the 128 private-use
    /// scalars U+10FF80…U+10FFFF cannot be told apart, and is taken for such a byte.)
    public static func foreignByte(in text: String) -> UInt8? {
        for u in text.unicodeScalars where u.value >= base + 0x80 && u.value <= base + 0xFF { return UInt8(u.value - base) }
        return nil
    }

    /// The path for people: foreign bytes as `\xNN`.
    public static func display(_ path: String) -> String {
        guard foreignByte(in: path) != nil else { return path }
        var out = ""
        for s in path.unicodeScalars {
            if s.value >= base + 0x80 && s.value <= base + 0xFF {
                out += String(format: "\\x%02X", s.value - base)
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }

    /// The process's arguments, each decoded losslessly (Swift's `CommandLine.arguments` replaces
    /// bytes that are not UTF-8 with U+FFFD, which would name another file).
    public static func arguments() -> [String] {
        (0..<Int(CommandLine.argc)).map { i in
            guard let p = CommandLine.unsafeArgv[i] else { return "" }
            return string(cString: p)
        }
    }

    /// One UTF-8 scalar at `i`, or nil and the length of the invalid sequence (at least 1).
    static func decodeOne(_ b: [UInt8], at i: Int) -> (Unicode.Scalar?, Int) {
        let b0 = b[i]
        if b0 < 0x80 { return (Unicode.Scalar(b0), 1) }
        let need: Int, minimum: UInt32
        var value: UInt32
        switch b0 {
        case 0xC2...0xDF: need = 1; minimum = 0x80; value = UInt32(b0 & 0x1F)
        case 0xE0...0xEF: need = 2; minimum = 0x800; value = UInt32(b0 & 0x0F)
        case 0xF0...0xF4: need = 3; minimum = 0x10000; value = UInt32(b0 & 0x07)
        default: return (nil, 1)
        }
        guard i + need < b.count else { return (nil, 1) }
        for k in 1...need {
            let c = b[i + k]
            guard c & 0xC0 == 0x80 else { return (nil, 1) }
            value = value << 6 | UInt32(c & 0x3F)
        }
        guard value >= minimum, value <= 0x10FFFF, !(0xD800...0xDFFF).contains(value), let s = Unicode.Scalar(value) else { return (nil, 1) }
        return (s, need + 1)
    }
}

/// Text from files and databases (names, descriptions, errors quoting them) made safe to print on
/// a terminal: control characters other than newline and tab, DEL and the C1 controls are shown
/// as escapes (ESC would let stored text retitle or clear the terminal), and a file name's bytes
/// that are not UTF-8 as \xNN, as `PathBytes.display` shows them.
public enum TerminalText {
    public static func safe(_ text: String, keepNewlines: Bool = true) -> String {
        let shown = PathBytes.display(text)
        guard shown.unicodeScalars.contains(where: { needsEscape($0, keepNewlines) }) else { return shown }
        var out = ""
        for s in shown.unicodeScalars {
            if needsEscape(s, keepNewlines) {
                out += s.value == 0x0A ? "\\n" : s.value <= 0xFF ? String(format: "\\x%02X", s.value) : String(format: "\\u{%04X}", s.value)
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }

    static func needsEscape(_ s: Unicode.Scalar, _ keepNewlines: Bool) -> Bool {
        switch s.value {
        case 0x0A: return !keepNewlines
        case 0x09: return false
        case 0x00..<0x20, 0x7F, 0x80..<0xA0: return true
        default: return false
        }
    }
}
