// Transport scenarios on a bare transport (no communicator): the conformance suite's cases
// (`TransportConformance` in SwiftCCLTesting, written once for every transport) run as this process's
// rank, and `pull`, a shared-memory check of cross-memory attach.
import Glibc
import SwiftCCLTesting
import SwcclVerify

@MainActor func testbed() -> TransportTestbed {
    do { return try TransportTestbed(backend: backend, id: id, rank: rank, size: size, timeoutMs: timeoutMs) }
    catch { say("FAIL bootstrap: \(error)"); exit(1) }
}

/// A conformance case as this process's rank: a deliberate fault kills (SIGKILL) or stops (SIGSTOP)
/// the process, as a crashed or frozen rank would.
@MainActor func conformanceScenario(_ name: String) {
    let r = ConformanceRank(testbed: testbed(), write: { line in print(line); fflush(nil) }, onFault: { fault, _ in
        raise(fault == .kill ? SIGKILL : SIGSTOP)
        exit(0)
    })
    exit(TransportConformance.run(name, r) ? 0 : 1)
}

/// A 4 MiB message from rank 0 to rank 1; rank 1 reports how much its shared-memory transport pulled
/// straight from rank 0's memory (cross-memory attach) instead of through the FIFO.
@MainActor func pullScenario() {
    let tb = testbed()
    do { try tb.connect() } catch { say("FAIL connect: \(error)"); exit(1) }
    let n = 4 << 20
    let b = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    do {
        if rank == 0 {
            TransportConformance.fillBytes(b, n, 9)
            try tb.transport.wait(try tb.transport.isend(to: 1, tag: 800, UnsafeRawBufferPointer(start: b, count: n)), deadline: tb.deadline)
        } else if rank == 1 {
            memset(b, 0, n)
            try tb.transport.wait(try tb.transport.irecv(from: 0, tag: 800, into: UnsafeMutableRawBufferPointer(start: b, count: n)), deadline: tb.deadline)
            check(TransportConformance.checkBytes(b, n, 9), "the pulled message arrived intact")
            if let shm = tb.transport as? SHMTransport { say("pulled \(shm.bytesPulled) bytes") }
        }
        try tb.barrier()
    } catch { check(false, "transfer: \(error)") }
    tb.transport.close()
    finish()
}
