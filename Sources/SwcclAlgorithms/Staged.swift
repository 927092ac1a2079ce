import CSwcclKernels
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Collectives through shared staging buffers (`SharedArena`), for communicators whose ranks share a
/// host: no messages, every rank reads its peers' staging slots directly.
///
/// The data moves in pipeline steps of at most one staging slot each; steps are numbered per
/// communicator (the same numbers on every rank), and step s uses slot s mod `stageSlots` of every
/// rank. A step of the allreduce, for a chunk of the buffer split into n slices:
/// 1. (slot free) wait until every peer finished step s − slots, which read this slot;
/// 2. copy the peers' slices of the chunk of the input into this rank's slot, publish `posted = s`;
/// 3. wait for every peer's `posted`; reduce slice `rank` of the own input and of every peer's slot
///    (own first, then rank order) into this rank's slice of its slot, and copy it to the output;
///    publish `reduced = s`;
/// 4. wait for every peer's `reduced`; copy their slices into the output; publish `done = s`.
/// All-gather, reduce-scatter and broadcast are the same pipeline with fewer phases. Chunks stay in the
/// caches between phases, so memory sees little more than the input read and the output written; the
/// slots are allocated once per communicator (no page faults per call). A slot's signature word
/// (operation number and argument fingerprint) is written with every step, so ranks that called
/// different operations fail with a clear error instead of mixing their data.

extension Knobs {
    package static let streamingBytes = Knob.int("SWCCL_SHM_NT_BYTES", default: 4 << 20,
        "staged shared-memory collectives write outputs of at least this many bytes with non-temporal stores (0: never)")
}

