import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Who is to blame, per communicator. Two duties:
///
/// - **Waiting notices.** A rank blocked on one peer for half the timeout tells every peer so
///   (`Notice.waiting`), and that it moves again if it does (`Notice.resumed`). A rank that then
///   times out waiting on a peer follows these notices — its peer waits on Q, Q waits on R, R said
///   nothing — and names R, the rank that is actually stopped, not the neighbour in between.
/// - **Abort notices.** When the communicator breaks, every peer is told the culprit and the cause
///   (`Notice.abort`); a rank that broke because of a peer's notice forwards that notice unchanged,
///   so every survivor names the same rank.
///
/// Used from the thread running the communicator's operation; the flag `announced` is read on every
/// pass of a waiting loop (one relaxed load), everything else only while blocked or failing.
package final class Blame: @unchecked Sendable {
    package let transport: any Transport
    package let rank: Int
    package let size: Int
    package let timeoutMs: Int
    private let announced = Atomic<Bool>(false)
    private let state = Mutex<(peer: Int, since: UInt64)>((-1, 0))

    package init(transport: any Transport, rank: Int, size: Int, timeoutMs: Int) {
        self.transport = transport; self.rank = rank; self.size = size; self.timeoutMs = timeoutMs
    }

    /// After half the timeout blocked, peers hear of it (then it is worth a notice; before, it is not).
    package var noticeAfterNanos: UInt64 { UInt64(timeoutMs) &* 500_000 }

    /// The operation advanced: void a waiting notice sent earlier.
    @inline(__always) package func progressed(operation: @autoclosure () -> String) {
        guard announced.load(ordering: .relaxed) else { return }
        announced.store(false, ordering: .relaxed)
        state.withLock { $0 = (-1, 0) }
        transport.announce(Notice(.resumed, culprit: -1, origin: rank, operation: operation(), cause: "moves again"))
    }

    /// Blocked on `peer` since `since` (monotonic ns): past half the timeout, tells the peers (once
    /// per peer waited on).
    package func blocked(on peer: Int, since: UInt64, operation: @autoclosure () -> String) {
        guard peer >= 0, peer < size, peer != rank, Sys.monotonicNanos() &- since >= noticeAfterNanos else { return }
        let already = state.withLock { s -> Bool in
            defer { s = (peer, since) }
            return s.peer == peer
        }
        if already && announced.load(ordering: .relaxed) { return }
        announced.store(true, ordering: .relaxed)
        let op = operation()
        transport.announce(Notice(.waiting, culprit: peer, origin: rank, operation: op,
                                  cause: "rank \(rank) waits for rank \(peer) in \(op)"))
    }

    /// A timeout naming a peer that is itself waiting becomes a timeout naming the rank at the end of
    /// the chain of waiting notices (or the ranks that wait on each other, if they form a cycle).
    package func resolve(_ e: CCLError) -> CCLError {
        guard e.kind == .timeout, e.relayed == nil, let first = e.peer, first != rank, first >= 0, first < size else { return e }
        var chain = [first]
        var ops: [String] = []
        while chain.count <= size, let n = transport.peerNotice(chain.last!) {
            // The rank waited on broke meanwhile (its own timeout came first, or it learned of a
            // failure): what it told its peers names the culprit, as if this rank had read it in time.
            if n.kind == .abort { return n.error(at: rank) }
            guard n.kind == .waiting, n.origin == chain.last! else { break }
            ops.append(n.operation)
            if n.culprit == rank || chain.contains(n.culprit) {
                var r = e
                let loop = chain + [n.culprit]
                r.cause += "; rank \(first) and the ranks it waits on form a cycle (\(([rank] + loop).map { "rank \($0)" }.joined(separator: " → "))): "
                    + "they are in different operations (called in another order, or on other communicators in another order)"
                return r
            }
            chain.append(n.culprit)
        }
        guard chain.count > 1 else { return e }
        let culprit = chain.last!
        var r = e
        r.peer = culprit
        r.peerAddress = nil
        let story = (0..<chain.count - 1).map { "rank \(chain[$0]) waits for rank \(chain[$0 + 1]) (\(ops[$0]))" }.joined(separator: ", ")
        r.cause = "no progress for \(timeoutMs) ms waiting for rank \(first); \(story); rank \(culprit) told nothing: it is stopped, overloaded, or not in the same operation"
        return r
    }

    /// Tells the peers why this communicator broke (once; the caller makes sure).
    package func announceAbort(_ e: CCLError) {
        transport.announce(Notice.abort(for: e, rank: rank))
    }
}
