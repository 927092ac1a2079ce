import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The barrier, and the barrier that a call with count 0 runs instead of moving data.
package enum Barrier {
    /// A call with count 0 moves no data but is still a call: the ranks run a dissemination barrier
    /// whose empty messages carry this operation's fingerprint, so a rank that passed count 0 while
    /// another passed 1000 (or another root, type, collective) gets the mismatch on both sides.
    package static func zeroCount(_ ctx: CollectiveContext) throws(CCLError) { try dissemination(ctx) }

    /// Round k: an empty message to rank + 2^k, one from rank − 2^k. After ⌈log₂ n⌉ rounds every rank
    /// has heard, directly or through others, from every rank.
    package static func dissemination(_ ctx: CollectiveContext) throws(CCLError) {
        let n = ctx.size
        var distance = 1, round = 0
        var byte: UInt8 = 0
        while distance < n {
            let to = (ctx.rank + distance) % n, from = (ctx.rank - distance + n) % n
            try withUnsafeMutablePointer(to: &byte) { p in
                catching { () throws(CCLError) in try ctx.exchange(lane: round, to: to, p, 0, from: from, p, 0) }
            }.get()
            distance <<= 1
            round += 1
        }
    }
}
