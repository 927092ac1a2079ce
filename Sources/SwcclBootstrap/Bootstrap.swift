import Glibc
import Synchronization
import SwcclSystem
import SwcclCore

/// The rendezvous service. It runs as a thread in the process that made the unique id (or in rank 0
/// when the id came from `SWCCL_COMM_ID`, or in the new rank 0 of a shrink), collects one hello per
/// rank, and answers everyone with everyone's blob and a fresh random session secret — or with a
/// verdict naming the rank at fault.
///
/// It serves every connection at once (`HelloListener`): strangers, silent or not, cost the ranks
/// nothing and are dropped with their address logged. It also watches the ranks that have arrived: one
/// that closes its connection before everyone is there (it failed, exited or crashed) ends the
/// rendezvous at once with a verdict naming it, rather than at the timeout.
package enum BootstrapRoot {
    package static let helloMagic: UInt32 = 0x5357_4252  // "SWBR"
    /// 2: the answer carries the session secret, and a failure the culprit rank.
    package static let version: UInt32 = 2
    /// Largest hello the root reads (a rank's `RankInfo` is a few hundred bytes); a stranger can make
    /// it hold at most the 28 bytes of the fixed header before its secret has been checked.
    package static let maxHelloBytes = 256 << 10
    package static let headerBytes = 4 + 4 + 4 + 16

    /// A root running in this process: a rank of this process waits, before its init returns, until
    /// the root has delivered its verdict to every rank (else the process could exit first and the
    /// others would see only a closed connection).
    package final class State: Sendable {
        package let secret: [UInt8]
        /// The secret may be known outside the job (derived without a job secret): errors and logs say
        /// that a stranger may be the one who joined.
        package let weak: Bool
        /// The process running the thread: a child forked after `swcclGetUniqueId` inherits this record
        /// but not the thread, and must not wait for it.
        package let pid = Sys.getpid()
        package let started = Atomic<Bool>(false)
        package let delivered = Atomic<Bool>(false)
        package init(secret: [UInt8], weak: Bool) { self.secret = secret; self.weak = weak }
    }
    private static let running = Mutex<[State]>([])

    /// Starts the root thread and returns once it is idle in its first `poll`. A program may fork right
    /// after `swcclGetUniqueId` (the C test does, as NCCL programs do): a thread caught half-way through
    /// its first use of the Swift runtime (type metadata, allocation of new generic types) would leave
    /// a lock held in the child. So every type the thread needs is instantiated here first, and the
    /// caller waits until the thread sleeps in the kernel holding nothing.
    package static func start(listenFD: Int32, secret: [UInt8], weakSecret: Bool = false) throws(CCLError) {
        warmUp(secret)
        let state = State(secret: secret, weak: weakSecret)
        running.withLock { $0.append(state) }
        do { try Sys.startThread { run(listenFD: listenFD, state: state) } }
        catch {
            running.withLock { $0.removeAll { $0 === state } }
            Sys.close(listenFD)
            throw CCLError.system("cannot start the bootstrap root thread", error)
        }
        let until = Deadline.after(milliseconds: 2000)
        while !state.started.load(ordering: .acquiring) && !until.hasPassed { Sys.sleep(nanos: 100_000) }
        Sys.sleep(nanos: 1_000_000)  // from the flag to the poll syscall is a few instructions; allow them
    }

    /// Waits (at most until `deadline`) until a root of this process serving `secret` has delivered its
    /// verdict to every rank; returns at once when there is none.
    package static func waitUntilDelivered(secret: [UInt8], deadline: Deadline) {
        let me = Sys.getpid()
        guard let state = running.withLock({ $0.first { $0.secret == secret && $0.pid == me } }) else { return }
        while !state.delivered.load(ordering: .acquiring) && !deadline.hasPassed { Sys.sleep(nanos: 200_000) }
    }

    private static func warmUp(_ secret: [UInt8]) {
        var listener = HelloListener(listenFD: -1, owner: "bootstrap root")
        _ = try? listener.next(until: .after(milliseconds: 0), watch: [-1]) { judge($0, secret: secret) }
        listener.closeAll()
        var w = ByteWriter(); w.u8(0); w.u32(0); w.string(""); w.blob([1])
        var r = ByteReader(w.bytes); _ = try? r.u8(); _ = try? r.u32(); _ = try? r.string(); _ = try? r.blob()
        _ = judge(w.bytes, secret: secret)
        _ = try? parseHello(w.bytes)
        _ = encodeRefusal(kind: .remoteError, cause: "", culprit: 0)
        _ = encodeAnswer(session: [], payloads: [[]])
        var members: [Member] = [Member(fd: -1, rank: 0, from: SocketAddress.parse("127.0.0.1:1")!, payload: [])]
        var byRank: [Int: Int] = [:]; byRank[0] = 0; byRank.removeAll()
        _ = (0..<1).filter { byRank[$0] == nil }
        deliver(to: [], w.bytes, deadline: .after(milliseconds: 0))
        members.removeAll()
        _ = CCLError(.remoteError, "").description
        _ = Log.enabled(.info, .bootstrap)  // the log's knobs are read once, here rather than in the thread
        running.withLock { _ = $0.first { $0.secret == secret } }
    }

    private struct Member { var fd: Int32; var rank: Int; var from: SocketAddress; var payload: [UInt8] }

    /// Checks a newcomer's bytes: length, magic, version and secret as soon as they are there, so that a
    /// stranger is dropped after at most 28 bytes and only a rank may send a large hello.
    package static func judge(_ b: [UInt8], secret: [UInt8]) -> HelloListener.Verdict {
        if b.count < 4 { return .need(4) }
        var r = ByteReader(b)
        let length = Int((try? r.u32()) ?? 0)
        guard length >= headerBytes - 4 + 16, length <= maxHelloBytes else {
            return .reject("not a bootstrap hello (announces \(length) bytes)")
        }
        if b.count < headerBytes { return .need(headerBytes) }
        let magic = (try? r.u32()) ?? 0, version = (try? r.u32()) ?? 0
        guard magic == helloMagic else { return .reject("not a bootstrap hello (magic 0x\(String(magic, radix: 16)))") }
        guard version == Self.version else { return .reject("bootstrap protocol version \(version), this library speaks \(Self.version)") }
        guard secretsEqual(b[12..<28], secret) else {
            return .reject("wrong secret: a rank of another job, a rank whose SWCCL_JOB_SECRET or launcher environment differs, or a stranger")
        }
        return b.count < 4 + length ? .need(4 + length) : .hello(4 + length)
    }

    /// A rank's hello after its header (length, magic, version, secret: checked by `judge`).
    package struct Hello: Equatable { package var rank: Int; package var size: Int; package var timeoutMs: Int; package var payload: [UInt8]
        package init(rank: Int, size: Int, timeoutMs: Int, payload: [UInt8]) { self.rank = rank; self.size = size; self.timeoutMs = timeoutMs; self.payload = payload }
    }

    /// Reads the rank, size, timeout and payload of a hello `judge` accepted (the whole hello, length
    /// prefix included). A size beyond `Communicator.maxRanks` is refused: the root would wait for, and
    /// list as missing, that many ranks.
    package static func parseHello(_ bytes: [UInt8]) throws(CCLError) -> Hello {
        var r = ByteReader(Array(bytes.dropFirst(headerBytes)))
        let rank = Int(try r.u32()), size = Int(try r.u32()), t = Int(try r.u32())
        let payload = try r.blob(max: maxHelloBytes)
        guard size > 0, size <= Limits.maxRanks, rank < size else {
            throw CCLError(.remoteError, "malformed hello: rank \(rank) of \(size)")
        }
        return Hello(rank: rank, size: size, timeoutMs: t, payload: payload)
    }

    private static func run(listenFD: Int32, state: State) {
        defer {
            Sys.close(listenFD)
            state.delivered.store(true, ordering: .releasing)
            running.withLock { $0.removeAll { $0 === state } }
        }
        let secret = state.secret
        var listener = HelloListener(listenFD: listenFD, owner: "bootstrap root")
        defer { listener.closeAll() }
        var members: [Member] = []
        var byRank: [Int: Int] = [:]
        var nranks = 0
        var deadline = Deadline.distantFuture  // until the first rank arrives: NCCL's root also waits indefinitely
        var timeoutMs = 0
        var rejected = 0
        /// Answers every member but `except`: the kind of the failure (the raw value of
        /// `CCLError.Kind`, so ranks report it as such), its cause, and the culprit rank.
        func fail(_ cause: String, kind: CCLError.Kind, culprit: Int?, except: Int? = nil) {
            Log.warn(.bootstrap, "bootstrap root: \(cause)")
            let to = members.indices.filter { $0 != except }
            deliver(to: to.map { members[$0].fd }, encodeRefusal(kind: kind, cause: cause, culprit: culprit), deadline: .after(milliseconds: min(max(timeoutMs, 1000), 30_000)))
            if let except { Sys.close(members[except].fd) }
        }
        state.started.store(true, ordering: .releasing)
        while nranks == 0 || members.count < nranks {
            let event: HelloListener.Event
            do { event = try listener.next(until: deadline, watch: members.map(\.fd)) { judge($0, secret: secret) } } catch {
                fail("bootstrap root failed: \(error.cause)", kind: .systemError, culprit: nil); return
            }
            switch event {
            case .timeout:
                let missing = (0..<nranks).filter { byRank[$0] == nil }
                let strangers = rejected > 0 ? " (it dropped \(rejected) other connection(s) that did not present this job's hello or secret: see its log)" : ""
                fail("ranks \(missing) of \(nranks) did not reach the bootstrap root within \(timeoutMs) ms\(strangers)", kind: .timeout, culprit: missing.first)
                return
            case .watched(let k):
                let m = members[k]
                fail("rank \(m.rank) (at \(m.from)) closed its connection to the bootstrap root before all \(nranks) ranks arrived: it failed, was aborted, exited or crashed",
                     kind: .remoteError, culprit: m.rank, except: k)
                return
            case .hello(let fd, let from, let bytes):
                let hello: Hello
                do { hello = try parseHello(bytes) } catch {
                    Log.warn(.bootstrap, "bootstrap root: dropped a connection from \(from): \(error.cause) (right secret: a rank of another build?)")
                    Sys.close(fd); rejected += 1; continue
                }
                let (rank, size, t, payload) = (hello.rank, hello.size, hello.timeoutMs, hello.payload)
                members.append(Member(fd: fd, rank: rank, from: from, payload: payload))
                if nranks == 0 {
                    nranks = size
                    timeoutMs = t
                    deadline = .after(milliseconds: t)
                } else if size != nranks {
                    let other = members[0]
                    fail("rank \(rank) (at \(from)) was started with \(size) ranks but rank \(other.rank) (at \(other.from)) with \(nranks)", kind: .invalidUsage, culprit: rank)
                    return
                }
                if let k = byRank[rank] {
                    let who = state.weak ? "a stranger who computed the job's secret from host:port (no SWCCL_JOB_SECRET is set)" : "the job's secret leaked"
                    fail("two processes claim rank \(rank), at \(members[k].from) and at \(from): two ranks were given the same number, or \(who) (docs/RELIABILITY.md, \"Who can join a job\")",
                         kind: .invalidUsage, culprit: rank)
                    return
                }
                byRank[rank] = members.count - 1
                Log.info(.bootstrap, "bootstrap root: rank \(rank) of \(size) joined from \(from) (\(members.count) of \(size))")
            }
        }
        // Everyone is here: every rank gets a fresh random session secret (which, unlike the id's
        // secret, nobody outside the job can derive) and every rank's blob.
        var session = [UInt8](repeating: 0, count: 16)
        do throws(Errno) { try session.withUnsafeMutableBytes { b in catching { () throws(Errno) in try Sys.randomBytes(b.baseAddress!, 16) } }.get() }
        catch { fail("bootstrap root: getrandom failed: \(error)", kind: .systemError, culprit: nil); return }
        if state.weak {
            let list = (0..<nranks).prefix(32).map { "\($0) from \(members[byRank[$0]!].from)" }.joined(separator: ", ")
            Log.info(.bootstrap, "bootstrap root: admitted \(nranks) ranks with a secret strangers can compute (no SWCCL_JOB_SECRET; docs/RELIABILITY.md): \(list)\(nranks > 32 ? ", ..." : "")")
        }
        let answer = encodeAnswer(session: session, payloads: (0..<nranks).map { members[byRank[$0]!].payload })
        deliver(to: (0..<nranks).map { members[byRank[$0]!].fd }, answer, deadline: .after(milliseconds: min(max(timeoutMs, 1000), 30_000)))
    }

    /// The answer when everyone arrived (`Bootstrap.parseAnswer` reads it): status 0, the session
    /// secret, every rank's hello payload by rank.
    package static func encodeAnswer(session: [UInt8], payloads: [[UInt8]]) -> [UInt8] {
        var w = ByteWriter()
        w.u8(0)
        w.bytes += session
        for p in payloads { w.blob(p) }
        return w.bytes
    }

    /// The answer when the rendezvous failed: the kind (the raw value of `CCLError.Kind`, so ranks
    /// report it as such), the cause, and the culprit rank + 1 (0: none).
    package static func encodeRefusal(kind: CCLError.Kind, cause: String, culprit: Int?) -> [UInt8] {
        var w = ByteWriter()
        w.u8(UInt8(kind.rawValue)); w.string(cause); w.u32(culprit.map { UInt32($0) + 1 } ?? 0)
        return w.bytes
    }

    /// Sends `message` (length-prefixed) to every descriptor at once, without blocking on any one of
    /// them, until all are sent or `deadline`; then closes them all.
    private static func deliver(to fds: [Int32], _ message: [UInt8], deadline: Deadline) {
        var framed = ByteWriter(); framed.blob(message)
        let bytes = framed.bytes
        var sent = [Int](repeating: 0, count: fds.count)
        var open = Array(fds.indices)
        var set: [pollfd] = []
        while !open.isEmpty {
            open = open.filter { i in
                while sent[i] < bytes.count {
                    let n: Int
                    do throws(Errno) { n = try bytes.withUnsafeBytes { b in catching { () throws(Errno) -> Int in try Sys.send(fds[i], b.baseAddress! + sent[i], bytes.count - sent[i]) } }.get() }
                    catch { return false }  // that rank is gone; nothing to tell it
                    if n == 0 { return true }
                    sent[i] += n
                }
                return false
            }
            if open.isEmpty || deadline.hasPassed { break }
            set = open.map { pollfd(fd: fds[$0], events: Int16(POLLOUT), revents: 0) }
            _ = try? set.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: deadline.remainingMs) }
        }
        if !open.isEmpty { Log.warn(.bootstrap, "bootstrap root: \(open.count) rank(s) did not take the answer before the deadline") }
        for fd in fds { Sys.close(fd) }
    }
}

