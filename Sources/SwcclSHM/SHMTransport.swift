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
    public static let backend = TransportBackend(
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

/// The shared-memory backend of the transport protocol, for ranks on one host.
///
/// Each rank creates one POSIX shared-memory segment with a random name (published in its address;
/// unguessable, so concurrent jobs and communicators never collide, and strangers can neither open it
/// nor squat on its name), holding one inbound FIFO per peer: the peer writes, the owner reads. Every peer maps every
/// other's segment in `connect`; each owner unlinks its segment as soon as all peers have mapped it, so
/// a crash afterwards leaves nothing in /dev/shm.
///
/// A FIFO is `slots` fixed-size slots; a slot's first word is its sequence number, written last (store
/// release) and polled by the reader (load acquire), so a small message costs one cache-line round
/// trip. The reader's consumed count (`tail`, its own cache line) is the writer's flow control.
/// Messages up to a slot's payload go eagerly in one slot; larger ones as a request to send (RTS), a
/// clear to send (CTS) from the receiver once a matching receive is posted, then DATA slots copied
/// straight from the sender's buffer and into the receiver's — so the FIFO never carries bulk data that
/// nobody is waiting for, and it always drains. Progress is driven by the calling thread (test, wait).
///
/// Waiting: poll briefly with a pause instruction (yielding between polls), then sleep on a futex:
/// the segment's doorbell word, which any writer bumps (and wakes, if the owner sleeps) after
/// writing to one of its FIFOs or freeing slots of one of the owner's FIFOs. While blocked, a rank
/// checks every 100 ms whether its peers are alive and not closed.
///
/// Liveness and cross-memory attach across PID namespaces: a pid means something only inside one PID
/// namespace (two containers sharing /dev/shm, `unshare -p`), so each segment records its owner's PID
/// namespace, and a peer in another one is never read with process_vm_readv nor probed with kill(2).
/// Every owner holds an open-file-description read lock on its segment for as long as it lives (the
/// kernel drops it when the process dies, whatever its namespace, and a forked child closes its copy);
/// peers probe it without taking it. A peer is dead when its lock is gone, or, in the same PID
/// namespace, when its pid is.
public final class SHMTransport: Transport, @unchecked Sendable {
    package static let magic: UInt64 = 0x5357_4343_5348_4d32  // "SWCCSHM2"
    package static let slotBytes = 32 << 10
    package static let slotHeader = 64
    package static var payloadBytes: Int { slotBytes - slotHeader }
    package static let segmentHeader = 4096
    // Offsets in the segment header (each word on its own cache line where others write it).
    package static let offMagic = 0, offRanks = 8, offOwner = 16, offPid = 24, offPidNamespace = 32
    package static let offDoorbell = 64, offSleepers = 128, offMapped = 192, offClosed = 256, offWindow = 320, offFIFO = 328
    /// The owner's latest `Notice`: a version word (odd while it is rewritten), the length, the bytes.
    package static let offNotice = 2048

    // Slot kinds.
    package static let eager: UInt32 = 1, rts: UInt32 = 2, cts: UInt32 = 3, data: UInt32 = 4

    public let capabilities: TransportCapabilities
    public let localAddress: EndpointAddress
    package let rank: Int
    package let nranks: Int
    package let slotsPerFIFO: Int
    package let channelBytes: Int
    package let segmentBytes: Int
    /// Offset of the symmetric window (`SymmetricWindow`), after the FIFOs; its size (0: none), and
    /// the signature of its layout, written into the header and compared with every peer's.
    package let windowOffset: Int
    public let windowBytes: Int
    private let windowRequest: WindowRequest?
    /// The NUMA node the segment's pages were bound to (nil: not placed).
    public let numaNode: Int?
    package let name: String
    /// The segment's name in /dev/shm (without the leading slash).
    public var segmentName: String { String(name.dropFirst()) }
    package let base: UnsafeMutableRawPointer
    /// The segment's descriptor, holding its liveness lock, and its slot in the fork table.
    private let segmentFD: Int32
    private let lockSlot: Int32
    /// The process that made this transport; a forked child's copy neither closes nor unlinks anything.
    private let owner = ProcessOwner()
    private var unlinked = false
    private let aborted = Atomic<Bool>(false)
    private let abortReason = Mutex<String>("")
    private let lock = Lock()

    // Progress state; touched only by the thread holding `lock`.
    /// Peers' mappings: a fixed array (never reallocated), so that the collectives' unlocked reads
    /// (`peerBaseUnlocked`) are plain loads without exclusivity checks.
    private let peerBase: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var peerPid: [Int32]
    /// Whether the peer's pid means the same process here (same, known PID namespace).
    private var peerPidUsable: [Bool]
    /// Descriptors of the peers' segments, kept to probe their owners' liveness locks.
    private var peerFD: [Int32]
    private var peerError: [CCLError?]
    private var produced: [UInt64]   // slots written into my FIFO in the peer's segment
    private var consumed: [UInt64]   // slots read from the peer's FIFO in my segment
    /// CTS to send, per peer (code: SHMTransport.clear…); `pulled` ones complete their receive (`req`)
    /// only once written, so a receiver never finishes (and closes) before its sender can learn it.
    private var control: [[(msgID: UInt64, code: UInt64, req: Int32)]]
    private var cmaWorks: [Bool]    // cross-memory attach still permitted towards the peer
    private var pulling: [[Int32]]  // per peer: receives being copied from the sender's memory (CMA)
    private var pulledBytes = 0
    /// Bytes received by cross-memory attach so far (diagnostics).
    public var bytesPulled: Int { lock.withLock { pulledBytes } }
    /// Bytes one progress pass pulls per receive with cross-memory attach (bounded work per pass).
    package static let pullChunk = 512 << 10
    private var outbox: [[Work]]     // eager/RTS/DATA to send, per peer, in posting order
    private var posted: [[Int32]]    // receives not yet matched, per peer, in posting order
    private var unexpected: [[Unexpected]]
    private var unexpectedBytes: [Int]  // per peer, counted against `UnexpectedBudget`
    private var receiving: [[UInt64: Int32]]  // per peer: the sender's message id → receive
    private var awaitingCTS: [[UInt64: Int32]]  // per peer: my message id → send
    private var requests: [ShmRequest]
    private var order: [[(index: Int32, generation: UInt32)]]  // per peer × direction (2p: receives, 2p+1: sends)
    private var blockedTags: [UInt64] = []
    private var free: [Int32]
    private var nextMessageID: UInt64 = 1
    private var closed = false
    private var lastLivenessCheck: UInt64 = 0
    /// A peer's abort notice: breaks this endpoint (every request fails with it, naming its culprit).
    private var brokenBy: CCLError?
    /// Per peer: the version of its notice area last read, and that notice.
    private var noticeVersion: [UInt64]
    private var notices: [Notice?]

    package enum Work { case eager(Int32), rts(Int32), data(Int32) }
    package struct Unexpected { package var tag: UInt64; package var bytes: [UInt8]?; package var messageID: UInt64; package var total: Int; package var address: UInt64 }
    /// CTS codes (in the slot's offset field): send the data; the receive expected another size; the
    /// receiver already copied the data from the sender's buffer (cross-memory attach).
    package static let clearToSend: UInt64 = 0, rejected: UInt64 = 1, pulled: UInt64 = 2

    package struct ShmRequest {
        package var generation: UInt32 = 0
        package var inUse = false
        package var isSend = false
        /// All bytes moved; `done` follows once every earlier request of the same peer, direction and
        /// tag is done (messages of one tag complete in posting order).
        package var ready = false
        package var done = false
        package var error: CCLError?
        package var peer = -1
        package var tag: UInt64 = 0
        package var buffer: UnsafeMutableRawPointer?
        package var length = 0
        package var moved = 0
        package var messageID: UInt64 = 0
        /// The sender's buffer address (cross-memory attach), 0 if unknown.
        package var remote: UInt64 = 0
    }

    /// `crossMemoryAttach`: pull large messages with process_vm_readv (default: `SWCCL_SHM_CMA`).
    /// `window`: the symmetric window to provide (its size and layout signature; nil: none).
    public init(rank: Int, nranks: Int, secret: [UInt8], maxOutstanding: Int = 4096, crossMemoryAttach: Bool? = nil,
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
        peerPid = Array(repeating: 0, count: nranks)
        peerPidUsable = Array(repeating: false, count: nranks)
        peerFD = Array(repeating: -1, count: nranks)
        peerError = Array(repeating: nil, count: nranks)
        noticeVersion = Array(repeating: 0, count: nranks)
        notices = Array(repeating: nil, count: nranks)
        produced = Array(repeating: 0, count: nranks)
        consumed = Array(repeating: 0, count: nranks)
        control = Array(repeating: [], count: nranks)
        cmaWorks = Array(repeating: crossMemoryAttach ?? Knobs.shmCMA.value, count: nranks)
        pulling = Array(repeating: [], count: nranks)
        if crossMemoryAttach ?? Knobs.shmCMA.value { Sys.allowSameUserMemoryReads() }
        outbox = Array(repeating: [], count: nranks)
        posted = Array(repeating: [], count: nranks)
        unexpected = Array(repeating: [], count: nranks)
        unexpectedBytes = Array(repeating: 0, count: nranks)
        receiving = Array(repeating: [:], count: nranks)
        awaitingCTS = Array(repeating: [:], count: nranks)
        requests = Array(repeating: ShmRequest(), count: maxOutstanding)
        order = Array(repeating: [], count: 2 * nranks)
        free = (0..<Int32(maxOutstanding)).reversed()
        numaNode = placed ? node : nil
        Log.info(.net, "rank \(rank): shared memory segment \(name), \(segmentBytes >> 10) KiB, \(slotsPerFIFO) slots of \(SHMTransport.slotBytes >> 10) KiB per peer, "
                 + "a symmetric window of \(windowBytes >> 10) KiB; "
                 + (placed ? "pages bound to NUMA node \(node!)" : "no NUMA placement (\(NUMA.available ? "node unknown" : NUMA.unavailableReason))"))
    }

    deinit {
        if owner.isInherited { return }  // the parent's: its descriptors may be another's here; leave it all
        if !closed { close() }
        Sys.unmap(base, bytes: segmentBytes)  // kept until here: abort() may still ring it
        // The peers' mappings too: `close` leaves them to readers that do not take the lock.
        for p in 0..<nranks { if let seg = peerBase[p] { Sys.unmap(seg, bytes: segmentBytes) } }
        Sys.releaseLivenessLock(segmentFD, slot: lockSlot)
        peerBase.deallocate()
    }

    // MARK: words in shared memory

    @inline(__always) private func word32(_ seg: UnsafeMutableRawPointer, _ off: Int) -> UnsafeMutablePointer<UInt32> {
        (seg + off).assumingMemoryBound(to: UInt32.self)
    }
    @inline(__always) private func word64(_ p: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UInt64> { p.assumingMemoryBound(to: UInt64.self) }
    /// The FIFO in `seg` that `writer` fills.
    @inline(__always) private func fifo(_ seg: UnsafeMutableRawPointer, writer: Int) -> UnsafeMutableRawPointer {
        seg + SHMTransport.segmentHeader + writer * channelBytes
    }
    @inline(__always) private func slot(_ fifo: UnsafeMutableRawPointer, _ index: UInt64) -> UnsafeMutableRawPointer {
        fifo + 128 + Int(index % UInt64(slotsPerFIFO)) * SHMTransport.slotBytes
    }

    /// A peer's mapping, read without the lock: set in `connect` (before any collective can run) and
    /// unmapped only in `deinit`, so a reader racing `close` still reads mapped memory.
    package func peerBaseUnlocked(_ r: Int) -> UnsafeMutableRawPointer { peerBase[r]! }

    package func wake(_ seg: UnsafeMutableRawPointer) { ring(seg) }

    /// One bounded sleep on this rank's doorbell (≤ 1 ms, woken by any peer's write); returns the
    /// abort error if the transport was aborted.
    package func sleepOnDoorbell(until deadline: Deadline, lastCheck: inout UInt64, ready: () -> Bool) throws(CCLError) -> CCLError? {
        if aborted.load(ordering: .acquiring) { return abortError() }
        let bell = word32(base, SHMTransport.offDoorbell)
        let sleepers = word32(base, SHMTransport.offSleepers)
        let seen = cshim_load_u32(bell)
        _ = cshim_fetch_add_u32(sleepers, 1)
        let now = Sys.monotonicNanos()
        // A publisher that looked at the sleeper count before it rose did not ring: check again.
        if !ready() && deadline.nanos > now { Sys.futexWait(bell, expected: seen, nanos: min(deadline.nanos - now, 1_000_000)) }
        _ = cshim_fetch_add_u32(sleepers, UInt32.max)
        lastCheck = Sys.monotonicNanos()
        return nil
    }

    /// Bumps a segment's doorbell and wakes its owner if it sleeps.
    private func ring(_ seg: UnsafeMutableRawPointer) {
        _ = cshim_fetch_add_u32(word32(seg, SHMTransport.offDoorbell), 1)
        if cshim_load_u32(word32(seg, SHMTransport.offSleepers)) != 0 { Sys.futexWake(word32(seg, SHMTransport.offDoorbell)) }
    }

    // MARK: set-up

    /// The segment name a peer published, if it is one this backend makes: `/swccl-<32 hex
    /// digits>-r<rank>` (nothing else is ever opened, so no published name reaches outside /dev/shm).
    package static func decode(_ address: EndpointAddress) -> String? {
        guard let n = address.bytes.first, address.bytes.count == Int(n) + 1 else { return nil }
        let name = address.bytes[1...]
        let prefix = "/swccl-".utf8
        guard name.count <= 64, name.starts(with: prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        let hex = rest.prefix(32), tail = rest.dropFirst(32)
        guard hex.count == 32, hex.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
              tail.count > 2, tail.starts(with: "-r".utf8), tail.dropFirst(2).allSatisfy({ (48...57).contains($0) }) else { return nil }
        return String(decoding: name, as: UTF8.self)
    }

    public func connect(_ peers: [PeerInfo], deadline: Deadline) throws(CCLError) {
        lock.lock(); defer { lock.unlock() }
        for p in peers {
            guard p.rank >= 0, p.rank < nranks, p.rank != rank, let peerName = SHMTransport.decode(p.address) else {
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
            peerFD[p.rank] = segFD  // closed by close() from here on, whatever happens next
            guard cshim_load_acquire_u64(word64(seg + SHMTransport.offMagic)) == SHMTransport.magic,
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
            peerPid[p.rank] = Int32(truncatingIfNeeded: seg.load(fromByteOffset: SHMTransport.offPid, as: UInt64.self))
            let peerNamespace = seg.load(fromByteOffset: SHMTransport.offPidNamespace, as: UInt64.self)
            peerPidUsable[p.rank] = Sys.pidNamespace != 0 && peerNamespace == Sys.pidNamespace
            if !peerPidUsable[p.rank] {
                // Its pid names another process here (or nothing): never read memory or probe by pid.
                if cmaWorks[p.rank] {
                    Log.info(.net, "rank \(rank): rank \(p.rank) (pid \(peerPid[p.rank]) in its own namespace) is in another PID namespace"
                             + (Sys.pidNamespace == 0 ? " or /proc is not mounted here" : "") + ": no cross-memory attach to it, liveness by its segment lock")
                }
                cmaWorks[p.rank] = false
            }
            _ = cshim_fetch_add_u32(word32(seg, SHMTransport.offMapped), 1)
            ring(seg)
        }
        // Unlink once every peer has mapped this segment: from then on nothing is left in /dev/shm.
        while cshim_load_u32(word32(base, SHMTransport.offMapped)) < UInt32(peers.count) {
            if deadline.hasPassed {
                unlink()
                throw CCLError(.timeout, "only \(cshim_load_u32(word32(base, SHMTransport.offMapped))) of \(peers.count) peers mapped this rank's segment in time")
            }
            if aborted.load(ordering: .acquiring) { unlink(); throw abortError() }
            Sys.sleep(nanos: 200_000)
        }
        unlink()
    }

    private func unlink() {
        if !unlinked { Sys.unlinkSharedMemory(name: name); unlinked = true }
    }

    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0)  // data is copied through the FIFOs
    }

    public func deregister(_ region: MemoryRegion) {}

    // MARK: posting

    /// `receiving`: a peer that closed or died may still have left messages for this rank, so its
    /// failure is checked after the unexpected messages.
    private func checkUsable(_ peer: Int, receiving: Bool = false) throws(CCLError) {
        if aborted.load(ordering: .acquiring) { throw abortError() }
        if closed { throw CCLError(.invalidUsage, "the shared-memory transport is closed", rank: rank) }
        guard peer >= 0, peer < nranks, peer != rank, peerBase[peer] != nil else {
            throw CCLError(.invalidArgument, "rank \(peer) is not a connected peer of rank \(rank)", rank: rank, peer: peer)
        }
        if let b = brokenBy { throw b }
        if !receiving, let e = peerError[peer] { throw e }
    }

    private func allocate(send: Bool, peer: Int, tag: UInt64, buffer: UnsafeMutableRawPointer?, length: Int) throws(CCLError) -> Int32 {
        guard let i = free.popLast() else {
            throw CCLError(.invalidUsage, "more than \(requests.count) outstanding requests", rank: rank, peer: peer)
        }
        let gen = requests[Int(i)].generation &+ 1
        requests[Int(i)] = ShmRequest(generation: gen, inUse: true, isSend: send, peer: peer, tag: tag, buffer: buffer, length: length)
        order[2 * peer + (send ? 1 : 0)].append((i, gen))
        return i
    }

    public func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        try checkUsable(peer)
        let n = data.baseAddress == nil ? 0 : data.count
        let i = try allocate(send: true, peer: peer, tag: tag, buffer: UnsafeMutableRawPointer(mutating: data.baseAddress), length: n)
        if n <= SHMTransport.payloadBytes {
            outbox[peer].append(.eager(i))
        } else {
            let id = nextMessageID
            nextMessageID &+= 1
            requests[Int(i)].messageID = id
            awaitingCTS[peer][id] = i
            outbox[peer].append(.rts(i))
        }
        flush(peer)
        return Request(slot: UInt32(i), generation: requests[Int(i)].generation)
    }

    public func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        lock.lock(); defer { lock.unlock() }
        try checkUsable(peer, receiving: true)
        drain(peer)
        let k = unexpected[peer].firstIndex(where: { $0.tag == tag })
        if let e = peerError[peer], k == nil || unexpected[peer][k!].bytes == nil { throw e }  // nothing more will come
        let i = try allocate(send: false, peer: peer, tag: tag, buffer: buffer.baseAddress, length: buffer.baseAddress == nil ? 0 : buffer.count)
        if let k {
            let u = unexpected[peer].remove(at: k)
            unexpectedBytes[peer] -= UnexpectedBudget.cost(payload: u.bytes?.count ?? 0)
            match(i, peer: peer, bytes: u.bytes, messageID: u.messageID, total: u.total, payload: nil, address: u.address)
        } else {
            posted[peer].append(i)
        }
        flush(peer)
        return Request(slot: UInt32(i), generation: requests[Int(i)].generation)
    }

    /// A receive meets its message: an eager one (bytes, or payload still in the slot) completes now;
    /// a large one is granted with a CTS.
    private func match(_ i: Int32, peer: Int, bytes: [UInt8]?, messageID: UInt64, total: Int, payload: UnsafeRawPointer?, address: UInt64) {
        let want = requests[Int(i)].length
        let isEager = bytes != nil || payload != nil
        if total != want {
            requests[Int(i)].error = CCLError(.invalidUsage, "rank \(peer) sent \(total) bytes with tag \(requests[Int(i)].tag) but the receive expected another size, \(want) bytes (size mismatch)",
                                              rank: rank, peer: peer)
            requests[Int(i)].done = true
            if !isEager { control[peer].append((messageID, SHMTransport.rejected, -1)) }
            return
        }
        if !isEager && cmaWorks[peer] && address != 0 {
            // Cross-memory attach: copied straight from the sender's buffer, a chunk per progress
            // pass (`pull`); the sender learns from a CTS marked "pulled" that its send is complete.
            requests[Int(i)].messageID = messageID
            requests[Int(i)].remote = address
            pulling[peer].append(i)
            return
        }
        if isEager {
            if total > 0, let dst = requests[Int(i)].buffer {
                if let payload { dst.copyMemory(from: payload, byteCount: total) }
                else { bytes!.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: total) } }
            }
            requests[Int(i)].moved = total
            finish(i)
        } else {
            requests[Int(i)].messageID = messageID
            receiving[peer][messageID] = i
            control[peer].append((messageID, SHMTransport.clearToSend, -1))
        }
    }

    /// All bytes of request `i` moved: it is done as soon as no earlier request of its peer,
    /// direction and tag is still pending.
    private func finish(_ i: Int32) {
        requests[Int(i)].ready = true
        let r = requests[Int(i)]
        let k = 2 * r.peer + (r.isSend ? 1 : 0)
        blockedTags.removeAll(keepingCapacity: true)
        var keep = 0
        for j in 0..<order[k].count {
            let e = order[k][j]
            let q = requests[Int(e.index)]
            if !q.inUse || q.generation != e.generation || q.done { continue }
            if q.ready && !blockedTags.contains(q.tag) { requests[Int(e.index)].done = true; continue }
            blockedTags.append(q.tag)
            order[k][keep] = e
            keep += 1
        }
        order[k].removeLast(order[k].count - keep)
    }

    // MARK: progress

    /// Reads every complete slot of `peer`'s FIFO in this rank's segment.
    @discardableResult
    private func drain(_ peer: Int) -> Bool {
        guard let pseg = peerBase[peer] else { return false }
        let f = fifo(base, writer: peer)
        var any = false
        draining: while true {
            let s = slot(f, consumed[peer])
            guard cshim_load_acquire_u64(word64(s)) == consumed[peer] &+ 1 else { break }
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
                if let k = posted[peer].firstIndex(where: { requests[Int($0)].tag == tag }) {
                    let i = posted[peer].remove(at: k)
                    match(i, peer: peer, bytes: nil, messageID: id, total: total, payload: kind == SHMTransport.eager ? payload : nil,
                          address: kind == SHMTransport.rts ? UInt64(offset) : 0)
                } else if unexpectedBytes[peer] > UnexpectedBudget.bytesPerPeer && peerError[peer] == nil {
                    // Left in the FIFO (the peer's sends wait) until a receive is posted for it. (A peer
                    // that is gone sends no more: what its FIFO holds, a bounded amount, is kept.)
                    break draining
                } else {
                    let copy = kind == SHMTransport.eager ? Array(UnsafeRawBufferPointer(start: payload, count: len)) : nil
                    unexpected[peer].append(Unexpected(tag: tag, bytes: copy, messageID: id, total: total, address: kind == SHMTransport.rts ? UInt64(offset) : 0))
                    unexpectedBytes[peer] += UnexpectedBudget.cost(payload: copy?.count ?? 0)
                }
            case SHMTransport.cts:
                if let i = awaitingCTS[peer].removeValue(forKey: id) {
                    if UInt64(offset) == SHMTransport.pulled {
                        requests[Int(i)].moved = requests[Int(i)].length
                        finish(i)
                    } else if offset != 0 {
                        requests[Int(i)].error = CCLError(.invalidUsage, "rank \(peer) rejected a message of \(requests[Int(i)].length) bytes with tag \(requests[Int(i)].tag): its receive expected another size (size mismatch)",
                                                          rank: rank, peer: peer)
                        requests[Int(i)].done = true
                    } else {
                        outbox[peer].append(.data(i))
                    }
                }
            case SHMTransport.data:
                if let i = receiving[peer][id], let dst = requests[Int(i)].buffer {
                    guard offset <= requests[Int(i)].length - len else {
                        peerError[peer] = CCLError(.remoteError, "garbage in the FIFO from rank \(peer) (data of \(len) bytes at \(offset) for a message of \(requests[Int(i)].length))", rank: rank, peer: peer)
                        break
                    }
                    (dst + offset).copyMemory(from: payload, byteCount: len)
                    requests[Int(i)].moved += len
                    if requests[Int(i)].moved >= requests[Int(i)].length {
                        receiving[peer][id] = nil
                        finish(i)
                    }
                }
            default:
                peerError[peer] = CCLError(.remoteError, "garbage in the FIFO from rank \(peer) (\(problem ?? "slot kind \(kind)"))", rank: rank, peer: peer)
            }
            consumed[peer] &+= 1
            cshim_store_release_u64(word64(f), consumed[peer])  // tail: frees the slot for the writer
            any = true
        }
        if any { ring(pseg) }  // the writer may wait for free slots
        return any
    }

    /// What is wrong with a FIFO slot's header as the peer wrote it, if anything (pure: the fuzz harness
    /// calls it): an eager message fits its slot and says so twice, data is a piece of a slot's size
    /// at a position in its message (checked against the receive in `drain`), the kind is known.
    package static func slotProblem(kind: UInt32, len: Int, offset: Int, total: Int) -> String? {
        switch kind {
        case eager: return len == total && len <= payloadBytes ? nil : "eager message of \(len) bytes, total \(total)"
        case rts: return total > 0 ? nil : "rendezvous request of \(total) bytes"
        case cts: return nil
        case data: return len > 0 && len <= payloadBytes && offset >= 0 && total >= 0 ? nil : "data of \(len) bytes at \(offset), total \(total)"
        default: return "slot kind \(kind)"
        }
    }

    /// Writes what fits of `peer`'s control messages and outbox into its FIFO.
    @discardableResult
    private func flush(_ peer: Int) -> Bool {
        guard let pseg = peerBase[peer], peerError[peer] == nil else { return false }
        let f = fifo(pseg, writer: rank)
        var wrote = false
        func room() -> Bool { produced[peer] &- cshim_load_acquire_u64(word64(f)) < UInt64(slotsPerFIFO) }
        func post(_ kind: UInt32, len: Int, tag: UInt64, id: UInt64, offset: Int, total: Int, from src: UnsafeRawPointer?) {
            let s = slot(f, produced[peer])
            s.storeBytes(of: kind, toByteOffset: 8, as: UInt32.self)
            s.storeBytes(of: UInt32(len), toByteOffset: 12, as: UInt32.self)
            s.storeBytes(of: tag, toByteOffset: 16, as: UInt64.self)
            s.storeBytes(of: id, toByteOffset: 24, as: UInt64.self)
            s.storeBytes(of: UInt64(offset), toByteOffset: 32, as: UInt64.self)
            s.storeBytes(of: UInt64(total), toByteOffset: 40, as: UInt64.self)
            if len > 0, let src { (s + SHMTransport.slotHeader).copyMemory(from: src, byteCount: len) }
            produced[peer] &+= 1
            cshim_store_release_u64(word64(s), produced[peer])
            wrote = true
        }
        while !control[peer].isEmpty && room() {
            let c = control[peer].removeFirst()
            post(SHMTransport.cts, len: 0, tag: 0, id: c.msgID, offset: Int(c.code), total: 0, from: nil)
            if c.req >= 0 && requests[Int(c.req)].inUse && !requests[Int(c.req)].ready { finish(c.req) }
        }
        while let w = outbox[peer].first, room() {
            switch w {
            case .eager(let i):
                let r = requests[Int(i)]
                post(SHMTransport.eager, len: r.length, tag: r.tag, id: 0, offset: 0, total: r.length, from: r.buffer)
                requests[Int(i)].moved = r.length
                outbox[peer].removeFirst()
                finish(i)
            case .rts(let i):
                let r = requests[Int(i)]
                // The buffer's address rides in the offset field, for a receiver that pulls it (CMA).
                post(SHMTransport.rts, len: 0, tag: r.tag, id: r.messageID, offset: Int(bitPattern: r.buffer.map { UInt(bitPattern: $0) } ?? 0), total: r.length, from: nil)
                outbox[peer].removeFirst()
            case .data(let i):
                let r = requests[Int(i)]
                let n = min(SHMTransport.payloadBytes, r.length - r.moved)
                post(SHMTransport.data, len: n, tag: r.tag, id: r.messageID, offset: r.moved, total: r.length, from: r.buffer.map { UnsafeRawPointer($0 + r.moved) })
                requests[Int(i)].moved += n
                if requests[Int(i)].moved >= r.length {
                    outbox[peer].removeFirst()
                    finish(i)
                }
            }
        }
        if wrote { ring(pseg) }
        return wrote
    }

    /// Copies the next chunk of the oldest receive pulled from `peer`'s memory; on failure (no
    /// permission, the peer gone) falls back to a CTS, the data then coming through the FIFO.
    private func pull(_ peer: Int) -> Bool {
        guard let i = pulling[peer].first else { return false }
        let r = requests[Int(i)]
        let n = min(SHMTransport.pullChunk, r.length - r.moved)
        do {
            if n > 0, let dst = r.buffer {
                try Sys.readProcessMemory(pid: peerPid[peer], remote: r.remote &+ UInt64(r.moved), into: dst + r.moved, bytes: n)
            }
            requests[Int(i)].moved += n
            pulledBytes += n
            if requests[Int(i)].moved >= r.length {
                pulling[peer].removeFirst()
                control[peer].append((r.messageID, SHMTransport.pulled, i))  // finished when flushed
            }
        } catch {
            cmaWorks[peer] = false
            Log.info(.net, "rank \(rank): cross-memory attach to rank \(peer) (pid \(peerPid[peer])) failed (\(error)); copying through the FIFO")
            for j in pulling[peer] {
                requests[Int(j)].moved = 0
                receiving[peer][requests[Int(j)].messageID] = j
                control[peer].append((requests[Int(j)].messageID, SHMTransport.clearToSend, -1))
            }
            pulling[peer].removeAll()
        }
        return true
    }

    /// One pass over every peer; true if anything moved.
    private func progress() -> Bool {
        if closed { return false }  // the peers' mappings stay until deinit, but nothing moves any more
        var any = false
        for p in 0..<nranks where peerBase[p] != nil {
            if drain(p) { any = true }
            if pull(p) { any = true }
            if flush(p) { any = true }
        }
        return any
    }

    /// Fails the requests that wait on a peer that died or closed (after its FIFO was drained); true if
    /// it failed any.
    private func checkPeers(force: Bool) -> Bool {
        let now = Sys.monotonicNanos()
        guard !closed, force || now &- lastLivenessCheck >= 100_000_000 else { return false }
        lastLivenessCheck = now
        var failed = checkNotices()
        for p in 0..<nranks where peerBase[p] != nil && peerError[p] == nil {
            let closedFlag = cshim_load_u32(word32(peerBase[p]!, SHMTransport.offClosed)) != 0
            // The lock is the namespace-proof answer; the pid adds a dead process whose lock a child
            // that skipped our fork handler (raw clone) still holds. Unknown: the timeout decides.
            let lockGone = Sys.livenessLockHeld(peerFD[p]) == false
            let alive = !lockGone && (!peerPidUsable[p] || Sys.processAlive(peerPid[p]))
            guard closedFlag || !alive else { continue }
            let why = closedFlag ? "rank \(p) closed its end of shared memory"
                : "rank \(p) (pid \(peerPid[p])\(peerPidUsable[p] ? "" : " in another PID namespace")) died"
            // Its notice, written before it closed or exited, says whom to blame.
            peerError[p] = noticeError(p) ?? CCLError(.remoteError, "connection lost: \(why)", rank: rank, peer: p)
            // What it sent before it went is still delivered (all of it: it sends no more, so the
            // unexpected budget no longer holds its FIFO back).
            drain(p)
            for i in requests.indices where requests[i].inUse && !requests[i].done && requests[i].peer == p {
                requests[i].error = peerError[p]
                requests[i].done = true
                failed = true
            }
            posted[p].removeAll()
            outbox[p].removeAll()
            pulling[p].removeAll()
            // A clean close is the peer's ordinary teardown; a death is news.
            if closedFlag { Log.info(.net, "rank \(rank): \(why)") } else { Log.warn(.net, "rank \(rank): \(why)") }
        }
        return failed
    }

    private func index(_ r: Request) throws(CCLError) -> Int32 {
        let i = Int(r.slot)
        guard i < requests.count, requests[i].inUse, requests[i].generation == r.generation else {
            throw CCLError(.invalidUsage, "stale or unknown request handle", rank: rank)
        }
        return Int32(i)
    }

    public func test(_ r: Request) throws(CCLError) -> Bool {
        lock.lock(); defer { lock.unlock() }
        let i = try index(r)
        if aborted.load(ordering: .acquiring) { release(i); throw abortError() }
        if !requests[Int(i)].done { _ = progress() }
        guard requests[Int(i)].done else { return false }
        let e = requests[Int(i)].error
        release(i)
        if let e { throw e }
        return true
    }

    private func release(_ i: Int32) {
        let peer = requests[Int(i)].peer
        if peer >= 0 && !requests[Int(i)].done {
            // Given up before completion (abort): forget it everywhere.
            posted[peer].removeAll { $0 == i }
            pulling[peer].removeAll { $0 == i }
            control[peer] = control[peer].map { $0.req == i ? ($0.msgID, $0.code, -1) : $0 }
            outbox[peer].removeAll { w in if case .eager(let j) = w { return j == i }; if case .rts(let j) = w { return j == i }; if case .data(let j) = w { return j == i }; return false }
            awaitingCTS[peer] = awaitingCTS[peer].filter { $0.value != i }
            receiving[peer] = receiving[peer].filter { $0.value != i }
        }
        requests[Int(i)].inUse = false
        requests[Int(i)].buffer = nil
        free.append(i)
    }

    public func wait(_ r: Request, deadline: Deadline) throws(CCLError) {
        let peer: Int = lock.withLock { Int(r.slot) < requests.count ? requests[Int(r.slot)].peer : -1 }
        while true {
            if try test(r) { return }
            if try !waitForProgress(deadline: deadline) && deadline.hasPassed {
                throw CCLError(.timeout, "timed out waiting for rank \(peer) in shared memory; the peer is stopped, overloaded, or not in the same operation",
                               rank: rank, peer: peer)
            }
        }
    }

    public func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        let bell = word32(base, SHMTransport.offDoorbell)
        let spinUntil = Sys.monotonicNanos() &+ Knobs.spinNanos
        while true {
            if aborted.load(ordering: .acquiring) { throw abortError() }
            if let e = lock.withLock({ closed ? CCLError(.invalidUsage, "the shared-memory transport is closed", rank: rank) : brokenBy }) { throw e }
            let seen = cshim_load_u32(bell)
            let moved: Bool = lock.withLock {
                let m = progress()
                return checkPeers(force: false) || m
            }
            if moved { return true }
            let now = Sys.monotonicNanos()
            if now >= deadline.nanos { return false }
            if now < spinUntil {
                for _ in 0..<64 where cshim_load_u32(bell) == seen { cshim_cpu_relax() }
                if cshim_load_u32(bell) == seen { Spin.yield() }
                continue
            }
            // Sleep on the doorbell until someone writes to or frees one of our FIFOs (or 100 ms pass,
            // for the liveness check).
            let sleepers = word32(base, SHMTransport.offSleepers)
            _ = cshim_fetch_add_u32(sleepers, 1)
            if cshim_load_u32(bell) == seen {
                Sys.futexWait(bell, expected: seen, nanos: min(deadline.nanos &- now, 100_000_000))
            }
            _ = cshim_fetch_add_u32(sleepers, UInt32.max)  // −1
            if cshim_load_u32(bell) != seen { return true }
        }
    }

    public func unexpectedTags(from peer: Int) -> [UInt64] {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < nranks else { return [] }
        return unexpected[peer].map(\.tag)
    }

    // MARK: notices

    private func noticeWords(_ seg: UnsafeMutableRawPointer) -> (version: UnsafeMutablePointer<UInt64>, length: UnsafeMutablePointer<UInt32>, bytes: UnsafeMutableRawPointer) {
        Self.noticeWords(area: seg + SHMTransport.offNotice)
    }

    /// The words of a notice area (at `offNotice` of a segment, `noticeAreaBytes` long).
    private static func noticeWords(area: UnsafeMutableRawPointer) -> (version: UnsafeMutablePointer<UInt64>, length: UnsafeMutablePointer<UInt32>, bytes: UnsafeMutableRawPointer) {
        (area.assumingMemoryBound(to: UInt64.self), (area + 8).assumingMemoryBound(to: UInt32.self), area + 16)
    }

    package static let noticeAreaBytes = 16 + Notice.maxBytes

    /// Reads a peer's notice area: its version and notice (nil if none, or torn by a rewrite).
    private func readNotice(_ p: Int) -> (UInt64, Notice?) {
        guard let seg = peerBase[p] else { return (0, nil) }
        return Self.readNoticeArea(seg + SHMTransport.offNotice)
    }

    /// Reads the notice area at `area` as a peer wrote it, whatever it holds (pure but for the atomic
    /// loads: the fuzz harness hands it arbitrary bytes): its version and notice, nil if none, torn
    /// by a rewrite, or unreadable. Never reads beyond `noticeAreaBytes`.
    package static func readNoticeArea(_ area: UnsafeMutableRawPointer) -> (UInt64, Notice?) {
        let w = noticeWords(area: area)
        let v1 = cshim_load_acquire_u64(w.version)
        guard v1 != 0, v1 & 1 == 0 else { return (v1, nil) }
        let n = Int(min(cshim_load_u32(w.length), UInt32(Notice.maxBytes)))
        let bytes = Array(UnsafeRawBufferPointer(start: w.bytes, count: n))
        guard cshim_load_acquire_u64(w.version) == v1 else { return (v1, nil) }
        return (v1, Notice.decode(bytes))
    }

    /// A peer's abort notice as the error to report, if it left one.
    private func noticeError(_ p: Int) -> CCLError? {
        let (_, n) = readNotice(p)
        if let n { notices[p] = n }
        guard let n, n.kind == .abort else { return nil }
        return n.error(at: rank)
    }

    /// Reads the peers' notices that changed; a peer's abort notice breaks this endpoint: every
    /// request fails with its error (naming its culprit). True if it failed any.
    private func checkNotices() -> Bool {
        var failed = false
        for p in 0..<nranks where peerBase[p] != nil {
            let v = cshim_load_acquire_u64(noticeWords(peerBase[p]!).version)
            guard v != noticeVersion[p] else { continue }
            let (v2, n) = readNotice(p)
            guard let n else { continue }
            noticeVersion[p] = v2
            notices[p] = n
            guard n.kind == .abort, brokenBy == nil else { continue }
            let e = n.error(at: rank)
            brokenBy = e
            Log.info(.net, "rank \(rank): rank \(p) aborted: \(e.cause)")
            for i in requests.indices where requests[i].inUse && !requests[i].done {
                requests[i].error = e
                requests[i].done = true
                failed = true
            }
        }
        return failed
    }

    public func peerNotice(_ peer: Int) -> Notice? {
        lock.lock(); defer { lock.unlock() }
        guard peer >= 0, peer < nranks, peer != rank else { return nil }
        let (_, n) = readNotice(peer)
        if let n { notices[peer] = n }
        return notices[peer]
    }

    /// Writes the notice into this rank's segment (peers read it there, even after this process is
    /// gone) and rings every peer, so a sleeping one looks at once.
    public func announce(_ notice: Notice) {
        lock.lock(); defer { lock.unlock() }
        guard !closed else { return }
        let bytes = notice.encode()
        let w = noticeWords(base)
        let v = cshim_load_acquire_u64(w.version)
        cshim_store_release_u64(w.version, v | 1)  // odd: being rewritten
        bytes.withUnsafeBytes { w.bytes.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        cshim_store_u32(w.length, UInt32(bytes.count))
        cshim_store_release_u64(w.version, (v | 1) &+ 1)
        for p in 0..<nranks { if let seg = peerBase[p] { ring(seg) } }
    }

    private func abortError() -> CCLError {
        CCLError(.remoteError, abortReason.withLock { $0 }.isEmpty ? "aborted" : abortReason.withLock { $0 }, rank: rank)
    }

    public func abort(_ reason: String) {
        abortReason.withLock { if $0.isEmpty { $0 = reason } }
        aborted.store(true, ordering: .releasing)
        ring(base)  // wakes a waiter of this process sleeping on its own doorbell
    }

    public func close() {
        // A forked child's copy: the closed flag, the doorbells and the name are the parent's.
        if owner.isInherited { return }
        lock.lock(); defer { lock.unlock() }
        if closed { return }
        closed = true
        cshim_store_u32(word32(base, SHMTransport.offClosed), 1)
        // Peers' mappings stay until deinit: a collective of another thread may still be reading them
        // without the lock (`peerBaseUnlocked`); ringing wakes it, and it then fails on `closed`.
        for p in 0..<nranks { if let seg = peerBase[p] { ring(seg) } }
        ring(base)  // and a waiter of this process sleeping on its own doorbell
        for p in 0..<nranks where peerFD[p] >= 0 { Sys.close(peerFD[p]); peerFD[p] = -1 }
        unlink()
        for i in requests.indices where requests[i].inUse && !requests[i].done {
            requests[i].error = CCLError(.invalidUsage, "the shared-memory transport was closed", rank: rank)
            requests[i].done = true
        }
    }
}

