import Foundation

// Qwen3-VL configuration files, decoded in Hugging Face's names with the defaults the released
// transformers (4.57, configuration_qwen3_vl.py) uses for absent keys. Both config.json layouts
// are read: 4.57 (`text_config.rope_theta` + `text_config.rope_scaling` with `mrope_section`) and
// 5.x (`text_config.rope_parameters`, and `vision_config.rope_parameters`). Where 5.24's defaults
// differ from the release (the text rope_theta: 500000 in 5.24, 5000000 in 4.57), the release wins.

/// `rope_parameters` (5.x) or `rope_scaling` (4.x) of a Qwen3-VL config.
struct Qwen3VLRopeParameters: Codable, Sendable, Equatable {
    var ropeTheta: Double?
    var ropeType: String?
    var type: String?
    var mropeSection: [Int]?
    var mropeInterleaved: Bool?
    enum CodingKeys: String, CodingKey {
        case ropeTheta = "rope_theta", ropeType = "rope_type", type, mropeSection = "mrope_section"
        case mropeInterleaved = "mrope_interleaved"
    }
}

/// The vision tower's configuration (`vision_config`). Port of `Qwen3VLVisionConfig`.
public struct Qwen3VLVisionConfiguration: Codable, Sendable, Equatable {
    public var depth: Int = 27
    public var hiddenSize: Int = 1152
    public var hiddenAct: String = "gelu_pytorch_tanh"
    public var intermediateSize: Int = 4304
    public var numHeads: Int = 16
    public var inChannels: Int = 3
    public var patchSize: Int = 16
    public var spatialMergeSize: Int = 2
    public var temporalPatchSize: Int = 2
    /// Width of the mergers' output: the language model's hidden size.
    public var outHiddenSize: Int = 3584
    /// Rows of the learned position table: a square grid of side ⌊√n⌋.
    public var numPositionEmbeddings: Int = 2304
    /// Blocks after which a DeepStack merger taps the hidden states (feature k feeds decoder layer k).
    public var deepstackVisualIndexes: [Int] = [8, 16, 24]
    public var ropeTheta: Double = 10000

    public var headDim: Int { hiddenSize / numHeads }
    /// Values per patch: channels × temporal × patch × patch (1536 for Qwen3-VL).
    public var patchDim: Int { inChannels * temporalPatchSize * patchSize * patchSize }
    /// Side of the learned position grid: `int(num_position_embeddings ** 0.5)`.
    public var gridSide: Int {
        var s = Int(Double(numPositionEmbeddings).squareRoot())
        while s * s > numPositionEmbeddings { s -= 1 }
        while (s + 1) * (s + 1) <= numPositionEmbeddings { s += 1 }
        return s
    }

    enum CodingKeys: String, CodingKey {
        case depth, hiddenSize = "hidden_size", hiddenAct = "hidden_act", intermediateSize = "intermediate_size"
        case numHeads = "num_heads", inChannels = "in_channels", patchSize = "patch_size"
        case spatialMergeSize = "spatial_merge_size", temporalPatchSize = "temporal_patch_size"
        case outHiddenSize = "out_hidden_size", numPositionEmbeddings = "num_position_embeddings"
        case deepstackVisualIndexes = "deepstack_visual_indexes", ropeParameters = "rope_parameters", ropeTheta = "rope_theta"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        depth = try c.int(.depth) ?? depth
        hiddenSize = try c.int(.hiddenSize) ?? hiddenSize
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
        intermediateSize = try c.int(.intermediateSize) ?? intermediateSize
        numHeads = try c.int(.numHeads) ?? numHeads
        inChannels = try c.int(.inChannels) ?? inChannels
        patchSize = try c.int(.patchSize) ?? patchSize
        spatialMergeSize = try c.int(.spatialMergeSize) ?? spatialMergeSize
        temporalPatchSize = try c.int(.temporalPatchSize) ?? temporalPatchSize
        outHiddenSize = try c.int(.outHiddenSize) ?? outHiddenSize
        numPositionEmbeddings = try c.int(.numPositionEmbeddings) ?? numPositionEmbeddings
        deepstackVisualIndexes = try c.decodeIfPresent([Int].self, forKey: .deepstackVisualIndexes) ?? deepstackVisualIndexes
        let rope = try c.decodeIfPresent(Qwen3VLRopeParameters.self, forKey: .ropeParameters)
        ropeTheta = try rope?.ropeTheta ?? c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(depth, forKey: .depth)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHeads, forKey: .numHeads)
        try c.encode(inChannels, forKey: .inChannels)
        try c.encode(patchSize, forKey: .patchSize)
        try c.encode(spatialMergeSize, forKey: .spatialMergeSize)
        try c.encode(temporalPatchSize, forKey: .temporalPatchSize)
        try c.encode(outHiddenSize, forKey: .outHiddenSize)
        try c.encode(numPositionEmbeddings, forKey: .numPositionEmbeddings)
        try c.encode(deepstackVisualIndexes, forKey: .deepstackVisualIndexes)
        try c.encode(ropeTheta, forKey: .ropeTheta)
    }

    /// Every number against a sane range (`ConfigBounds`), before anything is sized by it.
    func validate(path: String) throws {
        let c = ConfigChecker(path: path, prefix: "vision_config."), b = ConfigBounds.self
        try c.visionTower(self, widths: [("intermediate_size", intermediateSize, b.intermediate), ("out_hidden_size", outHiddenSize, b.width)],
                          more: [("num_position_embeddings", numPositionEmbeddings, b.positions)])
        try c.visionRotaryAndActivation(self, activations: ["gelu_pytorch_tanh", "gelu", "quick_gelu", "silu"])
        guard deepstackVisualIndexes.count <= depth, deepstackVisualIndexes.allSatisfy({ (0..<depth).contains($0) }),
              Set(deepstackVisualIndexes).count == deepstackVisualIndexes.count else {
            throw c.bad("deepstack_visual_indexes", "\(deepstackVisualIndexes) must be distinct block indices in 0..<depth \(depth)")
        }
    }
}

