import CFFmpeg
import Foundation

/// One sampled frame: packed RGB24, `width`×`height`, rows top to bottom, upright.
public struct VideoFrame: Sendable {
    /// Index of the frame among all frames of the video, in presentation order.
    public var index: Int
    /// Seconds from the video's first frame.
    public var timestamp: Double
    public var width: Int
    public var height: Int
    public var rgb: [UInt8]
    /// The decoder had to conceal damage in this frame.
    public var concealed: Bool

    public init(index: Int, timestamp: Double, width: Int, height: Int, rgb: [UInt8], concealed: Bool = false) {
        self.index = index
        self.timestamp = timestamp
        self.width = width
        self.height = height
        self.rgb = rgb
        self.concealed = concealed
    }
}

/// Which frames a sampling will take, and at what size: decided before any decoding.
public struct SamplePlan: Sendable, Equatable {
    /// Frame indices in presentation order (ascending; repeated where a variable-rate video
    /// has no frame near a target time but the same one).
    public var indices: [Int]
    public var timestamps: [Double]
    public var width: Int
    public var height: Int
    /// Frames in the video (counted by the index pass).
    public var totalFrames: Int
    /// The rate used by the frame-count rule (the container's average frame rate).
    public var videoFPS: Double
    public var variableFrameRate: Bool
    /// Frames of the video inside the sampled time window (all of them without a window).
    public var windowFrames: Int = 0
    /// A still image's sampling whose transparency lies on white (`VideoDecoder.pastesOnWhite`).
    public var alphaOnWhite = false

    /// The rate the frames were sampled at, as qwen-vl-utils reports it (`sample_fps` =
    /// nframes / total_frames × video_fps over the window): what Qwen2.5-VL's time positions use.
    public var sampleFPS: Double {
        videoFPS * Double(indices.count) / Double(max(windowFrames, 1))
    }
}

/// The sampled frames of a video, and what was lost if the file was damaged.
public struct SampledVideo: Sendable {
    public var plan: SamplePlan
    /// Delivered frames, in the order of `plan.indices` (a lost frame is missing).
    public var frames: [VideoFrame]
    /// nil when the file decoded cleanly.
    public var damage: DecodeDamage?
    /// Packets handed to the decoder, and packets in the file: how much decoding was saved.
    public var packetsDecoded: Int
    public var packetsTotal: Int
    /// Parallel decoders used; demuxer seeks; restarts from the top of the file (when a seek
    /// could not be trusted).
    public var workers: Int
    public var seeks: Int
    public var restarts: Int

    public var indices: [Int] { frames.map(\.index) }
    public var timestamps: [Double] { frames.map(\.timestamp) }
}

/// Decoding strategy knobs. The defaults are the fast path; tests turn them off to prove the
/// fast path delivers the same pixels.
public struct DecodeOptions: Sendable {
    /// FFmpeg decoder threads (0: FFmpeg chooses from the core count).
    public var threads: Int = 0
    /// Keep the decoder from reconstructing non-reference frames that are not sampled.
    public var skipNonReference: Bool = true
    /// Skip whole GOPs that hold no sampled frame (seeking when the gap is large).
    public var skipGOPs: Bool = true
    /// Gaps of more packets than this are crossed with a demuxer seek rather than by reading.
    public var seekThreshold: Int = 120
    /// Parallel decoders, each on its own segments of the stream (nil: one per core, when each
    /// gets at least `packetsPerWorker` packets to decode).
    public var workers: Int?
    public static let packetsPerWorker = 48
    public init(threads: Int = 0, skipNonReference: Bool = true, skipGOPs: Bool = true,
                seekThreshold: Int = 120, workers: Int? = nil) {
        self.threads = threads
        self.workers = workers
        self.skipNonReference = skipNonReference
        self.skipGOPs = skipGOPs
        self.seekThreshold = seekThreshold
    }
}

/// A video file opened for probing and sampling, backed by FFmpeg.
///
///     let video = try VideoDecoder(path: "clip.mp4")
///     let sampled = try video.sample(SamplingOptions(fps: 2))
///
/// Not thread-safe: use one decoder per thread.
public final class VideoDecoder {
    public let path: String
    public let decodeOptions: DecodeOptions
    private var demuxer: Demuxer
    /// The metadata the container declares.
    public let probe: VideoProbe
    private let declaredDuration: (seconds: Double, own: Bool)?
    private var cachedIndex: FrameIndex?

