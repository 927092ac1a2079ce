import Glibc
import Synchronization

/// The rendezvous service. It runs as a thread in the process that made the unique id (or in rank 0
/// when the id came from `SWCCL_COMM_ID`), collects one hello per rank, and answers everyone with
/// everyone's blob. Connections that fail the handshake are logged and dropped.
enum BootstrapRoot {
    static let helloMagic: UInt32 = 0x5357_4252  // "SWBR"
    static let version: UInt32 = 1

    /// Starts the root thread and returns once it is idle in its first `poll`. A program may fork right
    /// after `swcclGetUniqueId` (the C test does, as NCCL programs do): a thread caught half-way through
    /// its first use of the Swift runtime (type metadata, allocation of new generic types) would leave
    /// a lock held in the child. So every type the thread needs is instantiated here first, and the
    /// caller waits until the thread sleeps in the kernel holding nothing.
    static func start(listenFD: Int32, secret: [UInt8]) throws(CCLError) {
        warmUp(listenFD)
        let flag = UnsafeMutablePointer<Atomic<Bool>>.allocate(capacity: 1)
        flag.initialize(to: Atomic<Bool>(false))
        let flagAddress = UInt(bitPattern: flag)
        do { try Sys.startThread { run(listenFD: listenFD, secret: secret, ready: flagAddress) } }
        catch { flag.deallocate(); Sys.close(listenFD); throw CCLError.system("cannot start the bootstrap root thread", error) }
        let until = Deadline.after(milliseconds: 2000)
        while !flag.pointee.load(ordering: .acquiring) && !until.hasPassed { Sys.sleep(nanos: 100_000) }
        Sys.sleep(nanos: 1_000_000)  // from the flag to the poll syscall is a few instructions; allow them
        // The thread never touches the flag again; it is freed at exit of the process (a few bytes).
    }

    private static func warmUp(_ fd: Int32) {
        _ = try? SocketIO.waitFor(fd, events: Int16(POLLIN), deadline: .after(milliseconds: 0))
        var w = ByteWriter(); w.u8(0); w.u32(0); w.string(""); w.blob([1])
        var r = ByteReader(w.bytes); _ = try? r.u8(); _ = try? r.u32(); _ = try? r.string(); _ = try? r.blob()
        var m: [Int: Member] = [:]; m[0] = Member(fd: -1, payload: []); m.removeAll()
        _ = (0..<1).filter { m[$0] == nil }
        _ = CCLError(.remoteError, "").description
    }

    private struct Member { var fd: Int32; var payload: [UInt8] }

    private static func run(listenFD: Int32, secret: [UInt8], ready: UInt) {
        defer { Sys.close(listenFD) }
        var members: [Int: Member] = [:]
        var nranks = 0
        var deadline = Deadline.distantFuture  // until the first rank arrives: NCCL's root also waits indefinitely
        var timeoutMs = 0
        /// Answers every member: status 0 and every rank's payload, or the kind of the failure (the raw
        /// value of `CCLError.Kind`, so ranks report it as such) and its cause.
        func finish(error: String?, kind: CCLError.Kind = .remoteError) {
            for (_, m) in members {
                var w = ByteWriter()
                if let error { w.u8(UInt8(kind.rawValue)); w.string(error) } else {
                    w.u8(0)
                    for r in 0..<nranks { w.blob(members[r]!.payload) }
                }
                try? SocketIO.sendMessage(m.fd, w.bytes, deadline: .after(milliseconds: max(timeoutMs, 1000)))
                Sys.close(m.fd)
            }
        }
        UnsafeMutablePointer<Atomic<Bool>>(bitPattern: ready)!.pointee.store(true, ordering: .releasing)
        while nranks == 0 || members.count < nranks {
            let accepted: (Int32, SocketAddress)?
            do { accepted = try SocketIO.accept(listenFD, deadline: deadline) } catch {
                finish(error: "bootstrap root failed: \(error.cause)", kind: .systemError); return
            }
            guard let (fd, from) = accepted else {
                let missing = (0..<nranks).filter { members[$0] == nil }
                Log.warn(.bootstrap, "bootstrap root: ranks \(missing) did not arrive within \(timeoutMs) ms")
                finish(error: "ranks \(missing) of \(nranks) did not reach the bootstrap root within \(timeoutMs) ms", kind: .timeout)
                return
            }
            do {
                let msg = try SocketIO.receiveMessage(fd, max: 1 << 20, deadline: .after(milliseconds: 2000))
                var r = ByteReader(msg)
                guard try r.u32() == helloMagic else { throw CCLError(.remoteError, "bad magic") }
                guard try r.u32() == version else { throw CCLError(.remoteError, "bootstrap version mismatch") }
                var s: [UInt8] = []
                for _ in 0..<16 { s.append(try r.u8()) }
                guard s == secret else { throw CCLError(.remoteError, "wrong secret (a rank of another job?)") }
                let rank = Int(try r.u32()), size = Int(try r.u32()), t = Int(try r.u32())
                let payload = try r.blob()
                guard size > 0, rank >= 0, rank < size else { throw CCLError(.remoteError, "rank \(rank) of \(size) is out of range") }
                if nranks == 0 {
                    nranks = size
                    timeoutMs = t
                    deadline = .after(milliseconds: t)
                } else if size != nranks {
                    members[members.count + 1_000_000] = Member(fd: fd, payload: [])  // it gets the error too
                    finish(error: "rank \(rank) was started with \(size) ranks but others with \(nranks)", kind: .invalidUsage)
                    return
                }
                if members[rank] != nil {
                    members[members.count + 1_000_000] = Member(fd: fd, payload: [])
                    finish(error: "two processes claim rank \(rank)", kind: .invalidUsage)
                    return
                }
                members[rank] = Member(fd: fd, payload: payload)
            } catch {
                Log.warn(.bootstrap, "bootstrap root: rejected a connection from \(from): \(asCCLError(error).cause)")
                Sys.close(fd)
            }
        }
        finish(error: nil)
    }
}

