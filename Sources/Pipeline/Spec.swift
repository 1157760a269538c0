import Foundation
import VLM
import Media
import Yams

/// A pipeline spec (YAML): what to read, how to sample and cut it, which model and prompts, where
/// to store results. Every key is checked: an unknown key or a value of the wrong kind is an
/// error naming the key and what is allowed.
public struct PipelineSpec: Sendable, Equatable, Codable {
    public struct Inputs: Sendable, Equatable, Codable {
        /// Directories, files or glob patterns (`*`, `?`, `**`), relative to the spec's folder.
        public var paths: [String] = []
        public var recursive: Bool = true
        /// Videos and still images (images are prompted as images: see `Scan.imageExtensions`).
        public var extensions: [String] = ["mp4", "mkv", "webm", "mov", "avi", "m4v", "ts", "mts", "3gp", "flv", "mpg", "mpeg", "wmv",
                                           "jpg", "jpeg", "png", "webp"]
    }
    public struct Sampling: Sendable, Equatable, Codable {
        /// Sized for a CPU night, not qwen-vl-utils' GPU defaults (2 fps, up to 768·28² pixels a
        /// frame): 1 frame a second of at most 448 × 448 pixels (README, "Defaults").
        public var fps: Double = 1
        /// Pixels per frame at least; nil: qwen-vl-utils' video minimum (128·28²), lowered to
        /// `maxPixels` where that is below it (`minimumPixels`).
        public var minPixels: Int?
        /// Pixels per frame at most; the model's processor maximum still applies. nil: the
        /// processor's (and qwen-vl-utils') limit alone.
        public var maxPixels: Int? = PipelineSpec.Sampling.cpuMaxPixels
        public var totalPixels: Double?
        public var maxFrames: Int?

        /// The minimum in force: a maximum alone is never refused for being under a minimum
        /// nobody asked for.
        public var minimumPixels: Int {
            SmartResize.minimumPixels(given: minPixels, default: SmartResize.videoMinPixels, maximum: maxPixels)
        }
    }
    public struct Clips: Sendable, Equatable, Codable {
        /// Clip length in seconds.
        public var seconds: Double = 30
        public var overlap: Double = 0
        /// A final remainder shorter than this joins the previous clip (default: a quarter clip).
        public var minRemainder: Double?
    }
    public struct Prompts: Sendable, Equatable, Codable {
        public var description: String = "Describe this video."
        public var questions: [String] = []
        /// Prompt of the per-video summary over the clip descriptions; empty: no summary.
        public var summary: String = "Here are descriptions of consecutive clips of one video, in order:\n{descriptions}\nSummarize the whole video in a few sentences."
    }
    public struct Generation: Sendable, Equatable, Codable {
        public var maxNewTokens: Int = 256
        public var temperature: Double = 0
        public var topP: Double?
        public var topK: Int?
        public var repetitionPenalty: Double = 1
        public var seed: UInt64 = 0
        /// Sequences decoding together (the prompts of the clips in flight); 1: one at a time;
        /// nil: the default for the language model's precision (`defaultBatch(dtype:)`).
        public var batch: Int?
    }
    public struct Output: Sendable, Equatable, Codable {
        public var database: String = "output/reelql.sqlite"
        /// The longest side of each clip's thumbnails in pixels; 0: none. YAML `thumbnails`:
        /// true (320), false, or a size.
        public var thumbnails: Int = 320
        enum CodingKeys: String, CodingKey { case database, thumbnails }
    }

    public var inputs = Inputs()
    public var sampling = Sampling()
    public var clips = Clips()
    /// The checkpoint directory; nil: the bundled demo model (`ClipModel.defaultDirectory`).
    public var model: String?
    /// f32, bf16 or int8 (default: the checkpoint's).
    public var dtype: String?
    /// The vision tower's precision (default: `dtype`), e.g. bf16 with `dtype: int8`.
    public var visionDType: String?
    public var prompts = Prompts()
    public var generation = Generation()
    public var output = Output()
    /// Sequences decoding together: `generation.batch`, else the default for `dtype`.
    public var decodingBatch: Int { generation.batch(for: dtype.flatMap(ComputeDType.init(rawValue:))) }
    /// Where relative paths are resolved from (the spec's folder; not a YAML key).
    public var baseDirectory: String = FileManager.default.currentDirectoryPath
    /// The file the spec was read from, for messages ("settings" when none was; not a YAML key).
    public var sourcePath: String = "settings"

