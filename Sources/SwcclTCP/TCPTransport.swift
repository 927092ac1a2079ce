import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static let nsocksPerThread = Knob.int("SWCCL_NSOCKS_PERTHREAD", default: 1,
        "TCP sockets per peer per thread; large messages are striped across all sockets of a peer")
    package static let socketNthreads = Knob.int("SWCCL_SOCKET_NTHREADS", default: 1,
        "multiplies the sockets per peer (progress is driven by the calling thread, so this only adds stripes)")
    package static let tcpEagerBytes = Knob.int("SWCCL_TCP_EAGER_BYTES", default: 64 << 10,
        "TCP messages up to this size go eagerly; larger ones wait for the receiver (rendezvous)")
}

extension TCPTransport {
    /// Its registry entry. Cost figures fitted to forced-algorithm runs of swccl-perf over loopback on
    /// the reference machine, 4 ranks on 2 cores (docs/PERFORMANCE.md, "Algorithm choice"): per
    /// message step, and per byte on one link (both include the kernel's copies and the sharing of cores).
    public static let backend = TransportBackend(
        name: "tcp", alphaNanos: 25_000, betaNanosPerByte: 0.9, sleepsInKernel: true,
        listenAddress: { decode($0)?.address },
        summary: { "tcp: available" },
        knobs: { [Knobs.nsocksPerThread.info, Knobs.socketNthreads.info, Knobs.tcpEagerBytes.info] },
        make: { (s) throws(CCLError) in try TCPTransport(rank: s.rank, nranks: s.nranks, secret: s.secret) })

    public func useSessionSecret(_ secret: [UInt8]) { self.secret = secret }
}

/// The TCP backend of the transport protocol.
///
/// Each pair of ranks shares `nsocks` connections; the lower rank connects. Connection 0 carries the
/// control stream (eager messages, rendezvous requests and grants, goodbyes); payloads of large messages
/// are striped across all connections as DATA frames written straight from the sender's buffer and read
/// straight into the receiver's. Progress is driven by the calling thread (test/wait), with an eventfd
/// in every poll so that `abort` from another thread wakes it.
///
/// Wire format: every frame starts with a 32-byte header of four little-endian 64-bit words:
/// `[type | flags << 32, tag, a, b]`:
/// - EAGER: a = length; the payload follows.
/// - RTS (request to send): a = length, b = message id.
/// - CTS (clear to send): b = message id; a = 1 when the receiver rejects the message (size mismatch).
/// - DATA: tag = offset in the message, a = fragment length, b = message id; the fragment follows.
/// - BYE: the peer is closing cleanly.
/// - NOTICE: a = length, b = kind; an encoded `Notice` follows (an abort's culprit and cause, or a
///   long wait).
public final class TCPTransport: Transport, @unchecked Sendable {
    public static let protocolVersion: UInt16 = 1
    package static let handshakeMagic: UInt32 = 0x5357_4354  // "SWCT"

    public let capabilities: TransportCapabilities
    public let localAddress: EndpointAddress

    package let rank: Int
    package let nranks: Int
    /// The id's secret until the rendezvous, then the session secret (set before `connect`).
    package var secret: [UInt8]
    package let nsocks: Int
    package let eagerThreshold: Int
    private var listenFD: Int32
    private let listenAddress: SocketAddress
    private let abortSignal: AbortSignal
    private var wakeFD: Int32 { abortSignal.wakeFD }
    private let lock = Lock()

    // Progress state; touched only by the thread that holds `lock`.
    private var peers: [PeerState?]
    private var slots: RequestTable<Slot>
    private var pollSet: [pollfd] = []
    private var pollOwners: [(peer: Int32, sock: Int32)] = []
    /// The first abrupt loss of a peer (or a peer's abort notice): it breaks the communicator, so every
    /// wait reports it.
    private var brokenBy: CCLError?
    /// A peer that went away without a notice or a goodbye, and when: it may have died, or closed
    /// because of another rank whose notice is still on its way (a neighbour's notice is read, or the
    /// rank that died is seen, before the grace ends). Blamed if nothing better comes within the grace.
    private var suspect: (error: CCLError, at: UInt64)?
    package static let graceNanos: UInt64 = 250_000_000
    /// Encoded notices this rank sent (frames point into them until written); freed at close.
    private var sentNotices: [UnsafeMutableRawPointer] = []
    private var closed = false
    /// Receivers accept eager messages up to this size whatever their own threshold, so ranks with
    /// different SWCCL_TCP_EAGER_BYTES still interoperate.
    package static let maxEagerBytes = 1 << 20
    package static let stagingBytes = 8192


