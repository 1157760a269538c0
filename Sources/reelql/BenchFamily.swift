import ArgumentParser
import Foundation
import Tensors
import VLM

/// The model families `bench vision` and `bench generate` measure, each at its smallest released
/// size: the configuration of its Hugging Face config.json, with random weights whose names and
/// shapes come from the loaders' own tables (`expectedShapes`).
enum BenchFamily: String, ExpressibleByArgument, CaseIterable {
    case qwen2_vl, qwen2_5_vl, qwen3_vl

    /// The checkpoint whose configuration this is.
    var title: String {
        switch self {
        case .qwen2_vl: return "Qwen2-VL-2B"
        case .qwen2_5_vl: return "Qwen2.5-VL-3B"
        case .qwen3_vl: return "Qwen3-VL-2B"
        }
    }

    /// vision_config of the released config.json (Qwen/Qwen2-VL-2B-Instruct,
    /// Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen3-VL-2B-Instruct), `depth` blocks kept.
    func visionConfig(depth: Int? = nil) -> [String: Any] {
        let d = depth ?? fullDepth
        switch self {
        case .qwen2_vl:
            return ["depth": d, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4]
        case .qwen2_5_vl:
            return ["depth": d, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "hidden_act": "silu",
                    "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                    "window_size": 112, "tokens_per_second": 2, "in_chans": 3,
                    "fullatt_block_indexes": [7, 15, 23, 31].filter { $0 < d }]
        case .qwen3_vl:
            return ["depth": d, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "hidden_act": "gelu_pytorch_tanh",
                    "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                    "num_position_embeddings": 2304, "in_channels": 3,
                    "deepstack_visual_indexes": [5, 11, 17].filter { $0 < d }]
        }
    }

