// One rank of a multi-process test. The test (Tests/SwiftCCLTests) spawns N of these with
// SWCCL_TEST_RANK, SWCCL_TEST_SIZE, SWCCL_TEST_ID (hex unique id), SWCCL_TEST_BACKEND and
// SWCCL_TEST_TIMEOUT_MS, and a scenario name as the first argument. Each rank checks its own results,
// prints "PASS <scenario>" or "FAIL ..." lines, and exits 0 only if everything held.
import Glibc
import SwiftCCLTesting
import SwcclVerify

func eprint(_ s: String) { var b = Array(s.utf8); _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) } }

@MainActor func env(_ k: String) -> String? { getenv(k).map { String(cString: $0) } }

let scenario = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : ""
let rank = Int(env("SWCCL_TEST_RANK") ?? "0") ?? 0
let size = Int(env("SWCCL_TEST_SIZE") ?? "1") ?? 1
let backend = env("SWCCL_TEST_BACKEND") ?? "tcp"
let timeoutMs = Int(env("SWCCL_TEST_TIMEOUT_MS") ?? "20000") ?? 20000
var failures = 0

@MainActor func say(_ s: String) { print("[rank \(rank)] \(s)"); fflush(nil) }
@MainActor func check(_ ok: Bool, _ what: @autoclosure () -> String) {
    if !ok { failures += 1; say("FAIL \(what())") }
}
@MainActor func finish() -> Never {
    say(failures == 0 ? "PASS \(scenario)" : "FAILED \(scenario) with \(failures) failure(s)")
    exit(failures == 0 ? 0 : 1)
}

let id: UniqueID
do { id = try UniqueID(hex: env("SWCCL_TEST_ID") ?? "") } catch { say("FAIL bad SWCCL_TEST_ID: \(error)"); exit(2) }

// MARK: - collective scenarios

/// Every type × op × count × in/out of place, exact, with the cost model's choice and with every
/// algorithm forced (each on a communicator split off with that setting). The model's choice runs
/// every small case; forced algorithms run a deterministic third of them, and counts of 1 Mi+1 run a
/// sample of types and ops — everything with SWCCL_TEST_FULL=1. SWCCL_TEST_ALGO runs one setting only.
@MainActor func allreduceScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let full = env("SWCCL_TEST_FULL") == "1"
    let settings: [String?] = env("SWCCL_TEST_ALGO").map { [$0] } ?? [nil] + CollectiveKind.allreduce.algorithms.map { "allreduce:\($0.rawValue)" }
    let counts = [0, 1, 7, 1000, (1 << 20) + 1]
    let maxBytes = counts.max()! * 8 + 64
    let send = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let recv = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let want = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    var checked = 0
    var seed: UInt64 = 7
    for (ai, setting) in settings.enumerated() {
        let t0 = Clock.nanos(), before = checked
        defer { say("\(setting ?? "auto"): \(checked - before) cases in \(Double((Clock.nanos() - t0) / 1_000_000) / 1000) s") }
        let c: Communicator
        if let setting {
            do { c = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: setting))! }
            catch { say("FAIL split for \(setting): \(error)"); exit(1) }
        } else { c = comm }
        let forced = setting != nil
        for (ti, type) in DataType.allCases.enumerated() {
            for (oi, op) in ReduceOp.allCases.enumerated() {
                for (ci, count) in counts.enumerated() {
                    if !full {
                        if count > 4096 {
                            if forced ? (ti != (ai * 5) % DataType.allCases.count || oi != (ai * 2) % 5) : ((ti + oi) % 3 != 0 && op != .sum) { continue }
                        } else if forced && (ti + oi + ci + ai) % 3 != 0 { continue }
                    }
                    for inPlace in [false, true] {
                        // Misaligned: shift by one byte on alternate runs (elements stay packed).
                        let shift = (checked % 2 == 1) ? 1 : 0
                        let s = send + shift, r = recv + shift
                        seed &+= 1
                        Pattern.fill(inPlace ? r : s, count: count, type: type, op: op, seed: seed, rank: rank)
                        if !inPlace { memset(r, 0xA5, count * type.size) }
                        let what = "allreduce \(setting ?? "auto") \(type) \(op) count \(count) \(inPlace ? "in place" : "out of place") shift \(shift)"
                        do {
                            try c.allReduce(send: inPlace ? UnsafeRawPointer(r) : UnsafeRawPointer(s), recv: r, count: count, type: type, op: op)
                        } catch {
                            check(false, "\(what): \(error)")
                            exit(1)
                        }
                        Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: size)
                        let wrong = Pattern.countWrong(r, want, count: count, type: type, op: op)
                        check(wrong == 0, "\(what): \(wrong) wrong elements")
                        checked += 1
                    }
                }
            }
        }
        if forced { c.destroy() }
    }
    // The typed Swift API.
    var xs = (0..<1001).map { Float($0 % 7) + Float(rank) }
    do { try comm.allReduce(&xs, op: .sum) } catch { check(false, "typed allreduce: \(error)") }
    let base = Float(size * (size - 1) / 2)
    check(xs.enumerated().allSatisfy { $0.element == Float($0.offset % 7) * Float(size) + base }, "typed [Float] allreduce result")
    // Bad arguments: an error, no effect, communicator still usable.
    do { try comm.allReduce(send: nil, recv: recv, count: 5, type: .float32, op: .sum); check(false, "NULL send accepted") }
    catch { check(error.kind == .invalidArgument, "NULL send gives invalidArgument, got \(error)") }
    do { try comm.allReduce(send: send, recv: recv, count: -1, type: .float32, op: .sum); check(false, "negative count accepted") }
    catch { check(error.kind == .invalidArgument, "negative count gives invalidArgument") }
    do { try comm.allReduce(send: send, recv: send + 4, count: 100, type: .float32, op: .sum); check(false, "overlap accepted") }
    catch { check(error.kind == .invalidArgument, "overlapping buffers give invalidArgument") }
    do { try comm.allReduce(&xs, op: .max) } catch { check(false, "communicator unusable after invalid arguments: \(error)") }
    say("checked \(checked) allreduce cases")
    comm.destroy()
    finish()
}

// MARK: - transport conformance scenarios

@MainActor func testbed() -> TransportTestbed {
    do { return try TransportTestbed(backend: backend, id: id, rank: rank, size: size, timeoutMs: timeoutMs) }
    catch { say("FAIL bootstrap: \(error)"); exit(1) }
}

@MainActor func connect(_ tb: TransportTestbed) {
    do { try tb.connect() } catch { say("FAIL connect: \(error)"); exit(1) }
}

