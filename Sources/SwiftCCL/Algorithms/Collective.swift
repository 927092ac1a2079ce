/// What an algorithm needs from its communicator: who it is, the transport, a fresh tag space and the
/// deadline rule. Algorithms see nothing else, so they work over any backend.
struct CollectiveContext {
    let rank: Int
    let size: Int
    let transport: any Transport
    /// The transport's shared memory, when it has some (cast once per communicator, not per call).
    let arena: (any SharedArena)?
    let sequence: UInt64
    /// Fingerprint of the operation's arguments, the same on every rank that called it alike.
    let fingerprint: UInt32
    let operation: String
    let timeoutMs: Int
    let scratch: Scratch
    /// Numbers the communicator's one-shot operations (the same sequence on every rank).
    let oneShot: Counter
    /// Numbers the communicator's staged pipeline steps (the same sequence on every rank).
    let steps: Counter
    /// Tells peers of long waits, so a timeout names the rank that is actually stuck.
    let blame: Blame?
    /// Whether waits look for peers in this operation with other arguments (not for point-to-point,
    /// whose tags carry no operation).
    var scansForMismatch = true

    /// `allreduce #17`, for notices.
    var label: String { "\(operation) #\(sequence)" }

    /// Blocked on `peer` since `since` (monotonic ns): past half the timeout, peers hear of it.
    func blocked(on peer: Int, since: UInt64) {
        blame?.blocked(on: peer, since: since, operation: label)
    }

    /// A wait completed: a notice of this rank waiting, if one went out, is void.
    @inline(__always) func moved() { blame?.progressed(operation: label) }

    @inline(__always) func tag(_ lane: Int) -> UInt64 { Tag.collective(sequence: sequence, fingerprint: fingerprint, lane: lane) }

    /// A timeout waiting on `peer`, or a clearer error if that peer — or any other — has sent
    /// messages for this very operation with other arguments.
    func stalled(on peer: Int, _ timeout: CCLError) -> CCLError {
        mismatch(peer) ?? anyMismatch() ?? timeout
    }

    func anyMismatch() -> CCLError? { (0..<size).lazy.compactMap { mismatch($0) }.first }

    /// This operation's sequence number and fingerprint in one word, as one-shot areas publish it.
    var signature: UInt64 { ((sequence & 0xffff_ffff) << 32) | UInt64(fingerprint) }

    /// An error if `peer` sent messages tagged with this operation's sequence number but another
    /// fingerprint: it called this operation with other arguments (a definite error, not a delay).
    func mismatch(_ peer: Int) -> CCLError? {
        guard peer != rank, peer >= 0, peer < size else { return nil }
        if let arena {
            // A peer in a one-shot operation with this sequence number and other arguments.
            let words = (0..<2).map { arena.signatureWord(of: peer, parity: $0) } + (0..<arena.stageSlots).map { arena.stageSignature(of: peer, slot: $0) }
            for word in words {
                let w = word.pointee
                if w >> 32 == sequence & 0xffff_ffff && UInt32(truncatingIfNeeded: w) != fingerprint {
                    return CCLError(.invalidUsage, "rank \(peer) called operation #\(sequence) with different arguments (collective, count, type, op, root or algorithm differ: fingerprint \(String(UInt32(truncatingIfNeeded: w), radix: 16)) there, \(String(fingerprint, radix: 16)) here); every rank must call the same collective with the same count and type",
                                    rank: rank, peer: peer)
                }
            }
        }
        let seq = sequence & 0x3f_ffff
        for t in transport.unexpectedTags(from: peer) where t >> 62 == 0 {
            let d = Tag.decode(t)
            if d.sequence == seq && d.fingerprint != fingerprint {
                return CCLError(.invalidUsage, "rank \(peer) called operation #\(sequence) with different arguments (collective, count, type, op, root or algorithm differ: fingerprint \(String(d.fingerprint, radix: 16)) there, \(String(fingerprint, radix: 16)) here); every rank must call the same collective with the same count and type",
                                rank: rank, peer: peer)
            }
        }
        return nil
    }

    /// Every `mismatchScanNanos` of blocking, waiting ranks look for a peer in the same operation
    /// with other arguments, so a wrong call fails within a fraction of a second, not at the timeout.
    static let mismatchScanNanos: UInt64 = 100_000_000
    var deadline: Deadline { .after(milliseconds: timeoutMs) }

    func send(_ peer: Int, lane: Int, _ p: UnsafeRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.isend(to: peer, tag: tag(lane), UnsafeRawBufferPointer(start: p, count: bytes))
    }