/// One rank's side of the bootstrap: the rendezvous through the root, then an out-of-band channel (a star
/// through rank 0) for barriers and all-gathers of small blobs.
final class Bootstrap: @unchecked Sendable {
    static let oobMagic: UInt32 = 0x5357_424f  // "SWBO"
    let rank: Int
    let nranks: Int
    let secret: [UInt8]
    let timeoutMs: Int
    /// Rank 0: a connection to every other rank (index = rank); others: index 0 is the connection to rank 0.
    private var links: [Int32]
    /// Every rank's blob as given at rendezvous.
    private(set) var blobs: [[UInt8]] = []
    private let abortFD: Int32

    var deadline: Deadline { .after(milliseconds: timeoutMs) }

    init(id: UniqueID, rank: Int, nranks: Int, blob: [UInt8], timeoutMs: Int, abortFD: Int32) throws(CCLError) {
        self.rank = rank
        self.nranks = nranks
        self.timeoutMs = timeoutMs
        self.abortFD = abortFD
        let parts = try id.parsed()
        secret = parts.secret
        links = Array(repeating: -1, count: nranks)
        let deadline = Deadline.after(milliseconds: timeoutMs)
        if nranks == 1 { blobs = [blob]; return }

        if rank == 0 && parts.rankZeroRunsRoot {
            let l: (fd: Int32, address: SocketAddress)
            do { l = try SocketIO.listen(on: parts.root) } catch {
                throw CCLError(.systemError, "rank 0 cannot run the bootstrap root at \(parts.root) (SWCCL_COMM_ID / MASTER_PORT in use?): \(error.cause)", operation: "init", rank: 0)
            }
            try BootstrapRoot.start(listenFD: l.fd, secret: secret)
        }

        // Rank 0 listens for the out-of-band star before announcing itself.
        var oobListen: Int32 = -1
        var oobAddress = [UInt8](repeating: 0, count: SocketAddress.encodedSize)
        if rank == 0 {
            let l = try SocketIO.listen(on: try InterfaceChoice.local().address.withAnyPort)
            oobListen = l.fd
            oobAddress.withUnsafeMutableBytes { l.address.encode(into: $0.baseAddress!) }
        }
        defer { if oobListen >= 0 { Sys.close(oobListen) } }

        // Rendezvous.
        let rootFD: Int32
        do { rootFD = try SocketIO.connect(to: parts.root, deadline: deadline, abortFD: abortFD) } catch {
            throw error.with(operation: "init: reaching the bootstrap root", rank: rank, peerAddress: parts.root.description)
        }
        defer { Sys.close(rootFD) }
        var w = ByteWriter()
        w.u32(BootstrapRoot.helloMagic); w.u32(BootstrapRoot.version)
        w.bytes.append(contentsOf: secret)
        w.u32(UInt32(rank)); w.u32(UInt32(nranks)); w.u32(UInt32(clamping: timeoutMs))
        var inner = ByteWriter()
        inner.blob(oobAddress); inner.blob(blob)
        w.blob(inner.bytes)
        var reply: ByteReader
        do throws(CCLError) {
            try SocketIO.sendMessage(rootFD, w.bytes, deadline: deadline, abortFD: abortFD)
            // The root answers once every rank has arrived, or says who did not.
            reply = ByteReader(try SocketIO.receiveMessage(rootFD, deadline: Deadline.after(milliseconds: min(timeoutMs, Int(Int32.max)) + 2000), abortFD: abortFD))
            let status = try reply.u8()
            if status != 0 {
                throw CCLError(CCLError.Kind(rawValue: Int32(status)) ?? .remoteError, "bootstrap root: \(try reply.string())")
            }
        } catch {
            throw error.with(operation: "init: rendezvous", rank: rank, peerAddress: parts.root.description)
        }
        var rootOOB: SocketAddress?
        for r in 0..<nranks {
            var inner = ByteReader(try reply.blob())
            let oob = try inner.blob()
            if r == 0 && oob.count >= SocketAddress.encodedSize { rootOOB = oob.withUnsafeBytes { SocketAddress.decode(from: $0.baseAddress!) } }
            blobs.append(try inner.blob())
        }

        // Out-of-band star through rank 0.
        if rank == 0 {
            var missing = nranks - 1
            while missing > 0 {
                guard let (fd, from) = try SocketIO.accept(oobListen, deadline: deadline, abortFD: abortFD) else {
                    let absent = (1..<nranks).filter { links[$0] < 0 }
                    throw CCLError(.timeout, "ranks \(absent) did not open the out-of-band channel", operation: "init", rank: 0, peer: absent.first)
                }
                do {
                    var r = ByteReader(try SocketIO.receiveMessage(fd, max: 64, deadline: .after(milliseconds: 2000), abortFD: abortFD))
                    guard try r.u32() == Self.oobMagic else { throw CCLError(.remoteError, "bad magic") }
                    var s: [UInt8] = []
                    for _ in 0..<16 { s.append(try r.u8()) }
                    guard s == secret else { throw CCLError(.remoteError, "wrong secret") }
                    let peer = Int(try r.u32())
                    guard peer > 0, peer < nranks, links[peer] < 0 else { throw CCLError(.remoteError, "bad or duplicate rank \(peer)") }
                    try SocketIO.sendMessage(fd, [1], deadline: deadline, abortFD: abortFD)
                    links[peer] = fd
                    missing -= 1
                } catch {
                    Log.warn(.bootstrap, "rank 0: rejected an out-of-band connection from \(from): \(asCCLError(error).cause)")
                    Sys.close(fd)
                }
            }
        } else {
            guard let addr = rootOOB else { throw CCLError(.remoteError, "rank 0 published no out-of-band address", operation: "init", rank: rank, peer: 0) }
            do {
                let fd = try SocketIO.connect(to: addr, deadline: deadline, abortFD: abortFD)
                links[0] = fd
                var h = ByteWriter()
                h.u32(Self.oobMagic); h.bytes.append(contentsOf: secret); h.u32(UInt32(rank))
                try SocketIO.sendMessage(fd, h.bytes, deadline: deadline, abortFD: abortFD)
                _ = try SocketIO.receiveMessage(fd, max: 16, deadline: deadline, abortFD: abortFD)
            } catch {
                throw error.with(operation: "init: out-of-band channel", rank: rank, peer: 0, peerAddress: addr.description)
            }
        }
    }