    public init(path: String, options: DecodeOptions = DecodeOptions()) throws {
        self.path = path
        self.decodeOptions = options
        demuxer = try Demuxer(path: path)
        probe = VideoProbe(demuxer: demuxer)
        declaredDuration = VideoProbe.declaredVideoDuration(demuxer)
        if avcodec_find_decoder(demuxer.codecParameters.pointee.codec_id) == nil {
            let par = demuxer.codecParameters.pointee
            var name = FFmpeg.codecName(par.codec_id)
            if par.codec_id == AV_CODEC_ID_NONE, let tag = FFmpeg.fourCC(par.codec_tag) { name = tag }
            throw MediaError.unsupportedCodec(path: path, codec: name)
        }
        // FFmpeg leaves the size 0×0 when it could not decode a first frame (a truncated image,
        // data that is not what the header says, a picture over its own size limits).
        guard probe.width > 0, probe.height > 0 else {
            if Self.isAnimatedWebP(FileStatus.head(path, count: 21)) {
                throw MediaError.decodeFailed(path: path, reason: "an animated WebP: this FFmpeg decodes still WebP only; convert it to a video or a GIF first")
            }
            throw MediaError.decodeFailed(path: path, reason: "FFmpeg found no frame size in its \(probe.codec) stream, 0×0: damaged data, or a picture beyond FFmpeg's size limits")
        }
    }

    /// Every frame's presentation time, from one demux-only pass (cached).
    public func frameIndex() -> FrameIndex {
        if let cachedIndex { return cachedIndex }
        let index = FrameIndex.build(demuxer)
        cachedIndex = index
        return index
    }

    /// The probe completed by the index: exact frame count and frame-rate variability.
    public func countedProbe() -> VideoProbe {
        let index = frameIndex()
        var p = probe
        p.frameCount = index.count
        p.frameCountExact = true
        p.variableFrameRate = !index.isConstantFrameRate
        return p
    }

    /// Whether a file's first 21 bytes are an extended WebP (RIFF … WEBP VP8X) whose flags say
    /// it is animated (bit 1).
    static func isAnimatedWebP(_ header: [UInt8]) -> Bool {
        header.count >= 21 && header[0..<4].elementsEqual("RIFF".utf8) && header[8..<16].elementsEqual("WEBPVP8X".utf8)
            && header[20] & 0x02 != 0
    }

    /// Whether qwen-vl-utils' `to_rgb` pastes this still picture on white: PIL opens it as RGBA.
    /// That is a PNG of colour type 6 (RGB and alpha), or 4 (gray and alpha) at 16 bits; a WebP or
    /// TIFF with alpha. A PNG's transparent colour key (tRNS), 8-bit gray+alpha and a BMP's fourth
    /// byte stay RGB or LA in PIL, which `convert("RGB")` drops. `header`: the file's first bytes.

    static func pastesOnWhite(codec: String, header: [UInt8]) -> Bool {
        switch codec {
        case "webp", "tiff": return true
        case "png", "apng":
            // Signature (8), IHDR length (4), "IHDR", width (4), height (4), bit depth, colour type.
            guard header.count >= 26, Array(header[12..<16]) == Array("IHDR".utf8) else { return false }
            return header[25] == 6 || (header[25] == 4 && header[24] == 16)
        default: return false
        }
    }

    /// The frame rate sampling counts with: the header's average, else its real rate (a crafted
    /// header's negative, zero or infinite rate is not one), else the packets' median spacing,
    /// else 25.
    static func samplingRate(average: Double?, real: Double?, medianFrameDuration: Double) -> Double {
        [average, real].compactMap { $0 }.first { $0.isFinite && $0 > 0 }
            ?? (medianFrameDuration.isFinite && medianFrameDuration > 0 ? 1 / medianFrameDuration : 25)
    }

