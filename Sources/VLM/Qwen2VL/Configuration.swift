import Foundation
import Tensors

// Qwen2-VL configuration files, decoded in Hugging Face's names with the defaults transformers
// uses for absent keys. Both config.json layouts are read: transformers 4.x (text fields at the
// top level, `rope_scaling.mrope_section`, `in_chans`) and 5.x (`text_config`, `rope_parameters`,
// `in_channels`). Port of transformers' configuration_qwen2_vl.py.

/// The vision tower's configuration (`vision_config`).
public struct Qwen2VLVisionConfiguration: Codable, Sendable, Equatable {
    public var depth: Int = 32
    public var embedDim: Int = 1280
    /// Width of the merger's output: the language model's hidden size.
    public var hiddenSize: Int = 3584
    public var hiddenAct: String = "quick_gelu"
    public var mlpRatio: Double = 4
    public var numHeads: Int = 16
    public var inChannels: Int = 3
    public var patchSize: Int = 14
    public var spatialMergeSize: Int = 2
    public var temporalPatchSize: Int = 2
    public var ropeTheta: Double = 10000

    public var headDim: Int { embedDim / numHeads }
    public var mlpHiddenDim: Int { Int(Double(embedDim) * mlpRatio) }
    /// Values per patch: channels × temporal × patch × patch (1176 for Qwen2-VL).
    public var patchDim: Int { inChannels * temporalPatchSize * patchSize * patchSize }

    enum CodingKeys: String, CodingKey {
        case depth, embedDim = "embed_dim", hiddenSize = "hidden_size", hiddenAct = "hidden_act"
        case mlpRatio = "mlp_ratio", numHeads = "num_heads", inChannels = "in_channels", inChans = "in_chans"
        case patchSize = "patch_size", spatialMergeSize = "spatial_merge_size"
        case temporalPatchSize = "temporal_patch_size", ropeParameters = "rope_parameters", ropeTheta = "rope_theta"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        depth = try c.int(.depth) ?? depth
        embedDim = try c.int(.embedDim) ?? embedDim
        hiddenSize = try c.int(.hiddenSize) ?? hiddenSize
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
        mlpRatio = try c.decodeIfPresent(Double.self, forKey: .mlpRatio) ?? mlpRatio
        numHeads = try c.int(.numHeads) ?? numHeads
        inChannels = try c.int(.inChannels)
            ?? c.int(.inChans) ?? inChannels
        patchSize = try c.int(.patchSize) ?? patchSize
        spatialMergeSize = try c.int(.spatialMergeSize) ?? spatialMergeSize
        temporalPatchSize = try c.int(.temporalPatchSize) ?? temporalPatchSize
        if let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters), let theta = rope.ropeTheta {
            ropeTheta = theta
        } else {
            ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(depth, forKey: .depth)
        try c.encode(embedDim, forKey: .embedDim)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(mlpRatio, forKey: .mlpRatio)
        try c.encode(numHeads, forKey: .numHeads)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(patchSize, forKey: .patchSize)
        try c.encode(spatialMergeSize, forKey: .spatialMergeSize)
        try c.encode(temporalPatchSize, forKey: .temporalPatchSize)
        try c.encode(ropeTheta, forKey: .ropeTheta)
    }

    /// Every number against a sane range, before anything is sized by it (`ConfigBounds`).
    func validate(path: String) throws {
        let c = ConfigChecker(path: path, prefix: "vision_config.")
        try c.visionTower(self, widths: [("hidden_size", hiddenSize, ConfigBounds.width)])
        try c.positive("mlp_ratio", mlpRatio)
        let mlp = Double(embedDim) * mlpRatio, intermediate = ConfigBounds.intermediate
        guard mlp >= 1, mlp <= Double(intermediate.upperBound) else {
            throw c.bad("mlp_ratio", "\(mlpRatio) × embed_dim \(embedDim) gives an MLP width outside \(intermediate)")
        }
        try c.visionRotaryAndActivation(self, activations: ["quick_gelu", "gelu", "gelu_pytorch_tanh", "silu"])
    }
}

