import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclTCP
import SwcclSHM
import SwcclVerbs
import SwiftCCL

/// One rank of a bare transport, bootstrapped but without a communicator: what the conformance suite
/// drives. `init` runs the rendezvous (addresses exchanged), `connect` establishes the pairs.
public final class TransportTestbed: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let transport: any Transport
    public let timeoutMs: Int
    private let bootstrap: Bootstrap
    private let peers: [PeerInfo]
    private let wakeFD: Int32

    public init(backend: String, id: UniqueID, rank: Int, size: Int, timeoutMs: Int) throws(CCLError) {
        guard let make = TestTransports.named(backend)?.make else {
            throw CCLError.invalidArgument("no transport \(backend) (known: \(TestTransports.all.map(\.name).joined(separator: ", ")))")
        }
        self.rank = rank
        self.size = size
        self.timeoutMs = timeoutMs
        let secret = try id.parsed().secret
        transport = try make(TransportSetup(rank: rank, nranks: size, secret: secret))
        do { wakeFD = try Sys.eventFD() } catch { throw CCLError.system("eventfd", error) }
        let me = RankInfo(rank: rank, pid: Sys.getpid(), host: .local, transports: [(backend, transport.localAddress)])
        bootstrap = try Bootstrap(id: id, rank: rank, nranks: size, blob: me.encode(), timeoutMs: timeoutMs, abortFD: wakeFD)
        transport.useSessionSecret(bootstrap.secret)
        var list: [PeerInfo] = []
        for info in try RankInfo.decodeAll(bootstrap.blobs) where info.rank != rank {
            guard let t = info.transports.first else { throw CCLError(.remoteError, "rank \(info.rank) published no transport", peer: info.rank) }
            list.append(PeerInfo(rank: info.rank, address: t.address, host: info.host))
        }
        peers = list
    }

    deinit { bootstrap.close(); Sys.close(wakeFD) }

    public func connect() throws(CCLError) {
        try transport.connect(peers, deadline: .after(milliseconds: timeoutMs))
    }

    /// The listening address of a TCP peer as `host:port` (for tests that play a stranger), else nil.
    public func socketAddress(of peer: Int) -> String? {
        guard let p = peers.first(where: { $0.rank == peer }), let d = TCPTransport.decode(p.address) else { return nil }
        return d.address.description
    }

    /// Out-of-band barrier through the bootstrap channel.
    public func barrier() throws(CCLError) { try bootstrap.barrier() }

    public var deadline: Deadline { .after(milliseconds: timeoutMs) }
}

/// A raw client socket for conformance tests that must misbehave on purpose (strangers, garbage).
public enum RawSocket {
    /// Connects to `host:port`, writes `bytes`, and closes after `holdMs`. Errors are ignored: the point
    /// is what the other side does.
    public static func sendAndClose(to address: String, _ bytes: [UInt8], holdMs: Int = 100) {
        guard let a = SocketAddress.parse(address),
              let fd = try? SocketIO.connect(to: a, deadline: .after(milliseconds: 2000)) else { return }
        if !bytes.isEmpty { try? SocketIO.writeAll(fd, bytes, deadline: .after(milliseconds: 1000)) }
        if holdMs > 0 { Sys.sleep(nanos: UInt64(holdMs) * 1_000_000) }
        Sys.close(fd)
    }

    /// Connects to `host:port` and writes `bytes`, leaving the connection open (a stranger that holds
    /// a connection); nil if it cannot connect. Close it with `close`.
    public static func open(to address: String, _ bytes: [UInt8] = [], connectMs: Int = 1000) -> Int32? {
        guard let a = SocketAddress.parse(address),
              let fd = try? SocketIO.connect(to: a, deadline: .after(milliseconds: connectMs)) else { return nil }
        if !bytes.isEmpty { try? SocketIO.writeAll(fd, bytes, deadline: .after(milliseconds: 500)) }
        return fd
    }

