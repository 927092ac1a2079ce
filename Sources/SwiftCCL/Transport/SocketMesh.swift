/// Authenticated socket connections between one rank and each of its peers, as the TCP backend uses
/// for its data and the verbs backend for setting up and watching its queue pairs: the lower rank
/// connects to the higher one's listener (`nsocks` connections per pair) and opens each with a hello
/// — magic, protocol version, the communicator's 16-byte secret, both ranks, the socket index and the
/// communicator size — that the listener checks before answering `[magic, 0]`. Anything else that
/// reaches the listener (a stranger, a wrong secret, a silent connection) is logged and dropped, and
/// the rank keeps waiting for its real peers until the deadline.
struct SocketMesh {
    let magic: UInt32
    let version: UInt32
    let secret: [UInt8]
    let rank: Int
    let nranks: Int
    let nsocks: Int
    /// Readable when the communicator aborts: every wait of the set-up ends.
    let wakeFD: Int32
    /// For logs: whose connections these are ("TCP", "verbs").
    let owner: String

    static let helloBytes = 8 + 16 + 20

    func hello(to peer: Int, socket: Int) -> [UInt8] {
        var w = ByteWriter()
        w.u32(magic)
        w.u32(version)
        w.bytes.append(contentsOf: secret)
        w.u32(UInt32(rank)); w.u32(UInt32(peer)); w.u32(UInt32(socket)); w.u32(UInt32(nsocks)); w.u32(UInt32(nranks))
        return w.bytes
    }

    /// Connects to every rank of `higher` and accepts every rank of `lower` on `listenFD`; returns each
    /// peer's descriptors by socket index. On failure every descriptor opened so far is closed.
    func establish(listenFD: Int32, higher: [(rank: Int, address: SocketAddress)], lower: Set<Int>,
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
                        var r = ByteReader(try SocketIO.read(fd, count: 8, deadline: deadline, abortFD: wakeFD))
                        guard try r.u32() == magic, try r.u32() == 0 else {
                            throw CCLError(.remoteError, "peer refused the handshake (different communicator or version)")
                        }
                    } catch {
                        Sys.close(fd)
                        throw error.with(peer: peer, peerAddress: addr.description)
                    }
                    fds[peer]![s] = fd
                }
            }
            var expected = lower.count * nsocks
            while expected > 0 {
                guard let (fd, from) = try SocketIO.accept(listenFD, deadline: deadline, abortFD: wakeFD) else {
                    let missing = lower.sorted().filter { fds[$0]!.contains(-1) }
                    throw CCLError(.timeout, "ranks \(missing) did not connect before the deadline", peer: missing.first)
                }
                if let (peer, s) = acceptHello(fd, from: from, lower: lower, fds: fds, deadline: deadline) {
                    fds[peer]![s] = fd
                    expected -= 1
                } else {
                    Sys.close(fd)
                }
            }
        } catch {
            for list in fds.values { for fd in list where fd >= 0 { Sys.close(fd) } }
            throw error
        }
        return fds
    }

    /// Checks a newcomer's hello: magic, version, secret, and that it names us and a socket we still need.
    private func acceptHello(_ fd: Int32, from: SocketAddress, lower: Set<Int>, fds: [Int: [Int32]], deadline: Deadline) -> (Int, Int)? {
        // A stranger gets at most a short while to speak, so a silent one cannot stall setup.
        let shortDeadline = min(deadline, Deadline.after(milliseconds: 2000))
        do throws(CCLError) {
            var r = ByteReader(try SocketIO.read(fd, count: Self.helloBytes, deadline: shortDeadline, abortFD: wakeFD))
            let theirMagic = try r.u32(), theirVersion = try r.u32()
            guard theirMagic == magic else { throw CCLError(.remoteError, "bad magic 0x\(String(theirMagic, radix: 16))") }
            guard theirVersion == version else { throw CCLError(.remoteError, "protocol version \(theirVersion), expected \(version)") }
            var theirSecret: [UInt8] = []
            for _ in 0..<16 { theirSecret.append(try r.u8()) }
            guard theirSecret == secret else { throw CCLError(.remoteError, "wrong communicator secret") }
            let from = Int(try r.u32()), to = Int(try r.u32()), s = Int(try r.u32()), n = Int(try r.u32()), size = Int(try r.u32())
            guard to == rank, size == nranks, n == nsocks, lower.contains(from), s >= 0, s < nsocks, fds[from]![s] < 0 else {
                throw CCLError(.remoteError, "unexpected hello (from \(from) to \(to), socket \(s)/\(n), size \(size))")
            }
            var w = ByteWriter(); w.u32(magic); w.u32(0)
            try SocketIO.writeAll(fd, w.bytes, deadline: shortDeadline, abortFD: wakeFD)
            return (from, s)
        } catch {
            Log.warn(.net, "rank \(rank): \(owner) listener rejected a connection from \(from): \(error.cause)")
            return nil
        }
    }
}