/// A byte pattern that depends on (message, index), to check content and order.
@MainActor func fillBytes(_ p: UnsafeMutableRawPointer, _ n: Int, _ message: Int) {
    let b = p.assumingMemoryBound(to: UInt8.self)
    for i in 0..<n { b[i] = UInt8(truncatingIfNeeded: (i &* 31) ^ (message &* 131) ^ (i >> 8)) }
}
@MainActor func checkBytes(_ p: UnsafeRawPointer, _ n: Int, _ message: Int) -> Bool {
    let b = p.assumingMemoryBound(to: UInt8.self)
    for i in 0..<n where b[i] != UInt8(truncatingIfNeeded: (i &* 31) ^ (message &* 131) ^ (i >> 8)) { return false }
    return true
}

@MainActor func waitAll(_ tb: TransportTestbed, _ reqs: [Request], _ what: String) {
    for r in reqs {
        do { try tb.transport.wait(r, deadline: tb.deadline) } catch { check(false, "\(what): \(error)"); return }
    }
}

/// Exchanges messages of `sizes` (bytes) with every peer in both directions at once, at `shift`
/// bytes off alignment, and checks every byte.
@MainActor func exchange(_ tb: TransportTestbed, sizes: [Int], shift: Int, tagBase: UInt64) {
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
        } catch { check(false, "posting size \(n): \(error)"); return }
        waitAll(tb, reqs, "size \(n) shift \(shift)")
        for (rb, peer) in recvs {
            check(checkBytes(rb, n, peer * 1000 + rank * 10 + k), "content of \(n) bytes from rank \(peer) (shift \(shift))")
        }
        bufs.forEach { $0.deallocate() }
    }
}

@MainActor func conformance(_ name: String) {
    let tb = testbed()
    let caps = tb.transport.capabilities
    switch name {
    case "handshake":
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
        connect(tb)
        exchange(tb, sizes: [1, 100], shift: 0, tagBase: 10)
    case "ordering":
        connect(tb)
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
            } catch { check(false, "posting: \(error)") }
            // Completion order within a tag: a later request never completes before an earlier one.
            var done = Set<Int>()
            let deadline = tb.deadline
            while done.count < recvs.count && !deadline.hasPassed {
                for (k, r) in recvs.enumerated() where !done.contains(k) {
                    do {
                        if try tb.transport.test(r.0) {
                            // Every earlier request of the same tag must be complete by now too.
                            for (j, earlier) in recvs.enumerated() where j < k && earlier.3 % 2 == r.3 % 2 && !done.contains(j) {
                                check((try? tb.transport.test(earlier.0)) == true, "message \(r.3) completed before message \(earlier.3) of the same tag")
                                done.insert(j)
                                check(checkBytes(earlier.1, earlier.2, earlier.3), "content/order of message \(earlier.3)")
                            }
                            done.insert(k)
                            check(checkBytes(r.1, r.2, r.3), "content/order of message \(r.3)")
                        }
                    } catch { check(false, "receive \(r.3): \(error)"); done.insert(k) }
                }
            }
            check(done.count == recvs.count, "all ordered messages arrived")
            waitAll(tb, sends, "ordered sends")
            bufs.forEach { $0.deallocate() }
        }
    case "sizes":
        connect(tb)
        exchange(tb, sizes: [0, 1, 7, 4095, (4 << 20) + 3], shift: 0, tagBase: 200)
        if caps.maxMessageBytes >= 256 << 20 { exchange(tb, sizes: [256 << 20], shift: 0, tagBase: 300) }
    case "misaligned":
        connect(tb)
        exchange(tb, sizes: [7, 4095, (1 << 20) + 5], shift: 1, tagBase: 400)
        exchange(tb, sizes: [7, 70_001], shift: 3, tagBase: 410)
    case "many":
        connect(tb)
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
        } catch { check(false, "posting: \(error)") }
        waitAll(tb, reqs, "many outstanding")
        for (rb, n, peer, i) in bufs { check(checkBytes(rb, n, peer * 100_000 + rank * 1000 + i), "message \(i) from \(peer)") }
        say("completed \(reqs.count) requests")
    case "flood":
        // Bounded buffering (Transport.unexpectedTags, UnexpectedBudget): rank 0 sends more empty
        // messages than rank 1 has asked for or may hold; rank 1 keeps at most the budget's worth
        // (the rest wait with the sender), then receives every one, in order, and a last message
        // with data behind them.
        connect(tb)
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
            } catch { check(false, "flood sends: \(error)") }
        } else if rank == 1 {
            // Let the flood arrive until it stops growing for a second.
            var seen = 0, still = 0
            let until = Deadline.after(milliseconds: 30_000)
            while !until.hasPassed && seen < total && still < 10 {
                _ = try? tb.transport.waitForProgress(deadline: .after(milliseconds: 100))
                let now = tb.transport.unexpectedTags(from: 0).count
                if now == seen { still += 1 } else { (seen, still) = (now, 0) }
            }
            say("held \(seen) of \(total) unexpected messages (budget: \(held))")
            check(seen > 0 && seen <= held, "rank 1 held \(seen) unexpected messages from rank 0: more than the budget's \(held)")
            var pending: [Request] = []
            do {
                for _ in 0..<total {
                    if pending.count >= window { try tb.transport.wait(pending.removeFirst(), deadline: tb.deadline) }
                    pending.append(try tb.transport.irecv(from: 0, tag: 700, into: empty))
                }
                memset(last, 0, 100)
                pending.append(try tb.transport.irecv(from: 0, tag: 701, into: UnsafeMutableRawBufferPointer(start: last, count: 100)))
                for q in pending { try tb.transport.wait(q, deadline: tb.deadline) }
                check(checkBytes(last, 100, 77), "the message after the flood")
            } catch { check(false, "flood receives: \(error)") }
        }
    case "register":
        // Buffers registered with the transport (zero-copy for verbs), used several times, deregistered
        // and freed; then fresh unregistered buffers, likely at the same addresses, must receive the
        // new data (a registration left behind would serve the old pages).
        connect(tb)
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
                        check(checkBytes(rb, n, peer * 100 + round * 10 + k), "round \(round) message \(k) (\(round < 2 ? "registered" : "unregistered") buffers)")
                    }
                } catch { check(false, "round \(round): \(error)") }
                regions.forEach { tb.transport.deregister($0) }
                sb.deallocate()
                rb.deallocate()
            }
        }
    case "close":
        // Rank 1 closes cleanly while rank 0 still expects a message from it: rank 0's receive fails
        // with an error naming rank 1; other pairs are unaffected.
        connect(tb)
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
                check(false, "receive from a closed peer succeeded")
            } catch {
                say("error as expected: \(error)")
                check(error.peer == 1, "the error names rank 1 (got \(String(describing: error.peer)))")
                check(error.kind == .remoteError, "a remote error (got \(error.kind))")
            }
            if size > 2 && rank == 0 { exchangeWithout(tb, excluded: 1) }
            if size > 2 && rank != 0 { exchangeWithout(tb, excluded: 1) }
        }
    case "pull":
        // A 4 MiB message from rank 0 to rank 1; rank 1 reports how much its shared-memory transport
        // pulled straight from rank 0's memory (cross-memory attach) instead of through the FIFO.
        connect(tb)
        let n = 4 << 20
        let b = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
        do {
            if rank == 0 {
                fillBytes(b, n, 9)
                try tb.transport.wait(try tb.transport.isend(to: 1, tag: 800, UnsafeRawBufferPointer(start: b, count: n)), deadline: tb.deadline)
            } else if rank == 1 {
                memset(b, 0, n)
                try tb.transport.wait(try tb.transport.irecv(from: 0, tag: 800, into: UnsafeMutableRawBufferPointer(start: b, count: n)), deadline: tb.deadline)
                check(checkBytes(b, n, 9), "the pulled message arrived intact")
                if let shm = tb.transport as? SHMTransport { say("pulled \(shm.bytesPulled) bytes") }
            }
            try tb.barrier()
        } catch { check(false, "transfer: \(error)") }
    case "kill", "stop":
        // Rank 1 dies (SIGKILL) or freezes (SIGSTOP) in the middle of a 256 MiB transfer from rank 0.
        // Every other rank must get an error naming rank 1 within twice the timeout.
        connect(tb)
        let n = 256 << 20
        let b = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 4096)
        memset(b, 1, n)
        try? tb.barrier()
        if rank == 1 {
            do {
                let r = try tb.transport.irecv(from: 0, tag: 700, into: UnsafeMutableRawBufferPointer(start: b, count: n))
                // Take part of the message, then die or freeze.
                for _ in 0..<200 { _ = try tb.transport.test(r) }
            } catch { say("rank 1: \(error)") }
            raise(name == "kill" ? SIGKILL : SIGSTOP)
            exit(0)
        }
        let t0 = Clock.nanos()
        let deadline = tb.deadline
        do {
            if rank == 0 {
                let s = try tb.transport.isend(to: 1, tag: 700, UnsafeRawBufferPointer(start: b, count: n))
                try tb.transport.wait(s, deadline: deadline)
                // With one-sided writes (verbs) the payload lands in a stopped receiver's memory without
                // its CPU, once it has posted the receive: the send may complete. Then wait for a reply
                // the stopped peer cannot send.
                if caps.oneSidedWrites {
                    say("send to rank 1 completed (one-sided write into its posted buffer); waiting for its reply")
                    let r = try tb.transport.irecv(from: 1, tag: 701, into: UnsafeMutableRawBufferPointer(start: b, count: 8))
                    try tb.transport.wait(r, deadline: deadline)
                }
            } else {
                // Others wait for a message rank 1 will never send.
                let r = try tb.transport.irecv(from: 1, tag: 701, into: UnsafeMutableRawBufferPointer(start: b, count: 8))
                try tb.transport.wait(r, deadline: tb.deadline)
            }
            check(false, "the transfer with a \(name == "kill" ? "killed" : "stopped") peer succeeded")
        } catch {
            let ms = Double(Clock.nanos() - t0) / 1e6
            say("error after \(Int(ms)) ms: \(error)")
            check(error.peer == 1, "the error names rank 1 (got \(String(describing: error.peer)))")
            check(ms < Double(2 * timeoutMs), "error within twice the timeout (\(Int(ms)) ms)")
            if name == "stop" { check(error.kind == .timeout, "a timeout error for a stopped peer (got \(error.kind))") }
        }
    default:
        say("FAIL unknown scenario \(name)")
        exit(2)
    }
    tb.transport.close()
    finish()
}