    public init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding: Int = 4096) throws(CCLError) {
        self.rank = rank
        self.nranks = nranks
        self.secret = secret
        let perThread = Knobs.nsocksPerThread.value, threads = Knobs.socketNthreads.value
        guard perThread >= 1, threads >= 1, perThread <= 64, threads <= 64, perThread * threads <= 64 else {
            throw CCLError.invalidArgument("SWCCL_NSOCKS_PERTHREAD (\(perThread)) x SWCCL_SOCKET_NTHREADS (\(threads)) must be between 1 and 64")
        }
        nsocks = perThread * threads
        eagerThreshold = max(0, min(Knobs.tcpEagerBytes.value, Self.maxEagerBytes))
        let iface = try InterfaceChoice.local()
        let l = try SocketIO.listen(on: iface.address.withAnyPort)
        listenFD = l.fd
        listenAddress = l.address
        do throws(CCLError) { abortSignal = try AbortSignal() } catch {
            Sys.close(l.fd)
            throw error
        }
        var addr = [UInt8](repeating: 0, count: 2 + SocketAddress.encodedSize)
        addr[0] = UInt8(Self.protocolVersion)
        addr[1] = UInt8(nsocks)
        addr.withUnsafeMutableBytes { l.address.encode(into: $0.baseAddress! + 2) }
        localAddress = EndpointAddress(addr)
        capabilities = TransportCapabilities(
            name: "tcp", eagerThreshold: eagerThreshold, maxMessageBytes: Int(Int64.max), oneSidedWrites: false,
            needsRegistration: false, maxOutstandingRequests: maxOutstanding, sameHostOnly: false,
            alphaNanos: TCPTransport.backend.alphaNanos, betaNanosPerByte: TCPTransport.backend.betaNanosPerByte)
        peers = Array(repeating: nil, count: nranks)
        slots = RequestTable(capacity: maxOutstanding)
        Log.info(.net, "rank \(rank): TCP listening on \(iface.name) \(l.address), \(nsocks) socket(s) per peer, eager <= \(eagerThreshold) B")
    }

    deinit { close() }

    // MARK: connection setup

    package static func decode(_ address: EndpointAddress) -> (nsocks: Int, address: SocketAddress)? {
        ListenerAddress.decode(address, version: protocolVersion)
    }

    public func connect(_ peerList: [PeerInfo], deadline: Deadline) throws(CCLError) {
        var remote: [Int: SocketAddress] = [:]
        for p in peerList where p.rank != rank {
            guard let (n, addr) = Self.decode(p.address) else {
                throw CCLError(.remoteError, "peer published an unreadable TCP address (version mismatch?)", operation: "connect", rank: rank, peer: p.rank)
            }
            guard n == nsocks else {
                throw CCLError(.invalidUsage, "peer uses \(n) sockets per peer and this rank \(nsocks): set SWCCL_NSOCKS_PERTHREAD and SWCCL_SOCKET_NTHREADS alike on every rank", operation: "connect", rank: rank, peer: p.rank)
            }
            peers[p.rank] = PeerState(rank: p.rank, address: addr, nsocks: nsocks)
            if p.rank > rank { remote[p.rank] = addr }
        }
        let mesh = SocketMesh(magic: Self.handshakeMagic, version: UInt32(Self.protocolVersion), secret: secret, rank: rank,
                              nranks: nranks, nsocks: nsocks, wakeFD: wakeFD, owner: "TCP")
        do throws(CCLError) {
            let fds = try mesh.establish(listenFD: listenFD, higher: remote.map { ($0.key, $0.value) },
                                         lower: Set(peerList.filter { $0.rank < rank }.map(\.rank)), deadline: deadline)
            for (peer, list) in fds { for (s, fd) in list.enumerated() { peers[peer]!.socks[s].fd = fd } }
        } catch {
            throw error.with(operation: "connect", rank: rank)
        }
        Sys.close(listenFD)
        listenFD = -1
        rebuildPollSet()
    }

    /// Takes `fds` (socket index order) as the connections to `peer`, as if `connect` had made them:
    /// what the fuzz harness (`WireFuzzing.tcpStream`) uses to feed this rank's reader arbitrary bytes
    /// through one end of a socket pair. Call before anything else, once per peer.
    package func attach(peer: Int, fds: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        precondition(peer != rank && peer >= 0 && peer < nranks && fds.count == nsocks && peers[peer] == nil)
        peers[peer] = PeerState(rank: peer, address: listenAddress, nsocks: nsocks)
        for (s, fd) in fds.enumerated() { peers[peer]!.socks[s].fd = fd }
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
        rebuildPollSet()
    }

    /// Why the connections to `peer` failed, if they did (the fuzz harness reports it: a peer lost
    /// without a notice fails the requests only after the grace).
    package func peerFailure(_ peer: Int) -> CCLError? {
        lock.lock(); defer { lock.unlock() }
        return peer >= 0 && peer < peers.count ? peers[peer]?.failure : nil
    }

    private func rebuildPollSet() {
        pollSet = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        pollOwners = [(-1, -1)]
        for case let p? in peers {
            for s in 0..<p.socks.count where p.socks[s].fd >= 0 {
                pollSet.append(pollfd(fd: p.socks[s].fd, events: Int16(POLLIN), revents: 0))
                pollOwners.append((Int32(p.rank), Int32(s)))
            }
        }
    }

    // MARK: memory

    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0)  // TCP reads and writes user memory directly
    }

    public func deregister(_ region: MemoryRegion) {}

    // MARK: posting

    private func checkUsable(_ peer: Int, _ what: String) throws(CCLError) {
        if abortSignal.isRaised { throw abortError() }
        guard peer >= 0, peer < nranks, peer != rank, peers[peer] != nil else {
            throw CCLError.invalidArgument("\(what): peer \(peer) is not a connected peer of rank \(rank)")
        }
        if let b = verdict() { throw b }
        // A peer lost without a notice: the request waits for the verdict (`complete`).
        if let e = peers[peer]!.failure, !peers[peer]!.silent { throw e }
    }

    private func allocSlot(send: Bool, peer: Int, tag: UInt64, base: UnsafeMutableRawPointer?, length: Int) throws(CCLError) -> Int32 {
        try slots.allocate(rank: rank, peer: peer) { gen in
            Slot(generation: gen, inUse: true, isSend: send, state: .posted, peer: Int32(peer), tag: tag, base: base, length: length)
        }
    }

    public func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        try checkUsable(peer, "send")
        let length = data.count
        let i = try allocSlot(send: true, peer: peer, tag: tag, base: UnsafeMutableRawPointer(mutating: data.baseAddress), length: length)
        peers[peer]!.sends.append(i)
        if length <= eagerThreshold {
            slots[Int(i)].state = .matched
            enqueue(peer: peer, sock: 0, Frame(type: .eager, tag: tag, a: UInt64(length), b: 0,
                                                payload: data.baseAddress, payloadLength: length, slot: i))
        } else {
            let id = peers[peer]!.nextMessageID
            peers[peer]!.nextMessageID &+= 1
            slots[Int(i)].messageID = id
            peers[peer]!.awaitingGrant[id] = i
            enqueue(peer: peer, sock: 0, Frame(type: .rts, tag: tag, a: UInt64(length), b: id, payload: nil, payloadLength: 0, slot: -1))
        }
        flush(peer: peer)
        return slots.handle(i)
    }

    public func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        if abortSignal.isRaised { throw abortError() }
        guard peer >= 0, peer < nranks, peer != rank, peers[peer] != nil else {
            throw CCLError.invalidArgument("receive: peer \(peer) is not a connected peer of rank \(rank)")
        }
        let i = try allocSlot(send: false, peer: peer, tag: tag, base: buffer.baseAddress, length: buffer.count)
        peers[peer]!.recvs.append(i)
        // An unexpected message with this tag may be waiting already, even from a peer that has since
        // closed: what it sent before closing is still delivered.
        deliverUnexpected(peer: peer)
        // Reading a peer past the unexpected budget is paused at an unmatched message: it may be
        // this receive's (poll no longer watches that connection, so look now).
        if peers[peer]!.stalled, peers[peer]!.failure == nil {
            do throws(CCLError) { try read(peer: peer, sock: 0) } catch { peerFailed(peer, error) }
        }
        if let e = peers[peer]!.failure, !peers[peer]!.silent, slots[Int(i)].state != .done { fail(slot: i, e) }
        return slots.handle(i)
    }

    /// Pairs a posted receive with an incoming message's header.
    private func match(slot i: Int32, peer: Int, length: Int, messageID: UInt64, isRendezvous: Bool) {
        let want = slots[Int(i)].length
        if length != want {
            fail(slot: i, CCLError(.invalidUsage, "message size mismatch: rank \(peer) sent \(length) bytes where \(want) were expected (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer))
            if isRendezvous {
                enqueue(peer: peer, sock: 0, Frame(type: .cts, tag: 0, a: 1, b: messageID, payload: nil, payloadLength: 0, slot: -1))
            }
            return
        }
        slots[Int(i)].state = .matched
        slots[Int(i)].messageID = messageID
        if isRendezvous {
            if length == 0 { slots[Int(i)].state = .done }
            peers[peer]!.incoming[messageID] = i
            enqueue(peer: peer, sock: 0, Frame(type: .cts, tag: 0, a: 0, b: messageID, payload: nil, payloadLength: 0, slot: -1))
        }
    }

    /// Hands unexpected messages (complete eager ones, and rendezvous requests) to posted receives of the
    /// same tag, oldest first, keeping per-tag order.
    private func deliverUnexpected(peer: Int) {
        guard !peers[peer]!.unexpected.isEmpty else { return }
        var granted = false
        for i in peers[peer]!.recvs where slots[Int(i)].state == .posted {
            let tag = slots[Int(i)].tag
            guard let u = peers[peer]!.unexpected.firstIndex(where: { $0.tag == tag }) else { continue }
            let m = peers[peer]!.unexpected[u]
            if !m.complete { continue }  // its body is still arriving; delivered when it has
            peers[peer]!.unexpected.remove(at: u)
            match(slot: i, peer: peer, length: m.length, messageID: m.messageID, isRendezvous: m.isRendezvous)
            granted = granted || m.isRendezvous
            peers[peer]!.unexpectedBytes -= UnexpectedBudget.cost(payload: m.data == nil ? 0 : m.length)
            if let data = m.data {
                if slots[Int(i)].state != .failed {
                    if m.length > 0 { slots[Int(i)].base!.copyMemory(from: data, byteCount: m.length) }
                    slots[Int(i)].transferred = m.length
                    slots[Int(i)].state = .done
                }
                data.deallocate()
            }
            if peers[peer]!.unexpected.isEmpty { break }
        }
        if granted { flush(peer: peer) }
        if peers[peer]!.unexpectedBytes <= UnexpectedBudget.bytesPerPeer { peers[peer]!.stalled = false }
    }

    private func fail(slot i: Int32, _ e: CCLError) {
        slots[Int(i)].state = .failed
        slots.setError(i, e)
    }

    private func enqueue(peer: Int, sock: Int, _ f: Frame) {
        guard peers[peer]!.failure == nil, peers[peer]!.socks[sock].fd >= 0 else { return }
        peers[peer]!.socks[sock].out.append(f)
    }

    // MARK: completion

    public func test(_ r: Request) throws(CCLError) -> Bool {
        lock.lock(); defer { lock.unlock() }
        let i = try slots.validate(r)
        if try complete(i) { return true }
        try progress(timeoutMs: 0)
        return try complete(i)
    }

    /// True (and releases the slot) if request `i` is done and no earlier request of the same pair,
    /// direction and tag is still pending: same-tag messages complete in posting order.
    private func complete(_ i: Int32) throws(CCLError) -> Bool {
        let s = slots[Int(i)]
        let peer = Int(s.peer)
        if s.state == .failed {
            let e = slots.takeError(i)
            release(i, peer: peer, send: s.isSend)
            throw e.with(rank: rank, peer: peer, peerAddress: peers[peer]?.address.description)
        }
        if s.state != .done {
            if let b = verdict() { throw b }
            if abortSignal.isRaised { throw abortError() }
            return false
        }
        if slots.earlierPending(i, in: s.isSend ? peers[peer]!.sends : peers[peer]!.recvs) { return false }
        release(i, peer: peer, send: s.isSend)
        return true
    }

    private func release(_ i: Int32, peer: Int, send: Bool) {
        let id = slots[Int(i)].messageID
        if send {
            if let k = peers[peer]!.sends.firstIndex(of: i) { peers[peer]!.sends.remove(at: k) }
            if id != 0 { peers[peer]!.awaitingGrant.removeValue(forKey: id) }
        } else {
            if let k = peers[peer]!.recvs.firstIndex(of: i) { peers[peer]!.recvs.remove(at: k) }
            if id != 0 && peers[peer]!.incoming[id] == i { peers[peer]!.incoming.removeValue(forKey: id) }
        }
        slots[Int(i)].base = nil
        slots.release(i)
    }


    public func wait(_ r: Request, deadline: Deadline) throws(CCLError) {
        lock.lock(); defer { lock.unlock() }
        let i = try slots.validate(r)
        try RequestWait.run(deadline: deadline, complete: { () throws(CCLError) in try complete(i) }, spin: { () throws(CCLError) -> Bool in
            // Fast path for a receive: read the peer's control connection directly, without a poll
            // first (one syscall fewer per small message).
            let s = slots[i]
            let peer = Int(s.peer)
            if !s.isSend, peers[peer]!.failure == nil, !peers[peer]!.stalled, peers[peer]!.socks[0].fd >= 0 {
                do throws(CCLError) { try read(peer: peer, sock: 0) } catch { peerFailed(peer, error) }
                if try complete(i) { return true }
            }
            // Nothing yet: let a rank sharing this core run (the scheduler tends to co-locate
            // processes that wake each other), then look again.
            if !(try progress(timeoutMs: 0)) { Spin.yield() }
            return false
        }, block: { (ms) throws(CCLError) in try progress(timeoutMs: ms) }, timedOut: { () throws(CCLError) in
            try progress(timeoutMs: 0)
            if try complete(i) { return }
            let peer = Int(slots[i].peer)
            throw slots.timeoutError(i, rank: rank, over: "", peerAddress: peers[peer]?.address.description)
        })
    }

    public func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        lock.lock(); defer { lock.unlock() }
        if let b = verdict() { throw b }
        if abortSignal.isRaised { throw abortError() }
        let left = deadline.remainingMs
        return try progress(timeoutMs: left)
    }

    public func unexpectedTags(from peer: Int) -> [UInt64] {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < peers.count, let p = peers[peer] else { return [] }
        return p.unexpected.map(\.tag)
    }

    private func abortError() -> CCLError { abortSignal.error(rank: rank) }

    /// What breaks this endpoint: a peer's abort notice or an announced loss at once; a peer lost
    /// without a word once the grace has passed with nothing better heard.
    private func verdict() -> CCLError? {
        if let b = brokenBy { return b }
        if let s = suspect, Sys.monotonicNanos() &- s.at >= Self.graceNanos {
            brokenBy = s.error
            Log.warn(.net, s.error.description)
            return s.error
        }
        return nil
    }

    public func peerNotice(_ peer: Int) -> Notice? {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < peers.count else { return nil }
        return peers[peer]?.notice
    }

    /// Queues the notice on every healthy control stream at the next frame boundary (ahead of
    /// everything not yet started) and writes what it can. An abort notice is pushed out before this
    /// returns — finishing frames under way, for at most 200 ms — because the caller may exit next.
    public func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        guard !closed else { return }
        let bytes = notice.encode()
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 8)
        bytes.withUnsafeBytes { buf.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        sentNotices.append(buf)
        for k in peers.indices where peers[k] != nil && peers[k]!.failure == nil && peers[k]!.socks[0].fd >= 0 {
            let f = Frame(type: .notice, tag: 0, a: UInt64(bytes.count), b: UInt64(notice.kind.rawValue),
                          payload: buf, payloadLength: bytes.count, slot: Self.noticeSlot)
            let st = peers[k]!.socks[0]
            let at = st.hasOutput && st.out[st.head].sent > 0 ? st.head + 1 : st.head
            peers[k]!.socks[0].out.insert(f, at: at)
            flush(peer: k)
        }
        guard notice.kind == .abort else { return }
        let until = Deadline.after(milliseconds: 200)
        while true {
            var fds: [pollfd] = []
            for k in peers.indices where peers[k] != nil && peers[k]!.failure == nil && peers[k]!.socks[0].fd >= 0 {
                let st = peers[k]!.socks[0]
                if st.out[st.head..<st.out.count].contains(where: { $0.slot == Self.noticeSlot }) {
                    fds.append(pollfd(fd: st.fd, events: Int16(POLLOUT), revents: 0))
                }
            }
            if fds.isEmpty || until.hasPassed { return }
            _ = try? fds.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: 10) }
            for f in fds where f.revents != 0 {
                guard let k = peers.firstIndex(where: { $0?.socks[0].fd == f.fd }) else { continue }
                flush(peer: k)
            }
        }
    }

    /// `Frame.slot` of a notice frame (no request behind it).
    package static let noticeSlot: Int32 = -3

    public func abort(_ reason: String) { abortSignal.raise(reason) }

    public func close() {
        let wasAborted = abortSignal.isRaised
        abort("closed")
        lock.lock(); defer { lock.unlock() }
        if closed { return }
        closed = true
        freeUnexpectedAndSockets(sayGoodbye: true, aborting: wasAborted)
    }

    /// Closes every connection. With `sayGoodbye`, a BYE goes first on each control connection whose
    /// outgoing stream is at a frame boundary, so the peer can tell a clean close from a crash.
    private func freeUnexpectedAndSockets(sayGoodbye: Bool, aborting: Bool) {
        for k in 0..<peers.count {
            guard peers[k] != nil else { continue }
            let fd0 = peers[k]!.socks[0].fd
            let atBoundary = !peers[k]!.socks[0].hasOutput || peers[k]!.socks[0].out[peers[k]!.socks[0].head].sent == 0
            if sayGoodbye && peers[k]!.failure == nil && fd0 >= 0 && atBoundary {
                let bye = Frame(type: .bye, tag: 0, a: aborting ? 1 : 0, b: 0, payload: nil, payloadLength: 0, slot: -1)
                withUnsafeBytes(of: bye.header) { b in
                    try? SocketIO.writeAll(fd0, b, deadline: .after(milliseconds: 200))
                }
            }
            closeSockets(of: k)
            peers[k]!.socks.forEach { $0.staging.deallocate() }
            for m in peers[k]!.unexpected { m.data?.deallocate() }
            peers[k]!.unexpected.removeAll()
            peers[k]!.noticeIn?.deallocate()
            peers[k]!.noticeIn = nil
        }
        for b in sentNotices { b.deallocate() }
        sentNotices.removeAll()
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
        // wakeFD stays open until deinit: abort() may still signal it from another thread.
    }

    // MARK: progress engine

    /// One round: poll every socket (blocking up to `timeoutMs`), write what can be written, read what
    /// arrived. Returns true if anything happened.
    @discardableResult
    private func progress(timeoutMs requested: Int32) throws(CCLError) -> Bool {
        if closed { throw abortError() }
        var timeoutMs = requested
        if brokenBy == nil, let s = suspect {
            // Wake when the grace for a silently lost peer ends.
            let left = Int64(Self.graceNanos) - Int64(Sys.monotonicNanos() &- s.at)
            timeoutMs = min(timeoutMs, Int32(max(0, (left + 999_999) / 1_000_000)))
        }
        for k in pollSet.indices.dropFirst() {
            let (p, s) = pollOwners[k]
            let st = peers[Int(p)]!.socks[Int(s)]
            var ev = Int16(POLLIN)
            if st.hasOutput { ev |= Int16(POLLOUT) }
            // Stalled on unexpected data past the limit: wait for receives to be posted, not for bytes.
            if s == 0 && peers[Int(p)]!.stalled { ev &= ~Int16(POLLIN) }
            pollSet[k].fd = st.fd  // -1 once closed: poll ignores it
            pollSet[k].events = ev
            pollSet[k].revents = 0
        }
        pollSet[0].revents = 0
        let n: Int
        do throws(Errno) { n = try pollSet.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: timeoutMs) } }
        catch { throw CCLError.system("poll", error).with(rank: rank) }
        if n == 0 { return false }
        if pollSet[0].revents != 0 {
            abortSignal.drain()
            if abortSignal.isRaised { throw abortError() }
        }
        for k in pollSet.indices.dropFirst() where pollSet[k].revents != 0 {
            let (p, s) = pollOwners[k]
            let peer = Int(p), sock = Int(s)
            if peers[peer]!.failure != nil { continue }
            do throws(CCLError) {
                if pollSet[k].revents & Int16(POLLOUT) != 0 { try write(peer: peer, sock: sock) }
                let hangup = pollSet[k].revents & Int16(POLLERR | POLLHUP) != 0
                if sock == 0 && peers[peer]!.stalled && hangup {
                    throw peers[peer]!.saidGoodbye ? lostConnection(peer)
                        : CCLError(.remoteError, "connection lost: rank \(peer) went away (\(Sys.socketError(pollSet[k].fd).map { "\($0)" } ?? "hang-up"))", peer: peer)
                }
                if pollSet[k].revents & Int16(POLLIN) != 0 || hangup { try read(peer: peer, sock: sock) }
            } catch {
                peerFailed(peer, error)
            }
        }
        return true
    }

    /// Writes queued frames of every socket of `peer` until the kernel pushes back.
    private func flush(peer: Int) {
        guard peers[peer]!.failure == nil else { return }
        do throws(CCLError) {
            for s in 0..<nsocks where peers[peer]!.socks[s].hasOutput { try write(peer: peer, sock: s) }
        } catch {
            peerFailed(peer, error)
        }
    }

    private func write(peer: Int, sock: Int) throws(CCLError) {
        let fd = peers[peer]!.socks[sock].fd
        while peers[peer]!.socks[sock].hasOutput {
            let h = peers[peer]!.socks[sock].head
            var f = peers[peer]!.socks[sock].out[h]
            let n: Int
            do {
                n = try withUnsafeBytes(of: &f.header) { (hdr) throws(Errno) -> Int in
                    if f.sent < 32 {
                        return try Sys.send(fd, hdr.baseAddress! + f.sent, 32 - f.sent, f.payload, f.payloadLength)
                    }
                    let off = f.sent - 32
                    return try Sys.send(fd, f.payload! + off, f.payloadLength - off)
                }
            } catch {
                throw CCLError(.remoteError, "send to rank \(peer) failed: \(error)", errno: error)
            }
            if n == 0 { return }
            f.sent += n
            peers[peer]!.socks[sock].out[h].sent = f.sent
            if f.sent == 32 + f.payloadLength {
                peers[peer]!.socks[sock].popFront()
                if f.slot >= 0 {
                    let i = Int(f.slot)
                    slots[i].transferred += f.payloadLength
                    if slots[i].transferred == slots[i].length && slots[i].state != .failed { slots[i].state = .done }
                }
            }
        }
    }

    private func read(peer: Int, sock: Int) throws(CCLError) {
        // Once a receive returns less than asked, the socket is empty: stop without another syscall.
        var drained = false
        while true {
            if peers[peer]!.failure != nil { return }
            if peers[peer]!.socks[sock].bodyRemaining == 0 {
                // Header state: need 32 bytes in the staging buffer.
                if peers[peer]!.socks[sock].staged < 32 {
                    guard !drained, try fill(peer: peer, sock: sock, drained: &drained) else { return }
                    continue
                }
                var hdr = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                let st = peers[peer]!.socks[sock]
                withUnsafeMutableBytes(of: &hdr) { $0.copyMemory(from: UnsafeRawBufferPointer(start: st.staging + st.stageStart, count: 32)) }
                // Past the unexpected budget, leave a new unexpected message (eager or rendezvous) in
                // the stream (TCP flow control then pushes back) until a matching receive is posted.
                let frameType = UInt32(truncatingIfNeeded: UInt64(littleEndian: hdr.0))
                if peers[peer]!.unexpectedBytes > UnexpectedBudget.bytesPerPeer
                    && (frameType == FrameType.eager.rawValue || frameType == FrameType.rts.rawValue)
                    && postedReceive(peer: peer, tag: UInt64(littleEndian: hdr.1)) == nil {
                    peers[peer]!.stalled = true
                    return
                }
                peers[peer]!.socks[sock].stageStart += 32
                try handleHeader(peer: peer, sock: sock, w0: UInt64(littleEndian: hdr.0), tag: UInt64(littleEndian: hdr.1),
                                 a: UInt64(littleEndian: hdr.2), b: UInt64(littleEndian: hdr.3))
            } else {
                // Body state: drain the staging buffer first, then read straight into the target.
                let st = peers[peer]!.socks[sock]
                let take = min(st.staged, st.bodyRemaining)
                if take > 0 {
                    if let t = st.bodyTarget { t.copyMemory(from: st.staging + st.stageStart, byteCount: take) }
                    peers[peer]!.socks[sock].stageStart += take
                    peers[peer]!.socks[sock].advanceBody(take)
                } else if st.bodyRemaining >= Self.stagingBytes / 2, let t = st.bodyTarget {
                    if drained { return }
                    let r: Int?
                    do { r = try Sys.recv(st.fd, t, st.bodyRemaining) } catch {
                        throw CCLError(.remoteError, "receive from rank \(peer) failed: \(error)", errno: error)
                    }
                    guard let got = r else { return }
                    if got == 0 { try endOfStream(peer: peer, sock: sock); return }
                    if got < st.bodyRemaining { drained = true }
                    peers[peer]!.socks[sock].advanceBody(got)
                } else {
                    guard !drained, try fill(peer: peer, sock: sock, drained: &drained) else { return }
                    continue
                }
                if peers[peer]!.socks[sock].bodyRemaining == 0 { finishBody(peer: peer, sock: sock) }
            }
        }
    }

    /// Reads whatever is available into the staging buffer; false if nothing was.
    private func fill(peer: Int, sock: Int, drained: inout Bool) throws(CCLError) -> Bool {
        peers[peer]!.socks[sock].compactStaging()
        let st = peers[peer]!.socks[sock]
        if st.stageEnd >= Self.stagingBytes { return false }
        let r: Int?
        do { r = try Sys.recv(st.fd, st.staging + st.stageEnd, Self.stagingBytes - st.stageEnd) } catch {
            throw CCLError(.remoteError, "receive from rank \(peer) failed: \(error)", errno: error)
        }
        guard let n = r else { return false }
        if n == 0 { try endOfStream(peer: peer, sock: sock); return false }
        if n < Self.stagingBytes - st.stageEnd { drained = true }
        peers[peer]!.socks[sock].stageEnd += n
        return true
    }

    /// End of stream on one connection. After a clean goodbye the other connections of the pair may
    /// still carry the tail of striped data: close just this one, and give up on the peer only when
    /// all of its connections have ended.
    private func endOfStream(peer: Int, sock: Int) throws(CCLError) {
        if peers[peer]!.saidGoodbye && !peers[peer]!.goodbyeWasAbort && peers[peer]!.socks.count > 1 {
            closeSocket(peer: peer, sock: sock)
            if peers[peer]!.socks.allSatisfy({ $0.fd < 0 }) { throw lostConnection(peer) }
            return
        }
        throw lostConnection(peer)
    }

    private func lostConnection(_ peer: Int) -> CCLError {
        if peers[peer]!.saidGoodbye {
            return CCLError(.remoteError, peers[peer]!.goodbyeWasAbort ? "rank \(peer) aborted its communicator"
                                                                        : "rank \(peer) closed its communicator", peer: peer)
        }
        return CCLError(.remoteError, "connection lost: rank \(peer) closed it without a goodbye (the process died or aborted)", peer: peer)
    }

    private func handleHeader(peer: Int, sock: Int, w0: UInt64, tag: UInt64, a: UInt64, b: UInt64) throws(CCLError) {
        let type = try FrameHeader.check(w0: w0, a: a, b: b, from: peer)
        switch type {
        case .eager:
            let length = Int(a)
            if let i = postedReceive(peer: peer, tag: tag) {
                match(slot: i, peer: peer, length: length, messageID: 0, isRendezvous: false)
                if slots[Int(i)].state == .failed {
                    peers[peer]!.socks[sock].beginBody(target: nil, length: length, slot: -1, unexpected: -1)
                } else {
                    peers[peer]!.socks[sock].beginBody(target: slots[Int(i)].base, length: length, slot: i, unexpected: -1)
                }
            } else {
                let data = UnsafeMutableRawPointer.allocate(byteCount: max(length, 1), alignment: 16)
                let id = peers[peer]!.nextUnexpectedID
                peers[peer]!.nextUnexpectedID += 1
                peers[peer]!.unexpected.append(Unexpected(id: id, tag: tag, length: length, messageID: 0, isRendezvous: false, data: data, complete: false))
                peers[peer]!.unexpectedBytes += UnexpectedBudget.cost(payload: length)
                peers[peer]!.socks[sock].beginBody(target: data, length: length, slot: -1, unexpected: id)
            }
            if length == 0 { finishBody(peer: peer, sock: sock) }
        case .rts:
            if let i = postedReceive(peer: peer, tag: tag) {
                match(slot: i, peer: peer, length: Int(a), messageID: b, isRendezvous: true)
                flush(peer: peer)
            } else {
                let id = peers[peer]!.nextUnexpectedID
                peers[peer]!.nextUnexpectedID += 1
                peers[peer]!.unexpected.append(Unexpected(id: id, tag: tag, length: Int(a), messageID: b, isRendezvous: true, data: nil, complete: true))
                peers[peer]!.unexpectedBytes += UnexpectedBudget.cost(payload: 0)
            }
        case .cts:
            guard let i = peers[peer]!.awaitingGrant.removeValue(forKey: b) else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): grant for unknown message \(b)")
            }
            if a != 0 {
                fail(slot: i, CCLError(.invalidUsage, "rank \(peer) rejected a message of \(slots[Int(i)].length) bytes: it expected another size (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer))
                return
            }
            slots[Int(i)].state = .matched
            let length = slots[Int(i)].length
            // Stripe the payload across the sockets in 4 KiB-aligned pieces; small payloads use one socket.
            let stripes = length >= 256 << 10 ? nsocks : 1
            let per = ((length + stripes - 1) / stripes + 4095) & ~4095
            var off = 0, s = 0
            while off < length {
                let len = min(per, length - off)
                enqueue(peer: peer, sock: s, Frame(type: .data, tag: UInt64(off), a: UInt64(len), b: b,
                                                    payload: UnsafeRawPointer(slots[Int(i)].base! + off), payloadLength: len, slot: i))
                off += len
                s += 1
            }
            flush(peer: peer)
        case .data:
            guard let i = peers[peer]!.incoming[b], slots[Int(i)].inUse, slots[Int(i)].base != nil,
                  tag <= UInt64(slots[Int(i)].length), a <= UInt64(slots[Int(i)].length) - tag else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): data for unknown message \(b) or out of bounds")
            }
            peers[peer]!.socks[sock].beginBody(target: slots[Int(i)].base! + Int(tag), length: Int(a), slot: i, unexpected: -1)
            if a == 0 { finishBody(peer: peer, sock: sock) }
        case .bye:
            peers[peer]!.saidGoodbye = true
            peers[peer]!.goodbyeWasAbort = a != 0
        case .notice:
            if peers[peer]!.noticeIn == nil { peers[peer]!.noticeIn = UnsafeMutableRawPointer.allocate(byteCount: Notice.maxBytes, alignment: 8) }
            peers[peer]!.socks[sock].beginBody(target: peers[peer]!.noticeIn, length: Int(a), slot: -1, unexpected: Self.noticeBody)
        }
    }

    /// `SocketState.bodyUnexpected` while a notice's body is read.
    package static let noticeBody = -2

    /// A peer's notice: kept as its latest; an abort notice breaks this endpoint naming its culprit.
    private func noticeArrived(_ peer: Int, _ n: Notice?) {
        guard let n else { Log.warn(.net, "rank \(rank): an unreadable notice from rank \(peer) (ignored)"); return }
        peers[peer]!.notice = n
        guard n.kind == .abort else { return }
        let e = n.error(at: rank)
        Log.info(.net, "rank \(rank): rank \(peer) aborted: \(e.cause)")
        if brokenBy == nil { brokenBy = e }
    }

    private func postedReceive(peer: Int, tag: UInt64) -> Int32? {
        if peers[peer]!.unexpected.contains(where: { $0.tag == tag }) { return nil }  // older messages first
        for i in peers[peer]!.recvs where slots[Int(i)].state == .posted && slots[Int(i)].tag == tag { return i }
        return nil
    }

    private func finishBody(peer: Int, sock: Int) {
        let st = peers[peer]!.socks[sock]
        peers[peer]!.socks[sock].bodyTarget = nil
        if st.bodySlot >= 0 {
            let i = Int(st.bodySlot)
            slots[i].transferred += st.bodyLength
            if slots[i].transferred == slots[i].length && slots[i].state != .failed { slots[i].state = .done }
        } else if st.bodyUnexpected >= 0 {
            if let u = peers[peer]!.unexpected.firstIndex(where: { $0.id == st.bodyUnexpected }) {
                peers[peer]!.unexpected[u].complete = true
                deliverUnexpected(peer: peer)
            }
        } else if st.bodyUnexpected == Self.noticeBody, let b = peers[peer]!.noticeIn {
            noticeArrived(peer, Notice.decode(Array(UnsafeRawBufferPointer(start: b, count: st.bodyLength))))
        }
    }

    /// Shuts and closes every connection of `peer`. Unread incoming bytes are drained first so that
    /// the kernel ends the connection with FIN rather than RST (an RST can destroy data the peer has
    /// not read yet).
    private func closeSockets(of peer: Int) {
        for s in 0..<peers[peer]!.socks.count {
            closeSocket(peer: peer, sock: s)
        }
    }

    private func closeSocket(peer: Int, sock s: Int) {
        let fd = peers[peer]!.socks[s].fd
        guard fd >= 0 else { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        var sink = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<64 {
            guard let n = sink.withUnsafeMutableBytes({ b in try? Sys.recv(fd, b.baseAddress!, b.count) }) ?? nil, n > 0 else { break }
        }
        Sys.close(fd)
        peers[peer]!.socks[s].fd = -1
        peers[peer]!.socks[s].out.removeAll()
        peers[peer]!.socks[s].head = 0
    }

    /// An abrupt loss breaks the communicator (every wait reports it); a clean goodbye fails only the
    /// requests that involve that peer.
    ///
    /// A peer whose notice said why it went (it aborted because of some rank) breaks the endpoint
    /// with that notice's error, naming the culprit. A peer that went silently (no notice, no
    /// goodbye) may be the one that died — or one that closed because of another rank and could not
    /// say so: it becomes the suspect, blamed only if nothing better is heard within the grace.
    private func peerFailed(_ peer: Int, _ error: CCLError) {
        if peers[peer]!.failure != nil { return }
        // A failed write (broken pipe, reset) may leave the peer's last words unread: read them first.
        if peers[peer]!.notice?.kind != .abort && !peers[peer]!.saidGoodbye && peers[peer]!.socks[0].fd >= 0 && !peers[peer]!.readingLastWords {
            peers[peer]!.readingLastWords = true
            _ = catching { () throws(CCLError) in try read(peer: peer, sock: 0) }
            if peers[peer]!.failure != nil { return }  // the read ended it already
        }
        let e: CCLError
        if let n = peers[peer]!.notice, n.kind == .abort { e = n.error(at: rank) }
        else { e = error.with(rank: rank, peer: peer, peerAddress: peers[peer]?.address.description) }
        peers[peer]!.failure = e
        let clean = peers[peer]!.saidGoodbye && !peers[peer]!.goodbyeWasAbort && e.relayed == nil
        if !clean && e.relayed == nil && !peers[peer]!.saidGoodbye {
            // Lost without a word: pending requests wait for the verdict.
            peers[peer]!.silent = true
            if suspect == nil { suspect = (e, Sys.monotonicNanos()) }
            Log.info(.net, "rank \(rank): rank \(peer) went away without a notice; blamed unless another rank's notice explains it within \(Self.graceNanos / 1_000_000) ms: \(e.cause)")
        } else {
            if clean { Log.info(.net, e.description) } else { Log.warn(.net, e.description) }
            if !clean && brokenBy == nil { brokenBy = e }
            for i in peers[peer]!.sends + peers[peer]!.recvs where slots[Int(i)].state != .done {
                fail(slot: i, e)
            }
        }
        closeSockets(of: peer)
    }
}

