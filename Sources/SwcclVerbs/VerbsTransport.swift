import Glibc
import CSwcclVerbs
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static let ibDisable = Knob.bool("SWCCL_IB_DISABLE", default: false, "1: never use the RDMA verbs transport")
    package static let ibHCA = Knob.string("SWCCL_IB_HCA", default: "", "RDMA devices to use (prefix list, ^ excludes, = exact)")
    package static let ibGidIndex = Knob.int("SWCCL_IB_GID_INDEX", default: -1, "RoCE GID index; -1 picks the RoCE v2 GID of the interface")
    package static let ibEagerBytes = Knob.int("SWCCL_IB_EAGER_BYTES", default: 8192,
        "verbs messages up to this size are copied through registered bounce buffers and sent eagerly; larger ones are RDMA-written straight into the receiver's buffer once it posted the receive (max 65536)")
    package static let ibTimeout = Knob.int("SWCCL_IB_TIMEOUT", default: 14,
        "verbs ACK timeout exponent (4.096 us x 2^n per retry) of the reliable-connected queue pairs")
    package static let ibRetryCount = Knob.int("SWCCL_IB_RETRY_CNT", default: 7,
        "verbs transport retries before a work request fails with 'retry exceeded'")
    package static let ibQueueDepth = Knob.int("SWCCL_IB_QUEUE_DEPTH", default: 256,
        "send work requests a verbs queue pair may have outstanding (receive buffers per peer: a quarter of it)")
}

extension VerbsTransport {
    /// Its registry entry. Cost figures per message and per byte for a 100 Gb/s-class RoCE or
    /// InfiniBand link.
    public static let backend = TransportBackend(
        name: "ib", unavailable: { VerbsDevices.ports.isEmpty ? VerbsDevices.unavailableReason : nil },
        alphaNanos: 5_000, betaNanosPerByte: 0.1, sleepsInKernel: true,
        summary: { VerbsDevices.summary },
        knobs: { [Knobs.ibDisable.info, Knobs.ibHCA.info, Knobs.ibGidIndex.info, Knobs.ibEagerBytes.info, Knobs.ibTimeout.info,
                  Knobs.ibRetryCount.info, Knobs.ibQueueDepth.info] },
        make: { (s) throws(CCLError) in try VerbsTransport(rank: s.rank, nranks: s.nranks, secret: s.secret) })

    public func useSessionSecret(_ secret: [UInt8]) { self.secret = secret }
}

/// The RDMA verbs backend of the transport protocol (InfiniBand, RoCE; tested on Soft-RoCE).
///
/// Set-up: the rank listens on a TCP socket whose address it publishes at bootstrap (the same layout
/// as the TCP backend's). At `connect`, every pair opens one authenticated control connection
/// (`SocketMesh`, secret-checked hello), creates a reliable-connected queue pair, and exchanges over
/// it QP number, PSN, GID, LID, MTU and eager size; both move the QP to RTS and confirm. The control
/// connection then only watches the peer: a BYE on the queue pair followed by end-of-file is a clean
/// close; end-of-file without it is a crash. librdmacm is not needed.
///
/// Data path (one completion queue for every QP, with a completion channel):
/// - every message sent as a SEND starts with a 40-byte header `[type, tag, a, b, c]` (little-endian
///   64-bit words). EAGER (a = length, payload follows), RTS (a = length: a large message is coming),
///   CTS (a = address, b = length, c = rkey << 32 | receive id), BYE.
/// - eager messages (≤ the smaller of both ranks' `SWCCL_IB_EAGER_BYTES`) are copied into a registered
///   bounce slot and sent; the receiver keeps `recvBuffers` registered buffers posted per peer and
///   reposts each as soon as it has been read.
/// - large messages are receiver-driven: posting the receive sends a CTS naming the registered
///   destination; the sender announces the message with an RTS (so that matching stays in posting
///   order whatever the sizes) and, once it holds the CTS, RDMA-writes the payload from its own
///   registered buffer, ending with a write-with-immediate whose immediate (the receive id) completes
///   the receive.
/// - send work requests are signalled selectively (every `signalEvery`, and the last write of a large
///   message): a completion retires every earlier request of its QP and frees their bounce slots. At
///   most `queueDepth` are outstanding per QP; what cannot be posted waits in order in an outbox.
/// - registration: a cache of memory regions keyed by page range, shared by concurrent requests;
///   regions registered by the user (`register`) stay until `deregister`, others are released when
///   their last request completes (memory the caller may free after a request completes is never
///   left registered, so a later buffer at the same address cannot be served stale pages).
/// - waiting polls the CQ while spinning, then arms it and sleeps in poll(2) on the completion
///   channel, the asynchronous-event descriptor, the control connections and an eventfd (abort).
/// - a failed work completion (retry exceeded, remote access error, …), a fatal asynchronous event, a
///   lost control connection or a size mismatch (the tag's stream is then out of step) fails the pair
///   with an error naming the peer, and moves its QP to the error state so the device stops touching
///   the caller's memory. So does a timeout of a request whose buffer was granted or is being written,
///   and every QP goes to the error state before an abort or a broken endpoint is reported: once a
///   call returns an error, no buffer it named is touched again.
public final class VerbsTransport: Transport, @unchecked Sendable {
    public static let protocolVersion: UInt16 = 1
    package static let handshakeMagic: UInt32 = 0x5357_4349  // "SWCI"
    package static let setupMagic: UInt32 = 0x5357_4951       // "SWIQ"
    package static let headerBytes = 40
    package static let maxEagerBytes = 65536
    /// Largest single RDMA write; longer messages are written in pieces.
    package static let maxWriteBytes = 1 << 30


    public let capabilities: TransportCapabilities
    public let localAddress: EndpointAddress
    public let port: VerbsPort

    package let rank: Int
    package let nranks: Int
    /// The id's secret until the rendezvous, then the session secret (set before `connect`).
    package var secret: [UInt8]
    package let eagerThreshold: Int
    package let queueDepth: Int
    package let recvBuffers: Int
    package let sendSlots: Int
    package let signalEvery: Int
    package let bufBytes: Int

    private var listenFD: Int32
    private let abortSignal: AbortSignal
    private var wakeFD: Int32 { abortSignal.wakeFD }
    private let lock = Lock()

    // Verbs objects.
    private let ctx: UnsafeMutablePointer<ibv_context>
    private let pd: UnsafeMutablePointer<ibv_pd>
    private let channel: UnsafeMutablePointer<ibv_comp_channel>
    private var cq: UnsafeMutablePointer<ibv_cq>?
    private let asyncFD: Int32
    private let localGID: [UInt8]
    private let localLID: UInt16
    private let isRoCE: Bool
    /// Soft-RoCE (rxe) or soft-iWARP (siw): the kernel's threads do the device's work.
    private let softDevice: Bool
    private let maxCQE: Int

    // State; touched only with `lock` held.
    private var peers: [VerbsPeer?]
    private var slots: RequestTable<VerbsSlot>
    private var regs: [Int: Registration] = [:]
    private var nextRegID = 1
    private var pollSet: [pollfd] = []
    private var brokenBy: CCLError?
    private var closed = false
    private var stopped = false
    private var wcs = [cswccl_wc](repeating: cswccl_wc(), count: 32)