    /// Chooses the frames and output size for `options` without decoding.
    public func plan(_ options: SamplingOptions) throws -> SamplePlan {
        try options.validate()
        let index = frameIndex()
        guard index.count > 0 else {
            throw MediaError.decodeFailed(path: path, reason: index.readError.map { "no video packet could be read: \($0)" } ?? "the video stream holds no packets")
        }
        let fps = Self.samplingRate(average: probe.averageFrameRate, real: probe.realFrameRate, medianFrameDuration: index.medianFrameDuration)
        let indices: [Int]
        do {
            if index.isConstantFrameRate {
                indices = try FrameSampler.constantRateIndices(total: index.count, videoFPS: fps, fps: options.fps,
                                                              start: options.start, end: options.end,
                                                              maxFrames: options.maxFrames, rule: options.frameRule)
            } else {
                indices = try FrameSampler.variableRateIndices(times: index.times, fps: options.fps,
                                                              start: options.start, end: options.end,
                                                              maxFrames: options.maxFrames, rule: options.frameRule)
            }
        } catch MediaError.invalidArgument(let reason) {
            throw MediaError.invalidArgument("\(PathBytes.display(path)): \(reason)")
        }
        let size: (width: Int, height: Int)
        do {
            size = try options.resize.outputSize(width: probe.displayWidth, height: probe.displayHeight,
                                                 frameCount: indices.count)
        } catch MediaError.invalidArgument(let reason) {
            throw MediaError.invalidArgument("\(PathBytes.display(path)): \(reason)")
        }
        let (lo, hi) = FrameSampler.window(times: index.times, start: options.start, end: options.end)
        if let bad = indices.first(where: { !index.times.indices.contains($0) }) {
            throw MediaError.invalidArgument("\(PathBytes.display(path)): frame \(bad) sampled of \(index.times.count)")
        }
        try checkMemory(frames: indices.count, width: size.width, height: size.height)
        return SamplePlan(indices: indices, timestamps: indices.map { index.times[$0] },
                          width: size.width, height: size.height, totalFrames: index.count,
                          videoFPS: fps, variableFrameRate: !index.isConstantFrameRate, windowFrames: max(1, hi - lo + 1),
                          alphaOnWhite: options.resize.image && Self.pastesOnWhite(codec: probe.codec, header: FileStatus.head(path, count: 26)))
    }

    /// The most bytes of decoded RGB one sampling may hold (frames × width × height × 3): 3 GiB.
    /// Default settings stay far below it (qwen-vl-utils' total_pixels budget is about 270 MB of
    /// RGB per clip; an image at most 16384·28² pixels): it stops settings — a huge --max-pixels,
    /// --native on a huge or long video — that would exhaust memory and abort.
    public static let maxSampledBytes = 3 << 30
    /// The most pixels of one frame, decoded or delivered (2^27, about 11585²): a bigger frame is
    /// hundreds of MB per copy, and the decoder and the scaler hold several copies.
    public static let maxFramePixels = 1 << 27
    /// FFmpeg's own limit for its decoders (`max_pixels`), so that no picture past it is ever
    /// allocated, even while probing: the frame limit with room for the decoders' alignment of
    /// coded sizes (a 11585² picture is coded 11600²), which our own check then applies exactly.
    static let ffmpegMaxPixels = maxFramePixels + maxFramePixels / 16

    /// Throws `MediaError.invalidArgument` naming the numbers and what to lower when a sampling
    /// of `frames` frames at `width`×`height` (from frames of the video's size) would exceed
    /// `maxSampledBytes` or `maxFramePixels`. Checked before any decoding.
    func checkMemory(frames: Int, width: Int, height: Int) throws {
        let sourceW = probe.displayWidth, sourceH = probe.displayHeight
        let (source, sourceOverflow) = sourceW.multipliedReportingOverflow(by: sourceH)
        if sourceOverflow || source > Self.maxFramePixels {
            throw MediaError.invalidArgument("\(path): its frames are \(sourceW)×\(sourceH) = \(sourceW &* sourceH) pixels, more than the \(Self.maxFramePixels) pixels a frame may have to be decoded")
        }
        let (pixels, pixelOverflow) = width.multipliedReportingOverflow(by: height)
        if pixelOverflow || pixels > Self.maxFramePixels {
            throw MediaError.invalidArgument("\(path): frames of \(width)×\(height) = \(width &* height) pixels are more than the \(Self.maxFramePixels) pixels a sampled frame may have: lower --max-pixels / --min-pixels (sampling.max_pixels, min_pixels), or drop --native")
        }
        let (bytes, bytesOverflow) = (pixels * 3).multipliedReportingOverflow(by: max(frames, 0))
        if bytesOverflow || bytes > Self.maxSampledBytes {
            throw MediaError.invalidArgument("\(path): \(frames) frames of \(width)×\(height) would hold \(bytesOverflow ? "more than \(Int.max)" : "\(bytes)") bytes of RGB, more than the \(Self.maxSampledBytes) one sampling may hold: lower --fps or --max-frames (sampling.fps, max_frames), or --max-pixels (sampling.max_pixels), or drop --native")
        }
    }