extension Qwen2VLVisionConfiguration: VisionTowerConfiguration {
    var towerWidth: (key: String, value: Int) { ("embed_dim", embedDim) }
}

/// `rope_parameters` (5.x) or `rope_scaling` (4.x).
struct RopeParameters: Codable, Sendable, Equatable {
    var ropeTheta: Double?
    var ropeType: String?
    var type: String?
    var mropeSection: [Int]?
    enum CodingKeys: String, CodingKey {
        case ropeTheta = "rope_theta", ropeType = "rope_type", type, mropeSection = "mrope_section"
    }
}

/// A configuration value that was read but is not supported, with its key.
struct RejectedValue: Sendable, Equatable {
    var key: String
    var value: String
}

/// One id or a list of ids (`eos_token_id` is either).
public struct TokenIDs: Codable, Sendable, Equatable {
    public var ids: [Int]
    public init(_ ids: [Int]) { self.ids = ids }
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(Int.self) { ids = [one] } else { ids = try c.decode([Int].self) }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(ids)
    }
}

/// The language model's configuration (`text_config`, or the top level in 4.x files).
public struct Qwen2VLTextConfiguration: Codable, Sendable, Equatable {
    public var vocabSize: Int = 152064
    public var hiddenSize: Int = 8192
    public var intermediateSize: Int = 29568
    public var numHiddenLayers: Int = 80
    public var numAttentionHeads: Int = 64
    public var numKeyValueHeads: Int = 8
    public var hiddenAct: String = "silu"
    public var maxPositionEmbeddings: Int = 32768
    public var rmsNormEps: Double = 1e-5
    public var ropeTheta: Double = 1_000_000
    public var mropeSection: [Int] = [16, 24, 24]
    public var tieWordEmbeddings: Bool?
    public var bosTokenId: Int?
    public var eosTokenId: TokenIDs?

    /// A rope type other than the default (mrope is the default's name in 4.x files), with the
    /// key it was under: refused by `validate` (yarn, linear, dynamic… change the rotary
    /// frequencies, which this decoder does not).
    var unsupportedRopeType: RejectedValue?

    public var headDim: Int { hiddenSize / numAttentionHeads }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", hiddenAct = "hidden_act"
        case maxPositionEmbeddings = "max_position_embeddings", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case mropeSection = "mrope_section", tieWordEmbeddings = "tie_word_embeddings"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.int(.vocabSize) ?? vocabSize
        hiddenSize = try c.int(.hiddenSize) ?? hiddenSize
        intermediateSize = try c.int(.intermediateSize) ?? intermediateSize
        numHiddenLayers = try c.int(.numHiddenLayers) ?? numHiddenLayers
        numAttentionHeads = try c.int(.numAttentionHeads) ?? numAttentionHeads
        numKeyValueHeads = try c.int(.numKeyValueHeads) ?? numAttentionHeads
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
        maxPositionEmbeddings = try c.int(.maxPositionEmbeddings) ?? maxPositionEmbeddings
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? rmsNormEps
        let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        let scaling = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling)
        ropeTheta = try rope?.ropeTheta ?? c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        mropeSection = try rope?.mropeSection ?? scaling?.mropeSection
            ?? c.decodeIfPresent([Int].self, forKey: .mropeSection) ?? mropeSection
        let types: [(String, String?)] = [("rope_parameters.rope_type", rope?.ropeType), ("rope_parameters.type", rope?.type),
                                          ("rope_scaling.rope_type", scaling?.ropeType), ("rope_scaling.type", scaling?.type)]
        if let (key, value) = types.first(where: { $0.1 != nil }), let value, !["default", "mrope"].contains(value) {
            unsupportedRopeType = RejectedValue(key: key, value: value)
        }
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        bosTokenId = try c.int(.bosTokenId)
        eosTokenId = try c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenId)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(mropeSection, forKey: .mropeSection)
        try c.encodeIfPresent(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
    }

    /// Every number against a sane range, before anything is sized by it (`ConfigBounds`).
    /// `prefix` is where the text fields sit in the file ("text_config." or "" for 4.x files).
    func validate(path: String, prefix: String = "") throws {
        let c = ConfigChecker(path: path, prefix: prefix)
        if let r = unsupportedRopeType { try c.oneOf(r.key, r.value, ["default", "mrope"]) }
        try c.decoderSizes(self)
        try c.divides("num_attention_heads", numAttentionHeads, "hidden_size", hiddenSize)
        try c.attentionGroupsAndSections(self, mropeKey: "mrope_section")
        try c.decoderNumbers(self)
        try c.bosAndEos(bosTokenId, eosTokenId, vocabSize: vocabSize)
    }
}

