import Foundation
import GRDB
import Media

/// `reelql report`: one self-contained HTML page over a results database — the runs, each video
/// with its status and summary, a timeline of its clips (thumbnail, time range, description,
/// answers), the failed and damaged files with their errors, and a search box that filters clips
/// as you type. The database is opened read-only and never written.
///
/// Everything from the database travels as JSON inside `<script type="application/json">` (with
/// `<` escaped, so no text can close the element) and reaches the page through `textContent`,
/// never as markup: a description holding `<script>` shows as text. Images are `data:` URLs; a
/// Content-Security-Policy forbids every fetch, so the page works offline and reaches nothing.
/// Cards are built in batches as the reader scrolls, so 10 000 clips open as fast as 100.
public enum Report {
    /// Pictures larger than this are left out of a page (a thumbnail is a few kilobytes; a
    /// damaged or hostile row may hold hundreds of megabytes).
    public static let maxPictureBytes = 16 << 20

    public struct Options: Sendable {
        /// Only clips whose text contains this (case-insensitive), as the search box does.
        public var search: String?
        /// Only this video (its path as stored).
        public var video: String?
        /// Embed the contact strips too (the middle frame always).
        public var strips = true
        public init(search: String? = nil, video: String? = nil, strips: Bool = true) {
            self.search = search; self.video = video; self.strips = strips
        }
    }

    struct Clip: Encodable {
        var index: Int, start: Double, end: Double, frames: Int
        var description: String?
        var answers: [[String]]
        var frame: Int?, strip: Int?
    }
    struct Video: Encodable {
        var path: String, status: String, errorKind: String?, error: String?
        var duration: Double?, width: Int?, height: Int?, codec: String?
        var summary: String?
        var clips: [Clip]
        /// Clips stored under other settings than the video's latest (another model, prompts or
        /// sampling, merged in from other runs): not shown, counted.
        var otherSettingsClips: Int
    }
    struct Run: Encodable {
        var id: Int64, startedAt: String, finishedAt: String?, status: String, model: String, shard: String?
        var videosSeen: Int, videosFailed: Int, clipsDone: Int, clipsSkipped: Int, seconds: Double?
    }
    struct Payload: Encodable {
        var database: String, generatedAt: String, search: String?
        var runs: [Run], videos: [Video]
    }