// MARK: - State types

package enum FrameType: UInt32 { case eager = 1, rts = 2, cts = 3, data = 4, bye = 5, notice = 6 }

/// What can be checked of a frame header without the connection's state (pure: the fuzz harness
/// calls it too, through `TCPTransport.read`).
package enum FrameHeader {
    /// The frame's type, if the header is one a rank may send: a known type, an eager message of at
    /// most `TCPTransport.maxEagerBytes`, a rendezvous request with a length and an id, a notice of
    /// 1…`Notice.maxBytes` bytes. (DATA and CTS are checked against the message they name.)
    @inline(__always)
    package static func check(w0: UInt64, a: UInt64, b: UInt64, from peer: Int) throws(CCLError) -> FrameType {
        guard let type = FrameType(rawValue: UInt32(truncatingIfNeeded: w0)) else {
            throw CCLError(.remoteError, "garbage on the wire from rank \(peer): unknown frame type \(w0)")
        }
        switch type {
        case .eager:
            guard a <= UInt64(TCPTransport.maxEagerBytes) else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): eager message of \(a) bytes exceeds \(TCPTransport.maxEagerBytes)")
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

package enum SlotState: UInt8 { case free, posted, matched, done, failed }

package struct Slot: RequestSlot {
    package init() {}
    package init(generation: UInt32, inUse: Bool, isSend: Bool, state: SlotState, peer: Int32, tag: UInt64,
                 base: UnsafeMutableRawPointer?, length: Int) {
        self.generation = generation; self.inUse = inUse; self.isSend = isSend; self.state = state
        self.peer = peer; self.tag = tag; self.base = base; self.length = length
    }
    package var isDone: Bool { state == .done }
    package var generation: UInt32 = 0
    package var inUse = false
    package var isSend = false
    package var state: SlotState = .free
    package var peer: Int32 = -1
    package var tag: UInt64 = 0
    package var base: UnsafeMutableRawPointer?
    package var length = 0
    package var transferred = 0
    package var messageID: UInt64 = 0
}

package struct Unexpected {
    package var id: Int
    package var tag: UInt64
    package var length: Int
    package var messageID: UInt64
    package var isRendezvous: Bool
    package var data: UnsafeMutableRawPointer?
    package var complete: Bool
}

package struct SocketState {
    package var fd: Int32 = -1
    package var out: [Frame] = []
    package var head = 0
    // Receive side: a small staging buffer for headers and small bodies.
    package let staging = UnsafeMutableRawPointer.allocate(byteCount: TCPTransport.stagingBytes, alignment: 64)
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
        if stageStart > 0 && stageEnd == TCPTransport.stagingBytes || stageStart > TCPTransport.stagingBytes / 2 {
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

package struct PeerState {
    package let rank: Int
    package let address: SocketAddress
    package var socks: [SocketState]
    package var sends: [Int32] = []
    package var recvs: [Int32] = []
    package var unexpected: [Unexpected] = []
    package var unexpectedBytes = 0
    package var nextMessageID: UInt64 = 1
    package var nextUnexpectedID = 0
    package var awaitingGrant: [UInt64: Int32] = [:]
    package var incoming: [UInt64: Int32] = [:]
    package var failure: CCLError?
    package var saidGoodbye = false
    package var goodbyeWasAbort = false
    /// Reading of the control connection paused: too much unexpected data is buffered.
    package var stalled = false
    /// The latest notice from this peer, and the buffer its body is read into.
    package var notice: Notice?
    package var noticeIn: UnsafeMutableRawPointer?
    /// Went away without a notice or a goodbye (see `TCPTransport.suspect`).
    package var silent = false
    package var readingLastWords = false

    package init(rank: Int, address: SocketAddress, nsocks: Int) {
        self.rank = rank
        self.address = address
        socks = (0..<nsocks).map { _ in SocketState() }
    }
}