extension SHMTransport: SymmetricWindow {
    public var window: (any SymmetricWindow)? { windowBytes > 0 ? self : nil }

    public func windowBase(of r: Int) -> UnsafeMutableRawPointer { (r == rank ? base : peerBaseUnlocked(r)) + windowOffset }

    public func publish(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64) {
        cshim_store_release_u64(word, value)
        for p in 0..<nranks where p != rank {
            let seg = peerBaseUnlocked(p)
            if cshim_load_u32((seg + SHMTransport.offSleepers).assumingMemoryBound(to: UInt32.self)) != 0 { wake(seg) }
        }
    }

    public func waitAll(_ word: (Int) -> UnsafeMutablePointer<UInt64>, atLeast value: UInt64, only: Int?, deadline: Deadline, what: String,
                        check: (Int, UInt64) throws(CCLError) -> Void) throws(CCLError) {
        var next = 0  // peers below `next` are known to be there
        let end = only.map { $0 + 1 } ?? nranks
        if let only { next = only }
        let started = Sys.monotonicNanos()
        let spinUntil = started &+ Knobs.spinNanos
        var lastCheck = Sys.monotonicNanos()
        var lastScan = lastCheck
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
            if let e = try sleepOnDoorbell(until: deadline, lastCheck: &lastCheck, ready: { cshim_load_acquire_u64(word(peer)) >= value }) { throw e.with(peer: next) }
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
            if cshim_load_acquire_u64(word(next)) < value, let e = lock.withLock({ () -> CCLError? in
                if closed { return CCLError(.invalidUsage, "the shared-memory transport is closed", rank: rank) }
                _ = checkPeers(force: false)
                return brokenBy ?? peerError[next]
            }), cshim_load_acquire_u64(word(next)) < value { throw e }
        }
    }
}
