// Making and destroying a communicator of n ranks of one process (`Communicator.initAll`: rendezvous,
// address exchange, transport connections), over shared memory (the default on one host) and TCP.
import Benchmark
import SwiftCCL

/// This machine's speed drifts by up to 4x between minutes: `thresholds check` flags a metric only
/// when its p50 or p90 is more than twice as bad as the stored value.
var slack: [BenchmarkMetric: BenchmarkThresholds] { [
    .wallClock: BenchmarkThresholds(relative: [.p50: 100.0, .p90: 100.0]),
] }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock],
        warmupIterations: 1,
        maxDuration: .seconds(2),
        maxIterations: 200,
        thresholds: slack)
    for transport in ["auto", "tcp"] {
        for n in [2, 4, 8] {
            Benchmark("init_destroy_\(n)ranks_\(transport)") { benchmark in
                for _ in benchmark.scaledIterations {
                    let comms = try Communicator.initAll(count: n, config: CommConfig(transports: transport))
                    for c in comms { c.destroy() }
                }
            }
        }
    }
}
