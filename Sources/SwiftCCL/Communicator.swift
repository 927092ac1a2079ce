import Glibc
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms
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
    let wakeFD: Int32
    let state = Mutex<State>(State())
    /// Serialises collectives issued on this communicator from several threads.
    let opLock = Lock()
    /// The process that made this communicator: in a forked child it is the parent's, so using it is an
    /// error and tearing it down touches nothing the parent shares (sockets, shared memory).
    package let owner = ProcessOwner()
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
    init(id: UniqueID, rank: Int, size: Int, config: CommConfig, source: String?,
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

    // MARK: queries

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
    package func noteLastError(_ text: String) { state.withLock { $0.lastError = text } }
}