extension Qwen3VLVisionConfiguration: VisionTowerConfiguration {
    var towerWidth: (key: String, value: Int) { ("hidden_size", hiddenSize) }
}

/// The language model's configuration (`text_config`). Port of `Qwen3VLTextConfig`.
public struct Qwen3VLTextConfiguration: Codable, Sendable, Equatable {
    public var vocabSize: Int = 151936
    public var hiddenSize: Int = 4096
    public var intermediateSize: Int = 22016
    public var numHiddenLayers: Int = 32
    public var numAttentionHeads: Int = 32
    public var numKeyValueHeads: Int = 32
    /// Per-head width; independent of hidden_size / num_attention_heads in Qwen3.
    public var headDim: Int = 128
    public var hiddenAct: String = "silu"
    public var maxPositionEmbeddings: Int = 128000
    public var rmsNormEps: Double = 1e-6
    public var ropeTheta: Double = 5_000_000
    public var ropeType: String = "default"
    /// Frequencies per axis (t, h, w); interleaved over the half head (`apply_interleaved_mrope`).
    public var mropeSection: [Int] = [24, 20, 20]
    /// Recorded only: transformers applies the interleaved layout whatever this says.
    public var mropeInterleaved: Bool?
    public var attentionBias: Bool = false
    public var tieWordEmbeddings: Bool?
    public var bosTokenId: Int?
    public var eosTokenId: TokenIDs?

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", hiddenAct = "hidden_act"
        case maxPositionEmbeddings = "max_position_embeddings", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case mropeSection = "mrope_section", mropeInterleaved = "mrope_interleaved", attentionBias = "attention_bias"
        case tieWordEmbeddings = "tie_word_embeddings", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.int(.vocabSize) ?? vocabSize
        hiddenSize = try c.int(.hiddenSize) ?? hiddenSize
        intermediateSize = try c.int(.intermediateSize) ?? intermediateSize
        numHiddenLayers = try c.int(.numHiddenLayers) ?? numHiddenLayers
        numAttentionHeads = try c.int(.numAttentionHeads) ?? numAttentionHeads
        // None means "as many as the attention heads" (Qwen3VLTextConfig.__init__).
        numKeyValueHeads = try c.int(.numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.int(.headDim) ?? headDim
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
        maxPositionEmbeddings = try c.int(.maxPositionEmbeddings) ?? maxPositionEmbeddings
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? rmsNormEps
        let rope = try c.decodeIfPresent(Qwen3VLRopeParameters.self, forKey: .ropeParameters)
        let scaling = try c.decodeIfPresent(Qwen3VLRopeParameters.self, forKey: .ropeScaling)
        ropeTheta = try rope?.ropeTheta ?? c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        ropeType = rope?.ropeType ?? rope?.type ?? scaling?.ropeType ?? scaling?.type ?? ropeType
        mropeSection = try rope?.mropeSection ?? scaling?.mropeSection
            ?? c.decodeIfPresent([Int].self, forKey: .mropeSection) ?? mropeSection
        mropeInterleaved = try rope?.mropeInterleaved ?? scaling?.mropeInterleaved
            ?? c.decodeIfPresent(Bool.self, forKey: .mropeInterleaved)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? attentionBias
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
        try c.encode(headDim, forKey: .headDim)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(Qwen3VLRopeParameters(ropeTheta: ropeTheta, ropeType: ropeType, mropeSection: mropeSection,
                                           mropeInterleaved: mropeInterleaved), forKey: .ropeParameters)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encodeIfPresent(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
    }

    /// Every number against a sane range (`ConfigBounds`), before anything is sized by it.
    func validate(path: String) throws {
        let c = ConfigChecker(path: path, prefix: "text_config.")
        try c.decoderSizes(self, headDimKey: true)
        guard headDim % 2 == 0 else { throw c.bad("head_dim", "must be even for rotary, got \(headDim)") }
        let (width, overflow) = numAttentionHeads.multipliedReportingOverflow(by: headDim)
        guard !overflow, width <= ConfigBounds.width.upperBound else {
            throw c.bad("head_dim", "num_attention_heads × head_dim = \(numAttentionHeads) × \(headDim) is too wide")
        }
        try c.attentionGroupsAndSections(self, mropeKey: "rope_parameters.mrope_section")
        try c.oneOf("rope_parameters.rope_type", ropeType, ["default"])
        try c.decoderNumbers(self)
        guard !attentionBias else { throw c.bad("attention_bias", "true is not supported (Qwen3-VL has no attention biases)") }
        try c.bosAndEos(bosTokenId, eosTokenId, vocabSize: vocabSize)
    }
}

extension Qwen3VLTextConfiguration: DecoderConfiguration {}

/// config.json of a Qwen3-VL checkpoint. Port of `Qwen3VLConfig`.
public struct Qwen3VLConfiguration: Codable, Sendable, Equatable {
    public var modelType: String = "qwen3_vl"
    public var text: Qwen3VLTextConfiguration = Qwen3VLTextConfiguration()
    public var vision: Qwen3VLVisionConfiguration = Qwen3VLVisionConfiguration()
    public var imageTokenId: Int = 151655
    public var videoTokenId: Int = 151656
    public var visionStartTokenId: Int = 151652
    public var visionEndTokenId: Int = 151653
    /// The top-level flag, else text_config's, else false.
    public var tieWordEmbeddings: Bool = false

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", text = "text_config", vision = "vision_config"
        case imageTokenId = "image_token_id", videoTokenId = "video_token_id"
        case visionStartTokenId = "vision_start_token_id", visionEndTokenId = "vision_end_token_id"
        case tieWordEmbeddings = "tie_word_embeddings"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? modelType
        text = try c.decodeIfPresent(Qwen3VLTextConfiguration.self, forKey: .text) ?? text
        vision = try c.decodeIfPresent(Qwen3VLVisionConfiguration.self, forKey: .vision) ?? vision
        imageTokenId = try c.int(.imageTokenId) ?? imageTokenId
        videoTokenId = try c.int(.videoTokenId) ?? videoTokenId
        visionStartTokenId = try c.int(.visionStartTokenId) ?? visionStartTokenId
        visionEndTokenId = try c.int(.visionEndTokenId) ?? visionEndTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? text.tieWordEmbeddings ?? false
    }

