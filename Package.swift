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
        // The core: transports, bootstrap, algorithms, communicator. Glibc and Synchronization only.
        .target(name: "SwiftCCL", dependencies: ["CSwcclKernels", "CSwcclShims", "CSwcclVerbs"]),
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
        .executableTarget(name: "swccl-test-rank", dependencies: ["SwiftCCL", "SwcclVerify"], path: "Tests/swccl-test-rank"),
        .testTarget(name: "SwiftCCLTests", dependencies: ["SwiftCCL", "SwcclVerify", "swccl-test-rank"]),
        .testTarget(name: "SwcclKernelTests", dependencies: ["SwiftCCL", "SwcclVerify"]),
    ],
    swiftLanguageModes: [.v6]
)
