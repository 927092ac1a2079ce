import Glibc
@_spi(Fuzzing) import SwiftCCL

// libFuzzer's entry points over `WireFuzzing`: SWCCL_FUZZ_TARGET names the target (one of
// `WireFuzzing.targets`). With SWCCL_FUZZ_SEEDS=<dir>, writes each target's seeds (valid messages
// from the library's encoders) to <dir>/<target>/seed-<n> and exits.

nonisolated(unsafe) var target = ""

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    // Two sockets per peer, so that the TCP target's stream reaches the second connection too; the log
    // is formatted (its code runs) but goes nowhere.
    setenv("SWCCL_NSOCKS_PERTHREAD", "2", 1)
    setenv("SWCCL_DEBUG_FILE", "/dev/null", 1)
    if let dir = getenv("SWCCL_FUZZ_SEEDS").map({ String(cString: $0) }) {
        for t in WireFuzzing.targets {
            mkdir("\(dir)/\(t)", 0o755)
            for (k, seed) in WireFuzzing.seeds(t).enumerated() {
                let f = fopen("\(dir)/\(t)/seed-\(k)", "wb")
                if let f { _ = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }; fclose(f) }
            }
        }
        exit(0)
    }
    target = getenv("SWCCL_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard WireFuzzing.targets.contains(target) else {
        let text = "swccl-fuzz: set SWCCL_FUZZ_TARGET to one of \(WireFuzzing.targets.joined(separator: ", "))\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
        exit(2)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = WireFuzzing.run(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