    /// Both halves in range, the vision output as wide as the language model, special ids in the vocabulary.
    func validate(path: String) throws {
        try vision.validate(path: path)
        try text.validate(path: path)
        let c = ConfigChecker(path: path)
        try c.sameWidth("vision_config.out_hidden_size", vision.outHiddenSize, "text_config.hidden_size", text.hiddenSize)
        try c.visionTokens(self, vocabSize: text.vocabSize)
    }
}

extension Qwen3VLConfiguration: VisionTokenConfiguration {}

/// Image or video processor settings (`video_processor` / `image_processor` of processor_config.json,
/// or video_preprocessor_config.json / preprocessor_config.json). Defaults are
/// `Qwen3VLVideoProcessor`'s. Port of the settings of video_processing_qwen3_vl.py.
public struct Qwen3VLPreprocessorConfiguration: Codable, Sendable, Equatable {
    public var imageMean: [Double] = [0.5, 0.5, 0.5]
    public var imageStd: [Double] = [0.5, 0.5, 0.5]
    public var rescaleFactor: Double = 1.0 / 255
    public var doRescale: Bool = true
    public var doNormalize: Bool = true
    public var patchSize: Int = 16
    public var temporalPatchSize: Int = 2
    public var mergeSize: Int = 2
    /// `size.shortest_edge`: the fewest pixels of a resized frame stack.
    public var minPixels: Int = 128 * 32 * 32
    /// `size.longest_edge`: the most pixels of a resized frame stack.
    public var maxPixels: Int = 32 * 32 * 768
    /// Frames sampled per second of video.
    public var fps: Double = 2
    public var minFrames: Int = 4
    public var maxFrames: Int = 768

