import Glibc
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

extension Knobs {
    static let timeoutMs = Knob.int("SWCCL_TIMEOUT_MS", default: 120_000,
        "deadline in milliseconds of every blocking step (connect, rendezvous, each wait of a collective)")
    static let transports = Knob.string("SWCCL_TRANSPORTS", default: "auto", "transports to use: auto, or a list like shm,tcp / tcp")
}

extension Knobs {
    /// Every knob, for listing (`swccl-perf --env`) and for the unknown-variable check: each layer's
    /// own list, joined here.
    public static var all: [KnobInfo] {
        core + bootstrap + [timeoutMs.info, transports.info] + algorithms + transport + TransportRegistry.knobs
    }

    /// Warns once about `SWCCL_*` variables that nothing reads (usually a typo).
    static func warnUnknownVariables() {
        _ = unknownCheck
    }

    private static let unknownCheck: Bool = {
        let known = Set(all.map(\.name)).union(reservedNames)
        for name in Sys.environmentNames() where name.hasPrefix("SWCCL_") && !known.contains(name)
            && !reservedPrefixes.contains(where: { name.hasPrefix($0) }) {
            Log.warn(.env, "unknown environment variable \(name) is ignored")
        }
        return true
    }()
}

/// Settings of one communicator. Unset fields take the environment's value, then the library default.
public struct CommConfig: Sendable {
    /// Deadline of every blocking step; nil or <= 0: `SWCCL_TIMEOUT_MS`.
    public var timeoutMs: Int?
    /// `auto`, or a list such as `tcp`; nil: `SWCCL_TRANSPORTS`.
    public var transports: String?
    /// Shown in logs and errors.
    public var name: String?
    /// Forces algorithms, in `SWCCL_ALGO`'s syntax (`ring`, `allreduce:tree`,
    /// `allreduce:0-4K:recdbl;4K-inf:ring`); nil: `SWCCL_ALGO`, else the cost model's choice.
    public var algorithm: String?

    public init(timeoutMs: Int? = nil, transports: String? = nil, name: String? = nil, algorithm: String? = nil) {
        self.timeoutMs = timeoutMs; self.transports = transports; self.name = name; self.algorithm = algorithm
    }
}

/// Element types with a `DataType`, for the typed Swift API.
public protocol CCLElement: Sendable { static var dataType: DataType { get } }
extension Int8: CCLElement { public static var dataType: DataType { .int8 } }
extension UInt8: CCLElement { public static var dataType: DataType { .uint8 } }
extension Int32: CCLElement { public static var dataType: DataType { .int32 } }
extension UInt32: CCLElement { public static var dataType: DataType { .uint32 } }
extension Int64: CCLElement { public static var dataType: DataType { .int64 } }
extension UInt64: CCLElement { public static var dataType: DataType { .uint64 } }
extension Float16: CCLElement { public static var dataType: DataType { .float16 } }
extension Float: CCLElement { public static var dataType: DataType { .float32 } }
extension Double: CCLElement { public static var dataType: DataType { .float64 } }

/// A group of ranks that run collectives together (NCCL's `ncclComm_t`).
///
/// Create one per process with the same `UniqueID` on every rank (or `fromEnvironment()` under a
/// launcher). Collectives block the calling thread until complete on this rank. After an error other
/// than `invalidArgument`/`invalidUsage` the communicator is broken: `abort()` it and build a new one.
public final class Communicator: @unchecked Sendable {
    /// Largest communicator this build accepts.
    public static let maxRanks = Limits.maxRanks
    /// Longest timeout (about 24 days); larger values are clamped.
    public static let maxTimeoutMs = Int(Int32.max)
    public let rank: Int
    public let size: Int
    public let name: String
    public let timeoutMs: Int
    /// Every rank's host identity (index = rank), learned at bootstrap.
    public let hosts: [HostIdentity]
    /// Every rank's published listening address that a shrunk communicator's new root may listen on
    /// (a TCP listener's; nil if it had none: `TransportBackend.listenAddress`).
    let listenAddresses: [SocketAddress?]
    /// The communicator's secret, from which shrunk communicators derive theirs.
    let secret: [UInt8]
    let transport: any Transport
    let bootstrap: Bootstrap
    let forcedAlgorithm: String?
    /// `CommConfig.transports` as given (nil: the environment's), inherited by split and shrink.
    let transportsSetting: String?
    /// Picks each collective's algorithm (forced rules, else the cost model).
    let selector: AlgorithmSelector
    /// Explains argument mismatches (which argument a peer passed differently).
    let argumentCheck: ArgumentCheck
    let arena: SharedArena?
    /// Tells peers of long waits and of this communicator breaking; names the culprit at a timeout.
    let blame: Blame
    /// Point-to-point calls so far (they are numbered apart from the collectives' sequence).
    var p2pCalls: UInt64 = 0
    private let wakeFD: Int32
    private let state = Mutex<State>(State())
    /// Serialises collectives issued on this communicator from several threads.
    private let opLock = Lock()
    /// The process that made this communicator: in a forked child it is the parent's, so using it is an
    /// error and tearing it down touches nothing the parent shares (sockets, shared memory).
    public let owner = ProcessOwner()
    var sequence: UInt64 = 0
    let scratch = Scratch()
    let oneShot = Counter()
    let steps = Counter()
    /// The scaled input of pre-multiplied reductions (apart from `scratch`, which the algorithms use).
    let preMulScratch = Scratch()
    let p2pCounters = Mutex<[UInt64]>([])

