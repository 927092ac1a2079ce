import SwcclSystem
import SwcclCore

/// What a message-passing backend supplies to the `MessageEngine`: how frames and bulk data move (as
/// UCX's transports, UCT, sit below its protocols, UCP). The engine does the rest, once for every
/// backend: requests and their handles, matching arrivals to posted receives by (peer, tag) in posting
/// order, unexpected messages within `UnexpectedBudget`, rendezvous bookkeeping, same-tag completion
/// order, test/wait, abort and peer failures.
///
/// A wire is a struct inside the engine; every method runs with the endpoint's lock held and is given
/// the engine's `MessageCore` (requests and per-peer matching state) to read and change — it holds no
/// reference to the transport. The engine's code is `@inlinable`: it is specialized for each wire in
/// the backend's own target, so no call here is a generic one at run time.
///
/// Life of a message (docs/ARCHITECTURE.md, "The message engine"):
/// - `isend`: eager messages (≤ `eagerLimit`) go at once with their payload (`sendEager`); larger ones
///   are announced (`sendRendezvous`: an RTS, usually with `MessageCore.awaitGrant`'s id) and move once
///   the receiver grants them (the wire's CTS arrives: `MessageCore.takeGrant`, then bulk transfer).
/// - arrivals: the wire hands each eager message or RTS to the core (`arrivedEager`, `eagerHeader`,
///   `arrivedRendezvous`), which matches it or keeps it as unexpected; past the budget the wire leaves
///   an unmatched one where it is (`MessageCore.mustHold`) and takes it up again in `resume`.
/// - a rendezvous message that meets its receive is granted by the wire (`grant`: a CTS, or pulling
///   the data); a message of another size fails its receive and the wire tells the sender (`refuse`).
/// - bytes moved are reported with `MessageCore.moved`; a matched request with all of its bytes is done.
@usableFromInline package protocol MessageWire {
    /// The wire's own state of a request (registrations, sequence numbers, ...).
    associatedtype RequestExtra: WireRequestState = NoWireRequestState

    /// Said after "timed out waiting for …" (" over verbs", " in shared memory").
    var label: String { get }
    /// The largest message sent to `peer` eagerly.
    func eagerLimit(_ peer: Int) -> Int
    /// The peer's address, for errors.
    func peerAddress(_ peer: Int) -> String?

    /// Sends eager request `i` (state `.matched`: it needs no grant). Failures go to the request
    /// (`MessageCore.fail`) or the peer (`MessageCore.failPeer`).
    mutating func sendEager(_ i: Int32, _ core: inout MessageCore<Self>)
    /// Announces rendezvous request `i` (state `.awaitingGrant`).
    mutating func sendRendezvous(_ i: Int32, _ core: inout MessageCore<Self>)
    /// Receive `i` was just posted (before any matching).
    mutating func receivePosted(_ i: Int32, _ core: inout MessageCore<Self>)
    /// Rendezvous message `m` met receive `i` (same size; `i` is `.matched`): let its data come.
    mutating func grant(_ i: Int32, _ m: MessageHeader, _ core: inout MessageCore<Self>)
    /// Message `m` met receive `i` with another size (`i` has failed): tell the sender.
    mutating func refuse(_ i: Int32, _ m: MessageHeader, _ core: inout MessageCore<Self>)
    /// Receives of `peer` were posted or its unexpected messages delivered: take up what was left
    /// with the sender past the budget.
    mutating func resume(_ peer: Int, _ core: inout MessageCore<Self>)
    /// Writes what is queued for `peer`.
    mutating func flush(_ peer: Int, _ core: inout MessageCore<Self>)

    /// One round of progress, blocking at most `timeoutMs` (0: not at all); true if anything happened.
    mutating func progress(timeoutMs: Int32, _ core: inout MessageCore<Self>) throws(CCLError) -> Bool
    /// Blocks until anything may complete a request or `deadline` (`Transport.waitForProgress`); by
    /// default one `progress` with the time left.
    mutating func sleep(until deadline: Deadline, _ core: inout MessageCore<Self>) throws(CCLError) -> Bool
    /// While `wait` spins on request `i`: a cheaper look than a whole `progress` round (TCP reads the
    /// peer's connection directly); true if it did anything. By default nothing.
    mutating func peek(_ i: Int32, _ core: inout MessageCore<Self>) throws(CCLError) -> Bool
    /// While spinning, after a round in which nothing happened (by default `Spin.yield`).
    func idle()

    /// What breaks the endpoint now (by default `core.brokenBy`; TCP adds a peer lost silently, once
    /// its grace has passed).
    mutating func verdict(_ core: inout MessageCore<Self>) -> CCLError?
    /// About to report an abort or a broken endpoint, after which the caller may reuse its buffers:
    /// stop the device from touching them (verbs). By default nothing.
    mutating func quiesce(_ core: inout MessageCore<Self>)
    /// Request `i` timed out with `error` (verbs stops a pair whose device may still use its buffer).
    mutating func timedOut(_ i: Int32, _ error: CCLError, _ core: inout MessageCore<Self>)
    /// Request `i` is being released: forget what of the wire points at it.
    mutating func released(_ i: Int32, _ core: inout MessageCore<Self>)
}

