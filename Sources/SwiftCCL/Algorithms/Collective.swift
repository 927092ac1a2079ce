extension Knobs {
    static let algo = Knob.string("SWCCL_ALGO", default: "", "force an algorithm: ring or recdbl (allreduce)")
    static let chunkBytes = Knob.int("SWCCL_CHUNK_SIZE", default: 512 << 10, "largest pipeline chunk of the ring algorithms, in bytes")
}

/// What an algorithm needs from its communicator: who it is, the transport, a fresh tag space and the
/// deadline rule. Algorithms see nothing else, so they work over any backend.
struct CollectiveContext {
    let rank: Int
    let size: Int
    let transport: any Transport
    let sequence: UInt64
    /// Fingerprint of the operation's arguments, the same on every rank that called it alike.
    let fingerprint: UInt32
    let operation: String
    let timeoutMs: Int
    let scratch: Scratch

    @inline(__always) func tag(_ lane: Int) -> UInt64 { Tag.collective(sequence: sequence, fingerprint: fingerprint, lane: lane) }

    /// A timeout waiting on `peer`, or a clearer error if that peer has sent messages for this very
    /// operation with other arguments.
    func stalled(on peer: Int, _ timeout: CCLError) -> CCLError {
        let seq = sequence & 0x3f_ffff
        for t in transport.unexpectedTags(from: peer) where t >> 62 == 0 {
            let d = Tag.decode(t)
            if d.sequence == seq && d.fingerprint != fingerprint {
                return CCLError(.invalidUsage, "rank \(peer) called operation #\(sequence) with different arguments (collective, count, type, op, root or algorithm differ: fingerprint \(String(d.fingerprint, radix: 16)) there, \(String(fingerprint, radix: 16)) here); every rank must call the same collective with the same count and type",
                                rank: rank, peer: peer)
            }
        }
        return timeout
    }
    var deadline: Deadline { .after(milliseconds: timeoutMs) }

    func send(_ peer: Int, lane: Int, _ p: UnsafeRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.isend(to: peer, tag: tag(lane), UnsafeRawBufferPointer(start: p, count: bytes))
    }

    func recv(_ peer: Int, lane: Int, _ p: UnsafeMutableRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.irecv(from: peer, tag: tag(lane), into: UnsafeMutableRawBufferPointer(start: p, count: bytes))
    }

    func wait(_ r: Request, peer: Int) throws(CCLError) {
        do throws(CCLError) { try transport.wait(r, deadline: deadline) } catch {
            throw error.kind == .timeout ? stalled(on: peer, error) : error
        }
    }
}

/// Drives several independent pipelines ("lanes") of requests over one transport: polls every lane,
/// lets the ones whose requests completed advance, and sleeps in the transport when none can.
struct LaneDriver {
    var sends: [Request?]
    var recvs: [Request?]
    var peerOf: [Int]

    init(lanes: Int) {
        sends = Array(repeating: nil, count: lanes)
        recvs = Array(repeating: nil, count: lanes)
        peerOf = Array(repeating: -1, count: lanes)
    }

    /// True when lane `l` has no outstanding request (tests them, releasing completed ones).
    mutating func isIdle(_ l: Int, _ ctx: CollectiveContext) throws(CCLError) -> Bool {
        if let r = recvs[l] { if try ctx.transport.test(r) { recvs[l] = nil } else { return false } }
        if let s = sends[l] { if try ctx.transport.test(s) { sends[l] = nil } else { return false } }
        return true
    }

    /// Blocks until something may have completed; after `timeoutMs` without any event, throws a
    /// timeout naming a peer the lanes are waiting on.
    func block(_ ctx: CollectiveContext, idleSince: inout UInt64) throws(CCLError) {
        // `idleSince` is when a lane last advanced (the caller resets it): socket events that complete
        // nothing do not postpone the deadline.
        let deadline = Deadline(nanos: idleSince &+ UInt64(ctx.timeoutMs) &* 1_000_000)
        if try ctx.transport.waitForProgress(deadline: deadline) { return }
        if deadline.hasPassed {
            let l = (0..<recvs.count).first { recvs[$0] != nil } ?? (0..<sends.count).first { sends[$0] != nil } ?? 0
            let p = peerOf[l]
            let what = recvs[l] != nil ? "data from" : "rank \(p) to take data from"
            throw ctx.stalled(on: p, CCLError(.timeout, "no progress for \(ctx.timeoutMs) ms waiting for \(recvs[l] != nil ? "\(what) rank \(p)" : what + " this rank"); the peer is stopped, overloaded, or not in the same collective",
                           rank: ctx.rank, peer: p))
        }
    }
}
