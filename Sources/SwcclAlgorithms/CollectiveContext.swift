import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport

/// What an algorithm needs from its communicator: who it is, the transport, a fresh tag space and the
/// deadline rule. Algorithms see nothing else, so they work over any backend.
package struct CollectiveContext {
    // The class references are the communicator's, which outlives every operation's context: they
    // are unowned(unsafe) so that making and passing a context costs no reference counting per call.
    package let rank: Int
    package let size: Int
    package unowned(unsafe) let transport: any Transport
    /// The one-shot and staged algorithms' view of the transport's symmetric window, if it has one (one per communicator).
    package unowned(unsafe) let arena: SharedArena?
    package let sequence: UInt64
    /// Fingerprint of the operation's arguments, the same on every rank that called it alike.
    package let fingerprint: UInt32
    /// The arguments themselves (for error texts: which one differs).
    package let arguments: CallArguments
    /// The communicator's (it outlives every operation's context: no reference counting per call).
    package unowned(unsafe) let check: ArgumentCheck
    package let operation: String
    package let timeoutMs: Int
    package unowned(unsafe) let scratch: Scratch
    /// Numbers the communicator's one-shot operations (the same sequence on every rank).
    package unowned(unsafe) let oneShot: Counter
    /// Numbers the communicator's staged pipeline steps (the same sequence on every rank).
    package unowned(unsafe) let steps: Counter
    /// Tells peers of long waits, so a timeout names the rank that is actually stuck.
    /// (The communicator's, as `check`.)
    package unowned(unsafe) let blame: Blame?
    /// Whether waits look for peers in this operation with other arguments (not for point-to-point,
    /// whose tags carry no operation).
    package var scansForMismatch = true

    /// A context (`make`, not an initializer, from other targets: an initializer takes its arguments
    /// owned, so every call across targets would retain and release the seven references).
    @inline(__always)
    package static func make(rank: Int, size: Int, transport: any Transport, arena: SharedArena?, sequence: UInt64, fingerprint: UInt32,
                             arguments: CallArguments, check: ArgumentCheck, operation: String, timeoutMs: Int, scratch: Scratch,
                             oneShot: Counter, steps: Counter, blame: Blame?) -> CollectiveContext {
        CollectiveContext(rank: rank, size: size, transport: transport, arena: arena, sequence: sequence, fingerprint: fingerprint,
                          arguments: arguments, check: check, operation: operation, timeoutMs: timeoutMs, scratch: scratch,
                          oneShot: oneShot, steps: steps, blame: blame)
    }

    @inline(__always)
    init(rank: Int, size: Int, transport: any Transport, arena: SharedArena?, sequence: UInt64, fingerprint: UInt32,
         arguments: CallArguments, check: ArgumentCheck, operation: String, timeoutMs: Int, scratch: Scratch,
         oneShot: Counter, steps: Counter, blame: Blame?) {
        self.rank = rank; self.size = size; self.transport = transport; self.arena = arena; self.sequence = sequence
        self.fingerprint = fingerprint; self.arguments = arguments; self.check = check; self.operation = operation
        self.timeoutMs = timeoutMs; self.scratch = scratch; self.oneShot = oneShot; self.steps = steps; self.blame = blame
    }

    /// `allreduce #17`, for notices.
    package var label: String { "\(operation) #\(sequence)" }

    /// Blocked on `peer` since `since` (monotonic ns): past half the timeout, peers hear of it.
    package func blocked(on peer: Int, since: UInt64) {
        blame?.blocked(on: peer, since: since, operation: label)
    }

    /// A wait completed: a notice of this rank waiting, if one went out, is void.
    @inline(__always) package func moved() { blame?.progressed(operation: label) }

    @inline(__always) package func tag(_ lane: Int) -> UInt64 { Tag.collective(sequence: sequence, fingerprint: fingerprint, lane: lane) }

    /// A timeout waiting on `peer`, or a clearer error if that peer — or any other — has sent
    /// messages for this very operation with other arguments.
    package func stalled(on peer: Int, _ timeout: CCLError) -> CCLError {
        mismatch(peer) ?? anyMismatch() ?? timeout
    }

    /// A peer's own messages or signature words first; then what a peer reported (`notice`).
    package func anyMismatch() -> CCLError? {
        (0..<size).lazy.compactMap { mismatch($0) }.first ?? (0..<size).lazy.compactMap { notice(from: $0) }.first
    }

    /// The check of a rank that waits on shared-memory words rather than messages: moves what sits
    /// in the transport's FIFOs into its unexpected list first (nothing else would, while it waits on
    /// words), so that a peer's messages of this operation — a zero-count call's barrier, a
    /// disagreement notice — are seen.
    package func arenaCheck() throws(CCLError) {
        _ = try? transport.waitForProgress(deadline: Deadline(nanos: 0))
        if let e = anyMismatch() { throw e }
    }

    /// Any failure while waiting (a peer that aborted or closed, a timeout): if a peer called this
    /// operation with other arguments, that is the cause to report — the failure is its consequence.
    package func explained(_ e: CCLError) -> CCLError {
        // A peer's notice blaming this rank for other arguments: this rank's own evidence of the
        // peer's arguments says which one differs (the notice, written from the peer's side, may not).
        if e.kind == .invalidUsage, e.relayed != nil, let p = e.peer, let own = mismatch(p) { return own }
        guard e.kind != .invalidUsage, e.kind != .invalidArgument else { return e }
        return e.peer.flatMap { mismatch($0) } ?? anyMismatch() ?? e
    }

    /// Lane of the "disagreement notices": a rank that found a peer calling an operation with other
    /// arguments sends every peer an empty message on this lane before it returns the error, so
    /// that ranks which never received anything from the disagreeing rank report the mismatch too
    /// (instead of a timeout or "rank X aborted"). Its tag carries, in place of the sequence number,
    /// the disagreeing rank (16 bits) and the operation number mod 64, and that rank's fingerprint.
    package static let noticeLane = 253

    /// Sends the notices (best effort: at most 100 ms, errors ignored; the communicator is broken).
    package func notifyDisagreement(culprit: Int, theirs: UInt32) {
        let tag = Tag.collective(sequence: UInt64(culprit & 0xffff) << 6 | (sequence & 63), fingerprint: theirs, lane: CollectiveContext.noticeLane)
        var sent: [Request] = []
        for p in 0..<size where p != rank {
            guard let q = try? transport.isend(to: p, tag: tag, UnsafeRawBufferPointer(start: nil, count: 0)) else { continue }
            sent.append(q)
        }
        let deadline = Deadline.after(milliseconds: 100)
        for q in sent { _ = try? transport.wait(q, deadline: deadline) }
    }

    /// The error for a notice from `peer` (see `noticeLane`), if it sent one.
    package func notice(from peer: Int) -> CCLError? {
        guard peer != rank, peer >= 0, peer < size else { return nil }
        for t in transport.unexpectedTags(from: peer) where t >> 62 == 0 {
            let d = Tag.decode(t)
            guard d.lane == CollectiveContext.noticeLane else { continue }
            let culprit = Int(d.sequence >> 6)
            let tail = "; every rank must call the same collectives in the same order with the same count, type, op and root"
            if d.sequence & 63 != sequence & 63 {
                return CCLError(.invalidUsage, "rank \(peer) stopped at another operation: it found that rank \(culprit) called it with different arguments than rank \(peer) did (this rank is in operation #\(sequence), \(arguments.summary))" + tail,
                                rank: rank, peer: culprit)
            }
            if culprit != rank && d.fingerprint != fingerprint {
                let which = arguments.explain(d.fingerprint, ranks: size, choose: { check.selector.choose($0, bytes: $1) })
                    ?? "the count, or more than one argument, differs"
                return CCLError(.invalidUsage, "rank \(culprit) called operation #\(sequence) with different arguments: \(which) (reported by rank \(peer); this rank: \(arguments.summary))" + tail,
                                rank: rank, peer: culprit)
            }
            // The reported rank called it as this rank did (or it is this rank): the reporter differs.
            return CCLError(.invalidUsage, "rank \(peer) called operation #\(sequence) with different arguments (it reported rank \(culprit), which called it as this rank did: \(arguments.summary))" + tail,
                            rank: rank, peer: peer)
        }
        return nil
    }

    /// This operation's sequence number and fingerprint in one word, as one-shot areas publish it.
    package var signature: UInt64 { ((sequence & 0xffff_ffff) << 32) | UInt64(fingerprint) }

    /// An error if `peer` sent messages tagged with this operation's sequence number but another
    /// fingerprint: it called this operation with other arguments (a definite error, not a delay).
    package func mismatch(_ peer: Int) -> CCLError? {
        guard peer != rank, peer >= 0, peer < size else { return nil }
        if let arena {
            // A peer in a one-shot operation with this sequence number and other arguments.
            let words = (0..<2).map { arena.signatureWord(of: peer, parity: $0) } + (0..<arena.stageSlots).map { arena.stageSignature(of: peer, slot: $0) }
            for word in words {
                let w = word.pointee
                if w >> 32 == sequence & 0xffff_ffff && UInt32(truncatingIfNeeded: w) != fingerprint {
                    return disagreement(peer, theirs: UInt32(truncatingIfNeeded: w))
                }
            }
        }
        let seq = sequence & 0x3f_ffff
        for t in transport.unexpectedTags(from: peer) where t >> 62 == 0 {
            let d = Tag.decode(t)
            if d.sequence == seq && d.fingerprint != fingerprint && d.lane != CollectiveContext.noticeLane { return disagreement(peer, theirs: d.fingerprint) }
        }
        return nil
    }

    /// The error for a peer that called this operation (same sequence number) with the arguments
    /// whose fingerprint is `theirs`: names the peer and, where it can be found, the argument.
    package func disagreement(_ peer: Int, theirs: UInt32) -> CCLError {
        check.note(peer: peer, theirs: theirs)
        let hex = { (f: UInt32) in String(f, radix: 16) }
        let which = arguments.explain(theirs, ranks: size, choose: { check.selector.choose($0, bytes: $1) })
            ?? "the count, or more than one argument, differs"
        return CCLError(.invalidUsage, "rank \(peer) called operation #\(sequence) with different arguments: \(which) (this rank: \(arguments.summary); fingerprint \(hex(theirs)) there, \(hex(fingerprint)) here); every rank must call the same collectives in the same order with the same count, type, op and root",
                        rank: rank, peer: peer)
    }

    /// Every `mismatchScanNanos` of blocking, waiting ranks look for a peer in the same operation
    /// with other arguments, so a wrong call fails within a fraction of a second, not at the timeout.
    package static let mismatchScanNanos: UInt64 = 100_000_000
    package var deadline: Deadline { .after(milliseconds: timeoutMs) }

    /// Lane of the empty "ready" messages of the rooted collectives: a rank whose part only sends
    /// (a broadcast or scatter root, a reduce or gather non-root) waits for one from a rank it sends to,
    /// posted by that rank as it starts the operation — so no rank returns from an operation without
    /// having received something carrying its fingerprint (docs/RELIABILITY.md, "Argument agreement").
    package static let readyLane = 254

    package func sendReady(to peer: Int) throws(CCLError) -> Request {
        try transport.isend(to: peer, tag: tag(CollectiveContext.readyLane), UnsafeRawBufferPointer(start: nil, count: 0))
    }

    package func recvReady(from peer: Int) throws(CCLError) -> Request {
        try transport.irecv(from: peer, tag: tag(CollectiveContext.readyLane), into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }

    package func send(_ peer: Int, lane: Int, _ p: UnsafeRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.isend(to: peer, tag: tag(lane), UnsafeRawBufferPointer(start: p, count: bytes))
    }

    package func recv(_ peer: Int, lane: Int, _ p: UnsafeMutableRawPointer, _ bytes: Int) throws(CCLError) -> Request {
        try transport.irecv(from: peer, tag: tag(lane), into: UnsafeMutableRawBufferPointer(start: p, count: bytes))
    }

    /// Waits for one request: polls, yields while spinning, then sleeps in the transport (see `idle`).
    package func wait(_ r: Request, peer: Int) throws(CCLError) {
        var req: Request? = r
        var progress = Progress()
        while true {
            if try done(&req) { moved(); return }
            try idle(advanced: false, progress: &progress, waitingOn: peer, receiving: nil)
        }
    }

    /// Sends `sendBytes` to `to` and receives `recvBytes` from `from` at once (either may be the same
    /// peer), and waits for both.
    package func exchange(lane: Int, to: Int, _ s: UnsafeRawPointer, _ sendBytes: Int,
                  from: Int, _ r: UnsafeMutableRawPointer, _ recvBytes: Int) throws(CCLError) {
        let rq = try recv(from, lane: lane, r, recvBytes)
        let sq = try send(to, lane: lane, s, sendBytes)
        try wait(rq, peer: from)
        try wait(sq, peer: to)
    }

    /// Tests a request slot: true when it is empty or its request completed (the slot is then cleared).
    @inline(__always) package func done(_ r: inout Request?) throws(CCLError) -> Bool {
        guard let q = r else { return true }
        if try transport.test(q) { r = nil; return true }
        return false
    }

    /// For event-driven algorithms: call after each pass over the requests. Yields while spinning and
    /// then blocks in the transport; throws a timeout naming `peer` once nothing has advanced for the
    /// communicator's timeout.
    package func idle(advanced: Bool, progress: inout Progress, waitingOn peer: Int, receiving: Bool?) throws(CCLError) {
        let now = Sys.monotonicNanos()
        if advanced {
            progress.idleSince = now
            progress.spinUntil = now &+ Knobs.spinNanos
            blame?.progressed(operation: label)
            return
        }
        if now <= progress.spinUntil { Spin.yield(); return }
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

    package struct Progress {
        package var idleSince = Sys.monotonicNanos()
        package var spinUntil = Sys.monotonicNanos() &+ Knobs.spinNanos
        package var lastScan = Sys.monotonicNanos()
    }
}

/// Drives several independent pipelines ("lanes") of requests over one transport: polls every lane,
/// lets the ones whose requests completed advance, and sleeps in the transport when none can.
package struct LaneDriver {
    package var sends: [Request?]
    package var recvs: [Request?]
    package var peerOf: [Int]

    package init(lanes: Int) {
        sends = Array(repeating: nil, count: lanes)
        recvs = Array(repeating: nil, count: lanes)
        peerOf = Array(repeating: -1, count: lanes)
    }

    /// True when lane `l` has no outstanding request (tests them, releasing completed ones).
    package mutating func isIdle(_ l: Int, _ ctx: CollectiveContext) throws(CCLError) -> Bool {
        if let r = recvs[l] { if try ctx.transport.test(r) { recvs[l] = nil } else { return false } }
        if let s = sends[l] { if try ctx.transport.test(s) { sends[l] = nil } else { return false } }
        return true
    }

    /// The peer an idle lane waits for, and whether it waits to receive (for timeout messages).
    package func waitingOn() -> (peer: Int, receiving: Bool) {
        let l = (0..<recvs.count).first { recvs[$0] != nil } ?? (0..<sends.count).first { sends[$0] != nil } ?? 0
        return (peerOf[l], recvs[l] != nil)
    }
}

/// A per-communicator counter (used from the thread that runs the communicator's operations).
package final class Counter: @unchecked Sendable {
    package init() {}
    private var value: UInt64 = 0
    package func next() -> UInt64 { value &+= 1; return value }
    /// Reserves `k` consecutive numbers and returns the first.
    package func take(_ k: UInt64) -> UInt64 { let first = value &+ 1; value &+= k; return first }
}
