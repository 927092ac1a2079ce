import Glibc
import XCTest
import SwiftCCL
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
}