    struct State {
        var aborted = false
        var destroyed = false
        var finalized = false
        /// Operations of this communicator enqueued on streams and not finished yet.
        var onStreams = 0
        var asyncError: CCLError?
        var lastError: String = ""
        /// Shrinks made from this communicator (numbers each shrunk communicator's secret).
        var shrinks = 0
    }

    public convenience init(id: UniqueID, rank: Int, size: Int, config: CommConfig = CommConfig()) throws(CCLError) {
        try self.init(id: id, rank: rank, size: size, config: config, source: nil)
    }

    /// `count` ranks inside this process (NCCL's `ncclCommInitAll`): one communicator per rank, each
    /// set up on its own thread, returned in rank order. Drive them from one thread per communicator,
    /// or from one thread with a stream per communicator, or inside a group.
    public static func initAll(count: Int, config: CommConfig = CommConfig()) throws(CCLError) -> [Communicator] {
        guard count >= 1, count <= maxRanks else { throw CCLError.invalidArgument("nranks \(count) must be between 1 and \(maxRanks)") }
        // Always a fresh root in this process: SWCCL_COMM_ID names the job's rendezvous, which the
        // ranks of initAll must not join (several processes of a job may each call initAll).
        let id = try UniqueID.makeRandom()
        final class Slots: @unchecked Sendable {
            let done = Condition()
            var results: [Result<Communicator, CCLError>?]
            init(_ n: Int) { results = Array(repeating: nil, count: n) }
        }
        let slots = Slots(count)
        for r in 1..<count {
            do {
                try Sys.startThread {
                    let res = catching { () throws(CCLError) in try Communicator(id: id, rank: r, size: count, config: config) }
                    slots.done.lock(); slots.results[r] = res; slots.done.broadcast(); slots.done.unlock()
                }
            } catch {
                throw CCLError.system("cannot start a thread for rank \(r)", error)
            }
        }
        let mine = catching { () throws(CCLError) in try Communicator(id: id, rank: 0, size: count, config: config) }
        slots.done.lock()
        slots.results[0] = mine
        while slots.results.contains(where: { $0 == nil }) { slots.done.wait() }
        let results = slots.results
        slots.done.unlock()
        var comms: [Communicator] = []
        for case let r? in results {
            switch r {
            case .success(let c): comms.append(c)
            case .failure(let e):
                for c in comms { c.abort() }
                for case .success(let c)? in results { c.abort() }
                throw e
            }
        }
        return comms
    }