extension Qwen2VLTextConfiguration: DecoderConfiguration {}

/// config.json of a Qwen2-VL checkpoint.
public struct Qwen2VLConfiguration: Codable, Sendable, Equatable {
    public var modelType: String = "qwen2_vl"
    public var text: Qwen2VLTextConfiguration
    public var vision: Qwen2VLVisionConfiguration
    public var imageTokenId: Int = 151655
    public var videoTokenId: Int = 151656
    public var visionStartTokenId: Int = 151652
    public var visionEndTokenId: Int = 151653
    public var tieWordEmbeddings: Bool = false
    public var torchDtype: String?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", text = "text_config", vision = "vision_config"
        case imageTokenId = "image_token_id", videoTokenId = "video_token_id"
        case visionStartTokenId = "vision_start_token_id", visionEndTokenId = "vision_end_token_id"
        case tieWordEmbeddings = "tie_word_embeddings", torchDtype = "torch_dtype", dtype
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? modelType
        // transformers 5 nests the text fields; 4.x keeps them at the top level.
        text = try c.decodeIfPresent(Qwen2VLTextConfiguration.self, forKey: .text) ?? Qwen2VLTextConfiguration(from: decoder)
        vision = try c.decodeIfPresent(Qwen2VLVisionConfiguration.self, forKey: .vision) ?? Qwen2VLVisionConfiguration()
        imageTokenId = try c.int(.imageTokenId) ?? imageTokenId
        videoTokenId = try c.int(.videoTokenId) ?? videoTokenId
        visionStartTokenId = try c.int(.visionStartTokenId) ?? visionStartTokenId
        visionEndTokenId = try c.int(.visionEndTokenId) ?? visionEndTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? text.tieWordEmbeddings ?? false
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype) ?? c.decodeIfPresent(String.self, forKey: .dtype)
    }

    /// The text and vision fields, the special token ids against the vocabulary, and the widths
    /// the two towers share.
    func validate(path: String, textPrefix: String = "text_config.") throws {
        try vision.validate(path: path)
        try text.validate(path: path, prefix: textPrefix)
        let c = ConfigChecker(path: path)
        try c.visionTokens(self, vocabSize: text.vocabSize)
        try c.sameWidth("vision_config.hidden_size", vision.hiddenSize, "the language model's hidden_size", text.hiddenSize)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(text, forKey: .text)
        try c.encode(vision, forKey: .vision)
        try c.encode(imageTokenId, forKey: .imageTokenId)
        try c.encode(videoTokenId, forKey: .videoTokenId)
        try c.encode(visionStartTokenId, forKey: .visionStartTokenId)
        try c.encode(visionEndTokenId, forKey: .visionEndTokenId)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(torchDtype, forKey: .torchDtype)
    }
}

extension Qwen2VLConfiguration: Qwen2LayoutConfiguration, VisionTokenConfiguration {}

