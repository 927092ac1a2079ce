import CSwcclShims
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The symmetric window: after the FIFOs in every rank's segment, of the size the communicator asked
/// for (`TransportSetup.window`); its layout signature is compared at `connect`. Waits poll the
/// peers' words, then sleep on this rank's doorbell, which `publish` rings.
extension SHMTransport: SymmetricWindow {
    package var window: (any SymmetricWindow)? { windowBytes > 0 ? self : nil }

    package func windowBase(of r: Int) -> UnsafeMutableRawPointer { (r == rank ? base : peerBaseUnlocked(r)) + windowOffset }

    package func publish(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
        cshim_store_release_u64(word, value)
        for p in 0..<nranks where p != rank {
            let seg = peerBaseUnlocked(p)
            if cshim_load_u32(Self.word32(seg, Self.offSleepers)) != 0 { Self.ring(seg) }
        }
    }

    /// One bounded sleep on this rank's doorbell (≤ 1 ms, woken by any peer's write); the abort error
    /// if the transport was aborted.
    private func sleepOnDoorbell(until deadline: Deadline, ready: () -> Bool) -> CCLError? {
        if abortSignal.isRaised { return abortSignal.error(rank: rank) }
        let bell = Self.word32(base, Self.offDoorbell)
        let sleepers = Self.word32(base, Self.offSleepers)
        let seen = cshim_load_u32(bell)
        _ = cshim_fetch_add_u32(sleepers, 1)
        let now = Sys.monotonicNanos()
        // A publisher that looked at the sleeper count before it rose did not ring: check again.
        if !ready() && deadline.nanos > now { Sys.futexWait(bell, expected: seen, nanos: min(deadline.nanos - now, 1_000_000)) }
        _ = cshim_fetch_add_u32(sleepers, UInt32.max)
        return nil
    }

    package func waitAll(_ word: (Int) -> UnsafeMutablePointer<UInt64>, atLeast value: UInt64, only: Int?, deadline: Deadline, what: String,
                        check: (Int, UInt64) throws(CCLError) -> Void) throws(CCLError) {
        var next = 0  // peers below `next` are known to be there
        let end = only.map { $0 + 1 } ?? nranks
        if let only { next = only }
        let started = Sys.monotonicNanos()
        let spinUntil = started &+ Knobs.spinNanos
        var lastScan = Sys.monotonicNanos()
        while true {
            while next < end && (next == rank || cshim_load_acquire_u64(word(next)) >= value) { next += 1 }
            if next == end { return }
            let now = Sys.monotonicNanos()
            if now < spinUntil {
                for _ in 0..<32 { cshim_cpu_relax() }
                Spin.yield()
                continue
            }
            let peer = next
            if let e = sleepOnDoorbell(until: deadline, ready: { cshim_load_acquire_u64(word(peer)) >= value }) { throw e.with(peer: next) }
            if deadline.hasPassed {
                throw CCLError(.timeout, "no progress for the timeout waiting for rank \(next) to \(what) (shared-memory collective); the peer is stopped, overloaded, or not in the same collective",
                               rank: rank, peer: next)
            }
            if Sys.monotonicNanos() &- lastScan >= 100_000_000 {
                lastScan = Sys.monotonicNanos()
                try check(next, started)
            }
            // A peer may post and then close between the first read and the liveness check: its word,
            // read again after its closed flag was seen, is final.
            if cshim_load_acquire_u64(word(next)) < value, let e = windowFailure(next), cshim_load_acquire_u64(word(next)) < value { throw e }
        }
    }
}
