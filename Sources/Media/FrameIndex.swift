import CFFmpeg
import Foundation

/// One video packet, as found by a demux-only pass over the file (decode order).
struct IndexedPacket {
    /// Presentation timestamp (stream time base): pts, else dts, else extrapolated.
    var ts: Int64
    var rawPTS: Int64
    var rawDTS: Int64
    var pos: Int64
    var isKey: Bool
    /// The demuxer marks it as not to be shown (pre-roll before an MP4 edit list's start).
    var discard: Bool
}

/// Every frame of a video stream, found without decoding: packets in decode order, their
/// presentation order and times. Sampling chooses frames from it; decoding uses it to skip.
///
/// A frame is a packet that a player shows: packets the container hides (edit-list pre-roll),
/// packets before the first keyframe (a capture that starts mid-GOP) and the leading pictures
/// of that first keyframe cannot be shown and are not frames, though they are still packets.
public struct FrameIndex: Sendable {
    var packets: [IndexedPacket]
    /// presentation index → packet (decode-order) index
    var packetOfFrame: [Int]
    /// packet index → presentation index, or −1 for a packet that is not a shown frame
    var frameOfPacket: [Int]
    /// Seconds from the first frame, per presentation index (ascending).
    public let times: [Double]
    /// Constant spacing of frame timestamps.
    public let isConstantFrameRate: Bool
    /// An error other than end-of-file that stopped the demuxer.
    public let readError: String?
    /// Packets the demuxer flagged as corrupt (short reads, CRC errors).
    public let corruptPackets: Int
    /// For seeking: packet index by byte position, when positions identify packets.
    let packetByPosition: [Int64: Int]?
    let timeBase: Double
    /// 1 / the stream's declared frame rate.
    let nominalFrameDuration: Double

    /// Shown frames.
    public var count: Int { packetOfFrame.count }
    /// Packets of the stream, shown or not.
    public var packetCount: Int { packets.count }
    /// Time from the first frame's start to the last frame's end, in seconds.
    public var span: Double {
        guard let last = times.last else { return 0 }
        return last + medianFrameDuration
    }

    /// Time covered by all packets, shown or not: how far the file can be read.
    public var packetSpan: Double {
        guard let lo = packets.map(\.ts).min(), let hi = packets.map(\.ts).max() else { return 0 }
        return Self.ticks(from: lo, to: hi) * timeBase + medianFrameDuration
    }

    /// b − a time-base ticks, as a Double: exact where the difference fits an Int64, and no
    /// overflow trap where a hostile file's timestamps lie more than 2⁶³ apart.
    static func ticks(from a: Int64, to b: Int64) -> Double {
        let (d, overflow) = b.subtractingReportingOverflow(a)
        return overflow ? Double(b) - Double(a) : Double(d)
    }

    public var medianFrameDuration: Double {
        guard times.count > 1 else { return nominalFrameDuration }
        var deltas = zip(times.dropFirst(), times).map { $0 - $1 }
        deltas.sort()
        return deltas[deltas.count / 2]
    }

    /// Demuxes the whole stream once.
    static func build(_ demuxer: Demuxer) -> FrameIndex {
        let st = demuxer.stream.pointee
        let tb = FFmpeg.double(st.time_base) ?? 1.0 / 90_000
        let rate = FFmpeg.double(st.avg_frame_rate) ?? FFmpeg.double(st.r_frame_rate) ?? 25
        let nominalTicks = max(Int64(1), Int64((1 / rate / tb).rounded()))

        var packets: [IndexedPacket] = []
        // The container's declared count only sizes a first reservation (a hostile header may claim 10¹²).
        if st.nb_frames > 0 { packets.reserveCapacity(Int(min(st.nb_frames, 1 << 20))) }
        var corrupt = 0
        var readError: String? = nil
        let packet = av_packet_alloc()!
        defer { var p: UnsafeMutablePointer<AVPacket>? = packet; av_packet_free(&p) }
        while true {
            let r = demuxer.read(into: packet)
            if r < 0 {
                if r != FFmpeg.eof { readError = FFmpeg.errorString(r) }
                break
            }
            let p = packet.pointee
            var ts = p.pts != FFmpeg.noPTS ? p.pts : p.dts
            if ts == FFmpeg.noPTS {
                // After the previous packet (saturating: a hostile previous time or duration near 2⁶³).
                let (next, overflow) = (packets.last?.ts ?? 0).addingReportingOverflow(packets.isEmpty ? 0 : (p.duration > 0 ? p.duration : nominalTicks))
                ts = overflow ? Int64.max : next
            }
            if p.flags & reelql_pkt_flag_corrupt() != 0 { corrupt += 1 }
            packets.append(IndexedPacket(ts: ts, rawPTS: p.pts, rawDTS: p.dts, pos: p.pos,
                                         isKey: p.flags & reelql_pkt_flag_key() != 0,
                                         discard: p.flags & reelql_pkt_flag_discard() != 0))
            av_packet_unref(packet)
        }
        if readError == nil && demuxer.endedPrematurely { readError = "the file ended prematurely" }
        corrupt += demuxer.loggedErrors

        // Shown frames: from the first keyframe on (and not presented before it), not hidden.
        let firstKey = packets.firstIndex { $0.isKey }
        let shown = packets.indices.filter { i in
            guard !packets[i].discard else { return false }
            guard let k = firstKey else { return true }
            return i >= k && packets[i].ts >= packets[k].ts
        }
        let order = shown.sorted { (packets[$0].ts, $0) < (packets[$1].ts, $1) }
        var frameOfPacket = [Int](repeating: -1, count: packets.count)
        for (frame, packetIndex) in order.enumerated() { frameOfPacket[packetIndex] = frame }
        let firstTS = order.first.map { packets[$0].ts } ?? 0
        let times = order.map { Self.ticks(from: firstTS, to: packets[$0].ts) * tb }

        // Constant rate: every spacing within one tick (or 2%) of the median spacing.
        var constant = true
        if order.count > 2 {
            // Spacings beyond Int64 (timestamps 2⁶³ apart) are no constant rate. The others are
            // ≥ 0 (frames in presentation order), so their differences fit.
            let spacings = zip(order.dropFirst(), order).map { packets[$0].ts.subtractingReportingOverflow(packets[$1].ts) }
            if spacings.contains(where: \.overflow) {
                constant = false
            } else {
                let deltas = spacings.map(\.partialValue)
                let median = deltas.sorted()[deltas.count / 2]
                let tolerance = max(Int64(1), median / 50)
                constant = median > 0 && deltas.allSatisfy { abs($0 - median) <= tolerance }
            }
        }

        var byPosition: [Int64: Int]? = [:]
        for (i, p) in packets.enumerated() {
            if p.pos < 0 || byPosition![p.pos] != nil { byPosition = nil; break }
            byPosition![p.pos] = i
        }
        return FrameIndex(packets: packets, packetOfFrame: order, frameOfPacket: frameOfPacket,
                          times: times, isConstantFrameRate: constant, readError: readError,
                          corruptPackets: corrupt, packetByPosition: byPosition, timeBase: tb,
                          nominalFrameDuration: 1 / rate)
    }

    /// The keyframe to start decoding from to obtain packet `p`: the last keyframe at or before
    /// it in decode order that is not presented after it (so leading pictures of an open GOP
    /// start from an earlier keyframe). 0 when there is none.
    func keyframe(before p: Int) -> Int {
        var k = p
        while k > 0 {
            if packets[k].isKey && packets[k].ts <= packets[p].ts { return k }
            k -= 1
        }
        return 0
    }
}