    enum CodingKeys: String, CodingKey { case inputs, sampling, clips, model, dtype, visionDType = "vision_dtype", prompts, generation, output }

    public init() {}

    /// The allowed keys of each section, for unknown-key errors.
    static let allowed: [String: [String]] = [
        "": ["inputs", "sampling", "clips", "model", "dtype", "vision_dtype", "prompts", "generation", "output"],
        "inputs": ["paths", "recursive", "extensions"],
        "sampling": ["fps", "min_pixels", "max_pixels", "total_pixels", "max_frames"],
        "clips": ["seconds", "overlap", "min_remainder"],
        "prompts": ["description", "questions", "summary"],
        "generation": ["max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "batch"],
        "output": ["database", "thumbnails"],
    ]

    public static func load(path: String) throws -> PipelineSpec {
        // Only a regular file is read (a FIFO would block, a device never end).
        if let status = FileStatus.of(path).status, let why = status.notRegularReason ?? (status.kind == .directory ? "a folder" : nil) {
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "\(why); a spec is a YAML file")
        }
        if let size = FileStatus.of(path).status?.size, size > 16 << 20 {
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "\(size) bytes; a spec is a small YAML file (at most 16 MiB)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            let at = firstInvalidUTF8(data).map { offset in
                " (byte \(offset), line \(data.prefix(offset).filter { $0 == 0x0A }.count + 1), is not UTF-8)"
            } ?? ""
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "not a text file\(at): a spec is YAML (to process videos, name their folder)")
        }
        var spec = try parse(text, path: path)
        spec.sourcePath = path
        let folder = PathBytes.parent(path)
        spec.baseDirectory = folder.isEmpty ? FileManager.default.currentDirectoryPath : URL(fileURLWithPath: folder).standardizedFileURL.path
        return spec
    }

    /// The offset of the first byte that does not belong to valid UTF-8.
    static func firstInvalidUTF8(_ data: Data) -> Int? {
        var parser = Unicode.UTF8.ForwardParser()
        var bytes = data.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &bytes) {
            case .valid(let scalar): offset += scalar.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    public static func parse(_ text: String, path: String) throws -> PipelineSpec {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            // The parser quotes the offending line, which may be megabytes long.
            var why = "\(error)"
            if why.count > 400 { why = String(why.prefix(400)) + "… (\(why.count) characters)" }
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "not valid YAML: \(why)")
        }
        guard let root = node else { return PipelineSpec() }
        try checkExpansion(root, path: path)
        try checkKeys(root, section: "", path: path)
        try checkTags(root, key: "", path: path)
        let decoder = YAMLDecoder()
        do {
            // From the tree already composed and checked (not the text again).
            var spec = try decoder.decode(PipelineSpec.self, from: root, userInfo: [:])
            spec.baseDirectory = FileManager.default.currentDirectoryPath
            try spec.validate(path: path)
            return spec
        } catch let e as DecodingError {
            throw PipelineError.invalidSpec(path: path, key: keyPath(e), reason: describe(e))
        }
    }

    /// Most values, text and depth a spec may expand to. Aliases repeat what an anchor names
    /// without copying it in the file, so a few kilobytes can stand for gigabytes (and nested
    /// aliases for more values than any machine holds, or chains nested without limit): the
    /// composed tree is walked with these budgets before anything is decoded from it (the walk
    /// stops at the first budget it passes). A spec is a few sections of keys and lists.
    static let maxExpandedValues = 1_000_000
    static let maxExpandedBytes = 16 << 20
    static let maxDepth = 64

    static func checkExpansion(_ root: Node, path: String) throws {
        // An explicit stack: chained aliases nest without limit (a2: [*a1], a3: [*a2], …).
        var values = 0, bytes = 0, deepest = 0, pending = [(root, 1)]
        while let (node, depth) = pending.popLast(), values <= maxExpandedValues, bytes <= maxExpandedBytes, deepest <= maxDepth {
            values += 1
            deepest = max(deepest, depth)
            switch node {
            case .scalar(let scalar): bytes += scalar.string.utf8.count
            case .mapping(let mapping):
                // Everything pending is visited: over the budget already, the walk stops here.
                guard values + pending.count + 2 * mapping.count <= maxExpandedValues else { values = maxExpandedValues + 1; break }
                for (k, v) in mapping { pending.append((k, depth + 1)); pending.append((v, depth + 1)) }
            case .sequence(let sequence):
                guard values + pending.count + sequence.count <= maxExpandedValues else { values = maxExpandedValues + 1; break }
                for v in sequence { pending.append((v, depth + 1)) }
            case .alias: break
            }
        }
        guard values <= maxExpandedValues, bytes <= maxExpandedBytes, deepest <= maxDepth else {
            pending.removeAll()
            // Released, a tree nested this deep would free itself one recursive call per level,
            // past the end of the stack (a 200,000-link alias chain crashed): a refused spec's
            // tree is kept instead (the command ends with this error).
            _ = Unmanaged.passRetained(KeptTree(root))
            let why = deepest > maxDepth ? "nests more than \(maxDepth) levels deep"
                : values > maxExpandedValues ? "expands (through aliases) to more than \(maxExpandedValues) values"
                : "expands (through aliases) to more than \(maxExpandedBytes) bytes of text (16 MiB)"
            throw PipelineError.invalidSpec(path: path, key: "(file)", reason: "it \(why); a spec is a few sections of keys and lists")
        }
    }

    /// A refused spec's composed tree, never released (see checkExpansion).
    final class KeptTree {
        let node: Node
        init(_ node: Node) { self.node = node }
    }

    /// Unknown keys are errors (YAML decoding alone would ignore them).
    static func checkKeys(_ node: Node, section: String, path: String) throws {
        guard let mapping = node.mapping else {
            throw PipelineError.invalidSpec(path: path, key: section.isEmpty ? "(top level)" : section, reason: "expected a mapping of keys")
        }
        let allowedKeys = allowed[section] ?? []
        for (k, v) in mapping {
            guard let key = k.string else { throw PipelineError.invalidSpec(path: path, key: section, reason: "keys must be strings") }
            let full = section.isEmpty ? key : "\(section).\(key)"
            guard allowedKeys.contains(key) else {
                throw PipelineError.invalidSpec(path: path, key: full, reason: "unknown key (allowed: \(allowedKeys.joined(separator: ", ")))")
            }
            if allowed[full] != nil { try checkKeys(v, section: full, path: path) }
        }
    }

    /// The prefix of YAML's own tags (`!!str` is tag:yaml.org,2002:str).
    static let yamlTags = "tag:yaml.org,2002:"

    /// Keys whose values are text (the others are numbers and flags).
    static let textKeys: Set<String> = ["model", "dtype", "vision_dtype", "inputs.paths", "inputs.extensions", "prompts.description",
                                        "prompts.questions", "prompts.summary", "output.database"]

    /// YAML tags are not part of the spec format; two kinds would be silently misread, so they
    /// are errors naming the key: a tag outside YAML's core types (`!custom`, `!!binary`: decoding
    /// reads the text and drops the tag), and a string tag on a plain value that decoding would
    /// read as something else (`batch: !!str 3` as 3, `summary: !!str null` as absent). Core tags
    /// that keep a value what it is (`!!str 7` as a question, `!!int 3`) are accepted.
    static func checkTags(_ node: Node, key: String, path: String) throws {
        switch node {
        case .scalar(let scalar):
            // The tag as written ("" when there is none), or as Yams resolved it in place (its
            // parser tags quoted text as a string; hashing a key resolves its tag).
            let tag = scalar.tag.rawValue
            guard !tag.isEmpty else { return }
            let core = tag == "!" || ["str", "int", "float", "bool", "null"].contains { yamlTags + $0 == tag }
            // A string tag on a plain value is dropped by decoding, which reads the text: on a
            // number or flag's key it would be taken as one (`batch: !!str 3` as 3), and a null's
            // text on a text key as absent (`summary: !!str null`; list items read as text).
            // Quoted, a value is text either way (a number's key refuses it as such).
            let plain = scalar.style == .plain || scalar.style == .any
            let nullText = ["", "~", "null", "Null", "NULL"].contains(scalar.string) && !key.hasSuffix("]")
            let misread = (tag == "!" || tag == yamlTags + "str") && plain
                && (!textKeys.contains(String(key.prefix { $0 != "[" })) || nullText)
            guard core, !misread else {
                throw PipelineError.invalidSpec(path: path, key: key.isEmpty ? "(top level)" : key,
                                                reason: "a value tagged \(shown(tag)) (YAML tags are not part of the spec format: write the value itself)")
            }
        case .mapping(let mapping):
            try collection(mapping.tag.rawValue, "map")
            for (k, v) in mapping {
                // (Keys are names checkKeys has matched; Yams tags them as strings.)
                let name = k.string ?? "?"
                try checkTags(v, key: key.isEmpty ? name : "\(key).\(name)", path: path)
            }
        case .sequence(let sequence):
            try collection(sequence.tag.rawValue, "seq")
            for (i, v) in sequence.enumerated() { try checkTags(v, key: "\(key)[\(i)]", path: path) }
        case .alias: break
        }
        /// A mapping or list: untagged, or tagged as what it is.
        func collection(_ tag: String, _ kind: String) throws {
            guard tag.isEmpty || tag == yamlTags + kind else {
                throw PipelineError.invalidSpec(path: path, key: key.isEmpty ? "(top level)" : key,
                                                reason: "a \(kind == "map" ? "mapping" : "list") tagged \(shown(tag)) (YAML tags are not part of the spec format)")
            }
        }
        /// !!str for tag:yaml.org,2002:str.
        func shown(_ tag: String) -> String {
            tag.hasPrefix(yamlTags) ? "!!" + tag.dropFirst(yamlTags.count) : tag
        }
    }

    /// The shortest step between clips a spec may ask for (seconds − overlap).
    public static let minimumClipStride = 0.1

    public func validate(path: String) throws {
        func bad(_ key: String, _ why: String) -> PipelineError { .invalidSpec(path: path, key: key, reason: why) }
        /// A number must be finite (YAML's .inf and .nan decode as numbers).
        func finite(_ key: String, _ x: Double?) throws {
            if let x, !x.isFinite { throw bad(key, "must be a finite number, got \(x)") }
        }
        // A NUL ("\0" in YAML) ends a C string: a path, extension or prompt holding one would be
        // cut short where the file system or SQLite reads it (a database named "b.sqlite\0x"
        // became a file named with %00; questions differing after it collided).
        let texts: [(String, String?)] = [("model", model), ("dtype", dtype), ("vision_dtype", visionDType),
                                          ("output.database", output.database), ("prompts.description", prompts.description),
                                          ("prompts.summary", prompts.summary)]
            + inputs.paths.enumerated().map { ("inputs.paths[\($0.offset)]", $0.element) }
            + inputs.extensions.enumerated().map { ("inputs.extensions[\($0.offset)]", $0.element) }
            + prompts.questions.enumerated().map { ("prompts.questions[\($0.offset)]", $0.element) }
        for (key, text) in texts where text?.utf8.contains(0) == true {
            throw bad(key, "contains a NUL character (\\0); no path or prompt may hold one")
        }
        try finite("sampling.fps", sampling.fps)
        try finite("sampling.total_pixels", sampling.totalPixels)
        try finite("clips.seconds", clips.seconds)
        try finite("clips.overlap", clips.overlap)
        try finite("clips.min_remainder", clips.minRemainder)
        try finite("generation.temperature", generation.temperature)
        try finite("generation.top_p", generation.topP)
        try finite("generation.repetition_penalty", generation.repetitionPenalty)
        guard !inputs.paths.isEmpty else { throw bad("inputs.paths", "list at least one directory, file or glob") }
        if inputs.paths.contains(where: \.isEmpty) { throw bad("inputs.paths", "an empty path") }
        guard FrameSampler.fpsRange.contains(sampling.fps) else { throw bad("sampling.fps", "must be between 0.1 and 30, got \(sampling.fps)") }
        let smallest = SmartResize.factor * SmartResize.factor
        if let m = sampling.minPixels {
            guard m >= 1 else { throw bad("sampling.min_pixels", "must be ≥ 1, got \(m)") }
            guard m <= 1 << 30 else { throw bad("sampling.min_pixels", "must be ≤ \(1 << 30), got \(m)") }
        }
        if let m = sampling.maxPixels {
            guard m >= smallest else {
                throw bad("sampling.max_pixels", "must be ≥ \(smallest) (one \(SmartResize.factor)×\(SmartResize.factor) cell, the smallest frame), got \(m)")
            }
            guard m >= sampling.minimumPixels else { throw bad("sampling.max_pixels", "must be ≥ min_pixels (\(sampling.minimumPixels)), got \(m)") }
        }
        if let t = sampling.totalPixels {
            guard t > 0 else { throw bad("sampling.total_pixels", "must be > 0, got \(t)") }
        }
        // The per-frame bound qwen-vl-utils derives (even for a one-frame clip) must fit a frame.
        let perFrame = SmartResize.videoMaxPixels(frameCount: 1, minPixels: sampling.minimumPixels, maxPixels: sampling.maxPixels,
                                                 totalPixels: sampling.totalPixels)
        guard perFrame >= Double(smallest) else {
            throw bad(sampling.totalPixels != nil ? "sampling.total_pixels" : "sampling.min_pixels",
                      "these bounds leave \(Int(perFrame)) pixels per frame, less than the smallest frame (\(smallest))")
        }
        if let m = sampling.maxFrames, m < 1 { throw bad("sampling.max_frames", "must be ≥ 1, got \(m)") }
        guard clips.seconds >= Self.minimumClipStride else {
            throw bad("clips.seconds", "must be ≥ \(Self.minimumClipStride) s, got \(clips.seconds)")
        }
        guard clips.overlap >= 0 && clips.overlap < clips.seconds else { throw bad("clips.overlap", "must be in [0, clips.seconds), got \(clips.overlap)") }
        guard clips.seconds - clips.overlap >= Self.minimumClipStride else {
            throw bad("clips.overlap", "clips must advance by at least \(Self.minimumClipStride) s (seconds − overlap), got \(clips.seconds - clips.overlap)")
        }
        if let r = clips.minRemainder, r < 0 { throw bad("clips.min_remainder", "must be ≥ 0, got \(r)") }
        let precisions = ComputeDType.allCases.map(\.rawValue)
        for (key, value) in [("dtype", dtype), ("vision_dtype", visionDType)] {
            if let d = value, !precisions.contains(d) { throw bad(key, "must be one of \(precisions.joined(separator: ", ")); got '\(d)'") }
        }
        guard !prompts.description.isEmpty else { throw bad("prompts.description", "must not be empty") }
        // Prompts are text: chat-format tokens in them would be read as the template's own.
        for (key, text) in [("prompts.description", prompts.description), ("prompts.summary", prompts.summary)]
            + prompts.questions.enumerated().map({ ("prompts.questions[\($0.offset)]", $0.element) }) {
            if let r = text.range(of: #"<\|[A-Za-z0-9_]+\|>"#, options: .regularExpression) {
                throw bad(key, "contains the special token \(text[r]); prompts are plain text")
            }
        }
        for (i, q) in prompts.questions.enumerated() {
            guard !q.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw bad("prompts.questions[\(i)]", "must not be empty") }
            if let j = prompts.questions[..<i].firstIndex(of: q) {
                throw bad("prompts.questions[\(i)]", "repeats prompts.questions[\(j)]; each question is answered once per clip")
            }
        }
        guard generation.maxNewTokens >= 1 else { throw bad("generation.max_new_tokens", "must be ≥ 1, got \(generation.maxNewTokens)") }
        guard generation.temperature >= 0 else { throw bad("generation.temperature", "must be ≥ 0, got \(generation.temperature)") }
        if let p = generation.topP, !(p > 0 && p <= 1) { throw bad("generation.top_p", "must be in (0, 1], got \(p)") }
        if let k = generation.topK, k < 1 { throw bad("generation.top_k", "must be ≥ 1, got \(k)") }
        guard generation.repetitionPenalty > 0 else { throw bad("generation.repetition_penalty", "must be > 0, got \(generation.repetitionPenalty)") }
        if let batch = generation.batch, !GenerationParameters.batchRange.contains(batch) {
            throw bad("generation.batch", "must be between \(GenerationParameters.batchRange.lowerBound) and \(GenerationParameters.batchRange.upperBound), got \(batch)")
        }
        guard output.thumbnails == 0 || (16...4096).contains(output.thumbnails) else {
            throw bad("output.thumbnails", "must be true, false or a size in pixels from 16 to 4096, got \(output.thumbnails)")
        }
        guard !output.database.isEmpty else { throw bad("output.database", "must not be empty") }
    }

    /// A path of the spec resolved against the spec's folder.
    public func resolve(_ p: String) -> String {
        p.hasPrefix("/") ? p : URL(fileURLWithPath: baseDirectory).appendingPathComponent(p).standardizedFileURL.path
    }

    public var samplingOptions: SamplingOptions {
        SamplingOptions(fps: sampling.fps, maxFrames: sampling.maxFrames,
                        resize: ResizeOptions(minPixels: sampling.minimumPixels, maxPixels: sampling.maxPixels, totalPixels: sampling.totalPixels))
    }

    static func keyPath(_ e: DecodingError) -> String {
        let path: [CodingKey]
        switch e {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): path = c.codingPath
        case .keyNotFound(let k, let c): path = c.codingPath + [k]
        @unknown default: path = []
        }
        let s = path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        return s.isEmpty ? "(top level)" : s
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .typeMismatch(let t, _):
            // Yams names its node kinds (Scalar, Sequence, Mapping) where a value had the wrong shape.
            let kind = "\(t)"
            let noun = t == Int.self ? "an integer" : t == UInt64.self ? "an integer from 0 to \(UInt64.max)" : t == Double.self ? "a number"
                : t == Bool.self ? "true or false" : t == String.self ? "a string" : kind.hasSuffix("Scalar") ? "a single value, not a list or mapping"
                : kind.hasSuffix("Sequence") || kind.hasPrefix("Array") ? "a list" : kind.hasSuffix("Mapping") || kind.hasPrefix("Dictionary") ? "a mapping of keys" : kind
            return "expected \(noun)"
        case .valueNotFound(let t, _): return "expected \(t), found nothing"
        case .keyNotFound: return "missing"
        case .dataCorrupted(let c): return c.debugDescription
        @unknown default: return "\(e)"
        }
    }
}