    /// Registers memory with the communicator's transport (a no-op for TCP, a mapping for shared
    /// memory, `ibv_reg_mr` for verbs). Optional: unregistered buffers always work.
    public func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        guard buffer.baseAddress != nil, buffer.count > 0 else { throw record(CCLError.invalidArgument("cannot register an empty buffer").with(operation: "register", rank: rank)) }
        return try run("register") { () throws(CCLError) in try transport.register(buffer) }
    }

    public func deregister(_ region: MemoryRegion) {
        transport.deregister(region)
    }

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

    /// A communicator from the launcher's environment (see `LaunchEnvironment`).
    public static func fromEnvironment(config: CommConfig = CommConfig()) throws(CCLError) -> Communicator {
        let env = try LaunchEnvironment.detect()
        guard env.size <= maxRanks else {
            throw CCLError.invalidUsage("the launcher's environment (\(env.source)) gives \(env.size) ranks; at most \(maxRanks) are supported").with(operation: "init")
        }
        // A rendezvous address that does not parse or resolve is the environment's fault, not an argument's.
        let id: UniqueID
        do throws(CCLError) { id = try UniqueID.fromCommID(env.rendezvous) } catch {
            var e = error
            if e.kind == .invalidArgument { e.kind = .invalidUsage }
            if env.origin != "SWCCL_COMM_ID" { e.cause += " (the address is \(env.origin); set SWCCL_COMM_ID=host:port to choose another)" }
            throw e.with(operation: "init", rank: env.rank)
        }
        Log.info(.bootstrap, "launcher \(env.source): rank \(env.rank) of \(env.size)\(env.localRank.map { " (local rank \($0))" } ?? ""), rendezvous \(env.rendezvous) from \(env.origin)")
        do throws(CCLError) {
            return try Communicator(id: id, rank: env.rank, size: env.size, config: config, source: env.source)
        } catch {
            // A root that cannot listen, or that nobody can reach: say where its address came from.
            var e = error
            let rootTrouble = e.cause.hasPrefix("rank 0 cannot run the bootstrap root") || (e.operation ?? "").hasPrefix("init: reaching the bootstrap root")
            if rootTrouble && env.origin != "SWCCL_COMM_ID" {
                e.cause += " (the rendezvous \(env.rendezvous) is \(env.origin): rank 0 must run on that host and the port must be free; set SWCCL_COMM_ID=host:port to choose another)"
            }
            throw e
        }
    }

    /// The algorithm this communicator runs for `kind` on `bytes` (the collective's size as swccl-perf
    /// counts it: the whole array for all-gather and reduce-scatter): a forced one (`SWCCL_ALGO`,
    /// `CommConfig.algorithm`) where the transport can run it, else the cost model's choice.
    public func algorithm(for kind: CollectiveKind, bytes: Int) -> Algorithm {
        selector.choose(kind, bytes: bytes)
    }

    /// Whether this communicator's transport can run `algorithm` for `kind` on `bytes`: `oneshot` and
    /// `staged` need every rank on one host over shared memory (and `oneshot` a size its arena holds).
    public func canRun(_ algorithm: Algorithm, for kind: CollectiveKind, bytes: Int) -> Bool {
        selector.model.predict(kind, algorithm, bytes: bytes, ranks: size) != nil
    }

    /// `shrinkOf`: made by `shrink`, with this rank's number in the parent and the exclusion list it
    /// passed; the survivors' lists are compared once all have arrived.
    private init(id: UniqueID, rank: Int, size: Int, config: CommConfig, source: String?,
                 shrinkOf: (parentRank: Int, excluded: [Int])? = nil) throws(CCLError) {
        guard size >= 1, size <= Communicator.maxRanks else {
            throw CCLError.invalidArgument("nranks must be between 1 and \(Communicator.maxRanks), not \(size)").with(operation: "init")
        }
        guard rank >= 0, rank < size else { throw CCLError.invalidArgument("rank \(rank) is out of range for \(size) ranks").with(operation: "init") }
        Knobs.warnUnknownVariables()
        self.rank = rank
        self.size = size
        let t = config.timeoutMs ?? 0
        timeoutMs = min(t > 0 ? t : max(Knobs.timeoutMs.value, 1), Communicator.maxTimeoutMs)
        name = config.name ?? "comm"
        forcedAlgorithm = config.algorithm ?? (Knobs.algo.value.isEmpty ? nil : Knobs.algo.value)
        transportsSetting = config.transports
        do { wakeFD = try Sys.eventFD() } catch { throw CCLError.system("eventfd", error).with(operation: "init", rank: rank) }
        let parts = try id.parsed()
        let choice: TransportChoice
        do throws(CCLError) {
            choice = try TransportChoice(spec: config.transports ?? Knobs.transports.value, rank: rank, size: size, secret: parts.secret,
                                         window: SharedArenaLayout.request(ranks: size))
        } catch {
            Sys.close(wakeFD)
            throw error.with(operation: "init", rank: rank)
        }
        do throws(CCLError) {
            let info = RankInfo(rank: rank, pid: Sys.getpid(), host: .local, transports: choice.published, shrink: shrinkOf)
            bootstrap = try Bootstrap(id: id, rank: rank, nranks: size, blob: info.encode(), timeoutMs: timeoutMs, abortFD: wakeFD)
            let infos = try RankInfo.decodeAll(bootstrap.blobs)
            if let mine = shrinkOf {
                // Every survivor sees every list: a disagreement is reported alike on all of them.
                for i in infos where i.shrink?.excluded != mine.excluded {
                    let theirs = i.shrink.map { "parent rank \($0.parentRank) excluded \($0.excluded)" } ?? "rank \(i.rank) is not shrinking"
                    throw CCLError(.invalidUsage, "survivors passed different exclusion lists: \(theirs), this rank (parent rank \(mine.parentRank)) excluded \(mine.excluded); every survivor must pass the same list",
                                   peer: i.shrink?.parentRank ?? i.rank)
                }
            }
            let hostList = infos.map(\.host)
            hosts = hostList
            listenAddresses = TransportChoice.listenAddresses(infos)
            secret = bootstrap.secret
            // Pairs authenticate with the session secret, which only the ranks that joined know.
            for m in choice.made { m.transport.useSessionSecret(bootstrap.secret) }
            Spin.note(localRanks: hostList.filter { $0.sameHost(as: .local) }.count)
            let (t, peers) = try choice.choose(rank: rank, infos: infos)
            transport = t
            try t.connect(peers, deadline: .after(milliseconds: timeoutMs))
            // Everyone connected: a final barrier so no rank starts before all pairs exist.
            try bootstrap.barrier()
        } catch {
            choice.close()
            Sys.close(wakeFD)
            throw error.with(operation: "init", rank: rank)
        }
        selector = AlgorithmSelector(caps: transport.capabilities, forced: forcedAlgorithm, ranks: size)
        argumentCheck = ArgumentCheck(ranks: size, selector: selector)
        arena = transport.window.flatMap { SharedArena($0, ranks: size) }
        blame = Blame(transport: transport, rank: rank, size: size, timeoutMs: timeoutMs)
        if rank == 0 {
            let sameHost = hosts.allSatisfy { $0.sameHost(as: hosts[0]) }
            Log.info(.initialization, "rank \(rank): NUMA topology: \(NUMA.topology().joined(separator: "; ")); this rank runs on node \(NUMA.currentNode().map(String.init) ?? "?")"
                     + (NUMA.available ? "" : " (no placement: \(NUMA.unavailableReason))"))
            if Log.enabled(.info, .initialization) { Log.info(.initialization, "transports on this host: " + TransportRegistry.backends.map { $0.summary() }.joined(separator: "; ")) }
            Log.info(.initialization, "\(name): \(size) ranks\(source.map { " from \($0)" } ?? ""), \(sameHost ? "all on one host" : "several hosts"), transport \(transport.capabilities), timeout \(timeoutMs) ms")
            for problem in selector.rules.problems { Log.warn(.tuning, "SWCCL_ALGO: ignoring \(problem)") }
            if Log.enabled(.info, .tuning) {
                for kind in CollectiveKind.allCases where kind.algorithms.count > 1 { Log.info(.tuning, "algorithm table: " + selector.table(kind)) }
            }
        }
    }

    deinit {
        if owner.isInherited {
            // A forked child's copy: closing would say goodbye (TCP BYE, the shm closed flag) on the
            // parent's connections. Leave the transport and bootstrap channel to the parent, unreleased.
            _ = Unmanaged.passRetained(transport as AnyObject)
            _ = Unmanaged.passRetained(bootstrap)
            return
        }
        transport.close()
        bootstrap.close()
        Sys.close(wakeFD)
        scratch.release()
        preMulScratch.release()
    }

    // MARK: lifecycle

    /// Breaks off every operation at once (any thread): blocked calls return an error promptly.
    public func abort() {
        state.withLock { $0.aborted = true }
        if owner.isInherited { return }  // the parent's connections are not the child's to break
        Sys.signal(eventFD: wakeFD)
        transport.abort("aborted by the application on rank \(rank)")
    }

    /// Runs `body` as operation `name` on `stream`'s thread, counted until it finished (`finalize`
    /// waits for the count to drop to zero).
    func enqueue(on stream: ExecutionStream, _ name: String, _ body: @escaping () throws(CCLError) -> Void) throws(CCLError) {
        streamOperation(started: true)
        do throws(CCLError) {
            // `finally` runs even when the stream skips the operation after an earlier failure.
            try stream.enqueue({ () throws(CCLError) in try self.run(name) { () throws(CCLError) in try body() } },
                               finally: { self.streamOperation(started: false) })
        } catch {
            streamOperation(started: false)
            throw error
        }
    }

    /// Counts an operation of this communicator enqueued on a stream (`finalize` waits for none).
    func streamOperation(started: Bool) { state.withLock { $0.onStreams += started ? 1 : -1 } }

    /// Completes every operation of this communicator enqueued on streams (bounded by the timeout),
    /// then refuses all but `destroy`, `abort` and queries. Errors: `invalidUsage` if already finalized
    /// or destroyed; `timeout` if queued operations did not finish in time.
    public func finalize() throws(CCLError) {
        let refused = state.withLock { s -> CCLError? in
            if s.destroyed { return CCLError.invalidUsage("the communicator was destroyed") }
            if s.finalized { return CCLError.invalidUsage("the communicator was finalized already") }
            return nil
        }
        if let refused { throw record(refused.with(operation: "finalize", rank: rank)) }
        let deadline = Deadline.after(milliseconds: timeoutMs)
        while state.withLock({ $0.onStreams }) > 0 {
            if deadline.hasPassed {
                let e = CCLError(.timeout, "operations enqueued on streams did not finish within \(timeoutMs) ms").with(operation: "finalize", rank: rank)
                state.withLock { if $0.asyncError == nil { $0.asyncError = e } }
                throw record(e)
            }
            Sys.sleep(nanos: 1_000_000)
        }
        opLock.withLock { state.withLock { $0.finalized = true } }  // after any operation in flight
    }

    /// Releases the communicator's connections. Collectives afterwards fail with `invalidUsage`.
    public func destroy() {
        let first = state.withLock { s -> Bool in
            defer { s.destroyed = true }
            return !s.destroyed
        }
        guard first, !owner.isInherited else { return }
        opLock.withLock {
            transport.close()
            bootstrap.close()
        }
    }

    /// The transport the communicator chose: `shm` (all ranks on this host), `tcp`, or `shm+tcp` (shared
    /// memory to the ranks on this host, TCP to the others).
    public var transportName: String { transport.capabilities.name }

    /// Whether `finalize` completed (or `destroy` ran): only destroy, abort and queries remain.
    public var isFinalized: Bool { state.withLock { $0.finalized || $0.destroyed } }

    /// The error that broke this communicator, if any.
    public var asyncError: CCLError? { state.withLock { $0.asyncError } }

    /// One line describing the last error on this communicator.
    public var lastError: String { state.withLock { $0.lastError } }

    /// Records `text` as the last error of this communicator (a check made by a layer above, e.g. the C
    /// ABI's argument conversion, that failed before reaching the communicator).
    public func noteLastError(_ text: String) { state.withLock { $0.lastError = text } }

    /// Blocks until every rank calls it: a dissemination barrier over the transport (⌈log₂ n⌉ rounds
    /// of empty messages), so waiting ranks spin briefly and then sleep like any collective.
    public func barrier() throws(CCLError) {
        try run("barrier") { () throws(CCLError) in
            try collective("barrier", CallArguments(collective: .barrier)) { (ctx) throws(CCLError) in try Barrier.dissemination(ctx) }
        }
    }

    /// Runs one operation: checks the communicator is usable, serialises with other threads, records
    /// a fatal error as the communicator's asynchronous error.
    func run<R>(_ operation: String, _ body: () throws(CCLError) -> R) throws(CCLError) -> R {
        if owner.isInherited { throw record(owner.inheritedError("communicator \(name)").with(operation: operation, rank: rank)) }
        let unusable = state.withLock { s -> CCLError? in
            if s.destroyed { return CCLError.invalidUsage("the communicator was destroyed") }
            if s.aborted { return CCLError(.invalidUsage, "the communicator was aborted") }
            if s.finalized { return CCLError(.invalidUsage, "the communicator was finalized (only destroy, abort and queries remain)") }
            if let e = s.asyncError {
                return CCLError(e.kind, "the communicator is broken by an earlier error (\(e.context ?? "")): \(e.cause)", peer: e.peer)
            }
            return nil
        }
        if let unusable { throw record(unusable.with(operation: operation, rank: rank, communicator: name)) }
        // A call that only checks and records (inside a group) or enqueues (on a stream) must not wait
        // for an operation that runs meanwhile on a stream's thread: that one may itself wait for
        // ranks whose operations this thread has yet to enqueue.
        let exclusive = !(Group.isActive || ExecutionStream.current != nil)
        if exclusive { opLock.lock() }
        defer { if exclusive { opLock.unlock() } }
        do {
            return try body()
        } catch {
            // A timeout on a peer that itself waits names the rank at the end of the chain.
            let e = blame.resolve(error.with(operation: operation, rank: rank, communicator: name))
            if e.isFatal {
                let first = state.withLock { s -> Bool in
                    guard s.asyncError == nil else { return false }
                    s.asyncError = e
                    return true
                }
                // Every peer learns the culprit and the cause (or this rank's peer's notice, forwarded).
                if first { blame.announceAbort(e) }
            }
            throw record(e)
        }
    }

    @discardableResult
    func record(_ e: CCLError) -> CCLError {
        let text = e.description
        state.withLock { $0.lastError = text }
        return e
    }

    func nextSequence() -> UInt64 {
        sequence &+= 1
        return sequence
    }

    /// `fingerprint`: the tags' fingerprint when it is not the arguments' (0 for point-to-point waits).
    func context(_ sequence: UInt64, operation: String, arguments: CallArguments, fingerprint: UInt32? = nil) -> CollectiveContext {
        CollectiveContext.make(rank: rank, size: size, transport: transport, arena: arena, sequence: sequence,
                          fingerprint: fingerprint ?? arguments.fingerprint, arguments: arguments, check: argumentCheck,
                          operation: operation, timeoutMs: timeoutMs, scratch: scratch,
                          oneShot: oneShot, steps: steps, blame: blame)
    }

    /// Waits for point-to-point requests (each with its peer) like a collective's waits: a timeout
    /// after `timeoutMs` without progress, and peers told of a long wait. `number` numbers the call.
    func waitPointToPoint(_ pending: [(Request, Int)], operation: String, number: UInt64) throws(CCLError) {
        var ctx = context(number, operation: operation, arguments: CallArguments(collective: .barrier), fingerprint: 0)
        ctx.scansForMismatch = false
        do throws(CCLError) {
            for (q, peer) in pending { try ctx.wait(q, peer: peer) }
        } catch { throw error.with(sequence: number) }
    }

    /// The next point-to-point call's number.
    func nextPointToPoint() -> UInt64 { p2pCalls &+= 1; return p2pCalls }

    // MARK: allreduce

    /// Reduces `count` elements of `type` from every rank's `send` with `op` and leaves the result in every
    /// rank's `recv`. In place when `send == recv`.
    /// With `preMulSum`, every rank's input is first multiplied by its scalar, then summed (`op` is
    /// then ignored); NCCL's `ncclRedOpCreatePreMulSum`.
    public func allReduce(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, op: ReduceOp,
                          preMulSum: PreMulSum? = nil) throws(CCLError) {
        try run("allreduce") { () throws(CCLError) in
            try Validate.buffers(send: send, recv: recv, count: count, type: type)
            try preMulSum?.check(type)
            let op = preMulSum == nil ? op : .sum
            let algo = selector.choose(.allreduce, bytes: count * type.size)
            let args = CallArguments(collective: .allreduce, count: count, type: type, op: op, preMulSum: preMulSum != nil, algorithm: algo)
            try collective("allreduce", args) { (ctx) throws(CCLError) in
                guard count > 0, let send, let recv else { return try Barrier.zeroCount(ctx) }
                var input = send
                if let pm = preMulSum {
                    pm.scale(into: recv, from: send, count: count)  // the output buffer holds the scaled input
                    input = UnsafeRawPointer(recv)
                }
                try AllReduce.run(algo, ctx, send: input, recv: recv, count: count, type: type, op: op)
            }
        }
    }

    public func allReduce<T: CCLElement>(_ send: UnsafeBufferPointer<T>, into recv: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws(CCLError) {
        guard send.count == recv.count else {
            throw record(CCLError.invalidArgument("send has \(send.count) elements but recv \(recv.count)").with(operation: "allreduce", rank: rank))
        }
        try allReduce(send: UnsafeRawPointer(send.baseAddress), recv: UnsafeMutableRawPointer(recv.baseAddress), count: send.count, type: T.dataType, op: op)
    }

    public func allReduce<T: CCLElement>(_ buffer: inout [T], op: ReduceOp) throws(CCLError) {
        try buffer.withUnsafeMutableBufferPointer { (b) throws(CCLError) in
            try allReduce(send: UnsafeRawPointer(b.baseAddress), recv: UnsafeMutableRawPointer(b.baseAddress), count: b.count, type: T.dataType, op: op)
        }
    }
}

