import CSwcclVerbs
import SwcclSystem
import SwcclCore

// The verbs wire format. Every SEND starts with a 40-byte header `[type, tag, a, b, c]` (little-endian
// 64-bit words): EAGER (a = length, the payload follows in the same SEND), RTS (a = length: a large
// message is coming), CTS (a = address, b = length, c = rkey << 32 | receive id), BYE. A large
// message is RDMA-written into the granted buffer and ends with a write-with-immediate, immediate =
// the receive id (slot and generation).

package enum MessageType: UInt64 { case eager = 1, rts = 2, cts = 3, bye = 5 }

/// A SEND's 40-byte header `[type, tag, a, b, c]`, checked as far as it can be without the pair's
/// state (pure: the fuzz harness calls it): a known type; an eager message whose length is what the
/// SEND carries; a rendezvous request's or a grant's length a count of bytes, not a wrapped one.
package struct VerbsHeader: Equatable {
    package var type: MessageType
    package var tag: UInt64
    /// EAGER and RTS: the message's length; CTS: the granted length (b); BYE: 0.
    package var length: Int
    package var a: UInt64, b: UInt64, c: UInt64

    /// Largest length a header may state (more than any buffer; as TCP's rendezvous requests).
    package static let maxLength = UInt64(Int64.max / 4)

    package static func decode(_ buf: UnsafeRawPointer, count n: Int, from peer: Int) throws(CCLError) -> VerbsHeader {
        guard n >= VerbsWire.headerBytes, let type = MessageType(rawValue: UInt64(littleEndian: buf.loadUnaligned(as: UInt64.self))) else {
            throw CCLError(.remoteError, "garbled message (\(n) bytes) from rank \(peer)", peer: peer)
        }
        let tag = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let a = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let b = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        let c = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
        var length = 0
        switch type {
        case .eager:
            guard a == UInt64(n - VerbsWire.headerBytes) else {
                throw CCLError(.remoteError, "eager message from rank \(peer) says \(a) bytes but carries \(n - VerbsWire.headerBytes)", peer: peer)
            }
            length = Int(a)
        case .rts, .cts:
            let stated = type == .rts ? a : b
            guard stated <= maxLength else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): \(type == .rts ? "rendezvous request" : "grant") of \(stated) bytes", peer: peer)
            }
            length = Int(stated)
        case .bye:
            break
        }
        return VerbsHeader(type: type, tag: tag, length: length, a: a, b: b, c: c)
    }
}

/// The message each side of a pair sends on the control connection to set up its queue pair:
/// `[magic, QPN, PSN, LID, MTU, eager size, GID (16 bytes)]`.
package struct VerbsSetup: Equatable {
    package var qpn: UInt32, psn: UInt32, lid: UInt32, mtu: UInt32, eager: UInt32
    package var gid: [UInt8]
    package static let bytes = 24 + 16

    package init(qpn: UInt32, psn: UInt32, lid: UInt32, mtu: UInt32, eager: UInt32, gid: [UInt8]) {
        self.qpn = qpn; self.psn = psn; self.lid = lid; self.mtu = mtu; self.eager = eager; self.gid = gid
    }

    package func encode() -> [UInt8] {
        var w = ByteWriter()
        w.u32(VerbsWire.setupMagic); w.u32(qpn); w.u32(psn); w.u32(lid); w.u32(mtu); w.u32(eager)
        w.bytes.append(contentsOf: gid)
        return w.bytes
    }

    package static func decode(_ b: [UInt8]) throws(CCLError) -> VerbsSetup {
        var r = ByteReader(b)
        guard b.count == bytes, try r.u32() == VerbsWire.setupMagic else { throw CCLError(.remoteError, "garbled queue-pair set-up message") }
        let qpn = try r.u32(), psn = try r.u32(), lid = try r.u32(), mtu = try r.u32(), eager = try r.u32()
        var gid: [UInt8] = []
        for _ in 0..<16 { gid.append(try r.u8()) }
        return VerbsSetup(qpn: qpn, psn: psn, lid: lid, mtu: mtu, eager: eager, gid: gid)
    }
}

/// Work request ids: kind in the top bit, the peer's rank in the next 23, then a send's sequence
/// number (40 bits) or a receive buffer's index.
package enum WorkID {
    package enum Kind { case send, recv }
    package static func send(peer: Int, seq: UInt64) -> UInt64 { 1 << 63 | UInt64(peer) << 40 | seq & (1 << 40 - 1) }
    package static func recv(peer: Int, index: Int) -> UInt64 { UInt64(peer) << 40 | UInt64(index) }
    package static func decode(_ id: UInt64) -> (Kind, Int, UInt64) {
        (id >> 63 == 1 ? .send : .recv, Int((id >> 40) & (1 << 23 - 1)), id & (1 << 40 - 1))
    }
}

package struct Grant {
    package var tag: UInt64
    package var address: UInt64
    package var length: Int
    package var rkey: UInt32
    package var rid: UInt32
}

/// A receive completion not yet handled: a SEND of `bytes` in `buffer`, or a write with immediate.
package struct VerbsArrival {
    package var workID: UInt64
    package var buffer: UnsafeMutableRawPointer
    package var bytes: Int
    package var isWrite: Bool
    package var immediate: UInt32
}

package enum OutOp {
    /// Slots are named with their generation: an entry whose request failed meanwhile is skipped.
    case eager(Int32, UInt32)
    case control(MessageType, tag: UInt64, a: UInt64, b: UInt64, c: UInt64)
    case write(Int32, UInt32, remote: UInt64, rkey: UInt32, rid: UInt32)
}

package struct Registration {
    package var start: UInt
    package var end: UInt
    package var mr: UnsafeMutablePointer<ibv_mr>
    package var refs: Int
    package var user: Int
    package var writable: Bool
}