extension PipelineSpec.Sampling {
    enum CodingKeys: String, CodingKey { case fps, minPixels = "min_pixels", maxPixels = "max_pixels", totalPixels = "total_pixels", maxFrames = "max_frames" }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fps = try c.decodeIfPresent(Double.self, forKey: .fps) ?? fps
        minPixels = try c.decodeIfPresent(Int.self, forKey: .minPixels)
        // Absent: the CPU default; `max_pixels: null`: the processor's limit alone.
        if c.contains(.maxPixels) { maxPixels = try c.decodeIfPresent(Int.self, forKey: .maxPixels) }
        totalPixels = try c.decodeIfPresent(Double.self, forKey: .totalPixels)
        maxFrames = try c.decodeIfPresent(Int.self, forKey: .maxFrames)
    }

    /// Written with the minimum in force, given or not: the settings key (Runner.settingsKey)
    /// of a spec that leaves min_pixels out stays the one it had when the default was a value,
    /// and equals that of a spec naming the default.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(fps, forKey: .fps)
        try c.encode(minimumPixels, forKey: .minPixels)
        try c.encodeIfPresent(maxPixels, forKey: .maxPixels)
        try c.encodeIfPresent(totalPixels, forKey: .totalPixels)
        try c.encodeIfPresent(maxFrames, forKey: .maxFrames)
    }
}
extension PipelineSpec.Inputs {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        paths = try c.decodeIfPresent([String].self, forKey: .paths) ?? paths
        recursive = try c.decodeIfPresent(Bool.self, forKey: .recursive) ?? recursive
        extensions = try c.decodeIfPresent([String].self, forKey: .extensions) ?? extensions
    }
}
extension PipelineSpec.Clips {
    enum CodingKeys: String, CodingKey { case seconds, overlap, minRemainder = "min_remainder" }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        seconds = try c.decodeIfPresent(Double.self, forKey: .seconds) ?? seconds
        overlap = try c.decodeIfPresent(Double.self, forKey: .overlap) ?? overlap
        minRemainder = try c.decodeIfPresent(Double.self, forKey: .minRemainder)
    }
}
extension PipelineSpec.Prompts {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? description
        questions = try c.decodeIfPresent([String].self, forKey: .questions) ?? questions
        summary = try c.decodeIfPresent(String.self, forKey: .summary) ?? summary
    }
}
extension PipelineSpec.Sampling {
    /// 448 × 448: a frame of 16 × 16 merged tokens.
    public static let cpuMaxPixels = 448 * 448
}

