import SwcclSystem
import SwcclCore

/// Where a request stands. Receives: `posted` (waiting for its message) → `matched` (its message is
/// known; the payload or the granted data is on its way) → `done`. Sends: eager ones `matched` → `done`
/// once their payload left; rendezvous ones `awaitingGrant` → `matched` (granted, data moving) → `done`.
/// Any of them may end `failed` (its error kept in the table until collected).
@usableFromInline package enum RequestState: UInt8 { case free, posted, awaitingGrant, matched, done, failed }

/// One request of the engine: what every backend keeps, and the wire's own part.
@usableFromInline package struct MessageRequest<Extra: WireRequestState>: RequestSlot {
    @usableFromInline package var generation: UInt32 = 0
    @usableFromInline package var inUse = false
    @usableFromInline package var isSend = false
    @usableFromInline package var state: RequestState = .free
    @usableFromInline package var peer: Int32 = -1
    @usableFromInline package var tag: UInt64 = 0
    @usableFromInline package var base: UnsafeMutableRawPointer?
    @usableFromInline package var length = 0
    /// Bytes moved so far (written, read, copied); a matched request that has all of them is done.
    @usableFromInline package var transferred = 0
    /// A rendezvous message's id (a send's own, a receive's sender's), 0 if none.
    @usableFromInline package var messageID: UInt64 = 0
    @usableFromInline package var wire = Extra()

    @inlinable package init() {}
    @inlinable package var isDone: Bool { state == .done }
    @inlinable package var isPending: Bool { state != .done && state != .failed }
}

/// A message that arrived before its receive was posted.
@usableFromInline package struct UnexpectedMessage {
    /// Names it while its payload still arrives (`MessageCore.eagerHeader`).
    @usableFromInline package var id: Int
    @usableFromInline package var header: MessageHeader
    /// The eager payload (owned), nil for a rendezvous request.
    @usableFromInline package var data: UnsafeMutableRawPointer?
    /// False while the payload is still arriving.
    @usableFromInline package var complete: Bool

    @inlinable package init(id: Int, header: MessageHeader, data: UnsafeMutableRawPointer?, complete: Bool) {
        self.id = id; self.header = header; self.data = data; self.complete = complete
    }
    /// What it counts against `UnexpectedBudget`.
    @inlinable package var cost: Int { UnexpectedBudget.cost(payload: data == nil ? 0 : header.length) }
}

/// The engine's state of one peer.
@usableFromInline package struct PeerMessages {
    @usableFromInline package var connected = false
    /// Outstanding sends and receives, in posting order.
    @usableFromInline package var sends: [Int32] = []
    @usableFromInline package var recvs: [Int32] = []
    @usableFromInline package var unexpected: [UnexpectedMessage] = []
    /// Counted against `UnexpectedBudget.bytesPerPeer`.
    @usableFromInline package var unexpectedBytes = 0
    @usableFromInline package var nextUnexpectedID = 0
    @usableFromInline package var nextMessageID: UInt64 = 1
    /// Rendezvous: this rank's sends waiting for their grant, and the receives granted to the peer's
    /// messages, by message id.
    @usableFromInline package var awaitingGrant: [UInt64: Int32] = [:]
    @usableFromInline package var incoming: [UInt64: Int32] = [:]
    /// Why the pair is unusable, once it is.
    @usableFromInline package var failure: CCLError?
    /// The failure is known but whom to blame is not yet (TCP's grace for a peer lost without a
    /// word): requests wait for the endpoint's verdict instead of failing with it.
    @usableFromInline package var blamePending = false
    /// The latest notice from the peer.
    @usableFromInline package var notice: Notice?

    @inlinable package init() {}
}

