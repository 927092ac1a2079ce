// swift-tools-version: 6.0
// The fuzz harness of SwiftCCL's wire parsers (docs/RELIABILITY.md, "Fuzzing"). A package of its own, so
// that the root package's `swift build` never builds it; `Tests/fuzz/run.sh` builds it with libFuzzer and
// AddressSanitizer and runs every target.
import PackageDescription

let package = Package(
    name: "swccl-fuzz",
    dependencies: [.package(name: "SwiftCCL", path: "../..")],
    targets: [
        // One executable; SWCCL_FUZZ_TARGET chooses the parser. libFuzzer provides `main`, so the
        // file is parsed as a library (no top-level code).
        .executableTarget(name: "swccl-fuzz", dependencies: [.product(name: "SwiftCCL", package: "SwiftCCL")],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ],
    swiftLanguageModes: [.v6]
)