extension PipelineSpec.Generation {
    /// Sequences decoding together unless the spec or --batch says otherwise, by the language
    /// model's precision (measured: README, "Batched decoding"). Both GEMV kernels take sequences
    /// in blocks of four per pair of weight rows; a bf16 step is near its compute limit at 8, and a
    /// ninth sequence's block costs 0.12 → 0.17 s a step, while an int8 step stays memory-bound
    /// (0.07 s at 8 and at 9). So 8 for bf16 and f32 weights, 9 for int8: three clips of a
    /// description and two questions then decode together and leave together.
    public static func defaultBatch(dtype: ComputeDType?) -> Int { dtype == .int8 ? 9 : 8 }

    /// `batch`, else the default for a language model of `dtype`.
    public func batch(for dtype: ComputeDType?) -> Int { batch ?? Self.defaultBatch(dtype: dtype) }
    enum CodingKeys: String, CodingKey {
        case maxNewTokens = "max_new_tokens", temperature, topP = "top_p", topK = "top_k", repetitionPenalty = "repetition_penalty", seed, batch
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxNewTokens = try c.decodeIfPresent(Int.self, forKey: .maxNewTokens) ?? maxNewTokens
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? temperature
        topP = try c.decodeIfPresent(Double.self, forKey: .topP)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        repetitionPenalty = try c.decodeIfPresent(Double.self, forKey: .repetitionPenalty) ?? repetitionPenalty
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        batch = try c.decodeIfPresent(Int.self, forKey: .batch)
    }

