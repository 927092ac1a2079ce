// swift-tools-version: 6.1
// Micro-benchmarks of SwiftCCL on ordo-one/benchmark, kept in their own package so that the
// library's build and CI never fetch the benchmark tooling. Run from this folder:
//   swift package benchmark                       (all suites)
//   swift package benchmark thresholds check      (compare with Thresholds/, see Benchmarks/README.md)
import PackageDescription

let package = Package(
    name: "SwiftCCLBenchmarks",
    dependencies: [
        .package(name: "SwiftCCL", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Reduction kernels per type and op, and memcpy of the same size in the same run.
        .executableTarget(name: "Kernels",
                          dependencies: [.product(name: "Benchmark", package: "benchmark"), .product(name: "SwiftCCL", package: "SwiftCCL")],
                          path: "Benchmarks/Kernels",
                          plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        // Ping-pong latency and streaming bandwidth between two ranks (threads) per transport.
        .executableTarget(name: "Transports",
                          dependencies: [.product(name: "Benchmark", package: "benchmark"), .product(name: "SwiftCCL", package: "SwiftCCL")],
                          path: "Benchmarks/Transports",
                          plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        // Communicator creation (bootstrap and connection set-up) for 2 to 8 ranks.
        .executableTarget(name: "Bootstrap",
                          dependencies: [.product(name: "Benchmark", package: "benchmark"), .product(name: "SwiftCCL", package: "SwiftCCL")],
                          path: "Benchmarks/Bootstrap",
                          plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ],
    swiftLanguageModes: [.v6]
)
