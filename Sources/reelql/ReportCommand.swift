import ArgumentParser
import Foundation
import Media
import Pipeline

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write one self-contained HTML page of a results database: runs, videos, clip thumbnails and texts.",
        discussion: """
        The page embeds its images and script (it fetches nothing, so it can be mailed or opened \
        offline): the runs, each video with its status and summary, a timeline of its clips \
        (thumbnail, time range, description, answers, a strip of sampled frames), the failed and \
        damaged files with their errors, and a search box that filters clips as you type (also \
        from the address: report.html#q=circle). The database is only read.
        """)

    @Argument(help: "The results database.")
    var db: String
    @Option(help: "Where to write the page (default: the database's path with .html).")
    var out: String?
    @Option(help: "Only clips whose description, answers or path contain this text (case-insensitive).")
    var search: String?
    @Option(help: "Only this video (its path as stored in the database, or relative to the current folder).")
    var video: String?
    @Flag(help: "Leave out the strips of sampled frames (a smaller page).")
    var noStrips = false

    func run() throws {
        let target = out ?? ((db as NSString).deletingPathExtension + ".html")
        // The page must not replace the database (or its WAL) it is made from.
        try reportingErrors { try OutputFile.checkNotAnInput(target, inputs: [db]) }
        let html: String
        do {
            html = try Report.html(database: db, options: Report.Options(search: search, video: video, strips: !noStrips))
        } catch {
            printError("error[report]: \(error.localizedDescription)")
            throw ExitCode(2)
        }
        var page = html
        try reportingErrors { try page.withUTF8 { try writeFile(target, UnsafeRawBufferPointer($0)) } }
        print(target)
    }
}