/// After rank 1 closed: the remaining ranks can still talk to each other.
@MainActor func exchangeWithout(_ tb: TransportTestbed, excluded: Int) {
    let others = (0..<size).filter { $0 != excluded && $0 != rank }
    guard let peer = others.first else { return }
    let sb = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
    let rb = UnsafeMutableRawPointer.allocate(byteCount: 1000, alignment: 8)
    fillBytes(sb, 1000, rank)
    do {
        let r = try tb.transport.irecv(from: peer, tag: 650, into: UnsafeMutableRawBufferPointer(start: rb, count: 1000))
        let s = try tb.transport.isend(to: peer, tag: 650, UnsafeRawBufferPointer(start: sb, count: 1000))
        try tb.transport.wait(r, deadline: tb.deadline)
        try tb.transport.wait(s, deadline: tb.deadline)
        check(checkBytes(rb, 1000, peer), "exchange with rank \(peer) after rank \(excluded) closed")
    } catch { check(false, "exchange with rank \(peer) after rank \(excluded) closed: \(error)") }
}

/// A communicator from the launcher's environment (SWCCL_* or torchrun-style variables set by the
/// test), then a small allreduce.
@MainActor func fromEnvironmentScenario() {
    let comm: Communicator
    do { comm = try Communicator.fromEnvironment(config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL fromEnvironment: \(error)"); exit(1) }
    check(comm.size == size && comm.rank == rank, "rank \(comm.rank) of \(comm.size), expected \(rank) of \(size)")
    var xs = [Int32](repeating: Int32(comm.rank + 1), count: 100_003)
    do { try comm.allReduce(&xs, op: .sum) } catch { check(false, "allreduce: \(error)") }
    check(xs.allSatisfy { $0 == Int32(size * (size + 1) / 2) }, "allreduce result")
    comm.destroy()
    finish()
}

/// Init must fail fast and clearly when the interface specification matches nothing.
@MainActor func badInterfaceScenario() {
    let t0 = Clock.nanos()
    do {
        _ = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs))
        check(false, "init succeeded with SWCCL_SOCKET_IFNAME=\(env("SWCCL_SOCKET_IFNAME") ?? "")")
    } catch {
        say("error as expected: \(error)")
        check(error.kind == .invalidArgument, "invalidArgument (got \(error.kind))")
        check(error.cause.contains("SWCCL_SOCKET_IFNAME"), "the message names SWCCL_SOCKET_IFNAME")
        check(Clock.nanos() - t0 < 2_000_000_000, "fails at once")
    }
    finish()
}

