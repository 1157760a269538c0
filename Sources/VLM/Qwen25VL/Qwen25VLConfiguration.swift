import Foundation

// Qwen2.5-VL configuration files, decoded in Hugging Face's names with the defaults transformers
// uses for absent keys. Both config.json layouts are read: transformers 4.x (text fields at the
// top level, `rope_scaling.mrope_section`, `in_chans`) and 5.x (`text_config`, `rope_parameters`,
// `in_channels`). Port of transformers' configuration_qwen2_5_vl.py (`Qwen2_5_VLVisionConfig`,
// `Qwen2_5_VLConfig`). The language model is Qwen2-VL's (same decoder, same keys and defaults), so
// its configuration is `Qwen2VLTextConfiguration`.

/// The vision tower's configuration (`vision_config`).
public struct Qwen25VLVisionConfiguration: Codable, Sendable, Equatable {
    public var depth: Int = 32
    /// The tower's width (Qwen2-VL calls it embed_dim).
    public var hiddenSize: Int = 3584
    public var hiddenAct: String = "silu"
    /// Width of each block's gated MLP.
    public var intermediateSize: Int = 3420
    public var numHeads: Int = 16
    public var inChannels: Int = 3
    public var patchSize: Int = 14
    public var spatialMergeSize: Int = 2
    public var temporalPatchSize: Int = 2
    /// Temporal rotary positions per second of video (get_rope_index).
    public var tokensPerSecond: Int = 4
    /// Side of an attention window, in pixels (window_size / merge / patch merged cells).
    public var windowSize: Int = 112
    /// Width of the merger's output: the language model's hidden size.
    public var outHiddenSize: Int = 3584
    /// Blocks that attend over the whole frame; the others attend within windows.
    public var fullattBlockIndexes: [Int] = [7, 15, 23, 31]
    /// 2D rotary base (transformers 5 `rope_parameters.rope_theta`; 4.x fixes it at 10000).
    public var ropeTheta: Double = 10000

    public var headDim: Int { hiddenSize / numHeads }
    /// Values per patch: channels × temporal × patch × patch (1176 for Qwen2.5-VL).
    public var patchDim: Int { inChannels * temporalPatchSize * patchSize * patchSize }
    /// Side of an attention window in merged cells (`vit_merger_window_size`).
    public var mergedWindow: Int { windowSize / spatialMergeSize / patchSize }

    enum CodingKeys: String, CodingKey {
        case depth, hiddenSize = "hidden_size", hiddenAct = "hidden_act", intermediateSize = "intermediate_size"
        case numHeads = "num_heads", inChannels = "in_channels", inChans = "in_chans", patchSize = "patch_size"
        case spatialMergeSize = "spatial_merge_size", temporalPatchSize = "temporal_patch_size"
        case tokensPerSecond = "tokens_per_second", windowSize = "window_size", outHiddenSize = "out_hidden_size"
        case fullattBlockIndexes = "fullatt_block_indexes", ropeParameters = "rope_parameters", ropeTheta = "rope_theta"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        depth = try c.int(.depth) ?? depth
        hiddenSize = try c.int(.hiddenSize) ?? hiddenSize
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
        intermediateSize = try c.int(.intermediateSize) ?? intermediateSize
        numHeads = try c.int(.numHeads) ?? numHeads
        inChannels = try c.int(.inChannels) ?? c.int(.inChans) ?? inChannels
        patchSize = try c.int(.patchSize) ?? patchSize
        spatialMergeSize = try c.int(.spatialMergeSize) ?? spatialMergeSize
        temporalPatchSize = try c.int(.temporalPatchSize) ?? temporalPatchSize
        tokensPerSecond = try c.int(.tokensPerSecond) ?? tokensPerSecond
        windowSize = try c.int(.windowSize) ?? windowSize
        outHiddenSize = try c.int(.outHiddenSize) ?? outHiddenSize
        if c.contains(.fullattBlockIndexes) {
            // Each element through `int` so that a fraction names its index.
            var list = try c.nestedUnkeyedContainer(forKey: .fullattBlockIndexes)
            var out: [Int] = []
            while !list.isAtEnd {
                let path = list.codingPath + [IndexKey(intValue: list.currentIndex)]
                let d: Double
                do { d = try list.decode(Double.self) } catch DecodingError.typeMismatch(_, let context) {
                    throw DecodingError.typeMismatch(Int.self, context)
                }
                guard d.rounded() == d, abs(d) < 9.0e15 else {
                    throw DecodingError.typeMismatch(Int.self, DecodingError.Context(codingPath: path, debugDescription: "\(d) is not an integer"))
                }
                out.append(Int(d))
            }
            fullattBlockIndexes = out
        }
        if let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters), let theta = rope.ropeTheta {
            ropeTheta = theta
        } else {
            ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        }
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
        try c.encode(tokensPerSecond, forKey: .tokensPerSecond)
        try c.encode(windowSize, forKey: .windowSize)
        try c.encode(outHiddenSize, forKey: .outHiddenSize)
        try c.encode(fullattBlockIndexes, forKey: .fullattBlockIndexes)
        try c.encode(ropeTheta, forKey: .ropeTheta)
    }

    /// Every number against a sane range, before anything is sized by it (`ConfigBounds`).
    func validate(path: String) throws {
        let c = ConfigChecker(path: path, prefix: "vision_config."), b = ConfigBounds.self
        try c.visionTower(self, widths: [("intermediate_size", intermediateSize, b.intermediate), ("out_hidden_size", outHiddenSize, b.width)],
                          more: [("window_size", windowSize, Self.windowPixels), ("tokens_per_second", tokensPerSecond, Self.tokensRate)])
        guard mergedWindow >= 1 else {
            throw c.bad("window_size", "\(windowSize) px is smaller than one merged cell (\(spatialMergeSize) × \(patchSize) px)")
        }
        for i in fullattBlockIndexes where !(0..<depth).contains(i) {
            throw c.bad("fullatt_block_indexes", "\(i) is not a block index 0..<\(depth)")
        }
        try c.visionRotaryAndActivation(self, activations: ["silu", "gelu", "gelu_pytorch_tanh", "quick_gelu"])
    }

    /// window_size in pixels: at most a 2²⁰-pixel side.
    static let windowPixels = 1...(1 << 20)
    /// tokens_per_second: temporal positions per second (released models use 2; 0 collapses time).
    static let tokensRate = 0...(1 << 16)
}

