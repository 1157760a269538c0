import Foundation
import Tensors

/// A vision tower's tensors, read strictly, as every family loads them: under `visual.` or
/// `model.visual.` (found by the patch embedding), every block the config's depth names present
/// (a depth of 10⁹ fails before the table of expected tensors is built), no unknown tensor under
/// the prefix, each tensor of its expected shape; matrices in the compute precision (bf16 ones
/// packed once into oneDNN's blocked layout), vectors in f32.
struct VisionWeights {
    let checkpoint: any WeightStore
    let prefix: String
    let expected: [String: [Int]]
    /// The checkpoint's precision unless `dtype` says otherwise (bf16 weights compute in bf16).
    let computeType: ComputeDType

    init(checkpoint: any WeightStore, configPath: String, depth: Int, prefixes: [String] = ["visual.", "model.visual."],
         dtype: ComputeDType?, expected table: () -> [String: [Int]]) throws {
        self.checkpoint = checkpoint
        guard let prefix = prefixes.first(where: { checkpoint.contains($0 + "patch_embed.proj.weight") }) else {
            throw VLMError.missingWeight(name: (prefixes.first ?? "") + "patch_embed.proj.weight", checkpoint: checkpoint.directory)
        }
        self.prefix = prefix
        let found = layerIndices(in: checkpoint.names, prefix: prefix + "blocks.")
        guard Set(0..<depth).isSubset(of: found) else {
            throw VLMError.invalidConfig(path: configPath, key: "vision_config.depth",
                                         reason: "is \(depth) but the checkpoint has \(describeLayers(found).replacingOccurrences(of: "layer", with: "block")) (\(prefix)blocks.N)")
        }
        let expected = table()
        self.expected = expected
        let unknown = checkpoint.names.filter { $0.hasPrefix(prefix) && expected[String($0.dropFirst(prefix.count))] == nil }
        guard unknown.isEmpty else { throw VLMError.unexpectedWeights(names: unknown, checkpoint: checkpoint.directory) }
        let patch = try checkpoint.tensor(prefix + "patch_embed.proj.weight")
        computeType = dtype ?? (patch.dtype == .bf16 ? .bf16 : .f32)
    }

    func weight(_ name: String) throws -> WeightTensor {
        guard checkpoint.contains(prefix + name), let shape = expected[name] else {
            throw VLMError.missingWeight(name: prefix + name, checkpoint: checkpoint.directory)
        }
        let w = try checkpoint.tensor(prefix + name)
        guard w.shape == shape else { throw VLMError.weightShape(name: prefix + name, expected: shape, got: w.shape) }
        return w
    }

    /// A weight matrix in the compute precision (bf16 and int8: also in oneDNN's blocked layout,
    /// reordered once).
    func matrix(_ name: String) throws -> WeightTensor {
        computeType == .int8 ? try Linear.pack(try Linear.quantize(try weight(name)), rows: 4096) : try plainMatrix(try weight(name))
    }

    /// A weight in f32, or bf16 packed for oneDNN (bf16 and int8 towers): what the patch
    /// embedding is in every tower, since it multiplies pixels and is a small part of the work.
    func plainMatrix(_ w: WeightTensor) throws -> WeightTensor {
        computeType == .f32 ? try w.converted(to: .f32) : try Linear.pack(try w.converted(to: .bf16), rows: 4096)
    }

    func vector(_ name: String) throws -> Tensor { try weight(name).toF32() }

    /// A LayerNorm's weight and bias.
    func norm(_ name: String) throws -> (Tensor, Tensor) { (try vector(name + ".weight"), try vector(name + ".bias")) }
}