/// Ranks disagree on the count (or, with SWCCL_TEST_MISMATCH, on the collective or the forced
/// algorithm): every rank gets an error that names the mismatch (no hang, no wrong data reported as
/// success), and the communicator is broken afterwards.
@MainActor func mismatchScenario() {
    let mismatch = env("SWCCL_TEST_MISMATCH") ?? "count"
    let algorithm = mismatch == "algorithm" ? (rank == 1 ? "allreduce:ring" : "allreduce:tree") : nil
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs, algorithm: algorithm)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    let base = Int(env("SWCCL_TEST_COUNT") ?? "1000") ?? 1000
    let otherCollective = mismatch == "collective"
    var xs = [Float](repeating: 1, count: base * (rank == 1 && mismatch == "count" ? 2 : 1))
    let t0 = Clock.nanos()
    do {
        if otherCollective && rank == 1 {
            // Rank 1 broadcasts while the others allreduce the same count.
            try xs.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: base, type: .float32, root: 0) } }.get()
        } else {
            try comm.allReduce(&xs, op: .sum)
        }
        check(false, "allreduce with mismatched counts succeeded")
    } catch {
        say("error as expected: \(error)")
        check(Clock.nanos() - t0 < UInt64(timeoutMs) * 2_000_000, "error within twice the timeout")
        if error.kind != .timeout {
            check(error.cause.contains("size mismatch") || error.cause.contains("expected another size") || error.cause.contains("rank"),
                  "the error explains the mismatch: \(error.cause)")
        }
        check(comm.asyncError != nil, "the communicator is marked broken")
    }
    do { try comm.allReduce(&xs, op: .sum); check(false, "a broken communicator accepted another collective") }
    catch { check(error.cause.contains("broken"), "later calls say the communicator is broken: \(error)") }
    comm.abort()
    finish()
}

// MARK: - argument agreement

/// One call of the `disagree` scenario: what this rank passes.
struct DisagreeCall {
    var coll = "allreduce"
    var count = 1000
    var type = DataType.float32
    var op = ReduceOp.sum
    var root = 0
    var preMul = false
    var algo: String? = nil
}

/// A case: every rank's call; `all`: every rank must fail with the mismatch (else only `culprit` must,
/// and the others either fail the same way or succeed with the result their own arguments promise);
/// `word`: what the culprit's error must name.
struct DisagreeCase {
    let name: String
    let all: Bool
    let culprit: Int
    let word: String
    let call: (Int, Int) -> DisagreeCall
}

