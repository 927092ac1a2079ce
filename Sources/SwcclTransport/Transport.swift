import Synchronization
import SwcclSystem
import SwcclCore

/// The transport protocol: what every backend (TCP, shared memory, RDMA verbs) provides, and the only
/// thing algorithms are written against. See docs/ARCHITECTURE.md for how each backend maps onto it.
///
/// Model (after Gloo's device/context/pair/buffer and UCX's capability-driven design):
/// - a `Transport` is one backend instance serving one communicator: it owns a listening endpoint whose
///   `localAddress` (opaque bytes, at most `EndpointAddress.maxBytes`) is published through the bootstrap,
///   then `connect` establishes a pair with every peer it serves;
/// - memory is made usable by an explicit `register` (nothing for TCP, a mapping for shm, `ibv_reg_mr`
///   for verbs);
/// - `isend`/`irecv` move a byte range to or from one peer under a 64-bit tag and return at once with a
///   `Request`; messages of one pair and one tag match and complete in the order they were posted;
///   `test` polls a request and `wait` blocks with a deadline; at most
///   `capabilities.maxOutstandingRequests` requests may be open at once;
/// - small messages go eagerly; large ones move only once the receiver has posted a matching receive, so
///   unexpected bulk data is never buffered without bound;
/// - failures are `CCLError`s naming the peer's rank, its address and the cause; `abort` (any thread)
///   and `close` wake every waiter.
public protocol Transport: AnyObject, Sendable {
    var capabilities: TransportCapabilities { get }

    /// The address peers use to reach this endpoint; published during bootstrap.
    var localAddress: EndpointAddress { get }

    /// Connects to every listed peer (all of them served by this backend). Blocks until every pair is
    /// established and authenticated, or throws by `deadline`.
    func connect(_ peers: [PeerInfo], deadline: Deadline) throws(CCLError)

    /// Makes `buffer` usable for transfers (pins or maps it). Idempotent per range.
    func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion
    func deregister(_ region: MemoryRegion)

    /// Starts sending `data` to `peer`. The buffer must stay valid and unchanged until the request completes.
    func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request

    /// Starts receiving exactly `buffer.count` bytes from `peer`. A message of another size is an error.
    func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request

    /// Makes progress without blocking; true when the request is complete (its handle is then released).
    /// Throws the request's error, after which the handle is released too.
    func test(_ request: Request) throws(CCLError) -> Bool

    /// Blocks until the request completes; spins briefly, then sleeps in the kernel. Throws `.timeout`
    /// naming the peer if `deadline` passes first.
    func wait(_ request: Request, deadline: Deadline) throws(CCLError)

    /// Blocks until anything happens that may complete a request (data arrived, a buffer drained), or
    /// until `deadline`; returns false if the deadline passed with nothing happening.
    func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool

    /// Callable from any thread; never blocks. Every present and future call fails with `reason`.
    func abort(_ reason: String)

    /// Tags of messages that arrived from `peer` and match no posted receive (diagnostics: tells a
    /// peer that is in another operation from one that is merely slow). A backend keeps at most
    /// `UnexpectedBudget` of them per peer and leaves the rest with the sender (flow control).
    func unexpectedTags(from peer: Int) -> [UInt64]

    /// Tells every peer `notice` (see `Notice`); never blocks for long. An `abort` notice is on its way
    /// (in the kernel, or in shared memory) when this returns — the process may exit right after — and
    /// breaks every peer's endpoint with `notice.error(at:)`, so that their errors name the culprit.
    func announce(_ notice: Notice)

    /// The latest notice received from `peer`, if any.
    func peerNotice(_ peer: Int) -> Notice?

    /// Releases every resource. Outstanding requests fail.
    func close()

    /// Memory every rank maps (`SymmetricWindow`), if the backend has it (nil by default).
    var window: (any SymmetricWindow)? { get }

