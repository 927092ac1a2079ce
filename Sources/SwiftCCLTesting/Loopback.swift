import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Endpoints of one process that exchange messages through memory, as SwiftNIO's `NIOEmbedded`
/// channels do for its pipelines: a complete `Transport` — tag matching with per-tag order, eager and
/// rendezvous messages, the unexpected budget and flow control, notices, close, abort, timeouts that
/// name the peer — for tests of the algorithms and of the conformance suite with ranks as threads,
/// without processes or sockets. It is a transport of its own, not a stand-in for another: its
/// endpoints find each other in this process's table (an address is the process id and the
/// endpoint's number), so a peer in another process is an error.
///
/// Semantics, as for the other backends (docs/ARCHITECTURE.md, "The transport protocol"):
/// - a message up to `eagerThreshold` bytes is copied into the receiver's unexpected list when the
///   send is posted, if the receiver's budget for that sender allows (`UnexpectedBudget`), and the
///   send completes at once; past the budget it stays with the sender (its send pending, and every
///   later message of the pair behind it) until the receiver posts receives;
/// - a larger message is announced (it counts against the budget like a rendezvous request) and
///   moves only once a receive matches it, copied by the receiver in pieces of `pieceBytes` per
///   progress step (`test`, `wait`, `waitForProgress`): a receiver that stops calling stops it, as a
///   stopped process would;
/// - `close` (and `crash`, for tests of a peer that dies) fails every request that still needs the
///   departed endpoint, with an error naming its rank; messages it had delivered stay receivable;
/// - an `abort` notice breaks every peer's endpoint with the notice's error.
public final class LoopbackTransport: Transport, @unchecked Sendable {
    /// Its entry for the test registry (`TestTransports`); not in `TransportRegistry`: a communicator
    /// never chooses it.
    public static let backend = TransportBackend(
        name: "loopback", disabled: { true }, alphaNanos: 1000, betaNanosPerByte: 0.1, sleepsInKernel: false,
        summary: { "loopback: endpoints of this process, through memory (tests)" }, knobs: { [] },
        make: { (s) throws(CCLError) in LoopbackTransport(setup: s) })

    /// Bytes a receiver copies of one large message per progress step.
    public static let pieceBytes = 1 << 20

    public let capabilities = TransportCapabilities(
        name: "loopback", eagerThreshold: 64 << 10, maxMessageBytes: 1 << 40, oneSidedWrites: false, needsRegistration: false,
        maxOutstandingRequests: 4096, sameHostOnly: true, alphaNanos: 1000, betaNanosPerByte: 0.1)

    public let localAddress: EndpointAddress
    let rank: Int
    let nranks: Int
    let id: UInt64
    // Everything below is guarded by `Fabric.shared.cond`.
    private var secret: [UInt8]
    private var sessionSet = false
    private var peerIDs: [UInt64]
    private var gone: [String?]
    private var inbox: [[Message]]
    private var posted: [[Int32]]
    private var budgetUsed: [Int]
    private var notices: [Notice?]
    private var slots: [Slot]
    private var freeSlots: [Int32]
    /// Sends to each peer, in posting order (completion order per tag).
    private var sent: [[Int32]]
    private var aborted: String?
    private var broken: CCLError?
    private var closed = false

    /// The process's endpoints and the one lock and condition that guard all their state.
    final class Fabric: @unchecked Sendable {
        static let shared = Fabric()
        let cond = Condition()
        var nextID: UInt64 = 1
        var endpoints: [UInt64: LoopbackTransport] = [:]
        /// Bumped at every change that may complete a request (under `cond`).
        var events: UInt64 = 0
        func changed() { events &+= 1; cond.broadcast() }
    }

    final class Message {
        let tag: UInt64
        let bytes: Int
        let eager: Bool
        let senderID: UInt64
        let senderSlot: Int32
        let senderGeneration: UInt32
        /// The sender's buffer (valid while its send is pending).
        let source: UnsafeRawPointer?
        /// The copy held by the receiver (an admitted eager message).
        var payload: UnsafeMutableRawPointer?
        var admitted = false
        var matched: Int32 = -1
        var copied = 0
        init(tag: UInt64, bytes: Int, eager: Bool, senderID: UInt64, senderSlot: Int32, senderGeneration: UInt32, source: UnsafeRawPointer?) {
            self.tag = tag; self.bytes = bytes; self.eager = eager; self.senderID = senderID
            self.senderSlot = senderSlot; self.senderGeneration = senderGeneration; self.source = source
        }
        var cost: Int { UnexpectedBudget.cost(payload: eager ? bytes : 0) }
        deinit { free(payload) }
    }