@MainActor func disagreeCases(_ n: Int, shm: Bool) -> [DisagreeCase] {
    var cases: [DisagreeCase] = []
    let last = n - 1
    let other = n > 2 ? 1 : 0  // the root the last rank names when the others name 0
    func c(_ name: String, all: Bool, culprit: Int = n - 1, _ word: String, _ f: @escaping (Int, Int) -> DisagreeCall) {
        cases.append(DisagreeCase(name: name, all: all, culprit: culprit, word: word, call: f))
    }
    let bcastAlgos = ["chain", "binomial"] + (shm ? ["staged"] : [])
    for a in bcastAlgos {
        c("broadcast root=self \(a)", all: true, "root") { r, _ in DisagreeCall(coll: "broadcast", root: r, algo: "broadcast:\(a)") }
        c("broadcast one root \(a)", all: false, "root") { r, _ in DisagreeCall(coll: "broadcast", root: r == last ? (n > 2 ? other : 1) : 0, algo: "broadcast:\(a)") }
        c("broadcast one count \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "broadcast", count: r == last ? 1001 : 1000, algo: "broadcast:\(a)") }
        c("broadcast one count 0 \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "broadcast", count: r == last ? 0 : 1000, algo: "broadcast:\(a)") }
    }
    for a in ["chain", "binomial"] {
        c("reduce root=self \(a)", all: true, "root") { r, _ in DisagreeCall(coll: "reduce", root: r, algo: "reduce:\(a)") }
        c("reduce one root \(a)", all: false, "root") { r, _ in DisagreeCall(coll: "reduce", root: r == last ? (n > 2 ? other : 1) : 0, algo: "reduce:\(a)") }
        c("reduce one op \(a)", all: false, "op") { r, _ in DisagreeCall(coll: "reduce", op: r == last ? .max : .sum, algo: "reduce:\(a)") }
        c("reduce one count 0 \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "reduce", count: r == last ? 0 : 1000, algo: "reduce:\(a)") }
    }
    for coll in ["gather", "scatter"] {
        c("\(coll) root=self", all: true, "root") { r, _ in DisagreeCall(coll: coll, root: r) }
        c("\(coll) one root", all: false, "root") { r, _ in DisagreeCall(coll: coll, root: r == last ? (n > 2 ? other : 1) : 0) }
        c("\(coll) one count 0", all: false, "count") { r, _ in DisagreeCall(coll: coll, count: r == last ? 0 : 1000) }
    }
    let arAlgos = ["ring", "tree", "recdbl", "rabenseifner"] + (shm ? ["oneshot", "staged"] : [])
    for a in arAlgos {
        c("allreduce count 0 on rank 0 \(a)", all: true, culprit: 0, "count") { r, _ in DisagreeCall(count: r == 0 ? 0 : 1000, algo: "allreduce:\(a)") }
        c("allreduce count 0 on the others \(a)", all: true, culprit: 0, "count 0") { r, _ in DisagreeCall(count: r == 0 ? 1000 : 0, algo: "allreduce:\(a)") }
        c("allreduce count \(a)", all: true, "count") { r, _ in DisagreeCall(count: r == last ? 1001 : 1000, algo: "allreduce:\(a)") }
    }
    c("allreduce type", all: true, "type") { r, _ in DisagreeCall(type: r == last ? .int32 : .float32) }
    c("allreduce op", all: true, "op") { r, _ in DisagreeCall(op: r == last ? .max : .sum) }
    c("allreduce premulsum", all: true, "pre-multiplied") { r, _ in DisagreeCall(preMul: r == last) }
    c("allreduce algorithm", all: true, "algorithm") { r, _ in DisagreeCall(algo: r == last ? "allreduce:ring" : (shm ? "allreduce:oneshot" : "allreduce:recdbl")) }
    for a in ["ring", "recdbl"] + (shm ? ["staged"] : []) {
        c("allgather count \(a)", all: true, "count") { r, _ in DisagreeCall(coll: "allgather", count: r == last ? 1001 : 1000, algo: "allgather:\(a)") }
    }
    for a in ["ring", "halving"] + (shm ? ["staged"] : []) {
        c("reducescatter count \(a)", all: true, "count") { r, _ in DisagreeCall(coll: "reducescatter", count: r == last ? 1001 : 1000, algo: "reducescatter:\(a)") }
    }
    for coll in ["allgather", "reducescatter", "alltoall"] {
        c("\(coll) count 0 on rank 0", all: true, culprit: 0, "count") { r, _ in DisagreeCall(coll: coll, count: r == 0 ? 0 : 1000) }
    }
    c("alltoall count", all: true, "count") { r, _ in DisagreeCall(coll: "alltoall", count: r == last ? 1001 : 1000) }
    c("barrier against allreduce of 0", all: true, culprit: 0, "barrier") { r, _ in DisagreeCall(coll: r == 0 ? "barrier" : "allreduce", count: 0) }
    c("group in another order", all: true, culprit: 0, "broadcast") { r, _ in DisagreeCall(coll: r == 0 ? "group-ab" : "group-ba") }
    c("send/recv count (eager)", all: false, culprit: 1, "size mismatch") { r, _ in DisagreeCall(coll: r == 0 ? "send" : r == 1 ? "recv" : "none", count: r == 1 ? 101 : 100) }
    c("send/recv count (large)", all: true, culprit: 1, "size mismatch") { r, _ in DisagreeCall(coll: r == 0 ? "send" : r == 1 ? "recv" : "none", count: r == 1 ? (1 << 20) + 1 : 1 << 20) }
    return cases
}

/// Ranks that pass different arguments to one call (root, count, type, op, pre-multiplied sum,
/// algorithm, collective, order inside a group; send/recv sizes): each case runs on a communicator
/// split off for it. The disagreeing rank must get an invalidUsage error naming the argument, every
/// rank of an `all` case must get one, and a rank that returns success must hold the result its own
/// arguments promise (never wrong data). SWCCL_TEST_CASES: only cases whose name contains it.
@MainActor func disagreeScenario() {
    let comm: Communicator
    // The parent waits (barrier) while a peer may still be in a case: three times the cases' timeout.
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: 3 * timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let n = size
    let filter = env("SWCCL_TEST_CASES")
    let cases = disagreeCases(n, shm: comm.transportName == "shm").filter { filter == nil || $0.name.contains(filter!) }
    let maxBytes = (1 << 20) * 8 * max(n, 1) + 4096
    let send = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let recv = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    var ran = 0
    for kase in cases {
        let call = kase.call(rank, n)
        let sub: Communicator
        do { sub = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: call.algo))! }
        catch { say("FAIL split for \(kase.name): \(error)"); exit(1) }
        // Block j of this rank's input: 100 (rank + 1) + j in every element.
        let blocks = call.coll == "allreduce" || call.coll == "broadcast" || call.coll == "reduce" || call.coll == "gather" ? 1 : n
        for j in 0..<blocks {
            for i in 0..<call.count {
                let v = 100 * (rank + 1) + j
                if call.type == .int32 { send.storeBytes(of: Int32(v), toByteOffset: (j * call.count + i) * 4, as: Int32.self) }
                else { send.storeBytes(of: Float(v), toByteOffset: (j * call.count + i) * 4, as: Float.self) }
            }
        }
        memset(recv, 0, call.count * n * 4 + 64)
        let t0 = Clock.nanos()
        let outcome = catching { () throws(CCLError) in
            let c = call.count, t = call.type
            switch call.coll {
            case "allreduce": try sub.allReduce(send: send, recv: recv, count: c, type: t, op: call.op, preMulSum: call.preMul ? .of(Float(1)) : nil)
            case "broadcast": try sub.broadcast(send: send, recv: recv, count: c, type: t, root: call.root)
            case "reduce": try sub.reduce(send: send, recv: recv, count: c, type: t, op: call.op, root: call.root)
            case "gather": try sub.gather(send: send, recv: recv, count: c, type: t, root: call.root)
            case "scatter": try sub.scatter(send: send, recv: recv, count: c, type: t, root: call.root)
            case "allgather": try sub.allGather(send: send, recv: recv, sendCount: c, type: t)
            case "reducescatter": try sub.reduceScatter(send: send, recv: recv, recvCount: c, type: t, op: call.op)
            case "alltoall": try sub.allToAll(send: send, recv: recv, count: c, type: t)
            case "barrier": try sub.barrier()
            case "group-ab", "group-ba":
                Group.start()
                let ab = call.coll == "group-ab"
                do throws(CCLError) {
                    for k in ab ? [0, 1] : [1, 0] {
                        if k == 0 { try sub.allReduce(send: send, recv: recv, count: c, type: t, op: .sum) }
                        else { try sub.broadcast(send: send + 8 * c, recv: recv + 8 * c, count: c, type: t, root: 0) }
                    }
                } catch { _ = try? Group.end(); throw error }
                try Group.end()
            case "send": try sub.send(send, count: c, type: t, to: 1)
            case "recv": try sub.recv(recv, count: c, type: t, from: 0)
            default: break
            }
        }
        let ms = Double(Clock.nanos() - t0) / 1e6
        let mustFail = (kase.all && call.coll != "none") || rank == kase.culprit
        switch outcome {
        case .failure(let e):
            say("\(kase.name): \(Int(ms)) ms: \(e)")
            check(e.kind == .invalidUsage, "\(kase.name): invalidUsage, not \(e.kindName): \(e)")
            check(e.cause.contains("different arguments") || e.cause.contains("size mismatch") || e.cause.contains("another size"), "\(kase.name): the error says the ranks disagree: \(e)")
            check(e.peer != nil, "\(kase.name): the error names a peer: \(e)")
            if rank == kase.culprit || e.cause.contains("different arguments:") {
                // Whoever saw the disagreeing arguments themselves names the argument.
                // (Unless the culprit never received anything from the rank that saw it — a zero-count
                // peer's barrier may not reach it — and learns of it from that rank's notice: then it
                // names that rank, which found its arguments different.)
                if rank == kase.culprit && !e.cause.contains("blames this rank") {
                    check(e.cause.contains(kase.word), "\(kase.name): the error names the \(kase.word): \(e)")
                }
            }
        case .success:
            say("\(kase.name): \(Int(ms)) ms: success")
            check(!mustFail, "\(kase.name): the call succeeded on rank \(rank), which must see the mismatch")
            // Success only with the result this rank's own arguments promise.
            var wrong = 0
            func at(_ k: Int) -> Double {
                call.type == .int32 ? Double(recv.load(fromByteOffset: k * 4, as: Int32.self)) : Double(recv.load(fromByteOffset: k * 4, as: Float.self))
            }
            let sumAll = Double(100 * n * (n + 1) / 2)
            for i in 0..<call.count {
                switch call.coll {
                case "broadcast": if at(i) != Double(100 * (call.root + 1)) { wrong += 1 }
                case "reduce": if rank == call.root && at(i) != (call.op == .max ? Double(100 * n) : sumAll) { wrong += 1 }
                case "scatter": if at(i) != Double(100 * (call.root + 1) + rank) { wrong += 1 }
                case "gather": if rank == call.root { for j in 0..<n where at(j * call.count + i) != Double(100 * (j + 1)) { wrong += 1 } }
                case "recv", "send", "none": break
                default: wrong += 1  // allreduce, allgather, reducescatter, alltoall, barrier: never legitimately alone
                }
            }
            check(wrong == 0, "\(kase.name): success with \(wrong) wrong elements")
        }
        if case .failure = outcome { check(sub.asyncError != nil || call.coll == "send" || call.coll == "recv", "\(kase.name): the communicator is broken") }
        // Everyone has its outcome before any rank tears its communicator down (a teardown would
        // end a waiting peer's call with "rank X aborted" instead of what that peer found itself).
        do { try comm.barrier() } catch { say("FAIL barrier after \(kase.name): \(error)"); exit(1) }
        sub.abort()
        sub.destroy()
        ran += 1
    }
    say("ran \(ran) disagreement cases")
    comm.destroy()
    finish()
}

/// Every other collective: broadcast, reduce, all-gather, reduce-scatter, all-to-all, gather,
/// scatter, send/recv and barrier; several types, ops and roots, counts 0 … 100003, in place and out
/// of place, exact results.
@MainActor func collectivesScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let n = size
    let full = env("SWCCL_TEST_FULL") == "1"
    // Sampled: 8 types, one op per (type, count); SWCCL_TEST_FULL=1: every type and op, up to 1 Mi+1.
    let counts = full ? [0, 1, 7, 1000, (1 << 20) + 1] : [0, 1, 7, 1000, 100_003]
    let types: [DataType] = full ? DataType.allCases : [.int8, .uint32, .int64, .float16, .float32, .float64, .bfloat16, .float8e4m3]
    let cap = counts.max()! * n * 8 + 64
    let sbuf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    let rbuf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    let want = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    var seed: UInt64 = 1000
    var cases = 0
    func run(_ what: String, _ body: () throws(CCLError) -> Void) {
        do { try body() } catch { check(false, "\(what): \(error)"); exit(1) }
    }
    // The model's choice, then every algorithm forced (on communicators split off with that setting);
    // forced settings run half of the types unless SWCCL_TEST_FULL=1. SWCCL_TEST_ALGO runs one setting.
    // (`staged` forced over TCP is not available there: the model's choice runs instead.)
    let settings: [String?] = env("SWCCL_TEST_ALGO").map { [$0] } ?? [nil, "allgather:ring,reducescatter:ring,broadcast:chain,reduce:chain",
                               "allgather:recdbl,reducescatter:halving,broadcast:binomial,reduce:binomial",
                               "allgather:staged,reducescatter:staged,broadcast:staged"]
    for (ai, setting) in settings.enumerated() {
        let base = comm
        let comm: Communicator
        if let setting {
            do { comm = try base.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: setting))! }
            catch { say("FAIL split for \(setting): \(error)"); exit(1) }
        } else { comm = base }
        defer { if setting != nil { comm.destroy() } }
        for (ti, type) in types.enumerated() where full || setting == nil || (ti + ai) % 2 == 0 {
            let es = type.size
            let ops = ReduceOp.allCases
            for (ci, count) in counts.enumerated() {
              for op in (full ? ops : [ops[(ti + ci) % ops.count]]) {
                let root = (ti + ci) % n
                for inPlace in [false, true] {
                    seed &+= 1
                    // Misaligned by one byte on alternate cases (elements stay packed).
                    let shift = ((cases >> 1) ^ cases) & 1  // both placements see both alignments
                    let sb = sbuf + shift, rb = rbuf + shift
                    let tag = "[\(setting ?? "auto")] \(type) count \(count) \(inPlace ? "in place" : "out of place") shift \(shift)"
                    // broadcast
                    Pattern.fill(sb, count: count, type: type, op: .max, seed: seed, rank: root)
                    if rank != root { memset(rb, 0, count * es) } else if inPlace { rb.copyMemory(from: sb, byteCount: count * es) }
                    run("broadcast \(tag)") { () throws(CCLError) in
                        try comm.broadcast(send: inPlace ? UnsafeRawPointer(rb) : UnsafeRawPointer(sb), recv: rb, count: count, type: type, root: root)
                    }
                    Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: root)
                    check(Pattern.countWrong(rb, want, count: count, type: type, op: .max) == 0, "broadcast \(tag) root \(root)")
                    // reduce
                    Pattern.fill(inPlace ? rb : sb, count: count, type: type, op: op, seed: seed, rank: rank)
                    run("reduce \(tag)") { () throws(CCLError) in
                        try comm.reduce(send: inPlace ? UnsafeRawPointer(rb) : UnsafeRawPointer(sb), recv: rb, count: count, type: type, op: op, root: root)
                    }
                    if rank == root {
                        Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: n)
                        check(Pattern.countWrong(rb, want, count: count, type: type, op: op) == 0, "reduce \(op) \(tag) root \(root)")
                    }
                    // all-gather: block r of the output is rank r's input
                    let mine = inPlace ? rb + rank * count * es : sb
                    Pattern.fill(mine, count: count, type: type, op: .max, seed: seed, rank: rank)
                    run("allgather \(tag)") { () throws(CCLError) in
                        try comm.allGather(send: UnsafeRawPointer(mine), recv: rb, sendCount: count, type: type)
                    }
                    for r in 0..<n { Pattern.fill(want + r * count * es, count: count, type: type, op: .max, seed: seed, rank: r) }
                    check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "allgather \(tag)")
                    // reduce-scatter: block r of the reduced array lands on rank r
                    Pattern.fill(sb, count: count * n, type: type, op: op, seed: seed, rank: rank)
                    let out = inPlace ? sb + rank * count * es : rb
                    run("reducescatter \(tag)") { () throws(CCLError) in
                        try comm.reduceScatter(send: UnsafeRawPointer(sb), recv: out, recvCount: count, type: type, op: op)
                    }
                    Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: n, offset: rank * count)
                    check(Pattern.countWrong(out, want, count: count, type: type, op: op) == 0, "reducescatter \(op) \(tag)")
                    // gather / scatter (in place: the root's own block already sits in the big buffer)
                    let gmine = inPlace && rank == root ? rb + root * count * es : sb
                    Pattern.fill(gmine, count: count, type: type, op: .max, seed: seed, rank: rank)
                    run("gather \(tag)") { () throws(CCLError) in
                        try comm.gather(send: UnsafeRawPointer(gmine), recv: rb, count: count, type: type, root: root)
                    }
                    if rank == root {
                        for r in 0..<n { Pattern.fill(want + r * count * es, count: count, type: type, op: .max, seed: seed, rank: r) }
                        check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "gather \(tag) root \(root)")
                    }
                    if rank == root { Pattern.fill(sb, count: count * n, type: type, op: .max, seed: seed, rank: root) }
                    let sout = inPlace && rank == root ? sb + root * count * es : rb
                    run("scatter \(tag)") { () throws(CCLError) in
                        try comm.scatter(send: UnsafeRawPointer(sb), recv: sout, count: count, type: type, root: root)
                    }
                    Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: root, offset: rank * count)
                    check(Pattern.countWrong(sout, want, count: count, type: type, op: .max) == 0, "scatter \(tag) root \(root)")
                    // all-to-all: block j of rank r's input is (seed, r, offset j*count); r receives j's block r
                    if !inPlace {
                        Pattern.fill(sb, count: count * n, type: type, op: .max, seed: seed, rank: rank)
                        run("alltoall \(tag)") { () throws(CCLError) in try comm.allToAll(send: sb, recv: rb, count: count, type: type) }
                        for j in 0..<n { Pattern.fill(want + j * count * es, count: count, type: type, op: .max, seed: seed, rank: j, offset: rank * count) }
                        check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "alltoall \(tag)")
                        // send/recv ring shift
                        Pattern.fill(sb, count: count, type: type, op: .max, seed: seed, rank: rank)
                        let right = (rank + 1) % n, left = (rank + n - 1) % n
                        run("sendrecv \(tag)") { () throws(CCLError) in
                            try comm.sendRecv(send: sb, count: count, type: type, to: right, recv: rb, recvCount: count, from: left)
                        }
                        Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: left)
                        check(Pattern.countWrong(rb, want, count: count, type: type, op: .max) == 0, "sendrecv \(tag)")
                    }
                    cases += 1
                }
              }
            }
        }
    }
    // Blocking send/recv in call order: rank 0 sends three messages to every other rank.
    if n > 1 {
        var a = [Int32](repeating: 0, count: 5000)
        for k in 0..<3 {
            if rank == 0 {
                for p in 1..<n {
                    a = (0..<5000).map { Int32($0 + k * 7 + p) }
                    run("send") { () throws(CCLError) in try a.withUnsafeBytes { b in catching { () throws(CCLError) in try comm.send(b.baseAddress, count: 5000, type: .int32, to: p) } }.get() }
                }
            } else {
                run("recv") { () throws(CCLError) in try a.withUnsafeMutableBytes { b in catching { () throws(CCLError) in try comm.recv(b.baseAddress, count: 5000, type: .int32, from: 0) } }.get() }
                check(a.enumerated().allSatisfy { $0.element == Int32($0.offset + k * 7 + rank) }, "message \(k) from rank 0 in order")
            }
        }
    }
    // Pre-multiplied sums: allreduce (float ×2), reduce (double ×0.5, read from memory at each call),
    // reduce-scatter (int32 ×3, wrapping), in place and out of place.
    do {
        let c = 10_007
        for inPlace in [false, true] {
            Pattern.fill(inPlace ? rbuf : sbuf, count: c, type: .float32, op: .sum, seed: 501, rank: rank)
            run("premulsum allreduce") { () throws(CCLError) in
                try comm.allReduce(send: inPlace ? rbuf : sbuf, recv: rbuf, count: c, type: .float32, op: .sum, preMulSum: .of(Float(2)))
            }
            Pattern.expected(want, count: c, type: .float32, op: .sum, seed: 501, nranks: n)
            let w = want.assumingMemoryBound(to: Float.self)
            for i in 0..<c { w[i] *= 2 }
            check(Pattern.countWrong(rbuf, want, count: c, type: .float32, op: .sum) == 0, "premulsum allreduce (in place \(inPlace))")

            var half = 0.5
            Pattern.fill(sbuf, count: c, type: .float64, op: .sum, seed: 502, rank: rank)
            let pm = withUnsafeBytes(of: &half) { PreMulSum(type: .float64, readingScalarAt: $0.baseAddress!) }
            run("premulsum reduce") { () throws(CCLError) in
                try comm.reduce(send: sbuf, recv: rbuf, count: c, type: .float64, op: .sum, root: n - 1, preMulSum: pm)
            }
            if rank == n - 1 {
                Pattern.expected(want, count: c, type: .float64, op: .sum, seed: 502, nranks: n)
                let d = want.assumingMemoryBound(to: Double.self)
                for i in 0..<c { d[i] *= 0.5 }
                check(Pattern.countWrong(rbuf, want, count: c, type: .float64, op: .sum) == 0, "premulsum reduce")
            }

            var three: Int32 = 3
            Pattern.fill(sbuf, count: c * n, type: .int32, op: .sum, seed: 503, rank: rank)
            let out = inPlace ? sbuf + rank * c * 4 : rbuf
            let pm3 = withUnsafeBytes(of: &three) { PreMulSum(type: .int32, scalarBytes: $0.baseAddress!) }
            run("premulsum reducescatter") { () throws(CCLError) in
                try comm.reduceScatter(send: sbuf, recv: out, recvCount: c, type: .int32, op: .sum, preMulSum: pm3)
            }
            Pattern.expected(want, count: c, type: .int32, op: .sum, seed: 503, nranks: n, offset: rank * c)
            let iw = want.assumingMemoryBound(to: Int32.self)
            for i in 0..<c { iw[i] = iw[i] &* 3 }
            check(Pattern.countWrong(out, want, count: c, type: .int32, op: .sum) == 0, "premulsum reducescatter (in place \(inPlace))")
        }
        do { try comm.allReduce(send: sbuf, recv: rbuf, count: 4, type: .int32, op: .sum, preMulSum: .of(Float(1))); check(false, "type mismatch accepted") }
        catch { check(error.kind == .invalidArgument, "pre-multiplied sum of another type: invalidArgument") }
    }

    // A group: every rank sends 1 MiB (rendezvous) to both neighbours and receives from both, with
    // blocking calls that would deadlock outside a group; plus two collectives recorded in the group.
    if n > 1 {
        let big = 1 << 18
        let out = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        let inL = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        let inR = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        Pattern.fill(out, count: big, type: .float32, op: .max, seed: 77, rank: rank)
        var sum = [Int64](repeating: Int64(rank + 1), count: 33)
        var bc = [Int32](repeating: rank == 0 ? 42 : 0, count: 1000)
        let right = (rank + 1) % n, left = (rank + n - 1) % n
        Group.start()
        run("group send/recv") { () throws(CCLError) in
            try comm.send(out, count: big, type: .float32, to: right)
            try comm.send(out, count: big, type: .float32, to: left)
            try comm.recv(inL, count: big, type: .float32, from: left)
            try comm.recv(inR, count: big, type: .float32, from: right)
            try sum.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.allReduce(send: b.baseAddress, recv: b.baseAddress, count: 33, type: .int64, op: .sum) } }.get()
            try bc.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: 1000, type: .int32, root: 0) } }.get()
        }
        do { try Group.end() } catch { check(false, "group end: \(error)"); exit(1) }
        Pattern.fill(want, count: big, type: .float32, op: .max, seed: 77, rank: n == 2 ? left : left)
        check(Pattern.countWrong(inL, want, count: big, type: .float32, op: .max) == 0, "group: message from the left")
        Pattern.fill(want, count: big, type: .float32, op: .max, seed: 77, rank: right)
        check(Pattern.countWrong(inR, want, count: big, type: .float32, op: .max) == 0, "group: message from the right")
        check(sum.allSatisfy { $0 == Int64(n * (n + 1) / 2) }, "group: allreduce inside the group")
        check(bc.allSatisfy { $0 == 42 }, "group: broadcast inside the group")
    }
    run("barrier") { () throws(CCLError) in try comm.barrier() }
    // Bad roots and in-place all-to-all are argument errors and leave the communicator usable.
    do { try comm.broadcast(send: sbuf, recv: rbuf, count: 4, type: .float32, root: n); check(false, "root out of range accepted") }
    catch { check(error.kind == .invalidArgument, "bad root: invalidArgument") }
    do { try comm.allToAll(send: sbuf, recv: sbuf, count: 4, type: .float32); if n > 0 { check(false, "in-place all-to-all accepted") } }
    catch { check(error.kind == .invalidArgument, "in-place all-to-all: invalidArgument") }
    run("barrier after bad calls") { () throws(CCLError) in try comm.barrier() }
    say("checked \(cases) collective cases")
    comm.destroy()
    finish()
}

