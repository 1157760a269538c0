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
    public init(threads: Int = 0, skipNonReference: Bool = true, skipGOPs: Bool = true, seekThreshold: Int = 120) {
        self.threads = threads
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
    private var cachedIndex: FrameIndex?
    /// Decode-order index of the next packet `readPacket` will return.
    private var readPosition = 0
    /// A packet read ahead (to learn where a seek landed) and not yet consumed.
    private var pending: UnsafeMutablePointer<AVPacket>?

    public init(path: String, options: DecodeOptions = DecodeOptions()) throws {
        self.path = path
        self.decodeOptions = options
        demuxer = try Demuxer(path: path)
        probe = VideoProbe(demuxer: demuxer)
        if avcodec_find_decoder(demuxer.codecParameters.pointee.codec_id) == nil {
            let par = demuxer.codecParameters.pointee
            var name = FFmpeg.codecName(par.codec_id)
            if par.codec_id == AV_CODEC_ID_NONE, let tag = FFmpeg.fourCC(par.codec_tag) { name = tag }
            throw MediaError.unsupportedCodec(path: path, codec: name)
        }
    }

    /// Every frame's presentation time, from one demux-only pass (cached).
    public func frameIndex() -> FrameIndex {
        if let cachedIndex { return cachedIndex }
        let index = FrameIndex.build(demuxer)
        readPosition = index.count
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

    /// Chooses the frames and output size for `options` without decoding.
    public func plan(_ options: SamplingOptions) throws -> SamplePlan {
        try options.validate()
        let index = frameIndex()
        guard index.count > 0 else {
            throw MediaError.decodeFailed(path: path, reason: index.readError.map { "no video packet could be read: \($0)" } ?? "the video stream holds no packets")
        }
        let fps = probe.averageFrameRate ?? probe.realFrameRate
            ?? (index.medianFrameDuration > 0 ? 1 / index.medianFrameDuration : 25)
        let indices: [Int]
        if index.isConstantFrameRate {
            indices = try FrameSampler.constantRateIndices(total: index.count, videoFPS: fps, fps: options.fps,
                                                          start: options.start, end: options.end,
                                                          maxFrames: options.maxFrames)
        } else {
            indices = try FrameSampler.variableRateIndices(times: index.times, fps: options.fps,
                                                          start: options.start, end: options.end,
                                                          maxFrames: options.maxFrames)
        }
        let size = try options.resize.outputSize(width: probe.displayWidth, height: probe.displayHeight,
                                                 frameCount: indices.count)
        return SamplePlan(indices: indices, timestamps: indices.map { index.times[$0] },
                          width: size.width, height: size.height, totalFrames: index.count,
                          videoFPS: fps, variableFrameRate: !index.isConstantFrameRate)
    }

    /// Samples frames as `options` say, decoding only what those frames need.
    /// A damaged file yields what it could and says in `damage` what was lost.
    public func sample(_ options: SamplingOptions) throws -> SampledVideo {
        let plan = try plan(options)
        return try decode(plan)
    }

    /// Decodes the frames of `plan`.
    public func decode(_ plan: SamplePlan) throws -> SampledVideo {
        let index = frameIndex()
        let scaler = FrameScaler(width: plan.width, height: plan.height, rotation: probe.rotation)
        let session = try DecodeSession(demuxer: demuxer, path: path, options: decodeOptions)

        // Packets holding sampled frames, in decode order.
        let wantedFrames = Set(plan.indices)
        var wantedPacket = [Bool](repeating: false, count: index.count)
        for f in wantedFrames { wantedPacket[index.packetOfFrame[f]] = true }
        let targets = wantedPacket.indices.filter { wantedPacket[$0] }

        var decoded: [Int: VideoFrame] = [:]
        var sent = 0
        let receive: (UnsafeMutablePointer<AVFrame>) throws -> Void = { frame in
            let presentation = Int(frame.pointee.pts)
            guard presentation >= 0, presentation < index.count, wantedFrames.contains(presentation),
                  decoded[presentation] == nil else { return }
            let concealed = frame.pointee.decode_error_flags != 0
                || (frame.pointee.flags & reelql_frame_flag_corrupt()) != 0
            decoded[presentation] = VideoFrame(index: presentation, timestamp: index.times[presentation],
                                               width: plan.width, height: plan.height,
                                               rgb: try scaler.convert(frame), concealed: concealed)
        }

        let packet = av_packet_alloc()!
        defer { var p: UnsafeMutablePointer<AVPacket>? = packet; av_packet_free(&p) }
        var truncatedRead = false
        for target in targets where decoded[index.frameOfPacket[target]] == nil {
            let key = decodeOptions.skipGOPs ? index.keyframe(before: target) : 0
            if key > readPosition || readPosition > target {
                // Cross the gap: finish what the decoder holds, then restart at the keyframe.
                try session.drain(receive)
                try position(at: key, index: index, packet: packet)
            }
            while readPosition <= target {
                let r = readPacket(into: packet)
                if r < 0 { truncatedRead = true; break }
                let p = readPosition
                readPosition += 1
                packet.pointee.pts = Int64(index.frameOfPacket[p])
                packet.pointee.dts = Int64(p)
                packet.pointee.duration = 1
                let nonReference = decodeOptions.skipNonReference && !wantedPacket[p]
                try session.send(packet, skipNonReference: nonReference, receive)
                sent += 1
                av_packet_unref(packet)
            }
            if truncatedRead { break }
        }
        try session.drain(receive)

        var frames: [VideoFrame] = []
        frames.reserveCapacity(plan.indices.count)
        var damage = DecodeDamage()
        for i in plan.indices {
            if let f = decoded[i] {
                frames.append(f)
                if f.concealed { damage.concealedSampledFrames += 1 }
            } else {
                damage.lostSampledFrames += 1
            }
        }
        damage.corruptPackets = session.corruptPackets + index.corruptPackets
        damage.readableFrames = index.count
        damage.readableDuration = index.span
        damage.declaredDuration = probe.duration
        damage.declaredFrames = probe.frameCountExact ? probe.frameCount : nil
        damage.truncated = isTruncated(index) || truncatedRead
        if frames.isEmpty {
            if damage.truncated { throw MediaError.truncated(path: path, damage: damage) }
            throw MediaError.decodeFailed(path: path, reason: damage.corruptPackets > 0 ? damage.summary : "the decoder returned no frame")
        }
        return SampledVideo(plan: plan, frames: frames, damage: damage.isEmpty ? nil : damage,
                            packetsDecoded: sent, packetsTotal: index.count)
    }

    /// The file ends before the container says: fewer packets than its frame count, or
    /// (without one) readable timestamps ending well before its declared duration, or a read error.
    private func isTruncated(_ index: FrameIndex) -> Bool {
        if index.readError != nil { return true }
        if probe.frameCountExact, let declared = probe.frameCount, index.count < declared { return true }
        if !probe.frameCountExact, let declared = probe.duration {
            let slack = max(1.0, 3 * index.medianFrameDuration)
            return index.span + slack < declared
        }
        return false
    }

    /// Makes packet `key` the next one the demuxer returns: by reading forward when it is near,
    /// by seeking when it is far or behind, by reopening the file when a seek cannot be trusted.
    private func position(at key: Int, index: FrameIndex, packet: UnsafeMutablePointer<AVPacket>) throws {
        if readPosition <= key && key - readPosition <= decodeOptions.seekThreshold {
            try skipForward(to: key, packet: packet)
            return
        }
        if let byPosition = index.packetByPosition {
            let target = index.packets[key]
            let ts = target.rawPTS != FFmpeg.noPTS ? target.rawPTS : target.rawDTS
            if ts != FFmpeg.noPTS && demuxer.seek(to: ts) {
                // Find where the seek landed by the byte position of the first packet.
                let r = demuxer.read(into: packet)
                if r >= 0, let landed = byPosition[packet.pointee.pos], landed <= key {
                    // Keep the packet: it is the next one to consume, at index `landed`.
                    if pending == nil { pending = av_packet_alloc() }
                    av_packet_move_ref(pending, packet)
                    readPosition = landed
                    try skipForward(to: key, packet: packet)
                    return
                }
                if r >= 0 { av_packet_unref(packet) }
            }
        }
        // Start over from the top of the file.
        if let p = pending { av_packet_unref(p) }
        demuxer = try Demuxer(path: path)
        readPosition = 0
        try skipForward(to: key, packet: packet)
    }

    private func skipForward(to key: Int, packet: UnsafeMutablePointer<AVPacket>) throws {
        while readPosition < key {
            guard readPacket(into: packet) >= 0 else { return }
            av_packet_unref(packet)
            readPosition += 1
        }
    }

    /// The next packet of the stream: the one read ahead, if any, else the demuxer's next.
    private func readPacket(into packet: UnsafeMutablePointer<AVPacket>) -> Int32 {
        if let p = pending, p.pointee.data != nil || p.pointee.size > 0 || p.pointee.buf != nil {
            av_packet_move_ref(packet, p)
            return 0
        }
        return demuxer.read(into: packet)
    }

    deinit {
        var p = pending
        av_packet_free(&p)
    }
}

/// An open decoder for one stream. Frames carry the presentation index the caller put in
/// each packet's pts.
final class DecodeSession {
    private var context: UnsafeMutablePointer<AVCodecContext>?
    private let frame: UnsafeMutablePointer<AVFrame>
    private let path: String
    private var failures = 0
    /// Errors the decoder logged (counted through its `opaque`), rejected packets, damaged frames.
    private let loggedErrors = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    var corruptPackets: Int { failures + Int(reelql_atomic_load(loggedErrors)) }
    private var draining = false

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
        loggedErrors.initialize(to: 0)
        ctx.pointee.opaque = UnsafeMutableRawPointer(loggedErrors)
        var r = avcodec_parameters_to_context(ctx, par)
        guard r >= 0 else { throw MediaError.ffmpeg(path: path, operation: "configuring the decoder", message: FFmpeg.errorString(r)) }
        ctx.pointee.thread_count = Int32(max(0, options.threads))
        ctx.pointee.thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE
        ctx.pointee.pkt_timebase = AVRational(num: 1, den: 1)
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
                if try receiveAll(receive) == 0 { return }
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