    /// Samples frames as `options` say, decoding only what those frames need.
    /// A damaged file yields what it could and says in `damage` what was lost.
    public func sample(_ options: SamplingOptions) throws -> SampledVideo {
        let plan = try plan(options)
        return try decode(plan)
    }

    /// Decodes the frames of `plan`: the stream is cut into independent segments (a keyframe and
    /// the sampled packets after it), which workers decode in parallel, each with its own
    /// demuxer and decoder.
    public func decode(_ plan: SamplePlan) throws -> SampledVideo {
        let index = frameIndex()
        if let bad = plan.indices.first(where: { $0 < 0 || $0 >= index.count }) {
            throw MediaError.invalidArgument("frame index \(bad) is outside this video's \(index.count) frames")
        }
        try checkMemory(frames: plan.indices.count, width: plan.width, height: plan.height)
        let wantedFrames = Set(plan.indices)
        var wantedPacket = [Bool](repeating: false, count: index.packetCount)
        for f in wantedFrames { wantedPacket[index.packetOfFrame[f]] = true }
        let segments = DecodeSegment.plan(wanted: wantedPacket, index: index, skipGOPs: decodeOptions.skipGOPs)

        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        // Another worker pays for opening the file again: worth it only for real decoding work.
        let work = segments.reduce(0) { $0 + $1.cost }
        let useful = decodeOptions.workers ?? min(cores, max(1, work / DecodeOptions.packetsPerWorker))
        // Every decoder thread holds a frame of the video's size (and workers multiply them):
        // large frames get fewer of them, so the frames in flight stay within the sampling bound.
        let sourceBytes = max(1, probe.displayWidth * probe.displayHeight * 3)
        let inFlight = max(1, Self.maxSampledBytes / (2 * sourceBytes))
        let workers = max(1, min(useful, segments.count, inFlight))
        var options = decodeOptions
        if workers > 1 && options.threads == 0 { options.threads = max(1, cores / workers) }
        let perWorker = max(1, inFlight / workers)
        if (options.threads == 0 ? cores + 1 : options.threads) > perWorker { options.threads = perWorker }
        let first = UncheckedBox(demuxer)
        func decodeSegments(_ options: DecodeOptions, reuseDemuxer: Bool) throws -> WorkerResults {
            // Longest segments first, so that the workers finish together.
            let queue = SegmentQueue(segments.sorted { $0.cost > $1.cost })
            let job = DecodeJob(path: path, index: index, wanted: wantedPacket, wantedFrames: wantedFrames,
                                plan: plan, rotation: probe.rotation, options: options)
            let results = WorkerResults(count: workers)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                do {
                    // Worker 0 reuses the demuxer that built the index; the others open their own.
                    let demuxer = w == 0 && reuseDemuxer ? first.value : try Demuxer(path: job.path)
                    results.store(w, try job.run(demuxer: demuxer, queue: queue))
                } catch {
                    results.fail(error)
                }
            }
            if let error = results.error { throw error }
            return results
        }
        var results = try decodeSegments(options, reuseDemuxer: true)
        // How FFmpeg conceals damage depends on which frames its other threads have finished, so
        // a damaged stream decoded with several decoder threads gives different pictures from run
        // to run. A sampling that met damage is decoded again with one decoder thread per worker
        // (the segments stay in parallel): the same frames every time. Damage is rare, so the
        // second pass costs nothing on healthy files.
        if options.threads != 1, results.outcomes.contains(where: { ($0?.decoderErrors ?? 0) > 0 }) {
            var single = options
            single.threads = 1
            results = try decodeSegments(single, reuseDemuxer: false)
        }

