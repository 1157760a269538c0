import Foundation

// The checks every family's configuration files share: sane ranges for numbers, and the
// consistency rules (heads dividing widths, ids within the vocabulary, the vision output as wide
// as the language model). Each family's `validate` lists its checks in its own order with the
// helpers here; every error names the file, the key (with its section prefix) and the value.

/// Sane ranges for configuration numbers: wide enough for any released Qwen-VL, narrow enough
/// that nothing sized by them (weights, caches, buffers, loops) can be absurd or overflow.
enum ConfigBounds {
    static let width = 1...(1 << 20)          // hidden sizes
    static let intermediate = 1...(1 << 22)   // MLP widths
    static let heads = 1...(1 << 14)
    static let layers = 1...1024
    static let vocab = 1...(1 << 24)
    static let positions = 1...(1 << 24)      // max_position_embeddings
    static let patch = 1...1024
    static let merge = 1...16
    static let temporalPatch = 1...16
    static let channels = 1...16
    static let pixels = 1...(1 << 30)         // max_pixels
    /// min_pixels: every frame, however small, is upscaled to at least this; released
    /// checkpoints ask for at most 65,536, and 2048² is already minutes of the tower per frame.
    static let minPixels = 0...(1 << 22)
    static let newTokens = 0...(1 << 24)

    static func outside(_ value: Int, _ range: ClosedRange<Int>) -> String {
        "must be in \(range.lowerBound)...\(range.upperBound), got \(value)"
    }
}

/// The checks of one configuration file (`path`), its keys under `prefix` ("vision_config.",
/// "text_config.", or "" for top-level keys and 4.x files' top-level text fields).
struct ConfigChecker {
    let path: String
    var prefix = ""

    /// The error for `key` (under the prefix).
    func bad(_ key: String, _ why: String) -> VLMError { .invalidConfig(path: path, key: prefix + key, reason: why) }

    /// Each value within its range, in the order given; `note` follows the range in the message.
    func inRange(_ key: String, _ value: Int, _ range: ClosedRange<Int>, note: String = "") throws {
        guard range.contains(value) else { throw bad(key, ConfigBounds.outside(value, range) + note) }
    }

    func inRanges(_ checks: [(key: String, value: Int, range: ClosedRange<Int>)]) throws {
        for (key, value, range) in checks { try inRange(key, value, range) }
    }

    /// A finite number > 0 (rope_theta, rescale_factor, repetition_penalty).
    func positive(_ key: String, _ value: Double) throws {
        guard value.isFinite, value > 0 else { throw bad(key, "must be a finite number > 0, got \(value)") }
    }

    /// A finite number ≥ 0 (rms_norm_eps, temperature).
    func nonNegative(_ key: String, _ value: Double) throws {
        guard value.isFinite, value >= 0 else { throw bad(key, "must be a finite number ≥ 0, got \(value)") }
    }

    /// A name among those supported (an activation, a rope type).
    func oneOf(_ key: String, _ value: String, _ supported: [String]) throws {
        guard !supported.contains(value) else { return }
        if supported.count == 1 { throw bad(key, "'\(value)' is not supported (expected \(supported[0]))") }
        throw bad(key, "'\(value)' is not one of \(supported.joined(separator: ", "))")
    }

    /// `divisor` (the value of `key`) divides `value`, the value of `name`.
    func divides(_ key: String, _ divisor: Int, _ name: String, _ value: Int) throws {
        guard value % divisor == 0 else { throw bad(key, "\(divisor) does not divide \(name) \(value)") }
    }

    /// Each id present within the vocabulary.
    func inVocabulary(_ ids: [(key: String, id: Int?)], vocabSize: Int) throws {
        for case let (key, id?) in ids where !(0..<vocabSize).contains(id) {
            throw bad(key, "\(id) is outside the vocabulary 0..<\(vocabSize)")
        }
    }

    /// bos_token_id and every eos_token_id within the vocabulary.
    func bosAndEos(_ bos: Int?, _ eos: TokenIDs?, vocabSize: Int) throws {
        try inVocabulary([("bos_token_id", bos)] + (eos?.ids ?? []).map { ("eos_token_id", $0) }, vocabSize: vocabSize)
    }

    /// The vision tower's output width (`key`) equals the language model's hidden size (`textKey` in the message).
    func sameWidth(_ key: String, _ vision: Int, _ textKey: String, _ text: Int) throws {
        guard vision == text else { throw bad(key, "\(vision) differs from \(textKey) \(text)") }
    }
}

/// What every family's vision tower configuration (`vision_config`) has.
protocol VisionTowerConfiguration {
    var depth: Int { get }
    var numHeads: Int { get }
    var patchSize: Int { get }
    var spatialMergeSize: Int { get }
    var temporalPatchSize: Int { get }
    var inChannels: Int { get }
    var ropeTheta: Double { get }
    var hiddenAct: String { get }
    /// The tower's width and its key (Qwen2-VL's embed_dim, hidden_size after it).
    var towerWidth: (key: String, value: Int) { get }
}

extension VisionTowerConfiguration {
    /// The patch, temporal patch and merge sizes a processor must share with the tower.
    var patchSizes: (patch: Int, temporal: Int, merge: Int) { (patchSize, temporalPatchSize, spatialMergeSize) }
}

/// What every family's decoder configuration (`text_config`) has.
protocol DecoderConfiguration {
    var vocabSize: Int { get }
    var hiddenSize: Int { get }
    var intermediateSize: Int { get }
    var numHiddenLayers: Int { get }
    var numAttentionHeads: Int { get }
    var numKeyValueHeads: Int { get }
    var headDim: Int { get }
    var maxPositionEmbeddings: Int { get }
    var mropeSection: [Int] { get }
    var ropeTheta: Double { get }
    var rmsNormEps: Double { get }
    var hiddenAct: String { get }
    var bosTokenId: Int? { get }
    var eosTokenId: TokenIDs? { get }
}

