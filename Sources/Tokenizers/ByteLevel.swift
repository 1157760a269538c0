import Foundation

/// GPT-2's byte-level alphabet: every byte is one printable Unicode character, so that BPE works
/// on text without ever seeing raw control or non-UTF-8 bytes (`bytes_to_unicode`).
enum ByteLevel {
    /// byte → character
    static let encoder: [Character] = {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }()

    /// character → byte
    static let decoder: [Character: UInt8] = {
        var d: [Character: UInt8] = [:]
        for (b, c) in encoder.enumerated() { d[c] = UInt8(b) }
        return d
    }()
}