extension Communicator {
    /// Runs a collective's algorithm: takes a sequence number and a context whose tags carry the
    /// fingerprint of its `arguments`; any error from here on breaks the communicator.
    func collective(_ name: String, _ arguments: CallArguments, _ body: @escaping (CollectiveContext) throws(CCLError) -> Void) throws(CCLError) {
        if Group.isActive {
            // Arguments were checked already; the operation itself runs at the group's end.
            try Group.record(self, name) { () throws(CCLError) in
                try self.runCollective(name, arguments, body)
            }
            return
        }
        if let stream = ExecutionStream.current {
            // Arguments were checked already; the operation runs on the stream's thread, in order.
            try enqueue(on: stream, name) { () throws(CCLError) in
                try self.runCollective(name, arguments, body)
            }
            return
        }
        try runCollective(name, arguments, body)
    }

    /// Takes the sequence number and runs the algorithm. A failure is explained by a peer's other
    /// arguments when there is evidence of them; a disagreement found is told to every peer.
    private func runCollective(_ name: String, _ arguments: CallArguments, _ body: (CollectiveContext) throws(CCLError) -> Void) throws(CCLError) {
        let ctx = context(nextSequence(), operation: name, arguments: arguments)
        do throws(CCLError) { try body(ctx) } catch {
            let aborted = state.withLock { $0.aborted }
            let e = aborted ? error : ctx.explained(error)
            if let d = argumentCheck.take() { ctx.notifyDisagreement(culprit: d.peer, theirs: d.theirs) }
            throw e.with(sequence: ctx.sequence).breaking
        }
    }

