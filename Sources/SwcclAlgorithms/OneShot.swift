import CSwcclShims
import SwcclSystem
import SwcclCore
import SwcclTransport

/// One-shot allreduce over shared memory (`SharedArena`): every rank copies its input into its own
/// area and publishes the operation's number; once all have, each rank reduces all n inputs straight
/// from the peers' areas, in rank order (so every rank computes bit-identical results). Inputs of up
/// to `SharedArenaLayout.inlineBytes` travel in the posted word's own cache line (one line per peer to
/// fetch instead of two). One flag round trip instead of log₂ n message exchanges: the path for small
/// messages when all ranks share a host.
///
/// Two areas alternate by operation, and no "finished reading" flag is needed: a rank rewrites the
/// area of operation c − 2 only in operation c, after it saw every peer post operation c − 1 — which
/// each peer did only after it finished reading operation c − 2 (its reads come before that release).
package enum OneShot {
    package static func allReduce(_ ctx: CollectiveContext, arena: SharedArena, operation c: UInt64, send: UnsafeRawPointer,
                          recv: UnsafeMutableRawPointer, count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        do throws(CCLError) {
            try run(ctx, arena: arena, operation: c, send: send, recv: recv, count: count, type: type, op: op)
        } catch {
            // A peer that never arrives may be in another operation: its messages say so.
            throw error.kind == .timeout ? ctx.stalled(on: error.peer ?? 0, error) : error
        }
    }

    /// Polls every peer's word a few hundred times (a cache-line round trip or two) before the
    /// caller falls back to the transport's wait, which reads the clock and may sleep. On an
    /// oversubscribed host only a few times: the peer may need this very core to get there.
    @inline(__always)
    package static func arrived(_ ctx: CollectiveContext, _ value: UInt64, _ word: (Int) -> UnsafeMutablePointer<UInt64>) -> Bool {
        var next = 0
        for _ in 0..<(Spin.yields ? 4 : 256) {
            while next < ctx.size && (next == ctx.rank || cshim_load_acquire_u64(word(next)) >= value) { next += 1 }
            if next == ctx.size { return true }
            cshim_cpu_relax()
        }
        return false
    }

    private static func run(_ ctx: CollectiveContext, arena: SharedArena, operation c: UInt64, send: UnsafeRawPointer,
                            recv: UnsafeMutableRawPointer, count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let bytes = count * type.size
        let parity = Int(c % 2)
        let small = bytes <= SharedArenaLayout.inlineBytes
        @inline(__always) func area(_ r: Int) -> UnsafeMutableRawPointer { small ? arena.inlineArea(of: r, parity: parity) : arena.arena(of: r, parity: parity) }
        area(ctx.rank).copyMemory(from: send, byteCount: bytes)
        arena.signatureWord(of: ctx.rank, parity: parity).pointee = ctx.signature  // published by the release below
        arena.publish(arena.postedWord(of: ctx.rank), c)
        if !arrived(ctx, c, { arena.postedWord(of: $0) }) {
            try arena.waitAll({ arena.postedWord(of: $0) }, atLeast: c, only: nil, deadline: ctx.deadline, what: "post its input",
                              check: { (peer, since) throws(CCLError) in
                                  try ctx.arenaCheck()
                                  ctx.blocked(on: peer, since: since)
                              })
            ctx.moved()
        }
        for r in 0..<ctx.size where r != ctx.rank {
            let theirs = UInt32(truncatingIfNeeded: arena.signatureWord(of: r, parity: parity).pointee)
            if theirs != ctx.fingerprint { throw ctx.disagreement(r, theirs: theirs) }
        }
        let kernel = Reduction.kernel(type, op)
        kernel(recv, UnsafeRawPointer(area(0)), UnsafeRawPointer(area(1)), count)
        for r in 2..<max(ctx.size, 2) { kernel(recv, UnsafeRawPointer(recv), UnsafeRawPointer(area(r)), count) }
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: ctx.size) }
    }
}
