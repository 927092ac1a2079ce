import SwcclSystem
import SwcclCore
import SwcclTransport

// The TCP wire format and the state of each connection. Every frame starts with a 32-byte header of
// four little-endian 64-bit words, `[type | flags << 32, tag, a, b]`:
// - EAGER: a = length; the payload follows.
// - RTS (request to send): a = length, b = message id.
// - CTS (clear to send): b = message id; a = 1 when the receiver rejects the message (size mismatch).
// - DATA: tag = offset in the message, a = fragment length, b = message id; the fragment follows.
// - BYE: the peer is closing cleanly (a = 1: because it aborted).
// - NOTICE: a = length, b = kind; an encoded `Notice` follows (an abort's culprit and cause, or a
//   long wait).

package enum FrameType: UInt32 { case eager = 1, rts = 2, cts = 3, data = 4, bye = 5, notice = 6 }

/// What can be checked of a frame header without the connection's state (pure: the fuzz harness
/// calls it too, through `TCPWire.read`).
package enum FrameHeader {
    /// The frame's type, if the header is one a rank may send: a known type, an eager message of at
    /// most `TCPWire.maxEagerBytes`, a rendezvous request with a length and an id, a notice of
    /// 1…`Notice.maxBytes` bytes. (DATA and CTS are checked against the message they name.)
    @inline(__always)
    package static func check(w0: UInt64, a: UInt64, b: UInt64, from peer: Int) throws(CCLError) -> FrameType {
        guard let type = FrameType(rawValue: UInt32(truncatingIfNeeded: w0)) else {
            throw CCLError(.remoteError, "garbage on the wire from rank \(peer): unknown frame type \(w0)")
        }
        switch type {
        case .eager:
            guard a <= UInt64(TCPWire.maxEagerBytes) else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): eager message of \(a) bytes exceeds \(TCPWire.maxEagerBytes)")
            }
        case .rts:
            guard a > 0, a <= UInt64(Int64.max / 4), b != 0 else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): bad rendezvous request (length \(a), id \(b))")
            }
        case .notice:
            guard a > 0, a <= UInt64(Notice.maxBytes) else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): notice of \(a) bytes")
            }
        case .cts, .data, .bye:
            break
        }
        return type
    }
}

package struct Frame {
    package var header: (UInt64, UInt64, UInt64, UInt64)
    package var payload: UnsafeRawPointer?
    package var payloadLength: Int
    package var sent = 0
    package var slot: Int32

    package init(type: FrameType, tag: UInt64, a: UInt64, b: UInt64, payload: UnsafeRawPointer?, payloadLength: Int, slot: Int32) {
        header = (UInt64(type.rawValue).littleEndian, tag.littleEndian, a.littleEndian, b.littleEndian)
        self.payload = payloadLength > 0 ? payload : nil
        self.payloadLength = payloadLength
        self.slot = slot
    }
}

package struct TCPSocket {
    package var fd: Int32 = -1
    package var out: [Frame] = []
    package var head = 0
    // Receive side: a small staging buffer for headers and small bodies.
    package let staging = UnsafeMutableRawPointer.allocate(byteCount: TCPWire.stagingBytes, alignment: 64)
    package var stageStart = 0
    package var stageEnd = 0
    package var bodyTarget: UnsafeMutableRawPointer?
    package var bodyRemaining = 0
    package var bodyLength = 0
    package var bodySlot: Int32 = -1
    package var bodyUnexpected = -1

    package var hasOutput: Bool { head < out.count }
    package var staged: Int { stageEnd - stageStart }

    package mutating func popFront() {
        head += 1
        if head == out.count { out.removeAll(keepingCapacity: true); head = 0 }
        else if head >= 64 && head * 2 >= out.count { out.removeFirst(head); head = 0 }
    }

    package mutating func compactStaging() {
        if stageStart == stageEnd { stageStart = 0; stageEnd = 0; return }
        if stageStart > 0 && stageEnd == TCPWire.stagingBytes || stageStart > TCPWire.stagingBytes / 2 {
            let n = stageEnd - stageStart
            staging.copyMemory(from: staging + stageStart, byteCount: n)
            stageStart = 0; stageEnd = n
        }
    }

    package mutating func beginBody(target: UnsafeMutableRawPointer?, length: Int, slot: Int32, unexpected: Int) {
        bodyTarget = target; bodyRemaining = length; bodyLength = length; bodySlot = slot; bodyUnexpected = unexpected
    }

    package mutating func advanceBody(_ n: Int) {
        bodyRemaining -= n
        if let t = bodyTarget { bodyTarget = t + n }
    }
}

package struct TCPPeer {
    package let rank: Int
    package let address: SocketAddress
    package var socks: [TCPSocket]
    package var saidGoodbye = false
    package var goodbyeWasAbort = false
    /// Reading of the control connection paused at a message held back past the unexpected budget
    /// (`MessageCore.mustHold`): poll no longer watches it; posting a receive reads it again.
    package var stalled = false
    /// The buffer a notice's body is read into.
    package var noticeIn: UnsafeMutableRawPointer?
    package var readingLastWords = false

    package init(rank: Int, address: SocketAddress, nsocks: Int) {
        self.rank = rank
        self.address = address
        socks = (0..<nsocks).map { _ in TCPSocket() }
    }
}