/// One rank's side of the bootstrap: the rendezvous through the root, then an out-of-band channel (a star
/// through rank 0) for barriers and all-gathers of small blobs.
package final class Bootstrap: @unchecked Sendable {
    package static let oobMagic: UInt32 = 0x5357_424f  // "SWBO"
    package let rank: Int
    package let nranks: Int
    /// The communicator's session secret: made at random by the root and given to the ranks that
    /// joined, so that only they can open the out-of-band channel and the transports' connections
    /// (whatever the id's secret was derived from). With one rank, the id's secret.
    package private(set) var secret: [UInt8]
    package let timeoutMs: Int
    /// Rank 0: a connection to every other rank (index = rank); others: index 0 is the connection to rank 0.
    private var links: [Int32]
    /// Every rank's blob as given at rendezvous.
    package private(set) var blobs: [[UInt8]] = []
    private let abortFD: Int32

    package var deadline: Deadline { .after(milliseconds: timeoutMs) }

    package init(id: UniqueID, rank: Int, nranks: Int, blob: [UInt8], timeoutMs: Int, abortFD: Int32) throws(CCLError) {
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
            try BootstrapRoot.start(listenFD: l.fd, secret: parts.secret, weakSecret: parts.weakSecret)
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

        try rendezvous(parts, blob: blob, oobAddress: oobAddress, deadline: deadline)

        // Out-of-band star through rank 0, authenticated by the session secret.
        if rank == 0 {
            var listener = HelloListener(listenFD: oobListen, wakeFD: abortFD, owner: "rank 0: out-of-band listener",
                                         helloMs: min(timeoutMs, HelloListener.defaultHelloMs))
            defer { listener.closeAll() }
            var missing = nranks - 1
            let session = secret
            while missing > 0 {
                let event: HelloListener.Event
                do {
                    event = try listener.next(until: deadline) { b in
                        Self.judgeOOB(b, secret: session, nranks: nranks, taken: { self.links[$0] >= 0 })
                    }
                } catch { throw error.with(operation: "init: out-of-band channel", rank: 0) }
                guard case .hello(let fd, let from, let bytes) = event else {
                    let absent = (1..<nranks).filter { links[$0] < 0 }
                    throw CCLError(.timeout, "ranks \(absent) joined the rendezvous but did not open the out-of-band channel to rank 0 within \(timeoutMs) ms (they failed, stopped or died since)",
                                   operation: "init", rank: 0, peer: absent.first)
                }
                let peer = Self.oobHelloRank(bytes)
                do throws(CCLError) { try SocketIO.sendMessage(fd, [1], deadline: deadline, abortFD: abortFD) } catch {
                    Sys.close(fd)
                    throw error.with(operation: "init: out-of-band channel", rank: 0, peer: peer, peerAddress: from.description)
                }
                links[peer] = fd
                missing -= 1
            }
        } else {
            guard let addr = rootOOB else { throw CCLError(.remoteError, "rank 0 published no out-of-band address", operation: "init", rank: rank, peer: 0) }
            do {
                let fd = try SocketIO.connect(to: addr, deadline: deadline, abortFD: abortFD)
                links[0] = fd
                try SocketIO.sendMessage(fd, Self.encodeOOBHello(secret: secret, rank: rank), deadline: deadline, abortFD: abortFD)
                _ = try SocketIO.receiveMessage(fd, max: 16, deadline: deadline, abortFD: abortFD)
            } catch {
                var e = error
                if e.cause == SocketIO.closedByPeer { e.cause = "rank 0 closed the out-of-band connection before accepting it: rank 0 failed, exited or crashed" }
                throw e.with(operation: "init: out-of-band channel", rank: rank, peer: 0, peerAddress: addr.description)
            }
        }
    }

    /// Rank 0's out-of-band address, learned at rendezvous (ranks other than 0).
    private var rootOOB: SocketAddress?

    /// A hello on rank 0's out-of-band listener: `[length 28][magic][session secret][rank]`.
    package static func judgeOOB(_ b: [UInt8], secret: [UInt8], nranks: Int, taken: (Int) -> Bool) -> HelloListener.Verdict {
        if b.count < 8 { return .need(8) }
        var r = ByteReader(b)
        let length = (try? r.u32()) ?? 0, magic = (try? r.u32()) ?? 0
        guard length == 24, magic == oobMagic else { return .reject("not an out-of-band hello (length \(length), magic 0x\(String(magic, radix: 16)))") }
        if b.count < 28 { return .need(28) }
        guard secretsEqual(b[8..<24], secret) else { return .reject("wrong session secret (not a rank of this communicator)") }
        let peer = oobHelloRank(b)
        guard peer > 0, peer < nranks, !taken(peer) else { return .reject("bad or duplicate rank \(peer)") }
        return .hello(28)
    }

    /// Connects to the root, sends this rank's hello and waits for the verdict: every rank's blob and
    /// the session secret, or the failure (kind, cause, culprit). In the process that runs the root,
    /// returns (or throws) only once the root has answered every rank.
    private func rendezvous(_ parts: UniqueID.Parts, blob: [UInt8], oobAddress: [UInt8], deadline: Deadline) throws(CCLError) {
        let rootText = parts.root.description
        // Who the root is, for errors: rank 0 when it runs it, else the process that made the id.
        let rootName = parts.rankZeroRunsRoot ? "rank 0 (the bootstrap root at \(rootText))" : "the bootstrap root at \(rootText) (in the process that made the unique id)"
        let rootPeer: Int? = parts.rankZeroRunsRoot ? 0 : nil
        let idSecret = parts.secret
        defer { BootstrapRoot.waitUntilDelivered(secret: idSecret, deadline: .after(milliseconds: min(max(timeoutMs, 1000), 30_000) + 1000)) }
        let rootFD: Int32
        do { rootFD = try SocketIO.connect(to: parts.root, deadline: deadline, abortFD: abortFD) } catch {
            var e = error
            if e.kind == .timeout {
                e.cause = "\(rootName) never answered within \(timeoutMs) ms: \(e.cause)\(parts.rankZeroRunsRoot ? " (rank 0 is late, failed before listening, or died)" : "")"
            }
            throw e.with(operation: "init: reaching the bootstrap root", rank: rank, peer: rootPeer, peerAddress: rootText)
        }
        defer { Sys.close(rootFD) }
        let hello = Self.encodeHello(secret: parts.secret, rank: rank, nranks: nranks, timeoutMs: timeoutMs, oobAddress: oobAddress, blob: blob)
        let reply: [UInt8]
        // The root answers once every rank has arrived, or says who did not; it gives up `timeoutMs`
        // after the first rank arrived, so allow for that plus a margin.
        let replyDeadline = Deadline.after(milliseconds: min(timeoutMs, Int(Int32.max) - 4000) + 2000)
        do throws(CCLError) {
            try SocketIO.sendMessage(rootFD, hello, deadline: deadline, abortFD: abortFD)
            reply = try SocketIO.receiveMessage(rootFD, max: Self.maxAnswerBytes(nranks: nranks), deadline: replyDeadline, abortFD: abortFD)
        } catch {
            var e = error
            if e.cause == SocketIO.closedByPeer || e.errno == Errno(ECONNRESET) {
                e.cause = "\(rootName) closed the connection without a verdict: \(parts.rankZeroRunsRoot ? "rank 0" : "that process") failed, exited or crashed"
            } else if e.kind == .timeout {
                e.cause = "\(rootName) gave no verdict within \(timeoutMs + 2000) ms (\(parts.rankZeroRunsRoot ? "rank 0" : "that process") is stopped or hung?)"
            }
            throw e.with(operation: "init: rendezvous", rank: rank, peer: rootPeer, peerAddress: rootText)
        }
        let answer: Answer
        do { answer = try Self.parseAnswer(reply, nranks: nranks) } catch {
            throw error.with(operation: "init: rendezvous", rank: rank, peer: rootPeer, peerAddress: rootText)
        }
        switch answer {
        case .admitted(let session, let oob, let all):
            secret = session
            rootOOB = oob
            blobs = all
        case .refused(let kind, let cause, let culprit):
            // The culprit is the peer of this error; the root's address is in the text.
            throw CCLError(kind, "the bootstrap root at \(rootText) reports: \(cause)", operation: "init: rendezvous", rank: rank, peer: culprit)
        }
    }

    /// A rank's hello to the root (without the length prefix `sendMessage` adds): magic, version, the
    /// id's secret, rank, size, timeout, then the payload the root hands to every rank (rank 0's
    /// out-of-band address and the rank's blob).
    package static func encodeHello(secret: [UInt8], rank: Int, nranks: Int, timeoutMs: Int, oobAddress: [UInt8], blob: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.u32(BootstrapRoot.helloMagic); w.u32(BootstrapRoot.version)
        w.bytes.append(contentsOf: secret)
        w.u32(UInt32(rank)); w.u32(UInt32(nranks)); w.u32(UInt32(clamping: timeoutMs))
        var inner = ByteWriter()
        inner.blob(oobAddress); inner.blob(blob)
        w.blob(inner.bytes)
        return w.bytes
    }

    /// A rank's hello to rank 0's out-of-band listener (without the length prefix): magic, the
    /// session secret, the rank.
    package static func encodeOOBHello(secret: [UInt8], rank: Int) -> [UInt8] {
        var h = ByteWriter()
        h.u32(oobMagic); h.bytes.append(contentsOf: secret); h.u32(UInt32(rank))
        return h.bytes
    }

    /// The rank a hello accepted by `judgeOOB` (length prefix included) comes from.
    package static func oobHelloRank(_ b: [UInt8]) -> Int {
        b.count < 28 ? -1 : Int(b[24]) | Int(b[25]) << 8 | Int(b[26]) << 16 | Int(b[27]) << 24
    }

    /// The largest answer a rank of `nranks` accepts from the root: the status, the session secret and
    /// every rank's hello payload (as the root bounds them). Nothing larger is ever allocated for it.
    package static func maxAnswerBytes(nranks: Int) -> Int {
        min(1 << 30, 64 + max(1, nranks) * (4 + BootstrapRoot.maxHelloBytes))
    }

    /// What the root answered a rank.
    package enum Answer: Equatable {
        /// Everyone arrived: the session secret, rank 0's out-of-band address (if readable) and every
        /// rank's blob, by rank.
        case admitted(session: [UInt8], rootOOB: SocketAddress?, blobs: [[UInt8]])
        /// The rendezvous failed: the kind of error, the root's cause, and the rank at fault (if one
        /// of the `nranks`).
        case refused(kind: CCLError.Kind, cause: String, culprit: Int?)
    }

    /// Reads the root's answer (without its length prefix) for a rank of `nranks`.
    package static func parseAnswer(_ bytes: [UInt8], nranks: Int) throws(CCLError) -> Answer {
        var reply = ByteReader(bytes)
        let status = try reply.u8()
        if status != 0 {
            let cause = try reply.string()
            let culprit = Int(try reply.u32()) - 1
            return .refused(kind: CCLError.Kind(rawValue: Int32(status)) ?? .remoteError, cause: cause,
                            culprit: culprit >= 0 && culprit < nranks ? culprit : nil)
        }
        var session: [UInt8] = []
        for _ in 0..<16 { session.append(try reply.u8()) }
        var rootOOB: SocketAddress?
        var blobs: [[UInt8]] = []
        for r in 0..<nranks {
            var inner = ByteReader(try reply.blob(max: BootstrapRoot.maxHelloBytes))
            let oob = try inner.blob()
            if r == 0 && oob.count >= SocketAddress.encodedSize { rootOOB = oob.withUnsafeBytes { SocketAddress.decode(from: $0.baseAddress!) } }
            blobs.append(try inner.blob())
        }
        return .admitted(session: session, rootOOB: rootOOB, blobs: blobs)
    }

    /// Every rank's `bytes`, indexed by rank. Blocks until all ranks call it, or the timeout.
    package func allGather(_ bytes: [UInt8], deadline: Deadline? = nil) throws(CCLError) -> [[UInt8]] {
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
            return try Self.parseGathered(try SocketIO.receiveMessage(links[0], deadline: d, abortFD: abortFD), nranks: nranks)
        } catch {
            throw error.with(operation: "out-of-band all-gather", rank: rank, peer: 0)
        }
    }

    /// Rank 0's answer to an out-of-band all-gather, as a rank reads it: `nranks` blobs.
    package static func parseGathered(_ bytes: [UInt8], nranks: Int) throws(CCLError) -> [[UInt8]] {
        var r = ByteReader(bytes)
        var all: [[UInt8]] = []
        for _ in 0..<nranks { all.append(try r.blob()) }
        return all
    }

    package func barrier(deadline: Deadline? = nil) throws(CCLError) { _ = try allGather([], deadline: deadline) }

    package func close() {
        for fd in links where fd >= 0 { Sys.close(fd) }
        links = links.map { _ in -1 }
    }

    deinit { close() }
}