    /// The secret that authenticates pairs from now on (the bootstrap's session secret, known only to
    /// the ranks that joined); set before `connect`. Nothing to do by default.
    func useSessionSecret(_ secret: [UInt8])
}

/// How much a backend keeps, per peer, of messages that arrived before a matching receive was posted:
/// each counts its payload bytes but at least `minimumCost` (so a flood of empty or rendezvous messages
/// is bounded — at most 4096 of them — as well as a flood of data), up to `bytesPerPeer` in all. Past
/// it, a backend leaves that peer's next unmatched message where it is — in the socket, the FIFO or
/// the receive queue — so the peer's sends wait (flow control) instead of this process's memory
/// growing, until a receive is posted for it. A program that receives out of order more than this
/// from one peer then times out instead of completing, as an MPI program relying on unbounded
/// buffering can deadlock.
public enum UnexpectedBudget {
    public static let bytesPerPeer = 16 << 20
    public static let minimumCost = 4096
    @inlinable package static func cost(payload: Int) -> Int { max(payload, minimumCost) }
}

/// What a backend can do; algorithms and the transport selector read it rather than the backend's type.
/// (What the registry knows before an endpoint exists — availability, reach, cost figures — is in
/// `TransportBackend`.)
public struct TransportCapabilities: Sendable, CustomStringConvertible {
    /// Short name: `tcp`, `shm`, `ib`.
    public var name: String
    /// Messages up to this many bytes are sent eagerly (inline); larger ones use a rendezvous.
    public var eagerThreshold: Int
    /// Largest single message.
    public var maxMessageBytes: Int
    /// Whether the backend can write into a peer's registered memory without the peer's participation.
    public var oneSidedWrites: Bool
    /// Whether buffers must be registered before use for zero-copy (otherwise registration is a no-op).
    public var needsRegistration: Bool
    /// Requests that may be open at once.
    public var maxOutstandingRequests: Int
    /// Whether both ends must share a host.
    public var sameHostOnly: Bool
    /// Bytes of each rank's symmetric window (`Transport.window`), 0 when the backend has none; the
    /// `oneshot` and `staged` algorithms need one.
    public var windowBytes: Int = 0
    /// Cost model inputs, per message: latency in nanoseconds and nanoseconds per byte (measured or estimated).
    public var alphaNanos: Double
    public var betaNanosPerByte: Double

    public init(name: String, eagerThreshold: Int, maxMessageBytes: Int, oneSidedWrites: Bool, needsRegistration: Bool,
                maxOutstandingRequests: Int, sameHostOnly: Bool, windowBytes: Int = 0, alphaNanos: Double, betaNanosPerByte: Double) {
        self.name = name; self.eagerThreshold = eagerThreshold; self.maxMessageBytes = maxMessageBytes
        self.oneSidedWrites = oneSidedWrites; self.needsRegistration = needsRegistration
        self.maxOutstandingRequests = maxOutstandingRequests; self.sameHostOnly = sameHostOnly; self.windowBytes = windowBytes
        self.alphaNanos = alphaNanos; self.betaNanosPerByte = betaNanosPerByte
    }

    public var description: String {
        "\(name): eager <= \(eagerThreshold) B, max message \(maxMessageBytes) B, one-sided \(oneSidedWrites), "
            + "registration \(needsRegistration ? "required" : "no-op"), \(maxOutstandingRequests) requests"
    }
}

