// Two ranks of one process (threads, `Communicator.initAll`) per transport: ping-pong latency of an
// 8-byte message (one iteration = there and back) and streaming bandwidth (one iteration = one 4 MiB
// message, in batches the receiver acknowledges once). The peer is a thread that serves requests.
import Benchmark
import Glibc
import SwiftCCL

/// Rank 1's loop: a 16-byte request (kind, argument) from rank 0, then kind 1: echo it; kind 2:
/// receive `argument` messages of `streamBytes` and send one 8-byte acknowledgement.
let streamBytes = 4 << 20

final class Pair: @unchecked Sendable {
    let comms: [Communicator]
    let header = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 64)
    let payload = UnsafeMutableRawPointer.allocate(byteCount: streamBytes, alignment: 4096)

    init(transport: String) {
        // A long timeout: between two suites the server thread may wait for minutes.
        comms = try! Communicator.initAll(count: 2, config: CommConfig(timeoutMs: 3_600_000, transports: transport))
        memset(payload, 1, streamBytes)
        let server = comms[1]
        let t = Thread { Pair.serve(server) }
        t.start()
    }

    static func serve(_ c: Communicator) {
        let h = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 64)
        let buf = UnsafeMutableRawPointer.allocate(byteCount: streamBytes, alignment: 4096)
        while true {
            do {
                try c.recv(h, count: 16, type: .uint8, from: 0)
                let kind = h.load(as: UInt64.self), arg = h.load(fromByteOffset: 8, as: UInt64.self)
                if kind == 1 { try c.send(h, count: 16, type: .uint8, to: 0) }
                if kind == 2 {
                    for _ in 0..<arg { try c.recv(buf, count: streamBytes, type: .uint8, from: 0) }
                    try c.send(h, count: 8, type: .uint8, to: 0)
                }
            } catch { print("server: \(error)"); return }
        }
    }

    func ping() throws(CCLError) {
        header.storeBytes(of: 1, as: UInt64.self)
        try comms[0].send(header, count: 16, type: .uint8, to: 1)
        try comms[0].recv(header, count: 16, type: .uint8, from: 1)
    }

    func stream(_ n: Int) throws(CCLError) {
        header.storeBytes(of: 2, as: UInt64.self)
        header.storeBytes(of: UInt64(n), toByteOffset: 8, as: UInt64.self)
        try comms[0].send(header, count: 16, type: .uint8, to: 1)
        for _ in 0..<n { try comms[0].send(payload, count: streamBytes, type: .uint8, to: 1) }
        try comms[0].recv(header, count: 8, type: .uint8, from: 1)
    }
}

/// A thread for the serving rank (Glibc only, as the library).
final class Thread: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    func start() {
        var t = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&t, nil, { p in
            let me = Unmanaged<Thread>.fromOpaque(p!).takeRetainedValue()
            me.body()
            return nil
        }, box)
        pthread_detach(t)
    }
}

/// This machine's speed drifts by up to 4x between minutes: `thresholds check` flags a metric only
/// when its p50 or p90 is more than twice as bad as the stored value.
var slack: [BenchmarkMetric: BenchmarkThresholds] { [
    .wallClock: BenchmarkThresholds(relative: [.p50: 100.0, .p90: 100.0]),
    .throughput: BenchmarkThresholds(relative: [.p50: 100.0, .p90: 100.0]),
] }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput],
        warmupIterations: 10,
        maxDuration: .seconds(1),
        maxIterations: 100_000,
        thresholds: slack)
    for transport in ["shm", "tcp"] {
        let pair = Pair(transport: transport)
        Benchmark("pingpong_8B_\(transport)") { benchmark in
            for _ in benchmark.scaledIterations { try pair.ping() }
        }
        Benchmark("stream_4MiB_\(transport)", configuration: .init(warmupIterations: 2, maxIterations: 1000)) { benchmark in
            try pair.stream(benchmark.scaledIterations.count)
        }
    }
}