    /// Every rank's `bytes`, indexed by rank. Blocks until all ranks call it, or the timeout.
    func allGather(_ bytes: [UInt8], deadline: Deadline? = nil) throws(CCLError) -> [[UInt8]] {
        if nranks == 1 { return [bytes] }
        let d = deadline ?? self.deadline
        if rank == 0 {
            var all = [bytes]
            for r in 1..<nranks {
                do { all.append(try SocketIO.receiveMessage(links[r], deadline: d, abortFD: abortFD)) }
                catch { throw error.with(operation: "out-of-band all-gather", rank: 0, peer: r) }
            }
            var w = ByteWriter()
            for b in all { w.blob(b) }
            for r in 1..<nranks {
                do { try SocketIO.sendMessage(links[r], w.bytes, deadline: d, abortFD: abortFD) }
                catch { throw error.with(operation: "out-of-band all-gather", rank: 0, peer: r) }
            }
            return all
        }
        do {
            try SocketIO.sendMessage(links[0], bytes, deadline: d, abortFD: abortFD)
            var r = ByteReader(try SocketIO.receiveMessage(links[0], deadline: d, abortFD: abortFD))
            var all: [[UInt8]] = []
            for _ in 0..<nranks { all.append(try r.blob()) }
            return all
        } catch {
            throw error.with(operation: "out-of-band all-gather", rank: rank, peer: 0)
        }
    }

    func barrier(deadline: Deadline? = nil) throws(CCLError) { _ = try allGather([], deadline: deadline) }

    func close() {
        for fd in links where fd >= 0 { Sys.close(fd) }
        links = links.map { _ in -1 }
    }

    deinit { close() }
}

/// What each rank tells the others at rendezvous.
struct RankInfo: Sendable {
    var rank: Int
    var pid: Int32
    var host: HostIdentity
    var transports: [(name: String, address: EndpointAddress)]

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(rank)); w.u32(UInt32(bitPattern: pid))
        host.encode(into: &w)
        w.u32(UInt32(transports.count))
        for t in transports { w.string(t.name); w.blob(t.address.bytes) }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(CCLError) -> RankInfo {
        var r = ByteReader(bytes)
        let rank = Int(try r.u32()), pid = Int32(bitPattern: try r.u32())
        let host = try HostIdentity.decode(&r)
        var ts: [(String, EndpointAddress)] = []
        for _ in 0..<Int(try r.u32()) {
            let name = try r.string()
            let addr = try r.blob(max: EndpointAddress.maxBytes)
            ts.append((name, EndpointAddress(addr)))
        }
        return RankInfo(rank: rank, pid: pid, host: host, transports: ts)
    }
}
