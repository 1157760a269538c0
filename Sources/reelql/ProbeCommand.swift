import ArgumentParser
import Foundation
import Media

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Print a video's metadata: duration, frame rates, frame count, size, rotation, codec.")

    @Argument(help: "The video file.")
    var file: String
    @Flag(help: "Print one JSON object.")
    var json = false
    @Flag(help: "Count the frames exactly (a demux-only pass over the file) and detect variable frame rate.")
    var count = false

    func run() throws {
        let probe = try reportingErrors {
            let video = try VideoDecoder(path: file)
            return count ? video.countedProbe() : video.probe
        }
        if json { try printJSON(probe); return }
        func fmt(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "unknown" }
        let frames = probe.frameCount.map { "\($0)\(probe.frameCountExact ? "" : " (estimated)")" } ?? "unknown"
        print("""
        file:        \(probe.path)
        container:   \(probe.container)
        codec:       \(probe.codec)\(probe.profile.map { " (\($0))" } ?? "")  \(probe.pixelFormat ?? "")
        size:        \(probe.width)×\(probe.height)\(probe.rotation != 0 ? ", rotated \(probe.rotation)° → \(probe.displayWidth)×\(probe.displayHeight)" : "")
        duration:    \(fmt(probe.duration)) s
        frame rate:  \(fmt(probe.averageFrameRate)) avg (\(probe.averageFrameRateRational ?? "?")), \(fmt(probe.realFrameRate)) real
        frames:      \(frames)\(probe.variableFrameRate.map { $0 ? ", variable frame rate" : ", constant frame rate" } ?? "")
        """)
    }
}