    enum CodingKeys: String, CodingKey {
        case imageMean = "image_mean", imageStd = "image_std", rescaleFactor = "rescale_factor"
        case doRescale = "do_rescale", doNormalize = "do_normalize", patchSize = "patch_size"
        case temporalPatchSize = "temporal_patch_size", mergeSize = "merge_size", size
        case minPixels = "min_pixels", maxPixels = "max_pixels", fps, minFrames = "min_frames", maxFrames = "max_frames"
    }

    /// `size`: transformers requires both edges when it is given (a `size` without them was
    /// taken for the defaults).
    struct Size: Codable {
        var shortestEdge: Int
        var longestEdge: Int
        enum CodingKeys: String, CodingKey { case shortestEdge = "shortest_edge", longestEdge = "longest_edge" }
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
        minPixels = try size?.shortestEdge ?? c.int(.minPixels) ?? minPixels
        maxPixels = try size?.longestEdge ?? c.int(.maxPixels) ?? maxPixels
        fps = try c.decodeIfPresent(Double.self, forKey: .fps) ?? fps
        minFrames = try c.int(.minFrames) ?? minFrames
        maxFrames = try c.int(.maxFrames) ?? maxFrames
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
        try c.encode(Size(shortestEdge: minPixels, longestEdge: maxPixels), forKey: .size)
        try c.encode(fps, forKey: .fps)
        try c.encode(minFrames, forKey: .minFrames)
        try c.encode(maxFrames, forKey: .maxFrames)
    }

    /// The same settings in the shape the shared patch flattening (`Qwen2VLProcessor`) takes.
    public var patching: Qwen2VLPreprocessorConfiguration {
        var p = Qwen2VLPreprocessorConfiguration()
        p.imageMean = imageMean; p.imageStd = imageStd; p.rescaleFactor = rescaleFactor
        p.doRescale = doRescale; p.doNormalize = doNormalize
        p.patchSize = patchSize; p.temporalPatchSize = temporalPatchSize; p.mergeSize = mergeSize
        p.minPixels = minPixels; p.maxPixels = maxPixels
        return p
    }

    /// Every number in range; with `vision`, the patching must be the vision tower's.
    func validate(path: String, vision: Qwen3VLVisionConfiguration? = nil) throws {
        let c = ConfigChecker(path: path)
        try patching.validate(path: path, tower: vision?.patchSizes)
        guard fps.isFinite, fps > 0, fps <= 1000 else { throw c.bad("fps", "must be a number in (0, 1000], got \(fps)") }
        try c.inRange("max_frames", maxFrames, 1...(1 << 20))
        try c.inRange("min_frames", minFrames, 1...maxFrames, note: " (at most max_frames)")
    }
}

/// The configuration files of a Qwen3-VL model directory.
public struct Qwen3VLModelFiles: Sendable {
    public var directory: String
    public var config: Qwen3VLConfiguration
    /// Video processor settings: processor_config.json's `video_processor` (transformers 5),
    /// else video_preprocessor_config.json, else defaults.
    public var video: Qwen3VLPreprocessorConfiguration
    /// Image processor settings: processor_config.json's `image_processor`, else
    /// preprocessor_config.json, else the video settings.
    public var image: Qwen3VLPreprocessorConfiguration
    public var generation: GenerationConfiguration

    public init(directory: String) throws {
        self.directory = directory
        let dir = ModelDirectory(directory: directory)
        let configPath = dir.path("config.json")
        config = try Qwen2VLModelFiles.decode(Qwen3VLConfiguration.self, at: configPath)
        guard config.modelType == "qwen3_vl" else {
            throw VLMError.invalidConfig(path: configPath, key: "model_type", reason: "'\(config.modelType)' is not qwen3_vl")
        }
        try config.validate(path: configPath)

        let nestedPath = dir.path("processor_config.json")
        let nested = try dir.nestedProcessors(Qwen3VLPreprocessorConfiguration.self)
        let videoPath = dir.path("video_preprocessor_config.json"), imagePath = dir.path("preprocessor_config.json")
        let (v, vPath): (Qwen3VLPreprocessorConfiguration, String) = try nested?.video.map { ($0, nestedPath) }
            ?? (dir.exists(videoPath) ? (Qwen2VLModelFiles.decode(Qwen3VLPreprocessorConfiguration.self, at: videoPath), videoPath)
                : (Qwen3VLPreprocessorConfiguration(), videoPath))
        let (i, iPath): (Qwen3VLPreprocessorConfiguration, String) = try nested?.image.map { ($0, nestedPath) }
            ?? (dir.exists(imagePath) ? (Qwen2VLModelFiles.decode(Qwen3VLPreprocessorConfiguration.self, at: imagePath), imagePath) : (v, vPath))
        try v.validate(path: vPath, vision: config.vision)
        try i.validate(path: iPath, vision: config.vision)
        video = v
        image = i
        generation = try dir.generation(vocabSize: config.text.vocabSize)
    }
}
