import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The transport conformance suite: each case written once against the `Transport` protocol and run
/// for every transport of `TestTransports` — ranks as processes (`swccl-test-rank`, for the
/// backends) or as threads of one process (in-process transports such as `LoopbackTransport`). A
/// case checks its rank's part and reports through its `ConformanceRank`.
public enum TransportConformance {
    /// The cases by name (what `Tests/SwiftCCLTests/ConformanceTests.swift` runs and the rank helper
    /// dispatches).
    public static let cases: [(name: String, run: @Sendable (ConformanceRank) -> Void)] = [
        ("handshake", handshake), ("ordering", ordering), ("sizes", sizes), ("misaligned", misaligned), ("many", many),
        ("flood", flood), ("register", register), ("close", close),
        ("kill", { killOrStop($0, kill: true) }), ("stop", { killOrStop($0, kill: false) }),
    ]

    public static func named(_ name: String) -> (@Sendable (ConformanceRank) -> Void)? { cases.first { $0.name == name }?.run }

    /// Runs case `name` on this rank: the case, then (unless the rank faulted on purpose) the
    /// transport closed; the rank's verdict line last. True when every check held.
    public static func run(_ name: String, _ me: ConformanceRank) -> Bool {
        guard let body = named(name) else { me.check(false, "unknown conformance case \(name)"); return false }
        body(me)
        if me.faulted == nil { me.testbed.transport.close() }
        return me.finish(name)
    }