    /// Everything but `batch`: these are the settings a clip's results depend on (they key the
    /// reuse of done clips), and batching never changes a result.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(maxNewTokens, forKey: .maxNewTokens)
        try c.encode(temperature, forKey: .temperature)
        try c.encodeIfPresent(topP, forKey: .topP)
        try c.encodeIfPresent(topK, forKey: .topK)
        try c.encode(repetitionPenalty, forKey: .repetitionPenalty)
        try c.encode(seed, forKey: .seed)
    }
}
extension PipelineSpec.Output {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        database = try c.decodeIfPresent(String.self, forKey: .database) ?? database
        if let on = try? c.decodeIfPresent(Bool.self, forKey: .thumbnails) {
            thumbnails = on ? thumbnails : 0
        } else if let size = try c.decodeIfPresent(Int.self, forKey: .thumbnails) {
            thumbnails = size
        }
    }
}
extension PipelineSpec {
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputs = try c.decodeIfPresent(Inputs.self, forKey: .inputs) ?? inputs
        sampling = try c.decodeIfPresent(Sampling.self, forKey: .sampling) ?? sampling
        clips = try c.decodeIfPresent(Clips.self, forKey: .clips) ?? clips
        model = try c.decodeIfPresent(String.self, forKey: .model)
        dtype = try c.decodeIfPresent(String.self, forKey: .dtype)
        visionDType = try c.decodeIfPresent(String.self, forKey: .visionDType)
        prompts = try c.decodeIfPresent(Prompts.self, forKey: .prompts) ?? prompts
        generation = try c.decodeIfPresent(Generation.self, forKey: .generation) ?? generation
        output = try c.decodeIfPresent(Output.self, forKey: .output) ?? output
    }
}