    func checkRoot(_ root: Int) throws(CCLError) {
        guard root >= 0, root < size else { throw CCLError.invalidArgument("root \(root) is out of range [0, \(size))") }
    }

    /// Every rank receives the concatenation of all ranks' `sendCount` elements, in rank order.
    /// In place when `send == recv + rank * sendCount * size`.
    public func allGather(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, sendCount: Int, type: DataType) throws(CCLError) {
        try run("allgather") { () throws(CCLError) in
            try Validate.buffers(send: send, sendBytes: sendCount, recv: recv, recvBytes: sendCount * size, type: type,
                                 inPlaceOffset: rank * sendCount)
            let algo = selector.choose(.allgather, bytes: sendCount * size * type.size)
            try collective("allgather", CallArguments(collective: .allgather, count: sendCount, type: type, algorithm: algo)) { (ctx) throws(CCLError) in
                guard sendCount > 0, let send, let recv else { return try Barrier.zeroCount(ctx) }
                try Collectives.allGather(algo, ctx, send: send, recv: recv, bytes: sendCount * type.size)
            }
        }
    }

    /// Reduces the ranks' arrays of `recvCount * size` elements and leaves block `rank` on each rank.
    /// In place when `recv == send + rank * recvCount * size`.
    public func reduceScatter(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, recvCount: Int, type: DataType, op: ReduceOp,
                              preMulSum: PreMulSum? = nil) throws(CCLError) {
        try run("reducescatter") { () throws(CCLError) in
            try Validate.buffers(send: send, sendBytes: recvCount * size, recv: recv, recvBytes: recvCount, type: type,
                                 inPlaceOffset: -rank * recvCount)
            try preMulSum?.check(type)
            let op = preMulSum == nil ? op : .sum
            let algo = selector.choose(.reducescatter, bytes: recvCount * size * type.size)
            let args = CallArguments(collective: .reducescatter, count: recvCount, type: type, op: op, preMulSum: preMulSum != nil, algorithm: algo)
            try collective("reducescatter", args) { (ctx) throws(CCLError) in
                guard recvCount > 0, let send, let recv else { return try Barrier.zeroCount(ctx) }
                var input = send
                if let pm = preMulSum {
                    let tmp = try self.preMulScratch.get(recvCount * self.size * type.size)
                    pm.scale(into: tmp, from: send, count: recvCount * self.size)
                    input = UnsafeRawPointer(tmp)
                }
                try Collectives.reduceScatter(algo, ctx, send: input, recv: recv, count: recvCount, type: type, op: op)
            }
        }
    }