    /// The page for the database at `path`.
    public static func html(database path: String, options: Options = Options()) throws -> String {
        // Read-only (immutable on a read-only mount); a FIFO or device is refused unopened.
        let queue = try Store.openReadOnly(path)
        var images: [String] = []
        let payload: Payload
        do {
            payload = try queue.read { db -> Payload in
                for table in ["runs", "videos", "clips", "results"] where try !db.tableExists(table) {
                    throw PipelineError.database(path: path, reason: "not a reelql database (no table '\(table)')")
                }
                let hasThumbnails = try db.tableExists("thumbnails")
                let runs = try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY id").map { (r0: Row) throws -> Run in
                    let row = r0
                    return Run(id: try row.typed("id", "runs"), startedAt: try row.typed("started_at", "runs"), finishedAt: try row.typed("finished_at", "runs"), status: try row.typed("status", "runs"), model: try row.typed("model", "runs"),
                        shard: try row.typed("shard", "runs"), videosSeen: try row.typed("videos_seen", "runs"), videosFailed: try row.typed("videos_failed", "runs"), clipsDone: try row.typed("clips_done", "runs"),
                        clipsSkipped: try row.typed("clips_skipped", "runs"), seconds: try row.typed("seconds", "runs"))
                }
                var videos: [Video] = []
                var videoSQL = "SELECT * FROM videos"
                var args: StatementArguments = []
                if let v = options.video {
                    // As stored, or (a relative path) made absolute as runs store their inputs.
                    videoSQL += " WHERE path = ? OR path = ?"
                    args = [v, Scan.standardized(v)]
                }
                let stored = try Row.fetchAll(db, sql: videoSQL + " ORDER BY path", arguments: args)
                if let v = options.video, stored.isEmpty {
                    let shown = v.count > 200 ? String(v.prefix(200)) + "… (\(v.count) characters)" : v
                    throw PipelineError.invalidArgument("\(path): no video stored as \(PathBytes.display(shown)) (--video takes a path as the database stores it, or relative to the current folder: see 'reelql search' or the full report)")
                }
                // As the page's search box takes a query: trimmed, lower-cased, matched as UTF-16
                // code units (JavaScript's includes), not by canonical equivalence; an empty one
                // filters nothing.
                let needle = options.search.map { $0.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }.flatMap { $0.isEmpty ? nil : $0 }
                for v in stored {
                    let vid: Int64 = try v.typed("id", "videos")
                    // The settings the video was last done under (its last run's, else its latest
                    // clip's): results of other settings are not mixed into its clips.
                    let key = try String.fetchOne(db, sql: """
                        SELECT coalesce((SELECT r.settings_key FROM runs r JOIN videos v ON r.id = v.last_run_id WHERE v.id = ?1
                                           AND EXISTS (SELECT 1 FROM clips c WHERE c.video_id = ?1 AND c.settings_key = r.settings_key)),
                                        (SELECT settings_key FROM clips WHERE video_id = ?1 ORDER BY done_at DESC, id DESC LIMIT 1))
                        """, arguments: [vid])
                    let texts = try Row.fetchAll(db, sql: """
                        SELECT clip_id, kind, prompt, text FROM results WHERE video_id = ? AND (? IS NULL OR settings_key = ?) ORDER BY id
                        """, arguments: [vid, key, key])
                    var descriptions: [Int64: String] = [:], answers: [Int64: [[String]]] = [:]
                    var summary: String?
                    for r in texts {
                        let kind: String = try r.typed("kind", "results"), text: String = try r.typed("text", "results")
                        let clipID: Int64? = try r.typed("clip_id", "results")
                        guard let clip = clipID else { if kind == "summary" { summary = text }; continue }
                        if kind == "description" { descriptions[clip] = text } else if kind == "answer" { answers[clip, default: []].append([try r.typed("prompt", "results"), text]) }
                    }
                    var thumbs: [Int64: [String: (mime: String, bytes: Data)]] = [:]
                    if hasThumbnails {
                        for t in try Row.fetchAll(db, sql: """
                            SELECT t.clip_id, t.kind, t.mime_type, t.bytes FROM thumbnails t JOIN clips c ON c.id = t.clip_id
                            WHERE c.video_id = ?
                            """, arguments: [vid]) {
                            // A picture beyond any thumbnail's size (a hostile or damaged row) is left out.
                            let bytes: Data = try t.typed("bytes", "thumbnails")
                            guard bytes.count <= Report.maxPictureBytes else { continue }
                            thumbs[try t.typed("clip_id", "thumbnails"), default: [:]][try t.typed("kind", "thumbnails")] = (try t.typed("mime_type", "thumbnails"), bytes)
                        }
                    }
                    func image(_ t: (mime: String, bytes: Data)?) -> Int? {
                        guard let t, t.mime.hasPrefix("image/"), !t.mime.contains(where: { ";,\"'<> ".contains($0) }) else { return nil }
                        images.append("data:\(t.mime);base64,\(t.bytes.base64EncodedString())")
                        return images.count - 1
                    }
                    var clips: [Clip] = []
                    let otherSettings = try Int.fetchOne(db, sql: "SELECT count(*) FROM clips WHERE video_id = ? AND settings_key IS NOT ?",
                                                         arguments: [vid, key]) ?? 0
                    for c in try Row.fetchAll(db, sql: "SELECT * FROM clips WHERE video_id = ? AND (? IS NULL OR settings_key = ?) ORDER BY clip_index, id",
                                              arguments: [vid, key, key]) {
                        let id: Int64 = try c.typed("id", "clips")
                        let clipAnswers = answers[id] ?? []
                        if let needle {
                            // The page's own text for a clip: path, description, "question answer" lines.
                            let hay = ([try v.typed("path", "videos") as String, descriptions[id] ?? ""]
                                       + clipAnswers.map { $0.joined(separator: " ") }).joined(separator: "\n").lowercased()
                            guard hay.range(of: needle, options: .literal) != nil else { continue }
                        }
                        clips.append(Clip(index: try c.typed("clip_index", "clips"), start: try c.typed("start_seconds", "clips"), end: try c.typed("end_seconds", "clips"), frames: try c.typed("frames", "clips"),
                                          description: descriptions[id], answers: clipAnswers,
                                          frame: image(thumbs[id]?["frame"]), strip: options.strips ? image(thumbs[id]?["strip"]) : nil))
                    }
                    // A failed or damaged file stays, for the page's list of problems (which no
                    // search filters); other files without a matching clip are left out.
                    let status: String = try v.typed("status", "videos")
                    if needle != nil && clips.isEmpty && status != "failed" && status != "damaged" { continue }
                    videos.append(Video(path: try v.typed("path", "videos"), status: try v.typed("status", "videos"), errorKind: try v.typed("error_kind", "videos"), error: try v.typed("error", "videos"),
                                        duration: try v.typed("duration", "videos"), width: try v.typed("width", "videos"), height: try v.typed("height", "videos"), codec: try v.typed("codec", "videos"),
                                        summary: summary, clips: clips, otherSettingsClips: otherSettings))
                }
                let now = ISO8601DateFormatter().string(from: Date())
                return Payload(database: path, generatedAt: now, search: options.search, runs: runs, videos: videos)
            }
        } catch let e as PipelineError {
            throw e
        } catch {
            throw PipelineError.database(path: path, reason: Store.reason(error))
        }
        // Keys sorted: one database gives one page, byte for byte.
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        let data = scriptSafe(String(decoding: try encoder.encode(payload), as: UTF8.self))
        encoder.keyEncodingStrategy = .useDefaultKeys
        let pictures = scriptSafe(String(decoding: try encoder.encode(images), as: UTF8.self))
        // The template is cut at its markers once, so no text from the database is read as one.
        var out = "", rest = Substring(page)
        for (marker, value) in [("@@TITLE@@", escape("reelql report: \((path as NSString).lastPathComponent)")),
                                ("@@IMAGES@@", pictures), ("@@DATA@@", data)] {
            guard let r = rest.range(of: marker) else { continue }
            out += rest[..<r.lowerBound] + value
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    /// JSON that can sit inside a `<script>` element: no `<` (so no `</script>` or `<!--`).
    static func scriptSafe(_ json: String) -> String {
        replacingScalars(json) { u in
            switch u {
            case "<": "\\u003c"
            case "\u{2028}": "\\u2028"
            case "\u{2029}": "\\u2029"
            default: nil
            }
        }
    }

    /// Text for HTML element content and attribute values.
    static func escape(_ s: String) -> String {
        replacingScalars(s) { u in
            switch u {
            case "&": "&amp;"
            case "<": "&lt;"
            case ">": "&gt;"
            case "\"": "&quot;"
            case "'": "&#39;"
            default: nil
            }
        }
    }

    /// `s` with each scalar `replacement` names replaced. Scalar by scalar: a "<" that a
    /// combining mark follows is one Character (and one grapheme for Foundation's search), but
    /// still a "<" to the HTML parser.
    static func replacingScalars(_ s: String, _ replacement: (Unicode.Scalar) -> String?) -> String {
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if let r = replacement(u) { out.append(contentsOf: r.unicodeScalars) } else { out.append(u) }
        }
        return String(out)
    }

