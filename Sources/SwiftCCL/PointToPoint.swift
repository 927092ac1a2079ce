import Glibc
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// Point-to-point transfers: sends and receives between one pair match in call order; their tags
/// carry bit 62 and a per-pair, per-direction counter, and they are numbered apart from the collectives.
extension Communicator {
    /// Point-to-point: sends and receives between one pair match in call order. A send blocks until the
    /// message is handed to the transport and, above the eager size, until the peer has posted the
    /// receive — so two ranks that both send large messages to each other first must use `sendRecv`.
    public func send(_ buffer: UnsafeRawPointer?, count: Int, type: DataType, to peer: Int) throws(CCLError) {
        try sendRecv(send: buffer, count: count, type: type, to: peer, recv: nil, recvCount: 0, from: -1)
    }

    public func recv(_ buffer: UnsafeMutableRawPointer?, count: Int, type: DataType, from peer: Int) throws(CCLError) {
        try sendRecv(send: nil, count: 0, type: type, to: -1, recv: buffer, recvCount: count, from: peer)
    }

    /// A send and a receive that progress together (a ring shift cannot deadlock). `to`/`from` of -1
    /// leave that half out.
    public func sendRecv(send: UnsafeRawPointer?, count: Int, type: DataType, to: Int,
                         recv: UnsafeMutableRawPointer?, recvCount: Int, from: Int) throws(CCLError) {
        try run(to >= 0 && from >= 0 ? "sendrecv" : to >= 0 ? "send" : "recv") { () throws(CCLError) in
            if to >= 0 {
                guard to < size else { throw CCLError.invalidArgument("peer \(to) is out of range [0, \(size))") }
                try Validate.buffers(send: send, sendBytes: count, recv: nil, recvBytes: 0, type: type, inPlaceOffset: nil)
            }
            if from >= 0 {
                guard from < size else { throw CCLError.invalidArgument("peer \(from) is out of range [0, \(size))") }
                try Validate.buffers(send: nil, sendBytes: 0, recv: recv, recvBytes: recvCount, type: type, inPlaceOffset: nil)
            }
            guard to >= -1, from >= -1 else { throw CCLError.invalidArgument("peer must be in [0, \(size))") }
            if Group.isActive {
                // Recorded now, posted together with the rest of the group at its end.
                let sb = to >= 0 ? UnsafeRawBufferPointer(start: send, count: count * type.size) : nil
                let rb = from >= 0 ? UnsafeMutableRawBufferPointer(start: recv, count: recvCount * type.size) : nil
                try Group.record(self, Group.PointToPoint(send: sb, to: to, recv: rb, from: from))
                return
            }
            // Outside a group a transfer with oneself needs both halves in this call; refused before
            // anything is posted, so the communicator stays usable.
            if (to == rank) != (from == rank) {
                throw CCLError.invalidUsage("a send to or receive from oneself needs the matching other half in the same call (sendRecv) or group")
            }
            let opName = to >= 0 && from >= 0 ? "sendrecv" : to >= 0 ? "send" : "recv"
            let transfer = { [self] () throws(CCLError) -> Void in
                let number = nextPointToPoint()
                var pending: [(Request, Int)] = []
                // A zero-count message is still a message (it keeps the pair's call order), NULL or not.
                if from >= 0 && from != rank {
                    let tag = p2pTag(from, sending: false)
                    pending.append((try transport.irecv(from: from, tag: tag, into: UnsafeMutableRawBufferPointer(start: recv, count: recvCount * type.size)), from))
                }
                if to >= 0 && to != rank {
                    let tag = p2pTag(to, sending: true)
                    pending.append((try transport.isend(to: to, tag: tag, UnsafeRawBufferPointer(start: send, count: count * type.size)), to))
                }
                if to == rank && from == rank {
                    guard count == recvCount else { throw CCLError.invalidArgument("send to self of \(count) elements but receive of \(recvCount)") }
                    if let send, let recv, count > 0, UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: count * type.size) }
                }
                try waitPointToPoint(pending, operation: opName, number: number)
            }
            if let stream = ExecutionStream.current {
                try enqueue(on: stream, "sendrecv") { () throws(CCLError) in
                    do throws(CCLError) { try transfer() } catch { throw error.breaking }
                }
                return
            }
            do throws(CCLError) { try transfer() } catch { throw error.breaking }
        }
    }

    /// Point-to-point tags: bit 62 set, then a per-pair, per-direction message counter.
    func p2pTag(_ peer: Int, sending: Bool) -> UInt64 {
        let n = p2pCounters.withLock { c -> UInt64 in
            let k = peer * 2 + (sending ? 0 : 1)
            if c.isEmpty { c = Array(repeating: 0, count: size * 2) }
            c[k] &+= 1
            return c[k]
        }
        return (1 << 62) | (n & 0x3fff_ffff_ffff_ffff)
    }

    /// Waits for point-to-point requests (each with its peer) like a collective's waits: a timeout
    /// after `timeoutMs` without progress, and peers told of a long wait. `number` numbers the call.
    func waitPointToPoint(_ pending: [(Request, Int)], operation: String, number: UInt64) throws(CCLError) {
        var ctx = context(number, operation: operation, arguments: CallArguments(collective: .barrier), fingerprint: 0)
        ctx.scansForMismatch = false
        do throws(CCLError) {
            for (q, peer) in pending { try ctx.wait(q, peer: peer) }
        } catch { throw error.with(sequence: number) }
    }

    /// The next point-to-point call's number.
    func nextPointToPoint() -> UInt64 { p2pCalls &+= 1; return p2pCalls }
}