/// Streams: operations enqueued in order, query/synchronize, errors reported by synchronize; two
/// communicators (the second's id broadcast over the first) used at once from two streams.
@MainActor func streamsScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    func run(_ what: String, _ body: () throws(CCLError) -> Void) {
        do { try body() } catch { check(false, "\(what): \(error)"); exit(1) }
    }
    // A second communicator: rank 0 makes its id and broadcasts it over the first.
    var idBytes = [UInt8](repeating: 0, count: UniqueID.byteCount)
    if rank == 0 { run("make id") { () throws(CCLError) in idBytes = try UniqueID.make().bytes } }
    run("broadcast id") { () throws(CCLError) in
        try idBytes.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
            try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: b.count, type: .uint8, root: 0) } }.get()
    }
    let comm2: Communicator
    do { comm2 = try Communicator(id: try UniqueID(bytes: idBytes), rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init of the second communicator: \(error)"); exit(1) }

    let s1: ExecutionStream, s2: ExecutionStream
    do { s1 = try ExecutionStream(); s2 = try ExecutionStream() } catch { say("FAIL stream: \(error)"); exit(1) }
    let k = 8, count = 300_001
    let bufs = (0..<k).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64) }
    let bufs2 = (0..<k).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64) }
    for j in 0..<k {
        Pattern.fill(bufs[j], count: count, type: .float32, op: .sum, seed: UInt64(j), rank: rank)
        Pattern.fill(bufs2[j], count: count, type: .int64, op: .max, seed: UInt64(50 + j), rank: rank)
    }
    // Enqueue on both streams from this thread: calls return at once; the two communicators progress
    // at the same time on the streams' threads.
    run("enqueue") { () throws(CCLError) in
        try s1.submit { () throws(CCLError) in
            for j in 0..<k { try comm.allReduce(send: bufs[j], recv: bufs[j], count: count, type: .float32, op: .sum) }
        }
        try s2.submit { () throws(CCLError) in
            for j in 0..<k { try comm2.allReduce(send: bufs2[j], recv: bufs2[j], count: count, type: .int64, op: .max) }
        }
    }
    // Arguments are checked at the call, not later.
    do { try s1.submit { () throws(CCLError) in try comm.allReduce(send: nil, recv: bufs[0], count: 5, type: .float32, op: .sum) }; check(false, "NULL send accepted") }
    catch { check(error.kind == .invalidArgument, "argument errors are thrown by the enqueuing call") }
    run("synchronize 1") { () throws(CCLError) in try s1.synchronize() }
    run("synchronize 2") { () throws(CCLError) in try s2.synchronize() }
    check(s1.query() != nil, "query after synchronize says done")
    let want = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
    for j in 0..<k {
        Pattern.expected(want, count: count, type: .float32, op: .sum, seed: UInt64(j), nranks: size)
        check(Pattern.countWrong(bufs[j], want, count: count, type: .float32, op: .sum) == 0, "stream 1 allreduce \(j)")
        Pattern.expected(want, count: count, type: .int64, op: .max, seed: UInt64(50 + j), nranks: size)
        check(Pattern.countWrong(bufs2[j], want, count: count, type: .int64, op: .max) == 0, "stream 2 allreduce \(j)")
    }
    // An error during a stream's run comes back from synchronize: the ranks disagree on the count.
    if size > 1 {
        let c = rank == 1 ? 2000 : 1000
        run("enqueue mismatch") { () throws(CCLError) in
            try s2.submit { () throws(CCLError) in try comm2.allReduce(send: bufs2[0], recv: bufs2[0], count: c, type: .int64, op: .sum) }
        }
        do { try s2.synchronize(); check(false, "synchronize reported no error for mismatched calls") }
        catch { say("synchronize reported: \(error)"); check(error.kind != .invalidArgument, "a run-time error, not an argument error") }
    }
    do { try s1.destroy(); try s2.destroy() } catch { check(false, "destroy: \(error)") }
    comm.destroy()
    comm2.abort()
    finish()
}

