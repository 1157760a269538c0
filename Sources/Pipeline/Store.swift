import Foundation
import GRDB
import Media
import VLM

/// The results database (SQLite through GRDB): runs, videos, clips, results, an FTS5 index over
/// result text kept in sync by triggers, and views for people. WAL mode; migrations only append.
public final class Store: @unchecked Sendable {
    public let path: String
    public let db: DatabasePool

    /// An exclusive lock (flock) on the database file while a run or a merge writes to it.
    private var writerLock: Int32 = -1
    private let lockGuard = NSLock()

    public init(path: String) throws {
        self.path = path
        // Another database's side file: SQLite would drop what is written there.
        for side in ["-wal", "-shm", "-journal"] where path.hasSuffix(side) {
            let base = String(path.dropLast(side.count))
            if FileStatus.of(base).status?.kind == .regular {
                throw PipelineError.database(path: path, reason: "it is the \(side) file of the database \(base); name another database")
            }
        }
        try Store.checkFile(path, mayBeAbsent: true)
        try Store.refuseHardLinks(path)
        let dir = PathBytes.parent(path)
        if !dir.isEmpty && !FileManager.default.fileExists(atPath: dir) {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw PipelineError.database(path: path, reason: "cannot create its folder \(dir): \(Store.reason(error))")
            }
        }
        try Store.refuseForeign(path)
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(30)
        // WAL with synchronous=NORMAL: a commit is durable against the process dying (kill -9
        // loses at most the clip in flight); only a power cut can lose the last commits.
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        do {
            db = try DatabasePool(path: Store.plainName(path), configuration: config)
            try Store.migrator.migrate(db)
            try db.read { db in try Store.checkSchema(db, path: path, requireThumbnails: true) }
        } catch let e as PipelineError {
            throw e
        } catch {
            throw PipelineError.database(path: path, reason: Store.reason(error))
        }
    }

    deinit {
        if writerLock >= 0 { close(writerLock) }
    }

    /// A database is a regular file (or not there yet): a device such as /dev/full, a FIFO or a
    /// folder is refused before SQLite touches it (it would create PATH-journal beside it).
    static func checkFile(_ path: String, mayBeAbsent: Bool) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT && mayBeAbsent { return }
            throw PipelineError.database(path: path, reason: errno == ENOENT ? "no such database" : String(cString: strerror(errno)))
        }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let what = kind == S_IFDIR ? "a folder" : kind == S_IFCHR ? "a character device" : kind == S_IFBLK ? "a block device"
                : kind == S_IFIFO ? "a named pipe (FIFO)" : kind == S_IFSOCK ? "a socket" : "not a regular file"
            throw PipelineError.database(path: path, reason: "\(what), not a database file")
        }
    }

    /// A database file with more than one name (hard links) is not written: SQLite keeps the
    /// write-ahead log beside the name it was opened by, so a writer through a second name works on
    /// a stale view and its log, checkpointed later, corrupts the file for every name.
    static func refuseHardLinks(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0, st.st_nlink > 1 else { return }
        throw PipelineError.database(path: path, reason: "the file has \(st.st_nlink) names (hard links); SQLite keeps a database's write-ahead log beside each name, so writing through two of them corrupts it: remove the other names (copy the file, cp, where a second one is wanted)")
    }

    /// An existing SQLite file that another program made (tables, but none of reelql's
    /// migrations) is refused before it is opened for writing: opening it would switch it to WAL
    /// and add reelql's tables. Checked read-only.
    static func refuseForeign(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0, st.st_size > 0 else { return }
        var config = Configuration()
        config.readonly = true
        let tables: [String]
        do {
            let queue = try DatabaseQueue(path: uri(path, "mode=ro"), configuration: config)
            defer { try? queue.close() }
            tables = try queue.read { db in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'") }
        } catch {
            throw PipelineError.database(path: path, reason: "not a database reelql can use: \(reason(error))")
        }
        if !tables.isEmpty && !tables.contains("grdb_migrations") {
            let shown = tables.prefix(5).joined(separator: ", ")
            throw PipelineError.database(path: path, reason: "not a reelql database (it has tables \(shown)\(tables.count > 5 ? ", …" : "")); name another database")
        }
    }

    /// The tables every reelql database has, with every column its own migrations gave them (a
    /// dropped table or column is damage, reported before any work; before, reading a row without
    /// the column trapped). A database from an older reelql is checked against the columns of
    /// its migrations, and reads as it did. Triggers run code on reelql's own writes (one looping
    /// for ever hung `run` and `merge`), so every trigger must be one the migrations make, word
    /// for word; so must the views under reelql's names, which `report` and `search` read. Views
    /// of other names (a user's own queries) are left alone.
    static func checkSchema(_ db: Database, path: String, requireThumbnails: Bool) throws {
        var tables = ["runs", "videos", "clips", "results"]
        if requireThumbnails { tables += ["thumbnails", "results_fts"] }
        for table in tables where try !db.tableExists(table) {
            throw PipelineError.database(path: path, reason: "not a reelql database, or a damaged one: it has no table '\(table)'")
        }
        let applied = try db.tableExists("grdb_migrations") ? Set(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")) : []
        let ours = migrator.migrations
        // Its last migration, if every one it applied is ours; else (foreign, newer) all of ours.
        // (reelql has migrations: `ours` is never empty.)
        guard let newest = ours.last else { return }
        let last = applied.isSubset(of: Set(ours)) ? ours.last(where: applied.contains) : nil
        let expected = expectedSchema(upTo: last ?? newest)
        // A table its recorded migrations made is missing: damage (a dropped thumbnails table
        // would have a merge leave every picture out), not an older database.
        if last != nil {
            for table in (Array(expected.columns.keys) + Array(expected.tables.keys)).sorted() where try !db.tableExists(table) {
                throw PipelineError.database(path: path, reason: "not a reelql database, or a damaged one: it has no table '\(table)', which its migrations made")
            }
        }
        for (table, columns) in expected.columns.sorted(by: { $0.key < $1.key }) where try db.tableExists(table) {
            let have = Set(try db.columns(in: table).map(\.name))
            if let missing = columns.subtracting(have).sorted().first {
                throw PipelineError.database(path: path, reason: "not a reelql database, or a damaged one: its table '\(table)' has no column '\(missing)'")
            }
        }
        // (And the full-text index, which `search` reads: another table under its name answered
        // searches with other rows.)
        for row in try Row.fetchAll(db, sql: "SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'view') OR lower(name) = 'results_fts' ORDER BY name") {
            let type: String = row["type"] ?? "", name: String = row["name"] ?? "", sql: String? = row["sql"]
            // Names as SQLite compares them: without case (CLIP_RESULTS is clip_results).
            let made = type == "trigger" ? expected.triggers : type == "view" ? expected.views : expected.tables, key = name.lowercased()
            if type == "view" && made[key] == nil && !SchemaObjects.viewNames.contains(key) { continue }
            guard let sql, made[key] == sql else {
                if type == "table" {
                    throw PipelineError.database(path: path, reason: "not a reelql database, or a damaged one: its table '\(name)' is not reelql's full-text index")
                }
                // A newer reelql's database may hold objects this one does not know: no advice to
                // remove what that version needs.
                guard last != nil else {
                    throw PipelineError.database(path: path, reason: "it was written by a newer reelql (migrations this one does not know), whose \(type) '\(name)' this one cannot check; use that version")
                }
                let drop = "DROP \(type.uppercased()) \"\(name.replacingOccurrences(of: "\"", with: "\"\""))\""
                throw PipelineError.database(path: path, reason: "its \(type) '\(name)' is not the one reelql makes\(type == "trigger" ? " (a trigger runs on reelql's own writes)" : ""): remove it (\(drop)) or name another database")
            }
        }
    }

    /// What reelql's migrations up to one of them make: the columns of its tables, and its
    /// triggers and views with their SQL.
    struct SchemaObjects {
        var columns: [String: Set<String>] = [:]
        /// By lowercased name.
        var triggers: [String: String] = [:]
        var views: [String: String] = [:]
        /// The full-text index's table.
        var tables: [String: String] = [:]
        /// Every view any migration makes (one a later migration drops is still reelql's name).
        static let viewNames = Set(Store.migrator.migrations.flatMap { Store.expectedSchema(upTo: $0).views.keys })
    }

    /// The columns of reelql's tables as its migrations up to `last` make them.
    static func expectedColumns(upTo last: String) -> [String: Set<String>] { expectedSchema(upTo: last).columns }

    /// Read off an empty database migrated in memory, once per migration (every open of a
    /// database checks its schema).
    static func expectedSchema(upTo last: String) -> SchemaObjects {
        expectedSchemaLock.lock()
        defer { expectedSchemaLock.unlock() }
        if let known = expectedSchemaCache[last] { return known }
        let schema = migratedSchema(upTo: last)
        if !schema.columns.isEmpty { expectedSchemaCache[last] = schema }
        return schema
    }
    nonisolated(unsafe) private static var expectedSchemaCache: [String: SchemaObjects] = [:]
    private static let expectedSchemaLock = NSLock()

    private static func migratedSchema(upTo last: String) -> SchemaObjects {
        guard let queue = try? DatabaseQueue() else { return SchemaObjects() }
        do {
            try migrator.migrate(queue, upTo: last)
            return try queue.read { db in
                var out = SchemaObjects()
                for table in ["runs", "videos", "clips", "results", "thumbnails"] where try db.tableExists(table) {
                    out.columns[table] = Set(try db.columns(in: table).map(\.name))
                }
                for row in try Row.fetchAll(db, sql: "SELECT type, name, sql FROM sqlite_master WHERE type IN ('trigger', 'view') OR name = 'results_fts'") {
                    guard let name: String = row["name"], let sql: String = row["sql"] else { continue }
                    switch row["type"] as String? {
                    case "trigger": out.triggers[name.lowercased()] = sql
                    case "view": out.views[name.lowercased()] = sql
                    default: out.tables[name.lowercased()] = sql
                    }
                }
                return out
            }
        } catch {
            return SchemaObjects()
        }
    }

    /// An error's message without the SQL that caused it (GRDB's description quotes the statement).
    static func reason(_ error: Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "SQLite error \(e.resultCode.rawValue)" }
        if let e = error as? PipelineError { return e.localizedDescription }
        return error.localizedDescription
    }

    /// `path` as an SQLite URI (file:…?query), every byte that is not unreserved percent-encoded.
    static func uri(_ path: String, _ query: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var out = "file:"
        for b in absolute.utf8 {
            if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || "/-._~".utf8.contains(b) {
                out.append(Character(Unicode.Scalar(b)))
            } else {
                out += String(format: "%%%02X", b)
            }
        }
        return out + "?" + query
    }

    /// Opens a database for reading only: nothing in it or its header changes, and one on a
    /// read-only mount opens too (read as immutable when SQLite cannot make its shared-memory
    /// file there). Checks that it is a reelql database.
    public static func openReadOnly(_ path: String) throws -> DatabaseQueue {
        try checkFile(path, mayBeAbsent: false)
        var config = Configuration()
        config.readonly = true
        var firstError: Error?
        for query in ["mode=ro", "mode=ro&immutable=1"] {
            if query.contains("immutable") { try refuseUnmergedLog(path) }
            do {
                let queue = try DatabaseQueue(path: uri(path, query), configuration: config)
                try queue.read { db in try checkSchema(db, path: path, requireThumbnails: false) }
                return queue
            } catch let e as PipelineError {
                throw e
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        throw PipelineError.database(path: path, reason: "cannot open it read-only: \(firstError.map(reason) ?? "unknown error")")
    }

    /// Takes the database for this process's writes (a run or a merge): a second writer is
    /// refused at once, naming the run that holds it; runs that a dead process left `running`
    /// (kill -9, a power cut) are then marked `abandoned`. Returns how many were.
    @discardableResult
    public func lockForWriting() throws -> Int {
        lockGuard.lock(); defer { lockGuard.unlock() }
        if writerLock < 0 {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw PipelineError.database(path: path, reason: "cannot open it: \(String(cString: strerror(errno)))") }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                let busy = errno == EWOULDBLOCK
                let why = String(cString: strerror(errno))
                close(fd)
                guard busy else { throw PipelineError.database(path: path, reason: "cannot lock it: \(why)") }
                let holder = try? db.read { db in
                    try Row.fetchOne(db, sql: "SELECT id, started_at FROM runs WHERE status = 'running' ORDER BY id DESC LIMIT 1")
                }
                if let row = holder ?? nil {
                    throw PipelineError.databaseInUse(path: path, holder: "run \((row["id"] as DatabaseValue).description) (started \((row["started_at"] as DatabaseValue).description))")
                }
                throw PipelineError.databaseInUse(path: path, holder: "a merge, or a run that has not yet recorded itself,")
            }
            writerLock = fd
        }
        return try db.write { db in
            try db.execute(sql: "UPDATE runs SET status = ?, finished_at = coalesce(finished_at, ?) WHERE status = ?",
                           arguments: [RunStatus.abandoned.rawValue, Store.now(), RunStatus.running.rawValue])
            return db.changesCount
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
            CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                status TEXT NOT NULL,              -- running, finished, interrupted
                spec TEXT NOT NULL,                -- the pipeline spec, as JSON
                model TEXT NOT NULL,
                settings_key TEXT NOT NULL,
                shard TEXT,
                reelql_version TEXT NOT NULL,
                videos_seen INTEGER NOT NULL DEFAULT 0,
                videos_failed INTEGER NOT NULL DEFAULT 0,
                clips_done INTEGER NOT NULL DEFAULT 0,
                clips_skipped INTEGER NOT NULL DEFAULT 0,
                tokens_generated INTEGER NOT NULL DEFAULT 0,
                seconds REAL
            );
            CREATE TABLE videos (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL UNIQUE,
                size INTEGER NOT NULL,
                mtime REAL NOT NULL,
                fingerprint TEXT NOT NULL,
                duration REAL,
                width INTEGER,
                height INTEGER,
                fps REAL,
                codec TEXT,
                frame_count INTEGER,
                status TEXT NOT NULL,              -- pending, done, damaged, failed, missing
                error_kind TEXT,
                error TEXT,
                last_run_id INTEGER REFERENCES runs(id),
                updated_at TEXT NOT NULL
            );
            CREATE TABLE clips (
                id INTEGER PRIMARY KEY,
                video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
                clip_index INTEGER NOT NULL,
                start_seconds REAL NOT NULL,
                end_seconds REAL NOT NULL,
                frames INTEGER NOT NULL,
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                settings_key TEXT NOT NULL,
                run_id INTEGER REFERENCES runs(id),
                done_at TEXT NOT NULL,
                UNIQUE (video_id, clip_index, settings_key)
            );
            CREATE TABLE results (
                id INTEGER PRIMARY KEY,
                video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
                clip_id INTEGER REFERENCES clips(id) ON DELETE CASCADE,   -- NULL for a video summary
                clip_index INTEGER NOT NULL,                              -- -1 for a video summary
                kind TEXT NOT NULL CHECK (kind IN ('description', 'answer', 'summary')),
                prompt TEXT NOT NULL,
                text TEXT NOT NULL,
                model TEXT NOT NULL,
                settings TEXT NOT NULL,            -- generation settings, as JSON
                settings_key TEXT NOT NULL,
                prompt_tokens INTEGER,
                generated_tokens INTEGER,
                vision_seconds REAL,
                prefill_seconds REAL,
                generate_seconds REAL,
                UNIQUE (video_id, clip_index, kind, prompt, settings_key)
            );
            CREATE INDEX results_clip ON results(clip_id);
            CREATE VIRTUAL TABLE results_fts USING fts5(text, content='results', content_rowid='id');
            CREATE TRIGGER results_ai AFTER INSERT ON results BEGIN
                INSERT INTO results_fts(rowid, text) VALUES (new.id, new.text);
            END;
            CREATE TRIGGER results_ad AFTER DELETE ON results BEGIN
                INSERT INTO results_fts(results_fts, rowid, text) VALUES ('delete', old.id, old.text);
            END;
            CREATE TRIGGER results_au AFTER UPDATE ON results BEGIN
                INSERT INTO results_fts(results_fts, rowid, text) VALUES ('delete', old.id, old.text);
                INSERT INTO results_fts(rowid, text) VALUES (new.id, new.text);
            END;
            -- One row per clip: its video, time range, description and answers.
            CREATE VIEW clip_results AS
                SELECT v.path, v.id AS video_id, c.id AS clip_id, c.clip_index, c.start_seconds, c.end_seconds, c.frames,
                       (SELECT r.text FROM results r WHERE r.clip_id = c.id AND r.kind = 'description') AS description,
                       (SELECT group_concat(r.prompt || ' → ' || r.text, char(10)) FROM results r
                         WHERE r.clip_id = c.id AND r.kind = 'answer') AS answers,
                       c.settings_key, c.run_id
                FROM clips c JOIN videos v ON v.id = c.video_id;
            -- One row per answer, for "the answer to question Q for every video".
            CREATE VIEW answers AS
                SELECT v.path, c.clip_index, c.start_seconds, c.end_seconds, r.prompt AS question, r.text AS answer
                FROM results r JOIN clips c ON c.id = r.clip_id JOIN videos v ON v.id = r.video_id
                WHERE r.kind = 'answer';
            -- One row per video: its state and, once all its clips are done, its summary.
            CREATE VIEW video_results AS
                SELECT v.path, v.status, v.error_kind, v.error, v.duration, v.width, v.height, v.codec,
                       (SELECT count(*) FROM clips c WHERE c.video_id = v.id) AS clips,
                       (SELECT r.text FROM results r WHERE r.video_id = v.id AND r.kind = 'summary') AS summary
                FROM videos v;
            """)
        }
        m.registerMigration("v2: thumbnails, FTS found by Datasette") { db in
            try db.execute(sql: """
            -- Pictures of each clip: the middle sampled frame and a strip of up to 8 sampled frames.
            CREATE TABLE thumbnails (
                id INTEGER PRIMARY KEY,
                clip_id INTEGER NOT NULL REFERENCES clips(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('frame', 'strip')),
                mime_type TEXT NOT NULL,
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                bytes BLOB NOT NULL,
                UNIQUE (clip_id, kind)
            );
            -- Datasette recognises a table's full-text index by content="table" in double quotes
            -- (v1 wrote single quotes): the same index, declared again and rebuilt from results.
            DROP TABLE results_fts;
            CREATE VIRTUAL TABLE results_fts USING fts5(text, content="results", content_rowid="id");
            INSERT INTO results_fts(results_fts) VALUES ('rebuild');
            """)
        }
        m.registerMigration("v3: images beside videos") { db in
            try db.execute(sql: """
            -- Whether a file is a video (cut into clips) or a still image (one description, prompted as an image).
            ALTER TABLE videos ADD COLUMN media TEXT NOT NULL DEFAULT 'video' CHECK (media IN ('video', 'image'));
            DROP VIEW clip_results;
            CREATE VIEW clip_results AS
                SELECT v.path, v.id AS video_id, c.id AS clip_id, v.media, c.clip_index, c.start_seconds, c.end_seconds, c.frames,
                       (SELECT r.text FROM results r WHERE r.clip_id = c.id AND r.kind = 'description') AS description,
                       (SELECT group_concat(r.prompt || ' → ' || r.text, char(10)) FROM results r
                         WHERE r.clip_id = c.id AND r.kind = 'answer') AS answers,
                       c.settings_key, c.run_id
                FROM clips c JOIN videos v ON v.id = c.video_id;
            DROP VIEW video_results;
            CREATE VIEW video_results AS
                SELECT v.path, v.media, v.status, v.error_kind, v.error, v.duration, v.width, v.height, v.codec,
                       (SELECT count(*) FROM clips c WHERE c.video_id = v.id) AS clips,
                       (SELECT r.text FROM results r WHERE r.video_id = v.id AND r.kind = 'summary') AS summary
                FROM videos v;
            """)
        }
        return m
    }

    // MARK: - Runs

    /// A run's `status`.
    public enum RunStatus: String, Sendable, CaseIterable {
        case running, finished, interrupted
        /// Stopped by an error (a full disk, a damaged database).
        case failed
        /// Left `running` by a process that died (kill -9, a power cut); set by the next run.
        case abandoned
    }

    /// A video's `status`.
    public enum VideoStatus: String, Sendable, CaseIterable {
        case pending, done, damaged, failed, missing
    }

    public func startRun(spec: String, model: String, settingsKey: String, shard: String?) throws -> Int64 {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO runs (started_at, status, spec, model, settings_key, shard, reelql_version)
                VALUES (?, 'running', ?, ?, ?, ?, ?)
                """, arguments: [Store.now(), spec, model, settingsKey, shard, Store.version])
            return db.lastInsertedRowID
        }
    }

    public struct RunStats: Sendable {
        public var videosSeen = 0, videosFailed = 0, clipsDone = 0, clipsSkipped = 0, tokensGenerated = 0
        public init() {}
    }

    public func finishRun(_ id: Int64, status: RunStatus, stats: RunStats, seconds: Double) throws {
        try db.write { db in
            try db.execute(sql: """
                UPDATE runs SET finished_at = ?, status = ?, videos_seen = ?, videos_failed = ?, clips_done = ?,
                       clips_skipped = ?, tokens_generated = ?, seconds = ? WHERE id = ?
                """, arguments: [Store.now(), status.rawValue, stats.videosSeen, stats.videosFailed, stats.clipsDone,
                                 stats.clipsSkipped, stats.tokensGenerated, seconds, id])
        }
    }

    /// A running run's counts so far (after each finished video): a run killed before its end
    /// keeps what it did, for throughput queries, rather than zeros.
    public func recordProgress(_ id: Int64, stats: RunStats) throws {
        try db.write { db in try Self.recordProgress(db, id, stats: stats) }
    }

    private static func recordProgress(_ db: Database, _ id: Int64, stats: RunStats) throws {
        try db.execute(sql: """
            UPDATE runs SET videos_seen = ?, videos_failed = ?, clips_done = ?, clips_skipped = ?, tokens_generated = ?
            WHERE id = ? AND status = 'running'
            """, arguments: [stats.videosSeen, stats.videosFailed, stats.clipsDone, stats.clipsSkipped, stats.tokensGenerated, id])
    }

    /// Sets a run's final status without its counts (a run stopped from a signal handler).
    public func setRunStatus(_ id: Int64, _ status: RunStatus) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", arguments: [status.rawValue, Store.now(), id])
        }
    }

    // MARK: - Videos

    /// Records a file seen by a run. A changed fingerprint drops the file's earlier clips and results.
    /// Returns the video's id.
    public func upsertVideo(path: String, size: Int64, mtime: Double, fingerprint: String, run: Int64) throws -> Int64 {
        try db.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT id, fingerprint FROM videos WHERE path = ?", arguments: [path]) {
                let id: Int64 = try row.typed("id", "videos")
                if (try? row.typed("fingerprint", "videos") as String) != fingerprint {
                    try db.execute(sql: "DELETE FROM results WHERE video_id = ?", arguments: [id])
                    try db.execute(sql: "DELETE FROM clips WHERE video_id = ?", arguments: [id])
                    try db.execute(sql: """
                        UPDATE videos SET size = ?, mtime = ?, fingerprint = ?, status = 'pending', error_kind = NULL, error = NULL,
                               last_run_id = ?, updated_at = ? WHERE id = ?
                        """, arguments: [size, mtime, fingerprint, run, Store.now(), id])
                } else {
                    // The same content: its results stay; size and mtime are the file's now (a touched
                    // file, or a damaged stored value, is set right).
                    try db.execute(sql: """
                        UPDATE videos SET size = ?, mtime = ?, last_run_id = ?, updated_at = ?,
                               status = CASE WHEN status = 'missing' THEN 'pending' ELSE status END WHERE id = ?
                        """, arguments: [size, mtime, run, Store.now(), id])
                }
                return id
            }
            try db.execute(sql: """
                INSERT INTO videos (path, size, mtime, fingerprint, status, last_run_id, updated_at)
                VALUES (?, ?, ?, ?, 'pending', ?, ?)
                """, arguments: [path, size, mtime, fingerprint, run, Store.now()])
            return db.lastInsertedRowID
        }
    }

    /// Records a file that could not be read (to fingerprint it): its earlier results stay,
    /// whatever they were, until it can be read again. Returns the video's id.
    public func upsertUnreadable(path: String, run: Int64) throws -> Int64 {
        try db.write { db in
            if let id = try Int64.fetchOne(db, sql: "SELECT id FROM videos WHERE path = ?", arguments: [path]) {
                try db.execute(sql: "UPDATE videos SET last_run_id = ?, updated_at = ? WHERE id = ?", arguments: [run, Store.now(), id])
                return id
            }
            try db.execute(sql: """
                INSERT INTO videos (path, size, mtime, fingerprint, status, last_run_id, updated_at)
                VALUES (?, 0, 0, '', 'pending', ?, ?)
                """, arguments: [path, run, Store.now()])
            return db.lastInsertedRowID
        }
    }

    /// What the file holds; `media` says whether it is a video (cut into clips) or a still image.
    public func setVideoInfo(_ id: Int64, duration: Double?, width: Int, height: Int, fps: Double?, codec: String, frameCount: Int?,
                             media: VisualKind = .video) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE videos SET duration = ?, width = ?, height = ?, fps = ?, codec = ?, frame_count = ?, media = ? WHERE id = ?",
                           arguments: [duration, width, height, fps, codec, frameCount, media.rawValue, id])
        }
    }

    /// `progress`: a running run's counts, written in the same transaction (`recordProgress`), so
    /// that a run killed at any point never shows a finished video its counts leave out.
    public func setVideoStatus(_ id: Int64, status: VideoStatus, errorKind: String? = nil, error: String? = nil,
                               progress: (run: Int64, stats: RunStats)? = nil) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE videos SET status = ?, error_kind = ?, error = ?, updated_at = ? WHERE id = ?",
                           arguments: [status.rawValue, errorKind, error, Store.now(), id])
            if let (run, stats) = progress { try Self.recordProgress(db, run, stats: stats) }
        }
    }

    public func videoStatus(_ id: Int64) throws -> VideoStatus? {
        try db.read { db in try String.fetchOne(db, sql: "SELECT status FROM videos WHERE id = ?", arguments: [id]).flatMap(VideoStatus.init) }
    }

    /// Videos under `roots` that the scan did not find any more, of those `inScope` takes (a
    /// shard's run: the paths of its shard).
    public func markMissing(seen: [String], roots: [String], inScope: (String) -> Bool = { _ in true }) throws -> Int {
        // Paths compare as bytes, as the file system and SQLite compare them: Swift's String
        // equality is canonical equivalence, so a deleted "é.mp4" (NFD) was taken for its NFC twin.
        let seenBytes = Set(seen.map { Array($0.utf8) })
        // Each root as itself and as the prefix of what lies under it.
        let rootBytes = roots.map { r -> (exact: [UInt8], under: [UInt8]) in
            let under = Array((r.hasSuffix("/") ? r : r + "/").utf8)
            return (Array(under.dropLast()), under)
        }
        return try db.write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, path FROM videos WHERE status != 'missing'")
            var n = 0
            for row in rows {
                guard let p = try? row.typed("path", "videos") as String, let id = try? row.typed("id", "videos") as Int64 else { continue }
                let bytes = Array(p.utf8)
                let under = rootBytes.contains { root in bytes == root.exact || bytes.starts(with: root.under) }
                if !seenBytes.contains(bytes) && under && inScope(p) {
                    try db.execute(sql: "UPDATE videos SET status = 'missing', updated_at = ? WHERE id = ?", arguments: [Store.now(), id])
                    n += 1
                }
            }
            return n
        }
    }

    // MARK: - Clips and results

    /// The clips of a video done under a settings key, each with its `results` rows (its
    /// description and answers). A clip with fewer, or whose row, results or pictures hold damage
    /// (a value of another type than its column declares, which `report` refuses), is not done:
    /// it is deleted, with its results, its pictures and the video's summary under the key (made
    /// from the clips' descriptions), and done again.
    public func doneClips(video: Int64, settingsKey: String, results: Int) throws -> Set<Int> {
        try db.write { db in
            // A result belongs to its clip by clip_id, or (that link damaged) by index and key.
            let thumbnails = try db.tableExists("thumbnails")
            let damage = """
                ((SELECT count(*) FROM results r WHERE r.clip_id = c.id) < \(results)
                 OR \(try Store.damaged(db, table: "clips", alias: "c"))
                 OR EXISTS (SELECT 1 FROM results r WHERE (r.clip_id = c.id OR (r.video_id = c.video_id AND r.clip_index = c.clip_index
                            AND r.settings_key = c.settings_key)) AND \(try Store.damaged(db, table: "results", alias: "r")))
                 \(thumbnails ? "OR EXISTS (SELECT 1 FROM thumbnails t WHERE t.clip_id = c.id AND \(try Store.damaged(db, table: "thumbnails", alias: "t")))" : ""))
                """
            // Damaged clips of this video whose index or key cannot be read belong to no settings: gone too.
            let doomed = try Int64.fetchAll(db, sql: """
                SELECT c.id FROM clips c WHERE c.video_id = ? AND
                    (c.settings_key = ? OR typeof(c.settings_key) != 'text' OR typeof(c.clip_index) != 'integer') AND \(damage)
                """, arguments: [video, settingsKey])
            // Deleting only when there is damage: a database whose full-text index cannot be
            // opened (its delete trigger) still reuses its done clips, as before.
            if !doomed.isEmpty {
                try db.execute(sql: "DELETE FROM clips WHERE id IN (\(doomed.map(String.init).joined(separator: ", ")))")
                try db.execute(sql: "DELETE FROM results WHERE video_id = ? AND clip_index = -1 AND settings_key = ?", arguments: [video, settingsKey])
            }
            // Damaged results of this video that no clip reaches (their link, index or key
            // damaged too), but another settings' summary: gone, to be made again.
            let stray = try Int64.fetchAll(db, sql: """
                SELECT r.id FROM results r WHERE r.video_id = ? AND \(try Store.damaged(db, table: "results", alias: "r"))
                    AND NOT EXISTS (SELECT 1 FROM clips c WHERE c.id = r.clip_id
                                    OR (c.video_id = r.video_id AND c.clip_index = r.clip_index AND c.settings_key = r.settings_key))
                    AND NOT (r.clip_index = -1 AND typeof(r.settings_key) = 'text' AND r.settings_key != ?)
                """, arguments: [video, settingsKey])
            if !stray.isEmpty { try db.execute(sql: "DELETE FROM results WHERE id IN (\(stray.map(String.init).joined(separator: ", ")))") }
            return Set(try Int.fetchAll(db, sql: "SELECT clip_index FROM clips WHERE video_id = ? AND settings_key = ?", arguments: [video, settingsKey]))
        }
    }

    public struct ResultRow: Sendable {
        public var kind: String
        public var prompt: String
        public var text: String
        /// The generated token ids (not stored; for callers that print them).
        public var tokens: [Int] = []
        public var promptTokens: Int
        public var generatedTokens: Int
        public var visionSeconds: Double
        public var prefillSeconds: Double
        public var generateSeconds: Double
        /// A model's answer as a row of `kind` (description, answer, summary).
        public init(kind: String, _ a: Answer) {
            self.init(kind: kind, prompt: a.prompt, text: a.text, tokens: a.tokens, promptTokens: a.promptTokens,
                      generatedTokens: a.tokens.count, visionSeconds: a.visionSeconds, prefillSeconds: a.prefillSeconds,
                      generateSeconds: a.generateSeconds)
        }
        public init(kind: String, prompt: String, text: String, tokens: [Int] = [], promptTokens: Int, generatedTokens: Int,
                    visionSeconds: Double, prefillSeconds: Double, generateSeconds: Double) {
            self.kind = kind; self.prompt = prompt; self.text = text; self.tokens = tokens; self.promptTokens = promptTokens
            self.generatedTokens = generatedTokens; self.visionSeconds = visionSeconds; self.prefillSeconds = prefillSeconds
            self.generateSeconds = generateSeconds
        }
    }

    public struct ThumbnailRow: Sendable {
        public var kind: String
        public var mimeType: String
        public var width: Int
        public var height: Int
        public var bytes: Data
        public init(kind: String, mimeType: String, width: Int, height: Int, bytes: Data) {
            self.kind = kind; self.mimeType = mimeType; self.width = width; self.height = height; self.bytes = bytes
        }
    }

    /// A finished clip, its results and its thumbnails, in one transaction.
    public func saveClip(video: Int64, index: Int, start: Double, end: Double, frames: Int, width: Int, height: Int,
                         results: [ResultRow], thumbnails: [ThumbnailRow] = [], model: String, settings: String, settingsKey: String,
                         run: Int64) throws {
        let now = Store.now()
        try db.write { db in
            // Rows left under this clip's key (a clip whose row was damaged, results of an
            // earlier clip row) make way for the clip done now.
            try db.execute(sql: "DELETE FROM clips WHERE video_id = ? AND clip_index = ? AND settings_key = ?", arguments: [video, index, settingsKey])
            try db.execute(sql: "DELETE FROM results WHERE video_id = ? AND clip_index = ? AND settings_key = ?", arguments: [video, index, settingsKey])
            try db.cachedStatement(sql: """
                INSERT INTO clips (video_id, clip_index, start_seconds, end_seconds, frames, width, height, settings_key, run_id, done_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [video, index, start, end, frames, width, height, settingsKey, run, now])
            let clip = db.lastInsertedRowID
            for r in results {
                try insert(db, video: video, clip: clip, index: index, r, model: model, settings: settings, settingsKey: settingsKey)
            }
            for t in thumbnails {
                try db.cachedStatement(sql: """
                    INSERT INTO thumbnails (clip_id, kind, mime_type, width, height, bytes) VALUES (?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [clip, t.kind, t.mimeType, t.width, t.height, t.bytes])
            }
        }
    }

    public func saveSummary(video: Int64, _ r: ResultRow, model: String, settings: String, settingsKey: String) throws {
        try db.write { db in try insert(db, video: video, clip: nil, index: -1, r, model: model, settings: settings, settingsKey: settingsKey) }
    }

    private func insert(_ db: Database, video: Int64, clip: Int64?, index: Int, _ r: ResultRow, model: String, settings: String, settingsKey: String) throws {
        try db.cachedStatement(sql: """
            INSERT INTO results (video_id, clip_id, clip_index, kind, prompt, text, model, settings, settings_key,
                                 prompt_tokens, generated_tokens, vision_seconds, prefill_seconds, generate_seconds)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [video, clip, index, r.kind, r.prompt, r.text, model, settings, settingsKey, r.promptTokens,
                                     r.generatedTokens, r.visionSeconds, r.prefillSeconds, r.generateSeconds])
    }

    /// Whether the video has its summary under a settings key (a damaged one is gone by then:
    /// `doneClips` removes it).
    public func hasSummary(video: Int64, settingsKey: String) throws -> Bool {
        try db.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM results WHERE video_id = ? AND kind = 'summary' AND settings_key = ?)",
                              arguments: [video, settingsKey]) ?? false
        }
    }

    /// Descriptions of a video's clips (in order) under a settings key.
    public func descriptions(video: Int64, settingsKey: String) throws -> [String] {
        try db.read { db in
            try String.fetchAll(db, sql: """
                SELECT r.text FROM results r JOIN clips c ON c.id = r.clip_id
                WHERE r.video_id = ? AND r.kind = 'description' AND c.settings_key = ? ORDER BY c.clip_index
                """, arguments: [video, settingsKey])
        }
    }

    // MARK: - Search

    public struct Match: Sendable, Codable {
        public var path: String
        public var clipIndex: Int
        public var start: Double?
        public var end: Double?
        public var kind: String
        public var prompt: String
        public var text: String
        public var rank: Double
    }

    /// Ranked full-text matches (FTS5 bm25), with the file and the time range of the clip.
    public func search(_ query: String, limit: Int = 20) throws -> [Match] {
        try Store.search(db, query, limit: limit, path: path)
    }

    /// Searches any open reelql database (a read-only one: `openReadOnly`). A query FTS5 cannot
    /// parse is an error quoting the query and SQLite's reason, not the SQL statement.
    public static func search(_ reader: any DatabaseReader, _ query: String, limit: Int = 20, path: String) throws -> [Match] {
        do {
            return try reader.read { db in
                // The index itself missing is the database's fault, not the query's.
                guard try db.tableExists("results_fts") else {
                    throw PipelineError.database(path: path, reason: "not a reelql database, or a damaged one: it has no full-text index (table 'results_fts')")
                }
                return try Row.fetchAll(db, sql: """
                    SELECT v.path, r.clip_index, c.start_seconds, c.end_seconds, r.kind, r.prompt, r.text, bm25(results_fts) AS rank
                    FROM results_fts JOIN results r ON r.id = results_fts.rowid JOIN videos v ON v.id = r.video_id
                    LEFT JOIN clips c ON c.id = r.clip_id
                    WHERE results_fts MATCH ? ORDER BY rank LIMIT ?
                    """, arguments: [query, limit]).map {
                    // Typed reads: a damaged row is an error naming its table and column, not a trap.
                    Match(path: try $0.typed("path", "videos"), clipIndex: try $0.typed("clip_index", "results"),
                          start: try $0.typed("start_seconds", "clips"), end: try $0.typed("end_seconds", "clips"),
                          kind: try $0.typed("kind", "results"), prompt: try $0.typed("prompt", "results"),
                          text: try $0.typed("text", "results"), rank: try $0.typed("rank", "results_fts"))
                }
            }
        } catch let e as StoredValueError {
            throw PipelineError.database(path: path, reason: e.localizedDescription)
        } catch let e as DatabaseError where e.resultCode == .SQLITE_ERROR {
            // The query's fault, unless the index fails a plain query too (a damaged index).
            let indexWorks = (try? reader.read { db -> Bool in
                _ = try Row.fetchOne(db, sql: "SELECT rowid FROM results_fts WHERE results_fts MATCH 'a' LIMIT 1")
                return true
            }) ?? false
            guard indexWorks else {
                throw PipelineError.database(path: path, reason: "its full-text index (results_fts) is damaged: \(e.message ?? "SQLite error"); rebuild it with sqlite3: INSERT INTO results_fts(results_fts) VALUES ('rebuild')")
            }
            let shown = query.count > 200 ? query.prefix(200) + "… (\(query.count) characters)" : query[...]
            throw PipelineError.invalidArgument("invalid search query '\(shown)': \(e.message ?? "SQLite error") (FTS5 syntax: words, \"phrases\", AND, OR, NOT, prefix*)")
        } catch let e as DatabaseError {
            throw PipelineError.database(path: path, reason: reason(e))
        }
    }

    // MARK: - Merge

    /// Copies other reelql databases' runs, videos, clips and results into this one, each input in
    /// its own transaction, after checking every input (`checkMergeable`): a damaged one stops the
    /// merge before any is merged. `starting` is told each input before it is copied. A video row
    /// already here is replaced by the input's when that one is further on (an outcome over
    /// `pending`, else the newer `updated_at`: a shard merged again after its run went on); clips
    /// and results already here under the same settings are kept, so merging twice changes nothing.
    /// `inputsChecked`: the caller ran `checkMergeable` on every input (before creating this
    /// output), so they are not checked twice.
    public func merge(from others: [String], inputsChecked: Bool = false, starting: (String) -> Void = { _ in }) throws {
        if !inputsChecked { for other in others { try Store.checkMergeable(other, output: path) } }
        for other in others {
            starting(other)
            try copy(from: other)
        }
    }

    /// `merge(from: [other])`.
    public func merge(from other: String) throws { try merge(from: [other]) }

    /// Copies one checked input (see `merge`).
    private func copy(from other: String) throws {
        // Inputs are only read: attached read-only (never migrated, so a foreign SQLite file gains
        // nothing and a reelql one keeps its header); checkMergeable has opened and checked it.
        try lockForWriting()
        try db.writeWithoutTransaction { db in
            try Store.attachReadOnly(db, other)
            defer { try? db.execute(sql: "DETACH DATABASE src") }
            let hasThumbnails = try db.tableExists("thumbnails", in: "src")
            // What is being copied, for an error that names it: the runs, then a video (its path's
            // stored bytes, formatted only for the error).
            var copyingVideo: Data? = nil
            do { try db.inTransaction {
                var runMap: [Int64: Int64] = [:]
                for run in try Row.fetchAll(db, sql: "SELECT * FROM src.runs") {
                    try db.execute(sql: """
                        INSERT INTO runs (started_at, finished_at, status, spec, model, settings_key, shard, reelql_version,
                                          videos_seen, videos_failed, clips_done, clips_skipped, tokens_generated, seconds)
                        SELECT started_at, finished_at, status, spec, model, settings_key, shard, reelql_version, videos_seen,
                               videos_failed, clips_done, clips_skipped, tokens_generated, seconds
                        FROM src.runs WHERE id = ? AND NOT EXISTS (SELECT 1 FROM main.runs m WHERE m.started_at = src.runs.started_at
                            AND m.settings_key = src.runs.settings_key AND m.shard IS src.runs.shard)
                        """, arguments: [try run.typed("id", "runs") as Int64])
                    let id = try Int64.fetchOne(db, sql: """
                        SELECT m.id FROM main.runs m JOIN src.runs s ON m.started_at = s.started_at AND m.settings_key = s.settings_key
                            AND m.shard IS s.shard WHERE s.id = ?
                        """, arguments: [try run.typed("id", "runs") as Int64])
                    runMap[try run.typed("id", "runs")] = id
                    // A copy merged while its run was still going (marked abandoned when this
                    // output was next opened) takes the run's state once the input has one.
                    if let id {
                        try db.execute(sql: """
                            UPDATE main.runs SET finished_at = s.finished_at, status = s.status, videos_seen = s.videos_seen,
                                videos_failed = s.videos_failed, clips_done = s.clips_done, clips_skipped = s.clips_skipped,
                                tokens_generated = s.tokens_generated, seconds = s.seconds
                            FROM src.runs s WHERE main.runs.id = ? AND s.id = ? AND main.runs.status IN ('running', 'abandoned')
                                AND s.status NOT IN ('running', 'abandoned')
                            """, arguments: [id, try run.typed("id", "runs") as Int64])
                    }
                }
                // Values go from src to main inside SQL, never through Swift strings: stored text
                // is copied byte for byte (a NUL in an answer, bytes that are not UTF-8), and a
                // video is matched by its path's stored bytes.
                let media = try db.columns(in: "videos", in: "src").contains { $0.name == "media" }
                    ? "coalesce(s.media, '\(VisualKind.video.rawValue)')" : "'\(VisualKind.video.rawValue)'"
                let pending = VideoStatus.pending.rawValue
                for v in try Row.fetchAll(db, sql: "SELECT id, last_run_id, CAST(path AS BLOB) AS path_bytes FROM src.videos ORDER BY id") {
                    let srcVid: Int64 = try v.typed("id", "videos")
                    copyingVideo = v["path_bytes"] ?? Data()
                    let lastRun: Int64? = (try v.typed("last_run_id", "videos") as Int64?).flatMap { runMap[$0] }
                    // The video's row here: the one its path matches, or the one inserted below.
                    let vid: Int64
                    if let existing = try Row.fetchOne(db, sql: """
                        SELECT m.id, ifnull(s.updated_at > m.updated_at, 0) AS later, ifnull(s.status = ?, 0) AS theirs_pending,
                               ifnull(m.status = ?, 0) AS mine_pending, ifnull(s.fingerprint = m.fingerprint, 0) AS same_fingerprint,
                               ifnull(s.fingerprint = '', 0) AS theirs_unread, ifnull(m.fingerprint = '', 0) AS mine_unread
                        FROM src.videos s JOIN main.videos m ON m.path = s.path WHERE s.id = ?
                        """, arguments: [pending, pending, srcVid]) {
                        // The input's row wins when it is further on: a row with an outcome beats
                        // a pending one whatever the clocks say (a shard merged before its run had
                        // done the file, requeued on another machine), a pending one never beats
                        // an outcome; between two, the newer updated_at wins. Else ours stays.
                        let flag = { (name: String) throws -> Bool in (try existing.typed(name, "videos") as Int) != 0 }
                        let theirsPending = try flag("theirs_pending"), minePending = try flag("mine_pending")
                        let newer = theirsPending == minePending ? try flag("later") : minePending
                        // An unreadable file's row ('' fingerprint) is not other content: its
                        // earlier results stay until it can be read again.
                        let theirsUnread = try flag("theirs_unread"), mineUnread = try flag("mine_unread")
                        let sameFile = try flag("same_fingerprint") || theirsUnread || mineUnread
                        if !newer && !sameFile { continue } // a different file, older: keep ours
                        let id: Int64 = try existing.typed("id", "videos")
                        vid = id
                        if newer && !(theirsUnread && !mineUnread) { // (an unreadable row keeps ours)
                            if !sameFile {
                                // Other content: its clips and results are the old file's.
                                try db.execute(sql: "DELETE FROM main.results WHERE video_id = ?", arguments: [id])
                                try db.execute(sql: "DELETE FROM main.clips WHERE video_id = ?", arguments: [id])
                            }
                            try db.execute(sql: """
                                UPDATE main.videos SET size = s.size, mtime = s.mtime, fingerprint = s.fingerprint, duration = s.duration,
                                    width = s.width, height = s.height, fps = s.fps, codec = s.codec, frame_count = s.frame_count,
                                    status = s.status, error_kind = s.error_kind, error = s.error,
                                    last_run_id = coalesce(?, main.videos.last_run_id), updated_at = s.updated_at, media = \(media)
                                FROM src.videos s WHERE main.videos.id = ? AND s.id = ?
                                """, arguments: [lastRun, id, srcVid])
                        }
                    } else {
                        try db.execute(sql: """
                            INSERT INTO main.videos (path, size, mtime, fingerprint, duration, width, height, fps, codec, frame_count,
                                                     status, error_kind, error, last_run_id, updated_at, media)
                            SELECT path, size, mtime, fingerprint, duration, width, height, fps, codec, frame_count,
                                   status, error_kind, error, ?, updated_at, \(media)
                            FROM src.videos s WHERE s.id = ?
                            """, arguments: [lastRun, srcVid])
                        vid = db.lastInsertedRowID
                    }
                    for c in try Row.fetchAll(db, sql: "SELECT id, run_id FROM src.clips WHERE video_id = ? ORDER BY id", arguments: [srcVid]) {
                        try db.execute(sql: """
                            INSERT INTO main.clips (video_id, clip_index, start_seconds, end_seconds, frames, width, height,
                                                    settings_key, run_id, done_at)
                            SELECT ?, clip_index, start_seconds, end_seconds, frames, width, height, settings_key, ?, done_at
                            FROM src.clips WHERE id = ? ON CONFLICT DO NOTHING
                            """, arguments: [vid, (try c.typed("run_id", "clips") as Int64?).flatMap { runMap[$0] }, try c.typed("id", "clips") as Int64])
                    }
                    if hasThumbnails { try db.execute(sql: """
                        INSERT INTO main.thumbnails (clip_id, kind, mime_type, width, height, bytes)
                        SELECT m.id, t.kind, t.mime_type, t.width, t.height, t.bytes
                        FROM src.thumbnails t JOIN src.clips c ON c.id = t.clip_id
                        JOIN main.clips m ON m.video_id = ? AND m.clip_index = c.clip_index AND m.settings_key = c.settings_key
                        WHERE c.video_id = ? ON CONFLICT DO NOTHING
                        """, arguments: [vid, srcVid]) }
                    // A result of a clip (clip_index ≥ 0) points at that clip's row here.
                    try db.execute(sql: """
                        INSERT INTO main.results (video_id, clip_id, clip_index, kind, prompt, text, model, settings, settings_key,
                                                  prompt_tokens, generated_tokens, vision_seconds, prefill_seconds, generate_seconds)
                        SELECT ?, CASE WHEN r.clip_index < 0 THEN NULL ELSE (SELECT m.id FROM main.clips m WHERE m.video_id = ?
                                   AND m.clip_index = r.clip_index AND m.settings_key = r.settings_key) END,
                               r.clip_index, r.kind, r.prompt, r.text, r.model, r.settings, r.settings_key, r.prompt_tokens,
                               r.generated_tokens, r.vision_seconds, r.prefill_seconds, r.generate_seconds
                        FROM src.results r WHERE r.video_id = ? ORDER BY r.id ON CONFLICT DO NOTHING
                        """, arguments: [vid, vid, srcVid])
                }
                return .commit
            } } catch let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT {
                // A value the output's schema refuses (a CHECK, a NOT NULL): nothing was copied.
                // The path as stored, with escapes (a NUL or a byte that is not UTF-8 included).
                let copying = copyingVideo.map { "video \(TerminalText.safe(PathBytes.string($0), keepNewlines: false))" } ?? "runs"
                throw PipelineError.database(path: other, reason: "\(copying): \(e.message ?? "a constraint failed"); nothing of this database was merged")
            }
        }
        checkpoint()
    }

    /// A column and the storage types (SQLite's `typeof`) its declared type admits.
    struct TypedColumn {
        var name: String
        /// INTEGER, REAL, TEXT or BLOB.
        var declared: String
        var allowed: [String]
        var notNull: Bool { !allowed.contains("null") }

        /// SQL true when the column of the row `alias` holds another type (or, for REAL, an
        /// infinity: typed reading takes it, but no page or JSON can show it).
        func violated(_ alias: String) -> String {
            let column = "\(alias).\(Store.quoted(name))"
            let type = "typeof(\(column)) NOT IN (\(allowed.map { "'\($0)'" }.joined(separator: ", ")))"
            return declared == "REAL" ? "(\(type) OR (typeof(\(column)) = 'real' AND abs(\(column)) > 1.7976931348623157e308))" : type
        }
    }

    static func quoted(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// The columns of `table` (in `schema`) with a declared type: a value of another storage
    /// type (text where a number belongs, a blob for text, NULL where NOT NULL) is damage that
    /// typed reading (`report`) refuses.
    static func typedColumns(_ db: Database, schema: String = "main", table: String) throws -> [TypedColumn] {
        try Row.fetchAll(db, sql: "SELECT name, type, \"notnull\" FROM pragma_table_info(?, ?)", arguments: [table, schema]).compactMap { info in
            let name: String = try info.typed("name", "pragma_table_info"), declared: String = try info.typed("type", "pragma_table_info")
            let allowed: [String]
            switch declared.uppercased() {
            case "INTEGER": allowed = ["integer"]
            case "REAL": allowed = ["real", "integer"]
            case "TEXT": allowed = ["text"]
            case "BLOB": allowed = ["blob"]
            default: return nil
            }
            let notNull = try info.typed("notnull", "pragma_table_info") as Int == 1
            return TypedColumn(name: name, declared: declared.uppercased(), allowed: notNull ? allowed : allowed + ["null"])
        }
    }

    /// SQL true when a row `alias` of `table` holds damage (`typedColumns`); "0" for no typed column.
    static func damaged(_ db: Database, table: String, alias: String) throws -> String {
        let columns = try typedColumns(db, table: table)
        return columns.isEmpty ? "0" : "(" + columns.map { $0.violated(alias) }.joined(separator: " OR ") + ")"
    }

    /// Refuses a database (attached as `schema`) one of whose rows that `merge` copies holds a
    /// value of another type than the output's column declares (`typedColumns` of `main`):
    /// copied, it would make the output unreadable where it came from. Row ids and links
    /// (`id`, `video_id`, `clip_id`) are not copied but made anew, and rows linked to no video
    /// are not copied at all: neither is checked. The error names the file, table, row, column
    /// and value.
    static func checkStoredTypes(_ db: Database, schema: String, path: String) throws {
        let s = quoted(schema)
        let videos = "(SELECT id FROM \(s).videos)"
        // The rows merge reads, as it selects them.
        let rows = [
            ("runs", "SELECT rowid AS reelql_row, * FROM \(s).runs"),
            ("videos", "SELECT rowid AS reelql_row, * FROM \(s).videos"),
            ("clips", "SELECT rowid AS reelql_row, * FROM \(s).clips WHERE video_id IN \(videos)"),
            ("results", "SELECT rowid AS reelql_row, * FROM \(s).results WHERE video_id IN \(videos)"),
            ("thumbnails", """
                SELECT t.rowid AS reelql_row, t.* FROM \(s).thumbnails t JOIN \(s).clips c ON c.id = t.clip_id WHERE c.video_id IN \(videos)
                """),
        ]
        for (table, selected) in rows where try db.tableExists(table, in: schema) {
            let present = Set(try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info(?, ?)", arguments: [table, schema]))
            let columns = try typedColumns(db, schema: "main", table: table).filter {
                present.contains($0.name) && !["id", "video_id", "clip_id"].contains($0.name)
            }
            guard !columns.isEmpty else { continue }
            let cases = columns.enumerated().map { i, c in "WHEN \(c.violated("t")) THEN \(i)" }.joined(separator: " ")
            let sql = "SELECT reelql_row, bad FROM (SELECT t.reelql_row, CASE \(cases) END AS bad FROM (\(selected)) t) WHERE bad IS NOT NULL LIMIT 1"
            guard let hit = try Row.fetchOne(db, sql: sql) else { continue }
            let row: Int64 = try hit.typed("reelql_row", table), c = columns[try hit.typed("bad", table) as Int]
            // The value as SQL shows it, cut short before quoting (a damaged blob may be large).
            let column = quoted(c.name)
            let value = try Row.fetchOne(db, sql: """
                SELECT typeof(\(column)) AS type,
                       CASE WHEN typeof(\(column)) IN ('text', 'blob') THEN quote(substr(\(column), 1, 40)) ELSE quote(\(column)) END AS value,
                       typeof(\(column)) IN ('text', 'blob') AND length(\(column)) > 40 AS cut
                FROM \(s).\(quoted(table)) WHERE rowid = ?
                """, arguments: [row])
            let type: String = try value?.typed("type", table) ?? "?", shown: String = try value?.typed("value", table) ?? "?"
            let cut: Bool = try value?.typed("cut", table) ?? false
            let held = type == "null" ? "NULL" : "\(type) \(shown)\(cut ? "…" : "")"
            throw PipelineError.database(path: path, reason: """
                table \(table), row \(row): column \(c.name) holds \(held) where \(c.declared == "REAL" ? "a finite " : "")\(c.declared)\
                \(c.notNull ? " NOT NULL" : "") belongs; nothing of this database was merged
                """)
        }
    }

    /// Refuses `other` when it is this database (merging it into itself would wait on its own
    /// lock) or holds damage (`checkStoredTypes`).
    /// Checks one input of a merge into `output`, which need not exist yet: not the output
    /// itself, a reelql database with its tables and columns, and no row `merge` would copy
    /// holding damage (read through a connection of its own, so that a refused input leaves no
    /// output behind).
    public static func checkMergeable(_ other: String, output: String) throws {
        try checkMergeInput(other, output: output)
        try openReadOnly(other).close()
        // The declared types come from reelql's own tables (its migrations, in memory).
        let scratch = try DatabaseQueue()
        try migrator.migrate(scratch)
        try scratch.writeWithoutTransaction { db in
            try attachReadOnly(db, other)
            defer { try? db.execute(sql: "DETACH DATABASE src") }
            try checkStoredTypes(db, schema: "src", path: other)
            // A clip's result that no clip row of its video and settings holds: merge links a
            // result to its clip by those, so it would arrive detached (out of the views).
            if let row = try Row.fetchOne(db, sql: """
                SELECT r.id, r.clip_index FROM src.results r WHERE r.clip_index >= 0 AND r.video_id IN (SELECT id FROM src.videos)
                    AND NOT EXISTS (SELECT 1 FROM src.clips c WHERE c.video_id = r.video_id AND c.clip_index = r.clip_index
                                    AND c.settings_key = r.settings_key) LIMIT 1
                """) {
                throw PipelineError.database(path: other, reason: """
                    table results, row \(try row.typed("id", "results") as Int64): clip_index \(try row.typed("clip_index", "results") as Int64) \
                    names no clip of its video under its settings (a damaged row; a run over the files with these settings does \
                    the clip again); nothing of this database was merged
                    """)
            }
            // updated_at decides which of two rows of a video wins, compared as text: one that is
            // not a timestamp (reelql writes ISO 8601 in UTC) would beat every real one.
            if let row = try Row.fetchOne(db, sql: """
                SELECT id, quote(substr(updated_at, 1, 40)) AS shown FROM src.videos
                WHERE updated_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]*' LIMIT 1
                """) {
                throw PipelineError.database(path: other, reason: """
                    table videos, row \(try row.typed("id", "videos") as Int64): updated_at \(try row.typed("shown", "videos") as String) \
                    is not a timestamp (reelql writes ISO 8601, as 2026-01-31T22:04:05.123Z); nothing of this database was merged
                    """)
            }
        }
    }

    /// Refuses an input that is the output database itself (the same path, `./OUT`, a symlink
    /// or a hard link to it): merging a database into itself would wait on its own lock.
    public static func checkMergeInput(_ input: String, output: String) throws {
        var a = stat(), b = stat()
        if stat(input, &a) == 0 && stat(output, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino {
            throw PipelineError.invalidArgument("\(input): this is the output database itself (\(output)); name another database to merge from")
        }
    }

    /// Read as immutable (a read-only mount), SQLite would ignore a write-ahead log: changes not
    /// yet merged into the file would silently be missing. Such a database is refused, saying why.
    static func refuseUnmergedLog(_ path: String) throws {
        var st = stat()
        if stat(path + "-wal", &st) == 0 && st.st_size > 0 {
            throw PipelineError.database(path: path, reason: "it cannot be opened for writing here and its write-ahead log (\(path)-wal) holds changes not yet in the file; open it once where it can be written, or copy both files elsewhere")
        }
        // A rollback journal left by a writer that died (a hot journal: its header still holds
        // the magic that a commit zeroes or deletes): the file holds half of a transaction,
        // which only a writer can roll back. Read as immutable it would be taken for data.
        let magic: [UInt8] = [0xD9, 0xD5, 0x05, 0xF9, 0x20, 0xA1, 0x63, 0xD7]
        if stat(path + "-journal", &st) == 0 && st.st_size > 0 && Array(FileStatus.head(path + "-journal", count: 8)) == magic {
            throw PipelineError.database(path: path, reason: "its rollback journal (\(path)-journal) holds a write that never finished, which only a writer can undo; open it once where it can be written (sqlite3 \(path) 'PRAGMA integrity_check'), then try again")
        }
    }

    /// `path` as SQLite takes it for a plain file name: a relative name that SQLite would read
    /// as a URI ("file:…") or as a special name (":memory:") is written "./name".
    static func plainName(_ path: String) -> String {
        path.hasPrefix("/") || path.hasPrefix("./") || path.hasPrefix("../") ? path : "./" + path
    }

    /// Merges the write-ahead log into the database file, so that the file alone holds every
    /// committed row (a copy, or a read-only mount, then sees them all). Best effort.
    public func checkpoint() {
        try? db.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
    }

    /// Attaches `path` as `src`, read-only (immutable when it lies on a read-only mount).
    static func attachReadOnly(_ db: Database, _ path: String) throws {
        var last: Error?
        for query in ["mode=ro", "mode=ro&immutable=1"] {
            if query.contains("immutable") { try refuseUnmergedLog(path) }
            do {
                try db.execute(sql: "ATTACH DATABASE ? AS src", arguments: [uri(path, query)])
            } catch {
                last = error
                continue
            }
            do {
                _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM src.runs")
                return
            } catch {
                last = error
                try? db.execute(sql: "DETACH DATABASE src")
            }
        }
        throw PipelineError.database(path: path, reason: "cannot read it: \(last.map(reason) ?? "unknown error")")
    }

    static let version = "0.1.0"

    nonisolated(unsafe) private static let formatter: ISO8601DateFormatter = { // used under formatterLock
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()
    private static let formatterLock = NSLock()

    static func now() -> String {
        formatterLock.lock(); defer { formatterLock.unlock() }
        return formatter.string(from: Date())
    }
}


/// A stored value that is not of its column's type (a damaged or hand-edited database).
struct StoredValueError: LocalizedError {
    var table: String, column: String, row: String, expected: String
    var errorDescription: String? {
        let redo = ["clips", "results", "thumbnails"].contains(table) ? "; a run over its file with the same settings does a damaged clip again" : ""
        return "table \(table)\(row == "?" ? "" : ", row \(row)"): column \(column) does not hold \(expected)\(redo)"
    }
}

extension Row {
    /// The value of `column` as `T`, or an error naming the table, the column and the row (GRDB's
    /// subscript traps on a value it cannot convert).
    func typed<T: DatabaseValueConvertible>(_ column: String, _ table: String) throws -> T {
        do {
            let value = try decode(T.self, forColumn: column)
            // An infinity (1e999 stored) reads as a Double but no page or JSON can show it.
            if let d = value as? Double, !d.isFinite { throw StoredValueError(table: table, column: column, row: "", expected: "") }
            return value
        } catch {
            let row = hasColumn("id") ? "id \((self["id"] as DatabaseValue).description)"
                : hasColumn("clip_id") ? "of clip \((self["clip_id"] as DatabaseValue).description)" : "?"
            // (A missing column is refused by Store.checkSchema; never trap on one here.)
            let stored = hasColumn(column) ? (self[column] as DatabaseValue).description : "no such column"
            throw StoredValueError(table: table, column: column, row: row,
                                   expected: "\(Self.kind(of: T.self)) (it holds \(stored.count > 80 ? stored.prefix(80) + "…" : stored))")
        }
    }

    /// What a Swift type is as a stored value, for people.
    static func kind<T>(of type: T.Type) -> String {
        let name = String(describing: type)
        let optional = name.hasPrefix("Optional<")
        let base = optional ? String(name.dropFirst("Optional<".count).dropLast()) : name
        let noun = switch base {
        case "Int", "Int64", "Int32": "an integer"
        case "Double", "Float": "a finite number"
        case "String": "text"
        case "Data": "bytes"
        case "Bool": "a boolean"
        default: "a value of type \(base)"
        }
        return optional ? noun + " or NULL" : noun
    }
}