    /// Strangers at the listeners (HTTP garbage, a short write, a hello with a wrong secret, a silent
    /// connect; where the transport has socket listeners) are rejected, and the ranks still connect and
    /// exchange data.
    static func handshake(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, size = me.size
        // The stranger part: rank 0 misbehaves towards every higher rank's listener before connecting
        // for real. Those ranks must reject all of it and still connect.
        if rank == 0, let _ = tb.socketAddress(of: 1) {
            for peer in 1..<size {
                guard let addr = tb.socketAddress(of: peer) else { continue }
                RawSocket.sendAndClose(to: addr, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8) + [UInt8](repeating: 0xff, count: 64))
                RawSocket.sendAndClose(to: addr, [UInt8](repeating: 0, count: 7))
                RawSocket.sendAndClose(to: addr, RawSocket.tcpHello(secret: [UInt8](repeating: 9, count: 16), from: 0, to: peer, nranks: size))
                RawSocket.sendAndClose(to: addr, [], holdMs: 0)
            }
        }
        guard me.connect() else { return }
        exchange(me, sizes: [1, 100], shift: 0, tagBase: 10)
    }

    /// Per tag, messages of mixed sizes (eager and rendezvous) match and complete in posting order.
    static func ordering(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, size = me.size, caps = tb.transport.capabilities
        guard me.connect() else { return }
        // Per tag, messages of mixed sizes (eager and rendezvous) must match and complete in posting
        // order; two tags interleave, and the receiver posts them tag by tag.
        let msgs = 24
        let sizeOf = { (i: Int) -> Int in [8, caps.eagerThreshold + 1000, 3, 300_000, 0, caps.eagerThreshold][i % 6] }
        let peer = rank ^ 1
        if peer < size {
            var bufs: [UnsafeMutableRawPointer] = []
            var sends: [Request] = [], recvs: [(Request, UnsafeMutableRawPointer, Int, Int)] = []
            do {
                for i in 0..<msgs {
                    let b = UnsafeMutableRawPointer.allocate(byteCount: max(sizeOf(i), 1), alignment: 8)
                    bufs.append(b)
                    fillBytes(b, sizeOf(i), i)
                    sends.append(try tb.transport.isend(to: peer, tag: UInt64(100 + i % 2), UnsafeRawBufferPointer(start: b, count: sizeOf(i))))
                }
                for t in 0..<2 {
                    for i in stride(from: t, to: msgs, by: 2) {
                        let b = UnsafeMutableRawPointer.allocate(byteCount: max(sizeOf(i), 1), alignment: 8)
                        bufs.append(b)
                        recvs.append((try tb.transport.irecv(from: peer, tag: UInt64(100 + t), into: UnsafeMutableRawBufferPointer(start: b, count: sizeOf(i))), b, sizeOf(i), i))
                    }
                }
            } catch { me.check(false, "posting: \(error)") }
            // Completion order within a tag: a later request never completes before an earlier one.
            var done = Set<Int>()
            let deadline = tb.deadline
            while done.count < recvs.count && !deadline.hasPassed {
                for (k, r) in recvs.enumerated() where !done.contains(k) {
                    do {
                        if try tb.transport.test(r.0) {
                            // Every earlier request of the same tag must be complete by now too.
                            for (j, earlier) in recvs.enumerated() where j < k && earlier.3 % 2 == r.3 % 2 && !done.contains(j) {
                                me.check((try? tb.transport.test(earlier.0)) == true, "message \(r.3) completed before message \(earlier.3) of the same tag")
                                done.insert(j)
                                me.check(checkBytes(earlier.1, earlier.2, earlier.3), "content/order of message \(earlier.3)")
                            }
                            done.insert(k)
                            me.check(checkBytes(r.1, r.2, r.3), "content/order of message \(r.3)")
                        }
                    } catch { me.check(false, "receive \(r.3): \(error)"); done.insert(k) }
                }
            }
            me.check(done.count == recvs.count, "all ordered messages arrived")
            waitAll(me, sends, "ordered sends")
            bufs.forEach { $0.deallocate() }
        }
    }

    /// Sizes 0 … 4 MiB + 3 (and 256 MiB where the transport takes it) between every pair, both ways.
    static func sizes(_ me: ConformanceRank) {
        let caps = me.testbed.transport.capabilities
        guard me.connect() else { return }
        exchange(me, sizes: [0, 1, 7, 4095, (4 << 20) + 3], shift: 0, tagBase: 200)
        if caps.maxMessageBytes >= 256 << 20 { exchange(me, sizes: [256 << 20], shift: 0, tagBase: 300) }
    }

    /// Buffers 1 and 3 bytes off alignment.
    static func misaligned(_ me: ConformanceRank) {
        guard me.connect() else { return }
        exchange(me, sizes: [7, 4095, (1 << 20) + 5], shift: 1, tagBase: 400)
        exchange(me, sizes: [7, 70_001], shift: 3, tagBase: 410)
    }

    /// Many outstanding requests in both directions at once, within the advertised bound.
    static func many(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, size = me.size, caps = tb.transport.capabilities
        guard me.connect() else { return }
        // Many outstanding requests in both directions at once, within the advertised bound.
        let per = min(400, caps.maxOutstandingRequests / (4 * max(size - 1, 1)))
        var reqs: [Request] = []
        var bufs: [(UnsafeMutableRawPointer, Int, Int, Int)] = []
        do {
            for peer in 0..<size where peer != rank {
                for i in 0..<per {
                    let n = [0, 1, 64, 5000, 100_000][i % 5]
                    let rb = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 8)
                    let sb = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 8)
                    fillBytes(sb, n, rank * 100_000 + peer * 1000 + i)
                    reqs.append(try tb.transport.irecv(from: peer, tag: UInt64(500 + i % 7), into: UnsafeMutableRawBufferPointer(start: rb, count: n)))
                    reqs.append(try tb.transport.isend(to: peer, tag: UInt64(500 + i % 7), UnsafeRawBufferPointer(start: sb, count: n)))
                    bufs.append((rb, n, peer, i))
                }
            }
        } catch { me.check(false, "posting: \(error)") }
        waitAll(me, reqs, "many outstanding")
        for (rb, n, peer, i) in bufs { me.check(checkBytes(rb, n, peer * 100_000 + rank * 1000 + i), "message \(i) from \(peer)") }
        me.say("completed \(reqs.count) requests")
    }

    /// Bounded buffering: a flood of unexpected messages is held up to the budget, then waits.
    static func flood(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, caps = tb.transport.capabilities
        // Bounded buffering (Transport.unexpectedTags, UnexpectedBudget): rank 0 sends more empty
        // messages than rank 1 has asked for or may hold; rank 1 keeps at most the budget's worth
        // (the rest wait with the sender), then receives every one, in order, and a last message
        // with data behind them.
        guard me.connect() else { return }
        let total = 6000
        let held = UnexpectedBudget.bytesPerPeer / UnexpectedBudget.minimumCost + 1
        let window = max(1, min(256, caps.maxOutstandingRequests / 4))
        let last = UnsafeMutableRawPointer.allocate(byteCount: 100, alignment: 8)
        defer { last.deallocate() }
        let empty = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        if rank == 0 {
            fillBytes(last, 100, 77)
            var pending: [Request] = []
            do {
                for _ in 0..<total {
                    if pending.count >= window { try tb.transport.wait(pending.removeFirst(), deadline: tb.deadline) }
                    pending.append(try tb.transport.isend(to: 1, tag: 700, UnsafeRawBufferPointer(empty)))
                }
                pending.append(try tb.transport.isend(to: 1, tag: 701, UnsafeRawBufferPointer(start: last, count: 100)))
                for q in pending { try tb.transport.wait(q, deadline: tb.deadline) }
            } catch { me.check(false, "flood sends: \(error)") }
        } else if rank == 1 {
            // Let the flood arrive until it stops growing for a second.
            var seen = 0, still = 0
            let until = Deadline.after(milliseconds: 30_000)
            while !until.hasPassed && seen < total && still < 10 {
                _ = try? tb.transport.waitForProgress(deadline: .after(milliseconds: 100))
                let now = tb.transport.unexpectedTags(from: 0).count
                if now == seen { still += 1 } else { (seen, still) = (now, 0) }
            }
            me.say("held \(seen) of \(total) unexpected messages (budget: \(held))")
            me.check(seen > 0 && seen <= held, "rank 1 held \(seen) unexpected messages from rank 0: more than the budget's \(held)")
            var pending: [Request] = []
            do {
                for _ in 0..<total {
                    if pending.count >= window { try tb.transport.wait(pending.removeFirst(), deadline: tb.deadline) }
                    pending.append(try tb.transport.irecv(from: 0, tag: 700, into: empty))
                }
                memset(last, 0, 100)
                pending.append(try tb.transport.irecv(from: 0, tag: 701, into: UnsafeMutableRawBufferPointer(start: last, count: 100)))
                for q in pending { try tb.transport.wait(q, deadline: tb.deadline) }
                me.check(checkBytes(last, 100, 77), "the message after the flood")
            } catch { me.check(false, "flood receives: \(error)") }
        }
    }

    /// Registered buffers reused, deregistered and freed; then fresh unregistered ones.
    static func register(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, size = me.size
        // Buffers registered with the transport (zero-copy for verbs), used several times, deregistered
        // and freed; then fresh unregistered buffers, likely at the same addresses, must receive the
        // new data (a registration left behind would serve the old pages).
        guard me.connect() else { return }
        let peer = rank ^ 1
        let n = (1 << 20) + 3
        if peer < size {
            for round in 0..<3 {
                let sb = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
                let rb = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
                var regions: [MemoryRegion] = []
                do {
                    if round < 2 {
                        regions.append(try tb.transport.register(UnsafeMutableRawBufferPointer(start: sb, count: n)))
                        regions.append(try tb.transport.register(UnsafeMutableRawBufferPointer(start: rb, count: n)))
                    }
                    for k in 0..<4 {
                        fillBytes(sb, n, rank * 100 + round * 10 + k)
                        memset(rb, 0, n)
                        let r = try tb.transport.irecv(from: peer, tag: UInt64(900 + k), into: UnsafeMutableRawBufferPointer(start: rb, count: n))
                        let s = try tb.transport.isend(to: peer, tag: UInt64(900 + k), UnsafeRawBufferPointer(start: sb, count: n))
                        try tb.transport.wait(r, deadline: tb.deadline)
                        try tb.transport.wait(s, deadline: tb.deadline)
                        me.check(checkBytes(rb, n, peer * 100 + round * 10 + k), "round \(round) message \(k) (\(round < 2 ? "registered" : "unregistered") buffers)")
                    }
                } catch { me.check(false, "round \(round): \(error)") }
                regions.forEach { tb.transport.deregister($0) }
                sb.deallocate()
                rb.deallocate()
            }
        }
    }

    /// A peer that closes: receives from it fail naming it; other pairs are unaffected.
    static func close(_ me: ConformanceRank) {
        let tb = me.testbed, rank = me.rank, size = me.size
        // Rank 1 closes cleanly while rank 0 still expects a message from it: rank 0's receive fails
        // with an error naming rank 1; other pairs are unaffected.
        guard me.connect() else { return }
        if rank == 1 {
            try? tb.barrier()
            tb.transport.close()
            try? tb.barrier()
        } else {
            let b = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
            do {
                let r = try tb.transport.irecv(from: 1, tag: 600, into: UnsafeMutableRawBufferPointer(start: b, count: 64))
                try? tb.barrier()
                try? tb.barrier()
                try tb.transport.wait(r, deadline: tb.deadline)
                me.check(false, "receive from a closed peer succeeded")
            } catch {
                me.say("error as expected: \(error)")
                me.check(error.peer == 1, "the error names rank 1 (got \(String(describing: error.peer)))")
                me.check(error.kind == .remoteError, "a remote error (got \(error.kind))")
            }
            if size > 2 && rank == 0 { exchangeWithout(me, excluded: 1) }
            if size > 2 && rank != 0 { exchangeWithout(me, excluded: 1) }
        }
    }

    /// A peer killed (or stopped) mid-transfer: every other rank gets an error naming it within
    /// twice the timeout (a timeout for a stopped one).
    static func killOrStop(_ me: ConformanceRank, kill: Bool) {
        let tb = me.testbed, rank = me.rank, caps = tb.transport.capabilities
        // Rank 1 dies (SIGKILL) or freezes (SIGSTOP) in the middle of a 256 MiB transfer from rank 0.
        // Every other rank must get an error naming rank 1 within twice the timeout.
        guard me.connect() else { return }
        let n = 256 << 20
        let b = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 4096)
        defer { b.deallocate() }  // (a rank in a thread: no request points into it any more by then)
        memset(b, 1, n)
        try? tb.barrier()
        if rank == 1 {
            do {
                let r = try tb.transport.irecv(from: 0, tag: 700, into: UnsafeMutableRawBufferPointer(start: b, count: n))
                // Take part of the message, then die or freeze.
                for _ in 0..<200 { _ = try tb.transport.test(r) }
            } catch { me.say("rank 1: \(error)") }
            me.fault(kill ? .kill : .stop)
            return
        }
        let t0 = Sys.monotonicNanos()
        let deadline = tb.deadline
        do {
            if rank == 0 {
                let s = try tb.transport.isend(to: 1, tag: 700, UnsafeRawBufferPointer(start: b, count: n))
                try tb.transport.wait(s, deadline: deadline)
                // With one-sided writes (verbs) the payload lands in a stopped receiver's memory without
                // its CPU, once it has posted the receive: the send may complete. Then wait for a reply
                // the stopped peer cannot send.
                if caps.oneSidedWrites {
                    me.say("send to rank 1 completed (one-sided write into its posted buffer); waiting for its reply")
                    let r = try tb.transport.irecv(from: 1, tag: 701, into: UnsafeMutableRawBufferPointer(start: b, count: 8))
                    try tb.transport.wait(r, deadline: deadline)
                }
            } else {
                // Others wait for a message rank 1 will never send.
                let r = try tb.transport.irecv(from: 1, tag: 701, into: UnsafeMutableRawBufferPointer(start: b, count: 8))
                try tb.transport.wait(r, deadline: tb.deadline)
            }
            me.check(false, "the transfer with a \(kill ? "killed" : "stopped") peer succeeded")
        } catch {
            let ms = Double(Sys.monotonicNanos() - t0) / 1e6
            me.say("error after \(Int(ms)) ms: \(error)")
            me.check(error.peer == 1, "the error names rank 1 (got \(String(describing: error.peer)))")
            me.check(ms < Double(2 * me.timeoutMs), "error within twice the timeout (\(Int(ms)) ms)")
            if !kill { me.check(error.kind == .timeout, "a timeout error for a stopped peer (got \(error.kind))") }
        }
    }

    /// A byte pattern that depends on (message, index), to check content and order.
    public static func fillBytes(_ p: UnsafeMutableRawPointer, _ n: Int, _ message: Int) {
        let b = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n { b[i] = UInt8(truncatingIfNeeded: (i &* 31) ^ (message &* 131) ^ (i >> 8)) }
    }
    public static func checkBytes(_ p: UnsafeRawPointer, _ n: Int, _ message: Int) -> Bool {
        let b = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n where b[i] != UInt8(truncatingIfNeeded: (i &* 31) ^ (message &* 131) ^ (i >> 8)) { return false }
        return true
    }

    static func waitAll(_ me: ConformanceRank, _ reqs: [Request], _ what: String) {
        let tb = me.testbed
        for q in reqs {
            do { try tb.transport.wait(q, deadline: tb.deadline) } catch { me.check(false, "\(what): \(error)"); return }
        }
    }

    /// Exchanges messages of `sizes` (bytes) with every peer in both directions at once, at `shift`
    /// bytes off alignment, and checks every byte.
    static func exchange(_ me: ConformanceRank, sizes: [Int], shift: Int, tagBase: UInt64) {
        let tb = me.testbed, rank = me.rank, size = me.size
        for (k, n) in sizes.enumerated() {
            var bufs: [UnsafeMutableRawPointer] = []
            var reqs: [Request] = []
            var recvs: [(UnsafeMutableRawPointer, Int)] = []
            do {
                for peer in 0..<size where peer != rank {
                    let sb = UnsafeMutableRawPointer.allocate(byteCount: n + shift + 1, alignment: 64)
                    let rb = UnsafeMutableRawPointer.allocate(byteCount: n + shift + 1, alignment: 64)
                    bufs += [sb, rb]
                    fillBytes(sb + shift, n, rank * 1000 + peer * 10 + k)
                    memset(rb + shift, 0, n)
                    reqs.append(try tb.transport.irecv(from: peer, tag: tagBase + UInt64(k), into: UnsafeMutableRawBufferPointer(start: rb + shift, count: n)))
                    reqs.append(try tb.transport.isend(to: peer, tag: tagBase + UInt64(k), UnsafeRawBufferPointer(start: sb + shift, count: n)))
                    recvs.append((rb + shift, peer))
                }
            } catch { me.check(false, "posting size \(n): \(error)"); return }
            waitAll(me, reqs, "size \(n) shift \(shift)")
            for (rb, peer) in recvs {
                me.check(checkBytes(rb, n, peer * 1000 + rank * 10 + k), "content of \(n) bytes from rank \(peer) (shift \(shift))")
            }
            bufs.forEach { $0.deallocate() }
        }
    }

    /// After rank 1 closed: the remaining ranks can still talk to each other.
    static func exchangeWithout(_ me: ConformanceRank, excluded: Int) {
        let tb = me.testbed, rank = me.rank, size = me.size
        let others = (0..<size).filter { $0 != excluded && $0 != rank }
        guard let peer = others.first else { return }
        let sb = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
        let rb = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
        fillBytes(sb, 1000, rank)
        do {
            let q = try tb.transport.irecv(from: peer, tag: 650, into: UnsafeMutableRawBufferPointer(start: rb, count: 1000))
            let s = try tb.transport.isend(to: peer, tag: 650, UnsafeRawBufferPointer(start: sb, count: 1000))
            try tb.transport.wait(q, deadline: tb.deadline)
            try tb.transport.wait(s, deadline: tb.deadline)
            me.check(checkBytes(rb, 1000, peer), "exchange with rank \(peer) after rank \(excluded) closed")
        } catch { me.check(false, "exchange with rank \(peer) after rank \(excluded) closed: \(error)") }
    }
}

