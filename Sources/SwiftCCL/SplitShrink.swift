import Glibc
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// New communicators from an existing one: `split` (by color and key) and `shrink` (without some
/// ranks, e.g. dead ones; its secret derived from this communicator's).
extension Communicator {
    /// The color of a rank that joins no communicator in `split` (`SWCCL_SPLIT_NOCOLOR`).
    public static let splitNoColor = -1

    /// Splits this communicator (MPI_Comm_split semantics; every rank must call it): ranks with the same
    /// `color` form a new communicator, ordered by `key` then by rank here; `color` `splitNoColor`
    /// (-1) joins none and gets nil. The new communicators inherit this one's settings unless `config`
    /// is given. Each new communicator gets a fresh random id made by its first member and shared over
    /// this communicator's out-of-band channel.
    public func split(color: Int, key: Int, config: CommConfig? = nil) throws(CCLError) -> Communicator? {
        guard color >= -1 else { throw record(CCLError.invalidArgument("color \(color) is negative (use \(Communicator.splitNoColor) for none)").with(operation: "split", rank: rank)) }
        let cfg = config ?? CommConfig(timeoutMs: timeoutMs, transports: transportsSetting, name: name, algorithm: forcedAlgorithm)
        return try run("split") { () throws(CCLError) -> Communicator? in
            // 1. Everyone's (color, key).
            var w = ByteWriter(); w.i64(color); w.i64(key)
            var members: [(rank: Int, color: Int, key: Int)] = []
            for (r, b) in try bootstrap.allGather(w.bytes).enumerated() {
                var rd = ByteReader(b)
                members.append((r, try rd.i64(), try rd.i64()))
            }
            let mine = members.filter { $0.color == color && color != Communicator.splitNoColor }
                .sorted { ($0.key, $0.rank) < ($1.key, $1.rank) }
            // 2. The first member of each color makes its id; everyone learns every leader's id.
            let leader = mine.first?.rank == rank
            var id: [UInt8] = []
            if leader { id = try UniqueID.makeRandom().bytes }
            let ids = try bootstrap.allGather(id)
            guard let first = mine.first, let newRank = mine.firstIndex(where: { $0.rank == rank }) else { return nil }
            return try Communicator(id: try UniqueID(bytes: ids[first.rank]), rank: newRank, size: mine.count, config: cfg)
        }
    }

    /// A new communicator of the ranks not in `excluded`, numbered in their order here (NCCL's
    /// `ncclCommShrink`). Only the remaining ranks call it, all with the same list; excluded (e.g.
    /// dead) ranks must not. This communicator's connections are closed first — with
    /// `abortingInFlight`, after ending its operations in flight on other threads — and it must still
    /// be destroyed. No surviving rank depends on this communicator's bootstrap root (which may be
    /// excluded): the new root is the lowest surviving rank, listening on the TCP address it published
    /// here, and the new secret is derived from this one, the shrink's number and the list.
    public func shrink(excluding excluded: [Int], abortingInFlight: Bool = false, config: CommConfig? = nil) throws(CCLError) -> Communicator {
        var out = Set<Int>()
        for r in excluded {
            guard r >= 0, r < size else { throw record(CCLError.invalidArgument("excluded rank \(r) is out of range [0, \(size))").with(operation: "shrink", rank: rank)) }
            guard r != rank else { throw record(CCLError.invalidArgument("the calling rank \(r) is in the exclusion list (excluded ranks must not call shrink)").with(operation: "shrink", rank: rank)) }
            guard out.insert(r).inserted else { throw record(CCLError.invalidArgument("rank \(r) is listed twice").with(operation: "shrink", rank: rank)) }
        }
        let survivors = (0..<size).filter { !out.contains($0) }
        guard let root = listenAddresses[survivors[0]] else {
            throw record(CCLError.invalidUsage("rank \(survivors[0]), the new root, published no TCP address (SWCCL_TRANSPORTS=shm): cannot shrink").with(operation: "shrink", rank: rank))
        }
        let cfg = config ?? CommConfig(timeoutMs: timeoutMs, transports: transportsSetting, name: name, algorithm: forcedAlgorithm)
        if let e = state.withLock({ s -> CCLError? in
            s.destroyed ? CCLError.invalidUsage("the communicator was destroyed")
                : s.finalized ? CCLError.invalidUsage("the communicator was finalized (only destroy, abort and queries remain)") : nil
        }) {
            throw record(e.with(operation: "shrink", rank: rank))
        }
        if abortingInFlight { abort() }
        // Free this rank's endpoints (the new root rebinds the TCP port it published here).
        opLock.withLock {
            state.withLock { $0.aborted = true }
            transport.close()
            bootstrap.close()
        }
        let shrinks = state.withLock { s -> Int in s.shrinks += 1; return s.shrinks }
        // The exclusion list is not part of the secret: survivors that passed different lists still
        // meet at the root, which then reports the disagreement to all of them (their lists are
        // compared, or their sizes and rank numbers conflict), instead of dropping them as strangers.
        var material = secret
        material += [UInt8(truncatingIfNeeded: shrinks), UInt8(truncatingIfNeeded: shrinks >> 8)]
        let newSecret = UniqueID.derivedSecret(material, salt: 1)
        let id = UniqueID(root: root, secret: newSecret, rankZeroRunsRoot: true)
        Log.info(.initialization, "rank \(rank): shrinking \(size) ranks to \(survivors.count) (excluded \(out.sorted())), new root rank \(survivors[0]) at \(root)")
        do { return try Communicator(id: id, rank: survivors.firstIndex(of: rank)!, size: survivors.count, config: cfg, source: nil,
                                     shrinkOf: (rank, out.sorted())) }
        catch { throw record(shrinkError(error, survivors: survivors, excluded: out.sorted(), root: root.description)) }
    }

    /// A failed shrink's error in this communicator's terms: labelled `shrink` (not the new
    /// communicator's `init`), this rank and the peer numbered as here (not as they would have been
    /// in the new one), and — since survivors that pass different exclusion lists derive different
    /// secrets, so that the new root drops their hellos as strangers' or waits for ranks that never
    /// come — the exclusion list this rank passed, to compare with the others'.
    func shrinkError(_ error: CCLError, survivors: [Int], excluded: [Int], root: String) -> CCLError {
        var e = error
        let phase = e.operation.map { $0 == "init" ? "" : $0.hasPrefix("init: ") ? String($0.dropFirst(6)) + ": " : $0 + ": " } ?? ""
        e.operation = "shrink"
        e.rank = rank
        e.communicator = name
        e.sequence = nil
        let listsDiffer = e.cause.hasPrefix("survivors passed different exclusion lists")  // its peer is a parent rank already
        if !listsDiffer, let p = e.peer, p >= 0, p < survivors.count { e.peer = survivors[p] }
        else if e.peer == nil && e.peerAddress == root { e.peer = survivors[0] }  // the new root
        e.cause = phase + e.cause + " (in the shrunk communicator, ranks 0…\(survivors.count - 1) are ranks \(survivors) here; new root rank \(survivors[0]))"
        let rejected = e.kind == .remoteError || e.kind == .timeout || e.kind == .invalidUsage
        if rejected && !listsDiffer {
            e.cause += "; this rank excluded \(excluded) (survivors that passed other lists disagree on the size, the rank numbers or the root — did every survivor pass the same list?)"
        }
        return e
    }
}