    /// text_config of the released config.json, `layers` decoder layers kept.
    func textConfig(layers: Int? = nil) -> [String: Any] {
        let l = layers ?? fullLayers
        switch self {
        case .qwen2_vl:
            return ["vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": l,
                    "num_attention_heads": 12, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                    "max_position_embeddings": 32768,
                    "rope_parameters": ["rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]],
                    "bos_token_id": 151643, "eos_token_id": 151645]
        case .qwen2_5_vl:
            return ["vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": l,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                    "max_position_embeddings": 128000,
                    "rope_parameters": ["rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]],
                    "bos_token_id": 151643, "eos_token_id": 151645]
        case .qwen3_vl:
            return ["vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": l,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
                    "hidden_act": "silu", "max_position_embeddings": 262144, "tie_word_embeddings": true,
                    "rope_parameters": ["rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": true],
                    "bos_token_id": 151643, "eos_token_id": 151645]
        }
    }

    /// The whole config.json (embeddings tied, as in all three releases).
    func config(layers: Int? = nil, depth: Int? = nil) -> [String: Any] {
        ["model_type": rawValue, "text_config": textConfig(layers: layers), "vision_config": visionConfig(depth: depth),
         "tie_word_embeddings": true, "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
         "vision_end_token_id": 151653, "torch_dtype": "bfloat16"]
    }

    var fullDepth: Int { self == .qwen3_vl ? 24 : 32 }
    var fullLayers: Int { [.qwen2_vl: 28, .qwen2_5_vl: 36, .qwen3_vl: 28][self]! }
    /// Pixels per patch side.
    var patch: Int { self == .qwen3_vl ? 16 : 14 }
    /// Where the checkpoints the loaders read keep the vision tower and the decoder.
    var visionPrefix: String { self == .qwen3_vl ? "model.visual." : "visual." }
    var textPrefix: String { self == .qwen3_vl ? "model.language_model." : "model." }

    /// The vision tower's tensors (names without prefix) with their shapes: the loader's table.
    func visionShapes(depth: Int? = nil) throws -> [String: [Int]] {
        let data = try JSONSerialization.data(withJSONObject: visionConfig(depth: depth))
        switch self {
        case .qwen2_vl: return Qwen2VLVision.expectedShapes(try JSONDecoder().decode(Qwen2VLVisionConfiguration.self, from: data))
        case .qwen2_5_vl: return Qwen25VLVision.expectedShapes(try JSONDecoder().decode(Qwen25VLVisionConfiguration.self, from: data))
        case .qwen3_vl: return Qwen3VLVision.expectedShapes(try JSONDecoder().decode(Qwen3VLVisionConfiguration.self, from: data))
        }
    }

    /// The decoder's tensors (names without prefix) with their shapes: the loader's table.
    func textShapes(layers: Int? = nil) throws -> [String: [Int]] {
        let data = try JSONSerialization.data(withJSONObject: textConfig(layers: layers))
        switch self {
        case .qwen2_vl, .qwen2_5_vl: return Qwen2VLLanguage.expectedShapes(try JSONDecoder().decode(Qwen2VLTextConfiguration.self, from: data))
        case .qwen3_vl: return Qwen3VLLanguage.expectedShapes(try JSONDecoder().decode(Qwen3VLTextConfiguration.self, from: data))
        }
    }
}

extension BenchFamily {
    /// A random-weight bf16 checkpoint of this family in `directory` (config.json and
    /// model.safetensors, `layers` decoder layers and `depth` vision blocks): written unless the
    /// directory already holds one with the same config.json (config.json is written last, so an
    /// interrupted write is not reused). Returns the path of model.safetensors and, when it was
    /// written now, the seconds that took.
    func randomCheckpoint(directory: String, layers: Int?, depth: Int? = nil) throws -> (path: String, wroteSeconds: Double?) {
        let fm = FileManager.default
        let checkpoint = (directory as NSString).appendingPathComponent("model.safetensors")
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        let configData = try JSONSerialization.data(withJSONObject: config(layers: layers, depth: depth), options: [.sortedKeys])
        if fm.fileExists(atPath: checkpoint) && fm.contents(atPath: configPath) == configData { return (checkpoint, nil) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? fm.removeItem(atPath: configPath)
        try writeRandomCheckpoint(checkpoint, layers: layers, depth: depth)
        try configData.write(to: URL(fileURLWithPath: configPath))
        return (checkpoint, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// The family's tensors (vision tower and language model, tied head), named and shaped by the
    /// loaders' own tables, with random bf16 values.
    func writeRandomCheckpoint(_ path: String, layers: Int?, depth: Int?) throws {
        var decl: [SafetensorsWriter.Declaration] = []
        for (prefix, shapes) in [(visionPrefix, try visionShapes(depth: depth)), (textPrefix, try textShapes(layers: layers))] {
            for (name, shape) in shapes.sorted(by: { $0.key < $1.key }) {
                decl.append(.init(name: prefix + name, dtype: .bf16, shape: shape))
            }
        }
        let writer = try SafetensorsWriter(path: path, tensors: decl)
        var state: UInt64 = 12345
        for d in decl {
            let n = d.shape.reduce(1, *), (scale, offset) = randomInit(d.name, d.shape)
            var bits = [UInt16](repeating: 0, count: n)
            for i in 0..<n {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                let v = offset + scale * Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
                bits[i] = UInt16(truncatingIfNeeded: (v.bitPattern &+ 0x7fff &+ ((v.bitPattern >> 16) & 1)) >> 16)
            }
            try bits.withUnsafeBytes { try writer.write($0) }
        }
        try writer.close()
    }
}

/// How a random tensor is drawn: norm scales around 1, everything else around 0.
func randomInit(_ name: String, _ shape: [Int]) -> (scale: Float, offset: Float) {
    let isNormScale = shape.count == 1 && name.hasSuffix(".weight") && (name.contains("norm") || name.contains("ln_q"))
    return (0.02, isNormScale ? 1 : 0)
}

/// `n` values offset + scale·u, u uniform in [−1, 1] (an LCG seeded by `state`).
func randomValues(_ n: Int, scale: Float, offset: Float, state: inout UInt64) -> [Float] {
    var values = [Float](repeating: 0, count: n)
    for i in 0..<n {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        values[i] = offset + scale * (Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max))
    }
    return values
}
