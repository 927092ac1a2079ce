import SwcclSystem
import SwcclCore

/// Authenticated socket connections between one rank and each of its peers, as the TCP backend uses
/// for its data and the verbs backend for setting up and watching its queue pairs: the lower rank
/// connects to the higher one's listener (`nsocks` connections per pair) and opens each with a hello
/// — magic, protocol version, the communicator's 16-byte secret, both ranks, the socket index and the
/// communicator size — that the listener checks before answering `[magic, 0]`. The secret is the
/// session secret the bootstrap root gave the ranks that joined it. The listener serves all newcomers
/// at once (`HelloListener`): anything else that reaches it (a stranger, a wrong secret, a silent or
/// slow connection) is logged with its address and dropped without delaying the real peers, and the
/// rank keeps waiting for them until the deadline.
package struct SocketMesh {
    package let magic: UInt32
    package let version: UInt32
    package let secret: [UInt8]
    package let rank: Int
    package let nranks: Int
    package let nsocks: Int
    /// Readable when the communicator aborts: every wait of the set-up ends.
    package let wakeFD: Int32
    /// For logs: whose connections these are ("TCP", "verbs").
    package let owner: String

    package static let helloBytes = 8 + 16 + 20

    package init(magic: UInt32, version: UInt32, secret: [UInt8], rank: Int, nranks: Int, nsocks: Int, wakeFD: Int32, owner: String) {
        self.magic = magic; self.version = version; self.secret = secret; self.rank = rank; self.nranks = nranks
        self.nsocks = nsocks; self.wakeFD = wakeFD; self.owner = owner
    }

    package func hello(to peer: Int, socket: Int) -> [UInt8] {
        var w = ByteWriter()
        w.u32(magic)
        w.u32(version)
        w.bytes.append(contentsOf: secret)
        w.u32(UInt32(rank)); w.u32(UInt32(peer)); w.u32(UInt32(socket)); w.u32(UInt32(nsocks)); w.u32(UInt32(nranks))
        return w.bytes
    }

    /// Connects to every rank of `higher` and accepts every rank of `lower` on `listenFD`; returns each
    /// peer's descriptors by socket index. On failure every descriptor opened so far is closed.
    package func establish(listenFD: Int32, higher: [(rank: Int, address: SocketAddress)], lower: Set<Int>,
                   deadline: Deadline) throws(CCLError) -> [Int: [Int32]] {
        var fds: [Int: [Int32]] = [:]
        for p in lower { fds[p] = [Int32](repeating: -1, count: nsocks) }
        for p in higher { fds[p.rank] = [Int32](repeating: -1, count: nsocks) }
        do throws(CCLError) {
            for (peer, addr) in higher.sorted(by: { $0.rank < $1.rank }) {
                for s in 0..<nsocks {
                    let fd = try SocketIO.connect(to: addr, deadline: deadline, abortFD: wakeFD)
                    do throws(CCLError) {
                        try SocketIO.writeAll(fd, hello(to: peer, socket: s), deadline: deadline, abortFD: wakeFD)
                        guard isAck(try SocketIO.read(fd, count: 8, deadline: deadline, abortFD: wakeFD)) else {
                            throw CCLError(.remoteError, "peer refused the handshake (different communicator or version)")
                        }
                    } catch {
                        Sys.close(fd)
                        throw error.with(peer: peer, peerAddress: addr.description)
                    }
                    fds[peer]![s] = fd
                }
            }
            // Every newcomer is served at once, so strangers (silent, slow, garbage) delay nobody.
            var listener = HelloListener(listenFD: listenFD, wakeFD: wakeFD, owner: "rank \(rank): \(owner) listener")
            defer { listener.closeAll() }
            var expected = lower.count * nsocks
            while expected > 0 {
                let event = try listener.next(until: deadline) { b in
                    judge(b) { from, s in lower.contains(from) && fds[from]![s] < 0 }
                }
                guard case .hello(let fd, let from, let bytes) = event else {
                    let missing = lower.sorted().filter { fds[$0]!.contains(-1) }
                    throw CCLError(.timeout, "ranks \(missing) did not connect before the deadline", peer: missing.first)
                }
                guard let f = Self.helloFields(bytes) else { Sys.close(fd); continue }  // `judge` accepted it: cannot happen
                let (peer, s) = (f.from, f.socket)
                var w = ByteWriter(); w.u32(magic); w.u32(0)
                do throws(CCLError) { try SocketIO.writeAll(fd, w.bytes, deadline: deadline, abortFD: wakeFD) } catch {
                    Sys.close(fd)
                    throw error.with(peer: peer, peerAddress: from.description)
                }
                Log.trace(.net, "rank \(rank): \(owner) connection \(s) from rank \(peer) at \(from)")
                fds[peer]![s] = fd
                expected -= 1
            }
        } catch {
            for list in fds.values { for fd in list where fd >= 0 { Sys.close(fd) } }
            throw error
        }
        return fds
    }

    /// The listener's answer to a hello: `[magic, 0]`.
    package func isAck(_ b: [UInt8]) -> Bool {
        var r = ByteReader(b)
        return b.count == 8 && (try? r.u32()) == magic && (try? r.u32()) == 0
    }

    /// The fields after the secret of a complete hello: who sends it, to whom, which socket of how
    /// many, and the communicator's size.
    package static func helloFields(_ b: [UInt8]) -> (from: Int, to: Int, socket: Int, nsocks: Int, size: Int)? {
        guard b.count >= helloBytes else { return nil }
        var r = ByteReader(Array(b[24..<helloBytes]))
        guard let from = try? r.u32(), let to = try? r.u32(), let s = try? r.u32(), let n = try? r.u32(), let size = try? r.u32() else { return nil }
        return (Int(from), Int(to), Int(s), Int(n), Int(size))
    }

    /// Checks a newcomer's hello as its bytes arrive: magic and version, then the secret, then that it
    /// names us and a socket we still need (`wanted(from, socket)`, asked only for a rank below this
    /// communicator's size and a socket below `nsocks`).
    package func judge(_ b: [UInt8], wanted: (_ from: Int, _ socket: Int) -> Bool) -> HelloListener.Verdict {
        if b.count < 8 { return .need(8) }
        var r = ByteReader(b)
        let theirMagic = (try? r.u32()) ?? 0, theirVersion = (try? r.u32()) ?? 0
        guard theirMagic == magic else { return .reject("bad magic 0x\(String(theirMagic, radix: 16))") }
        guard theirVersion == version else { return .reject("protocol version \(theirVersion), expected \(version)") }
        if b.count < 24 { return .need(24) }
        guard secretsEqual(b[8..<24], secret) else { return .reject("wrong communicator secret") }
        if b.count < Self.helloBytes { return .need(Self.helloBytes) }
        guard let (from, to, s, n, size) = Self.helloFields(b), to == rank, size == nranks, n == nsocks,
              from < nranks, s < nsocks, wanted(from, s) else {
            let f = Self.helloFields(b)
            return .reject("unexpected hello (from \(f?.from ?? -1) to \(f?.to ?? -1), socket \(f?.socket ?? -1)/\(f?.nsocks ?? -1), size \(f?.size ?? -1))")
        }
        return .hello(Self.helloBytes)
    }
}

/// The address of a listener that `SocketMesh` connects to, as TCP and verbs publish it: a protocol
/// version byte, the socket count per pair, then the socket address.
package enum ListenerAddress {
    package static func encode(version: UInt16, nsocks: Int, address: SocketAddress) -> EndpointAddress {
        var addr = [UInt8](repeating: 0, count: 2 + SocketAddress.encodedSize)
        addr[0] = UInt8(version)
        addr[1] = UInt8(nsocks)
        addr.withUnsafeMutableBytes { address.encode(into: $0.baseAddress! + 2) }
        return EndpointAddress(addr)
    }

    package static func decode(_ address: EndpointAddress, version: UInt16) -> (nsocks: Int, address: SocketAddress)? {
        guard address.bytes.count >= 2 + SocketAddress.encodedSize, UInt16(address.bytes[0]) == version else { return nil }
        guard let a = address.bytes.withUnsafeBytes({ SocketAddress.decode(from: $0.baseAddress! + 2) }) else { return nil }
        return (Int(address.bytes[1]), a)
    }
}
