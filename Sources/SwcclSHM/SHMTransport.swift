import Glibc
import CSwcclShims
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static let shmDisable = Knob.bool("SWCCL_SHM_DISABLE", default: false, "1: never use the shared-memory transport")
    package static let shmSlots = Knob.int("SWCCL_SHM_SLOTS", default: 16, "slots of each shared-memory FIFO (per ordered pair of ranks)")
    package static let shmCMA = Knob.bool("SWCCL_SHM_CMA", default: true,
        "shared memory: receivers copy large messages straight from the sender's buffer with process_vm_readv (cross-memory attach, one copy instead of two; docs/PERFORMANCE.md); where the kernel refuses, the FIFO is used")
}

extension SHMTransport {
    /// Its registry entry. Cost figures per message step over the FIFOs and per byte through them
    /// (copy in, copy out), fitted to swccl-perf runs (docs/PERFORMANCE.md, "Algorithm choice").
    package static let backend = TransportBackend(
        name: "shm", disabled: { Knobs.shmDisable.value }, reaches: { local, peer in local.sameHost(as: peer) },
        alphaNanos: 1_500, betaNanosPerByte: 0.25, providesWindow: true, sleepsInKernel: false,
        summary: { "shm: available (ranks on this host)" },
        knobs: { [Knobs.shmDisable.info, Knobs.shmSlots.info, Knobs.shmCMA.info] },
        make: { (s) throws(CCLError) in try SHMTransport(rank: s.rank, nranks: s.nranks, secret: s.secret, window: s.window) },
        conformanceVariants: [
            ("shm", { (s) throws(CCLError) in try SHMTransport(rank: s.rank, nranks: s.nranks, secret: s.secret, crossMemoryAttach: false) }),
            // Large messages pulled from the sender's memory (process_vm_readv) instead of through the FIFO.
            ("shm-cma", { (s) throws(CCLError) in try SHMTransport(rank: s.rank, nranks: s.nranks, secret: s.secret, crossMemoryAttach: true) }),
        ])
}