    static let page = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --bg: #f6f7f9; --card: #fff; --accent: #2456c8; --bad: #b3261e; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; z-index: 2; background: var(--card); border-bottom: 1px solid var(--line); padding: 10px 20px; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
header h1 { font-size: 17px; margin: 0; }
header .stats { color: var(--muted); }
#search { flex: 1; min-width: 220px; max-width: 480px; padding: 7px 10px; font: inherit; border: 1px solid var(--line); border-radius: 6px; }
main { padding: 12px 20px 40px; max-width: 1200px; margin: 0 auto; }
section { margin: 16px 0; }
h2 { font-size: 15px; margin: 18px 0 8px; }
table.runs { border-collapse: collapse; width: 100%; background: var(--card); }
table.runs td, table.runs th { border: 1px solid var(--line); padding: 4px 8px; text-align: left; font-variant-numeric: tabular-nums; }
.problems li { margin: 3px 0; }
.video { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 12px 0; }
.video > .head { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.video .path { font-weight: 600; word-break: break-all; }
.status { font-size: 12px; padding: 1px 7px; border-radius: 9px; background: #e7ecf5; }
.status.failed { background: #fbe3e1; color: var(--bad); }
.status.damaged { background: #fbefd9; color: var(--warn); }
.status.missing { background: #eee; color: var(--muted); }
.meta, .error, .summary { color: var(--muted); margin: 3px 0; }
.error { color: var(--bad); }
.clips { display: grid; gap: 8px; margin-top: 8px; }
.clip { display: grid; grid-template-columns: 180px 1fr; gap: 12px; border-top: 1px solid var(--line); padding-top: 8px;
        content-visibility: auto; contain-intrinsic-size: auto 120px; }
.clip img.frame { width: 180px; height: auto; border-radius: 4px; background: #ddd; display: block; }
.clip img.strip { max-width: 100%; height: auto; margin-top: 6px; border-radius: 3px; display: block; }
.clip .time { font-variant-numeric: tabular-nums; color: var(--accent); font-weight: 600; }
.clip .answers { margin: 4px 0 0; padding-left: 18px; }
.clip .q { color: var(--muted); }
.nothumb { width: 180px; height: 100px; border-radius: 4px; background: #e4e6ea; color: var(--muted); display: flex; align-items: center; justify-content: center; font-size: 12px; }
#more { height: 40px; }
.empty { color: var(--muted); padding: 20px 0; }
@media (max-width: 640px) { .clip { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <input id="search" type="search" placeholder="Filter clips: words in descriptions, answers or paths" autocomplete="off">
  <span class="stats" id="stats"></span>
</header>
<main>
  <section id="runs-section"><h2>Runs</h2><table class="runs" id="runs"></table></section>
  <section id="problems-section"><h2>Failed and damaged files</h2><ul class="problems" id="problems"></ul></section>
  <section><h2>Videos</h2><div id="videos"></div><div id="more"></div></section>
</main>
<script type="application/json" id="reelql-images">@@IMAGES@@</script>
<script type="application/json" id="reelql-data">@@DATA@@</script>
<script>
"use strict";
(function () {
  const t0 = performance.now();
  const data = JSON.parse(document.getElementById("reelql-data").textContent);
  const images = JSON.parse(document.getElementById("reelql-images").textContent);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function time(s) {
    const t = Math.floor(s), h = Math.floor(t / 3600), m = Math.floor(t / 60) % 60, sec = t % 60, frac = s - t;
    const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
    const tail = frac > 0.0005 ? "." + String(Math.round(frac * 10) % 10) : "";
    return (h ? h + ":" + mm : m) + ":" + ss + tail;
  }
  document.getElementById("title").textContent = "reelql · " + data.database.split("/").pop();
  // Runs
  const runs = document.getElementById("runs");
  const hr = runs.insertRow();
  for (const h of ["run", "started", "status", "shard", "videos", "failed", "clips done", "reused", "seconds", "model"]) hr.appendChild(el("th", null, h));
  for (const r of data.runs) {
    const row = runs.insertRow();
    for (const v of [r.id, r.started_at, r.status, r.shard || "", r.videos_seen, r.videos_failed, r.clips_done, r.clips_skipped,
                     r.seconds == null ? "" : r.seconds.toFixed(1), r.model]) row.insertCell().textContent = String(v);
  }
  if (!data.runs.length) document.getElementById("runs-section").hidden = true;
  // Failed and damaged files
  const problems = document.getElementById("problems");
  for (const v of data.videos) {
    if (v.status !== "failed" && v.status !== "damaged") continue;
    const li = el("li");
    li.appendChild(el("span", "status " + v.status, v.status));
    li.appendChild(document.createTextNode(" " + v.path + (v.error ? " — " + v.error : (v.error_kind ? " — " + v.error_kind : ""))));
    problems.appendChild(li);
  }
  if (!problems.children.length) document.getElementById("problems-section").hidden = true;
  // Every clip, flattened in video order, with its searchable text.
  const items = [];
  data.videos.forEach((v, vi) => {
    if (!v.clips.length) items.push({ vi: vi, clip: null, hay: v.path.toLowerCase() });
    for (const c of v.clips) {
      const hay = [v.path, c.description || ""].concat(c.answers.map(a => a[0] + " " + a[1])).join("\n").toLowerCase();
      items.push({ vi: vi, clip: c, hay: hay });
    }
  });
  const container = document.getElementById("videos");
  const more = document.getElementById("more");
  const batch = 60;
  let shown = [], next = 0, lastVideo = -1, lastList = null;
  function videoBlock(v) {
    const box = el("div", "video");
    box.dataset.path = v.path;
    const head = el("div", "head");
    head.appendChild(el("span", "path", v.path));
    head.appendChild(el("span", "status " + v.status, v.status));
    box.appendChild(head);
    const meta = [];
    if (v.duration != null) meta.push(time(v.duration));
    if (v.width) meta.push(v.width + "×" + v.height);
    if (v.codec) meta.push(v.codec);
    meta.push(v.clips.length + " clip" + (v.clips.length === 1 ? "" : "s"));
    if (v.other_settings_clips) meta.push(v.other_settings_clips + " more under other settings, not shown");
    box.appendChild(el("div", "meta", meta.join(" · ")));
    if (v.error) box.appendChild(el("div", "error", (v.error_kind ? v.error_kind + ": " : "") + v.error));
    if (v.summary) box.appendChild(el("div", "summary", v.summary));
    const list = el("div", "clips");
    box.appendChild(list);
    container.appendChild(box);
    return list;
  }
  function clipCard(c) {
    const card = el("div", "clip");
    card.dataset.clip = c.index;
    const pic = el("div");
    if (c.frame != null) {
      const img = el("img", "frame");
      img.alt = "clip " + c.index; img.decoding = "async"; img.src = images[c.frame];
      pic.appendChild(img);
    } else pic.appendChild(el("div", "nothumb", "no picture"));
    card.appendChild(pic);
    const body = el("div");
    body.appendChild(el("div", "time", time(c.start) + " – " + time(c.end)));
    body.appendChild(el("div", "description", c.description || ""));
    if (c.answers.length) {
      const ul = el("ul", "answers");
      for (const a of c.answers) {
        const li = el("li");
        li.appendChild(el("span", "q", a[0] + " "));
        li.appendChild(el("span", "a", a[1]));
        ul.appendChild(li);
      }
      body.appendChild(ul);
    }
    if (c.strip != null) {
      const strip = el("img", "strip");
      strip.alt = "frames of clip " + c.index; strip.decoding = "async"; strip.loading = "lazy"; strip.src = images[c.strip];
      body.appendChild(strip);
    }
    card.appendChild(body);
    return card;
  }
  function renderMore() {
    const end = Math.min(shown.length, next + batch);
    for (; next < end; next++) {
      const it = shown[next];
      if (it.vi !== lastVideo) { lastList = videoBlock(data.videos[it.vi]); lastVideo = it.vi; }
      if (it.clip) lastList.appendChild(clipCard(it.clip));
    }
    document.body.dataset.rendered = String(next);
  }
  function apply(query) {
    const q = query.trim().toLowerCase();
    shown = q ? items.filter(it => it.clip && it.hay.includes(q)) : items;
    container.textContent = ""; next = 0; lastVideo = -1; lastList = null;
    renderMore();
    const clips = shown.filter(it => it.clip).length, videos = new Set(shown.map(it => it.vi)).size;
    document.getElementById("stats").textContent = clips + " clip" + (clips === 1 ? "" : "s") + " in " +
      videos + " video" + (videos === 1 ? "" : "s") +
      (data.search ? " (report made with --search " + JSON.stringify(data.search) + ")" : "");
    document.body.dataset.matches = String(clips);
    if (!shown.length) container.appendChild(el("div", "empty", "No clip matches."));
  }
  // Load the next batch whenever the end of the list comes near the screen.
  new IntersectionObserver(entries => { if (entries.some(e => e.isIntersecting) && next < shown.length) renderMore(); },
                           { rootMargin: "1200px" }).observe(more);
  const search = document.getElementById("search");
  let timer = 0;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => apply(search.value), 80); });
  /** Renders every remaining card now (for printing, or for a test that counts them). */
  window.reelqlRenderAll = function () { while (next < shown.length) renderMore(); };
  window.reelqlSearch = function (q) { search.value = q; apply(q); };
  const initial = new URLSearchParams(location.hash.slice(1)).get("q") || "";
  search.value = initial;
  apply(initial);
  // From navigation start (reading and parsing the page included) to the first cards on screen.
  document.body.dataset.firstScreenMs = String(Math.round(performance.now()));
  document.body.dataset.scriptMs = String(Math.round(performance.now() - t0));
})();
</script>
</body>
</html>
"""#
}