extension Qwen25VLVisionConfiguration: VisionTowerConfiguration {
    var towerWidth: (key: String, value: Int) { ("hidden_size", hiddenSize) }
}

/// An array position in a coding path (names the element of a list in errors).
struct IndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { "\(intValue ?? 0)" }
    init(intValue: Int) { self.intValue = intValue }
    init?(stringValue: String) { nil }
}

/// config.json of a Qwen2.5-VL checkpoint.
public struct Qwen25VLConfiguration: Codable, Sendable, Equatable {
    public var modelType: String = "qwen2_5_vl"
    public var text: Qwen2VLTextConfiguration
    public var vision: Qwen25VLVisionConfiguration
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
        vision = try c.decodeIfPresent(Qwen25VLVisionConfiguration.self, forKey: .vision) ?? Qwen25VLVisionConfiguration()
        imageTokenId = try c.int(.imageTokenId) ?? imageTokenId
        videoTokenId = try c.int(.videoTokenId) ?? videoTokenId
        visionStartTokenId = try c.int(.visionStartTokenId) ?? visionStartTokenId
        visionEndTokenId = try c.int(.visionEndTokenId) ?? visionEndTokenId
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? text.tieWordEmbeddings ?? false
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype) ?? c.decodeIfPresent(String.self, forKey: .dtype)
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

    /// The text and vision fields, the special token ids against the vocabulary, and the widths
    /// the two towers share.
    func validate(path: String, textPrefix: String = "text_config.") throws {
        try vision.validate(path: path)
        try text.validate(path: path, prefix: textPrefix)
        let c = ConfigChecker(path: path)
        try c.visionTokens(self, vocabSize: text.vocabSize)
        try c.sameWidth("vision_config.out_hidden_size", vision.outHiddenSize, "the language model's hidden_size", text.hiddenSize)
    }
}

extension Qwen25VLConfiguration: Qwen2LayoutConfiguration, VisionTokenConfiguration {}

/// The configuration files of a Qwen2.5-VL model directory: config.json, the processor settings
/// (as Qwen2-VL keeps them: processor_config.json's nested video and image processors, else
/// video_preprocessor_config.json / preprocessor_config.json; Qwen2.5-VL uses Qwen2-VL's
/// processors unchanged) and generation_config.json.
public struct Qwen25VLModelFiles: Sendable {
    public var directory: String
    public var config: Qwen25VLConfiguration
    /// The video processor's settings.
    public var preprocessor: Qwen2VLPreprocessorConfiguration
    /// The image processor's settings.
    public var imagePreprocessor: Qwen2VLPreprocessorConfiguration
    public var processorFiles: [String]
    public var generation: GenerationConfiguration

    public init(directory: String) throws {
        self.directory = directory
        (config, preprocessor, imagePreprocessor, processorFiles, generation) = try Qwen2VLModelFiles.load(
            Qwen25VLConfiguration.self, directory: directory, modelTypes: Qwen25VLFamily.modelTypes)
    }
}