    /// Copies `count` elements of `send` on `root` into `recv` on every rank (`send` is read on the root
    /// only). In place when `send == recv`.
    public func broadcast(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try run("broadcast") { () throws(CCLError) in
            try checkRoot(root)
            try Validate.buffers(send: rank == root ? send : nil, sendBytes: rank == root ? count : 0, recv: recv, recvBytes: count, type: type, inPlaceOffset: 0)
            let algo = selector.choose(.broadcast, bytes: count * type.size)
            try collective("broadcast", CallArguments(collective: .broadcast, count: count, type: type, root: root, algorithm: algo)) { (ctx) throws(CCLError) in
                guard count > 0, let recv else { return try Barrier.zeroCount(ctx) }
                if self.rank == root, let send, send != UnsafeRawPointer(recv) { recv.copyMemory(from: send, byteCount: count * type.size) }
                try Collectives.broadcast(algo, ctx, buffer: recv, bytes: count * type.size, root: root)
            }
        }
    }

    /// Reduces every rank's `count` elements with `op` into `recv` on `root` (`recv` is used on the root
    /// only). In place when `send == recv`.
    public func reduce(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, op: ReduceOp, root: Int,
                       preMulSum: PreMulSum? = nil) throws(CCLError) {
        try run("reduce") { () throws(CCLError) in
            try checkRoot(root)
            try Validate.buffers(send: send, sendBytes: count, recv: rank == root ? recv : nil, recvBytes: rank == root ? count : 0, type: type, inPlaceOffset: 0)
            try preMulSum?.check(type)
            let op = preMulSum == nil ? op : .sum
            let algo = selector.choose(.reduce, bytes: count * type.size)
            let args = CallArguments(collective: .reduce, count: count, type: type, op: op, root: root, preMulSum: preMulSum != nil, algorithm: algo)
            try collective("reduce", args) { (ctx) throws(CCLError) in
                guard count > 0, let send else { return try Barrier.zeroCount(ctx) }
                var input = send
                if let pm = preMulSum {
                    let tmp = try self.preMulScratch.get(count * type.size)
                    pm.scale(into: tmp, from: send, count: count)
                    input = UnsafeRawPointer(tmp)
                }
                try Collectives.reduce(algo, ctx, send: input, recv: self.rank == root ? recv : nil, count: count, type: type, op: op, root: root)
            }
        }
    }