/// A config.json in Qwen2-VL's layout (Qwen2-VL, Qwen2.5-VL): Qwen2-VL's decoder, its text fields
/// under text_config (transformers 5) or at the top level (4.x).
protocol Qwen2LayoutConfiguration: Decodable {
    associatedtype Vision: VisionTowerConfiguration
    var modelType: String { get }
    var text: Qwen2VLTextConfiguration { get }
    var vision: Vision { get }
    func validate(path: String, textPrefix: String) throws
}

/// preprocessor_config.json / video_preprocessor_config.json.
public struct Qwen2VLPreprocessorConfiguration: Codable, Sendable, Equatable {
    public var imageMean: [Double] = [0.48145466, 0.4578275, 0.40821073]
    public var imageStd: [Double] = [0.26862954, 0.26130258, 0.27577711]
    public var rescaleFactor: Double = 1.0 / 255
    public var doRescale: Bool = true
    public var doNormalize: Bool = true
    public var patchSize: Int = 14
    public var temporalPatchSize: Int = 2
    public var mergeSize: Int = 2
    public var minPixels: Int = 128 * 28 * 28
    public var maxPixels: Int = 768 * 28 * 28

    enum CodingKeys: String, CodingKey {
        case imageMean = "image_mean", imageStd = "image_std", rescaleFactor = "rescale_factor"
        case doRescale = "do_rescale", doNormalize = "do_normalize", patchSize = "patch_size"
        case temporalPatchSize = "temporal_patch_size", mergeSize = "merge_size"
        case minPixels = "min_pixels", maxPixels = "max_pixels", size
    }

    struct Size: Codable {
        var shortestEdge: Int?
        var longestEdge: Int?
        var minPixels: Int?
        var maxPixels: Int?
        enum CodingKeys: String, CodingKey {
            case shortestEdge = "shortest_edge", longestEdge = "longest_edge", minPixels = "min_pixels", maxPixels = "max_pixels"
        }
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageMean = try c.decodeIfPresent([Double].self, forKey: .imageMean) ?? imageMean
        imageStd = try c.decodeIfPresent([Double].self, forKey: .imageStd) ?? imageStd
        rescaleFactor = try c.decodeIfPresent(Double.self, forKey: .rescaleFactor) ?? rescaleFactor
        doRescale = try c.decodeIfPresent(Bool.self, forKey: .doRescale) ?? doRescale
        doNormalize = try c.decodeIfPresent(Bool.self, forKey: .doNormalize) ?? doNormalize
        patchSize = try c.int(.patchSize) ?? patchSize
        temporalPatchSize = try c.int(.temporalPatchSize) ?? temporalPatchSize
        mergeSize = try c.int(.mergeSize) ?? mergeSize
        let size = try c.decodeIfPresent(Size.self, forKey: .size)
        minPixels = try size?.shortestEdge ?? size?.minPixels ?? c.int(.minPixels) ?? minPixels
        maxPixels = try size?.longestEdge ?? size?.maxPixels ?? c.int(.maxPixels) ?? maxPixels
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(imageMean, forKey: .imageMean)
        try c.encode(imageStd, forKey: .imageStd)
        try c.encode(rescaleFactor, forKey: .rescaleFactor)
        try c.encode(doRescale, forKey: .doRescale)
        try c.encode(doNormalize, forKey: .doNormalize)
        try c.encode(patchSize, forKey: .patchSize)
        try c.encode(temporalPatchSize, forKey: .temporalPatchSize)
        try c.encode(mergeSize, forKey: .mergeSize)
        try c.encode(minPixels, forKey: .minPixels)
        try c.encode(maxPixels, forKey: .maxPixels)
    }