        var decoded: [Int: VideoFrame] = [:]
        var damage = DecodeDamage()
        var sent = 0, truncatedRead = false, seeks = 0, restarts = 0
        for r in results.outcomes.compactMap({ $0 }) {
            decoded.merge(r.frames) { a, _ in a }
            sent += r.packetsSent
            seeks += r.seeks
            restarts += r.restarts
            damage.corruptPackets += r.decoderErrors
            truncatedRead = truncatedRead || r.readFailed
        }
        var frames: [VideoFrame] = []
        frames.reserveCapacity(plan.indices.count)
        for i in plan.indices {
            if let f = decoded[i] {
                frames.append(f)
                if f.concealed { damage.concealedSampledFrames += 1 }
            } else {
                damage.lostSampledFrames += 1
            }
        }
        damage.corruptPackets += index.corruptPackets
        damage.readableFrames = index.count
        damage.readableDuration = index.packetSpan
        damage.declaredDuration = declaredDuration?.seconds ?? probe.duration
        damage.declaredFrames = probe.frameCountExact ? probe.frameCount : nil
        damage.truncated = isTruncated(index) || truncatedRead
        if frames.isEmpty {
            // Pictures larger than the container declares, and over the frame limit: FFmpeg
            // refused to allocate them (VideoDecoder.ffmpegMaxPixels).
            if let big = results.outcomes.lazy.compactMap({ $0?.oversizedPicture }).first {
                throw MediaError.invalidArgument("\(path): its pictures are \(big.width)×\(big.height) = \(big.width &* big.height) pixels (the container declares \(probe.width)×\(probe.height)), more than the \(Self.maxFramePixels) pixels a frame may have to be decoded")
            }
            if damage.truncated { throw MediaError.truncated(path: path, damage: damage) }
            throw MediaError.decodeFailed(path: path, reason: damage.corruptPackets > 0 ? damage.summary : "the decoder returned no frame")
        }
        return SampledVideo(plan: plan, frames: frames, damage: damage.isEmpty ? nil : damage,
                            packetsDecoded: sent, packetsTotal: index.packetCount, workers: workers,
                            seeks: seeks, restarts: restarts)
    }

    /// Whether the container's ENCODER tag names libavformat ("Lavf…").
    private var writtenByLibavformat: Bool {
        guard let tag = av_dict_get(demuxer.context.pointee.metadata, "ENCODER", nil, 0), let value = tag.pointee.value else { return false }
        return String(cString: value).hasPrefix("Lavf")
    }

    /// The file ends before the container says: fewer packets than its frame count, or
    /// (without one) readable timestamps ending well before its declared duration, or a read error.
    private func isTruncated(_ index: FrameIndex) -> Bool {
        if index.readError != nil { return true }
        if probe.frameCountExact, let declared = probe.frameCount, index.packetCount < declared { return true }
        if let declared = declaredDuration {
            // The stream's own duration is checked to a few frames; the container's (which may
            // cover longer audio) only to a second.
            // A variable-rate stream's last frame may last long: only a second is checked there.
            let slack = declared.own && index.isConstantFrameRate ? max(0.002, 1.5 * index.medianFrameDuration) : 1.0
            // FFmpeg's Matroska muxer (libavformat, "Lavf…" in the ENCODER tag) writes the last
            // timestamp as the duration: a file it wrote that starts late (a cut from a stream) is
            // complete when its frames reach that, less the start.
            let start = probe.startTime.map { $0.isFinite ? $0 : 0 } ?? 0
            let endTime = probe.container.contains("matroska") && start > 0 && declared.seconds > start && writtenByLibavformat
            return index.packetSpan + slack < (endTime ? declared.seconds - start : declared.seconds)
        }
        return false
    }
}

/// A run of packets decoded without a break: from keyframe `key` through the sampled packets
/// `targets` (decode-order indices, ascending).
struct DecodeSegment: Sendable {
    var key: Int
    var targets: [Int]
    /// Packets read to decode it.
    var cost: Int { targets.last! - key + 1 }