    /// Sends block j (`count` elements) of `send` to rank j and receives rank j's block into block j of
    /// `recv`. Not in place.
    public func allToAll(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType) throws(CCLError) {
        try run("alltoall") { () throws(CCLError) in
            try Validate.buffers(send: send, sendBytes: count * size, recv: recv, recvBytes: count * size, type: type, inPlaceOffset: nil)
            try collective("alltoall", CallArguments(collective: .alltoall, count: count, type: type)) { (ctx) throws(CCLError) in
                guard count > 0, let send, let recv else { return try Barrier.zeroCount(ctx) }
                try Collectives.allToAll(ctx, send: send, recv: recv, bytes: count * type.size)
            }
        }
    }

    /// Collects every rank's `count` elements into `recv` on `root`, in rank order. In place when
    /// `send == recv + root * count * size` on the root.
    public func gather(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try run("gather") { () throws(CCLError) in
            try checkRoot(root)
            try Validate.buffers(send: send, sendBytes: count, recv: rank == root ? recv : nil, recvBytes: rank == root ? count * size : 0,
                                 type: type, inPlaceOffset: root * count)
            try collective("gather", CallArguments(collective: .gather, count: count, type: type, root: root)) { (ctx) throws(CCLError) in
                guard count > 0, let send else { return try Barrier.zeroCount(ctx) }
                try Collectives.gather(ctx, send: send, recv: self.rank == root ? recv : nil, bytes: count * type.size, root: root)
            }
        }
    }

    /// Sends block j of `send` on `root` to rank j. In place when `recv == send + root * count * size`
    /// on the root.
    public func scatter(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try run("scatter") { () throws(CCLError) in
            try checkRoot(root)
            try Validate.buffers(send: rank == root ? send : nil, sendBytes: rank == root ? count * size : 0, recv: recv, recvBytes: count,
                                 type: type, inPlaceOffset: -root * count)
            try collective("scatter", CallArguments(collective: .scatter, count: count, type: type, root: root)) { (ctx) throws(CCLError) in
                guard count > 0, let recv else { return try Barrier.zeroCount(ctx) }
                try Collectives.scatter(ctx, send: self.rank == root ? send : nil, recv: recv, bytes: count * type.size, root: root)
            }
        }
    }

    /// Point-to-point: sends and receives between one pair match in call order. A send blocks until the
    /// message is handed to the transport and, above the eager size, until the peer has posted the
    /// receive — so two ranks that both send large messages to each other first must use `sendRecv`.
    public func send(_ buffer: UnsafeRawPointer?, count: Int, type: DataType, to peer: Int) throws(CCLError) {
        try sendRecv(send: buffer, count: count, type: type, to: peer, recv: nil, recvCount: 0, from: -1)
    }

    public func recv(_ buffer: UnsafeMutableRawPointer?, count: Int, type: DataType, from peer: Int) throws(CCLError) {
        try sendRecv(send: nil, count: 0, type: type, to: -1, recv: buffer, recvCount: count, from: peer)
    }

    /// A send and a receive that progress together (a ring shift cannot deadlock). `to`/`from` of -1
    /// leave that half out.
    public func sendRecv(send: UnsafeRawPointer?, count: Int, type: DataType, to: Int,
                         recv: UnsafeMutableRawPointer?, recvCount: Int, from: Int) throws(CCLError) {
        try run(to >= 0 && from >= 0 ? "sendrecv" : to >= 0 ? "send" : "recv") { () throws(CCLError) in
            if to >= 0 {
                guard to < size else { throw CCLError.invalidArgument("peer \(to) is out of range [0, \(size))") }
                try Validate.buffers(send: send, sendBytes: count, recv: nil, recvBytes: 0, type: type, inPlaceOffset: nil)
            }
            if from >= 0 {
                guard from < size else { throw CCLError.invalidArgument("peer \(from) is out of range [0, \(size))") }
                try Validate.buffers(send: nil, sendBytes: 0, recv: recv, recvBytes: recvCount, type: type, inPlaceOffset: nil)
            }
            guard to >= -1, from >= -1 else { throw CCLError.invalidArgument("peer must be in [0, \(size))") }
            if Group.isActive {
                // Recorded now, posted together with the rest of the group at its end.
                let sb = to >= 0 ? UnsafeRawBufferPointer(start: send, count: count * type.size) : nil
                let rb = from >= 0 ? UnsafeMutableRawBufferPointer(start: recv, count: recvCount * type.size) : nil
                try Group.record(self, Group.PointToPoint(send: sb, to: to, recv: rb, from: from))
                return
            }
            // Outside a group a transfer with oneself needs both halves in this call; refused before
            // anything is posted, so the communicator stays usable.
            if (to == rank) != (from == rank) {
                throw CCLError.invalidUsage("a send to or receive from oneself needs the matching other half in the same call (sendRecv) or group")
            }
            let opName = to >= 0 && from >= 0 ? "sendrecv" : to >= 0 ? "send" : "recv"
            let transfer = { [self] () throws(CCLError) -> Void in
                let number = nextPointToPoint()
                var pending: [(Request, Int)] = []
                // A zero-count message is still a message (it keeps the pair's call order), NULL or not.
                if from >= 0 && from != rank {
                    let tag = p2pTag(from, sending: false)
                    pending.append((try transport.irecv(from: from, tag: tag, into: UnsafeMutableRawBufferPointer(start: recv, count: recvCount * type.size)), from))
                }
                if to >= 0 && to != rank {
                    let tag = p2pTag(to, sending: true)
                    pending.append((try transport.isend(to: to, tag: tag, UnsafeRawBufferPointer(start: send, count: count * type.size)), to))
                }
                if to == rank && from == rank {
                    guard count == recvCount else { throw CCLError.invalidArgument("send to self of \(count) elements but receive of \(recvCount)") }
                    if let send, let recv, count > 0, UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: count * type.size) }
                }
                try waitPointToPoint(pending, operation: opName, number: number)
            }
            if let stream = ExecutionStream.current {
                try enqueue(on: stream, "sendrecv") { () throws(CCLError) in
                    do throws(CCLError) { try transfer() } catch { throw error.breaking }
                }
                return
            }
            do throws(CCLError) { try transfer() } catch { throw error.breaking }
        }
    }

    /// Point-to-point tags: bit 62 set, then a per-pair, per-direction message counter.
    func p2pTag(_ peer: Int, sending: Bool) -> UInt64 {
        let n = p2pCounters.withLock { c -> UInt64 in
            let k = peer * 2 + (sending ? 0 : 1)
            if c.isEmpty { c = Array(repeating: 0, count: size * 2) }
            c[k] &+= 1
            return c[k]
        }
        return (1 << 62) | (n & 0x3fff_ffff_ffff_ffff)
    }
}

