import XCTest
import Foundation
import SwiftCCLTesting

/// The algorithms driven directly (no communicator, no processes) over `LoopbackTransport` endpoints,
/// one thread per rank: every algorithm of every collective with a choice (the one-shot and staged
/// ones fall back to their message-passing counterparts: loopback has no symmetric window), 1–8
/// ranks, results checked exactly.
final class LoopbackTests: XCTestCase {
    /// Runs `body(rank)` on one thread per rank and waits (each blocking step has the transport's deadline).
    func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let done = DispatchGroup()
        for r in 0..<n {
            done.enter()
            Thread { body(r); done.leave() }.start()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "ranks did not finish")
    }

    func testEveryAlgorithmOverLoopback() throws {
        for n in [1, 2, 3, 5, 8] {
            let endpoints = try LoopbackTransport.connected(ranks: n)
            defer { endpoints.forEach { $0.close() } }
            let selector = AlgorithmSelector(caps: endpoints[0].capabilities, forced: nil, ranks: n)
            let checks = (0..<n).map { _ in ArgumentCheck(ranks: n, selector: selector) }
            let scratch = (0..<n).map { _ in Scratch() }
            let counters = (0..<n).map { _ in (Counter(), Counter()) }
            defer { scratch.forEach { $0.release() } }
            var sequence: UInt64 = 0
            for kind in CollectiveKind.allCases {
                for algo in kind.algorithms {
                    for count in [0, 1, 1000, 100_003] where count > 0 {
                        sequence += 1
                        let seq = sequence
                        let failures = Failures()
                        onThreads(n) { r in
                            let args = CallArguments(collective: .allreduce, count: count, type: .int32, op: .sum, algorithm: algo)
                            let ctx = CollectiveContext.make(rank: r, size: n, transport: endpoints[r], arena: nil, sequence: seq,
                                                             fingerprint: args.fingerprint, arguments: args, check: checks[r],
                                                             operation: "\(kind) \(algo)", timeoutMs: 20_000, scratch: scratch[r],
                                                             oneShot: counters[r].0, steps: counters[r].1, blame: nil)
                            if let e = Self.runAndCheck(kind, algo, ctx, rank: r, ranks: n, count: count) {
                                failures.add("\(kind) \(algo) n=\(n) count=\(count) rank \(r): \(e)")
                            }
                        }
                        for f in failures.all { XCTFail(f) }
                    }
                }
            }
        }
    }

    final class Failures: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
    }

    /// Rank r's input element i of block b is r·1_000_003 + b·7 + i (Int32, wrapping); the expected
    /// output follows from each collective's definition. Returns a description of the first wrong
    /// element, or of the error.
    static func runAndCheck(_ kind: CollectiveKind, _ algo: Algorithm, _ ctx: CollectiveContext, rank r: Int, ranks n: Int, count: Int) -> String? {
        func value(_ rank: Int, _ block: Int, _ i: Int) -> Int32 { Int32(truncatingIfNeeded: rank &* 1_000_003 &+ block &* 7 &+ i) }
        let blocks = (kind == .allreduce || kind == .broadcast || kind == .reduce) ? 1 : n
        let sendBlocks = kind == .allgather ? 1 : blocks
        let recvBlocks = kind == .reducescatter ? 1 : blocks
        let root = n - 1
        var send = [Int32](repeating: 0, count: sendBlocks * count)
        var recv = [Int32](repeating: -1, count: recvBlocks * count)
        for b in 0..<sendBlocks { for i in 0..<count { send[b * count + i] = value(r, b, i) } }
        do {
            try send.withUnsafeBytes { s in
                try recv.withUnsafeMutableBytes { d in
                    let o = Operands(send: s.baseAddress, recv: d.baseAddress, count: count, type: .int32, op: .sum, root: root)
                    try kind.run(algo, ctx, o)
                }
            }
        } catch { return "\(error)" }
        func sum(_ block: Int, _ i: Int) -> Int32 { (0..<n).reduce(Int32(0)) { $0 &+ value($1, block, i) } }
        for b in 0..<recvBlocks {
            for i in 0..<count {
                let want: Int32?
                switch kind {
                case .allreduce: want = sum(0, i)
                case .allgather: want = value(b, 0, i)
                case .reducescatter: want = sum(r, i)
                case .broadcast: want = value(root, 0, i)
                case .reduce: want = r == root ? sum(0, i) : nil
                case .alltoall: want = value(b, r, i)
                }
                if let want, recv[b * count + i] != want { return "block \(b) element \(i): \(recv[b * count + i]), expected \(want)" }
            }
        }
        return nil
    }
}