/// Memory that every rank of an endpoint maps (shared memory): one window of `windowBytes` per rank,
/// the same size on every rank, readable and writable by all — a pointer per rank plus publish/wait
/// on 64-bit words inside the windows. The backend knows nothing of what lies in a window: the
/// algorithms that use it (`oneshot`, `staged`) lay out their own words and areas there, and ask for
/// its size when the endpoint is made (`TransportSetup.window`). By convention each rank writes only
/// words of its own window and publishes a word with a store release after the data it announces.
public protocol SymmetricWindow: AnyObject {
    /// Bytes of each rank's window.
    var windowBytes: Int { get }
    /// The start of `rank`'s window in this process (valid from `connect` until the endpoint is freed;
    /// page-aligned).
    func windowBase(of rank: Int) -> UnsafeMutableRawPointer
    /// Publishes a word of this rank's window (store release) and wakes peers that sleep.
    func publish(_ word: UnsafeMutablePointer<UInt64>, _ value: UInt64)
    /// Waits until `word(peer) >= value` for every peer (or only for `only`): spins, then sleeps;
    /// fails naming a peer that died, closed, or did not get there by `deadline`.
    /// `check` runs every 100 ms while blocked, given the peer waited on and when the wait began (e.g.
    /// a scan for peers in another operation).
    func waitAll(_ word: (Int) -> UnsafeMutablePointer<UInt64>, atLeast value: UInt64, only: Int?, deadline: Deadline, what: String,
                 check: (Int, UInt64) throws(CCLError) -> Void) throws(CCLError)
}

/// What the user of a symmetric window asks of the backend when the endpoint is made: its size, and a
/// word that says how it is laid out (compared between ranks at `connect`; ranks set up differently
/// get an error, not a wrong layout) with the words to explain a difference.
public struct WindowRequest: Sendable {
    public var bytes: Int
    public var signature: UInt64
    /// Describes a layout signature (a peer's or this rank's) for the error that reports a difference.
    public var describe: @Sendable (UInt64) -> String
    public init(bytes: Int, signature: UInt64, describe: @escaping @Sendable (UInt64) -> String) {
        self.bytes = bytes; self.signature = signature; self.describe = describe
    }
}

/// What a backend's factory is given to make one endpoint.
public struct TransportSetup: Sendable {
    public var rank: Int
    public var nranks: Int
    /// The unique id's secret (pairs re-authenticate with the session secret once bootstrap gave it:
    /// `Transport.useSessionSecret`).
    public var secret: [UInt8]
    /// A symmetric window to provide, if the backend can (nil: none wanted).
    public var window: WindowRequest?
    public init(rank: Int, nranks: Int, secret: [UInt8], window: WindowRequest? = nil) {
        self.rank = rank; self.nranks = nranks; self.secret = secret; self.window = window
    }
}

extension Transport {
    public var window: (any SymmetricWindow)? { nil }
    public func useSessionSecret(_ secret: [UInt8]) {}
}

/// What a rank knows about a peer after bootstrap.
public struct PeerInfo: Sendable {
    public var rank: Int
    public var address: EndpointAddress
    public var host: HostIdentity
    public init(rank: Int, address: EndpointAddress, host: HostIdentity) { self.rank = rank; self.address = address; self.host = host }
}

/// A registered memory range. `key` is backend-specific (an rkey for verbs, a segment id for shm).
public struct MemoryRegion: @unchecked Sendable, Equatable {
    public var base: UnsafeMutableRawPointer?
    public var length: Int
    public var key: UInt64
    public init(base: UnsafeMutableRawPointer?, length: Int, key: UInt64) { self.base = base; self.length = length; self.key = key }
}

/// A handle to an outstanding send or receive. Handles are small values (no allocation per request);
/// a stale handle (already completed) is detected by its generation.
public struct Request: Hashable, Sendable {
    public let slot: UInt32
    public let generation: UInt32
    @inlinable public init(slot: UInt32, generation: UInt32) { self.slot = slot; self.generation = generation }
}

/// Tags: the communicator composes them so that traffic of different operations never matches.
/// Layout: bit 63 reserved (tests, out-of-band use); bit 62 set for point-to-point messages (then a
/// per-pair counter); bits 40–61 the operation's sequence number in the communicator (mod 2^22); bits 8–39 a fingerprint of the operation's arguments (collective,
/// count, type, op, algorithm); bits 0–7 the lane within the algorithm. Ranks that disagree on the
/// arguments therefore never match each other's messages (no silent wrong result), and a waiting rank
/// can tell from the unexpected tags that a peer is in a different operation.
public enum Tag {
    public static let userBit: UInt64 = 1 << 63