    /// Cuts the stream into segments: each sampled packet needs the packets from its keyframe
    /// to itself; overlapping needs merge, and the packets between segments need no decoding.
    /// (A leading picture of an open GOP needs the keyframe before its GOP's, which may lie
    /// before the previous sampled packet: the merge takes care of it.)
    static func plan(wanted: [Bool], index: FrameIndex, skipGOPs: Bool) -> [DecodeSegment] {
        let needs = wanted.indices.filter { wanted[$0] }
            .map { t in (key: skipGOPs ? index.keyframe(before: t) : 0, target: t) }
            .sorted { ($0.key, $0.target) < ($1.key, $1.target) }
        var segments: [DecodeSegment] = []
        var end = -1 // last packet the current segment decodes
        for need in needs {
            if !segments.isEmpty, need.key <= end {
                segments[segments.count - 1].targets.append(need.target)
                end = max(end, need.target)
            } else {
                segments.append(DecodeSegment(key: need.key, targets: [need.target]))
                end = need.target
            }
        }
        for i in segments.indices { segments[i].targets.sort() }
        return segments
    }
}

/// Segments handed out to workers one at a time.
final class SegmentQueue: @unchecked Sendable {
    private let segments: [DecodeSegment]
    private var next = 0
    private let lock = NSLock()
    init(_ segments: [DecodeSegment]) { self.segments = segments }
    func take() -> DecodeSegment? {
        lock.lock(); defer { lock.unlock() }
        guard next < segments.count else { return nil }
        next += 1
        return segments[next - 1]
    }
}

/// What one worker decoded.
struct WorkerOutcome: Sendable {
    var frames: [Int: VideoFrame] = [:]
    var packetsSent = 0
    var decoderErrors = 0
    /// A picture the decoder refused as over the frame limit (its size), if any.
    var oversizedPicture: (width: Int, height: Int)?
    var readFailed = false
    var seeks = 0
    var restarts = 0
}