/// The shared-memory backend of the transport protocol, for ranks on one host: the message engine
/// (`MessageEngine`) over `SHMWire`'s FIFOs, and the symmetric window (`SHMWindow.swift`).
///
/// Each rank creates one POSIX shared-memory segment with a random name (published in its address;
/// unguessable, so concurrent jobs and communicators never collide, and strangers can neither open it
/// nor squat on its name), holding one inbound FIFO per peer: the peer writes, the owner reads. Every peer maps every
/// other's segment in `connect`; each owner unlinks its segment as soon as all peers have mapped it, so
/// a crash afterwards leaves nothing in /dev/shm.
///
/// Liveness and cross-memory attach across PID namespaces: a pid means something only inside one PID
/// namespace (two containers sharing /dev/shm, `unshare -p`), so each segment records its owner's PID
/// namespace, and a peer in another one is never read with process_vm_readv nor probed with kill(2).
/// Every owner holds an open-file-description read lock on its segment for as long as it lives (the
/// kernel drops it when the process dies, whatever its namespace, and a forked child closes its copy);
/// peers probe it without taking it. A peer is dead when its lock is gone, or, in the same PID
/// namespace, when its pid is.
package final class SHMTransport: MessageTransport, @unchecked Sendable {
    package let capabilities: TransportCapabilities
    package let localAddress: EndpointAddress
    package let rank: Int
    package let nranks: Int
    package let slotsPerFIFO: Int
    package let channelBytes: Int
    package let segmentBytes: Int
    /// Offset of the symmetric window (`SymmetricWindow`), after the FIFOs; its size (0: none), and
    /// the signature of its layout, written into the header and compared with every peer's.
    package let windowOffset: Int
    package let windowBytes: Int
    private let windowRequest: WindowRequest?
    /// The NUMA node the segment's pages were bound to (nil: not placed).
    package let numaNode: Int?
    package let name: String
    /// The segment's name in /dev/shm (without the leading slash).
    package var segmentName: String { String(name.dropFirst()) }
    package let base: UnsafeMutableRawPointer
    /// The segment's descriptor, holding its liveness lock, and its slot in the fork table.
    private let segmentFD: Int32
    private let lockSlot: Int32
    /// The process that made this transport; a forked child's copy neither closes nor unlinks anything.
    private let owner = ProcessOwner()
    private var unlinked = false
    @usableFromInline package let abortSignal: AbortSignal
    private let lock = Lock()
    /// Peers' mappings: a fixed array (never reallocated), so that the collectives' unlocked reads
    /// (`peerBaseUnlocked`) are plain loads without exclusivity checks.
    private let peerBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var engine: MessageEngine<SHMWire>

    /// Bytes received by cross-memory attach so far (diagnostics).
    package var bytesPulled: Int { lock.withLock { engine.wire.pulledBytes } }

    /// `crossMemoryAttach`: pull large messages with process_vm_readv (default: `SWCCL_SHM_CMA`).
    /// `window`: the symmetric window to provide (its size and layout signature; nil: none).
    package init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding: Int = 4096, crossMemoryAttach: Bool? = nil,
                window: WindowRequest? = nil) throws(CCLError) {
        self.rank = rank
        self.nranks = nranks
        // Keep a segment near 16 MiB for large rank counts: fewer slots per FIFO, at least 4.
        let wanted = max(4, Knobs.shmSlots.value)
        slotsPerFIFO = max(4, min(wanted, (16 << 20) / max(1, nranks * SHMTransport.slotBytes)))
        channelBytes = 128 + slotsPerFIFO * SHMTransport.slotBytes
        windowOffset = SHMTransport.segmentHeader + nranks * channelBytes
        windowRequest = window
        windowBytes = ((window?.bytes ?? 0) + 4095) & ~4095
        segmentBytes = windowOffset + windowBytes
        // A random name, published to the peers in this rank's address: nobody can guess it to squat on
        // it or to open it (and 0600 keeps other users out anyway), even when the rendezvous secret
        // can be computed from host:port.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { raw.deallocate() }
        do throws(Errno) { try Sys.randomBytes(raw, 16) } catch {
            throw CCLError.system("cannot draw a random shared-memory segment name", error)
        }
        let nonce = (0..<16).map { raw.load(fromByteOffset: $0, as: UInt8.self) }
        var hex = ""
        for b in nonce { hex += String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16) }
        name = "/swccl-\(hex)-r\(rank)"
        // Segments of ranks killed during an earlier init (before every peer had mapped and unlinked them).
        for dead in Sys.reapDeadSegments(prefix: "swccl-", magic: SHMTransport.magic) {
            Log.info(.net, "rank \(rank): removed /dev/shm/\(dead), left by a process that died before unlinking it")
        }
        // NUMA: this segment holds what this rank receives (its inbound FIFOs, its staging slots), so
        // its pages come from the node of the CPU the rank runs on when it creates them.
        let node = NUMA.currentNode()
        var placed = false
        do {
            (base, segmentFD) = try Sys.createSharedMemory(name: name, bytes: segmentBytes) { p, n in
                if let node { placed = NUMA.bind(p, bytes: n, node: node) }
            }
        } catch {
            throw CCLError.system("cannot create shared memory segment \(name) of \(segmentBytes) bytes", error)
        }
        do { lockSlot = try Sys.holdLivenessLock(segmentFD) } catch {
            Sys.unmap(base, bytes: segmentBytes)
            Sys.unlinkSharedMemory(name: name)
            Sys.close(segmentFD)
            throw CCLError.system("cannot lock shared memory segment \(name) (liveness lock)", error)
        }
        base.storeBytes(of: UInt64(nranks), toByteOffset: SHMTransport.offRanks, as: UInt64.self)
        base.storeBytes(of: UInt64(rank), toByteOffset: SHMTransport.offOwner, as: UInt64.self)
        base.storeBytes(of: UInt64(UInt32(bitPattern: Sys.getpid())), toByteOffset: SHMTransport.offPid, as: UInt64.self)
        base.storeBytes(of: Sys.pidNamespace, toByteOffset: SHMTransport.offPidNamespace, as: UInt64.self)
        base.storeBytes(of: window?.signature ?? 0, toByteOffset: SHMTransport.offWindow, as: UInt64.self)
        base.storeBytes(of: UInt64(slotsPerFIFO), toByteOffset: SHMTransport.offFIFO, as: UInt64.self)
        cshim_store_release_u64((base + SHMTransport.offMagic).assumingMemoryBound(to: UInt64.self), SHMTransport.magic)
        var addr = Array(name.utf8)
        addr.insert(UInt8(addr.count), at: 0)
        localAddress = EndpointAddress(addr)
        capabilities = TransportCapabilities(
            name: "shm", eagerThreshold: SHMTransport.payloadBytes, maxMessageBytes: Int(Int64.max), oneSidedWrites: false,
            needsRegistration: false, maxOutstandingRequests: maxOutstanding, sameHostOnly: true,
            windowBytes: windowBytes,
            alphaNanos: SHMTransport.backend.alphaNanos, betaNanosPerByte: SHMTransport.backend.betaNanosPerByte)
        peerBase = .allocate(capacity: nranks)
        peerBase.initialize(repeating: nil, count: nranks)
        let cma = crossMemoryAttach ?? Knobs.shmCMA.value
        if cma { Sys.allowSameUserMemoryReads() }
        do throws(CCLError) { abortSignal = try AbortSignal(eventFD: false) } catch {
            Sys.unmap(base, bytes: segmentBytes)
            Sys.unlinkSharedMemory(name: name)
            Sys.releaseLivenessLock(segmentFD, slot: lockSlot)
            peerBase.deallocate()
            throw error
        }
        engine = MessageEngine(core: MessageCore(rank: rank, nranks: nranks, maxOutstanding: maxOutstanding, abortSignal: abortSignal),
                               wire: SHMWire(rank: rank, nranks: nranks, base: base, peerBase: peerBase, slotsPerFIFO: slotsPerFIFO,
                                             channelBytes: channelBytes, crossMemoryAttach: cma))
        numaNode = placed ? node : nil
        Log.info(.net, "rank \(rank): shared memory segment \(name), \(segmentBytes >> 10) KiB, \(slotsPerFIFO) slots of \(SHMTransport.slotBytes >> 10) KiB per peer, "
                 + "a symmetric window of \(windowBytes >> 10) KiB; "
                 + (placed ? "pages bound to NUMA node \(node!)" : "no NUMA placement (\(NUMA.available ? "node unknown" : NUMA.unavailableReason))"))
    }

    deinit {
        if owner.isInherited { return }  // the parent's: its descriptors may be another's here; leave it all
        close()
        Sys.unmap(base, bytes: segmentBytes)  // kept until here: abort() may still ring it
        // The peers' mappings too: `close` leaves them to readers that do not take the lock.
        for p in 0..<nranks { if let seg = peerBase[p] { Sys.unmap(seg, bytes: segmentBytes) } }
        Sys.releaseLivenessLock(segmentFD, slot: lockSlot)
        peerBase.deallocate()
    }

    @usableFromInline package func withEngine<R>(_ body: (inout MessageEngine<SHMWire>) throws(CCLError) -> R) throws(CCLError) -> R {
        lock.lock(); defer { lock.unlock() }
        return try body(&engine)
    }

    /// A peer's mapping, read without the lock: set in `connect` (before any collective can run) and
    /// unmapped only in `deinit`, so a reader racing `close` still reads mapped memory.
    package func peerBaseUnlocked(_ r: Int) -> UnsafeMutableRawPointer { peerBase[r]! }

    // MARK: set-up

    package func connect(_ peers: [PeerInfo], deadline: Deadline) throws(CCLError) {
        lock.lock(); defer { lock.unlock() }
        for p in peers {
            guard p.rank >= 0, p.rank < nranks, p.rank != rank, let peerName = Self.decode(p.address) else {
                throw CCLError(.invalidArgument, "bad shared-memory address for rank \(p.rank)", peer: p.rank)
            }
            guard p.host.sameHost(as: .local) else {
                throw CCLError(.invalidUsage, "rank \(p.rank) is on host \(p.host.hostname), not this one: shared memory cannot reach it", peer: p.rank)
            }
            let opened: (UnsafeMutableRawPointer, Int32)?
            do { opened = try Sys.openSharedMemory(name: peerName, bytes: segmentBytes) } catch {
                throw CCLError.system("cannot map rank \(p.rank)'s segment \(peerName) of \(segmentBytes) bytes"
                                      + (error == Errno(EINVAL) ? " (it is smaller: do SWCCL_SHM_* settings differ between ranks?)" : ""), error, peer: p.rank)
            }
            guard let (seg, segFD) = opened else { throw CCLError(.remoteError, "rank \(p.rank)'s segment \(peerName) does not exist (the peer exited?)", peer: p.rank) }
            engine.wire.peerFD[p.rank] = segFD  // closed by close() from here on, whatever happens next
            guard cshim_load_acquire_u64(Self.word64(seg + SHMTransport.offMagic)) == SHMTransport.magic,
                  seg.load(fromByteOffset: SHMTransport.offRanks, as: UInt64.self) == UInt64(nranks),
                  seg.load(fromByteOffset: SHMTransport.offOwner, as: UInt64.self) == UInt64(p.rank) else {
                Sys.unmap(seg, bytes: segmentBytes)
                throw CCLError(.remoteError, "rank \(p.rank)'s segment \(peerName) has another layout, version or owner (is every rank running the same SwiftCCL?)", peer: p.rank)
            }
            let layout = seg.load(fromByteOffset: SHMTransport.offWindow, as: UInt64.self)
            let fifoSlots = seg.load(fromByteOffset: SHMTransport.offFIFO, as: UInt64.self)
            guard fifoSlots == UInt64(slotsPerFIFO) else {
                Sys.unmap(seg, bytes: segmentBytes)
                throw CCLError(.invalidUsage, "rank \(p.rank)'s FIFOs have \(fifoSlots) slots, this rank's \(slotsPerFIFO): set SWCCL_SHM_SLOTS alike on every rank", peer: p.rank)
            }
            if let w = windowRequest, layout != w.signature {
                Sys.unmap(seg, bytes: segmentBytes)
                throw CCLError(.invalidUsage, "rank \(p.rank) lays out its shared window otherwise: \(w.describe(layout)) there, \(w.describe(w.signature)) here", peer: p.rank)
            }
            peerBase[p.rank] = seg
            engine.wire.peerPid[p.rank] = Int32(truncatingIfNeeded: seg.load(fromByteOffset: SHMTransport.offPid, as: UInt64.self))
            let peerNamespace = seg.load(fromByteOffset: SHMTransport.offPidNamespace, as: UInt64.self)
            engine.wire.peerPidUsable[p.rank] = Sys.pidNamespace != 0 && peerNamespace == Sys.pidNamespace
            if !engine.wire.peerPidUsable[p.rank] {
                // Its pid names another process here (or nothing): never read memory or probe by pid.
                if engine.wire.cmaWorks[p.rank] {
                    Log.info(.net, "rank \(rank): rank \(p.rank) (pid \(engine.wire.peerPid[p.rank]) in its own namespace) is in another PID namespace"
                             + (Sys.pidNamespace == 0 ? " or /proc is not mounted here" : "") + ": no cross-memory attach to it, liveness by its segment lock")
                }
                engine.wire.cmaWorks[p.rank] = false
            }
            _ = cshim_fetch_add_u32(Self.word32(seg, SHMTransport.offMapped), 1)
            engine.core.peers[p.rank].connected = true
            Self.ring(seg)
        }
        // Unlink once every peer has mapped this segment: from then on nothing is left in /dev/shm.
        while cshim_load_u32(Self.word32(base, SHMTransport.offMapped)) < UInt32(peers.count) {
            if deadline.hasPassed {
                unlink()
                throw CCLError(.timeout, "only \(cshim_load_u32(Self.word32(base, SHMTransport.offMapped))) of \(peers.count) peers mapped this rank's segment in time")
            }
            if abortSignal.isRaised { unlink(); throw abortSignal.error(rank: rank) }
            Sys.sleep(nanos: 200_000)
        }
        unlink()
    }

    private func unlink() {
        if !unlinked { Sys.unlinkSharedMemory(name: name); unlinked = true }
    }

    // MARK: notices, abort, close

    package func peerNotice(_ peer: Int) -> Notice? {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < nranks, peer != rank else { return nil }
        return engine.withWire { (wire, core) in wire.readNotice(peer, &core) }
    }

    /// Writes the notice into this rank's segment (peers read it there, even after this process is
    /// gone) and rings every peer, so a sleeping one looks at once.
    package func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        guard !engine.wire.closed else { return }
        Self.writeNotice(notice, into: base)
        for p in 0..<nranks { if let seg = peerBase[p] { Self.ring(seg) } }
    }

    package func abort(_ reason: String) {
        abortSignal.raise(reason)
        Self.ring(base)  // wakes a waiter of this process sleeping on its own doorbell
    }

    package func close() {
        // A forked child's copy: the closed flag, the doorbells and the name are the parent's.
        if owner.isInherited { return }
        abort("closed")
        lock.lock(); defer { lock.unlock() }
        if engine.wire.closed { return }
        engine.wire.closed = true
        cshim_store_u32(Self.word32(base, Self.offClosed), 1)
        // Peers' mappings stay until deinit: a collective of another thread may still be reading them
        // without the lock (`peerBaseUnlocked`); ringing wakes it, and it then fails on `closed`.
        for p in 0..<nranks { if let seg = peerBase[p] { Self.ring(seg) } }
        for p in 0..<nranks where engine.wire.peerFD[p] >= 0 { Sys.close(engine.wire.peerFD[p]); engine.wire.peerFD[p] = -1 }
        unlink()
        engine.withWire { (_, core) in
            let e = CCLError(.invalidUsage, "the shared-memory transport was closed", rank: rank)
            for p in 0..<nranks { core.failPending(p, e) }
            core.discardUnexpected()
        }
    }

    /// Under the lock: the error that ends a wait on `peer` in the window (closed, broken, the peer
    /// gone), after a liveness check.
    package func windowFailure(_ peer: Int) -> CCLError? {
        lock.lock(); defer { lock.unlock() }
        return engine.withWire { (wire, core) in
            if wire.closed { return CCLError(.invalidUsage, "the shared-memory transport is closed", rank: rank) }
            _ = wire.checkPeers(force: false, &core)
            return core.brokenBy ?? core.peers[peer].failure
        }
    }
}
