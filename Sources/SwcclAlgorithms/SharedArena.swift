import CSwcclShims
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static let shmStageBytes = Knob.int("SWCCL_SHM_STAGE_BYTES", default: 512 << 10,
        "bytes of each staging slot of the shared-memory collectives (one pipeline step; the same on every rank)")
    package static let shmStageSlots = Knob.int("SWCCL_SHM_STAGE_SLOTS", default: 4,
        "staging slots per rank for the shared-memory collectives (pipeline depth; the same on every rank)")
}

/// What the `oneshot` and `staged` algorithms keep in each rank's symmetric window (`SymmetricWindow`,
/// memory every rank maps; the backend knows nothing of this layout):
/// - the one-shot area: a cache line with the sequence word `posted` (the last one-shot operation
///   whose input the rank wrote), one signature word per parity and two small inputs of
///   `inlineBytes`; an unused line; then two input areas of `areaBytes` (alternated per operation);
/// - the staging area: a 4 KiB header — three step words (`StepWord`: the last pipeline step the rank
///   posted input for, reduced its slice of, and finished reading) and one signature word per slot,
///   each on its own cache line — then `stageSlots` slots of `stageBytes`. Steps are numbered per
///   communicator; step s uses slot s mod `stageSlots`, which its owner rewrites only once every peer
///   finished step s − `stageSlots`.
/// Each rank writes only its own words; a word is published with a store release after the data it
/// announces.
package enum SharedArenaLayout {
    /// One-shot inputs up to this size go in the posted word's cache line.
    package static let inlineBytes = 16
    /// Bytes of each one-shot input area: the largest `oneshot` allreduce.
    package static let areaBytes = 32 << 10
    package static let stageOffset = 128 + 2 * areaBytes
    package static let stageHeader = 4096

    package static var stageSlots: Int { min(64, max(2, Knobs.shmStageSlots.value)) }
    /// A multiple of 4 KiB and of every element size, at least one page per rank.
    package static func stageBytes(ranks: Int) -> Int { max(4096 * max(1, ranks), Knobs.shmStageBytes.value) & ~4095 }

    /// The window to ask of a backend for `ranks` ranks: its size and the signature of this layout
    /// (slot count and size), which every peer must share.
    package static func request(ranks: Int) -> WindowRequest {
        let slots = stageSlots, bytes = stageBytes(ranks: ranks)
        return WindowRequest(bytes: stageOffset + stageHeader + slots * bytes, signature: UInt64(slots) << 32 | UInt64(bytes),
                             describe: { s in "staged collectives in \(s >> 32) slots of \(s & 0xffff_ffff) bytes (set SWCCL_SHM_STAGE_SLOTS and SWCCL_SHM_STAGE_BYTES alike on every rank)" })
    }
}

/// The step words of a rank's staging area.
package enum StepWord: Int { case posted = 0, reduced = 1, done = 2 }

/// A communicator's view of the symmetric window in `SharedArenaLayout`'s terms: every rank's window
/// base, read once after `connect` into a fixed table, so an address is one load and an add (no call
/// into the backend); publish and wait go to the backend.
package final class SharedArena: @unchecked Sendable {
    private let bases: UnsafeMutablePointer<UnsafeMutableRawPointer>
    private let ranks: Int
    /// Strong (the transport outlives nothing of this), so that calls on it need no retain.
    package let window: any SymmetricWindow
    package let stageSlots: Int
    package let stageBytes: Int

    /// nil when the window is too small for this layout (a backend that ignored the request).
    package init?(_ window: any SymmetricWindow, ranks: Int) {
        let request = SharedArenaLayout.request(ranks: ranks)
        guard window.windowBytes >= request.bytes else { return nil }
        self.window = window
        self.ranks = ranks
        stageSlots = SharedArenaLayout.stageSlots
        stageBytes = SharedArenaLayout.stageBytes(ranks: ranks)
        bases = .allocate(capacity: ranks)
        for r in 0..<ranks { (bases + r).initialize(to: window.windowBase(of: r)) }
    }

    deinit { bases.deallocate() }

    @inline(__always) private func base(_ r: Int) -> UnsafeMutableRawPointer { bases[r] }

    @inline(__always) package func arena(of r: Int, parity: Int) -> UnsafeMutableRawPointer { base(r) + 128 + parity * SharedArenaLayout.areaBytes }
    @inline(__always) package func postedWord(of r: Int) -> UnsafeMutablePointer<UInt64> { base(r).assumingMemoryBound(to: UInt64.self) }
    /// Written before `posted`, one per area: the operation's sequence number (high 32 bits) and the
    /// fingerprint of its arguments (low 32), for mismatch checks — per area, because a rank may post
    /// the next operation while its peers still read this one.
    @inline(__always) package func signatureWord(of r: Int, parity: Int) -> UnsafeMutablePointer<UInt64> {
        (base(r) + 8 + 8 * parity).assumingMemoryBound(to: UInt64.self)
    }
    /// `SharedArenaLayout.inlineBytes` bytes in the cache line of `posted`, per parity.
    @inline(__always) package func inlineArea(of r: Int, parity: Int) -> UnsafeMutableRawPointer { base(r) + 24 + SharedArenaLayout.inlineBytes * parity }

    @inline(__always) package func stage(of r: Int, slot: Int) -> UnsafeMutableRawPointer {
        base(r) + SharedArenaLayout.stageOffset + SharedArenaLayout.stageHeader + slot * stageBytes
    }
    @inline(__always) package func stepWord(_ w: StepWord, of r: Int) -> UnsafeMutablePointer<UInt64> {
        (base(r) + SharedArenaLayout.stageOffset + 64 * w.rawValue).assumingMemoryBound(to: UInt64.self)
    }
    /// The signature (as `signatureWord`) of the operation whose step last used the slot.
    @inline(__always) package func stageSignature(of r: Int, slot: Int) -> UnsafeMutablePointer<UInt64> {
        (base(r) + SharedArenaLayout.stageOffset + 256 + 64 * slot).assumingMemoryBound(to: UInt64.self)
    }

    /// Publishes a word of this rank's window (release) and wakes peers that sleep.
    @inline(__always) package func publish(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) { window.publish(word, value) }

    /// See `SymmetricWindow.waitAll`.
    @inline(__always)
    package func waitAll(_ word: (Int) -> UnsafeMutablePointer<UInt64>, atLeast value: UInt64, only: Int?, deadline: Deadline, what: String,
                 check: (Int, UInt64) throws(CCLError) -> Void) throws(CCLError) {
        try window.waitAll(word, atLeast: value, only: only, deadline: deadline, what: what, check: check)
    }
}