/// Argument checks shared by every collective.
enum Validate {
    static func buffers(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType) throws(CCLError) {
        try buffers(send: send, sendBytes: count, recv: recv, recvBytes: count, type: type, inPlaceOffset: 0)
    }

    /// Checks counts (in elements) and pointers; `inPlaceOffset` is the element offset of `send`
    /// relative to `recv` at which the two may coincide (nil: no in-place form). Any other overlap is
    /// an error.
    static func buffers(send: UnsafeRawPointer?, sendBytes sendCount: Int, recv: UnsafeMutableRawPointer?, recvBytes recvCount: Int,
                        type: DataType, inPlaceOffset: Int?) throws(CCLError) {
        guard sendCount >= 0, recvCount >= 0 else { throw CCLError.invalidArgument("count \(min(sendCount, recvCount)) is negative") }
        let (sb, o1) = sendCount.multipliedReportingOverflow(by: type.size)
        let (rb, o2) = recvCount.multipliedReportingOverflow(by: type.size)
        guard !o1, !o2, sb < Int(Int64.max / 4), rb < Int(Int64.max / 4) else {
            throw CCLError.invalidArgument("count of \(type) is too large")
        }
        guard sendCount == 0 || send != nil else { throw CCLError.invalidArgument("sendbuff is NULL") }
        guard recvCount == 0 || recv != nil else { throw CCLError.invalidArgument("recvbuff is NULL") }
        guard let s = send, let r = recv, sb > 0, rb > 0 else { return }
        let a = UInt(bitPattern: s), b = UInt(bitPattern: UnsafeRawPointer(r))
        if let off = inPlaceOffset, Int(bitPattern: a) &- Int(bitPattern: b) == off * type.size { return }
        if a < b &+ UInt(rb) && b < a &+ UInt(sb) {
            throw CCLError.invalidArgument(inPlaceOffset == nil ? "sendbuff and recvbuff overlap (this operation has no in-place form)"
                                                                  : "sendbuff and recvbuff overlap other than in the in-place layout")
        }
    }
}

/// A pre-multiplied sum (NCCL's `ncclRedOpCreatePreMulSum`): each rank's input is multiplied by a
/// scalar of the collective's type before the sum, e.g. to average gradients with a scale factor.
/// The scalar is either copied now or read from memory at every operation.
public struct PreMulSum: @unchecked Sendable {
    public let type: DataType
    private let immediate: [UInt8]
    private let pointer: UnsafeRawPointer?

    /// The scalar's bytes (one element of `type`) copied now.
    public init(type: DataType, scalarBytes: UnsafeRawPointer) {
        self.type = type
        immediate = Array(UnsafeRawBufferPointer(start: scalarBytes, count: type.size))
        pointer = nil
    }

    /// The scalar read from `scalarAt` each time an operation uses it.
    public init(type: DataType, readingScalarAt scalarAt: UnsafeRawPointer) {
        self.type = type
        immediate = []
        pointer = scalarAt
    }

    public static func of(_ value: Float) -> PreMulSum { withUnsafeBytes(of: value) { PreMulSum(type: .float32, scalarBytes: $0.baseAddress!) } }
    public static func of(_ value: Double) -> PreMulSum { withUnsafeBytes(of: value) { PreMulSum(type: .float64, scalarBytes: $0.baseAddress!) } }

    func check(_ t: DataType) throws(CCLError) {
        guard t == type else { throw CCLError.invalidArgument("the pre-multiplied sum was made for \(type), not \(t)") }
    }

    /// dst = src × scalar, in the type's own arithmetic (`dst` may be `src`).
    func scale(into dst: UnsafeMutableRawPointer, from src: UnsafeRawPointer, count: Int) {
        let es = type.size
        let chunk = 4096
        let pattern = UnsafeMutableRawPointer.allocate(byteCount: chunk * es, alignment: 64)
        defer { pattern.deallocate() }
        for i in 0..<chunk {
            if let p = pointer { (pattern + i * es).copyMemory(from: p, byteCount: es) }
            else { immediate.withUnsafeBytes { (pattern + i * es).copyMemory(from: $0.baseAddress!, byteCount: es) } }
        }
        let mul = Reduction.kernel(type, .prod)
        var off = 0
        while off < count {
            let n = min(chunk, count - off)
            mul(dst + off * es, src + off * es, pattern, n)
            off += n
        }
    }
}