    /// Every number against a sane range; with `tower`, the patching must be the vision tower's.
    func validate(path: String, tower: (patch: Int, temporal: Int, merge: Int)? = nil) throws {
        let c = ConfigChecker(path: path), b = ConfigBounds.self
        guard imageMean.count == 3, imageStd.count == 3, imageStd.allSatisfy({ $0 > 0 }) else {
            throw c.bad("image_mean/image_std", "need 3 values each, std > 0")
        }
        guard (imageMean + imageStd).allSatisfy(\.isFinite) else {
            throw c.bad("image_mean/image_std", "must be finite, got \(imageMean) and \(imageStd)")
        }
        try c.positive("rescale_factor", rescaleFactor)
        try c.inRanges([("patch_size", patchSize, b.patch), ("temporal_patch_size", temporalPatchSize, b.temporalPatch),
                        ("merge_size", mergeSize, b.merge), ("max_pixels", maxPixels, b.pixels)])
        try c.inRange("min_pixels", minPixels, 0...min(maxPixels, b.minPixels.upperBound),
                      note: " (at most max_pixels, and 2048²: a minimum upscales every frame to it)")
        if let tower { try matches(path: path, tower: tower) }
    }

    /// The processor's patch, temporal patch and merge sizes equal the vision tower's.
    func matches(path: String, tower: (patch: Int, temporal: Int, merge: Int)) throws {
        for (key, mine, theirs, theirKey) in [("patch_size", patchSize, tower.patch, "patch_size"),
                                              ("temporal_patch_size", temporalPatchSize, tower.temporal, "temporal_patch_size"),
                                              ("merge_size", mergeSize, tower.merge, "spatial_merge_size")] where mine != theirs {
            throw VLMError.invalidConfig(path: path, key: key, reason: "\(mine) differs from the vision tower's \(theirKey) \(theirs) in config.json")
        }
    }
}

/// generation_config.json.
public struct GenerationConfiguration: Codable, Sendable, Equatable {
    public var bosTokenId: Int?
    public var eosTokenId: TokenIDs?
    public var padTokenId: Int?
    public var doSample: Bool?
    public var temperature: Double?
    public var topK: Int?
    public var topP: Double?
    public var repetitionPenalty: Double?
    public var maxNewTokens: Int?

    enum CodingKeys: String, CodingKey {
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case doSample = "do_sample", temperature, topK = "top_k", topP = "top_p"
        case repetitionPenalty = "repetition_penalty", maxNewTokens = "max_new_tokens"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bosTokenId = try c.int(.bosTokenId)
        eosTokenId = try c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenId)
        padTokenId = try c.int(.padTokenId)
        doSample = try c.decodeIfPresent(Bool.self, forKey: .doSample)
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        topK = try c.int(.topK)
        topP = try c.decodeIfPresent(Double.self, forKey: .topP)
        repetitionPenalty = try c.decodeIfPresent(Double.self, forKey: .repetitionPenalty)
        maxNewTokens = try c.int(.maxNewTokens)
    }

    /// Token ids within the vocabulary and sampling numbers in their ranges.
    func validate(path: String, vocabSize: Int) throws {
        let c = ConfigChecker(path: path)
        try c.inVocabulary([("bos_token_id", bosTokenId), ("pad_token_id", padTokenId)] + (eosTokenId?.ids ?? []).map { ("eos_token_id", $0) },
                           vocabSize: vocabSize)
        if let t = temperature { try c.nonNegative("temperature", t) }
        if let k = topK, k < 0 { throw c.bad("top_k", "must be ≥ 0, got \(k)") }
        if let p = topP, !(p.isFinite && p > 0 && p <= 1) { throw c.bad("top_p", "must be in (0, 1], got \(p)") }
        if let r = repetitionPenalty { try c.positive("repetition_penalty", r) }
        if let n = maxNewTokens { try c.inRange("max_new_tokens", n, ConfigBounds.newTokens) }
    }
}

/// The configuration files of a model directory.
public struct Qwen2VLModelFiles: Sendable {
    public var directory: String
    public var config: Qwen2VLConfiguration
    /// The video processor's settings (what clips are sized and normalised by).
    public var preprocessor: Qwen2VLPreprocessorConfiguration
    /// The image processor's settings (what still images are sized and normalised by).
    public var imagePreprocessor: Qwen2VLPreprocessorConfiguration
    /// The files the processor settings came from (for messages and `inspect`).
    public var processorFiles: [String]
    public var generation: GenerationConfiguration

