// Reduction kernels: dst = a op b over 1 MiB of each type, for every op, beside memcpy of the same
// 1 MiB in the same run (the yardstick: a kernel reads two streams and writes one, memcpy reads
// one and writes one). GB/s = 1 MiB / wall-clock time.
import Benchmark
import Glibc
import SwiftCCL

let bytes = 1 << 20
nonisolated(unsafe) let bufA = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
nonisolated(unsafe) let bufB = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
nonisolated(unsafe) let bufD = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)

/// Bytes 0x30...0x3f: normal, finite numbers in every float format, whose products stay normal too
/// (inputs or products in the subnormal range take a slow path in the FPU: float prod ran 14x
/// slower than sum with bytes 0x01...0x3f, which says nothing about the kernel).
func fill() {
    for i in 0..<bytes {
        bufA.storeBytes(of: UInt8(0x30 + i % 16), toByteOffset: i, as: UInt8.self)
        bufB.storeBytes(of: UInt8(0x30 + (i * 7) % 16), toByteOffset: i, as: UInt8.self)
    }
    memset(bufD, 0, bytes)
}

/// This machine's speed drifts by up to 4x between minutes: `thresholds check` flags a metric only
/// when its p50 or p90 is more than twice as bad as the stored value.
var slack: [BenchmarkMetric: BenchmarkThresholds] { [
    .wallClock: BenchmarkThresholds(relative: [.p50: 100.0, .p90: 100.0]),
    .throughput: BenchmarkThresholds(relative: [.p50: 100.0, .p90: 100.0]),
] }

let benchmarks: @Sendable () -> Void = {
    fill()
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput],
        warmupIterations: 3,
        maxDuration: .milliseconds(300),
        maxIterations: 2000,
        thresholds: slack)
    Benchmark("memcpy_1MiB") { benchmark in
        for _ in benchmark.scaledIterations { memcpy(bufD, bufA, bytes); blackHole(bufD) }
    }
    for type in DataType.allCases {
        for op in ReduceOp.allCases {
            Benchmark("reduce_\(type)_\(op)_1MiB") { benchmark in
                for _ in benchmark.scaledIterations {
                    ReductionKernels.reduce(dst: bufD, a: bufA, b: bufB, count: bytes / type.size, type: type, op: op)
                    blackHole(bufD)
                }
            }
        }
    }
}