/// The engine's matching state: requests and, per peer, the outstanding requests, unexpected
/// messages and rendezvous bookkeeping. Wires change it through these methods only.
@usableFromInline package struct MessageCore<Wire: MessageWire> {
    @usableFromInline package let rank: Int
    @usableFromInline package var requests: RequestTable<MessageRequest<Wire.RequestExtra>>
    @usableFromInline package var peers: [PeerMessages]
    /// What broke the endpoint (a peer's abort notice, an abrupt loss): every wait reports it.
    @usableFromInline package var brokenBy: CCLError?
    @usableFromInline package let abortSignal: AbortSignal

    @inlinable package init(rank: Int, nranks: Int, maxOutstanding: Int, generationMask: UInt32 = .max, abortSignal: AbortSignal) {
        self.rank = rank
        requests = RequestTable(capacity: maxOutstanding, generationMask: generationMask)
        peers = Array(repeating: PeerMessages(), count: nranks)
        self.abortSignal = abortSignal
    }

    @inlinable package func validPeer(_ peer: Int) -> Bool { peer >= 0 && peer < peers.count && peers[peer].connected }

    @inlinable package mutating func allocate(send: Bool, peer: Int, tag: UInt64, base: UnsafeMutableRawPointer?, length: Int) throws(CCLError) -> Int32 {
        let i = try requests.allocate(rank: rank, peer: peer) { gen in
            var r = MessageRequest<Wire.RequestExtra>()
            r.generation = gen; r.isSend = send; r.state = .posted; r.peer = Int32(peer); r.tag = tag; r.base = base; r.length = length
            return r
        }
        if send { peers[peer].sends.append(i) } else { peers[peer].recvs.append(i) }
        return i
    }

    /// Fails request `i` with `e` (the first error stays).
    @inlinable package mutating func fail(_ i: Int32, _ e: CCLError) {
        guard requests[i].state != .failed else { return }
        requests[i].state = .failed
        requests.setError(i, e)
    }

    /// `n` more bytes of request `i` moved; it is done once all have and it is matched.
    @inlinable package mutating func moved(_ i: Int32, _ n: Int) {
        requests[i].transferred += n
        if requests[i].transferred >= requests[i].length && requests[i].state == .matched { requests[i].state = .done }
    }

    // MARK: sends (rendezvous)

    /// Gives rendezvous send `i` a message id and records it as waiting for the receiver's grant.
    @inlinable package mutating func awaitGrant(_ i: Int32) -> UInt64 {
        let peer = Int(requests[i].peer)
        let id = peers[peer].nextMessageID
        peers[peer].nextMessageID &+= 1
        requests[i].messageID = id
        peers[peer].awaitingGrant[id] = i
        return id
    }

    /// The send that message `id` to `peer` is, once its grant came (nil: no such message).
    @inlinable package mutating func takeGrant(_ peer: Int, _ id: UInt64) -> Int32? {
        peers[peer].awaitingGrant.removeValue(forKey: id)
    }

    /// The oldest send to `peer` with `tag` that waits for a grant (for wires whose grants name a tag
    /// rather than a message).
    @inlinable package func oldestAwaitingGrant(_ peer: Int, tag: UInt64) -> Int32? {
        for i in peers[peer].sends where requests[i].state == .awaitingGrant && requests[i].tag == tag { return i }
        return nil
    }

    // MARK: receives

    /// Receive `i` takes the data of the peer's message `id` (the wire granted it).
    @inlinable package mutating func expect(_ i: Int32, messageID id: UInt64) {
        peers[Int(requests[i].peer)].incoming[id] = i
    }

    /// The receive that the peer's message `id` goes to, if any.
    @inlinable package func receive(_ peer: Int, messageID id: UInt64) -> Int32? { peers[peer].incoming[id] }

    /// The oldest posted receive of `tag` from `peer` that an arriving message may take: none while an
    /// older unexpected message of that tag waits (same-tag messages match in order).
    @inlinable package func postedReceive(_ peer: Int, tag: UInt64) -> Int32? {
        if !peers[peer].unexpected.isEmpty && peers[peer].unexpected.contains(where: { $0.header.tag == tag }) { return nil }
        for i in peers[peer].recvs where requests[i].state == .posted && requests[i].tag == tag { return i }
        return nil
    }

    /// Whether the wire must leave a newly arrived eager message or rendezvous request of `tag` with
    /// the sender (in the socket, the FIFO, the receive buffer), so that the sender waits: the peer's
    /// unexpected messages are past the budget and no posted receive takes it. (A failed peer sends no
    /// more: what it left is kept.)
    @inlinable package func mustHold(_ peer: Int, tag: UInt64) -> Bool {
        peers[peer].unexpectedBytes > UnexpectedBudget.bytesPerPeer && peers[peer].failure == nil && postedReceive(peer, tag: tag) == nil
    }

    /// An eager message whose payload is in memory (a FIFO slot, a receive buffer): copied into its
    /// receive, or kept as unexpected. The wire has checked `mustHold`.
    @inlinable package mutating func arrivedEager(from peer: Int, tag: UInt64, length: Int, payload: UnsafeRawPointer?, wire: inout Wire) {
        let h = MessageHeader(tag: tag, length: length, isRendezvous: false)
        if let i = postedReceive(peer, tag: tag) {
            guard accept(i, h, wire: &wire) else { return }
            if length > 0, let payload { requests[i].base!.copyMemory(from: payload, byteCount: length) }
            moved(i, length)
        } else {
            let copy = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 16)
            if length > 0, let payload { copy.copyMemory(from: payload, byteCount: length) }
            queueUnexpected(peer, UnexpectedMessage(id: 0, header: h, data: copy, complete: true))
        }
    }

    /// Where the payload of an eager message goes that follows its header in a stream (TCP).
    @usableFromInline package enum EagerBody {
        /// Into receive `i`'s buffer (then `moved(i, length)`).
        case receive(Int32)
        /// Nowhere: its receive expected another size and failed.
        case discard
        /// Into an unexpected message's buffer (then `unexpectedComplete(peer, id)`).
        case unexpected(id: Int, buffer: UnsafeMutableRawPointer)
    }

    /// An eager message's header, its payload to follow. The wire has checked `mustHold`.
    @inlinable package mutating func eagerHeader(from peer: Int, tag: UInt64, length: Int, wire: inout Wire) -> EagerBody {
        let h = MessageHeader(tag: tag, length: length, isRendezvous: false)
        if let i = postedReceive(peer, tag: tag) {
            return accept(i, h, wire: &wire) ? .receive(i) : .discard
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 16)
        let id = queueUnexpected(peer, UnexpectedMessage(id: 0, header: h, data: buffer, complete: false))
        return .unexpected(id: id, buffer: buffer)
    }

    /// The payload of unexpected message `id` has all arrived: it may now meet its receive.
    @inlinable package mutating func unexpectedComplete(_ peer: Int, id: Int, wire: inout Wire) {
        guard let u = peers[peer].unexpected.firstIndex(where: { $0.id == id }) else { return }
        peers[peer].unexpected[u].complete = true
        deliverUnexpected(peer, wire: &wire)
    }

    /// A rendezvous request (RTS): granted to its receive, or kept as unexpected. The wire has
    /// checked `mustHold`.
    @inlinable package mutating func arrivedRendezvous(from peer: Int, _ h: MessageHeader, wire: inout Wire) {
        if let i = postedReceive(peer, tag: h.tag) {
            _ = accept(i, h, wire: &wire)
        } else {
            queueUnexpected(peer, UnexpectedMessage(id: 0, header: h, data: nil, complete: true))
        }
    }

    /// Keeps `m` as unexpected, under a fresh id (returned).
    @inlinable @discardableResult package mutating func queueUnexpected(_ peer: Int, _ m: UnexpectedMessage) -> Int {
        var m = m
        m.id = peers[peer].nextUnexpectedID
        peers[peer].nextUnexpectedID &+= 1
        peers[peer].unexpected.append(m)
        peers[peer].unexpectedBytes += m.cost
        return m.id
    }

    /// Receive `i` meets message `h`: a size mismatch fails it (the wire tells the sender); a
    /// rendezvous message is granted. False if the receive failed.
    @inlinable package mutating func accept(_ i: Int32, _ h: MessageHeader, wire: inout Wire) -> Bool {
        let want = requests[i].length
        guard h.length == want else {
            let peer = Int(requests[i].peer)
            fail(i, CCLError(.invalidUsage, "message size mismatch: rank \(peer) sent \(h.length) bytes where \(want) were expected (tag \(h.tag); do all ranks call the same collective with the same count and type?)",
                             rank: rank, peer: peer))
            wire.refuse(i, h, &self)
            return false
        }
        requests[i].state = .matched
        if h.isRendezvous {
            requests[i].messageID = h.messageID
            wire.grant(i, h, &self)
            moved(i, 0)  // a one-sided write may have landed before its announcement
        }
        return true
    }

    /// Hands complete unexpected messages to posted receives of their tag, oldest first.
    @inlinable package mutating func deliverUnexpected(_ peer: Int, wire: inout Wire) {
        guard !peers[peer].unexpected.isEmpty else { return }
        for i in peers[peer].recvs where requests[i].state == .posted {
            let tag = requests[i].tag
            guard let u = peers[peer].unexpected.firstIndex(where: { $0.header.tag == tag }) else { continue }
            let m = peers[peer].unexpected[u]
            if !m.complete { continue }  // its payload is still arriving; delivered when it has
            peers[peer].unexpected.remove(at: u)
            peers[peer].unexpectedBytes -= m.cost
            if accept(i, m.header, wire: &wire), let data = m.data {
                if m.header.length > 0 { requests[i].base!.copyMemory(from: data, byteCount: m.header.length) }
                moved(i, m.header.length)
            }
            m.data?.deallocate()
            if peers[peer].unexpected.isEmpty { break }
        }
    }

    @usableFromInline package func unexpectedTags(from peer: Int) -> [UInt64] {
        guard peer >= 0, peer < peers.count else { return [] }
        return peers[peer].unexpected.map(\.header.tag)
    }

    /// Frees every unexpected payload (at close).
    @usableFromInline package mutating func discardUnexpected() {
        for p in peers.indices {
            for m in peers[p].unexpected { m.data?.deallocate() }
            peers[p].unexpected.removeAll()
            peers[p].unexpectedBytes = 0
        }
    }

    // MARK: failures

    /// Fails every pending request with `peer`.
    @usableFromInline package mutating func failPending(_ peer: Int, _ e: CCLError) {
        for i in peers[peer].sends + peers[peer].recvs where requests[i].isPending { fail(i, e) }
    }

    /// The pair with `peer` is unusable: its pending requests fail with `e`, and so do later ones.
    @usableFromInline package mutating func failPeer(_ peer: Int, _ e: CCLError) {
        if peers[peer].failure == nil { peers[peer].failure = e }
        peers[peer].blamePending = false
        failPending(peer, e)
    }

    /// A peer's notice: kept as its latest; an abort notice breaks this endpoint, naming its culprit.
    @usableFromInline package mutating func noticeArrived(_ peer: Int, _ n: Notice?) {
        guard let n else { Log.warn(.net, "rank \(rank): an unreadable notice from rank \(peer) (ignored)"); return }
        peers[peer].notice = n
        guard n.kind == .abort else { return }
        let e = n.error(at: rank)
        Log.info(.net, "rank \(rank): rank \(peer) aborted: \(e.cause)")
        if brokenBy == nil { brokenBy = e }
    }

    /// The error to report for a pair that failed: the peer's abort notice if it left one (naming the
    /// rank it blames), else `error` with this rank, the peer and its address.
    @usableFromInline package func pairError(_ peer: Int, _ error: CCLError, address: String?) -> CCLError {
        if let n = peers[peer].notice, n.kind == .abort { return n.error(at: rank) }
        return error.with(rank: rank, peer: peer, peerAddress: address)
    }
}

