import Foundation
import Testing
import Tensors
@testable import VLM

/// Checkpoints whose configuration or weights are hostile: each is a thrown VLMError naming the
/// file, key and value, found before anything is sized by the bad number.
@Suite struct HostileConfigTests {
    /// A copy of a fixture checkpoint in a temporary directory.
    final class Copy {
        let path: String
        init(_ name: String = "tiny-qwen2vl-a") throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("hostile-\(UUID().uuidString)").path
            try FileManager.default.copyItem(atPath: VisionFixtures.model(name), toPath: path)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        /// Applies `edit` to the JSON file `file`.
        func editJSON(_ file: String, _ edit: (inout [String: Any]) -> Void) throws {
            let url = URL(fileURLWithPath: path).appendingPathComponent(file)
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: url)
        }

        func editConfig(_ section: String?, _ key: String, _ value: Any) throws {
            try editJSON("config.json") { json in
                guard let section else { json[key] = value; return }
                var inner = json[section] as! [String: Any]
                inner[key] = value
                json[section] = inner
            }
        }

        /// Rewrites model.safetensors with `edit` applied to its tensors.
        func editWeights(_ edit: (inout [(String, DType, [Int], Data)]) -> Void) throws {
            let file = path + "/model.safetensors"
            let ck = try Checkpoint(directory: path)
            var tensors = try ck.names.sorted().map { name -> (String, DType, [Int], Data) in
                let t = try ck.tensor(name)
                return (name, t.dtype, t.shape, Data(bytes: t.pointer, count: t.byteCount))
            }
            edit(&tensors)
            try FileManager.default.removeItem(atPath: file)
            try writeSafetensors(tensors, to: file)
        }
    }

    /// The error loading the copy, or nil.
    func loadError(_ copy: Copy) -> VLMError? {
        do { _ = try Qwen2VLModel(directory: copy.path); return nil } catch let e as VLMError { return e } catch {
            Issue.record("not a VLMError: \(error)")
            return nil
        }
    }

    func expectInvalid(_ copy: Copy, key: String, mentioning value: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = loadError(copy)
        guard case .invalidConfig(let path, let k, let reason) = error else {
            Issue.record("expected invalidConfig for \(key), got \(String(describing: error))", sourceLocation: sourceLocation)
            return
        }
        #expect(path.hasPrefix(copy.path), sourceLocation: sourceLocation)
        #expect(k == key, sourceLocation: sourceLocation)
        #expect(reason.contains(value), "\(reason)", sourceLocation: sourceLocation)
    }

    nonisolated(unsafe) static let textCases: [(String, Any, String)] = [
        ("num_hidden_layers", -1, "-1"), ("num_hidden_layers", 1_000_000_000, "1000000000"), ("num_hidden_layers", 0, "0"),
        ("hidden_size", 0, "0"), ("hidden_size", 1 << 40, "\(1 << 40)"), ("intermediate_size", -48, "-48"),
        ("vocab_size", 1 << 40, "\(1 << 40)"), ("vocab_size", 0, "0"), ("num_attention_heads", 0, "0"),
        ("num_key_value_heads", -1, "-1"), ("max_position_embeddings", 0, "0"), ("max_position_embeddings", 1 << 40, "\(1 << 40)"),
        ("rope_theta", -1.0, "-1"), ("rope_theta", 0.0, "0"), ("rms_norm_eps", -1e-6, "-1e-06"),
        ("eos_token_id", 1_000_000, "1000000"), ("bos_token_id", -3, "-3"),
    ]

    @Test(arguments: 0..<textCases.count)
    func hostileTextNumbers(index: Int) throws {
        let (key, value, shown) = Self.textCases[index]
        let copy = try Copy()
        if key == "rope_theta" {
            try copy.editJSON("config.json") { json in
                var text = json["text_config"] as! [String: Any]
                var rope = text["rope_parameters"] as! [String: Any]
                rope["rope_theta"] = value
                text["rope_parameters"] = rope
                json["text_config"] = text
            }
        } else {
            try copy.editConfig("text_config", key, value)
        }
        expectInvalid(copy, key: "text_config.\(key)", mentioning: shown)
    }

    /// A key written twice in one object: JSONDecoder kept the first, transformers (Python's
    /// json) the last, so the two read different models. Refused, naming the key's path.
    @Test func keysWrittenTwiceAreRefused() throws {
        for (object, key, value) in [("", "image_token_id", "99999"), ("text_config", "hidden_size", "64")] {
            let copy = try Copy()
            let url = URL(fileURLWithPath: copy.path + "/config.json")
            var text = try String(contentsOf: url, encoding: .utf8)
            let opening = object.isEmpty ? "{" : "\"\(object)\": {"
            let at = try #require(text.range(of: opening) ?? text.range(of: "\"\(object)\":{"))
            text.insert(contentsOf: "\"\(key)\": \(value), ", at: at.upperBound)
            try text.write(to: url, atomically: true, encoding: .utf8)
            expectInvalid(copy, key: object.isEmpty ? key : object + "." + key, mentioning: "twice")
        }
    }

    /// A fraction where a whole number belongs, inside a list or a nested object, was reported as
    /// "key '(top level)': The given data was not valid JSON." Now the number and its key.
    @Test func fractionsWhereWholeNumbersBelongAreNamed() throws {
        let copy = try Copy()
        try copy.editJSON("config.json") { json in
            var text = json["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["mrope_section"] = [1.5, 2, 2]
            text["rope_parameters"] = rope
            json["text_config"] = text
        }
        expectInvalid(copy, key: "text_config.rope_parameters.mrope_section[0]", mentioning: "1.5")
    }

    /// An optional file (generation_config.json, a processor's) that is a link loop was taken
    /// for absent, and its defaults used: it is refused, named, as config.json is.
    @Test func anOptionalFileThatLoopsIsNotAbsent() throws {
        for file in ["generation_config.json", "video_preprocessor_config.json"] {
            let copy = try Copy()
            try FileManager.default.removeItem(atPath: copy.path + "/" + file)
            try FileManager.default.createSymbolicLink(atPath: copy.path + "/" + file, withDestinationPath: file)
            let error = loadError(copy)
            guard case .invalidConfig(let path, "(file)", let reason) = error else {
                Issue.record("\(file): expected a file error, got \(String(describing: error))")
                continue
            }
            #expect(path.hasSuffix(file) && reason.lowercased().contains("symbolic links"), "\(reason)")
        }
    }

    /// A config.json that is a link to itself is a loop, not a missing file.
    @Test func aLinkLoopIsNotAMissingFile() throws {
        let copy = try Copy()
        try FileManager.default.removeItem(atPath: copy.path + "/config.json")
        try FileManager.default.createSymbolicLink(atPath: copy.path + "/config.json", withDestinationPath: "config.json")
        let error = loadError(copy)
        guard case .invalidConfig(_, "(file)", let reason) = error else {
            Issue.record("expected a file error, got \(String(describing: error))")
            return
        }
        #expect(reason.lowercased().contains("symbolic links"), "\(reason)")
    }

    /// A rope type other than the default changes the rotary frequencies in the reference
    /// (yarn, linear, dynamic…): it was read and ignored, giving other logits. Refused, in the
    /// 5.x layout and the 4.x one (where `mrope` is the default's name).
    @Test func unsupportedRopeTypesAreRefused() throws {
        let v5 = try Copy()
        try v5.editJSON("config.json") { json in
            var text = json["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["rope_type"] = "yarn"
            text["rope_parameters"] = rope
            json["text_config"] = text
        }
        expectInvalid(v5, key: "text_config.rope_parameters.rope_type", mentioning: "yarn")
        let v4 = try Copy("tiny-qwen2vl-a-v4")
        #expect(loadError(v4) == nil)
        try v4.editJSON("config.json") { json in
            var scaling = json["rope_scaling"] as! [String: Any]
            scaling["type"] = "linear"
            json["rope_scaling"] = scaling
        }
        expectInvalid(v4, key: "rope_scaling.type", mentioning: "linear")
    }

    /// JSON has no NaN or infinity (1e999 is refused by the parser), but configurations built in
    /// code reach the towers' initialisers, which check them too.
    @Test(arguments: [Double.nan, .infinity, -.infinity])
    func nonFiniteFloatsInCodeBuiltConfigs(value: Double) throws {
        let files = try Qwen2VLModelFiles(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let checkpoint = try Checkpoint(directory: files.directory)
        func languageKey(_ edit: (inout Qwen2VLTextConfiguration) -> Void) -> String? {
            var text = files.config.text
            edit(&text)
            do { _ = try Qwen2VLLanguage(config: text, tieWordEmbeddings: false, checkpoint: checkpoint); return nil }
            catch VLMError.invalidConfig(_, let key, _) { return key } catch { return "\(error)" }
        }
        #expect(languageKey { $0.rmsNormEps = value } == "rms_norm_eps")
        #expect(languageKey { $0.ropeTheta = value } == "rope_theta")
        func visionKey(_ edit: (inout Qwen2VLVisionConfiguration) -> Void) -> String? {
            var vision = files.config.vision
            edit(&vision)
            do { _ = try Qwen2VLVision(config: vision, checkpoint: checkpoint); return nil }
            catch VLMError.invalidConfig(_, let key, _) { return key } catch { return "\(error)" }
        }
        #expect(visionKey { $0.ropeTheta = value } == "vision_config.rope_theta")
        #expect(visionKey { $0.mlpRatio = value } == "vision_config.mlp_ratio")
    }

    nonisolated(unsafe) static let visionCases: [(String, Any, String)] = [
        ("depth", 1_000_000_000, "1000000000"), ("depth", -2, "-2"), ("patch_size", 0, "0"), ("patch_size", 100_000, "100000"),
        ("spatial_merge_size", 0, "0"), ("spatial_merge_size", 1000, "1000"), ("temporal_patch_size", 0, "0"),
        ("embed_dim", 1 << 40, "\(1 << 40)"), ("num_heads", 0, "0"), ("mlp_ratio", -2.0, "-2"), ("mlp_ratio", 1e300, "1e+300"),
        ("in_channels", 0, "0"), ("hidden_size", 1 << 40, "\(1 << 40)"),
    ]

    @Test(arguments: 0..<visionCases.count)
    func hostileVisionNumbers(index: Int) throws {
        let (key, value, shown) = Self.visionCases[index]
        let copy = try Copy()
        try copy.editConfig("vision_config", key, value)
        expectInvalid(copy, key: "vision_config.\(key)", mentioning: shown)
    }

    @Test(arguments: [("patch_size", 0), ("merge_size", 0), ("temporal_patch_size", 0), ("patch_size", 7), ("merge_size", 100_000)])
    func hostilePreprocessorNumbers(key: String, value: Int) throws {
        let copy = try Copy()
        try copy.editJSON("video_preprocessor_config.json") { $0[key] = value }
        let error = loadError(copy)
        guard case .invalidConfig(let path, let k, let reason) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(path.hasSuffix("video_preprocessor_config.json"))
        #expect(k == key)
        #expect(reason.contains("\(value)"), "\(reason)")
    }

    @Test func processorWithAZeroPatchThrows() {
        var config = Qwen2VLPreprocessorConfiguration()
        config.temporalPatchSize = 0
        let frame = RGBImage(width: 28, height: 28, pixels: [UInt8](repeating: 0, count: 28 * 28 * 3))
        #expect(throws: VLMError.self) { _ = try Qwen2VLProcessor(config: config).patches(frames: [frame]) }
    }

    @Test(arguments: [("temperature", -1.0), ("top_p", 0.0), ("repetition_penalty", -1.0)])
    func hostileGenerationConfig(key: String, value: Double) throws {
        let copy = try Copy()
        try copy.editJSON("generation_config.json") { $0[key] = value }
        guard case .invalidConfig(let path, let k, _) = loadError(copy) else { Issue.record("accepted \(key) \(value)"); return }
        #expect(path.hasSuffix("generation_config.json"))
        #expect(k == key)
    }

    @Test func generationConfigEosOutsideVocabulary() throws {
        let copy = try Copy()
        try copy.editJSON("generation_config.json") { $0["eos_token_id"] = [399, 1_000_000_000_000] }
        guard case .invalidConfig(_, "eos_token_id", let reason) = loadError(copy) else { Issue.record("accepted"); return }
        #expect(reason.contains("1000000000000"))
    }

    /// The config's layer count must be the checkpoint's, whatever is in range.
    @Test func layerCountMustMatchTheCheckpoint() throws {
        let copy = try Copy()
        try copy.editConfig("text_config", "num_hidden_layers", 1000)
        expectInvalid(copy, key: "num_hidden_layers", mentioning: "1000")
        if case .invalidConfig(_, _, let reason) = loadError(copy) { #expect(reason.contains("1 layer (0…0)"), "\(reason)") }
    }

    @Test func visionDepthMustMatchTheCheckpoint() throws {
        let copy = try Copy()
        try copy.editConfig("vision_config", "depth", 1000)
        expectInvalid(copy, key: "vision_config.depth", mentioning: "1000")
        if case .invalidConfig(_, _, let reason) = loadError(copy) { #expect(reason.contains("2 blocks (0…1)"), "\(reason)") }
    }

    @Test func missingUntiedLMHeadIsAMissingWeight() throws {
        let copy = try Copy()
        try copy.editWeights { $0.removeAll { $0.0 == "lm_head.weight" } }
        guard case .missingWeight(let name, _) = loadError(copy) else { Issue.record("accepted a missing lm_head"); return }
        #expect(name == "lm_head.weight")
        // Tied, the embedding is the head and no lm_head is needed.
        try copy.editJSON("config.json") { $0["tie_word_embeddings"] = true }
        #expect(loadError(copy) == nil)
    }

    @Test(arguments: [("model.norm.weight", Float.nan), ("lm_head.weight", Float.infinity)])
    func nonFiniteWeightsAreAnErrorNotGarbage(tensor: String, value: Float) throws {
        let copy = try Copy()
        try copy.editWeights { tensors in
            let i = tensors.firstIndex { $0.0 == tensor }!
            var values = tensors[i].3.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            values[0] = value
            tensors[i].3 = values.withUnsafeBytes { Data($0) }
        }
        let model = try Qwen2VLModel(directory: copy.path)
        let ids = Array(0..<8)
        #expect(throws: VLMError.nonFiniteLogits(step: 0)) { _ = try model.generateGreedy(ids: ids, maxNewTokens: 4) }
        let session = try Qwen2VLSession(model: model, prefix: Array(ids.prefix(3)), vision: [])
        #expect(throws: VLMError.nonFiniteLogits(step: 0)) {
            _ = try session.generate(continuation: Array(ids.dropFirst(3)), parameters: GenerationParameters(maxNewTokens: 4))
        }
        #expect(VLMError.nonFiniteLogits(step: 3).errorDescription
            == "the model produced non-finite logits (NaN/Inf) at step 3; the checkpoint's weights, or numbers of its configuration (rope_theta, image_mean, image_std, rescale_factor), may be out of range")
    }

    /// max_new_tokens of 10⁹ stops at the context (512 here) instead of sizing a cache for 10⁹.
    @Test func hugeMaxNewTokensStopsAtTheContext() throws {
        let model = try Qwen2VLModel(directory: VisionFixtures.model("tiny-qwen2vl-a"))
        let ids = Array(0..<8)
        let greedy = try model.generateGreedy(ids: ids, maxNewTokens: 1_000_000_000)
        #expect(greedy.count == 512 - ids.count)
        let session = try Qwen2VLSession(model: model, prefix: Array(ids.prefix(3)), vision: [])
        let out = try session.generate(continuation: Array(ids.dropFirst(3)), parameters: GenerationParameters(maxNewTokens: 1_000_000_000))
        #expect(out.count == 512 - ids.count)
        #expect(out == greedy)
        // A prompt that fills the context leaves no room: an error, not an empty answer.
        #expect(throws: VLMError.self) { _ = try model.generateGreedy(ids: (0..<512).map { $0 % 300 }, maxNewTokens: 10) }
    }

    @Test func promptLongerThanTheContextIsInvalidInput() throws {
        let copy = try Copy()
        try copy.editConfig("text_config", "max_position_embeddings", 64)
        let model = try Qwen2VLModel(directory: copy.path)
        let long = (0..<100).map { $0 % 300 }
        let expected = VLMError.invalidInput("the prompt has 100 tokens; the model's context (max_position_embeddings) is 64")
        #expect(throws: expected) { _ = try model.generateGreedy(ids: long, maxNewTokens: 4) }
        #expect(throws: expected) { _ = try model.logits(ids: long) }
        // The session checks its prefix before the vision tower runs, and prefix + continuation.
        #expect(throws: expected) { _ = try Qwen2VLSession(model: model, prefix: long, vision: []) }
        let session = try Qwen2VLSession(model: model, prefix: Array(long.prefix(10)), vision: [])
        #expect(throws: expected) { _ = try session.generate(continuation: Array(long.dropFirst(10)), parameters: GenerationParameters()) }
    }

    @Test(arguments: [
        (GenerationParameters(temperature: .nan), "temperature", "nan"),
        (GenerationParameters(temperature: .infinity), "temperature", "inf"),
        (GenerationParameters(topP: .nan), "top_p", "nan"),
        (GenerationParameters(repetitionPenalty: .infinity), "repetition_penalty", "inf"),
        (GenerationParameters(repetitionPenalty: .nan), "repetition_penalty", "nan"),
    ])
    func nonFiniteGenerationParameters(parameters: GenerationParameters, name: String, value: String) {
        do {
            try parameters.validate()
            Issue.record("accepted \(name) = \(value)")
        } catch {
            let message = (error as? VLMError)?.errorDescription ?? ""
            #expect(message.hasPrefix(name), "\(message)")
            #expect(message.hasSuffix(value), "\(message)")
        }
    }

    /// The profile report goes to stderr with write(2): a full stderr (/dev/full) is ignored
    /// rather than trapping inside FileHandle.write.
    @Test func profileReportSurvivesAFullStderr() throws {
        let full = open("/dev/full", O_WRONLY)
        try #require(full >= 0)
        let saved = dup(2)
        dup2(full, 2)
        var timer = StageTimer(enabled: true)
        timer.mark("stage")
        timer.report("test")
        dup2(saved, 2)
        close(saved)
        close(full)
    }
}