    @inlinable
    public static func collective(sequence: UInt64, fingerprint: UInt32, lane: Int) -> UInt64 {
        ((sequence & 0x3f_ffff) << 40) | (UInt64(fingerprint) << 8) | UInt64(lane & 0xff)
    }

    public static func decode(_ tag: UInt64) -> (sequence: UInt64, fingerprint: UInt32, lane: Int) {
        ((tag >> 40) & 0x3f_ffff, UInt32(truncatingIfNeeded: tag >> 8), Int(tag & 0xff))
    }

    /// A 32-bit fingerprint of an operation's arguments (see `mix`).
    public static func fingerprint(_ values: [Int]) -> UInt32 {
        var h: UInt32 = 0x811c_9dc5
        for v in values { mix(&h, v) }
        return h
    }

    /// The same over two values, without an array (called on every collective).
    @inlinable
    public static func fingerprint(_ a: Int, _ b: Int) -> UInt32 {
        var h: UInt32 = 0x811c_9dc5
        mix(&h, a); mix(&h, b)
        return h
    }

    /// One 64-bit value into the hash: a multiply-xorshift step per value (not FNV's eight byte
    /// steps: this runs on every collective call), folded to 32 bits at each step.
    @inlinable package static func mix(_ h: inout UInt32, _ v: Int) {
        var x = (UInt64(h) << 32 | UInt64(h)) ^ UInt64(bitPattern: Int64(v))
        x = (x ^ (x >> 30)) &* 0xbf58_476d_1ce4_e5b9
        x = (x ^ (x >> 27)) &* 0x94d0_49bb_1331_11eb
        h = UInt32(truncatingIfNeeded: x ^ (x >> 31))
    }
}

extension Knobs {
    package static var transport: [KnobInfo] { [spinMicroseconds.info, spinYield.info] }
    package static let spinMicroseconds = Knob.int("SWCCL_SPIN_US", default: 200,
        "microseconds a waiting rank polls without sleeping before it blocks in the kernel")
    @usableFromInline package static var spinNanos: UInt64 { UInt64(max(spinMicroseconds.value, 0)) &* 1000 }
    @usableFromInline package static let spinYield = Knob.bool("SWCCL_SPIN_YIELD", default: false,
        "while spinning, yield the core when nothing arrived: 1 always, 0 never; unset, only once a communicator of this process has more ranks on this host than the host has cores")
}

/// How waiting ranks spin. Yielding between polls lets ranks that share a core run, but each yield
/// costs a system call and delays noticing the peer, so it is only done when the host is
/// oversubscribed (or `SWCCL_SPIN_YIELD` says so).
@usableFromInline package enum Spin {
    @usableFromInline package static let oversubscribed = Atomic<Bool>(false)
    package static let cores = max(1, Sys.onlineCPUs())

    /// Called by every communicator at init with the number of its ranks on this host.
    package static func note(localRanks: Int) {
        if localRanks > cores { oversubscribed.store(true, ordering: .relaxed) }
    }

    /// Inlinable: read in the spin loops of other targets (the backends, the one-shot allreduce).
    @inlinable package static var yields: Bool { Knobs.spinYield.override ?? oversubscribed.load(ordering: .relaxed) }

    /// The monotonic clock, for spin loops in other targets' inlinable code.
    @usableFromInline package static func now() -> UInt64 { Sys.monotonicNanos() }

    /// Yields the core while spinning, if `yields` (oversubscribed host or `SWCCL_SPIN_YIELD=1`).
    @inlinable package static func yield() { if yields { yieldCore() } }
    @usableFromInline package static func yieldCore() { Sys.yieldCore() }
}