    struct Slot {
        enum State { case idle, pending, done, failed }
        var state = State.idle
        var generation: UInt32 = 0
        var isSend = false
        var peer = 0
        var tag: UInt64 = 0
        var length = 0
        var recvBuffer: UnsafeMutableRawPointer?
        var error: CCLError?
    }

    init(setup: TransportSetup) {
        rank = setup.rank
        nranks = setup.nranks
        secret = setup.secret
        peerIDs = Array(repeating: 0, count: setup.nranks)
        gone = Array(repeating: nil, count: setup.nranks)
        inbox = Array(repeating: [], count: setup.nranks)
        posted = Array(repeating: [], count: setup.nranks)
        budgetUsed = Array(repeating: 0, count: setup.nranks)
        notices = Array(repeating: nil, count: setup.nranks)
        slots = Array(repeating: Slot(), count: 4096)
        freeSlots = (0..<Int32(4096)).reversed()
        sent = Array(repeating: [], count: setup.nranks)
        let f = Fabric.shared
        f.cond.lock()
        id = f.nextID
        f.nextID += 1
        var w = ByteWriter()
        w.u32(0x4c4f_4f50)  // "LOOP"
        w.u32(UInt32(truncatingIfNeeded: Sys.getpid()))
        w.u64(id)
        localAddress = EndpointAddress(w.bytes)
        f.cond.unlock()
        // Registered after `self` is complete.
        f.cond.lock()
        f.endpoints[id] = self
        f.cond.unlock()
    }

    /// `n` connected endpoints of one job, in rank order, for tests that drive the algorithms
    /// directly (each rank's endpoint used from a thread of its own); close each when done.
    public static func connected(ranks n: Int, timeoutMs: Int = 10_000) throws(CCLError) -> [LoopbackTransport] {
        var g = SystemRandomNumberGenerator()
        let secret = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        let endpoints = (0..<n).map { LoopbackTransport(setup: TransportSetup(rank: $0, nranks: n, secret: secret)) }
        let peers = endpoints.map { PeerInfo(rank: $0.rank, address: $0.localAddress, host: .local) }
        for e in endpoints { try e.connect(peers.filter { $0.rank != e.rank }, deadline: .after(milliseconds: timeoutMs)) }
        return endpoints
    }

    // MARK: set-up

