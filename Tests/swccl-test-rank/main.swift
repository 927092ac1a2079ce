// One rank of a multi-process test. The test (Tests/SwiftCCLTests) spawns N of these with
// SWCCL_TEST_RANK, SWCCL_TEST_SIZE, SWCCL_TEST_ID (hex unique id), SWCCL_TEST_BACKEND and
// SWCCL_TEST_TIMEOUT_MS, and a scenario name as the first argument. Each rank checks its own results,
// prints "PASS <scenario>" or "FAIL ..." lines, and exits 0 only if everything held.
import Glibc
import SwiftCCLTesting
import SwcclVerify

func eprint(_ s: String) { var b = Array(s.utf8); _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) } }

@MainActor func env(_ k: String) -> String? { getenv(k).map { String(cString: $0) } }

let scenario = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : ""
let rank = Int(env("SWCCL_TEST_RANK") ?? "0") ?? 0
let size = Int(env("SWCCL_TEST_SIZE") ?? "1") ?? 1
let backend = env("SWCCL_TEST_BACKEND") ?? "tcp"
let timeoutMs = Int(env("SWCCL_TEST_TIMEOUT_MS") ?? "20000") ?? 20000
var failures = 0

@MainActor func say(_ s: String) { print("[rank \(rank)] \(s)"); fflush(nil) }
@MainActor func check(_ ok: Bool, _ what: @autoclosure () -> String) {
    if !ok { failures += 1; say("FAIL \(what())") }
}
@MainActor func finish() -> Never {
    say(failures == 0 ? "PASS \(scenario)" : "FAILED \(scenario) with \(failures) failure(s)")
    exit(failures == 0 ? 0 : 1)
}

let id: UniqueID
do { id = try UniqueID(hex: env("SWCCL_TEST_ID") ?? "") } catch { say("FAIL bad SWCCL_TEST_ID: \(error)"); exit(2) }

/// Runs the scenario the test named (Scenarios.swift lists them).
guard let run = scenarios[scenario] else {
    say("FAIL unknown scenario \(scenario) (known: \(scenarios.keys.sorted().joined(separator: ", ")))")
    exit(2)
}
run()
