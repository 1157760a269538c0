import ArgumentParser
import CKernels
import Foundation
import Tensors
import VLM

/// `reelql bench generate`: a random-weight model with a family's smallest configuration
/// (Qwen2-VL-2B by default), written to a temporary bf16 safetensors checkpoint and loaded like a
/// real one: language-model prefill of a 1,024-token video prompt, decoding, and peak memory.
struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prefill and decode speed of a Qwen2-VL-2B-sized model (random bf16 weights), against the bf16 GEMM peak and the memory bandwidth.",
        discussion: """
        --family picks the configuration: qwen2_vl (Qwen2-VL-2B, ~4.4 GB checkpoint), qwen2_5_vl (Qwen2.5-VL-3B, \
        ~7.5 GB), qwen3_vl (Qwen3-VL-2B, ~4.3 GB). Writes the checkpoint to --directory (deleted afterwards \
        unless --keep). The shared-prefix comparison (--questions) runs for qwen2_vl only. Run a release build.
        """)

    @Option(help: "Model family: qwen2_vl, qwen2_5_vl or qwen3_vl.")
    var family: BenchFamily = .qwen2_vl
    @Option(help: "Where to write the temporary checkpoint (default: a reelql-bench-… folder in the temporary directory).")
    var directory: String?
    @Flag(help: "Keep the checkpoint (and reuse it next time).")
    var keep = false
    @Option(parsing: .unconditional, help: "Tokens to decode.")
    var tokens: Int = 32
    @Option(parsing: .unconditional, help: "Language-model layers (the family's: 28, 36 for qwen2_5_vl; fewer for a quick look).")
    var layers: Int?
    @Option(parsing: .unconditional, help: "Questions about one clip for the shared-prefix comparison (0 to skip; qwen2_vl only).")
    var questions: Int = 5
    @Option(help: "Sequences for the batched-decoding measurement (comma-separated; 0 to skip).")
    var batch: String = "2,4,8"
    @Option(help: "Compute precision of the language model: bf16 (the checkpoint's) or int8.")
    var dtype: ComputeDType = .bf16

    func validate() throws {
        try requireOption("--tokens", tokens, (1...8192).contains(tokens), "between 1 and 8192")
        if let layers {
            try requireOption("--layers", layers, (1...family.fullLayers).contains(layers), "between 1 and \(family.fullLayers)")
        }
        try requireOption("--questions", questions, (0...64).contains(questions), "between 0 and 64")
        try requireOption("--batch", batch, batchSizes != nil, "a comma-separated list of sizes from 0 to \(GenerationParameters.batchRange.upperBound)")
    }

    /// The --batch sizes (0 and empty: none); nil when malformed.
    var batchSizes: [Int]? {
        let sizes = batch.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard sizes.allSatisfy({ $0.map { (0...GenerationParameters.batchRange.upperBound).contains($0) } ?? false }) else { return nil }
        return sizes.compactMap { $0 }.filter { $0 > 0 }
    }

    /// The language model as the bench drives it, whatever the family.
    struct Decoder {
        var embed: ([Int]) throws -> Tensor
        /// Prefill of the benchmark prompt (Qwen3-VL: with DeepStack features at the video rows).
        var prefill: (Tensor, Tensor, Tensor, KVCache) throws -> Tensor
        var forward: (Tensor, Tensor, Tensor, KVCache) throws -> Tensor
        /// One decoding step of several sequences (one row per cache), rows as if alone.
        var step: (Tensor, Tensor, Tensor, CacheSegments) throws -> Tensor
        var logits: (Tensor) throws -> Tensor
        /// cos/sin of M-RoPE positions [3][T] (Qwen3-VL: interleaved).
        var cosSin: ([[Int]]) throws -> (Tensor, Tensor)
        var layers, hidden, heads, kvHeads, headDim, intermediate, vocab: Int
        var dtype: ComputeDType
    }

    func run() throws {
        let directory = self.directory ?? FileManager.default.temporaryDirectory
            .appendingPathComponent(family == .qwen2_vl ? "reelql-bench-2b" : "reelql-bench-\(family.rawValue)").path
        let (checkpoint, wrote) = try family.randomCheckpoint(directory: directory, layers: layers)
        if let wrote { print(String(format: "wrote %@ in %.1f s", checkpoint, wrote)) }
        let fm = FileManager.default
        defer { if !keep { try? fm.removeItem(atPath: directory) } }
        let checkpointBytes = (try fm.attributesOfItem(atPath: checkpoint)[.size] as? NSNumber)?.doubleValue ?? 0
        // The memory probe's buffer, then a fresh peak-memory count: what follows is the model's.
        let probe = try Tensor(zeros: [64 << 20]) // 256 MB: eight times the last-level cache
        for i in stride(from: 0, to: probe.count, by: 1024) { probe.pointer[i] = 1 }
        let baseline = processStatus("VmRSS")
        resetPeakResident()

        // A 1,024-token video prompt: 12 text tokens, a 2×40×50 patch grid (1,000 video tokens), 12 text tokens.
        let grid = VisionGrid(t: 2, h: 40, w: 50)
        let ids = Array(repeating: 100, count: 11) + [151652] + Array(repeating: 151656, count: grid.patches / 4) + [151653]
            + Array(repeating: 200, count: 11)
        let (positions, delta) = try Qwen2VLRoPE.positions(ids: ids, visionTokens: [151656], grids: [grid], merge: 2)
        var qwen2: Qwen2VLModel? = nil
        let lm: Decoder
        switch family {
        case .qwen2_vl, .qwen2_5_vl:
            let language: Qwen2VLLanguage
            if family == .qwen2_vl {
                let model = try Qwen2VLModel(directory: directory, dtype: dtype)
                qwen2 = model
                language = model.language
            } else {
                language = try Qwen25VLModel(directory: directory, dtype: dtype).language
            }
            let c = language.config
            lm = Decoder(embed: { try language.embed($0) }, prefill: { try language.forward($0, cos: $1, sin: $2, cache: $3) },
                         forward: { try language.forward($0, cos: $1, sin: $2, cache: $3) },
                         step: { try language.forward($0, cos: $1, sin: $2, segments: $3) }, logits: { try language.logits($0, rowwise: true) },
                         cosSin: { try Qwen2VLRoPE.cosSin(positions: $0, theta: c.ropeTheta, headDim: c.headDim, section: c.mropeSection) },
                         layers: c.numHiddenLayers, hidden: c.hiddenSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                         headDim: c.headDim, intermediate: c.intermediateSize, vocab: c.vocabSize, dtype: language.dtype)
        case .qwen3_vl:
            let model = try Qwen3VLModel(directory: directory, dtype: dtype)
            let language = model.language, c = language.config
            // DeepStack: one feature per tapped vision block, added at the 1,000 video rows.
            let rows = ids.indices.filter { ids[$0] == 151656 }
            let features = try model.config.vision.deepstackVisualIndexes.indices.map { k -> Tensor in
                let f = try Tensor(uninitialized: [rows.count, c.hiddenSize], what: "DeepStack feature")
                for i in 0..<f.count { f.pointer[i] = Float((i * 31 + k) % 201) / 10_000 - 0.01 }
                return f
            }
            let deepstack = Qwen3VLDeepStack(rows: rows, features: features)
            lm = Decoder(embed: { try language.embed($0) },
                         prefill: { try language.forward($0, cos: $1, sin: $2, cache: $3, deepstack: deepstack) },
                         forward: { try language.forward($0, cos: $1, sin: $2, cache: $3) },
                         step: { try language.forward($0, cos: $1, sin: $2, segments: $3) }, logits: { try language.logits($0, rowwise: true) },
                         cosSin: { try Qwen3VLRoPE.cosSin(positions: $0, theta: c.ropeTheta, headDim: c.headDim, section: c.mropeSection) },
                         layers: c.numHiddenLayers, hidden: c.hiddenSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                         headDim: c.headDim, intermediate: c.intermediateSize, vocab: c.vocabSize, dtype: language.dtype)
        }
        print(String(format: "model: %@, %d layers × %d hidden, vocab %d, %@; checkpoint %.2f GB", family.title, lm.layers, lm.hidden, lm.vocab,
                     lm.dtype.rawValue, checkpointBytes / 1e9))

        let (cos, sin) = try lm.cosSin(positions)
        let embeddings = try lm.embed(ids)
        let peak = try gemmPeak(rows: ids.count, k: lm.hidden, n: lm.intermediate)

        let qWidth = lm.heads * lm.headDim, kvWidth = lm.kvHeads * lm.headDim
        var cache = try KVCache(layers: lm.layers, capacity: ids.count + tokens, width: kvWidth)
        _ = try lm.prefill(embeddings.copy(), cos, sin, cache) // warm-up: primitives, page faults
        cache = try KVCache(layers: lm.layers, capacity: ids.count + tokens, width: kvWidth)
        let prefillTime = try medianTime(runs: 1) { _ = try lm.prefill(embeddings.copy(), cos, sin, cache) }
        let matrixParams = Double(lm.layers) * Double(2 * lm.hidden * qWidth + 2 * lm.hidden * kvWidth + 3 * lm.hidden * lm.intermediate)
        let t = Double(ids.count), attention = Double(lm.layers) * 4 * t * t / 2 * Double(qWidth)
        let prefillFlop = 2 * matrixParams * t + attention
        let prefillRate = prefillFlop / prefillTime / 1e9
        print(String(format: "prefill: %d tokens in %.2f s = %.0f tokens/s, %.0f GFLOP/s = %.2f of the bf16 GEMM peak (%.0f GFLOP/s; target ≥ 0.80)",
                     ids.count, prefillTime, t / prefillTime, prefillRate, prefillRate / peak, peak))

        let prefilled = try cache.fork(extra: 0)

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
                let (cs, sn) = try lm.cosSin([[position], [position], [position]])
                decodeTime += try medianTime(runs: 1) {
                    let h = try lm.forward(try lm.embed([next]), cs, sn, cache)
                    let logits = try lm.logits(h)
                    var best = 0
                    for i in 0..<logits.count where logits.pointer[i] > logits.pointer[best] { best = i }
                    next = best
                }
                decoded += 1
            }
        }
        let bandwidth = Double(probe.count * 4) * Double(probes) / probeTime / 1e9
        // The matrices and the (tied) head: 2 bytes a weight in bf16, 1 in int8 (+ its row scales).
        let bytesPerToken = (matrixParams + Double(lm.vocab * lm.hidden)) * (lm.dtype == .int8 ? 1 : lm.dtype == .f32 ? 4 : 2)
        let rate = Double(decoded) / decodeTime
        let bound = bandwidth * 1e9 / bytesPerToken
        print(String(format: "decode: %d tokens, %.2f tokens/s; %.2f GB read per token; memory probe %.1f GB/s → bound %.2f tokens/s; %.2f of the bound (target ≥ 0.80)",
                     decoded, rate, bytesPerToken / 1e9, bandwidth, bound, rate / bound))
        // Batched decoding: B sequences after the same prompt, one pass over the weights per step.
        for b in batchSizes ?? [] {
            let steps = max(4, tokens / 2)
            let caches = try (0..<b).map { _ in try prefilled.fork(extra: steps) }
            var next = Array(repeating: 1000, count: b)
            var time = 0.0
            for _ in 0..<steps {
                let position = caches[0].count + delta
                let (cs, sn) = try lm.cosSin([Array(repeating: position, count: b), Array(repeating: position, count: b),
                                              Array(repeating: position, count: b)])
                time += try medianTime(runs: 1) {
                    let h = try lm.step(try lm.embed(next), cs, sn, CacheSegments(oneRowEach: caches))
                    let logits = try lm.logits(h)
                    for r in 0..<b {
                        let row = logits.pointer + r * lm.vocab
                        var best = 0
                        for i in 0..<lm.vocab where row[i] > row[best] { best = i }
                        next[r] = best
                    }
                }
            }
            let aggregate = Double(b * steps) / time
            print(String(format: "batched decode: %d sequences × %d steps, %.1f tokens/s aggregate = %.2f× one sequence; %.2f s per step; KV caches %.2f GB",
                         b, steps, aggregate, aggregate / rate, time / Double(steps), Double(KVCache.bytes(of: caches)) / 1e9))
        }
        if questions > 0, let model = qwen2 { try sharedPrefix(model) }
        let modelPeak = processStatus("VmHWM") - baseline
        print(String(format: "peak resident memory of the model: %.2f GB = %.2f× the bf16 checkpoint (target ≤ 1.5; process peak %.2f GB incl. the %.2f GB probe and runtime)",
                     modelPeak / 1e9, modelPeak / checkpointBytes, processStatus("VmHWM") / 1e9, baseline / 1e9))
    }

    /// Answers `questions` questions about one clip (4 frames at 336×336, 288 video tokens, 16
    /// tokens per answer): from one session (one encoding, one prefix prefill, forked caches)
    /// against a fresh full run per question.
    func sharedPrefix(_ model: Qwen2VLModel) throws {
        let grid = VisionGrid(t: 2, h: 24, w: 24)
        let pixels = try Tensor(uninitialized: [grid.patches, 1176])
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

    func gemmPeak(rows: Int, k: Int, n: Int) throws -> Double {
        let x = try Tensor(uninitialized: [rows, k])
        for i in 0..<x.count { x.pointer[i] = Float(i % 97) / 97 - 0.5 }
        var state: UInt64 = 7
        let w = randomValues(n * k, scale: 0.02, offset: 0, state: &state)
        let plain = WeightTensor(name: "peak", dtype: .bf16, shape: [n, k], data: Convert.bf16(w).withUnsafeBytes { Data($0) })
        let y = try Tensor(uninitialized: [rows, n])
        // The best of the plain bf16 weight (as the decoder holds it) and oneDNN's packed layout.
        var best = 0.0
        for weight in [plain, try Linear.pack(plain, rows: rows)] {
            try Linear.forward(x, weight, into: y, rows: rows)
            let t = try medianTime(runs: 3) { try Linear.forward(x, weight, into: y, rows: rows) }
            best = max(best, 2.0 * Double(rows * k * n) / t / 1e9)
        }
        return best
    }
}