    public init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding requested: Int = 4096) throws(CCLError) {
        // Receive ids carry the slot in 12 bits.
        let maxOutstanding = max(1, min(requested, 4096))
        guard let port = VerbsDevices.ports.first else {
            throw CCLError(.systemError, "no RDMA device for the verbs transport: \(VerbsDevices.unavailableReason)", rank: rank)
        }
        self.port = port
        self.rank = rank
        self.nranks = nranks
        self.secret = secret
        eagerThreshold = max(0, min(Knobs.ibEagerBytes.value, Self.maxEagerBytes))
        queueDepth = max(16, min(Knobs.ibQueueDepth.value, 4096))
        recvBuffers = max(8, queueDepth / 4)
        sendSlots = max(8, queueDepth / 4)
        signalEvery = max(1, min(queueDepth, sendSlots) / 4)
        bufBytes = (Self.headerBytes + eagerThreshold + 63) & ~63
        guard let c = VerbsDevices.open(port) else {
            throw CCLError(.systemError, "cannot open RDMA device \(port.device): \(Errno.current)", rank: rank)
        }
        ctx = c
        var cleanup: [() -> Void] = [{ _ = cswccl_ibv_close_device(c) }]
        func fail(_ what: String) -> CCLError {
            let e = CCLError(.systemError, "\(port.device): \(what): \(Errno.current)", rank: rank)
            cleanup.reversed().forEach { $0() }
            return e
        }
        guard let pd = cswccl_ibv_alloc_pd(c) else { throw fail("ibv_alloc_pd") }
        self.pd = pd
        cleanup.append { _ = cswccl_ibv_dealloc_pd(pd) }
        guard let ch = cswccl_ibv_create_comp_channel(c) else { throw fail("ibv_create_comp_channel") }
        channel = ch
        cleanup.append { _ = cswccl_ibv_destroy_comp_channel(ch) }
        asyncFD = cswccl_async_fd(c)
        guard asyncFD >= 0 else { throw fail("asynchronous event descriptor") }
        var da = ibv_device_attr()
        guard cswccl_ibv_query_device(c, &da) == 0 else { throw fail("ibv_query_device") }
        maxCQE = Int(da.max_cqe)
        var pa = ibv_port_attr()
        guard cswccl_ibv_query_port(c, UInt8(port.port), &pa) == 0 else { throw fail("ibv_query_port") }
        localLID = cswccl_port_lid(&pa)
        isRoCE = cswccl_port_is_ethernet(&pa) != 0
        softDevice = port.device.hasPrefix("rxe") || port.device.hasPrefix("siw")
        var entry = ibv_gid_entry()
        guard cswccl_ibv_query_gid_ex(c, UInt32(port.port), UInt32(port.gidIndex), &entry) == 0 else { throw fail("ibv_query_gid_ex") }
        localGID = withUnsafePointer(to: &entry) { Array(UnsafeBufferPointer(start: cswccl_gid_bytes($0), count: 16)) }
        let iface: (name: String, address: SocketAddress)
        let l: (fd: Int32, address: SocketAddress)
        do throws(CCLError) {
            iface = try InterfaceChoice.local()
            l = try SocketIO.listen(on: iface.address.withAnyPort)
        } catch {
            cleanup.reversed().forEach { $0() }
            throw error.with(rank: rank)
        }
        listenFD = l.fd
        do throws(CCLError) { abortSignal = try AbortSignal() } catch {
            Sys.close(l.fd)
            cleanup.reversed().forEach { $0() }
            throw error
        }
        var addr = [UInt8](repeating: 0, count: 2 + SocketAddress.encodedSize)
        addr[0] = UInt8(Self.protocolVersion)
        addr[1] = 1
        addr.withUnsafeMutableBytes { l.address.encode(into: $0.baseAddress! + 2) }
        localAddress = EndpointAddress(addr)
        capabilities = TransportCapabilities(
            name: "ib", eagerThreshold: eagerThreshold, maxMessageBytes: (queueDepth - 1) * Self.maxWriteBytes, oneSidedWrites: true,
            needsRegistration: true, maxOutstandingRequests: maxOutstanding, sameHostOnly: false,
            alphaNanos: Self.backend.alphaNanos, betaNanosPerByte: Self.backend.betaNanosPerByte)
        peers = Array(repeating: nil, count: nranks)
        slots = RequestTable(capacity: maxOutstanding, generationMask: 0xf_ffff)  // receive ids: 12 + 20 bits
        Log.info(.net, "rank \(rank): verbs on \(port), control socket \(l.address) (\(iface.name)), eager <= \(eagerThreshold) B, queue depth \(queueDepth)")
    }

    deinit { close() }

    // MARK: connection setup

    public func connect(_ peerList: [PeerInfo], deadline: Deadline) throws(CCLError) {
        lock.lock(); defer { lock.unlock() }
        do throws(CCLError) {
            var higher: [(rank: Int, address: SocketAddress)] = []
            for p in peerList where p.rank != rank {
                guard let (_, a) = ListenerAddress.decode(p.address, version: Self.protocolVersion) else {
                    throw CCLError(.remoteError, "peer published an unreadable verbs address (version mismatch?)", peer: p.rank)
                }
                if p.rank > rank { higher.append((p.rank, a)) }
            }
            let mesh = SocketMesh(magic: Self.handshakeMagic, version: UInt32(Self.protocolVersion), secret: secret, rank: rank,
                                  nranks: nranks, nsocks: 1, wakeFD: wakeFD, owner: "verbs")
            let fds = try mesh.establish(listenFD: listenFD, higher: higher,
                                         lower: Set(peerList.filter { $0.rank < rank }.map(\.rank)), deadline: deadline)
            Sys.close(listenFD)
            listenFD = -1
            // Resources for every pair first (a failure leaves nothing half-connected behind).
            let want = max(1, fds.count) * (queueDepth + recvBuffers + 8)
            let cqe = min(want, maxCQE > 0 ? maxCQE : want)
            if cqe < want {
                Log.warn(.net, "rank \(rank): \(port.device) allows \(cqe) completion queue entries where \(want) could be outstanding; lower SWCCL_IB_QUEUE_DEPTH for this many peers")
            }
            guard let cq = cswccl_ibv_create_cq(ctx, Int32(min(cqe, Int(Int32.max))), channel) else {
                for list in fds.values { list.forEach { Sys.close($0) } }
                throw CCLError(.systemError, "\(port.device): ibv_create_cq(\(cqe)): \(Errno.current)")
            }
            self.cq = cq
            for (peer, list) in fds {
                let a = peerList.first { $0.rank == peer }.flatMap { ListenerAddress.decode($0.address, version: Self.protocolVersion)?.address.description } ?? "?"
                peers[peer] = VerbsPeer(rank: peer, fd: list[0], address: a, bounceSlots: sendSlots)
            }
            for peer in fds.keys.sorted() { try setUp(peer: peer, deadline: deadline) }
            // Both sides at RTS: confirm on every control connection before any send.
            for peer in fds.keys.sorted() {
                let fd = peers[peer]!.fd
                try SocketIO.writeAll(fd, [0x52], deadline: deadline, abortFD: wakeFD)
            }
            for peer in fds.keys.sorted() {
                let fd = peers[peer]!.fd
                do throws(CCLError) {
                    let b = try SocketIO.read(fd, count: 1, deadline: deadline, abortFD: wakeFD)
                    guard b == [0x52] else { throw CCLError(.remoteError, "unexpected byte after queue-pair set-up") }
                } catch { throw error.with(peer: peer) }
            }
            guard cswccl_req_notify(cq) == 0 else { throw CCLError(.systemError, "ibv_req_notify_cq: \(Errno.current)") }
        } catch {
            throw error.with(operation: "connect", rank: rank)
        }
        pollSet = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: cswccl_comp_channel_fd(channel), events: Int16(POLLIN), revents: 0),
                   pollfd(fd: asyncFD, events: Int16(POLLIN), revents: 0)]
        for case let p? in peers { pollSet.append(pollfd(fd: p.fd, events: Int16(POLLIN), revents: 0)) }
    }

    /// One pair: buffers, QP, receives posted, addresses exchanged, QP to RTS.
    private func setUp(peer: Int, deadline: Deadline) throws(CCLError) {
        let pool = UnsafeMutableRawPointer.allocate(byteCount: (recvBuffers + sendSlots) * bufBytes, alignment: 4096)
        peers[peer]!.pool = pool
        guard let mr = cswccl_reg_mr(pd, pool, (recvBuffers + sendSlots) * bufBytes, 1) else {
            throw CCLError(.systemError, "\(port.device): registering bounce buffers: \(Errno.current)", peer: peer)
        }
        peers[peer]!.poolMR = mr
        var qpn: UInt32 = 0, inline: UInt32 = 0
        guard let qp = cswccl_create_rc_qp(pd, cq, UInt32(queueDepth), UInt32(recvBuffers + 4), UInt32(Self.headerBytes), &qpn, &inline) else {
            throw CCLError(.systemError, "\(port.device): ibv_create_qp: \(Errno.current)", peer: peer)
        }
        peers[peer]!.qp = qp
        peers[peer]!.qpn = qpn
        var psnBytes: UInt32 = 0
        try? withUnsafeMutableBytes(of: &psnBytes) { b throws(Errno) in try Sys.randomBytes(b.baseAddress!, 4) }
        let psn = psnBytes & 0xff_ffff
        let setup = VerbsSetup(qpn: qpn, psn: psn, lid: UInt32(localLID), mtu: UInt32(port.mtu), eager: UInt32(eagerThreshold), gid: localGID)
        let fd = peers[peer]!.fd
        do throws(CCLError) {
            try SocketIO.writeAll(fd, setup.encode(), deadline: deadline, abortFD: wakeFD)
            let m = try VerbsSetup.decode(try SocketIO.read(fd, count: VerbsSetup.bytes, deadline: deadline, abortFD: wakeFD))
            let (rqpn, rpsn, rlid, rmtu, reager, rgid) = (m.qpn, m.psn, m.lid, m.mtu, m.eager, m.gid)
            peers[peer]!.eager = min(eagerThreshold, Int(reager))
            let mtu = min(port.mtu, Int(rmtu))
            var step: UnsafePointer<CChar>? = nil
            let rc = rgid.withUnsafeBufferPointer { g in
                cswccl_connect_qp(qp, UInt8(port.port), Int32(port.gidIndex), isRoCE ? 1 : 0, g.baseAddress, UInt16(truncatingIfNeeded: rlid),
                                  rqpn, rpsn, psn, Int32(mtu), UInt8(max(1, min(Knobs.ibTimeout.value, 31))),
                                  UInt8(max(0, min(Knobs.ibRetryCount.value, 7))), &step)
            }
            guard rc == 0 else {
                throw CCLError(.systemError, "\(port.device): queue pair \(step.map { String(cString: $0) } ?? "transition"): \(Errno(rc)) (remote GID \(VerbsDevices.gidText(rgid)), QP \(rqpn))")
            }
            // Receive buffers go up before the peer hears we are ready (the confirmation in `connect`).
            let lkey = cswccl_mr_lkey(mr)
            for b in 0..<recvBuffers {
                let r = cswccl_post_recv(qp, WorkID.recv(peer: peer, index: b), pool + b * bufBytes, UInt32(bufBytes), lkey)
                guard r == 0 else { throw CCLError(.systemError, "ibv_post_recv: \(Errno(r))") }
            }
            Log.trace(.net, "rank \(rank): QP \(qpn) connected to rank \(peer) QP \(rqpn) GID \(VerbsDevices.gidText(rgid)) MTU \(mtu)")
        } catch { throw error.with(peer: peer) }
    }

    // MARK: memory

    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        lock.lock(); defer { lock.unlock() }
        if closed { throw abortError() }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0) }
        let id = try acquire(UnsafeRawPointer(base), buffer.count, writable: true, peer: nil)
        regs[id]!.user += 1
        regs[id]!.refs -= 1
        return MemoryRegion(base: base, length: buffer.count, key: UInt64(id))
    }

    public func deregister(_ region: MemoryRegion) {
        lock.lock(); defer { lock.unlock() }
        let id = Int(region.key)
        guard id != 0, regs[id] != nil, regs[id]!.user > 0 else { return }
        regs[id]!.user -= 1
        releaseIfIdle(id)
    }

    /// A registration covering [p, p + n), shared if one exists; its reference count is raised.
    private func acquire(_ p: UnsafeRawPointer, _ n: Int, writable: Bool, peer: Int?) throws(CCLError) -> Int {
        let start = UInt(bitPattern: p), end = start + UInt(max(n, 1))
        for (id, r) in regs where r.start <= start && end <= r.end && (r.writable || !writable) {
            regs[id]!.refs += 1
            return id
        }
        let page = UInt(4096)
        let s = start & ~(page - 1), e = (end + page - 1) & ~(page - 1)
        var mr = cswccl_reg_mr(pd, UnsafeMutableRawPointer(bitPattern: s), Int(e - s), 1)
        var isWritable = true
        if mr == nil && !writable && (errno == EFAULT || errno == EACCES || errno == EPERM) {
            mr = cswccl_reg_mr(pd, UnsafeMutableRawPointer(bitPattern: s), Int(e - s), 0)
            isWritable = false
        }
        guard let mr else {
            throw CCLError(.systemError, "\(port.device): registering \(Int(e - s)) bytes at 0x\(String(s, radix: 16)): \(Errno.current) (locked-memory limit? ulimit -l)", rank: rank, peer: peer)
        }
        let id = nextRegID
        nextRegID = nextRegID == Int(Int32.max) ? 1 : nextRegID + 1
        regs[id] = Registration(start: s, end: e, mr: mr, refs: 1, user: 0, writable: isWritable)
        return id
    }

    private func release(reg id: Int) {
        guard id != 0, regs[id] != nil else { return }
        regs[id]!.refs -= 1
        releaseIfIdle(id)
    }

    private func releaseIfIdle(_ id: Int) {
        guard let r = regs[id], r.refs <= 0, r.user <= 0 else { return }
        _ = cswccl_dereg_mr(r.mr)
        regs[id] = nil
    }

    // MARK: posting

    private func checkPeer(_ peer: Int, _ what: String) throws(CCLError) {
        if abortSignal.isRaised { throw abortError() }
        guard peer >= 0, peer < nranks, peer != rank, peers[peer] != nil else {
            throw CCLError.invalidArgument("\(what): peer \(peer) is not a connected peer of rank \(rank)")
        }
    }

    private func allocSlot(send: Bool, peer: Int, tag: UInt64, base: UnsafeMutableRawPointer?, length: Int) throws(CCLError) -> Int32 {
        try slots.allocate(rank: rank, peer: peer) { gen in
            VerbsSlot(generation: gen, inUse: true, isSend: send, state: .posted, peer: Int32(peer), tag: tag, base: base, length: length)
        }
    }

    public func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        try checkPeer(peer, "send")
        if let e = peers[peer]!.failure { throw e }
        let n = data.count
        let i = try allocSlot(send: true, peer: peer, tag: tag, base: UnsafeMutableRawPointer(mutating: data.baseAddress), length: n)
        peers[peer]!.sends.append(i)
        if n <= peers[peer]!.eager {
            peers[peer]!.outbox.append(.eager(i, slots[Int(i)].generation))
        } else {
            do throws(CCLError) {
                slots[Int(i)].reg = try acquire(data.baseAddress!, n, writable: false, peer: peer)
            } catch {
                fail(slot: i, error)
                return slots.handle(i)
            }
            slots[Int(i)].state = .awaitingCTS
            peers[peer]!.outbox.append(.control(.rts, tag: tag, a: UInt64(n), b: 0, c: 0))
            // A clear-to-send may have come already.
            if let k = peers[peer]!.grants.firstIndex(where: { $0.tag == tag }) {
                let g = peers[peer]!.grants.remove(at: k)
                granted(slot: i, g)
            }
        }
        flush(peer: peer)
        return slots.handle(i)
    }

    public func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        try checkPeer(peer, "receive")
        let n = buffer.count
        let i = try allocSlot(send: false, peer: peer, tag: tag, base: buffer.baseAddress, length: n)
        peers[peer]!.recvs.append(i)
        let large = n > peers[peer]!.eager
        if large && peers[peer]!.failure == nil && !peers[peer]!.saidGoodbye {
            do throws(CCLError) {
                let id = try acquire(buffer.baseAddress!, n, writable: true, peer: peer)
                slots[Int(i)].reg = id
                let rid = UInt64(i) | UInt64(slots[Int(i)].generation) << 12
                let rkey = UInt64(cswccl_mr_rkey(regs[id]!.mr))
                peers[peer]!.outbox.append(.control(.cts, tag: tag, a: UInt64(UInt(bitPattern: buffer.baseAddress!)), b: UInt64(n), c: rkey << 32 | rid))
                slots[Int(i)].ctsSent = true
            } catch {
                fail(slot: i, error)
                return slots.handle(i)
            }
        }
        // Something with this tag may have arrived already, even from a peer that has since closed.
        if let k = peers[peer]!.unexpected.firstIndex(where: { $0.tag == tag }) {
            let m = peers[peer]!.unexpected.remove(at: k)
            peers[peer]!.unexpectedBytes -= UnexpectedBudget.cost(payload: m.data == nil ? 0 : m.length)
            slots[Int(i)].matched = true
            arrived(slot: i, peer: peer, m.length, data: m.data.map { UnsafeRawPointer($0) }, rts: m.isRTS)
            m.data?.deallocate()
            resumeDeferred(peer)
        } else if !peers[peer]!.deferred.isEmpty {
            resumeDeferred(peer)  // the message held back first may be this receive's
            if slots[Int(i)].state != .done, !slots[Int(i)].matched {
                if let e = peers[peer]!.failure { fail(slot: i, e) } else if peers[peer]!.saidGoodbye { fail(slot: i, closedError(peer)) }
            }
        } else if let e = peers[peer]!.failure {
            fail(slot: i, e)
        } else if peers[peer]!.saidGoodbye {
            fail(slot: i, closedError(peer))
        }
        flush(peer: peer)
        return slots.handle(i)
    }

    /// A message of `length` bytes (eager data at `data`, or an RTS) is the next one of its tag: it
    /// belongs to receive `i`.
    private func arrived(slot i: Int32, peer: Int, _ length: Int, data: UnsafeRawPointer?, rts: Bool) {
        let s = slots[Int(i)]
        if length != s.length {
            // The tag's stream is out of step (a clear-to-send may already have gone to the wrong
            // message): fail this receive and stop the pair, so no later one can succeed with wrong data.
            let e = CCLError(.invalidUsage, "message size mismatch: rank \(peer) sent \(length) bytes where \(s.length) were expected (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer)
            fail(slot: i, e)
            peerFailed(peer, e)
            return
        }
        if rts && !s.ctsSent {
            // The pair failed before this receive could grant its buffer: the data cannot come.
            fail(slot: i, peers[peer]!.failure ?? closedError(peer))
            return
        }
        if rts {
            slots[Int(i)].rtsSeen = true
            if s.dataArrived { slots[Int(i)].state = .done }
        } else {
            if length > 0, let data { s.base!.copyMemory(from: data, byteCount: length) }
            slots[Int(i)].state = .done
        }
    }

    /// The receiver's clear-to-send for send `i`: write the payload.
    private func granted(slot i: Int32, _ g: Grant) {
        let s = slots[Int(i)]
        let peer = Int(s.peer)
        if closed {
            // Closing: a write now would follow our BYE.
            fail(slot: i, CCLError(.remoteError, "endpoint closed before rank \(peer) granted the message", rank: rank, peer: peer))
            return
        }
        guard g.length == s.length else {
            // The tag's messages are out of step with the receiver's buffers: stop the pair.
            let e = CCLError(.invalidUsage, "message size mismatch: rank \(peer) expects \(g.length) bytes where \(s.length) are sent (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer)
            fail(slot: i, e)
            peerFailed(peer, e)
            return
        }
        slots[Int(i)].state = .writing
        peers[peer]!.outbox.append(.write(i, s.generation, remote: g.address, rkey: g.rkey, rid: g.rid))
    }

    private func fail(slot i: Int32, _ e: CCLError) {
        guard slots[Int(i)].state != .failed else { return }
        slots[Int(i)].state = .failed
        slots.setError(i, e)
    }

    // MARK: the send queue

    /// Whether one more work request fits on the QP (with one bounce slot if `bounce`).
    private func room(_ p: VerbsPeer, bounce: Bool) -> Bool {
        Int(p.posted &- p.retired) < queueDepth && (!bounce || p.bounceUsed < sendSlots)
    }

    /// Posts what the outbox holds, in order, while the QP has room.
    private func flush(peer: Int) {
        guard peers[peer] != nil else { return }
        while let op = peers[peer]!.outbox.first, peers[peer]!.failure == nil {
            do throws(CCLError) {
                guard try post(op, peer: peer) else { return }
            } catch {
                peerFailed(peer, error)
                return
            }
            peers[peer]!.outbox.removeFirst()
        }
    }

    /// Posts one outbox entry; false if the QP or the bounce slots are full.
    private func post(_ op: OutOp, peer: Int) throws(CCLError) -> Bool {
        let p = peers[peer]!
        switch op {
        case let .eager(i, gen):
            let s = slots[Int(i)]
            guard s.inUse, s.generation == gen, s.state == .posted else { return true }  // failed meanwhile
            guard room(p, bounce: true) else { return false }
            let buf = bounceSlot(peer)
            writeHeader(buf, .eager, tag: s.tag, a: UInt64(s.length), b: 0, c: 0)
            if s.length > 0 { (buf + Self.headerBytes).copyMemory(from: s.base!, byteCount: s.length) }
            try postSend(peer: peer, op: CSWCCL_OP_SEND, buf, Self.headerBytes + s.length, lkey: cswccl_mr_lkey(p.poolMR!), bounce: true)
            if slots[Int(i)].state == .posted { slots[Int(i)].state = .done }  // the caller's buffer is free again
        case let .control(type, tag, a, b, c):
            guard room(p, bounce: true) else { return false }
            let buf = bounceSlot(peer)
            writeHeader(buf, type, tag: tag, a: a, b: b, c: c)
            try postSend(peer: peer, op: CSWCCL_OP_SEND, buf, Self.headerBytes, lkey: cswccl_mr_lkey(p.poolMR!), signal: type == .bye, bounce: true)
        case let .write(i, gen, remote, rkey, rid):
            let s = slots[Int(i)]
            guard s.inUse, s.generation == gen, s.state == .writing else { return true }  // failed meanwhile
            let pieces = (s.length + Self.maxWriteBytes - 1) / Self.maxWriteBytes
            guard Int(p.posted &- p.retired) + pieces <= queueDepth else { return false }
            let lkey = cswccl_mr_lkey(regs[s.reg]!.mr)
            for k in 0..<pieces {
                let off = k * Self.maxWriteBytes
                let n = min(Self.maxWriteBytes, s.length - off)
                let last = k == pieces - 1
                let seq = try postSend(peer: peer, op: last ? CSWCCL_OP_WRITE_IMM : CSWCCL_OP_WRITE, s.base! + off, n, lkey: lkey,
                                       remote: remote + UInt64(off), rkey: rkey, imm: rid, signal: last)
                if last { slots[Int(i)].completionSeq = seq }
            }
        }
        return true
    }

    private func bounceSlot(_ peer: Int) -> UnsafeMutableRawPointer {
        let p = peers[peer]!
        return p.pool! + (recvBuffers + p.bounceHead) * bufBytes
    }

    private func writeHeader(_ buf: UnsafeMutableRawPointer, _ type: MessageType, tag: UInt64, a: UInt64, b: UInt64, c: UInt64) {
        buf.storeBytes(of: type.rawValue.littleEndian, toByteOffset: 0, as: UInt64.self)
        buf.storeBytes(of: tag.littleEndian, toByteOffset: 8, as: UInt64.self)
        buf.storeBytes(of: a.littleEndian, toByteOffset: 16, as: UInt64.self)
        buf.storeBytes(of: b.littleEndian, toByteOffset: 24, as: UInt64.self)
        buf.storeBytes(of: c.littleEndian, toByteOffset: 32, as: UInt64.self)
    }

    /// Posts one send work request; returns its sequence number on the QP.
    @discardableResult
    private func postSend(peer: Int, op: Int, _ local: UnsafeRawPointer, _ n: Int, lkey: UInt32, remote: UInt64 = 0, rkey: UInt32 = 0,
                          imm: UInt32 = 0, signal: Bool = false, bounce: Bool = false) throws(CCLError) -> UInt64 {
        // Mutated in place: a copy of the peer would copy its bounce table on every send.
        let seq = peers[peer]!.posted &+ 1
        // Signal every `signalEvery` requests, and whenever the queue or the bounce slots run low, so
        // that a completion always comes to free them.
        let signaled = signal || seq &- peers[peer]!.lastSignaled >= UInt64(signalEvery)
            || Int(seq &- peers[peer]!.retired) >= queueDepth - 1 || (bounce && peers[peer]!.bounceUsed + 1 >= sendSlots)
        let rc = cswccl_post_send(peers[peer]!.qp, WorkID.send(peer: peer, seq: seq), Int32(op), local, UInt32(n), lkey, remote, rkey, imm,
                                  signaled ? 1 : 0, 0)
        guard rc == 0 else { throw CCLError(.systemError, "ibv_post_send: \(Errno(rc))", peer: peer) }
        peers[peer]!.posted = seq
        if signaled { peers[peer]!.lastSignaled = seq }
        if bounce {
            let head = peers[peer]!.bounceHead
            peers[peer]!.bounceSeq[head] = seq
            peers[peer]!.bounceHead = (head + 1) % sendSlots
            peers[peer]!.bounceUsed += 1
        }
        return seq
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
            // A failed request whose buffer was granted or being written reaches here only after its
            // QP was stopped (peerFailed, stopAllQueuePairs): the registration can go with the slot.
            let e = slots.takeError(i)
            releaseSlot(i)
            throw e.with(rank: rank, peer: peer, peerAddress: peers[peer]?.address)
        }
        if s.state != .done {
            if let b = brokenBy { stopAllQueuePairs(); throw b }
            if abortSignal.isRaised { throw abortError() }
            return false
        }
        if slots.earlierPending(i, in: s.isSend ? peers[peer]!.sends : peers[peer]!.recvs) { return false }
        releaseSlot(i)
        return true
    }

    private func releaseSlot(_ i: Int32) {
        let s = slots[Int(i)]
        let peer = Int(s.peer)
        if s.isSend {
            if let k = peers[peer]!.sends.firstIndex(of: i) { peers[peer]!.sends.remove(at: k) }
        } else {
            if let k = peers[peer]!.recvs.firstIndex(of: i) { peers[peer]!.recvs.remove(at: k) }
        }
        if s.reg != 0 { release(reg: s.reg) }
        slots[Int(i)].base = nil
        slots[Int(i)].reg = 0
        slots.release(i)
    }

    public func wait(_ r: Request, deadline: Deadline) throws(CCLError) {
        lock.lock(); defer { lock.unlock() }
        let i = try slots.validate(r)
        try RequestWait.run(deadline: deadline, complete: { () throws(CCLError) in try complete(i) }, spin: { () throws(CCLError) -> Bool in
            // Yield between polls: a software device (Soft-RoCE) moves the data in kernel threads
            // that a spinning rank would starve.
            if !(try progress(timeoutMs: 0)) { if softDevice { Sys.yieldCore() } else { Spin.yield() } }
            return false
        }, block: { (ms) throws(CCLError) in try progress(timeoutMs: ms) }, timedOut: { () throws(CCLError) in
            try progress(timeoutMs: 0)
            if try complete(i) { return }
            let s = slots[i]
            let peer = Int(s.peer)
            let e = slots.timeoutError(i, rank: rank, over: " over verbs", peerAddress: peers[peer]?.address)
            // The peer may still write into a granted buffer, or the device still read one being
            // written: stop the pair before the caller takes its buffer back.
            if (!s.isSend && s.ctsSent && !s.dataArrived) || (s.isSend && s.state == .writing) { peerFailed(peer, e) }
            throw e
        })
    }

    public func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        lock.lock(); defer { lock.unlock() }
        if let b = brokenBy { stopAllQueuePairs(); throw b }
        if abortSignal.isRaised { throw abortError() }
        return try progress(timeoutMs: deadline.remainingMs)
    }

    public func unexpectedTags(from peer: Int) -> [UInt64] {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < peers.count, let p = peers[peer] else { return [] }
        return p.unexpected.map(\.tag)
    }

    /// The error for calls after `abort`. Reporting it means callers may reuse their buffers: every QP
    /// is stopped first.
    private func abortError() -> CCLError {
        stopAllQueuePairs()
        return abortSignal.error(rank: rank)
    }

    /// Moves every QP to the error state (once): the device stops reading and writing the buffers of
    /// requests that are about to be reported failed.
    private func stopAllQueuePairs() {
        if stopped { return }
        stopped = true
        for p in peers.indices { if let qp = peers[p]?.qp { _ = cswccl_qp_to_error(qp) } }
    }

    private func closedError(_ peer: Int) -> CCLError {
        CCLError(.remoteError, "rank \(peer) closed its verbs endpoint", rank: rank, peer: peer)
    }

    public func abort(_ reason: String) { abortSignal.raise(reason) }

    // MARK: progress engine

    /// Drains the completion queue, then (if nothing happened and `timeoutMs` > 0) sleeps in poll(2)
    /// on the completion channel, the asynchronous events, the control connections and the abort
    /// eventfd. Returns true if anything happened.
    @discardableResult
    private func progress(timeoutMs: Int32) throws(CCLError) -> Bool {
        if closed { throw abortError() }
        if abortSignal.isRaised { throw abortError() }
        guard let cq else { return false }
        var any = drainCQ(cq)
        if any || timeoutMs == 0 && !pollQuick() { return any }
        // Arm, then look again: a completion that landed before arming would not raise an event.
        if !any {
            _ = cswccl_req_notify(cq)
            if drainCQ(cq) { return true }
        }
        for k in pollSet.indices { pollSet[k].revents = 0 }
        let n: Int
        do throws(Errno) { n = try pollSet.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: timeoutMs) } }
        catch { throw CCLError.system("poll", error).with(rank: rank) }
        if n == 0 { return any }
        if pollSet[0].revents != 0 {
            abortSignal.drain()
            if abortSignal.isRaised { throw abortError() }
        }
        if pollSet[1].revents != 0 {
            _ = cswccl_drain_cq_events(channel)
            _ = cswccl_req_notify(cq)
            any = drainCQ(cq) || any
        }
        if pollSet[2].revents != 0 { any = readAsyncEvents() || any }
        for k in pollSet.indices.dropFirst(3) where pollSet[k].revents != 0 {
            any = true
            controlReadable(fd: pollSet[k].fd)
        }
        return true
    }

    /// Without blocking: whether a descriptor other than the CQ's has something (a control connection
    /// that closed, an asynchronous event, an abort).
    private func pollQuick() -> Bool {
        for k in pollSet.indices where k != 1 { pollSet[k].revents = 0 }
        var quick = pollSet
        quick[1].fd = -1
        let n = (try? quick.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: 0) }) ?? 0
        return n > 0
    }

    /// Handles every completion waiting on the CQ; true if there was any.
    private func drainCQ(_ cq: UnsafeMutablePointer<ibv_cq>) -> Bool {
        var any = false
        while true {
            let n = wcs.withUnsafeMutableBufferPointer { cswccl_poll_cq(cq, 32, $0.baseAddress) }
            if n < 0 {
                for p in peers.indices where peers[p] != nil {
                    peerFailed(p, CCLError(.systemError, "\(port.device): ibv_poll_cq failed (\(n)): the completion queue is unusable", peer: p), abrupt: true)
                }
                break
            }
            if n == 0 { break }
            any = true
            for k in 0..<Int(n) { handle(wcs[k]) }
            if n < 32 { break }
        }
        if any { for p in peers.indices where peers[p] != nil && !peers[p]!.outbox.isEmpty { flush(peer: p) } }
        return any
    }

    private func handle(_ wc: cswccl_wc) {
        let (kind, peer, value) = WorkID.decode(wc.wr_id)
        guard peer < peers.count, peers[peer] != nil else { return }
        if wc.status != 0 {
            if peers[peer]!.failure != nil { return }  // flushed or refused after the pair failed or closed
            let what = kind == .recv ? "receive" : "send"
            peerFailed(peer, CCLError(.remoteError, "\(what) work completion failed on the queue pair to rank \(peer): \(String(cString: cswccl_wc_status_str(wc.status))) (vendor error 0x\(String(wc.vendor_err, radix: 16)); the peer died or its memory registration is gone)", peer: peer), abrupt: true)
            return
        }
        switch kind {
        case .send:
            retire(peer: peer, upTo: value)
        case .recv:
            let a = VerbsArrival(workID: wc.wr_id, buffer: peers[peer]!.pool! + Int(value) * bufBytes, bytes: Int(wc.byte_len),
                                 isWrite: wc.opcode == 3, immediate: wc.imm)
            // In order behind those already held back, or held back itself past the unexpected budget.
            if !peers[peer]!.deferred.isEmpty || mustDefer(peer, a) {
                peers[peer]!.deferred.append(a)
                return
            }
            consume(peer, a)
        }
    }

    /// Handles one arrival and posts its buffer again.
    private func consume(_ peer: Int, _ a: VerbsArrival) {
        if a.isWrite {
            writeArrived(peer: peer, rid: a.immediate)
        } else {
            received(peer: peer, a.buffer, a.bytes)
        }
        // The buffer is read: post it again.
        if peers[peer]!.failure == nil, let qp = peers[peer]!.qp {
            let rc = cswccl_post_recv(qp, a.workID, a.buffer, UInt32(bufBytes), cswccl_mr_lkey(peers[peer]!.poolMR!))
            if rc != 0 { peerFailed(peer, CCLError(.systemError, "ibv_post_recv: \(Errno(rc))", peer: peer)) }
        }
    }

    /// Whether an arrival must wait in its receive buffer (not reposted, so the peer's sends wait:
    /// receiver-not-ready retries) because the peer's unexpected messages are past the budget and it
    /// matches no posted receive.
    private func mustDefer(_ peer: Int, _ a: VerbsArrival) -> Bool {
        guard !a.isWrite, peers[peer]!.failure == nil, peers[peer]!.unexpectedBytes > UnexpectedBudget.bytesPerPeer,
              let h = try? VerbsHeader.decode(UnsafeRawPointer(a.buffer), count: a.bytes, from: peer),
              h.type == .eager || h.type == .rts else { return false }
        return !peers[peer]!.recvs.contains { slots[Int($0)].tag == h.tag && slots[Int($0)].state == .posted && !slots[Int($0)].matched }
    }

    /// Handles the arrivals held back, in order, as far as the budget and the posted receives allow.
    private func resumeDeferred(_ peer: Int) {
        while let a = peers[peer]!.deferred.first {
            if mustDefer(peer, a) { return }
            peers[peer]!.deferred.removeFirst()
            consume(peer, a)
        }
    }

    /// A signalled send completed: it and every earlier request of the QP are done.
    private func retire(peer: Int, upTo seq: UInt64) {
        if seq > peers[peer]!.retired { peers[peer]!.retired = seq }
        let retired = peers[peer]!.retired
        while peers[peer]!.bounceUsed > 0 {
            let tail = (peers[peer]!.bounceHead - peers[peer]!.bounceUsed + sendSlots) % sendSlots
            guard peers[peer]!.bounceSeq[tail] <= retired else { break }
            peers[peer]!.bounceUsed -= 1
        }
        let p = peers[peer]!
        for i in p.sends where slots[Int(i)].state == .writing && slots[Int(i)].completionSeq != 0 && slots[Int(i)].completionSeq <= p.retired {
            slots[Int(i)].state = .done
        }
    }

    private func writeArrived(peer: Int, rid: UInt32) {
        let i = Int32(rid & 0xfff), gen = rid >> 12
        guard Int(i) < slots.capacity, slots[Int(i)].inUse, slots[Int(i)].generation == gen, !slots[Int(i)].isSend,
              Int(slots[Int(i)].peer) == peer else {
            peerFailed(peer, CCLError(.remoteError, "rank \(peer) completed a write for receive \(i)/\(gen), which is not outstanding", peer: peer), abrupt: true)
            return
        }
        slots[Int(i)].dataArrived = true
        if slots[Int(i)].rtsSeen && slots[Int(i)].state == .posted { slots[Int(i)].state = .done }
    }

    /// A SEND arrived from `peer` in `buf`.
    private func received(peer: Int, _ buf: UnsafeMutableRawPointer, _ n: Int) {
        let h: VerbsHeader
        do { h = try VerbsHeader.decode(UnsafeRawPointer(buf), count: n, from: peer) } catch {
            peerFailed(peer, error, abrupt: true)
            return
        }
        let (type, tag, length, a, c) = (h.type, h.tag, h.length, h.a, h.c)
        switch type {
        case .eager, .rts:
            let data = type == .eager ? UnsafeRawPointer(buf + Self.headerBytes) : nil
            if let i = peers[peer]!.recvs.first(where: { slots[Int($0)].tag == tag && slots[Int($0)].state == .posted && !slots[Int($0)].matched }) {
                slots[Int(i)].matched = true
                arrived(slot: i, peer: peer, length, data: data, rts: type == .rts)
            } else {
                var copy: UnsafeMutableRawPointer? = nil
                if type == .eager {
                    copy = .allocate(byteCount: max(length, 1), alignment: 16)
                    if length > 0 { copy!.copyMemory(from: data!, byteCount: length) }
                }
                peers[peer]!.unexpected.append(VerbsUnexpected(tag: tag, length: length, data: copy, isRTS: type == .rts))
                peers[peer]!.unexpectedBytes += UnexpectedBudget.cost(payload: copy == nil ? 0 : length)
            }
        case .cts:
            let g = Grant(tag: tag, address: a, length: length, rkey: UInt32(truncatingIfNeeded: c >> 32), rid: UInt32(truncatingIfNeeded: c))
            if let i = peers[peer]!.sends.first(where: { slots[Int($0)].state == .awaitingCTS && slots[Int($0)].tag == tag }) {
                granted(slot: i, g)
            } else {
                peers[peer]!.grants.append(g)
            }
        case .bye:
            // Everything the peer sent before is handled (arrivals are in order); its unexpected
            // messages stay deliverable. The rest fails, and the QP stops.
            peers[peer]!.saidGoodbye = true
            peerFailed(peer, closedError(peer))
        }
    }

    /// The control connection of a peer is readable: a notice (`[length u32][Notice]`), or end-of-file
    /// (clean after a BYE, else a crash).
    private func controlReadable(fd: Int32) {
        guard let peer = peers.firstIndex(where: { $0?.fd == fd }) else { return }
        var chunk = [UInt8](repeating: 0, count: 2048)
        do throws(Errno) {
            guard let n = try chunk.withUnsafeMutableBytes({ b in catching { () throws(Errno) -> Int? in try Sys.recv(fd, b.baseAddress!, b.count) } }).get() else { return }
            if n > 0 {
                peers[peer]!.controlIn += chunk[0..<n]
                // Garbage (a length of 0 or beyond the largest notice) is ignored: the buffer is dropped.
                for notice in Notice.unframe(&peers[peer]!.controlIn) { noticeArrived(peer, notice) }
                return
            }
        } catch {}
        // Everything the peer sent before going away is on the CQ already: take it first.
        if let cq { _ = drainCQ(cq) }
        closeControl(peer)
        if peers[peer]!.saidGoodbye { return }
        peerFailed(peer, CCLError(.remoteError, "connection lost: rank \(peer) went away without closing (process died?)", peer: peer), abrupt: true)
    }

    private func closeControl(_ peer: Int) {
        let fd = peers[peer]!.fd
        guard fd >= 0 else { return }
        if let k = pollSet.firstIndex(where: { $0.fd == fd }) { pollSet[k].fd = -1 }
        Sys.close(fd)
        peers[peer]!.fd = -1
    }

    /// Asynchronous device events: fatal ones fail the pair of their QP, or every pair.
    private func readAsyncEvents() -> Bool {
        var any = false
        var what = [CChar](repeating: 0, count: 96)
        var fatal: Int32 = 0, qpn: UInt32 = 0
        while cswccl_read_async_event(ctx, &fatal, &qpn, &what, what.count) == 1 {
            any = true
            let text = what.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            guard fatal != 0 else { Log.info(.net, "rank \(rank): \(port.device) event: \(text)"); continue }
            let victims = qpn != 0 ? peers.indices.filter { peers[$0]?.qpn == qpn } : peers.indices.filter { peers[$0] != nil }
            for p in victims {
                peerFailed(p, CCLError(.remoteError, "\(port.device) reported \(text) on the queue pair to rank \(p)", peer: p), abrupt: true)
            }
        }
        return any
    }

    /// A peer's notice: kept as its latest; an abort notice breaks this endpoint naming its culprit.
    private func noticeArrived(_ peer: Int, _ n: Notice?) {
        guard let n else { return }
        peers[peer]!.notice = n
        guard n.kind == .abort else { return }
        let e = n.error(at: rank)
        Log.info(.net, "rank \(rank): rank \(peer) aborted: \(e.cause)")
        if brokenBy == nil { brokenBy = e }
    }

    public func peerNotice(_ peer: Int) -> Notice? {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < peers.count else { return nil }
        return peers[peer]?.notice
    }

    /// Writes the notice on every control connection (idle after set-up, so it goes at once).
    public func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        guard !closed else { return }
        let body = notice.encode()
        var msg = [UInt8](repeating: 0, count: 4)
        for k in 0..<4 { msg[k] = UInt8(truncatingIfNeeded: body.count >> (8 * k)) }
        msg += body
        for p in peers.indices where peers[p] != nil && peers[p]!.fd >= 0 {
            try? SocketIO.writeAll(peers[p]!.fd, msg, deadline: .after(milliseconds: 100))
        }
    }

    /// The pair with `peer` is unusable: fail its requests, stop its QP. A peer whose abort notice
    /// came first is reported with that notice (naming the rank it blames).
    private func peerFailed(_ peer: Int, _ error: CCLError, abrupt: Bool = false) {
        guard peers[peer] != nil, peers[peer]!.failure == nil else { return }
        var e = error.with(rank: rank, peer: peer, peerAddress: peers[peer]!.address)
        if let n = peers[peer]!.notice, n.kind == .abort { e = n.error(at: rank) }
        peers[peer]!.failure = e
        if abrupt && brokenBy == nil { brokenBy = e }
        if peers[peer]!.saidGoodbye { Log.info(.net, "rank \(rank): \(e)") } else { Log.warn(.net, "rank \(rank): \(e)") }
        for i in peers[peer]!.sends + peers[peer]!.recvs where slots[Int(i)].state != .done { fail(slot: i, e) }
        peers[peer]!.outbox.removeAll()
        if let qp = peers[peer]!.qp { _ = cswccl_qp_to_error(qp) }
    }

    // MARK: closing

    public func close() {
        let wasAborted = abortSignal.isRaised
        abort("closed")
        lock.lock(); defer { lock.unlock() }
        if closed { return }
        closed = true
        // Say goodbye on every healthy pair and give the BYEs (and what was queued before them) a
        // moment to be acknowledged, so that peers can tell this from a crash.
        if !wasAborted, let cq {
            // Goodbyes that arrived already: no BYE back to a QP that is gone.
            _ = drainCQ(cq)
            for p in peers.indices where peers[p] != nil && peers[p]!.failure == nil && !peers[p]!.saidGoodbye && peers[p]!.fd >= 0 {
                peers[p]!.outbox.append(.control(.bye, tag: 0, a: 0, b: 0, c: 0))
                flush(peer: p)
            }
            let until = Deadline.after(milliseconds: 500)
            while !until.hasPassed && peers.contains(where: { $0 != nil && $0!.failure == nil && !$0!.saidGoodbye && ($0!.retired < $0!.posted || !$0!.outbox.isEmpty) }) {
                if !drainCQ(cq) { Sys.sleep(nanos: 50_000) }
            }
        }
        for p in peers.indices where peers[p] != nil {
            closeControl(p)
            if let qp = peers[p]!.qp { _ = cswccl_destroy_qp(qp) }
            if let mr = peers[p]!.poolMR { _ = cswccl_dereg_mr(mr) }
            peers[p]!.pool?.deallocate()
            for m in peers[p]!.unexpected { m.data?.deallocate() }
            peers[p]!.qp = nil
            peers[p]!.poolMR = nil
            peers[p]!.pool = nil
            peers[p]!.unexpected.removeAll()
            if peers[p]!.failure == nil { peers[p]!.failure = abortError() }
        }
        for (_, r) in regs { _ = cswccl_dereg_mr(r.mr) }
        regs.removeAll()
        if let cq { _ = cswccl_drain_cq_events(channel); _ = cswccl_ibv_destroy_cq(cq) }
        cq = nil
        _ = cswccl_ibv_destroy_comp_channel(channel)
        _ = cswccl_ibv_dealloc_pd(pd)
        _ = cswccl_ibv_close_device(ctx)
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
    }
}

