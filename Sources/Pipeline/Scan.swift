import Foundation

/// Finding the videos of a spec, and identifying them.
public enum Scan {
    /// The files the inputs name: directories (recursively when asked), files, and glob patterns
    /// (`*`, `?`, `**`), filtered by extension; absolute, standardised, sorted, unique.
    public static func files(_ inputs: PipelineSpec.Inputs, resolve: (String) -> String) throws -> [String] {
        let exts = Set(inputs.extensions.map { $0.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: ".")) })
        let fm = FileManager.default
        var out = Set<String>()
        func add(_ path: String) {
            if exts.contains((path as NSString).pathExtension.lowercased()) { out.insert(URL(fileURLWithPath: path).standardizedFileURL.path) }
        }
        /// Calls `visit` with every file under `dir` (hidden entries skipped).
        func walk(_ dir: String, recursive: Bool, _ visit: (String) -> Void) {
            guard let items = try? fm.contentsOfDirectory(atPath: dir) else { return }
            for item in items where !item.hasPrefix(".") {
                let p = (dir as NSString).appendingPathComponent(item)
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: p, isDirectory: &isDir) else { continue }
                if isDir.boolValue { if recursive { walk(p, recursive: true, visit) } } else { visit(p) }
            }
        }
        for raw in inputs.paths {
            let path = resolve(raw)
            if path.contains("*") || path.contains("?") {
                let regex = try globRegex(path)
                let root = String(path.prefix { $0 != "*" && $0 != "?" }).components(separatedBy: "/").dropLast().joined(separator: "/")
                walk(root.isEmpty ? "/" : root, recursive: true) { p in
                    if regex.firstMatch(in: p, range: NSRange(location: 0, length: (p as NSString).length)) != nil { add(p) }
                }
                continue
            }
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
                throw PipelineError.noInputs("input '\(raw)' does not exist (resolved to \(path))")
            }
            if isDir.boolValue { walk(path, recursive: inputs.recursive, add) } else { out.insert(URL(fileURLWithPath: path).standardizedFileURL.path) }
        }
        return out.sorted()
    }

    static func globRegex(_ glob: String) throws -> NSRegularExpression {
        var re = "^"
        var i = glob.startIndex
        while i < glob.endIndex {
            let c = glob[i]
            if c == "*" {
                let next = glob.index(after: i)
                if next < glob.endIndex && glob[next] == "*" {
                    re += ".*"
                    i = glob.index(after: next)
                    if i < glob.endIndex && glob[i] == "/" { i = glob.index(after: i); re += "/?" }
                    continue
                }
                re += "[^/]*"
            } else if c == "?" {
                re += "[^/]"
            } else {
                re += NSRegularExpression.escapedPattern(for: String(c))
            }
            i = glob.index(after: i)
        }
        return try NSRegularExpression(pattern: re + "$")
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
    /// content does (for any edit that touches its start or end, or its size).
    public static func fingerprint(_ path: String) throws -> (fingerprint: String, size: Int64, mtime: Double) {
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        let size = (attrs[.size] as? NSNumber)?.int64Value ?? 0
        let mtime = (attrs[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        guard let h = FileHandle(forReadingAtPath: path) else { return (String(format: "%016llx", UInt64(size)), size, mtime) }
        defer { try? h.close() }
        let chunk = 64 << 10
        var hash = fnv1a(withUnsafeBytes(of: size.littleEndian) { Array($0) })
        hash = fnv1a(try h.read(upToCount: chunk) ?? Data(), seed: hash)
        if size > Int64(chunk) {
            try h.seek(toOffset: UInt64(max(Int64(chunk), size - Int64(chunk))))
            hash = fnv1a(try h.read(upToCount: chunk) ?? Data(), seed: hash)
        }
        return (String(format: "%016llx", hash), size, mtime)
    }
}
