import SwcclSystem

/// Little-endian serialisation of small control messages (bootstrap, handshakes).
package struct ByteWriter {
    package var bytes: [UInt8] = []
    package init() {}
    package mutating func u8(_ v: UInt8) { bytes.append(v) }
    package mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func i64(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    package mutating func blob(_ b: [UInt8]) { u32(UInt32(b.count)); bytes.append(contentsOf: b) }
    package mutating func string(_ s: String) { blob(Array(s.utf8)) }
}

package struct ByteReader {
    package let bytes: [UInt8]
    package var offset = 0
    package init(_ bytes: [UInt8]) { self.bytes = bytes }

    private mutating func take(_ n: Int) throws(CCLError) -> ArraySlice<UInt8> {
        guard n >= 0, offset + n <= bytes.count else {
            throw CCLError(.remoteError, "malformed message: needs \(n) more bytes at offset \(offset) of \(bytes.count)")
        }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    package mutating func u8() throws(CCLError) -> UInt8 { try take(1).first! }
    package mutating func u32() throws(CCLError) -> UInt32 {
        let s = try take(4)
        return s.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    package mutating func u64() throws(CCLError) -> UInt64 {
        let s = try take(8)
        return s.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    package mutating func i64() throws(CCLError) -> Int { Int(Int64(bitPattern: try u64())) }
    package mutating func blob(max: Int = 1 << 20) throws(CCLError) -> [UInt8] {
        let n = Int(try u32())
        guard n <= max else { throw CCLError(.remoteError, "malformed message: field of \(n) bytes exceeds \(max)") }
        return Array(try take(n))
    }
    package mutating func string() throws(CCLError) -> String { String(decoding: try blob(max: 4096), as: UTF8.self) }
    package var atEnd: Bool { offset == bytes.count }
}