// MARK: - state

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
        guard n >= VerbsTransport.headerBytes, let type = MessageType(rawValue: UInt64(littleEndian: buf.loadUnaligned(as: UInt64.self))) else {
            throw CCLError(.remoteError, "garbled message (\(n) bytes) from rank \(peer)", peer: peer)
        }
        let tag = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let a = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        let b = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        let c = UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
        var length = 0
        switch type {
        case .eager:
            guard a == UInt64(n - VerbsTransport.headerBytes) else {
                throw CCLError(.remoteError, "eager message from rank \(peer) says \(a) bytes but carries \(n - VerbsTransport.headerBytes)", peer: peer)
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
        w.u32(VerbsTransport.setupMagic); w.u32(qpn); w.u32(psn); w.u32(lid); w.u32(mtu); w.u32(eager)
        w.bytes.append(contentsOf: gid)
        return w.bytes
    }

    package static func decode(_ b: [UInt8]) throws(CCLError) -> VerbsSetup {
        var r = ByteReader(b)
        guard b.count == bytes, try r.u32() == VerbsTransport.setupMagic else { throw CCLError(.remoteError, "garbled queue-pair set-up message") }
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

package enum VerbsSlotState: UInt8 { case free, posted, awaitingCTS, writing, done, failed }

package struct VerbsSlot: RequestSlot {
    package var isDone: Bool { state == .done }
    package var generation: UInt32 = 0
    package var inUse = false
    package var isSend = false
    package var state: VerbsSlotState = .free
    package var peer: Int32 = -1
    package var tag: UInt64 = 0
    package var base: UnsafeMutableRawPointer?
    package var length = 0
    /// Registration held (large messages).
    package var reg = 0
    /// Receive: matched to an arrival (eager data or RTS); the CTS went out; the write landed.
    package var matched = false
    package var ctsSent = false
    package var rtsSeen = false
    package var dataArrived = false
    /// Send: sequence number of the final write, done once retired.
    package var completionSeq: UInt64 = 0

    package init() {}
    package init(generation: UInt32, inUse: Bool, isSend: Bool, state: VerbsSlotState, peer: Int32, tag: UInt64, base: UnsafeMutableRawPointer?, length: Int) {
        self.generation = generation; self.inUse = inUse; self.isSend = isSend; self.state = state
        self.peer = peer; self.tag = tag; self.base = base; self.length = length
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

package struct VerbsUnexpected {
    package var tag: UInt64
    package var length: Int
    /// Eager data (owned); nil for an RTS.
    package var data: UnsafeMutableRawPointer?
    package var isRTS: Bool
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

package struct VerbsPeer {
    package let rank: Int
    package var fd: Int32
    package var qp: UnsafeMutablePointer<ibv_qp>?
    package var qpn: UInt32 = 0
    package var pool: UnsafeMutableRawPointer?
    package var poolMR: UnsafeMutablePointer<ibv_mr>?
    package var eager = 0
    /// Send work requests posted and retired (sequence numbers), the last one signalled.
    package var posted: UInt64 = 0
    package var retired: UInt64 = 0
    package var lastSignaled: UInt64 = 0
    package var bounceHead = 0
    package var bounceUsed = 0
    package var bounceSeq: [UInt64]
    package var outbox: [OutOp] = []
    package var sends: [Int32] = []
    package var recvs: [Int32] = []
    package var unexpected: [VerbsUnexpected] = []
    /// Counted against `UnexpectedBudget`.
    package var unexpectedBytes = 0
    /// Arrivals held back in their receive buffers past the budget, in order (see `mustDefer`).
    package var deferred: [VerbsArrival] = []
    /// Clear-to-sends that arrived before their send was posted.
    package var grants: [Grant] = []
    package var failure: CCLError?
    package var saidGoodbye = false
    /// Bytes read from the control connection (notices), and the latest notice.
    package var controlIn: [UInt8] = []
    package var notice: Notice?

    /// The peer's control address (for errors).
    package let address: String

    package init(rank: Int, fd: Int32, address: String, bounceSlots: Int) {
        self.rank = rank
        self.fd = fd
        self.address = address
        bounceSeq = [UInt64](repeating: 0, count: bounceSlots)
    }
}