extension MessageWire {
    @inlinable package func idle() { Spin.yield() }
    @inlinable package mutating func receivePosted(_ i: Int32, _ core: inout MessageCore<Self>) {}
    @inlinable package mutating func resume(_ peer: Int, _ core: inout MessageCore<Self>) {}
    @inlinable package mutating func peek(_ i: Int32, _ core: inout MessageCore<Self>) throws(CCLError) -> Bool { false }
    @inlinable package mutating func sleep(until deadline: Deadline, _ core: inout MessageCore<Self>) throws(CCLError) -> Bool {
        try progress(timeoutMs: deadline.remainingMs, &core)
    }
    @inlinable package mutating func verdict(_ core: inout MessageCore<Self>) -> CCLError? { core.brokenBy }
    @inlinable package mutating func quiesce(_ core: inout MessageCore<Self>) {}
    @inlinable package mutating func timedOut(_ i: Int32, _ error: CCLError, _ core: inout MessageCore<Self>) {}
    @inlinable package mutating func released(_ i: Int32, _ core: inout MessageCore<Self>) {}
}

/// A wire's own state of one request (`MessageWire.RequestExtra`).
@usableFromInline package protocol WireRequestState { init() }

/// For wires that keep nothing per request.
@usableFromInline package struct NoWireRequestState: WireRequestState {
    @inlinable package init() {}
}

/// What the engine knows of an arrived message (an eager one, or a rendezvous request).
@usableFromInline package struct MessageHeader {
    @usableFromInline package var tag: UInt64
    @usableFromInline package var length: Int
    @usableFromInline package var isRendezvous: Bool
    /// The sender's id of a rendezvous message (TCP, shared memory), 0 if none.
    @usableFromInline package var messageID: UInt64
    /// The sender's buffer address of a rendezvous message, if it offers it (cross-memory attach), else 0.
    @usableFromInline package var address: UInt64

    @inlinable package init(tag: UInt64, length: Int, isRendezvous: Bool, messageID: UInt64 = 0, address: UInt64 = 0) {
        self.tag = tag; self.length = length; self.isRendezvous = isRendezvous; self.messageID = messageID; self.address = address
    }
}

/// A backend whose requests a `MessageEngine` runs: its class keeps the engine behind its lock and
/// gets `isend`, `irecv`, `test`, `wait`, `waitForProgress`, `unexpectedTags`, `peerNotice` and
/// `abort` from here (specialized in the backend's target); it writes only set-up, notices and close.
@usableFromInline package protocol MessageTransport: Transport {
    associatedtype Wire: MessageWire
    /// Runs `body` on the engine with the endpoint's lock held.
    func withEngine<R>(_ body: (inout MessageEngine<Wire>) throws(CCLError) -> R) throws(CCLError) -> R
    /// Raised by `abort` from any thread, without the lock.
    var abortSignal: AbortSignal { get }
}

extension MessageTransport {
    @inlinable public func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        try withEngine { (e) throws(CCLError) in try e.isend(to: peer, tag: tag, data) }
    }

    @inlinable public func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        try withEngine { (e) throws(CCLError) in try e.irecv(from: peer, tag: tag, into: buffer) }
    }

    @inlinable public func test(_ request: Request) throws(CCLError) -> Bool {
        try withEngine { (e) throws(CCLError) in try e.test(request) }
    }

    @inlinable public func wait(_ request: Request, deadline: Deadline) throws(CCLError) {
        try withEngine { (e) throws(CCLError) in try e.wait(request, deadline: deadline) }
    }

    @inlinable public func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        try withEngine { (e) throws(CCLError) in try e.waitForProgress(deadline: deadline) }
    }

    public func unexpectedTags(from peer: Int) -> [UInt64] {
        (try? withEngine { (e) throws(CCLError) in e.core.unexpectedTags(from: peer) }) ?? []
    }

    public func peerNotice(_ peer: Int) -> Notice? {
        (try? withEngine { (e) throws(CCLError) in e.core.validPeer(peer) ? e.core.peers[peer].notice : nil }) ?? nil
    }

    public func abort(_ reason: String) { abortSignal.raise(reason) }

    /// Register and deregister: nothing to do for a backend that reads and writes user memory as it is.
    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0)
    }
    public func deregister(_ region: MemoryRegion) {}
}