/// What each rank tells the others at rendezvous.
package struct RankInfo: Sendable {
    package var rank: Int
    package var pid: Int32
    package var host: HostIdentity
    package var transports: [(name: String, address: EndpointAddress)]
    /// For a communicator made by `shrink`: this rank's number in the parent and the exclusion list it
    /// passed (every survivor must pass the same; compared once all have arrived).
    package var shrink: (parentRank: Int, excluded: [Int])? = nil

    package init(rank: Int, pid: Int32, host: HostIdentity, transports: [(name: String, address: EndpointAddress)],
                 shrink: (parentRank: Int, excluded: [Int])? = nil) {
        self.rank = rank; self.pid = pid; self.host = host; self.transports = transports; self.shrink = shrink
    }

    package func encode() -> [UInt8] {
        var w = ByteWriter()
        w.u32(UInt32(rank)); w.u32(UInt32(bitPattern: pid))
        host.encode(into: &w)
        w.u32(UInt32(transports.count))
        for t in transports { w.string(t.name); w.blob(t.address.bytes) }
        if let shrink {
            w.u8(1); w.u32(UInt32(truncatingIfNeeded: shrink.parentRank)); w.u32(UInt32(shrink.excluded.count))
            for r in shrink.excluded { w.u32(UInt32(truncatingIfNeeded: r)) }
        } else {
            w.u8(0)
        }
        return w.bytes
    }

    package static func decode(_ bytes: [UInt8]) throws(CCLError) -> RankInfo {
        var r = ByteReader(bytes)
        let rank = Int(try r.u32()), pid = Int32(bitPattern: try r.u32())
        let host = try HostIdentity.decode(&r)
        var ts: [(String, EndpointAddress)] = []
        let count = Int(try r.u32())
        guard count <= maxTransports else { throw CCLError(.remoteError, "malformed rank information: \(count) transports") }
        for _ in 0..<count {
            let name = try r.string()
            let addr = try r.blob(max: EndpointAddress.maxBytes)
            ts.append((name, EndpointAddress(addr)))
        }
        var info = RankInfo(rank: rank, pid: pid, host: host, transports: ts)
        if !r.atEnd, try r.u8() == 1 {  // (absent: not a shrink)
            let parent = Int(try r.u32()), n = Int(try r.u32())
            guard n <= 1 << 16 else { throw CCLError(.remoteError, "malformed rank info: an exclusion list of \(n) ranks") }
            var list: [Int] = []
            for _ in 0..<n { list.append(Int(try r.u32())) }
            info.shrink = (parent, list)
        }
        return info
    }

    /// More transports than any rank publishes (shm, ib, tcp).
    package static let maxTransports = 16

    /// Every rank's information from the blobs the root handed out (index = rank). Each must be
    /// readable and carry its own index as its rank: the rest of the set-up indexes tables by it.
    package static func decodeAll(_ blobs: [[UInt8]]) throws(CCLError) -> [RankInfo] {
        var infos: [RankInfo] = []
        for (k, b) in blobs.enumerated() {
            let info: RankInfo
            do { info = try decode(b) } catch {
                throw CCLError(.remoteError, "rank \(k) published unreadable rank information (\(error.cause)): a rank of another build?", peer: k)
            }
            guard info.rank == k else {
                throw CCLError(.remoteError, "the rank information published as rank \(k) says rank \(info.rank): a rank of another build, or a forged hello", peer: k)
            }
            infos.append(info)
        }
        return infos
    }
}