/// Split by parity, ordered by descending rank; the last rank joins none.
@MainActor func splitScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    let none = size > 2 && rank == size - 1
    let color = none ? Communicator.splitNoColor : rank % 2
    let sub: Communicator?
    do { sub = try comm.split(color: color, key: -rank) } catch { say("FAIL split: \(error)"); exit(1) }
    let members = (0..<size).filter { $0 % 2 == rank % 2 && !(size > 2 && $0 == size - 1) }.sorted(by: >)
    if none {
        check(sub == nil, "no communicator for SWCCL_SPLIT_NOCOLOR")
    } else if let sub {
        check(sub.size == members.count, "new size \(sub.size), expected \(members.count)")
        check(sub.rank == members.firstIndex(of: rank), "new rank \(sub.rank), expected \(String(describing: members.firstIndex(of: rank)))")
        var xs = [Int64](repeating: Int64(rank), count: 10_007)
        do { try sub.allReduce(&xs, op: .sum) } catch { check(false, "allreduce on the split: \(error)") }
        check(xs.allSatisfy { $0 == Int64(members.reduce(0, +)) }, "allreduce on the split sums its members")
        sub.destroy()
    } else {
        check(false, "split returned no communicator")
    }
    // The parent still works.
    var ys = [Int32](repeating: 1, count: 100)
    do { try comm.allReduce(&ys, op: .sum) } catch { check(false, "parent after split: \(error)") }
    check(ys.allSatisfy { $0 == Int32(size) }, "parent allreduce after split")
    do { _ = try comm.split(color: -5, key: 0); check(false, "negative color accepted") }
    catch { check(error.kind == .invalidArgument, "negative color: invalidArgument") }
    comm.destroy()
    finish()
}

switch scenario {
case "allreduce": allreduceScenario()
case "split": splitScenario()
case "streams": streamsScenario()
case "collectives": collectivesScenario()
case "mismatch": mismatchScenario()
case "disagree": disagreeScenario()
case "fromenv": fromEnvironmentScenario()
case "badiface": badInterfaceScenario()
case "besieged": besiegedScenario()
case "late": lateScenario()
case "diesinrendezvous": diesInRendezvousScenario()
case "blame": blameScenario()
case "crosscomm": crossCommunicatorScenario()
case "shrinklabel": shrinkLabelScenario()
default: conformance(scenario)
}
