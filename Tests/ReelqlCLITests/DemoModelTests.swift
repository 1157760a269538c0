import Foundation
import GRDB
import Testing

/// The bundled demo model (models/demo) on the committed demo clips (fixtures/demo): `reelql
/// describe` with no --model finds it, and its tokens are transformers' on the same checkpoint
/// (fixtures/reference/demo/outputs.json, from fixtures/scripts/reference_demo.py).
@Suite struct DemoModelTests {
    struct Reference: Decodable {
        struct Clip: Decodable { var file: String; var prompts: [String]; var tokens: [[Int]]; var texts: [String] }
        var max_new_tokens: Int
        var clips: [Clip]
    }

    static let reference: Reference = {
        let url = CLI.root.appendingPathComponent("fixtures/reference/demo/outputs.json")
        return try! JSONDecoder().decode(Reference.self, from: try! Data(contentsOf: url))
    }()

    @Test(arguments: reference.clips.map(\.file))
    func describeMatchesTransformers(file: String) throws {
        let clip = Self.reference.clips.first { $0.file == file }!
        var args = ["describe", CLI.root.appendingPathComponent("fixtures/demo/\(file)").path, "--json",
                    "--max-new-tokens", "\(Self.reference.max_new_tokens)", "--prompt", clip.prompts[0]]
        for q in clip.prompts.dropFirst() { args += ["--question", q] }
        let r = try CLI.run(args, environment: ["REELQL_MODEL": ""])  // the default: the bundled model
        #expect(r.status == 0, "\(r.stderr)")
        let out = try CLI.json(r.stdout)
        let answers = out["answers"] as! [[String: Any]]
        #expect(out["tokens"] as? [Int] == clip.tokens[0], "\(file): \(out["description"] ?? "") vs \(clip.texts[0])")
        #expect(out["description"] as? String == clip.texts[0])
        for (i, a) in answers.enumerated() {
            #expect(a["tokens"] as? [Int] == clip.tokens[i + 1], "\(file): \(clip.prompts[i + 1])")
            #expect(a["answer"] as? String == clip.texts[i + 1])
        }
    }
}

/// The README's main job: `reelql run pipelines/demo.yaml` stores, for every demo clip, the
/// description transformers generates with the same checkpoint.
@Suite struct DemoPipelineTests {
    @Test func demoPipelineStoresTheReferenceDescriptions() throws {
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-demo-\(UUID().uuidString).sqlite").path
        defer { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + s) } }
        let r = try CLI.run(["run", CLI.root.appendingPathComponent("pipelines/demo.yaml").path, "--db", db, "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try GRDB.DatabaseQueue(path: db).read { db in
            try Row.fetchAll(db, sql: "SELECT v.path, r.text FROM results r JOIN videos v ON v.id = r.video_id WHERE r.kind = 'description'")
        }
        let reference = DemoModelTests.reference.clips
        #expect(rows.count == reference.count)
        for row in rows {
            let path: String = row["path"]
            let clip = reference.first { path.hasSuffix("/" + $0.file) }
            #expect(clip != nil && clip?.texts[0] == row["text"], "\(path)")
        }
    }
}
