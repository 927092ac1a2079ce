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
    package static let backend = TransportBackend(
        name: "tcp", alphaNanos: 25_000, betaNanosPerByte: 0.9, sleepsInKernel: true,
        listenAddress: { decode($0)?.address },
        summary: { "tcp: available" },
        knobs: { [Knobs.nsocksPerThread.info, Knobs.socketNthreads.info, Knobs.tcpEagerBytes.info] },
        make: { (s) throws(CCLError) in try TCPTransport(rank: s.rank, nranks: s.nranks, secret: s.secret) })
}

/// The TCP backend of the transport protocol: the message engine (`MessageEngine`) over `TCPWire`.
/// This class sets the endpoint up (a listener, then `nsocks` authenticated connections per pair, the
/// lower rank connecting: `SocketMesh`), sends notices and closes; requests are the engine's.
package final class TCPTransport: MessageTransport, @unchecked Sendable {
    package static let protocolVersion: UInt16 = 1
    package static let handshakeMagic: UInt32 = 0x5357_4354  // "SWCT"

    package let capabilities: TransportCapabilities
    package let localAddress: EndpointAddress

    package let rank: Int
    package let nranks: Int
    /// The id's secret until the rendezvous, then the session secret (set before `connect`).
    private var secret: [UInt8]
    package let nsocks: Int
    private var listenFD: Int32
    private let listenAddress: SocketAddress
    @usableFromInline package let abortSignal: AbortSignal
    private let lock = Lock()
    private var engine: MessageEngine<TCPWire>

    package init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding: Int = 4096) throws(CCLError) {
        self.rank = rank
        self.nranks = nranks
        self.secret = secret
        let perThread = Knobs.nsocksPerThread.value, threads = Knobs.socketNthreads.value
        guard perThread >= 1, threads >= 1, perThread <= 64, threads <= 64, perThread * threads <= 64 else {
            throw CCLError.invalidArgument("SWCCL_NSOCKS_PERTHREAD (\(perThread)) x SWCCL_SOCKET_NTHREADS (\(threads)) must be between 1 and 64")
        }
        nsocks = perThread * threads
        let eagerThreshold = max(0, min(Knobs.tcpEagerBytes.value, TCPWire.maxEagerBytes))
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
        engine = MessageEngine(core: MessageCore(rank: rank, nranks: nranks, maxOutstanding: maxOutstanding, abortSignal: abortSignal),
                               wire: TCPWire(rank: rank, nranks: nranks, nsocks: nsocks, eagerThreshold: eagerThreshold, wakeFD: abortSignal.wakeFD))
        Log.info(.net, "rank \(rank): TCP listening on \(iface.name) \(l.address), \(nsocks) socket(s) per peer, eager <= \(eagerThreshold) B")
    }

    deinit { close() }

    @usableFromInline package func withEngine<R>(_ body: (inout MessageEngine<TCPWire>) throws(CCLError) -> R) throws(CCLError) -> R {
        lock.lock(); defer { lock.unlock() }
        return try body(&engine)
    }

    /// From the rendezvous on, pairs authenticate with the session secret.
    package func useSessionSecret(_ secret: [UInt8]) { lock.withLock { self.secret = secret } }

    // MARK: connection setup

    package static func decode(_ address: EndpointAddress) -> (nsocks: Int, address: SocketAddress)? {
        ListenerAddress.decode(address, version: protocolVersion)
    }

    package func connect(_ peerList: [PeerInfo], deadline: Deadline) throws(CCLError) {
        var remote: [Int: SocketAddress] = [:]
        var made: [(Int, SocketAddress)] = []
        for p in peerList where p.rank != rank {
            guard let (n, addr) = Self.decode(p.address) else {
                throw CCLError(.remoteError, "peer published an unreadable TCP address (version mismatch?)", operation: "connect", rank: rank, peer: p.rank)
            }
            guard n == nsocks else {
                throw CCLError(.invalidUsage, "peer uses \(n) sockets per peer and this rank \(nsocks): set SWCCL_NSOCKS_PERTHREAD and SWCCL_SOCKET_NTHREADS alike on every rank", operation: "connect", rank: rank, peer: p.rank)
            }
            made.append((p.rank, addr))
            if p.rank > rank { remote[p.rank] = addr }
        }
        let mesh = SocketMesh(magic: Self.handshakeMagic, version: UInt32(Self.protocolVersion), secret: lock.withLock { secret }, rank: rank,
                              nranks: nranks, nsocks: nsocks, wakeFD: abortSignal.wakeFD, owner: "TCP")
        let fds: [Int: [Int32]]
        do throws(CCLError) {
            fds = try mesh.establish(listenFD: listenFD, higher: remote.map { ($0.key, $0.value) },
                                     lower: Set(peerList.filter { $0.rank < rank }.map(\.rank)), deadline: deadline)
        } catch {
            throw error.with(operation: "connect", rank: rank)
        }
        lock.withLock {
            engine.withWire { (wire, core) in
                for (peer, addr) in made {
                    wire.peers[peer] = TCPPeer(rank: peer, address: addr, nsocks: nsocks)
                    core.peers[peer].connected = true
                }
                for (peer, list) in fds { for (s, fd) in list.enumerated() { wire.peers[peer]!.socks[s].fd = fd } }
                wire.rebuildPollSet()
            }
        }
        Sys.close(listenFD)
        listenFD = -1
    }

    /// Takes `fds` (socket index order) as the connections to `peer`, as if `connect` had made them:
    /// what the fuzz harness (`WireFuzzing.tcpStream`) uses to feed this rank's reader arbitrary bytes
    /// through one end of a socket pair. Call before anything else, once per peer.
    package func attach(peer: Int, fds: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        engine.withWire { (wire, core) in
            precondition(peer != rank && peer >= 0 && peer < nranks && fds.count == nsocks && wire.peers[peer] == nil)
            wire.peers[peer] = TCPPeer(rank: peer, address: listenAddress, nsocks: nsocks)
            core.peers[peer].connected = true
            for (s, fd) in fds.enumerated() { wire.peers[peer]!.socks[s].fd = fd }
            wire.rebuildPollSet()
        }
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
    }

    /// Why the connections to `peer` failed, if they did (the fuzz harness reports it: a peer lost
    /// without a notice fails the requests only after the grace).
    package func peerFailure(_ peer: Int) -> CCLError? {
        (try? withEngine { (e) throws(CCLError) in peer >= 0 && peer < nranks ? e.core.peers[peer].failure : nil }) ?? nil
    }

    // MARK: notices, closing

    /// Queues the notice on every healthy control stream at the next frame boundary (ahead of
    /// everything not yet started); an abort notice is pushed out before this returns.
    package func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        engine.withWire { (wire, core) in wire.announce(notice, &core) }
    }

    package func close() {
        let wasAborted = abortSignal.isRaised
        abort("closed")
        lock.lock(); defer { lock.unlock() }
        engine.withWire { (wire, core) in
            if !wire.closed { wire.close(aborting: wasAborted, &core) }
        }
        if listenFD >= 0 { Sys.close(listenFD); listenFD = -1 }
        // The abort eventfd stays open until deinit: abort() may still signal it from another thread.
    }
}
