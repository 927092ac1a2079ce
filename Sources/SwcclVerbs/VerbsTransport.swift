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
    package static let backend = TransportBackend(
        name: "ib", unavailable: { VerbsDevices.ports.isEmpty ? VerbsDevices.unavailableReason : nil },
        alphaNanos: 5_000, betaNanosPerByte: 0.1, sleepsInKernel: true,
        summary: { VerbsDevices.summary },
        knobs: { [Knobs.ibDisable.info, Knobs.ibHCA.info, Knobs.ibGidIndex.info, Knobs.ibEagerBytes.info, Knobs.ibTimeout.info,
                  Knobs.ibRetryCount.info, Knobs.ibQueueDepth.info] },
        make: { (s) throws(CCLError) in try VerbsTransport(rank: s.rank, nranks: s.nranks, secret: s.secret) })
}

/// The RDMA verbs backend of the transport protocol (InfiniBand, RoCE; tested on Soft-RoCE): the
/// message engine (`MessageEngine`) over `VerbsWire`'s queue pairs.
///
/// Set-up: the rank listens on a TCP socket whose address it publishes at bootstrap (the same layout
/// as the TCP backend's). At `connect`, every pair opens one authenticated control connection
/// (`SocketMesh`, secret-checked hello), creates a reliable-connected queue pair, and exchanges over
/// it QP number, PSN, GID, LID, MTU and eager size; both move the QP to RTS and confirm. The control
/// connection then only watches the peer (and carries notices): a BYE on the queue pair followed by
/// end-of-file is a clean close; end-of-file without it is a crash. librdmacm is not needed.
package final class VerbsTransport: MessageTransport, @unchecked Sendable {
    package static let protocolVersion: UInt16 = 1
    package static let handshakeMagic: UInt32 = 0x5357_4349  // "SWCI"

    package let capabilities: TransportCapabilities
    package let localAddress: EndpointAddress
    package let port: VerbsPort

    package let rank: Int
    package let nranks: Int
    /// The id's secret until the rendezvous, then the session secret (set before `connect`).
    private var secret: [UInt8]
    package let eagerThreshold: Int
    package let queueDepth: Int

    private var listenFD: Int32
    @usableFromInline package let abortSignal: AbortSignal
    private var wakeFD: Int32 { abortSignal.wakeFD }
    private let lock = Lock()
    private let localGID: [UInt8]
    private let localLID: UInt16
    private let isRoCE: Bool
    private let maxCQE: Int
    private var engine: MessageEngine<VerbsWire>

    package init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding requested: Int = 4096) throws(CCLError) {
        // Receive ids carry the slot in 12 bits.
        let maxOutstanding = max(1, min(requested, 4096))
        guard let port = VerbsDevices.ports.first else {
            throw CCLError(.systemError, "no RDMA device for the verbs transport: \(VerbsDevices.unavailableReason)", rank: rank)
        }
        self.port = port
        self.rank = rank
        self.nranks = nranks
        self.secret = secret
        eagerThreshold = max(0, min(Knobs.ibEagerBytes.value, VerbsWire.maxEagerBytes))
        queueDepth = max(16, min(Knobs.ibQueueDepth.value, 4096))
        guard let c = VerbsDevices.open(port) else {
            throw CCLError(.systemError, "cannot open RDMA device \(port.device): \(Errno.current)", rank: rank)
        }
        var cleanup: [() -> Void] = [{ _ = cswccl_ibv_close_device(c) }]
        func fail(_ what: String) -> CCLError {
            let e = CCLError(.systemError, "\(port.device): \(what): \(Errno.current)", rank: rank)
            cleanup.reversed().forEach { $0() }
            return e
        }
        guard let pd = cswccl_ibv_alloc_pd(c) else { throw fail("ibv_alloc_pd") }
        cleanup.append { _ = cswccl_ibv_dealloc_pd(pd) }
        guard let ch = cswccl_ibv_create_comp_channel(c) else { throw fail("ibv_create_comp_channel") }
        cleanup.append { _ = cswccl_ibv_destroy_comp_channel(ch) }
        let asyncFD = cswccl_async_fd(c)
        guard asyncFD >= 0 else { throw fail("asynchronous event descriptor") }
        var da = ibv_device_attr()
        guard cswccl_ibv_query_device(c, &da) == 0 else { throw fail("ibv_query_device") }
        maxCQE = Int(da.max_cqe)
        var pa = ibv_port_attr()
        guard cswccl_ibv_query_port(c, UInt8(port.port), &pa) == 0 else { throw fail("ibv_query_port") }
        localLID = cswccl_port_lid(&pa)
        isRoCE = cswccl_port_is_ethernet(&pa) != 0
        let softDevice = port.device.hasPrefix("rxe") || port.device.hasPrefix("siw")
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
            name: "ib", eagerThreshold: eagerThreshold, maxMessageBytes: (queueDepth - 1) * VerbsWire.maxWriteBytes, oneSidedWrites: true,
            needsRegistration: true, maxOutstandingRequests: maxOutstanding, sameHostOnly: false,
            alphaNanos: Self.backend.alphaNanos, betaNanosPerByte: Self.backend.betaNanosPerByte)
        // Receive ids carry the slot in 12 bits and the generation in 20.
        engine = MessageEngine(core: MessageCore(rank: rank, nranks: nranks, maxOutstanding: maxOutstanding, generationMask: 0xf_ffff, abortSignal: abortSignal),
                               wire: VerbsWire(rank: rank, nranks: nranks, device: port.device, eagerThreshold: eagerThreshold, queueDepth: queueDepth,
                                               softDevice: softDevice, ctx: c, pd: pd, channel: ch, asyncFD: asyncFD))
        Log.info(.net, "rank \(rank): verbs on \(port), control socket \(l.address) (\(iface.name)), eager <= \(eagerThreshold) B, queue depth \(queueDepth)")
    }

    deinit { close() }

    @usableFromInline package func withEngine<R>(_ body: (inout MessageEngine<VerbsWire>) throws(CCLError) -> R) throws(CCLError) -> R {
        lock.lock(); defer { lock.unlock() }
        return try body(&engine)
    }

    /// From the rendezvous on, pairs authenticate with the session secret.
    package func useSessionSecret(_ secret: [UInt8]) { lock.withLock { self.secret = secret } }

    // MARK: connection setup

    package func connect(_ peerList: [PeerInfo], deadline: Deadline) throws(CCLError) {
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
            let want = max(1, fds.count) * (queueDepth + engine.wire.recvBuffers + 8)
            let cqe = min(want, maxCQE > 0 ? maxCQE : want)
            if cqe < want {
                Log.warn(.net, "rank \(rank): \(port.device) allows \(cqe) completion queue entries where \(want) could be outstanding; lower SWCCL_IB_QUEUE_DEPTH for this many peers")
            }
            guard let cq = cswccl_ibv_create_cq(engine.wire.ctx, Int32(min(cqe, Int(Int32.max))), engine.wire.channel) else {
                for list in fds.values { list.forEach { Sys.close($0) } }
                throw CCLError(.systemError, "\(port.device): ibv_create_cq(\(cqe)): \(Errno.current)")
            }
            engine.wire.cq = cq
            for (peer, list) in fds {
                let a = peerList.first { $0.rank == peer }.flatMap { ListenerAddress.decode($0.address, version: Self.protocolVersion)?.address.description } ?? "?"
                engine.wire.peers[peer] = VerbsPeer(rank: peer, fd: list[0], address: a, bounceSlots: engine.wire.sendSlots)
                engine.core.peers[peer].connected = true
            }
            for peer in fds.keys.sorted() { try setUp(peer: peer, deadline: deadline) }
            // Both sides at RTS: confirm on every control connection before any send.
            for peer in fds.keys.sorted() {
                let fd = engine.wire.peers[peer]!.fd
                try SocketIO.writeAll(fd, [0x52], deadline: deadline, abortFD: wakeFD)
            }
            for peer in fds.keys.sorted() {
                let fd = engine.wire.peers[peer]!.fd
                do throws(CCLError) {
                    let b = try SocketIO.read(fd, count: 1, deadline: deadline, abortFD: wakeFD)
                    guard b == [0x52] else { throw CCLError(.remoteError, "unexpected byte after queue-pair set-up") }
                } catch { throw error.with(peer: peer) }
            }
            guard cswccl_req_notify(cq) == 0 else { throw CCLError(.systemError, "ibv_req_notify_cq: \(Errno.current)") }
        } catch {
            throw error.with(operation: "connect", rank: rank)
        }
        engine.wire.pollSet = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: cswccl_comp_channel_fd(engine.wire.channel), events: Int16(POLLIN), revents: 0),
                   pollfd(fd: engine.wire.asyncFD, events: Int16(POLLIN), revents: 0)]
        for case let p? in engine.wire.peers { engine.wire.pollSet.append(pollfd(fd: p.fd, events: Int16(POLLIN), revents: 0)) }
    }

    /// One pair: buffers, QP, receives posted, addresses exchanged, QP to RTS.
    private func setUp(peer: Int, deadline: Deadline) throws(CCLError) {
        let pool = UnsafeMutableRawPointer.allocate(byteCount: (engine.wire.recvBuffers + engine.wire.sendSlots) * engine.wire.bufBytes, alignment: 4096)
        engine.wire.peers[peer]!.pool = pool
        guard let mr = cswccl_reg_mr(engine.wire.pd, pool, (engine.wire.recvBuffers + engine.wire.sendSlots) * engine.wire.bufBytes, 1) else {
            throw CCLError(.systemError, "\(port.device): registering bounce buffers: \(Errno.current)", peer: peer)
        }
        engine.wire.peers[peer]!.poolMR = mr
        var qpn: UInt32 = 0, inline: UInt32 = 0
        guard let qp = cswccl_create_rc_qp(engine.wire.pd, engine.wire.cq, UInt32(queueDepth), UInt32(engine.wire.recvBuffers + 4), UInt32(VerbsWire.headerBytes), &qpn, &inline) else {
            throw CCLError(.systemError, "\(port.device): ibv_create_qp: \(Errno.current)", peer: peer)
        }
        engine.wire.peers[peer]!.qp = qp
        engine.wire.peers[peer]!.qpn = qpn
        var psnBytes: UInt32 = 0
        try? withUnsafeMutableBytes(of: &psnBytes) { b throws(Errno) in try Sys.randomBytes(b.baseAddress!, 4) }
        let psn = psnBytes & 0xff_ffff
        let setup = VerbsSetup(qpn: qpn, psn: psn, lid: UInt32(localLID), mtu: UInt32(port.mtu), eager: UInt32(eagerThreshold), gid: localGID)
        let fd = engine.wire.peers[peer]!.fd
        do throws(CCLError) {
            try SocketIO.writeAll(fd, setup.encode(), deadline: deadline, abortFD: wakeFD)
            let m = try VerbsSetup.decode(try SocketIO.read(fd, count: VerbsSetup.bytes, deadline: deadline, abortFD: wakeFD))
            let (rqpn, rpsn, rlid, rmtu, reager, rgid) = (m.qpn, m.psn, m.lid, m.mtu, m.eager, m.gid)
            engine.wire.peers[peer]!.eager = min(eagerThreshold, Int(reager))
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
            for b in 0..<engine.wire.recvBuffers {
                let r = cswccl_post_recv(qp, WorkID.recv(peer: peer, index: b), pool + b * engine.wire.bufBytes, UInt32(engine.wire.bufBytes), lkey)
                guard r == 0 else { throw CCLError(.systemError, "ibv_post_recv: \(Errno(r))") }
            }
            Log.trace(.net, "rank \(rank): QP \(qpn) connected to rank \(peer) QP \(rqpn) GID \(VerbsDevices.gidText(rgid)) MTU \(mtu)")
        } catch { throw error.with(peer: peer) }
    }

    // MARK: memory

    package func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        lock.lock(); defer { lock.unlock() }
        if engine.wire.closed { throw abortSignal.error(rank: rank) }
        return try engine.wire.register(buffer)
    }

    package func deregister(_ region: MemoryRegion) {
        lock.lock(); defer { lock.unlock() }
        engine.wire.deregister(region)
    }

    // MARK: notices, closing

    /// Writes the notice on every control connection (idle after set-up, so it goes at once).
    package func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        guard !engine.wire.closed else { return }
        let body = notice.encode()
        var msg = [UInt8](repeating: 0, count: 4)
        for k in 0..<4 { msg[k] = UInt8(truncatingIfNeeded: body.count >> (8 * k)) }
        msg += body
        for p in engine.wire.peers.indices where engine.wire.peers[p] != nil && engine.wire.peers[p]!.fd >= 0 {
            try? SocketIO.writeAll(engine.wire.peers[p]!.fd, msg, deadline: .after(milliseconds: 100))
        }
    }

    package func close() {
        let wasAborted = abortSignal.isRaised
        abort("closed")
        lock.lock(); defer { lock.unlock() }
        engine.withWire { (wire, core) in wire.close(aborting: wasAborted, &core) }
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
    }
}