/// One rank of a conformance case: its bare transport (a `TransportTestbed`), where its lines go, and
/// how it fails on purpose — a process kills or stops itself; a rank that is a thread crashes its
/// endpoint (`LoopbackTransport.crash`) or parks until the others are done.
public final class ConformanceRank: @unchecked Sendable {
    public enum Fault: Sendable { case kill, stop }

    public let testbed: TransportTestbed
    public var rank: Int { testbed.rank }
    public var size: Int { testbed.size }
    public var timeoutMs: Int { testbed.timeoutMs }
    public private(set) var failures = 0
    /// Set once the rank faulted on purpose (then its transport is left as it is).
    public private(set) var faulted: Fault?
    private let write: @Sendable (String) -> Void
    private let onFault: @Sendable (Fault, ConformanceRank) -> Void

    /// `write`: one line of output; `onFault`: what a deliberate fault does (for a process: raise
    /// SIGKILL or SIGSTOP; it may not return).
    public init(testbed: TransportTestbed, write: @escaping @Sendable (String) -> Void,
                onFault: @escaping @Sendable (Fault, ConformanceRank) -> Void) {
        self.testbed = testbed; self.write = write; self.onFault = onFault
    }

    public func say(_ s: String) { write("[rank \(rank)] \(s)") }

    public func check(_ ok: Bool, _ what: @autoclosure () -> String) {
        if !ok { failures += 1; say("FAIL \(what())") }
    }

    /// Connects the pairs; false (after a FAIL line) when that failed.
    public func connect() -> Bool {
        do { try testbed.connect(); return true } catch { check(false, "connect: \(error)"); return false }
    }

    /// Fails on purpose, here (see the class's comment).
    public func fault(_ f: Fault) {
        faulted = f
        onFault(f, self)
    }

    /// Prints the verdict line ("PASS <case>" or "FAILED <case> …"); true when every check held.
    @discardableResult
    public func finish(_ name: String) -> Bool {
        say(failures == 0 ? "PASS \(name)" : "FAILED \(name) with \(failures) failure(s)")
        return failures == 0
    }
}