    /// Qwen2-VL's image processor defaults (Qwen2VLImageProcessor: min_pixels 56², max_pixels 28²·1280).
    public static var imageDefaults: Qwen2VLPreprocessorConfiguration {
        var c = Qwen2VLPreprocessorConfiguration()
        c.minPixels = 56 * 56
        c.maxPixels = 28 * 28 * 1280
        return c
    }

    public init(directory: String, modelTypes: [String] = ["qwen2_vl"]) throws {
        self.directory = directory
        (config, preprocessor, imagePreprocessor, processorFiles, generation) = try Self.load(
            Qwen2VLConfiguration.self, directory: directory, modelTypes: modelTypes)
    }

    /// The files of a directory in Qwen2-VL's layout (Qwen2.5-VL keeps it): config.json, its
    /// model_type among `modelTypes`, validated with its text fields where they sit; the
    /// processor settings (`processorSettings`), matching the vision tower; generation_config.json.
    static func load<Config: Qwen2LayoutConfiguration>(_ type: Config.Type, directory: String, modelTypes: [String]) throws
        -> (config: Config, video: Qwen2VLPreprocessorConfiguration, image: Qwen2VLPreprocessorConfiguration,
            files: [String], generation: GenerationConfiguration) {
        let dir = ModelDirectory(directory: directory)
        let configPath = dir.path("config.json")
        let config = try decode(Config.self, at: configPath)
        guard modelTypes.contains(config.modelType) else {
            throw VLMError.unsupportedModel(path: configPath, modelType: config.modelType, supported: modelTypes)
        }
        try config.validate(path: configPath, textPrefix: textPrefix(configPath))
        let (video, image, files) = try processorSettings(directory: directory, tower: config.vision.patchSizes)
        return (config, video, image, files, try dir.generation(vocabSize: config.text.vocabSize))
    }

    /// Processor settings from wherever the checkpoint keeps them: transformers 5 nests both in
    /// `processor_config.json` (`video_processor`, `image_processor`); older saves write
    /// `video_preprocessor_config.json` and `preprocessor_config.json` (the image processor's,
    /// which also served videos before video processors existed). Absent: the defaults.
    static func processorSettings(directory: String, tower: (patch: Int, temporal: Int, merge: Int)) throws
        -> (video: Qwen2VLPreprocessorConfiguration, image: Qwen2VLPreprocessorConfiguration, files: [String]) {
        let dir = ModelDirectory(directory: directory)
        let nestedPath = dir.path("processor_config.json"), videoPath = dir.path("video_preprocessor_config.json")
        let imagePath = dir.path("preprocessor_config.json")
        let nested = try dir.nestedProcessors(Qwen2VLPreprocessorConfiguration.self)
        var files: [String] = []
        let video: Qwen2VLPreprocessorConfiguration, image: Qwen2VLPreprocessorConfiguration
        if let v = nested?.video {
            video = v; files.append(nestedPath)
            try video.validate(path: nestedPath + " (video_processor)", tower: tower)
        } else if let p = [videoPath, imagePath].first(where: dir.exists) {
            video = try decode(Qwen2VLPreprocessorConfiguration.self, at: p); files.append(p)
            try video.validate(path: p, tower: tower)
        } else {
            video = Qwen2VLPreprocessorConfiguration()
        }
        if let i = nested?.image {
            image = i
            if !files.contains(nestedPath) { files.append(nestedPath) }
            try image.validate(path: nestedPath + " (image_processor)", tower: tower)
        } else if dir.exists(imagePath) {
            image = try decode(Qwen2VLPreprocessorConfiguration.self, at: imagePath)
            if !files.contains(imagePath) { files.append(imagePath) }
            try image.validate(path: imagePath, tower: tower)
        } else {
            image = imageDefaults
        }
        return (video, image, files)
    }

