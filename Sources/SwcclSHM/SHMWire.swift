import Glibc
import CSwcclShims
import SwcclSystem
import SwcclCore
import SwcclTransport

/// How shared memory moves the engine's messages (`MessageWire`): one FIFO per ordered pair of ranks,
/// in the receiver's segment (`SHMFrames.swift`). A slot's first word is its sequence number, written
/// last (store release) and polled by the reader (load acquire), so a small message costs one
/// cache-line round trip; the reader's consumed count (`tail`) is the writer's flow control. Messages
/// up to a slot's payload go eagerly in one slot; larger ones as an RTS, a CTS from the receiver once
/// a matching receive is posted, then DATA slots copied from the sender's buffer into the receiver's —
/// or, with cross-memory attach, pulled by the receiver straight from the sender's memory
/// (`process_vm_readv`) and answered with a CTS marked "pulled". The FIFO never carries bulk data that
/// nobody waits for, so it always drains.
///
/// Waiting: poll briefly with a pause instruction (yielding between polls), then sleep on the
/// segment's doorbell futex, which any writer bumps (and wakes, if the owner sleeps) after writing to
/// one of its FIFOs or freeing slots of one of the owner's. While blocked, every 100 ms: the peers'
/// liveness (closed flag, liveness lock, pid) and notices.
@usableFromInline package struct SHMWire: MessageWire {
    @usableFromInline package typealias Core = MessageCore<SHMWire>
    /// Bytes one progress pass pulls per receive with cross-memory attach (bounded work per pass).
    package static let pullChunk = 512 << 10

    @usableFromInline package struct RequestExtra: WireRequestState {
        /// The sender's buffer address (cross-memory attach), 0 if unknown; bytes pulled from it so far.
        package var remote: UInt64 = 0
        package var pulled = 0
        @usableFromInline package init() {}
    }

    package enum Work { case eager(Int32, UInt32), rts(Int32, UInt32), data(Int32, UInt32) }
    package struct Control { var messageID: UInt64; var code: UInt64; var request: Int32; var generation: UInt32 }

    package let rank: Int
    package let nranks: Int
    package let base: UnsafeMutableRawPointer
    /// The peers' mappings (owned by the transport; set in `connect`, unmapped in its deinit).
    package let peerBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    package let slotsPerFIFO: Int
    package let channelBytes: Int
    package var peerPid: [Int32]
    /// Whether the peer's pid means the same process here (same, known PID namespace).
    package var peerPidUsable: [Bool]
    /// Descriptors of the peers' segments, kept to probe their owners' liveness locks.
    package var peerFD: [Int32]
    package var produced: [UInt64]   // slots written into my FIFO in the peer's segment
    package var consumed: [UInt64]   // slots read from the peer's FIFO in my segment
    /// CTS to send, per peer; `pulled` ones complete their receive only once written, so a receiver
    /// never finishes (and closes) before its sender can learn it.
    package var control: [[Control]]
    package var cmaWorks: [Bool]    // cross-memory attach still permitted towards the peer
    package var pulling: [[(Int32, UInt32)]]  // per peer: receives being copied from the sender's memory
    package var pulledBytes = 0
    package var outbox: [[Work]]     // eager/RTS/DATA to send, per peer, in posting order
    package var lastLivenessCheck: UInt64 = 0
    /// Per peer: the version of its notice area last read.
    package var noticeVersion: [UInt64]
    package var closed = false

    package init(rank: Int, nranks: Int, base: UnsafeMutableRawPointer, peerBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
                 slotsPerFIFO: Int, channelBytes: Int, crossMemoryAttach: Bool) {
        self.rank = rank; self.nranks = nranks; self.base = base; self.peerBase = peerBase
        self.slotsPerFIFO = slotsPerFIFO; self.channelBytes = channelBytes
        peerPid = Array(repeating: 0, count: nranks)
        peerPidUsable = Array(repeating: false, count: nranks)
        peerFD = Array(repeating: -1, count: nranks)
        noticeVersion = Array(repeating: 0, count: nranks)
        produced = Array(repeating: 0, count: nranks)
        consumed = Array(repeating: 0, count: nranks)
        control = Array(repeating: [], count: nranks)
        cmaWorks = Array(repeating: crossMemoryAttach, count: nranks)
        pulling = Array(repeating: [], count: nranks)
        outbox = Array(repeating: [], count: nranks)
    }

    @usableFromInline package var label: String { " in shared memory" }
    @usableFromInline package func eagerLimit(_ peer: Int) -> Int { SHMTransport.payloadBytes }
    @usableFromInline package func peerAddress(_ peer: Int) -> String? { nil }

    /// The FIFO in `seg` that `writer` fills.
    @inline(__always) private func fifo(_ seg: UnsafeMutableRawPointer, writer: Int) -> UnsafeMutableRawPointer {
        seg + SHMTransport.segmentHeader + writer * channelBytes
    }
    @inline(__always) private func slot(_ fifo: UnsafeMutableRawPointer, _ index: UInt64) -> UnsafeMutableRawPointer {
        fifo + 128 + Int(index % UInt64(slotsPerFIFO)) * SHMTransport.slotBytes
    }

    /// Whether request `i` is still the one of generation `gen`, and not failed.
    @inline(__always) private func live(_ i: Int32, _ gen: UInt32, _ core: inout Core) -> Bool {
        core.requests[i].inUse && core.requests[i].generation == gen && core.requests[i].state != .failed
    }

    // MARK: the engine's requests

    @usableFromInline package mutating func sendEager(_ i: Int32, _ core: inout Core) {
        outbox[Int(core.requests[i].peer)].append(.eager(i, core.requests[i].generation))
    }

    @usableFromInline package mutating func sendRendezvous(_ i: Int32, _ core: inout Core) {
        _ = core.awaitGrant(i)
        outbox[Int(core.requests[i].peer)].append(.rts(i, core.requests[i].generation))
    }

    /// Cross-memory attach: copied straight from the sender's buffer, a chunk per progress pass
    /// (`pull`); the sender learns from a CTS marked "pulled" that its send is complete. Otherwise a
    /// CTS, and the data comes through the FIFO.
    @usableFromInline package mutating func grant(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        let peer = Int(core.requests[i].peer)
        if cmaWorks[peer] && m.address != 0 {
            core.requests[i].wire.remote = m.address
            pulling[peer].append((i, core.requests[i].generation))
        } else {
            core.expect(i, messageID: m.messageID)
            control[peer].append(Control(messageID: m.messageID, code: SHMTransport.clearToSend, request: -1, generation: 0))
        }
    }

    @usableFromInline package mutating func refuse(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        guard m.isRendezvous else { return }
        control[Int(core.requests[i].peer)].append(Control(messageID: m.messageID, code: SHMTransport.rejected, request: -1, generation: 0))
    }

    /// What was left in the FIFO past the budget may be a new receive's: read it again.
    @usableFromInline package mutating func resume(_ peer: Int, _ core: inout Core) { drain(peer, &core) }

    // MARK: progress

    /// One pass over every peer (`timeoutMs` 0), or a wait of at most `timeoutMs`; true if anything moved.
    @usableFromInline package mutating func progress(timeoutMs: Int32, _ core: inout Core) throws(CCLError) -> Bool {
        if timeoutMs > 0 { return try sleep(until: .after(milliseconds: Int(timeoutMs)), &core) }
        return pass(&core)
    }

    private mutating func pass(_ core: inout Core) -> Bool {
        if closed { return false }  // the peers' mappings stay until deinit, but nothing moves any more
        var any = false
        for p in 0..<nranks where peerBase[p] != nil {
            if drain(p, &core) { any = true }
            if pull(p, &core) { any = true }
            if write(p, &core) { any = true }
        }
        return any
    }

    /// Spins (with a pause instruction, yielding the core when oversubscribed) for `SWCCL_SPIN_US`,
    /// then sleeps on the doorbell until someone writes to or frees one of this rank's FIFOs, at most
    /// 100 ms at a time (for the liveness checks).
    @usableFromInline package mutating func sleep(until deadline: Deadline, _ core: inout Core) throws(CCLError) -> Bool {
        let bell = SHMTransport.word32(base, SHMTransport.offDoorbell)
        let spinUntil = Sys.monotonicNanos() &+ Knobs.spinNanos
        while true {
            if core.abortSignal.isRaised { throw core.abortSignal.error(rank: rank) }
            if closed { throw CCLError(.invalidUsage, "the shared-memory transport is closed", rank: rank) }
            if let b = core.brokenBy { throw b }
            let seen = cshim_load_u32(bell)
            let moved = pass(&core)
            if checkPeers(force: false, &core) || moved { return true }
            let now = Sys.monotonicNanos()
            if now >= deadline.nanos { return false }
            if now < spinUntil {
                for _ in 0..<64 where cshim_load_u32(bell) == seen { cshim_cpu_relax() }
                if cshim_load_u32(bell) == seen { Spin.yield() }
                continue
            }
            let sleepers = SHMTransport.word32(base, SHMTransport.offSleepers)
            _ = cshim_fetch_add_u32(sleepers, 1)
            if cshim_load_u32(bell) == seen {
                Sys.futexWait(bell, expected: seen, nanos: min(deadline.nanos &- now, 100_000_000))
            }
            _ = cshim_fetch_add_u32(sleepers, UInt32.max)  // −1
            if cshim_load_u32(bell) != seen { return true }
        }
    }

    /// While `wait` spins: a pause, and the core yielded when oversubscribed.
    @usableFromInline package func idle() {
        for _ in 0..<64 { cshim_cpu_relax() }
        Spin.yield()
    }

    /// Reads every complete slot of `peer`'s FIFO in this rank's segment.
    @discardableResult
    private mutating func drain(_ peer: Int, _ core: inout Core) -> Bool {
        guard let pseg = peerBase[peer] else { return false }
        let f = fifo(base, writer: peer)
        var any = false
        draining: while true {
            let s = slot(f, consumed[peer])
            guard cshim_load_acquire_u64(SHMTransport.word64(s)) == consumed[peer] &+ 1 else { break }
            let kind = s.load(fromByteOffset: 8, as: UInt32.self)
            let len = Int(s.load(fromByteOffset: 12, as: UInt32.self))
            let tag = s.load(fromByteOffset: 16, as: UInt64.self)
            let id = s.load(fromByteOffset: 24, as: UInt64.self)
            let offset = Int(truncatingIfNeeded: s.load(fromByteOffset: 32, as: UInt64.self))
            let total = Int(truncatingIfNeeded: s.load(fromByteOffset: 40, as: UInt64.self))
            let payload = UnsafeRawPointer(s + SHMTransport.slotHeader)
            // Written by the peer: nothing is read or written beyond the slot or a receive's buffer.
            let problem = SHMTransport.slotProblem(kind: kind, len: len, offset: offset, total: total)
            switch problem == nil ? kind : 0 {
            case SHMTransport.eager, SHMTransport.rts:
                // Past the budget an unmatched one stays in the FIFO (the peer's sends wait) until a
                // receive is posted for it.
                if core.mustHold(peer, tag: tag) { break draining }
                if kind == SHMTransport.eager {
                    core.arrivedEager(from: peer, tag: tag, length: len, payload: payload, wire: &self)
                } else {
                    // The sender's buffer address rides in the offset field (cross-memory attach).
                    core.arrivedRendezvous(from: peer, MessageHeader(tag: tag, length: total, isRendezvous: true, messageID: id, address: UInt64(UInt(bitPattern: offset))), wire: &self)
                }
            case SHMTransport.cts:
                if let i = core.takeGrant(peer, id) {
                    if UInt64(bitPattern: Int64(offset)) == SHMTransport.pulled {
                        core.requests[i].state = .matched
                        core.moved(i, core.requests[i].length)
                    } else if offset != 0 {
                        core.fail(i, CCLError(.invalidUsage, "rank \(peer) rejected a message of \(core.requests[i].length) bytes with tag \(core.requests[i].tag): its receive expected another size (size mismatch)",
                                              rank: rank, peer: peer))
                    } else {
                        core.requests[i].state = .matched
                        outbox[peer].append(.data(i, core.requests[i].generation))
                    }
                }
            case SHMTransport.data:
                if let i = core.receive(peer, messageID: id), let dst = core.requests[i].base {
                    guard offset <= core.requests[i].length - len else {
                        core.failPeer(peer, CCLError(.remoteError, "garbage in the FIFO from rank \(peer) (data of \(len) bytes at \(offset) for a message of \(core.requests[i].length))", rank: rank, peer: peer))
                        break
                    }
                    (dst + offset).copyMemory(from: payload, byteCount: len)
                    core.moved(i, len)
                }
            default:
                core.failPeer(peer, CCLError(.remoteError, "garbage in the FIFO from rank \(peer) (\(problem ?? "slot kind \(kind)"))", rank: rank, peer: peer))
            }
            consumed[peer] &+= 1
            cshim_store_release_u64(SHMTransport.word64(f), consumed[peer])  // tail: frees the slot for the writer
            any = true
        }
        if any { SHMTransport.ring(pseg) }  // the writer may wait for free slots
        return any
    }

    /// Writes what fits of `peer`'s control messages and outbox into its FIFO.
    @usableFromInline package mutating func flush(_ peer: Int, _ core: inout Core) { write(peer, &core) }

    @discardableResult
    private mutating func write(_ peer: Int, _ core: inout Core) -> Bool {
        guard let pseg = peerBase[peer], core.peers[peer].failure == nil else { return false }
        let f = fifo(pseg, writer: rank)
        var wrote = false
        let limit = UInt64(slotsPerFIFO)
        var prod = produced[peer]
        defer { produced[peer] = prod }
        func room(_ produced: UInt64) -> Bool { produced &- cshim_load_acquire_u64(SHMTransport.word64(f)) < limit }
        func post(_ kind: UInt32, len: Int, tag: UInt64, id: UInt64, offset: Int, total: Int, from src: UnsafeRawPointer?, _ produced: inout UInt64) {
            let s = slot(f, produced)
            s.storeBytes(of: kind, toByteOffset: 8, as: UInt32.self)
            s.storeBytes(of: UInt32(len), toByteOffset: 12, as: UInt32.self)
            s.storeBytes(of: tag, toByteOffset: 16, as: UInt64.self)
            s.storeBytes(of: id, toByteOffset: 24, as: UInt64.self)
            s.storeBytes(of: UInt64(bitPattern: Int64(offset)), toByteOffset: 32, as: UInt64.self)
            s.storeBytes(of: UInt64(total), toByteOffset: 40, as: UInt64.self)
            if len > 0, let src { (s + SHMTransport.slotHeader).copyMemory(from: src, byteCount: len) }
            produced &+= 1
            cshim_store_release_u64(SHMTransport.word64(s), produced)
            wrote = true
        }
        while !control[peer].isEmpty && room(prod) {
            let c = control[peer].removeFirst()
            post(SHMTransport.cts, len: 0, tag: 0, id: c.messageID, offset: Int(c.code), total: 0, from: nil, &prod)
            if c.request >= 0 && live(c.request, c.generation, &core) { core.moved(c.request, core.requests[c.request].length) }
        }
        while let w = outbox[peer].first, room(prod) {
            switch w {
            case .eager(let i, let gen):
                if live(i, gen, &core) {
                    let r = core.requests[i]
                    post(SHMTransport.eager, len: r.length, tag: r.tag, id: 0, offset: 0, total: r.length, from: r.base, &prod)
                    core.moved(i, r.length)
                }
                outbox[peer].removeFirst()
            case .rts(let i, let gen):
                if live(i, gen, &core) {
                    let r = core.requests[i]
                    // The buffer's address rides in the offset field, for a receiver that pulls it (CMA).
                    post(SHMTransport.rts, len: 0, tag: r.tag, id: r.messageID, offset: Int(bitPattern: r.base.map { UInt(bitPattern: $0) } ?? 0), total: r.length, from: nil, &prod)
                }
                outbox[peer].removeFirst()
            case .data(let i, let gen):
                guard live(i, gen, &core) else { outbox[peer].removeFirst(); continue }
                let r = core.requests[i]
                let n = min(SHMTransport.payloadBytes, r.length - r.transferred)
                post(SHMTransport.data, len: n, tag: r.tag, id: r.messageID, offset: r.transferred, total: r.length, from: r.base.map { UnsafeRawPointer($0 + r.transferred) }, &prod)
                core.moved(i, n)
                if core.requests[i].transferred >= r.length { outbox[peer].removeFirst() }
            }
        }
        if wrote { SHMTransport.ring(pseg) }
        return wrote
    }

    /// Copies the next chunk of the oldest receive pulled from `peer`'s memory; on failure (no
    /// permission, the peer gone) falls back to a CTS, the data then coming through the FIFO.
    private mutating func pull(_ peer: Int, _ core: inout Core) -> Bool {
        guard let (i, gen) = pulling[peer].first else { return false }
        guard live(i, gen, &core) else { pulling[peer].removeFirst(); return true }
        let r = core.requests[i]
        let n = min(Self.pullChunk, r.length - r.wire.pulled)
        do {
            if n > 0, let dst = r.base {
                try Sys.readProcessMemory(pid: peerPid[peer], remote: r.wire.remote &+ UInt64(r.wire.pulled), into: dst + r.wire.pulled, bytes: n)
            }
            core.requests[i].wire.pulled += n
            pulledBytes += n
            if core.requests[i].wire.pulled >= r.length {
                pulling[peer].removeFirst()
                control[peer].append(Control(messageID: r.messageID, code: SHMTransport.pulled, request: i, generation: gen))  // finished when flushed
            }
        } catch {
            cmaWorks[peer] = false
            Log.info(.net, "rank \(rank): cross-memory attach to rank \(peer) (pid \(peerPid[peer])) failed (\(error)); copying through the FIFO")
            for (j, g) in pulling[peer] where live(j, g, &core) {
                core.requests[j].wire.pulled = 0
                core.expect(j, messageID: core.requests[j].messageID)
                control[peer].append(Control(messageID: core.requests[j].messageID, code: SHMTransport.clearToSend, request: -1, generation: 0))
            }
            pulling[peer].removeAll()
        }
        return true
    }

    // MARK: liveness and notices

    /// Fails the requests that wait on a peer that died or closed (after its FIFO was drained), and
    /// reads the peers' notices that changed, every 100 ms (or now, with `force`); true if it failed
    /// any request or broke the endpoint.
    package mutating func checkPeers(force: Bool, _ core: inout Core) -> Bool {
        let now = Sys.monotonicNanos()
        guard !closed, force || now &- lastLivenessCheck >= 100_000_000 else { return false }
        lastLivenessCheck = now
        var failed = checkNotices(&core)
        for p in 0..<nranks where peerBase[p] != nil && core.peers[p].failure == nil {
            let closedFlag = cshim_load_u32(SHMTransport.word32(peerBase[p]!, SHMTransport.offClosed)) != 0
            // The lock is the namespace-proof answer; the pid adds a dead process whose lock a child
            // that skipped our fork handler (raw clone) still holds. Unknown: the timeout decides.
            let lockGone = Sys.livenessLockHeld(peerFD[p]) == false
            let alive = !lockGone && (!peerPidUsable[p] || Sys.processAlive(peerPid[p]))
            guard closedFlag || !alive else { continue }
            let why = closedFlag ? "rank \(p) closed its end of shared memory"
                : "rank \(p) (pid \(peerPid[p])\(peerPidUsable[p] ? "" : " in another PID namespace")) died"
            // Its notice, written before it closed or exited, says whom to blame.
            let e = noticeError(p, &core) ?? CCLError(.remoteError, "connection lost: \(why)", rank: rank, peer: p)
            core.peers[p].failure = e
            // What it sent before it went is still delivered (all of it: it sends no more, so the
            // unexpected budget no longer holds its FIFO back).
            drain(p, &core)
            failed = failed || core.peers[p].sends.contains { core.requests[$0].isPending } || core.peers[p].recvs.contains { core.requests[$0].isPending }
            core.failPeer(p, e)
            outbox[p].removeAll()
            pulling[p].removeAll()
            // A clean close is the peer's ordinary teardown; a death is news.
            if closedFlag { Log.info(.net, "rank \(rank): \(why)") } else { Log.warn(.net, "rank \(rank): \(why)") }
        }
        return failed
    }

    /// A peer's notice, read from its segment (kept as its latest), if it left one.
    package mutating func readNotice(_ p: Int, _ core: inout Core) -> Notice? {
        guard let seg = peerBase[p] else { return core.peers[p].notice }
        let (_, n) = SHMTransport.readNoticeArea(seg + SHMTransport.offNotice)
        if let n { core.peers[p].notice = n }
        return core.peers[p].notice
    }

    /// A peer's abort notice as the error to report, if it left one.
    private mutating func noticeError(_ p: Int, _ core: inout Core) -> CCLError? {
        guard let n = readNotice(p, &core), n.kind == .abort else { return nil }
        return n.error(at: rank)
    }

    /// Reads the peers' notices that changed; a peer's abort notice breaks this endpoint (every
    /// request fails with its error, naming its culprit). True if it broke it.
    private mutating func checkNotices(_ core: inout Core) -> Bool {
        var broke = false
        for p in 0..<nranks where peerBase[p] != nil {
            let v = cshim_load_acquire_u64(SHMTransport.noticeWords(area: peerBase[p]! + SHMTransport.offNotice).version)
            guard v != noticeVersion[p] else { continue }
            let (v2, n) = SHMTransport.readNoticeArea(peerBase[p]! + SHMTransport.offNotice)
            guard n != nil else { continue }
            noticeVersion[p] = v2
            let wasBroken = core.brokenBy != nil
            core.noticeArrived(p, n)
            broke = broke || (!wasBroken && core.brokenBy != nil)
        }
        return broke
    }
}