    public static func close(_ fd: Int32) { Sys.close(fd) }

    /// A well-formed bootstrap hello (length-prefixed) with the given secret, claiming `rank` of `size`.
    /// With `infoRank`, its rank information says that rank instead and offers a TCP endpoint.
    public static func bootstrapHello(secret: [UInt8], rank: Int, size: Int, infoRank: Int? = nil) -> [UInt8] {
        var transports: [(name: String, address: EndpointAddress)] = []
        if infoRank != nil {
            var tcp = [UInt8](repeating: 0, count: 2 + SocketAddress.encodedSize)
            tcp[0] = UInt8(TCPTransport.protocolVersion); tcp[1] = 1
            tcp.withUnsafeMutableBytes { SocketAddress.parse("127.0.0.1:9")!.encode(into: $0.baseAddress! + 2) }
            transports.append(("tcp", EndpointAddress(tcp)))
        }
        let hello = Bootstrap.encodeHello(secret: secret, rank: rank, nranks: size, timeoutMs: 60_000,
                                          oobAddress: [UInt8](repeating: 0, count: SocketAddress.encodedSize),
                                          blob: RankInfo(rank: infoRank ?? rank, pid: 1, host: .local, transports: transports).encode())
        var framed = ByteWriter(); framed.blob(hello)
        return framed.bytes
    }

    /// Plays a rank with a forged hello (`bootstrapHello`) as far as a real one goes in the bootstrap:
    /// waits for the root's answer and opens the out-of-band channel to rank 0 with the session secret
    /// the answer gave it. The connections to close when done, or nil if the root could not be reached
    /// or did not admit it.
    public static func forgeRank(at address: String, secret: [UInt8], rank: Int, size: Int, infoRank: Int? = nil,
                                 timeoutMs: Int = 5000) -> [Int32]? {
        guard let fd = open(to: address, bootstrapHello(secret: secret, rank: rank, size: size, infoRank: infoRank), connectMs: 20) else { return nil }
        let deadline = Deadline.after(milliseconds: timeoutMs)
        guard let reply = try? SocketIO.receiveMessage(fd, max: Bootstrap.maxAnswerBytes(nranks: size), deadline: deadline),
              case .admitted(let session, let oob?, _)? = try? Bootstrap.parseAnswer(reply, nranks: size),
              let o = try? SocketIO.connect(to: oob, deadline: deadline) else {
            Sys.close(fd)
            return nil
        }
        try? SocketIO.sendMessage(o, Bootstrap.encodeOOBHello(secret: session, rank: rank), deadline: deadline)
        _ = try? SocketIO.receiveMessage(o, max: 16, deadline: deadline)
        return [fd, o]
    }

    /// A well-formed hello for rank 0's out-of-band listener with the given secret, claiming `rank`.
    public static func outOfBandHello(secret: [UInt8], rank: Int) -> [UInt8] {
        var framed = ByteWriter(); framed.blob(Bootstrap.encodeOOBHello(secret: secret, rank: rank))
        return framed.bytes
    }

    /// A well-formed TCP hello with the given secret, claiming to be `from` for `to`.
    public static func tcpHello(secret: [UInt8], from: Int, to: Int, nranks: Int) -> [UInt8] {
        var w = ByteWriter()
        w.u32(TCPTransport.handshakeMagic)
        w.u32(UInt32(TCPTransport.protocolVersion))
        w.bytes.append(contentsOf: secret)
        w.u32(UInt32(from)); w.u32(UInt32(to)); w.u32(0); w.u32(1); w.u32(UInt32(nranks))
        return w.bytes
    }
}

extension UniqueID {
    /// The root address in text, for tests that probe the bootstrap root.
    public var rootAddress: String? { try? parsed().root.description }
    /// The id's secret (tests that forge hellos with it, or with one derived as a stranger could).
    public var secretBytes: [UInt8] { (try? parsed().secret) ?? [] }
}