    /// "text_config." when config.json nests the text fields (transformers 5), else "".
    static func textPrefix(_ configPath: String) -> String {
        guard let data = try? readConfigFile(configPath),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return "" }
        return json["text_config"] is [String: Any] ? "text_config." : ""
    }

    /// A configuration file's bytes: only a regular file of reasonable size is read (a FIFO in
    /// its place would block, a device never end).
    static func readConfigFile(_ path: String) throws -> Data {
        var st = stat()
        guard stat(path, &st) == 0 else {
            // A link loop or an unreadable folder is not a missing file.
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw VLMError.missingFile(path: path) }
            throw VLMError.invalidConfig(path: path, key: "(file)", reason: String(cString: strerror(code)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw VLMError.invalidConfig(path: path, key: "(file)", reason: "not a regular file") }
        guard st.st_size <= 64 << 20 else {
            throw VLMError.invalidConfig(path: path, key: "(file)", reason: "\(st.st_size) bytes; a configuration file is far smaller")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw VLMError.missingFile(path: path) }
        return data
    }

    /// Decodes a JSON file, turning decoding errors into `VLMError.invalidConfig` naming the key.
    public static func decode<T: Decodable>(_ type: T.Type, at path: String) throws -> T {
        return try decode(type, from: try readConfigFile(path), path: path)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        do {
            let value = try JSONDecoder().decode(type, from: data)
            // A key written twice: JSONDecoder took the first, transformers takes the last.
            if let (object, key) = JSONText.duplicateKey(in: data) {
                throw VLMError.invalidConfig(path: path, key: object.isEmpty ? key : object + "." + key,
                                             reason: "written twice in one object (transformers reads the last, reelql the first): keep one")
            }
            return value
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty
                    && (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) != nil {
            // Valid JSON that did not decode: Foundation's words for a fraction or an overflow
            // where a whole number belongs. Find the number.
            if let (key, value) = JSONText.wholeNumberCulprit(in: data, decodes: { (try? JSONDecoder().decode(type, from: $0)) != nil }) {
                throw VLMError.invalidConfig(path: path, key: key, reason: "\(value) is not a whole number (or is beyond ±9.2e18)")
            }
            throw VLMError.invalidConfig(path: path, key: keyPath(context), reason: "a value is not of the type its key takes (\(context.debugDescription))")
        } catch let DecodingError.typeMismatch(expected, context) {
            throw VLMError.invalidConfig(path: path, key: keyPath(context), reason: "expected \(describe(expected))")
        } catch let DecodingError.valueNotFound(expected, context) {
            throw VLMError.invalidConfig(path: path, key: keyPath(context), reason: "expected \(describe(expected)), found null")
        } catch let DecodingError.keyNotFound(key, context) {
            throw VLMError.invalidConfig(path: path, key: keyPath(context, key), reason: "missing")
        } catch let DecodingError.dataCorrupted(context) {
            throw VLMError.invalidConfig(path: path, key: keyPath(context), reason: context.debugDescription)
        }
    }

    static func keyPath(_ c: DecodingError.Context, _ last: CodingKey? = nil) -> String {
        let keys = (c.codingPath + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return keys.isEmpty ? "(top level)" : keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is Double.Type: return "a number"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        default: return "\(type)"
        }
    }
}

extension KeyedDecodingContainer {
    /// An optional integer. Foundation's JSONDecoder reports a fractional number decoded as Int as
    /// invalid JSON without naming the key; decoding a Double first keeps the key in the error.
    func int(_ key: Key) throws -> Int? {
        let decoded: Double?
        do { decoded = try decodeIfPresent(Double.self, forKey: key) } catch DecodingError.typeMismatch(_, let context) {
            throw DecodingError.typeMismatch(Int.self, context)
        }
        guard let d = decoded else { return nil }
        guard d.rounded() == d, abs(d) < 9.0e15 else {
            throw DecodingError.typeMismatch(Int.self, DecodingError.Context(codingPath: codingPath + [key], debugDescription: "\(d) is not an integer"))
        }
        return Int(d)
    }
}
