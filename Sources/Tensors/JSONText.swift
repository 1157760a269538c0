import Foundation

/// What JSONDecoder does not say about a configuration file's text: a key written twice in one
/// object (JSONDecoder keeps the first, Python's json — and so transformers — the last), and
/// which number spoiled a decode (Foundation reports a fraction or an overflow where a whole
/// number belongs as "not valid JSON", at the top level).
public enum JSONText {
    /// The path ("text_config.rope_parameters") and key of the first key that one object holds
    /// twice, or nil. `data` must be well-formed JSON for the answer to mean anything.
    public static func duplicateKey(in data: Data) -> (path: String, key: String)? {
        let b = [UInt8](data)
        // One entry per open container: an object's keys so far and its current key, or an
        // array's current index.
        // Keys compare as their bytes (as Python compares them), not by canonical equivalence.
        enum Frame { case object(keys: Set<[UInt8]>, key: String?), array(index: Int) }
        var stack: [Frame] = []
        var i = 0
        // The path of the innermost open object: its parents' current keys and indices.
        func pathText() -> String {
            var parts: [String] = []
            for f in stack.dropLast() {
                switch f {
                case .object(_, let key): parts.append(key.map { parts.isEmpty ? $0 : "." + $0 } ?? "")
                case .array(let index): parts.append("[\(index)]")
                }
            }
            return parts.joined()
        }
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "{"): stack.append(.object(keys: [], key: nil)); i += 1
            case UInt8(ascii: "["): stack.append(.array(index: 0)); i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if !stack.isEmpty { stack.removeLast() }; i += 1
            case UInt8(ascii: ","):
                if case .array(let index) = stack.last { stack[stack.count - 1] = .array(index: index + 1) }
                i += 1
            case UInt8(ascii: "\""):
                guard let (bytes, end) = string(b, from: i) else { return nil }
                let text = String(decoding: bytes, as: UTF8.self)
                i = end
                var j = i
                while j < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[j]) { j += 1 }
                // A string followed by a colon in an object is a key.
                if j < b.count, b[j] == UInt8(ascii: ":"), case .object(var keys, _) = stack.last {
                    if keys.contains(bytes) { return (pathText(), text) }
                    // Taken off the stack while it grows: a copy left there would make every
                    // insert copy the whole set (quadratic in an object's keys).
                    stack.removeLast()
                    keys.insert(bytes)
                    stack.append(.object(keys: keys, key: text))
                }
            default: i += 1
            }
        }
        return nil
    }

    /// The string starting at the quote `b[start]`, unescaped (as UTF-8 bytes; a lone surrogate
    /// as its own WTF-8 bytes, so that two of them stay apart), and the index after its closing
    /// quote; nil when it does not close.
    static func string(_ b: [UInt8], from start: Int) -> ([UInt8], Int)? {
        var i = start + 1
        var out: [UInt8] = []
        func hex(_ at: Int) -> UInt32? {
            guard at + 4 <= b.count else { return nil }
            return UInt32(String(decoding: b[at..<(at + 4)], as: UTF8.self), radix: 16)
        }
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") { return (out, i + 1) }
            if c == UInt8(ascii: "\\"), i + 1 < b.count {
                let e = b[i + 1]
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard var v = hex(i + 2) else { out.append(e); break }
                    i += 6
                    // A high surrogate and the low one after it are one scalar.
                    if (0xD800..<0xDC00).contains(v), i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                       let low = hex(i + 2), (0xDC00..<0xE000).contains(low) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                    if let scalar = Unicode.Scalar(v) {
                        out += Array(String(Character(scalar)).utf8)
                    } else {
                        // A lone surrogate, in the bytes it would take (WTF-8).
                        out += [UInt8(0xE0 | (v >> 12)), UInt8(0x80 | ((v >> 6) & 0x3F)), UInt8(0x80 | (v & 0x3F))]
                    }
                    continue
                default: out.append(e) // \" \\ \/
                }
                i += 2
                continue
            }
            out.append(c)
            i += 1
        }
        return nil
    }

    /// Where a number that is not a whole number within Int's range sits, when turning it into
    /// one lets `decodes` succeed: the culprit of a "not valid JSON" error from a file that is
    /// valid JSON. Returns the key path and the number as written.
    public static func wholeNumberCulprit(in data: Data, decodes: (Data) -> Bool) -> (path: String, value: String)? {
        guard let root = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else { return nil }
        var found: [([PathPart], NSNumber)] = []
        func walk(_ v: Any, _ path: [PathPart]) {
            if let d = v as? [String: Any] {
                for k in d.keys.sorted() { walk(d[k] as Any, path + [.key(k)]) }
            } else if let a = v as? [Any] {
                for (i, x) in a.enumerated() { walk(x, path + [.index(i)]) }
            } else if !(v is Bool), let n = v as? NSNumber {
                let d = n.doubleValue
                if d.rounded() != d || d.magnitude >= 9.2e18 { found.append((path, n)) }
            }
        }
        walk(root, [])
        // Each try re-reads the file: a few, enough for any real config's floats.
        for (path, n) in found.prefix(32) {
            let fixed = replacing(root, at: path[...], with: 0)
            guard let text = try? JSONSerialization.data(withJSONObject: fixed, options: [.fragmentsAllowed]), decodes(text) else { continue }
            let name = path.enumerated().map { i, p in
                switch p { case .key(let k): return i == 0 ? k : "." + k; case .index(let j): return "[\(j)]" }
            }.joined()
            return (name.isEmpty ? "(top level)" : name, "\(n)")
        }
        return nil
    }

    enum PathPart { case key(String), index(Int) }

    static func replacing(_ v: Any, at path: ArraySlice<PathPart>, with value: Any) -> Any {
        guard let first = path.first else { return value }
        switch first {
        case .key(let k):
            guard var d = v as? [String: Any], let inner = d[k] else { return v }
            d[k] = replacing(inner, at: path.dropFirst(), with: value)
            return d
        case .index(let i):
            guard var a = v as? [Any], a.indices.contains(i) else { return v }
            a[i] = replacing(a[i], at: path.dropFirst(), with: value)
            return a
        }
    }
}
