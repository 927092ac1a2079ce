// swift-tools-version: 6.0
import PackageDescription

let root = String(#filePath.dropLast("Package.swift".count))

let package = Package(
    name: "SwiftCCL",
    products: [
        // The Swift API.
        .library(name: "SwiftCCL", targets: ["SwiftCCL"]),
        // libswccl.so: the C ABI of include/swccl.h.
        .library(name: "swccl", type: .dynamic, targets: ["swccl"]),
        .executable(name: "swccl-perf", targets: ["swccl-perf"]),
    ],
    targets: [
        // Reduction kernels that Swift cannot express well (F16C half precision, bfloat16, fp8).
        .target(name: "CSwcclKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // Static-inline wrappers of the few syscalls Glibc's Swift module lacks.
        .target(name: "CSwcclShims"),
        // libibverbs, loaded at run time (dlopen); its types from libibverbs-dev's header.
        .target(name: "CSwcclVerbs"),
        // The layers (docs/ARCHITECTURE.md, "Layers"; scripts/check-layers.sh checks this graph against
        // the one stated there). Glibc and Synchronization only, never Foundation.
        // System calls, errno, deadlines, locks: imports nothing of ours but the C shims.
        .target(name: "SwcclSystem", dependencies: ["CSwcclShims"]),
        // Errors, element types, knobs, logging, host identity, sockets, interfaces, NUMA, launchers.
        .target(name: "SwcclCore", dependencies: ["SwcclSystem", "CSwcclShims"]),
        // The transport protocol, capabilities, requests, the symmetric window, the registry's entry
        // type, the per-peer mix, what message-passing backends share.
        .target(name: "SwcclTransport", dependencies: ["SwcclSystem", "SwcclCore", "CSwcclShims"]),
        // One target per backend: each sees the transport layer only.
        .target(name: "SwcclTCP", dependencies: ["SwcclSystem", "SwcclCore", "SwcclTransport", "CSwcclShims"]),
        .target(name: "SwcclSHM", dependencies: ["SwcclSystem", "SwcclCore", "SwcclTransport", "CSwcclShims"]),
        // libibverbs, loaded at run time (dlopen); its types from libibverbs-dev's header.
        .target(name: "SwcclVerbs", dependencies: ["SwcclSystem", "SwcclCore", "SwcclTransport", "CSwcclVerbs", "CSwcclShims"]),
        // Unique ids, the rendezvous root, the out-of-band channel.
        .target(name: "SwcclBootstrap", dependencies: ["SwcclSystem", "SwcclCore", "CSwcclShims"]),
        // Collective algorithms, the cost model, reduction kernels: written against the transport protocol only.
        .target(name: "SwcclAlgorithms", dependencies: ["SwcclSystem", "SwcclCore", "SwcclTransport", "CSwcclKernels", "CSwcclShims"]),
        // The communicator, transport choice and registry, groups, streams: the public Swift API.
        .target(name: "SwiftCCL", dependencies: ["SwcclSystem", "SwcclCore", "SwcclTransport", "SwcclTCP", "SwcclSHM", "SwcclVerbs",
                                                 "SwcclBootstrap", "SwcclAlgorithms", "CSwcclShims"]),
        // Test support: a bare transport's testbed, raw sockets, the backends (as NIOTestUtils).
        .target(name: "SwiftCCLTesting", dependencies: ["SwiftCCL", "SwcclSystem", "SwcclCore", "SwcclTransport", "SwcclTCP", "SwcclSHM",
                                                        "SwcclVerbs", "SwcclBootstrap"]),
        // The hand-written public header, imported by the C ABI layer.
        .target(name: "CSwcclHeader", path: "include", sources: [], publicHeadersPath: "."),
        // The C ABI: a thin layer of @c @implementation functions over the Swift API.
        .target(name: "swccl", dependencies: ["SwiftCCL", "CSwcclHeader"], exclude: ["exports.map", "swccl.pc.in"],
                linkerSettings: [.unsafeFlags([
                    "-static-stdlib",
                    "-Xlinker", "--version-script=\(root)Sources/swccl/exports.map",
                    "-Xlinker", "-soname=libswccl.so.0",
                ], .when(configuration: .release))]),
        // Test-data patterns and exact checking shared by swccl-perf and the tests.
        .target(name: "SwcclVerify", dependencies: ["SwiftCCL"]),
        .executableTarget(name: "swccl-perf", dependencies: ["SwiftCCL", "SwcclVerify"]),
        // The cost model's simulator: which algorithm wins, and its predicted busbw, for any rank count.
        .executableTarget(name: "swccl-model", dependencies: ["SwiftCCL"]),
        // The rank process that multi-process tests spawn.
        .executableTarget(name: "swccl-test-rank", dependencies: ["SwiftCCLTesting", "SwcclVerify"], path: "Tests/swccl-test-rank"),
        .testTarget(name: "SwiftCCLTests", dependencies: ["SwiftCCLTesting", "SwcclVerify", "swccl-test-rank"]),
        .testTarget(name: "SwcclKernelTests", dependencies: ["SwiftCCL", "SwcclVerify"]),
    ],
    swiftLanguageModes: [.v6]
)