final class WorkerResults: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var outcomes: [WorkerOutcome?]
    private(set) var error: Error?
    init(count: Int) { outcomes = Array(repeating: nil, count: count) }
    func store(_ i: Int, _ outcome: WorkerOutcome) { lock.lock(); outcomes[i] = outcome; lock.unlock() }
    func fail(_ e: Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Everything a worker needs to decode segments; immutable and shared.
struct DecodeJob: Sendable {
    let path: String
    let index: FrameIndex
    let wanted: [Bool]
    let wantedFrames: Set<Int>
    let plan: SamplePlan
    let rotation: Int
    let options: DecodeOptions

    /// Decodes segments from `queue` until it is empty.
    func run(demuxer: Demuxer, queue: SegmentQueue) throws -> WorkerOutcome {
        let cursor = PacketCursor(demuxer: demuxer, index: index, seekThreshold: options.seekThreshold)
        let session = try DecodeSession(demuxer: demuxer, path: path, options: options)
        let scaler = FrameScaler(width: plan.width, height: plan.height, rotation: rotation, path: path, alphaOnWhite: plan.alphaOnWhite)
        var outcome = WorkerOutcome()
        let receive: (UnsafeMutablePointer<AVFrame>) throws -> Void = { frame in
            // The decoder hands back the presentation index we put in the packet's pts.
            let presentation = Int(frame.pointee.pts)
            guard wantedFrames.contains(presentation), outcome.frames[presentation] == nil else { return }
            let concealed = frame.pointee.decode_error_flags != 0
                || (frame.pointee.flags & reelql_frame_flag_corrupt()) != 0
            outcome.frames[presentation] = VideoFrame(
                index: presentation, timestamp: index.times[presentation], width: plan.width,
                height: plan.height, rgb: try scaler.convert(frame), concealed: concealed)
        }
        let packet = av_packet_alloc()!
        defer { var p: UnsafeMutablePointer<AVPacket>? = packet; av_packet_free(&p) }
        segments: while let segment = queue.take() {
            try cursor.position(at: segment.key, packet: packet)
            if segment.key > 0 { session.startedMidStream = true }
            for target in segment.targets {
                while cursor.position <= target {
                    let p = cursor.position
                    guard cursor.read(into: packet) >= 0 else {
                        outcome.readFailed = true
                        try session.drain(receive)
                        continue segments
                    }
                    // Leading pictures of the segment's keyframe (open GOP) reference the GOP
                    // before it, which was not decoded: none is sampled, so skip them.
                    if options.skipGOPs && p > segment.key && index.packets[p].ts < index.packets[segment.key].ts && !wanted[p] {
                        av_packet_unref(packet)
                        continue
                    }
                    packet.pointee.pts = Int64(index.frameOfPacket[p])
                    packet.pointee.dts = Int64(p)
                    packet.pointee.duration = 1
                    let skip = options.skipNonReference && !wanted[p]
                    try session.send(packet, skipNonReference: skip, receive)
                    outcome.packetsSent += 1
                    av_packet_unref(packet)
                }
            }
            // Deliver what the decoder still holds and reset it for the next segment.
            try session.drain(receive)
        }
        outcome.decoderErrors = session.corruptPackets
        outcome.oversizedPicture = session.oversizedPicture
        outcome.seeks = cursor.seeks
        outcome.restarts = cursor.restarts
        return outcome
    }
}

/// Reads a stream's packets by decode-order index, moving to any index by reading forward,
/// seeking, or (when a seek cannot be trusted) reopening the file.
final class PacketCursor {
    private var demuxer: Demuxer
    private let index: FrameIndex
    private let seekThreshold: Int
    /// Decode-order index of the packet `read` returns next.
    private(set) var position: Int
    /// A packet read ahead (to learn where a seek landed) and not yet consumed.
    private let pending = av_packet_alloc()!
    private var hasPending = false
    private(set) var seeks = 0
    private(set) var restarts = 0

    init(demuxer: Demuxer, index: FrameIndex, seekThreshold: Int) {
        self.demuxer = demuxer
        self.index = index
        self.seekThreshold = seekThreshold
        // A fresh demuxer is at the start. One that was read before (it built the index) is
        // treated as at the end, which makes the first positioning seek.
        position = demuxer.packetsRead == 0 ? 0 : index.packetCount
    }

    deinit {
        var p: UnsafeMutablePointer<AVPacket>? = pending
        av_packet_free(&p)
    }

    /// The next packet, in decode order. Returns 0, or a negative FFmpeg error at the end.
    func read(into packet: UnsafeMutablePointer<AVPacket>) -> Int32 {
        if hasPending {
            av_packet_move_ref(packet, pending)
            hasPending = false
            position += 1
            return 0
        }
        let r = demuxer.read(into: packet)
        if r >= 0 { position += 1 }
        return r
    }

    /// Makes packet `key` the next one `read` returns.
    func position(at key: Int, packet: UnsafeMutablePointer<AVPacket>) throws {
        if position == key { return }
        if position < key && key - position <= seekThreshold {
            skip(to: key, packet: packet)
            return
        }
        if let byPosition = index.packetByPosition {
            // Demuxer indexes hold dts (MP4) or pts (Matroska): the smaller lands at or before
            // the keyframe either way, and reading forward covers the rest.
            let target = index.packets[key]
            let stamps = [target.rawPTS, target.rawDTS].filter { $0 != FFmpeg.noPTS }
            if hasPending { av_packet_unref(pending); hasPending = false }
            if let ts = stamps.min(), demuxer.seek(to: ts) {
                seeks += 1
                // Where did the seek land? The first packet's byte position tells.
                if demuxer.read(into: pending) >= 0 {
                    if let landed = byPosition[pending.pointee.pos], landed <= key {
                        hasPending = true
                        position = landed
                        skip(to: key, packet: packet)
                        return
                    }
                    av_packet_unref(pending)
                }
            }
        }
        // Start over from the top of the file.
        if hasPending { av_packet_unref(pending); hasPending = false }
        restarts += 1
        demuxer = try Demuxer(path: demuxer.path)
        position = 0
        skip(to: key, packet: packet)
    }

    private func skip(to key: Int, packet: UnsafeMutablePointer<AVPacket>) {
        while position < key {
            guard read(into: packet) >= 0 else { return }
            av_packet_unref(packet)
        }
    }
}

/// An open decoder for one stream. Frames carry the presentation index the caller put in
/// each packet's pts.
final class DecodeSession {
    private var context: UnsafeMutablePointer<AVCodecContext>?
    private let frame: UnsafeMutablePointer<AVFrame>
    private let path: String
    private var failures = 0
    /// Errors the decoder logged (counted through its `opaque`): [0] damage, [1] missing references,
    /// [2] pictures over its max_pixels, [3] × [4] the size of the last one.
    private let loggedErrors = UnsafeMutablePointer<Int32>.allocate(capacity: 5)
    /// Set once decoding starts at a keyframe after the start of the stream: references missing
    /// then (open GOPs) are expected, not damage.
    var startedMidStream = false
    /// Rejected packets and logged decoding errors.
    var corruptPackets: Int {
        failures + Int(reelql_atomic_load(loggedErrors)) + (startedMidStream ? 0 : Int(reelql_atomic_load(loggedErrors + 1)))
    }
    private var draining = false
    /// The size of a picture the decoder refused as over the frame limit, if it refused one.
    var oversizedPicture: (width: Int, height: Int)? {
        guard reelql_atomic_load(loggedErrors + 2) > 0 else { return nil }
        return (Int(reelql_atomic_load(loggedErrors + 3)), Int(reelql_atomic_load(loggedErrors + 4)))
    }

    init(demuxer: Demuxer, path: String, options: DecodeOptions) throws {
        self.path = path
        let par = demuxer.codecParameters
        guard let codec = avcodec_find_decoder(par.pointee.codec_id) else {
            throw MediaError.unsupportedCodec(path: path, codec: FFmpeg.codecName(par.pointee.codec_id))
        }
        guard let ctx = avcodec_alloc_context3(codec) else {
            throw MediaError.ffmpeg(path: path, operation: "allocating a decoder", message: "out of memory")
        }
        context = ctx
        frame = av_frame_alloc()!
        loggedErrors.initialize(repeating: 0, count: 5)
        ctx.pointee.opaque = UnsafeMutableRawPointer(loggedErrors)
        var r = avcodec_parameters_to_context(ctx, par)
        guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "configuring the decoder", message: FFmpeg.errorString(r)) }
        ctx.pointee.thread_count = Int32(max(0, options.threads))
        ctx.pointee.thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE
        ctx.pointee.pkt_timebase = AVRational(num: 1, den: 1)
        // FFmpeg itself allocates no picture past the frame limit (checked before decoding too).
        ctx.pointee.max_pixels = Int64(VideoDecoder.ffmpegMaxPixels)
        r = avcodec_open2(ctx, codec, nil)
        guard r >= 0 else {
            throw MediaError.ffmpeg(path: path, operation: "opening the \(FFmpeg.codecName(par.pointee.codec_id)) decoder", message: FFmpeg.errorString(r))
        }
    }

    deinit {
        var f: UnsafeMutablePointer<AVFrame>? = frame
        av_frame_free(&f)
        avcodec_free_context(&context)
        loggedErrors.deallocate()
    }

    /// Sends one packet, handing every frame that comes out to `receive`.
    func send(_ packet: UnsafeMutablePointer<AVPacket>, skipNonReference: Bool,
              _ receive: (UnsafeMutablePointer<AVFrame>) throws -> Void) throws {
        guard let ctx = context else { return }
        ctx.pointee.skip_frame = skipNonReference ? AVDISCARD_NONREF : AVDISCARD_DEFAULT
        while true {
            let r = avcodec_send_packet(ctx, packet)
            if r == FFmpeg.eagain {
                // The decoder is full: take frames out, then offer the packet again.
                if try receiveAll(receive) == 0 { failures += 1; return }
                continue
            }
            if r < 0 { failures += 1 }
            break
        }
        try receiveAll(receive)
    }

    /// Flushes the decoder: delivers every frame it still holds and resets it for a new position.
    func drain(_ receive: (UnsafeMutablePointer<AVFrame>) throws -> Void) throws {
        guard let ctx = context else { return }
        ctx.pointee.skip_frame = AVDISCARD_DEFAULT
        _ = avcodec_send_packet(ctx, nil)
        draining = true
        try receiveAll(receive)
        draining = false
        avcodec_flush_buffers(ctx)
    }

    @discardableResult
    private func receiveAll(_ receive: (UnsafeMutablePointer<AVFrame>) throws -> Void) throws -> Int {
        guard let ctx = context else { return 0 }
        var count = 0
        var errors = 0
        while true {
            let r = avcodec_receive_frame(ctx, frame)
            if r == FFmpeg.eagain || r == FFmpeg.eof { break }
            if r < 0 {
                failures += 1
                errors += 1
                if errors > 64 || !draining { break }
                continue
            }
            count += 1
            defer { av_frame_unref(frame) }
            try receive(frame)
        }
        return count
    }
}