package enum Staged {
    /// Copies into the caller's output: with streaming stores when the whole output is larger than the
    /// caches would keep (no read of each destination line before it is written; the gain is in
    /// docs/PERFORMANCE.md), plain copies otherwise (the output stays in cache for the caller).
    package struct Output {
        package let streaming: Bool
        /// `rereads`: the output overwrites lines this rank just read (in place): streaming stores would
        /// evict them, plain stores need no extra read there.
        package init(bytes: Int, rereads: Bool = false) { streaming = !rereads && Knobs.streamingBytes.value > 0 && bytes >= Knobs.streamingBytes.value }
        @inline(__always) package func put(_ dst: UnsafeMutableRawPointer, _ src: UnsafeRawPointer, _ bytes: Int) {
            if streaming { sck_copy_nt(dst, src, bytes) } else { dst.copyMemory(from: src, byteCount: bytes) }
        }
    }

    /// The step loop shared by every collective: numbers the steps, frees the slot, signs it.
    package struct Pipeline {
        package let ctx: CollectiveContext
        package let arena: SharedArena
        package let first: UInt64
        package let scan: (Int, UInt64) throws(CCLError) -> Void

        package init(_ ctx: CollectiveContext, _ arena: SharedArena, steps: Int) {
            self.ctx = ctx
            self.arena = arena
            first = ctx.steps.take(UInt64(steps))
            scan = { (peer, since) throws(CCLError) -> Void in
                try ctx.arenaCheck()
                ctx.blocked(on: peer, since: since)
            }
        }

        @inline(__always) package func step(_ k: Int) -> UInt64 { first &+ UInt64(k) }
        @inline(__always) package func slot(_ s: UInt64) -> Int { Int(s % UInt64(arena.stageSlots)) }

        /// Waits until this rank may overwrite the slot of step `s`, then signs it for this operation.
        package func claim(_ s: UInt64) throws(CCLError) -> UnsafeMutableRawPointer {
            let slots = UInt64(arena.stageSlots)
            if s > slots { try wait(.done, s - slots, "finish reading its previous staging step") }
            arena.stageSignature(of: ctx.rank, slot: slot(s)).pointee = ctx.signature  // published by the next release
            return arena.stage(of: ctx.rank, slot: slot(s))
        }

        package func publish(_ w: StepWord, _ s: UInt64) { arena.publish(arena.stepWord(w, of: ctx.rank), s) }

        /// Waits for every peer's (or `only`'s) step word to reach `s`.
        package func wait(_ w: StepWord, _ s: UInt64, _ what: String, only: Int? = nil) throws(CCLError) {
            try arena.waitAll({ arena.stepWord(w, of: $0) }, atLeast: s, only: only, deadline: ctx.deadline, what: what, check: scan)
            ctx.moved()
        }

        /// After a peer posted step `s`: its slot must carry this operation's signature.
        package func verify(_ s: UInt64, only: Int? = nil) throws(CCLError) {
            let mine = ctx.signature
            for r in only.map({ $0...$0 }) ?? 0...(ctx.size - 1) where r != ctx.rank {
                let theirs = arena.stageSignature(of: r, slot: slot(s)).pointee
                if theirs != mine {
                    publish(.done, s)  // whatever happens next, this rank no longer reads
                    let theirSeq = theirs >> 32
                    if theirSeq == ctx.sequence & 0xffff_ffff { throw ctx.disagreement(r, theirs: UInt32(truncatingIfNeeded: theirs)) }
                    throw CCLError(.invalidUsage, "rank \(r) is in operation #\(theirSeq) while this rank is in #\(ctx.sequence) (the ranks called different sequences of collectives, or different arguments before); every rank must call the same collectives in the same order with the same arguments",
                                   rank: ctx.rank, peer: r)
                }
            }
        }

        /// Runs `body`, turning a timeout into the clearer error of a peer in another operation.
        package func run(_ body: () throws(CCLError) -> Void) throws(CCLError) {
            do throws(CCLError) { try body() } catch {
                throw error.kind == .timeout ? ctx.stalled(on: error.peer ?? 0, error) : error
            }
        }
    }

    /// Elements [lo, hi) of slice `i` when `count` elements are split into `n` slices (whole elements,
    /// the first `count % n` slices one longer).
    @inline(__always) package static func slice(_ i: Int, of count: Int, _ n: Int) -> (lo: Int, len: Int) {
        let q = count / n, m = count % n
        return (i * q + min(i, m), q + (i < m ? 1 : 0))
    }

    /// Reduces slice bytes at `offset` of every rank's staging slot, in rank order, into `dst`.
    @inline(__always) package static func reduceSlots(_ p: Pipeline, slot: Int, offset: Int, into dst: UnsafeMutableRawPointer, count: Int,
                                              kernel: ReduceKernel) {
        let n = p.ctx.size
        kernel(dst, UnsafeRawPointer(p.arena.stage(of: 0, slot: slot) + offset), UnsafeRawPointer(p.arena.stage(of: 1, slot: slot) + offset), count)
        for r in 2..<max(n, 2) { kernel(dst, UnsafeRawPointer(dst), UnsafeRawPointer(p.arena.stage(of: r, slot: slot) + offset), count) }
    }

    package static func allReduce(_ ctx: CollectiveContext, arena: SharedArena, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                          count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size, r = ctx.rank, es = type.size
        let perStep = arena.stageBytes / es
        let steps = (count + perStep - 1) / perStep
        let p = Pipeline(ctx, arena, steps: steps)
        let kernel = Reduction.kernel(type, op)
        let output = Output(bytes: count * es, rereads: send == UnsafeRawPointer(recv))
        try p.run { () throws(CCLError) in
            for k in 0..<steps {
                let s = p.step(k), slot = p.slot(s)
                let lo = k * perStep, len = min(perStep, count - lo)
                let my = slice(r, of: len, n)
                let mine = try p.claim(s)
                // The peers' slices of this chunk (this rank reduces its own straight from `send`).
                if my.lo > 0 { mine.copyMemory(from: send + lo * es, byteCount: my.lo * es) }
                let tail = my.lo + my.len
                if tail < len { (mine + tail * es).copyMemory(from: send + (lo + tail) * es, byteCount: (len - tail) * es) }
                p.publish(.posted, s)
                try p.wait(.posted, s, "post its input")
                try p.verify(s)
                if my.len > 0 {
                    // Into this rank's slice of its slot (which no peer reads before `reduced`): own
                    // contribution first, then the peers' in rank order; then out to `recv`.
                    let acc = mine + my.lo * es
                    var first = true
                    for q in 0..<n where q != r {
                        let theirs = UnsafeRawPointer(arena.stage(of: q, slot: slot) + my.lo * es)
                        kernel(acc, first ? send + (lo + my.lo) * es : UnsafeRawPointer(acc), theirs, my.len)
                        first = false
                    }
                    if op == .avg { Reduction.divide(acc, count: my.len, type: type, by: n) }
                    output.put(recv + (lo + my.lo) * es, acc, my.len * es)
                }
                p.publish(.reduced, s)
                try p.wait(.reduced, s, "reduce its slice")
                for q in 0..<n where q != r {
                    let sl = slice(q, of: len, n)
                    if sl.len > 0 { output.put(recv + (lo + sl.lo) * es, arena.stage(of: q, slot: slot) + sl.lo * es, sl.len * es) }
                }
                p.publish(.done, s)
            }
        }
    }

    /// Every rank's `bytes` land at offset rank × bytes of every rank's `recv`.
    package static func allGather(_ ctx: CollectiveContext, arena: SharedArena, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                          bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        let perStep = arena.stageBytes
        let steps = (bytes + perStep - 1) / perStep
        let p = Pipeline(ctx, arena, steps: steps)
        let output = Output(bytes: n * bytes)
        if UnsafeRawPointer(recv + r * bytes) != send { output.put(recv + r * bytes, send, bytes) }
        try p.run { () throws(CCLError) in
            for k in 0..<steps {
                let s = p.step(k), slot = p.slot(s)
                let lo = k * perStep, len = min(perStep, bytes - lo)
                let mine = try p.claim(s)
                mine.copyMemory(from: send + lo, byteCount: len)
                p.publish(.posted, s)
                try p.wait(.posted, s, "post its block")
                try p.verify(s)
                for q in 0..<n where q != r { output.put(recv + q * bytes + lo, arena.stage(of: q, slot: slot), len) }
                p.publish(.done, s)
            }
        }
    }

    /// Block `rank` (of `count` elements) of the reduction of every rank's n blocks lands in `recv`.
    package static func reduceScatter(_ ctx: CollectiveContext, arena: SharedArena, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                              count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size, r = ctx.rank, es = type.size
        let perStep = max(1, arena.stageBytes / (n * es))  // elements of each block per step
        let steps = (count + perStep - 1) / perStep
        let p = Pipeline(ctx, arena, steps: steps)
        let kernel = Reduction.kernel(type, op)
        try p.run { () throws(CCLError) in
            for k in 0..<steps {
                let s = p.step(k), slot = p.slot(s)
                let lo = k * perStep, len = min(perStep, count - lo)
                let mine = try p.claim(s)
                // Piece k of every block, own block included (in place, the output overwrites it).
                for b in 0..<n { (mine + b * len * es).copyMemory(from: send + (b * count + lo) * es, byteCount: len * es) }
                p.publish(.posted, s)
                try p.wait(.posted, s, "post its input")
                try p.verify(s)
                let out = recv + lo * es
                reduceSlots(p, slot: slot, offset: r * len * es, into: out, count: len, kernel: kernel)
                if op == .avg { Reduction.divide(out, count: len, type: type, by: n) }
                p.publish(.done, s)
            }
        }
    }

    /// The root's `bytes` land in every rank's `buffer` (the root's already holds them).
    package static func broadcast(_ ctx: CollectiveContext, arena: SharedArena, buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        let perStep = arena.stageBytes
        let steps = (bytes + perStep - 1) / perStep
        let p = Pipeline(ctx, arena, steps: steps)
        let output = Output(bytes: bytes)
        try p.run { () throws(CCLError) in
            for k in 0..<steps {
                let s = p.step(k), slot = p.slot(s)
                let lo = k * perStep, len = min(perStep, bytes - lo)
                // Every rank signs its slot (so a rank waiting on this one can tell another operation).
                let mine = try p.claim(s)
                if ctx.rank == root {
                    mine.copyMemory(from: buffer + lo, byteCount: len)
                    p.publish(.posted, s)
                    // The root only writes: before its first step counts as done (so no peer can
                    // reuse its slot yet), it waits for the next rank to sign this step and checks
                    // that it is in this very operation (one extra latency on the root only; the
                    // other peers check the root's signature themselves).
                    if k == 0 {
                        let next = (root + 1) % ctx.size
                        try p.wait(.posted, s, "start the broadcast", only: next)
                        try p.verify(s, only: next)
                    }
                } else {
                    p.publish(.posted, s)
                    try p.wait(.posted, s, "post its data", only: root)
                    try p.verify(s, only: root)
                    output.put(buffer + lo, arena.stage(of: root, slot: slot), len)
                }
                p.publish(.done, s)
            }
        }
    }
}