/// The message engine: one `MessageCore` (matching, unexpected messages, rendezvous bookkeeping,
/// requests) over one backend's `Wire` (how frames and data move). Its methods are the `Transport`
/// requests' skeleton, written once for every message-passing backend (`MessageTransport`); the
/// backend class holds it behind its lock.
@usableFromInline package struct MessageEngine<Wire: MessageWire> {
    @usableFromInline package var core: MessageCore<Wire>
    @usableFromInline package var wire: Wire

    @inlinable package init(core: MessageCore<Wire>, wire: Wire) { self.core = core; self.wire = wire }

    @inlinable package var rank: Int { core.rank }

    /// Runs `body` on the wire and the core together (set-up, notices, close).
    @inlinable package mutating func withWire<R, E: Error>(_ body: (inout Wire, inout MessageCore<Wire>) throws(E) -> R) throws(E) -> R {
        try body(&wire, &core)
    }

    // MARK: posting

    /// What stops a new request with `peer` at once: an abort, a peer that is not connected, a broken
    /// endpoint, and (for a send) a failed pair. A receive still takes what the peer sent before it went.
    @inlinable package mutating func checkUsable(_ peer: Int, _ what: String, sending: Bool) throws(CCLError) {
        if core.abortSignal.isRaised { throw abortError() }
        guard core.validPeer(peer) else {
            throw CCLError(.invalidArgument, "\(what): rank \(peer) is not a connected peer of rank \(core.rank)", rank: core.rank, peer: peer)
        }
        if let b = verdict() { throw b }
        if sending, let e = core.peers[peer].failure, !core.peers[peer].blamePending { throw e }
    }

    @inlinable package mutating func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        try checkUsable(peer, "send", sending: true)
        let n = data.baseAddress == nil ? 0 : data.count
        let i = try core.allocate(send: true, peer: peer, tag: tag, base: UnsafeMutableRawPointer(mutating: data.baseAddress), length: n)
        if n <= wire.eagerLimit(peer) {
            core.requests[i].state = .matched
            wire.sendEager(i, &core)
        } else {
            core.requests[i].state = .awaitingGrant
            wire.sendRendezvous(i, &core)
        }
        wire.flush(peer, &core)
        return core.requests.handle(i)
    }

    @inlinable package mutating func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        try checkUsable(peer, "receive", sending: false)
        let n = buffer.baseAddress == nil ? 0 : buffer.count
        let i = try core.allocate(send: false, peer: peer, tag: tag, base: buffer.baseAddress, length: n)
        wire.receivePosted(i, &core)
        // An unexpected message with this tag may be waiting already, even from a peer that has since
        // gone: what it sent before is still delivered. Then what was left with the sender past the
        // budget may be this receive's.
        core.deliverUnexpected(peer, wire: &wire)
        wire.resume(peer, &core)
        if let e = core.peers[peer].failure, !core.peers[peer].blamePending, core.requests[i].isPending { core.fail(i, e) }
        wire.flush(peer, &core)
        return core.requests.handle(i)
    }

    // MARK: completion

    @inlinable package mutating func test(_ r: Request) throws(CCLError) -> Bool {
        let i = try core.requests.validate(r)
        if try complete(i) { return true }
        _ = try wire.progress(timeoutMs: 0, &core)
        return try complete(i)
    }

    /// True (and releases the request) if request `i` is done and no earlier request of its pair,
    /// direction and tag is still pending: same-tag messages complete in posting order. A failed
    /// request throws its error (released too); a pending one the endpoint's verdict or abort.
    @inlinable package mutating func complete(_ i: Int32) throws(CCLError) -> Bool {
        let state = core.requests[i].state
        if state == .done {
            let peer = Int(core.requests[i].peer), isSend = core.requests[i].isSend
            if core.requests.earlierPending(i, in: isSend ? core.peers[peer].sends : core.peers[peer].recvs) { return false }
            release(i)
            return true
        }
        if state == .failed { throw failed(i) }
        if let b = verdict() { throw b }
        if core.abortSignal.isRaised { throw abortError() }
        return false
    }

    /// Collects and releases failed request `i`; its error, naming this rank and the peer.
    @usableFromInline package mutating func failed(_ i: Int32) -> CCLError {
        let peer = Int(core.requests[i].peer)
        let e = core.requests.takeError(i)
        release(i)
        return e.with(rank: core.rank, peer: peer, peerAddress: wire.peerAddress(peer))
    }

    @inlinable package mutating func release(_ i: Int32) {
        let peer = Int(core.requests[i].peer), id = core.requests[i].messageID
        if core.requests[i].isSend {
            if let k = core.peers[peer].sends.firstIndex(of: i) { core.peers[peer].sends.remove(at: k) }
            if id != 0 && core.peers[peer].awaitingGrant[id] == i { core.peers[peer].awaitingGrant.removeValue(forKey: id) }
        } else {
            if let k = core.peers[peer].recvs.firstIndex(of: i) { core.peers[peer].recvs.remove(at: k) }
            if id != 0 && core.peers[peer].incoming[id] == i { core.peers[peer].incoming.removeValue(forKey: id) }
        }
        wire.released(i, &core)
        core.requests[i].base = nil
        core.requests.release(i)
    }

    /// Spins for `SWCCL_SPIN_US`, then blocks in the wire for at most a second at a time; at the
    /// deadline makes a last check and throws the request's timeout, naming the peer.
    @inlinable package mutating func wait(_ r: Request, deadline: Deadline) throws(CCLError) {
        let i = try core.requests.validate(r)
        let spinUntil = Spin.now() &+ Knobs.spinNanos
        while true {
            if try complete(i) { return }
            let spinning = Spin.now() < spinUntil
            let left = deadline.remainingMs
            if left == 0 && !spinning {
                _ = try wire.progress(timeoutMs: 0, &core)
                if try complete(i) { return }
                throw timedOut(i)
            }
            if spinning {
                if try wire.peek(i, &core), try complete(i) { return }
                // Nothing yet: let a rank sharing this core run (the scheduler tends to co-locate
                // processes that wake each other), then look again.
                if !(try wire.progress(timeoutMs: 0, &core)) { wire.idle() }
            } else {
                _ = try wire.sleep(until: Deadline(nanos: min(deadline.nanos, Spin.now() &+ 1_000_000_000)), &core)
            }
        }
    }

    @usableFromInline package mutating func timedOut(_ i: Int32) -> CCLError {
        let peer = Int(core.requests[i].peer)
        let e = core.requests.timeoutError(i, rank: core.rank, over: wire.label, peerAddress: wire.peerAddress(peer))
        wire.timedOut(i, e, &core)
        return e
    }

    @inlinable package mutating func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        if let b = verdict() { throw b }
        if core.abortSignal.isRaised { throw abortError() }
        return try wire.sleep(until: deadline, &core)
    }

    // MARK: abort and failures

    /// What breaks the endpoint now, if anything (the device quiesced before it is reported).
    @inlinable package mutating func verdict() -> CCLError? {
        guard let b = wire.verdict(&core) else { return nil }
        wire.quiesce(&core)
        return b
    }

    /// The error for every call after `abort` (the device quiesced first).
    @usableFromInline package mutating func abortError() -> CCLError {
        wire.quiesce(&core)
        return core.abortSignal.error(rank: core.rank)
    }
}
