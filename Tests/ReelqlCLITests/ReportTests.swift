import Foundation
import GRDB
import Media
import Pipeline
import Testing

/// `reelql report` opened in headless Chromium (Debian's `chromium`, installed by scripts/test.sh).
@Suite(.serialized) struct ReportTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    struct Browser {
        let dir: String
        /// Runs headless Chromium on `page` with `flags`; returns its stdout and wall time.
        func run(_ page: String, _ flags: [String]) throws -> (out: String, seconds: Double) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: try #require(ReportTests.chromium, "chromium is not installed: scripts/test.sh installs it"))
            p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=\(dir)/profile"]
                + flags + [URL(fileURLWithPath: page).absoluteString]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            let t0 = Date()
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (String(decoding: data, as: UTF8.self), Date().timeIntervalSince(t0))
        }
        /// The DOM of `page` after its scripts ran (virtual time: timers complete at once).
        func dumpDOM(_ page: String) throws -> (dom: String, seconds: Double) {
            let r = try run(page, ["--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom"])
            return (r.out, r.seconds)
        }
        func screenshot(_ page: String, to png: String) throws {
            _ = try run(page, ["--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=5000", "--screenshot=\(png)"])
        }
    }

    /// The report page with a checking script added at its end (so it runs right after the
    /// report's own script, in the same document): it looks at the page as a reader would and
    /// writes what it found as JSON into #out.
    static func harness(report: String, query: String) throws -> String {
        let html = try String(contentsOfFile: report, encoding: .utf8)
        let check = """
        <pre id="out">pending</pre>
        <script>
        // Every card (and image) is made now, while the page is still loading, so that the load
        // event waits for every image; the checks run in that event, synchronously.
        const firstScreen = document.querySelectorAll(".clip").length;
        window.reelqlRenderAll();
        window.addEventListener("load", () => {
          const out = document.getElementById("out"), w = window, d = document;
          try {
            const cards = d.querySelectorAll(".clip").length;
            const images = [...d.images];
            const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
            const descriptions = [...d.querySelectorAll(".clip .description")].map(e => e.textContent);
            w.reelqlSearch("\(query)");
            w.reelqlRenderAll();
            const matched = [...d.querySelectorAll(".clip")].map(c => c.closest(".video").dataset.path + "#" + c.dataset.clip);
            const fetched = w.performance.getEntriesByType("resource").map(e => e.name).filter(n => !n.startsWith("data:"));
            out.textContent = JSON.stringify({ firstScreen, cards, images: images.length, decoded, descriptions, matched, fetched,
              pwned: w.__pwned === undefined ? null : String(w.__pwned), problems: d.querySelectorAll(".problems li").length,
              videos: d.querySelectorAll(".video").length });
          } catch (e) { out.textContent = "error: " + e; }
        });
        </script>
        """
        guard let end = html.range(of: "</body>", options: .backwards) else { throw CocoaError(.fileReadCorruptFile) }
        return html.replacingCharacters(in: end.lowerBound..<end.lowerBound, with: check)
    }

    static func result(_ dom: String) throws -> [String: Any] {
        let start = try #require(dom.range(of: "<pre id=\"out\">")).upperBound
        let end = try #require(dom.range(of: "</pre>", range: start..<dom.endIndex)).lowerBound
        let text = String(dom[start..<end]).replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
        let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
        return try #require(json, "harness said: \(text.prefix(300))")
    }

    @Test func reportOfARealRunShowsEveryClipSafely() throws {
        let ws = try RunCLITests.Workspace(["h264_cfr.mp4", "hevc.mp4", "rotated90.mp4", "not_a_video.mp4", "truncated.mp4"], clipSeconds: 1)
        defer { ws.remove() }
        let db = ws.root + "/r.sqlite"
        let run = try CLI.run(["run", ws.spec, "--db", db, "--quiet"])
        #expect(run.status == 3, "\(run.stderr)")
        // Hostile text, as a model could write it: markup must show as text and never run.
        let hostile = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"> \"onerror=window.__pwned=3 x=\""
        let (clips, target) = try DatabaseQueue(path: db).write { db -> (Int, String) in
            try db.execute(sql: """
                UPDATE results SET text = ? WHERE id = (SELECT r.id FROM results r JOIN clips c ON c.id = r.clip_id
                    JOIN videos v ON v.id = r.video_id WHERE r.kind = 'description' AND v.path LIKE '%hevc.mp4' AND c.clip_index = 1)
                """, arguments: [hostile])
            try db.execute(sql: """
                UPDATE results SET text = 'a zebra crossing at dusk' WHERE id IN (SELECT r.id FROM results r JOIN clips c ON c.id = r.clip_id
                    JOIN videos v ON v.id = r.video_id WHERE r.kind = 'description' AND v.path LIKE '%h264_cfr.mp4' AND c.clip_index IN (0, 2))
                """)
            return (try Int.fetchOne(db, sql: "SELECT count(*) FROM clips") ?? 0,
                    try String.fetchOne(db, sql: "SELECT path FROM videos WHERE path LIKE '%h264_cfr.mp4'") ?? "")
        }
        let page = ws.root + "/r.html"
        let r = try CLI.run(["report", db, "--out", page])
        #expect(r.status == 0 && r.stdout.contains(page), "\(r.stderr)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(!html.contains("<script>window.__pwned"), "database text reached the page as markup")
        #expect(!html.contains("src=\"http") && !html.contains("src=\"//"))
        let harness = ws.root + "/harness.html"
        try Self.harness(report: page, query: "ZEBRA").write(toFile: harness, atomically: true, encoding: .utf8)
        let out = try Self.result(try Browser(dir: ws.root).dumpDOM(harness).dom)
        #expect(out["cards"] as? Int == clips, "\(out)")
        #expect(out["images"] as? Int == 2 * clips && out["decoded"] as? Int == 2 * clips, "every image decodes: \(out)")
        #expect((out["fetched"] as? [String])?.isEmpty == true, "fetched \(out["fetched"] ?? "")")
        #expect(out["pwned"] is NSNull, "an injected script ran: \(out["pwned"] ?? "")")
        #expect((out["descriptions"] as? [String])?.contains(hostile) == true, "the hostile text is shown as text")
        #expect(out["matched"] as? [String] == ["\(target)#0", "\(target)#2"], "search: \(out["matched"] ?? "")")
        #expect(out["problems"] as? Int == 2, "the failed and the damaged file are listed: \(out)")
        // For people: output/report-screenshot.png.
        let shot = CLI.root.appendingPathComponent("output/report-screenshot.png").path
        try? FileManager.default.removeItem(atPath: shot)
        try Browser(dir: ws.root).screenshot(page, to: shot)
        #expect(FileManager.default.fileExists(atPath: shot))
        // --search and --video narrow the page itself.
        let narrow = try CLI.run(["report", db, "--out", ws.root + "/n.html", "--search", "zebra", "--video", target])
        #expect(narrow.status == 0)
        let n = try String(contentsOfFile: ws.root + "/n.html", encoding: .utf8)
        #expect(n.contains("zebra crossing") && !n.contains("hevc.mp4"))
        // An empty --search filters nothing (it gave an empty page).
        let all = try CLI.run(["report", db, "--out", ws.root + "/all.html", "--search", ""])
        #expect(all.status == 0)
        let everything = try String(contentsOfFile: ws.root + "/all.html", encoding: .utf8)
        #expect(everything.contains("zebra crossing") && everything.contains("hevc.mp4"))
        let missing = try CLI.run(["report", ws.root + "/nothing.sqlite"])
        #expect(missing.status == 2 && missing.stderr.contains("nothing.sqlite"))
        // A --video the database does not hold is an error naming it, not an empty page.
        let unknown = try CLI.run(["report", db, "--out", ws.root + "/u.html", "--video", "/no/such/video.mp4"])
        #expect(unknown.status == 2 && unknown.stderr.contains("/no/such/video.mp4"))
        #expect(!FileManager.default.fileExists(atPath: ws.root + "/u.html"))
    }

    /// 10 000 clips (synthetic rows, one real thumbnail each): the first screen is up in under 2 s.
    /// --search narrows the page as its search box does: the query trimmed, text matched as
    /// code units (a decomposed "cafe\u{301}" holds "cafe" and not "café"), and the failed files
    /// still listed (--search dropped them, and an unmatched one gave an empty page).
    @Test func searchNarrowsAsTheSearchBoxDoes() throws {
        let ws = try Hostile.Workspace(["hevc.mp4", "not_a_video.mp4"])
        defer { ws.remove() }
        #expect(try CLI.run(["run", ws.specPath, "--db", ws.db, "--quiet"]).status == 3)
        try Hostile.snapshot(ws.db, to: ws.root + "/s.sqlite", sql: "UPDATE results SET text = 'a cafe\u{301} scene' WHERE kind = 'description'")
        func page(_ query: String) throws -> String {
            let out = ws.root + "/p.html"
            let r = try CLI.run(["report", ws.root + "/s.sqlite", "--out", out, "--search", query])
            #expect(r.status == 0, "\(query): \(r.stderr)")
            return try String(contentsOfFile: out, encoding: .utf8)
        }
        for query in ["cafe", "  CAFE\n"] {
            let html = try page(query)
            #expect(html.contains("cafe\u{301} scene") && html.contains("not_a_video.mp4"), "\(query)")
        }
        let composed = try page("caf\u{E9}")
        #expect(!composed.contains("cafe\u{301} scene") && composed.contains("not_a_video.mp4"))
    }

    /// A video done under two settings (another model or prompts, or databases merged) shows
    /// the clips of the settings it was last done under, and counts the others (three clips all
    /// labelled 0 were shown, with no word of why).
    @Test func clipsOfOtherSettingsAreCountedNotMixedIn() throws {
        let ws = try Hostile.Workspace(["hevc.mp4"])
        defer { ws.remove() }
        for tokens in ["3", "5"] {
            #expect(try CLI.run(["run", ws.specPath, "--db", ws.db, "--quiet", "--max-new-tokens", tokens]).status == 0)
        }
        let latest = try Hostile.readOnly(ws.db).read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM clips WHERE settings_key = (SELECT settings_key FROM runs ORDER BY id DESC LIMIT 1)") ?? 0
        }
        let total = try Hostile.readOnly(ws.db).read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM clips") ?? 0 }
        #expect(latest > 0 && total == 2 * latest)
        let out = ws.root + "/r.html"
        #expect(try CLI.run(["report", ws.db, "--out", out]).status == 0)
        let html = try String(contentsOfFile: out, encoding: .utf8)
        let start = try #require(html.range(of: #"<script type="application/json" id="reelql-data">"#))
        let end = try #require(html.range(of: "</script>", range: start.upperBound..<html.endIndex))
        let data = try #require(try JSONSerialization.jsonObject(with: Data(html[start.upperBound..<end.lowerBound].utf8)) as? [String: Any])
        let video = try #require((data["videos"] as? [[String: Any]])?.first)
        #expect((video["clips"] as? [Any])?.count == latest && video["other_settings_clips"] as? Int == total - latest, "\(video)")
    }

    @Test func tenThousandClipsOpenQuickly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reelql-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/big.sqlite"
        let store = try Store(path: db)
        let jpeg = try Thumbnail.jpeg(rgb: (0..<(64 * 48 * 3)).map { UInt8($0 % 251) }, width: 64, height: 48)
        let run = try store.startRun(spec: "{}", model: "m", settingsKey: "k", shard: nil)
        for v in 0..<100 {
            let video = try store.upsertVideo(path: "/footage/cam\(v).mp4", size: 1, mtime: 0, fingerprint: "f\(v)", run: run)
            try store.setVideoStatus(video, status: .done)
            for c in 0..<100 {
                let row = Store.ResultRow(kind: "description", prompt: "Describe.", text: "clip \(c) of camera \(v): a red square moves left",
                                          promptTokens: 1, generatedTokens: 1, visionSeconds: 0, prefillSeconds: 0, generateSeconds: 0)
                try store.saveClip(video: video, index: c, start: Double(c), end: Double(c + 1), frames: 2, width: 64, height: 48,
                                   results: [row], thumbnails: [Store.ThumbnailRow(kind: "frame", mimeType: "image/jpeg", width: 64, height: 48, bytes: jpeg)],
                                   model: "m", settings: "{}", settingsKey: "k", run: run)
            }
        }
        let page = dir + "/big.html"
        #expect(try CLI.run(["report", db, "--out", page]).status == 0)
        // The same browser on an empty page, in the same run: what Chromium itself takes.
        try "<!DOCTYPE html><html><body>empty</body></html>".write(toFile: dir + "/empty.html", atomically: true, encoding: .utf8)
        let baseline = try Browser(dir: dir).dumpDOM(dir + "/empty.html").seconds
        let (dom, seconds) = try Browser(dir: dir).dumpDOM(page)
        func attribute(_ name: String) -> Int? { dom.range(of: "\(name)=\"").flatMap { r in Int(dom[r.upperBound...].prefix { $0.isNumber }) } }
        let firstScreen = try #require(attribute("data-first-screen-ms"), "the page did not finish its first screen")
        let script = attribute("data-script-ms") ?? -1
        // From navigation start (reading and parsing the page) to the first cards on screen.
        #expect(firstScreen < 2000, "first screen after \(firstScreen) ms")
        #expect(dom.contains("data-matches=\"10000\""))
        print(String(format: "10 000-clip report (%.1f MB): first screen %d ms after navigation (script %d ms); Chromium's whole run %.2f s, %.2f s for an empty page",
                     Double((try? FileManager.default.attributesOfItem(atPath: page)[.size] as? Int) ?? 0) / 1e6, firstScreen, script,
                     seconds, baseline))
    }
}