/// The special token ids of every family's config.json.
protocol VisionTokenConfiguration {
    var imageTokenId: Int { get }
    var videoTokenId: Int { get }
    var visionStartTokenId: Int { get }
    var visionEndTokenId: Int { get }
}

extension ConfigChecker {
    /// A vision tower's numbers in range, in this order: depth, width, num_heads, `widths` (the
    /// family's other widths), the patching and channels, `more`; then the heads dividing the
    /// width into a head dim that 2D rotary splits in four.
    func visionTower(_ v: some VisionTowerConfiguration, widths: [(key: String, value: Int, range: ClosedRange<Int>)] = [],
                     more: [(key: String, value: Int, range: ClosedRange<Int>)] = []) throws {
        let b = ConfigBounds.self
        try inRanges([("depth", v.depth, b.layers), (v.towerWidth.key, v.towerWidth.value, b.width), ("num_heads", v.numHeads, b.heads)] + widths
                     + [("patch_size", v.patchSize, b.patch), ("spatial_merge_size", v.spatialMergeSize, b.merge),
                        ("temporal_patch_size", v.temporalPatchSize, b.temporalPatch), ("in_channels", v.inChannels, b.channels)] + more)
        try divides("num_heads", v.numHeads, v.towerWidth.key, v.towerWidth.value)
        let headDim = v.towerWidth.value / v.numHeads
        guard headDim % 4 == 0 else { throw bad("num_heads", "head dim \(headDim) must be a multiple of 4 for 2D rotary") }
    }

    /// The tower's rotary base and activation (one of `activations`).
    func visionRotaryAndActivation(_ v: some VisionTowerConfiguration, activations: [String]) throws {
        try positive("rope_theta", v.ropeTheta)
        try oneOf("hidden_act", v.hiddenAct, activations)
    }

    /// A decoder's sizes in range (`head_dim` before max_position_embeddings when the family
    /// configures it).
    func decoderSizes(_ t: some DecoderConfiguration, headDimKey: Bool = false) throws {
        let b = ConfigBounds.self
        try inRanges([("vocab_size", t.vocabSize, b.vocab), ("hidden_size", t.hiddenSize, b.width),
                      ("intermediate_size", t.intermediateSize, b.intermediate), ("num_hidden_layers", t.numHiddenLayers, b.layers),
                      ("num_attention_heads", t.numAttentionHeads, b.heads), ("num_key_value_heads", t.numKeyValueHeads, b.heads)]
                     + (headDimKey ? [("head_dim", t.headDim, b.width)] : [])
                     + [("max_position_embeddings", t.maxPositionEmbeddings, b.positions)])
    }

    /// The KV heads divide the attention heads; the M-RoPE section (at `mropeKey`) holds three
    /// sizes summing to half the head dim.
    func attentionGroupsAndSections(_ t: some DecoderConfiguration, mropeKey: String) throws {
        try divides("num_key_value_heads", t.numKeyValueHeads, "num_attention_heads", t.numAttentionHeads)
        guard t.mropeSection.count == 3, t.mropeSection.allSatisfy({ (0...t.headDim).contains($0) }),
              t.mropeSection.reduce(0, +) * 2 == t.headDim else {
            throw bad(mropeKey, "\(t.mropeSection) must hold 3 sizes ≥ 0 summing to head_dim / 2 = \(t.headDim / 2)")
        }
    }

    /// rope_theta, rms_norm_eps, and the SiLU activation every Qwen decoder uses.
    func decoderNumbers(_ t: some DecoderConfiguration) throws {
        try positive("rope_theta", t.ropeTheta)
        try nonNegative("rms_norm_eps", t.rmsNormEps)
        try oneOf("hidden_act", t.hiddenAct, ["silu"])
    }

    /// image/video/vision start/vision end token ids within the vocabulary.
    func visionTokens(_ c: some VisionTokenConfiguration, vocabSize: Int) throws {
        try inVocabulary([("image_token_id", c.imageTokenId), ("video_token_id", c.videoTokenId),
                          ("vision_start_token_id", c.visionStartTokenId), ("vision_end_token_id", c.visionEndTokenId)],
                         vocabSize: vocabSize)
    }
}

/// A model directory's configuration files, as every family reads them.
struct ModelDirectory {
    let directory: String

    func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// Whether the name is there, as any kind of file or link: a link that loops or leads
    /// nowhere is there (and refused when read), not an absent optional file replaced by defaults.
    func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// processor_config.json (transformers 5): the video and image processors' settings, nested
    /// under `video_processor` and `image_processor`; nil when the file is absent.
    func nestedProcessors<Settings: Decodable>(_ type: Settings.Type) throws -> NestedProcessors<Settings>? {
        let nestedPath = path("processor_config.json")
        return exists(nestedPath) ? try Qwen2VLModelFiles.decode(NestedProcessors<Settings>.self, at: nestedPath) : nil
    }

    /// generation_config.json, its ids within the vocabulary and its sampling numbers in range;
    /// absent: no settings.
    func generation(vocabSize: Int) throws -> GenerationConfiguration {
        let gen = path("generation_config.json")
        let generation = exists(gen) ? try Qwen2VLModelFiles.decode(GenerationConfiguration.self, at: gen) : GenerationConfiguration()
        try generation.validate(path: gen, vocabSize: vocabSize)
        return generation
    }
}

/// processor_config.json's nested processor settings.
struct NestedProcessors<Settings: Decodable>: Decodable {
    var video: Settings?
    var image: Settings?
    enum CodingKeys: String, CodingKey { case video = "video_processor", image = "image_processor" }
}
