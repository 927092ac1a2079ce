import Glibc
import XCTest
import SwiftCCLTesting
import SwcclVerify

/// Ranks as threads of one process (`Communicator.initAll`, `swcclCommInitAll`).
final class ThreadRankTests: XCTestCase {
    override func setUp() { setenv("SWCCL_SOCKET_IFNAME", "lo", 1) }

    /// One thread drives every rank through a stream per communicator.
    func testInitAllWithStreams() throws {
        for n in [1, 3, 4] {
            let comms = try Communicator.initAll(count: n, config: CommConfig(timeoutMs: 20_000))
            XCTAssertEqual(comms.map(\.rank), Array(0..<n))
            let count = 100_003
            let bufs = (0..<n).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64) }
            let want = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
            for (r, b) in bufs.enumerated() { Pattern.fill(b, count: count, type: .float32, op: .sum, seed: 9, rank: r) }
            let streams = try comms.map { _ in try ExecutionStream() }
            for (r, c) in comms.enumerated() {
                try streams[r].submit { () throws(CCLError) in
                    try c.allReduce(send: bufs[r], recv: bufs[r], count: count, type: .float32, op: .sum)
                    try c.barrier()
                }
            }
            for s in streams { try s.synchronize() }
            Pattern.expected(want, count: count, type: .float32, op: .sum, seed: 9, nranks: n)
            for (r, b) in bufs.enumerated() {
                XCTAssertEqual(Pattern.countWrong(b, want, count: count, type: .float32, op: .sum), 0, "rank \(r) of \(n)")
            }
            for s in streams { try s.destroy() }
            comms.forEach { $0.destroy() }
        }
    }

    /// Events (`StreamEvent`) after each of several operations on a stream per rank: each completes
    /// once its operation did (its buffer is then final), in order; before the other rank joined the
    /// first is pending; a wait with a timeout says so.
    func testStreamEvents() throws {
        let n = 2, ops = 5, count = 50_001
        let comms = try Communicator.initAll(count: n, config: CommConfig(timeoutMs: 20_000))
        let streams = try comms.map { _ in try ExecutionStream() }
        let bufs = (0..<n).map { _ in (0..<ops).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64) } }
        let want = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
        let events = (0..<n).map { _ in (0..<ops).map { _ in StreamEvent() } }
        XCTAssertNotNil(try? events[0][0].query()?.get(), "a new event is complete")
        for r in 0..<n {
            for k in 0..<ops { Pattern.fill(bufs[r][k], count: count, type: .float32, op: .sum, seed: UInt64(k), rank: r) }
        }
        // Rank 0 alone first: its first operation cannot complete without rank 1.
        try streams[0].submit { () throws(CCLError) in
            try comms[0].allReduce(send: bufs[0][0], recv: bufs[0][0], count: count, type: .float32, op: .sum)
        }
        events[0][0].record(on: streams[0])
        XCTAssertNil(events[0][0].query(), "pending while rank 1 has not joined")
        XCTAssertNil(events[0][0].wait(timeoutMs: 20), "a wait with a timeout says pending")
        for r in 0..<n {
            for k in (r == 0 ? 1 : 0)..<ops {
                try streams[r].submit { () throws(CCLError) in
                    try comms[r].allReduce(send: bufs[r][k], recv: bufs[r][k], count: count, type: .float32, op: .sum)
                }
                events[r][k].record(on: streams[r])
            }
        }
        for r in 0..<n {
            for k in 0..<ops {
                guard case .success? = events[r][k].wait(timeoutMs: 30_000) else { return XCTFail("rank \(r) event \(k) did not complete") }
                for j in 0..<k { XCTAssertNotNil(events[r][j].query(), "event \(j) pending after event \(k) completed") }
                Pattern.expected(want, count: count, type: .float32, op: .sum, seed: UInt64(k), nranks: n)
                XCTAssertEqual(Pattern.countWrong(bufs[r][k], want, count: count, type: .float32, op: .sum), 0, "rank \(r) op \(k)")
            }
        }
        for s in streams { try s.destroy() }
        XCTAssertNotNil(events[1][ops - 1].query(), "an event outlives its stream")
        comms.forEach { $0.destroy() }
    }

    /// A thread per rank, every collective kind once, exact.
    func testInitAllWithThreads() throws {
        let n = 3
        let comms = try Communicator.initAll(count: n)
        final class Box: @unchecked Sendable {
            var wrong = 0; var errors: [String] = []
            var m = pthread_mutex_t()
            init() { pthread_mutex_init(&m, nil) }
            func locked(_ f: () -> Void) { pthread_mutex_lock(&m); f(); pthread_mutex_unlock(&m) }
        }
        let box = Box()
        var threads: [pthread_t] = []
        final class Arg { let comm: Communicator; let box: Box; init(_ c: Communicator, _ b: Box) { comm = c; box = b } }
        for c in comms {
            var t = pthread_t()
            let arg = Unmanaged.passRetained(Arg(c, box)).toOpaque()
            pthread_create(&t, nil, { raw in
                let a = Unmanaged<Arg>.fromOpaque(raw!).takeRetainedValue()
                let c = a.comm, n = c.size, count = 1001
                let s = UnsafeMutableRawPointer.allocate(byteCount: count * n * 8, alignment: 64)
                let r = UnsafeMutableRawPointer.allocate(byteCount: count * n * 8, alignment: 64)
                let w = UnsafeMutableRawPointer.allocate(byteCount: count * n * 8, alignment: 64)
                var wrong = 0
                do {
                    Pattern.fill(s, count: count, type: .int32, op: .max, seed: 3, rank: c.rank)
                    try c.allGather(send: s, recv: r, sendCount: count, type: .int32)
                    for q in 0..<n { Pattern.fill(w + q * count * 4, count: count, type: .int32, op: .max, seed: 3, rank: q) }
                    wrong += Pattern.countWrong(r, w, count: count * n, type: .int32, op: .max)
                    Pattern.fill(s, count: count, type: .float64, op: .prod, seed: 4, rank: c.rank)
                    try c.allReduce(send: s, recv: r, count: count, type: .float64, op: .prod)
                    Pattern.expected(w, count: count, type: .float64, op: .prod, seed: 4, nranks: n)
                    wrong += Pattern.countWrong(r, w, count: count, type: .float64, op: .prod)
                } catch {
                    a.box.locked { a.box.errors.append("\(error)") }
                }
                a.box.locked { a.box.wrong += wrong }
                return nil
            }, arg)
            threads.append(t)
        }
        for t in threads { pthread_join(t, nil) }
        XCTAssertEqual(box.errors, [])
        XCTAssertEqual(box.wrong, 0)
        comms.forEach { $0.destroy() }
    }

    /// Every algorithm of every collective that has a choice, ranks as threads driven through one
    /// stream each: allreduce, all-gather, reduce-scatter, broadcast and reduce, exact.
    func testEveryAlgorithmAsThreads() throws {
        let settings = ["allreduce:ring,allgather:ring,reducescatter:ring,broadcast:chain,reduce:chain",
                        "allreduce:tree,allgather:recdbl,reducescatter:halving,broadcast:binomial,reduce:binomial",
                        "allreduce:recdbl", "allreduce:rabenseifner"]
        for n in [2, 3, 5] {
            for setting in settings {
                let comms = try Communicator.initAll(count: n, config: CommConfig(timeoutMs: 20_000, algorithm: setting))
                let streams = try comms.map { _ in try ExecutionStream() }
                for count in [0, 1, 7, 1000, 65_537] {
                    let bytes = count * n * 8 + 64
                    let ins = (0..<n).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
                    let outs = (0..<n).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
                    let want = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
                    defer { (ins + outs + [want]).forEach { $0.deallocate() } }
                    let what = "\(n) threads, \(setting), count \(count)"
                    func runAll(_ body: @escaping @Sendable (Communicator, UnsafeMutableRawPointer, UnsafeMutableRawPointer) throws(CCLError) -> Void) throws {
                        for (r, c) in comms.enumerated() {
                            let i = ins[r], o = outs[r]
                            try streams[r].submit { () throws(CCLError) in try body(c, i, o) }
                        }
                        for s in streams { try s.synchronize() }
                    }
                    // allreduce, int64 max
                    for r in 0..<n { Pattern.fill(ins[r], count: count, type: .int64, op: .max, seed: 21, rank: r) }
                    try runAll { (c, i, o) throws(CCLError) in try c.allReduce(send: i, recv: o, count: count, type: .int64, op: .max) }
                    Pattern.expected(want, count: count, type: .int64, op: .max, seed: 21, nranks: n)
                    for r in 0..<n { XCTAssertEqual(Pattern.countWrong(outs[r], want, count: count, type: .int64, op: .max), 0, "allreduce, \(what), rank \(r)") }
                    // all-gather, float32
                    for r in 0..<n { Pattern.fill(ins[r], count: count, type: .float32, op: .max, seed: 22, rank: r) }
                    try runAll { (c, i, o) throws(CCLError) in try c.allGather(send: i, recv: o, sendCount: count, type: .float32) }
                    for q in 0..<n { Pattern.fill(want + q * count * 4, count: count, type: .float32, op: .max, seed: 22, rank: q) }
                    for r in 0..<n { XCTAssertEqual(Pattern.countWrong(outs[r], want, count: count * n, type: .float32, op: .max), 0, "allgather, \(what), rank \(r)") }
                    // reduce-scatter, float64 sum
                    for r in 0..<n { Pattern.fill(ins[r], count: count * n, type: .float64, op: .sum, seed: 23, rank: r) }
                    try runAll { (c, i, o) throws(CCLError) in try c.reduceScatter(send: i, recv: o, recvCount: count, type: .float64, op: .sum) }
                    for r in 0..<n {
                        Pattern.expected(want, count: count, type: .float64, op: .sum, seed: 23, nranks: n, offset: r * count)
                        XCTAssertEqual(Pattern.countWrong(outs[r], want, count: count, type: .float64, op: .sum), 0, "reducescatter, \(what), rank \(r)")
                    }
                    // broadcast from the last rank, in place, int8
                    let root = n - 1
                    Pattern.fill(outs[root], count: count, type: .int8, op: .max, seed: 24, rank: root)
                    try runAll { (c, _, o) throws(CCLError) in try c.broadcast(send: o, recv: o, count: count, type: .int8, root: root) }
                    Pattern.fill(want, count: count, type: .int8, op: .max, seed: 24, rank: root)
                    for r in 0..<n { XCTAssertEqual(Pattern.countWrong(outs[r], want, count: count, type: .int8, op: .max), 0, "broadcast, \(what), rank \(r)") }
                    // reduce to rank 1 % n, bfloat16 sum
                    let rroot = 1 % n
                    for r in 0..<n { Pattern.fill(ins[r], count: count, type: .bfloat16, op: .sum, seed: 25, rank: r) }
                    try runAll { (c, i, o) throws(CCLError) in try c.reduce(send: i, recv: o, count: count, type: .bfloat16, op: .sum, root: rroot) }
                    Pattern.expected(want, count: count, type: .bfloat16, op: .sum, seed: 25, nranks: n)
                    XCTAssertEqual(Pattern.countWrong(outs[rroot], want, count: count, type: .bfloat16, op: .sum), 0, "reduce, \(what)")
                }
                for s in streams { try s.destroy() }
                comms.forEach { $0.destroy() }
            }
        }
    }
}

/// Communicators split off inherit their parent's transports setting (here TCP although all ranks
/// share a host, where the default would pick shared memory).
final class InheritanceTests: XCTestCase {
    func testSplitInheritsTransports() throws {
        let comms = try Communicator.initAll(count: 2, config: CommConfig(transports: "tcp"))
        XCTAssertEqual(comms.map(\.transportName), ["tcp", "tcp"])
        final class Out: @unchecked Sendable { var names = ["", ""]; var errors: [String] = []; let lock = NSLock() }
        let out = Out()
        let done = DispatchGroup()
        for (i, c) in comms.enumerated() {
            done.enter()
            Thread {
                do {
                    let sub = try c.split(color: 0, key: i)
                    out.lock.lock(); out.names[i] = sub?.transportName ?? "none"; out.lock.unlock()
                    sub?.destroy()
                } catch { out.lock.lock(); out.errors.append("\(error)"); out.lock.unlock() }
                done.leave()
            }.start()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(out.errors, [])
        XCTAssertEqual(out.names, ["tcp", "tcp"])
        for c in comms { c.destroy() }
    }
}