    public func useSessionSecret(_ secret: [UInt8]) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        self.secret = secret
        sessionSet = true
        f.changed()
    }

    /// Links every peer's endpoint: it must be in this process, for the same rank count, and hold the
    /// same secret (waits, until `deadline`, for a peer that has not set its session secret yet).
    public func connect(_ peers: [PeerInfo], deadline: Deadline) throws(CCLError) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        for p in peers {
            var r = ByteReader(p.address.bytes)
            guard let magic = try? r.u32(), magic == 0x4c4f_4f50, let pid = try? r.u32(), let pid32 = Optional(Int32(bitPattern: pid)),
                  let peerID = try? r.u64() else {
                throw CCLError(.invalidUsage, "rank \(p.rank) published no loopback address", rank: rank, peer: p.rank)
            }
            guard pid32 == Sys.getpid() else {
                throw CCLError(.invalidUsage, "rank \(p.rank) is in process \(pid32), not this one (\(Sys.getpid())): loopback endpoints reach only this process",
                               rank: rank, peer: p.rank)
            }
            while true {
                guard let peer = f.endpoints[peerID] else {
                    throw CCLError(.remoteError, "rank \(p.rank)'s loopback endpoint \(peerID) no longer exists (closed before the connection)",
                                   rank: rank, peer: p.rank)
                }
                guard peer.rank == p.rank, peer.nranks == nranks else {
                    throw CCLError(.invalidUsage, "loopback endpoint \(peerID) is rank \(peer.rank) of \(peer.nranks), not rank \(p.rank) of \(nranks)",
                                   rank: rank, peer: p.rank)
                }
                if sessionSet && !peer.sessionSet {
                    // It has not taken its session secret yet: wait for it.
                    if deadline.hasPassed {
                        throw CCLError(.timeout, "rank \(p.rank)'s loopback endpoint did not take its session secret in time", rank: rank, peer: p.rank)
                    }
                    _ = f.cond.wait(untilNanos: deadline.nanos)
                    continue
                }
                guard peer.secret == secret else {
                    throw CCLError(.invalidUsage, "rank \(p.rank)'s loopback endpoint belongs to another job (its secret differs)", rank: rank, peer: p.rank)
                }
                break
            }
            peerIDs[p.rank] = peerID
        }
    }

    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0)
    }

    public func deregister(_ region: MemoryRegion) {}

    // MARK: messages

    public func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        try usable(peer)
        if let why = gone[peer] { throw departed(peer, why) }
        guard let receiver = f.endpoints[peerIDs[peer]] else { throw departed(peer, "closed its endpoint") }
        let i = try allocate(Slot(state: .pending, isSend: true, peer: peer, tag: tag, length: data.count))
        sent[peer].append(i)
        let m = Message(tag: tag, bytes: data.count, eager: data.count <= capabilities.eagerThreshold, senderID: id, senderSlot: i,
                        senderGeneration: slots[Int(i)].generation, source: data.baseAddress.map { UnsafeRawPointer($0) })
        receiver.inbox[rank].append(m)
        receiver.deliver(from: rank)
        f.changed()
        return Request(slot: UInt32(i), generation: slots[Int(i)].generation)
    }

    public func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        try usable(peer)
        let i = try allocate(Slot(state: .pending, isSend: false, peer: peer, tag: tag, length: buffer.count, recvBuffer: buffer.baseAddress))
        posted[peer].append(i)
        deliver(from: peer)
        if let why = gone[peer] { failUnmatchedReceives(from: peer, departed(peer, why)) }
        f.changed()
        return Request(slot: UInt32(i), generation: slots[Int(i)].generation)
    }

    public func test(_ request: Request) throws(CCLError) -> Bool {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        if progress() { f.changed() }
        return try collect(request)
    }

    public func wait(_ request: Request, deadline: Deadline) throws(CCLError) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        while true {
            if progress() { f.changed() }
            if try collect(request) { return }
            if deadline.hasPassed {
                let s = slots[Int(request.slot)]
                let what = s.isSend ? "for rank \(s.peer) to take \(s.length) bytes (tag \(s.tag))" : "to receive \(s.length) bytes from rank \(s.peer) (tag \(s.tag))"
                throw CCLError(.timeout, "timed out waiting \(what) over loopback; the peer is stopped, overloaded, or not in the same operation",
                               rank: rank, peer: s.peer)
            }
            let seen = f.events
            while f.events == seen && !deadline.hasPassed && !hasCopyWork { _ = f.cond.wait(untilNanos: deadline.nanos) }
        }
    }

    public func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        if let e = refusal() { throw e }
        if progress() { f.changed(); return true }
        let seen = f.events
        while f.events == seen && !deadline.hasPassed { _ = f.cond.wait(untilNanos: deadline.nanos) }
        return f.events != seen
    }

    public func unexpectedTags(from peer: Int) -> [UInt64] {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        guard peer >= 0, peer < nranks else { return [] }
        if progress() { f.changed() }
        return inbox[peer].filter { $0.admitted && $0.matched < 0 }.map(\.tag)
    }

    // MARK: failures

    public func abort(_ reason: String) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        if aborted == nil { aborted = reason }
        failAll(CCLError(.remoteError, "communicator aborted: \(reason)", rank: rank))
        f.changed()
    }

    public func announce(_ notice: Notice) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        for (r, pid) in peerIDs.enumerated() where r != rank {
            guard let p = f.endpoints[pid] else { continue }
            p.notices[rank] = notice
            if notice.kind == .abort {
                let e = notice.error(at: p.rank)
                if p.broken == nil { p.broken = e }
                p.failAll(e)
            }
        }
        f.changed()
    }

    public func peerNotice(_ peer: Int) -> Notice? {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        return peer >= 0 && peer < nranks ? notices[peer] : nil
    }

    /// Leaves cleanly: peers' requests that still need this endpoint fail naming this rank.
    public func close() { leave("closed its endpoint") }

    /// Ends this endpoint as if its process had died (no goodbye; for tests of a peer killed mid-
    /// transfer): peers' requests that still need it fail naming this rank, and it accepts no call.
    public func crash() { leave("died (its loopback endpoint ended without closing)") }

    private func leave(_ why: String) {
        let f = Fabric.shared
        f.cond.lock(); defer { f.cond.unlock() }
        guard !closed else { return }
        closed = true
        for (r, pid) in peerIDs.enumerated() where r != rank { f.endpoints[pid]?.peerLeft(rank, why) }
        failAll(CCLError(.invalidUsage, "the loopback endpoint of rank \(rank) is closed", rank: rank))
        for r in 0..<nranks { inbox[r].removeAll() }
        f.endpoints[id] = nil
        f.changed()
    }

    // MARK: internals (all under the fabric's lock)

    private func usable(_ peer: Int) throws(CCLError) {
        if let e = refusal() { throw e }
        guard peer >= 0, peer < nranks, peer != rank else {
            throw CCLError.invalidArgument("peer \(peer) is not another rank of \(nranks)").with(rank: rank)
        }
        guard peerIDs[peer] != 0 else { throw CCLError(.invalidUsage, "rank \(peer) is not connected", rank: rank, peer: peer) }
    }

    private func refusal() -> CCLError? {
        if let a = aborted { return CCLError(.remoteError, "communicator aborted: \(a)", rank: rank) }
        if let b = broken { return b }
        if closed { return CCLError(.invalidUsage, "the loopback endpoint of rank \(rank) is closed", rank: rank) }
        return nil
    }

    private func departed(_ peer: Int, _ why: String) -> CCLError {
        CCLError(.remoteError, "rank \(peer) \(why)", rank: rank, peer: peer)
    }

    private func allocate(_ s: Slot) throws(CCLError) -> Int32 {
        guard let i = freeSlots.popLast() else {
            throw CCLError(.invalidUsage, "more than \(slots.count) outstanding requests", rank: rank, peer: s.peer)
        }
        var slot = s
        slot.generation = slots[Int(i)].generation &+ 1
        slots[Int(i)] = slot
        return i
    }

    /// True when the request completed (its slot is released); throws its error (released too).
    private func collect(_ r: Request) throws(CCLError) -> Bool {
        let i = Int(r.slot)
        guard i < slots.count, slots[i].generation == r.generation, slots[i].state != .idle else {
            throw CCLError.invalidUsage("request \(r.slot)/\(r.generation) is not outstanding (already completed?)").with(rank: rank)
        }
        switch slots[i].state {
        case .done:
            // Requests of one pair, direction and tag complete in posting order.
            if earlierPending(Int32(i)) { return false }
            release(Int32(i))
            return true
        case .failed:
            let e = slots[i].error ?? CCLError(.internalError, "request failed", rank: rank)
            release(Int32(i))
            throw e
        default:
            if let e = refusal() { release(Int32(i)); throw e }
            return false
        }
    }

    private func earlierPending(_ i: Int32) -> Bool {
        let s = slots[Int(i)]
        for j in s.isSend ? sent[s.peer] : posted[s.peer] {
            if j == i { return false }
            if slots[Int(j)].tag == s.tag && slots[Int(j)].state == .pending { return true }
        }
        return false
    }

    private func release(_ i: Int32) {
        if slots[Int(i)].isSend { sent[slots[Int(i)].peer].removeAll { $0 == i } } else { posted[slots[Int(i)].peer].removeAll { $0 == i } }
        slots[Int(i)].state = .idle
        slots[Int(i)].error = nil
        freeSlots.append(i)
    }

    private func complete(_ i: Int32, generation: UInt32) {
        guard slots[Int(i)].generation == generation, slots[Int(i)].state == .pending else { return }
        slots[Int(i)].state = .done
    }

    private func fail(_ i: Int32, _ e: CCLError) {
        guard slots[Int(i)].state == .pending else { return }
        slots[Int(i)].state = .failed
        slots[Int(i)].error = e
    }

    private func failAll(_ e: CCLError) {
        for i in slots.indices where slots[i].state == .pending { fail(Int32(i), e) }
    }

    private func failUnmatchedReceives(from peer: Int, _ e: CCLError) {
        let matched = Set(inbox[peer].map(\.matched))
        for i in posted[peer] where !matched.contains(i) { fail(i, e) }
    }

    /// The sender of a message, if its endpoint still exists.
    private func sender(_ m: Message) -> LoopbackTransport? { Fabric.shared.endpoints[m.senderID] }

    /// Matches messages from `peer` with posted receives (per tag, both in order) and admits what the
    /// budget allows into the unexpected list. Eager messages are copied here, whoever calls.
    private func deliver(from peer: Int) {
        var queue = inbox[peer]
        var pending = posted[peer].filter { i in slots[Int(i)].state == .pending && !queue.contains { $0.matched == i } }
        for m in queue where m.matched < 0 {
            guard let k = pending.firstIndex(where: { slots[Int($0)].tag == m.tag }) else { continue }
            let r = pending.remove(at: k)
            m.matched = r
            if m.admitted { budgetUsed[peer] -= m.cost }
            guard slots[Int(r)].length == m.bytes else {
                fail(r, CCLError(.invalidUsage, "message size mismatch: rank \(peer) sent \(m.bytes) bytes where \(slots[Int(r)].length) were expected (do all ranks call the same collective with the same count and type?)",
                                 rank: rank, peer: peer))
                sender(m)?.fail(m.senderSlot, CCLError(.remoteError, "rank \(rank) refused the message of \(m.bytes) bytes (tag \(m.tag)): it expected \(slots[Int(r)].length) bytes",
                                                         rank: sender(m)?.rank, peer: rank))
                m.copied = m.bytes
                continue
            }
            if m.eager {
                if let dst = slots[Int(r)].recvBuffer, m.bytes > 0 {
                    if let p = m.payload { dst.copyMemory(from: p, byteCount: m.bytes) } else if let s = m.source { dst.copyMemory(from: s, byteCount: m.bytes) }
                }
                if !m.admitted { sender(m)?.complete(m.senderSlot, generation: m.senderGeneration) }
                complete(r, generation: slots[Int(r)].generation)
                m.copied = m.bytes
            }
        }
        // Messages fully handled leave the queue.
        queue.removeAll { $0.matched >= 0 && $0.copied == $0.bytes && ($0.eager || slots[Int($0.matched)].state != .pending) }
        // Admission, in order: the first message past the budget stops it (and everything after waits).
        for m in queue where m.matched < 0 && !m.admitted {
            guard budgetUsed[peer] + m.cost <= UnexpectedBudget.bytesPerPeer else { break }
            m.admitted = true
            budgetUsed[peer] += m.cost
            if m.eager {
                if m.bytes > 0, let s = m.source {
                    let p = UnsafeMutableRawPointer.allocate(byteCount: m.bytes, alignment: 16)
                    p.copyMemory(from: s, byteCount: m.bytes)
                    m.payload = p
                }
                sender(m)?.complete(m.senderSlot, generation: m.senderGeneration)
            }
        }
        inbox[peer] = queue
    }

    /// Whether a matched large message waits for this endpoint to copy it.
    private var hasCopyWork: Bool { inbox.contains { q in q.contains { !$0.eager && $0.matched >= 0 && $0.copied < $0.bytes } } }

    /// One progress step: delivery from every peer, then a piece of every matched large message.
    private func progress() -> Bool {
        var moved = false
        for peer in 0..<nranks where !inbox[peer].isEmpty {
            let before = inbox[peer].count
            deliver(from: peer)
            for m in inbox[peer] where !m.eager && m.matched >= 0 && m.copied < m.bytes {
                let n = min(LoopbackTransport.pieceBytes, m.bytes - m.copied)
                if let dst = slots[Int(m.matched)].recvBuffer, let src = m.source { (dst + m.copied).copyMemory(from: src + m.copied, byteCount: n) }
                m.copied += n
                moved = true
                if m.copied == m.bytes {
                    complete(m.matched, generation: slots[Int(m.matched)].generation)
                    sender(m)?.complete(m.senderSlot, generation: m.senderGeneration)
                }
            }
            inbox[peer].removeAll { $0.matched >= 0 && $0.copied == $0.bytes && slots[Int($0.matched)].state != .pending }
            if inbox[peer].count != before { moved = true }
        }
        return moved
    }

    /// `peer` closed or died: what still needs it fails; what it delivered stays receivable.
    private func peerLeft(_ peer: Int, _ why: String) {
        gone[peer] = why
        let e = departed(peer, why)
        // Its large messages point into its memory, and its unadmitted ones wait in it: gone.
        for m in inbox[peer] where !(m.eager && m.admitted) {
            if m.matched >= 0 && m.copied < m.bytes { fail(m.matched, e) }
        }
        inbox[peer].removeAll { !($0.eager && $0.admitted) || $0.matched >= 0 && $0.copied == $0.bytes }
        deliver(from: peer)
        failUnmatchedReceives(from: peer, e)
        // This endpoint's sends to it.
        for i in slots.indices where slots[i].state == .pending && slots[i].isSend && slots[i].peer == peer { fail(Int32(i), e) }
    }
}