    func recv(_ peer: Int, lane: Int, _ p: UnsafeMutableRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.irecv(from: peer, tag: tag(lane), into: UnsafeMutableRawBufferPointer(start: p, count: bytes))
    }

    /// Waits for one request: polls, yields while spinning, then sleeps in the transport (see `idle`).
    func wait(_ r: Request, peer: Int) throws(CCLError) {
        var req: Request? = r
        var progress = Progress()
        while true {
            if try done(&req) { moved(); return }
            try idle(advanced: false, progress: &progress, waitingOn: peer, receiving: nil)
        }
    }

    /// Sends `sendBytes` to `to` and receives `recvBytes` from `from` at once (either may be the same
    /// peer), and waits for both.
    func exchange(lane: Int, to: Int, _ s: UnsafeRawPointer, _ sendBytes: Int,
                  from: Int, _ r: UnsafeMutableRawPointer, _ recvBytes: Int) throws(CCLError) {
        let rq = try recv(from, lane: lane, r, recvBytes)
        let sq = try send(to, lane: lane, s, sendBytes)
        try wait(rq, peer: from)
        try wait(sq, peer: to)
    }

    /// Tests a request slot: true when it is empty or its request completed (the slot is then cleared).
    @inline(__always) func done(_ r: inout Request?) throws(CCLError) -> Bool {
        guard let q = r else { return true }
        if try transport.test(q) { r = nil; return true }
        return false
    }

    /// For event-driven algorithms: call after each pass over the requests. Yields while spinning and
    /// then blocks in the transport; throws a timeout naming `peer` once nothing has advanced for the
    /// communicator's timeout.
    func idle(advanced: Bool, progress: inout Progress, waitingOn peer: Int, receiving: Bool?) throws(CCLError) {
        let now = Sys.monotonicNanos()
        if advanced {
            progress.idleSince = now
            progress.spinUntil = now &+ Knobs.spinNanos
            blame?.progressed(operation: label)
            return
        }
        if now <= progress.spinUntil { Sys.yield(); return }
        if now &- progress.lastScan >= CollectiveContext.mismatchScanNanos {
            progress.lastScan = now
            if scansForMismatch, now &- progress.idleSince >= CollectiveContext.mismatchScanNanos, let e = mismatch(peer) ?? anyMismatch() {
                throw e
            }
            blocked(on: peer, since: progress.idleSince)
        }
        // Socket events that complete nothing do not postpone the deadline; the sleep is cut into
        // slices so that the mismatch scan above runs while blocked.
        let deadline = Deadline(nanos: progress.idleSince &+ UInt64(timeoutMs) &* 1_000_000)
        let slice = Deadline(nanos: min(deadline.nanos, now &+ CollectiveContext.mismatchScanNanos))
        if try transport.waitForProgress(deadline: slice) { return }
        if deadline.hasPassed {
            if !scansForMismatch {
                throw CCLError(.timeout, "no progress for \(timeoutMs) ms waiting for rank \(peer) (point-to-point); the peer is stopped, overloaded, or not calling the matching send or receive",
                               rank: rank, peer: peer)
            }
            let what = receiving.map { $0 ? "data from rank \(peer)" : "rank \(peer) to take data from this rank" } ?? "rank \(peer)"
            throw stalled(on: peer, CCLError(.timeout, "no progress for \(timeoutMs) ms waiting for \(what); the peer is stopped, overloaded, or not in the same collective",
                                             rank: rank, peer: peer))
        }
    }

    struct Progress {
        var idleSince = Sys.monotonicNanos()
        var spinUntil = Sys.monotonicNanos() &+ Knobs.spinNanos
        var lastScan = Sys.monotonicNanos()
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

    /// The peer an idle lane waits for, and whether it waits to receive (for timeout messages).
    func waitingOn() -> (peer: Int, receiving: Bool) {
        let l = (0..<recvs.count).first { recvs[$0] != nil } ?? (0..<sends.count).first { sends[$0] != nil } ?? 0
        return (peerOf[l], recvs[l] != nil)
    }
}

/// A per-communicator counter (used from the thread that runs the communicator's operations).
final class Counter: @unchecked Sendable {
    private var value: UInt64 = 0
    func next() -> UInt64 { value &+= 1; return value }
    /// Reserves `k` consecutive numbers and returns the first.
    func take(_ k: UInt64) -> UInt64 { let first = value &+ 1; value &+= k; return first }
}
