import ArgumentParser
import CKernels
import Foundation
import Tensors
import VLM

/// `reelql bench generate`: a random-weight model with Qwen2-VL-2B's configuration, written to a
/// temporary bf16 safetensors checkpoint and loaded like a real one: language-model prefill of a
/// 1,024-token video prompt, decoding, and peak memory.
struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prefill and decode speed of a Qwen2-VL-2B-sized model (random bf16 weights), against the bf16 GEMM peak and the memory bandwidth.",
        discussion: "Writes a ~4.4 GB checkpoint to --directory (deleted afterwards unless --keep). Run a release build.")

    @Option(help: "Where to write the temporary checkpoint.")
    var directory: String = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-bench-2b").path
    @Flag(help: "Keep the checkpoint (and reuse it next time).")
    var keep = false
    @Option(help: "Tokens to decode.")
    var tokens: Int = 32
    @Option(help: "Language-model layers (28 for Qwen2-VL-2B; fewer for a quick look).")
    var layers: Int = 28
    @Option(help: "Questions about one clip for the shared-prefix comparison (0 to skip).")
    var questions: Int = 5

    func validate() throws {
        try requireOption("--tokens", tokens, (1...8192).contains(tokens), "between 1 and 8192")
        try requireOption("--layers", layers, (1...28).contains(layers), "between 1 and 28")
        try requireOption("--questions", questions, (0...64).contains(questions), "between 0 and 64")
    }

    func run() throws {
        let text: [String: Any] = ["vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": layers,
                                   "num_attention_heads": 12, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                                   "max_position_embeddings": 32768,
                                   "rope_parameters": ["rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]],
                                   "bos_token_id": 151643, "eos_token_id": 151645]
        let vision: [String: Any] = ["depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4]
        let config: [String: Any] = ["model_type": "qwen2_vl", "text_config": text, "vision_config": vision, "tie_word_embeddings": true,
                                     "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                                     "vision_end_token_id": 151653, "torch_dtype": "bfloat16"]
        let fm = FileManager.default
        let checkpoint = (directory as NSString).appendingPathComponent("model.safetensors")
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        let configData = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
        if !(fm.fileExists(atPath: checkpoint) && fm.contents(atPath: configPath) == configData) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try configData.write(to: URL(fileURLWithPath: configPath))
            try writeRandomCheckpoint(checkpoint, layers: layers)
            print(String(format: "wrote %@ in %.1f s", checkpoint, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
        }
        defer { if !keep { try? fm.removeItem(atPath: directory) } }
        let checkpointBytes = (try fm.attributesOfItem(atPath: checkpoint)[.size] as? NSNumber)?.doubleValue ?? 0
        // The memory probe's buffer, then a fresh peak-memory count: what follows is the model's.
        let probe = Tensor(zeros: [64 << 20]) // 256 MB: eight times the last-level cache
        for i in stride(from: 0, to: probe.count, by: 1024) { probe.pointer[i] = 1 }
        let baseline = residentNow()
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)

        let model = try Qwen2VLModel(directory: directory)
        let lm = model.language
        let c = model.config.text
        print(String(format: "model: %d layers × %d hidden, vocab %d, %@; checkpoint %.2f GB", c.numHiddenLayers, c.hiddenSize, c.vocabSize,
                     lm.dtype.rawValue, checkpointBytes / 1e9))

        // A 1,024-token video prompt: 12 text tokens, a 2×40×50 patch grid (1,000 video tokens), 12 text tokens.
        let grid = VisionGrid(t: 2, h: 40, w: 50)
        let ids = Array(repeating: 100, count: 11) + [151652] + Array(repeating: 151656, count: grid.patches / 4) + [151653]
            + Array(repeating: 200, count: 11)
        let (positions, delta) = try Qwen2VLRoPE.positions(ids: ids, visionTokens: [151656], grids: [grid], merge: 2)
        let (cos, sin) = Qwen2VLRoPE.cosSin(positions: positions, theta: c.ropeTheta, headDim: c.headDim, section: c.mropeSection)
        let embeddings = try lm.embed(ids)
        let peak = try gemmPeak(rows: ids.count)

        let kvWidth = c.numKeyValueHeads * c.headDim
        var cache = try KVCache(checkedLayers: c.numHiddenLayers, capacity: ids.count + tokens, width: kvWidth)
        _ = try lm.forward(embeddings.copy(), cos: cos, sin: sin, cache: cache) // warm-up: primitives, page faults
        cache = try KVCache(checkedLayers: c.numHiddenLayers, capacity: ids.count + tokens, width: kvWidth)
        let prefillTime = try medianTime(runs: 1) { _ = try lm.forward(embeddings.copy(), cos: cos, sin: sin, cache: cache) }
        let matrixParams = Double(c.numHiddenLayers) * Double(2 * c.hiddenSize * c.hiddenSize + 2 * c.hiddenSize * kvWidth
                                                             + 3 * c.hiddenSize * c.intermediateSize)
        let t = Double(ids.count), attention = Double(c.numHiddenLayers) * 4 * t * t / 2 * Double(c.hiddenSize)
        let prefillFlop = 2 * matrixParams * t + attention
        let prefillRate = prefillFlop / prefillTime / 1e9
        print(String(format: "prefill: %d tokens in %.2f s = %.0f tokens/s, %.0f GFLOP/s = %.2f of the bf16 GEMM peak (%.0f GFLOP/s; target ≥ 0.80)",
                     ids.count, prefillTime, t / prefillTime, prefillRate, prefillRate / peak, peak))

        // Decode, with the memory probe interleaved between chunks of tokens.
        var next = 1000
        var decodeTime = 0.0, probeTime = 0.0, decoded = 0, probes = 0
        while decoded < tokens {
            probeTime += medianTime(runs: 1) {
                ThreadPool.shared.parallelRanges(probe.count, grain: 1 << 20) { r in _ = rq_sum_f32(probe.pointer + r.lowerBound, r.count) }
            }
            probes += 1
            for _ in 0..<min(8, tokens - decoded) {
                let position = cache.count + delta
                let (cs, sn) = Qwen2VLRoPE.cosSin(positions: [[position], [position], [position]], theta: c.ropeTheta,
                                                  headDim: c.headDim, section: c.mropeSection)
                decodeTime += try medianTime(runs: 1) {
                    let h = try lm.forward(try lm.embed([next]), cos: cs, sin: sn, cache: cache)
                    let logits = try lm.logits(h)
                    var best = 0
                    for i in 0..<logits.count where logits.pointer[i] > logits.pointer[best] { best = i }
                    next = best
                }
                decoded += 1
            }
        }
        let bandwidth = Double(probe.count * 4) * Double(probes) / probeTime / 1e9
        let bytesPerToken = (matrixParams + Double(c.vocabSize * c.hiddenSize)) * 2 // bf16 matrices + the (tied) head
        let rate = Double(decoded) / decodeTime
        let bound = bandwidth * 1e9 / bytesPerToken
        print(String(format: "decode: %d tokens, %.2f tokens/s; %.2f GB read per token; memory probe %.1f GB/s → bound %.2f tokens/s; %.2f of the bound (target ≥ 0.80)",
                     decoded, rate, bytesPerToken / 1e9, bandwidth, bound, rate / bound))
        if questions > 0 { try sharedPrefix(model) }
        let modelPeak = status("VmHWM") - baseline
        print(String(format: "peak resident memory of the model: %.2f GB = %.2f× the bf16 checkpoint (target ≤ 1.5; process peak %.2f GB incl. the %.2f GB probe and runtime)",
                     modelPeak / 1e9, modelPeak / checkpointBytes, status("VmHWM") / 1e9, baseline / 1e9))
    }

    /// Answers `questions` questions about one clip (4 frames at 336×336, 288 video tokens, 16
    /// tokens per answer): from one session (one encoding, one prefix prefill, forked caches)
    /// against a fresh full run per question.
    func sharedPrefix(_ model: Qwen2VLModel) throws {
        let grid = VisionGrid(t: 2, h: 24, w: 24)
        let pixels = Tensor(uninitialized: [grid.patches, 1176])
        for i in 0..<pixels.count { pixels.pointer[i] = Float((i * 7919) % 2001) / 1000 - 1 }
        let video = [VisionInput(pixels: pixels, grid: grid)]
        let prefix = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652]
            + Array(repeating: 151656, count: grid.patches / 4) + [151653]
        let asks = (0..<questions).map { q in [3838 + q, 374, 279, 1894, 30, 151645, 198, 151644, 77091, 198] }
        let parameters = GenerationParameters(maxNewTokens: 16)
        var shared: [[Int]] = []
        let sessionTime = try medianTime(runs: 1) {
            let session = try Qwen2VLSession(model: model, prefix: prefix, vision: video)
            shared = try asks.map { try session.generate(continuation: $0, parameters: parameters) }
        }
        var fresh: [[Int]] = []
        let freshTime = try medianTime(runs: 1) {
            fresh = try asks.map { try model.generateGreedy(ids: prefix + $0, vision: video, maxNewTokens: 16) }
        }
        print(String(format: "%d questions about one clip (%d video tokens, 16 tokens each): one session %.2f s, fresh runs %.2f s — %.2f s (%.0f%%) saved; answers %@",
                     questions, grid.patches / 4, sessionTime, freshTime, freshTime - sessionTime, 100 * (freshTime - sessionTime) / freshTime,
                     shared == fresh ? "identical" : "DIFFER"))
    }

    func residentNow() -> Double { status("VmRSS") }

    /// A memory figure of /proc/self/status, in bytes.
    func status(_ key: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }

    func gemmPeak(rows: Int) throws -> Double {
        let x = Tensor(uninitialized: [rows, 1536])
        for i in 0..<x.count { x.pointer[i] = Float(i % 97) / 97 - 0.5 }
        var state: UInt64 = 7
        let w = (0..<(8960 * 1536)).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max) * 0.02
        }
        let weight = WeightTensor(name: "peak", dtype: .bf16, shape: [8960, 1536], data: Convert.bf16(w).withUnsafeBytes { Data($0) })
        let y = Tensor(uninitialized: [rows, 8960])
        try Linear.forward(x, weight, into: y, rows: rows)
        let t = try medianTime(runs: 3) { try Linear.forward(x, weight, into: y, rows: rows) }
        return 2.0 * Double(rows * 1536 * 8960) / t / 1e9
    }

    /// Qwen2-VL-2B's tensors (vision tower and language model, tied head) with random bf16 values.
    func writeRandomCheckpoint(_ path: String, layers: Int) throws {
        var decl: [SafetensorsWriter.Declaration] = []
        var initial: [String: (scale: Float, offset: Float)] = [:]
        func add(_ name: String, _ shape: [Int], scale: Float = 0.02, offset: Float = 0) {
            decl.append(.init(name: name, dtype: .bf16, shape: shape))
            initial[name] = (scale, offset)
        }
        let e = 1280, mlp = 5120, h = 1536, inter = 8960, kv = 256
        add("visual.patch_embed.proj.weight", [e, 3, 2, 14, 14])
        for i in 0..<32 {
            let b = "visual.blocks.\(i)."
            add(b + "norm1.weight", [e], offset: 1); add(b + "norm1.bias", [e])
            add(b + "norm2.weight", [e], offset: 1); add(b + "norm2.bias", [e])
            add(b + "attn.qkv.weight", [3 * e, e]); add(b + "attn.qkv.bias", [3 * e])
            add(b + "attn.proj.weight", [e, e]); add(b + "attn.proj.bias", [e])
            add(b + "mlp.fc1.weight", [mlp, e]); add(b + "mlp.fc1.bias", [mlp])
            add(b + "mlp.fc2.weight", [e, mlp]); add(b + "mlp.fc2.bias", [e])
        }
        add("visual.merger.ln_q.weight", [e], offset: 1); add("visual.merger.ln_q.bias", [e])
        add("visual.merger.mlp.0.weight", [4 * e, 4 * e]); add("visual.merger.mlp.0.bias", [4 * e])
        add("visual.merger.mlp.2.weight", [h, 4 * e]); add("visual.merger.mlp.2.bias", [h])
        add("model.embed_tokens.weight", [151936, h])
        for i in 0..<layers {
            let p = "model.layers.\(i)."
            add(p + "input_layernorm.weight", [h], offset: 1); add(p + "post_attention_layernorm.weight", [h], offset: 1)
            add(p + "self_attn.q_proj.weight", [h, h]); add(p + "self_attn.q_proj.bias", [h])
            add(p + "self_attn.k_proj.weight", [kv, h]); add(p + "self_attn.k_proj.bias", [kv])
            add(p + "self_attn.v_proj.weight", [kv, h]); add(p + "self_attn.v_proj.bias", [kv])
            add(p + "self_attn.o_proj.weight", [h, h])
            add(p + "mlp.gate_proj.weight", [inter, h]); add(p + "mlp.up_proj.weight", [inter, h]); add(p + "mlp.down_proj.weight", [h, inter])
        }
        add("model.norm.weight", [h], offset: 1)
        let writer = try SafetensorsWriter(path: path, tensors: decl)
        var state: UInt64 = 12345
        for d in decl {
            let n = d.shape.reduce(1, *), (scale, offset) = initial[d.name]!
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
