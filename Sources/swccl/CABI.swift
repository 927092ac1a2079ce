// The C ABI of include/swccl.h: a thin layer over the Swift API. Every function validates its inputs,
// never traps, and turns a `CCLError` into a result code plus a one-line message for swcclGetLastError.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

// MARK: - handles and last errors

/// What a `swcclComm_t` points to. Handles are tracked so that a destroyed or foreign pointer is
/// answered with an error instead of a crash wherever that can be detected.
final class CommHandle: @unchecked Sendable {
    /// The communicator; for a handle made while its communicator is still being set up (a
    /// nonblocking init, or an init inside a group), written once before `setup` says `.ready` and
    /// read only after a look at `setup` (`handle(_:operation:)` does it), or when `pending` is false.
    private var storage: Communicator?
    var comm: Communicator { storage! }
    /// Whether the handle was made before its communicator (only then is `setup` consulted).
    let pending: Bool
    /// `swcclConfig_t.blocking == 0`: operations without a stream and set-up calls return
    /// swcclInProgress and run in the background.
    let nonblocking: Bool
    enum Setup { case running, ready, failed(CCLError) }
    /// The set-up of a pending handle; `abandoned`: destroyed or aborted before it finished.
    private let setup = Mutex<(phase: Setup, abandoned: Bool)>((.ready, false))
    /// Runs a nonblocking communicator's operations called without a stream, in order (made at the
    /// first such call).
    private let queue = Mutex<ExecutionStream?>(nil)
    /// The communicator's last error as handed out by swcclGetLastError: its text and the address of a
    /// malloc'd copy (an integer, so that the mutex holds a Sendable value), renewed when the text changes.
    let lastError = Mutex<(text: String, c: UInt)>(("", 0))
    /// Reduction operators made at run time for this communicator (`swcclRedOpCreatePreMulSum`).
    let ops = Mutex<(next: Int32, table: [Int32: PreMulSum])>((5, [:]))
    init(_ comm: Communicator, nonblocking: Bool = false) {
        storage = comm
        pending = false
        self.nonblocking = nonblocking
    }
    /// A handle whose communicator `finish` will deliver.
    init(pendingNonblocking nonblocking: Bool) {
        pending = true
        self.nonblocking = nonblocking
        setup.withLock { $0.phase = .running }
    }
    deinit { lastError.withLock { free(UnsafeMutableRawPointer(bitPattern: $0.c)) } }

    /// Delivers the set-up's outcome; a communicator whose handle was abandoned meanwhile is aborted.
    func finish(_ outcome: Result<Communicator, CCLError>) {
        let abandoned = setup.withLock { s -> Bool in
            switch outcome {
            case .success(let c): storage = c; s.phase = .ready
            case .failure(let e): s.phase = .failed(e)
            }
            return s.abandoned
        }
        if case .failure(let e) = outcome { noteError(e.description) }
        if abandoned, case .success(let c) = outcome { c.abort() }
    }

    /// nil once the communicator is usable; else why not: its set-up is still running (NCCL's answer:
    /// invalid argument) or failed (that error).
    var unready: CCLError? {
        guard pending else { return nil }
        switch setup.withLock({ $0.phase }) {
        case .ready: return nil
        case .failed(let e): return e
        case .running:
            return CCLError.invalidArgument("the communicator's set-up is still in progress (it returned swcclInProgress): poll swcclCommGetAsyncError until it returns swcclSuccess before any other call on it")
        }
    }

    /// Whether the set-up is still running.
    var settingUp: Bool {
        guard pending else { return false }
        if case .running = setup.withLock({ $0.phase }) { return true }
        return false
    }

    /// Marks a pending handle abandoned (destroy, abort): a set-up finishing later aborts its
    /// communicator. Returns the communicator if the set-up succeeded already.
    func abandon() -> Communicator? {
        setup.withLock { s -> Communicator? in
            s.abandoned = true
            if case .ready = s.phase { return storage }
            return nil
        }
    }

    /// Waits until a pending set-up finished (each set-up is bounded by its timeout). Rare (a
    /// destroy racing a set-up): polls every millisecond.
    func waitForSetup() {
        while settingUp { usleep(1000) }
    }

    /// The queue of a nonblocking communicator's operations without a stream.
    func backgroundQueue() throws(CCLError) -> ExecutionStream {
        try queue.withLock { q throws(CCLError) -> ExecutionStream in
            if let q { return q }
            let s = try ExecutionStream()
            s.reportsInProgress = true
            q = s
            return s
        }
    }

    /// nil while background work is queued; else its first error, or success.
    var backgroundState: Result<Void, CCLError>? {
        guard let q = queue.withLock({ $0 }) else { return .success(()) }
        return q.query()
    }

    /// Finishes the background work (blocking, bounded by the operations' deadlines) and stops its
    /// thread; returns its error not yet reported.
    func drainBackground() -> CCLError? {
        guard let q = queue.withLock({ q -> ExecutionStream? in defer { q = nil }; return q }) else { return nil }
        do throws(CCLError) { try q.destroy(); return nil } catch { return error }
    }

    /// Records an error text for a handle that has no communicator (a failed set-up).
    private let setupError = Mutex<String>("")
    func noteError(_ text: String) { setupError.withLock { $0 = text } }
    var setupErrorText: String { setupError.withLock { $0 } }
}

/// Handles given to C: not addresses but tagged numbers — a kind tag, the slot of a table and the
/// slot's generation — so that a destroyed handle stays refused even when a new object takes its slot
/// (or, with addresses, its memory), and a stream passed as a communicator is recognised as such.
/// The values are never dereferenced; C sees an opaque non-NULL pointer.
final class HandleTable<Object: AnyObject>: Sendable {
    private struct Slots: @unchecked Sendable {  // guarded by the mutex
        var objects: [Object?] = []
        var generations: [UInt32] = []
        var free: [Int] = []
    }
    private let slots = Mutex<Slots>(Slots())
    private let tag: UInt

    /// `tag`: 16 bits that mark the kind of handle in its top bits.
    init(tag: UInt16) { self.tag = UInt(tag) << 48 }

    private static var slotBits: Int { 24 }

    private func encode(_ slot: Int, _ generation: UInt32) -> OpaquePointer {
        OpaquePointer(bitPattern: tag | UInt(generation & 0xff_ffff) << 24 | UInt(slot))!
    }

    private func decode(_ p: OpaquePointer) -> (slot: Int, generation: UInt32)? {
        let v = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(p)))
        guard v >> 48 == tag >> 48 else { return nil }
        return (Int(v & 0xff_ffff), UInt32((v >> 24) & 0xff_ffff))
    }

    func register(_ object: Object) -> OpaquePointer {
        slots.withLock { t in
            // Reuse a slot only once many are free, the oldest first: a stale handle meets its slot's
            // next generation as late as possible (and is refused even then).
            let slot: Int
            if t.free.count > 64 || t.objects.count >= 1 << HandleTable.slotBits {
                slot = t.free.removeFirst()
            } else {
                slot = t.objects.count
                t.objects.append(nil)
                t.generations.append(0)
            }
            t.generations[slot] = (t.generations[slot] &+ 1) & 0xff_ffff
            if t.generations[slot] == 0 { t.generations[slot] = 1 }
            t.objects[slot] = object
            return encode(slot, t.generations[slot])
        }
    }

    func lookup(_ p: OpaquePointer?) -> Object? {
        guard let p, let (slot, generation) = decode(p) else { return nil }
        return slots.withLock { t -> Object? in
            guard slot < t.objects.count, t.generations[slot] == generation else { return nil }
            return t.objects[slot]
        }
    }

    /// Removes the handle and returns its object (nil: not a live handle, or `belongs` refused it —
    /// checked under the table's lock, so two threads cannot both remove one handle).
    func unregister(_ p: OpaquePointer?, if belongs: (Object) -> Bool = { _ in true }) -> Object? {
        guard let p, let (slot, generation) = decode(p) else { return nil }
        return slots.withLock { t -> Object? in
            guard slot < t.objects.count, t.generations[slot] == generation, let o = t.objects[slot], belongs(o) else { return nil }
            t.objects[slot] = nil
            t.free.append(slot)
            return o
        }
    }
}

enum Handles {
    static let comms = HandleTable<CommHandle>(tag: 0x5343)  // "SC"
    static func register(_ h: CommHandle) -> OpaquePointer { comms.register(h) }
    static func lookup(_ comm: OpaquePointer?) -> CommHandle? { comms.lookup(comm) }
    static func unregister(_ comm: OpaquePointer?) -> CommHandle? { comms.unregister(comm) }

    /// Last error of each thread (for calls without a communicator): a malloc'd C string in a
    /// thread-specific slot, freed by the key's destructor when the thread exits — so it neither
    /// leaks nor passes to a later thread that gets the same thread id.
    nonisolated(unsafe) private static var threadErrorKey: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in free(p) }
        return k
    }()

    static func setThreadError(_ text: String) {
        let old = pthread_getspecific(threadErrorKey)
        pthread_setspecific(threadErrorKey, strdup(text))
        free(old)
    }

    static func threadError() -> UnsafePointer<CChar>? {
        pthread_getspecific(threadErrorKey).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
    }
}

extension CommHandle {
    /// The communicator's last error (of a call, of an operation run by a stream or a group, or the
    /// failure that broke it) as a C string that stays valid until the text changes; nil if none.
    func lastErrorCString() -> UnsafePointer<CChar>? {
        lastError.withLock { v -> UnsafePointer<CChar>? in
            // Read under this lock: two readers must not replace a newer copy by an older text.
            let text = pending && unready != nil ? setupErrorText : comm.lastError
            guard !text.isEmpty else { return nil }
            if v.text != text || v.c == 0 {
                free(UnsafeMutableRawPointer(bitPattern: v.c))
                v = (text, UInt(bitPattern: strdup(text)))
            }
            return UnsafePointer(bitPattern: v.c)
        }
    }
}

func result(_ kind: CCLError.Kind) -> swcclResult_t {
    switch kind {
    case .systemError: return swcclSystemError
    case .internalError: return swcclInternalError
    case .invalidArgument: return swcclInvalidArgument
    case .invalidUsage: return swcclInvalidUsage
    case .remoteError: return swcclRemoteError
    case .timeout: return swcclTimeout
    }
}

/// Records `error` (on the communicator if there is one, and for this thread) and returns its code.
func report(_ error: CCLError, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    let e = error.with(operation: operation, rank: handle?.comm.rank, communicator: handle?.comm.name)
    let text = e.description
    handle?.comm.noteLastError(text)
    Handles.setThreadError(text)
    Log.info(.api, text)
    return result(e.kind)
}

/// The same, for a `do` block inside a closure (there the caught error is untyped; it is a CCLError).
func report(_ error: any Error, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    report(error as? CCLError ?? CCLError(.internalError, "\(error)"), handle, operation: operation)
}

func invalid(_ message: String, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    report(CCLError.invalidArgument(message), handle, operation: operation)
}

func dataType(_ t: swcclDataType_t) -> DataType? { DataType(rawValue: Int32(bitPattern: t.rawValue)) }
func reduceOp(_ o: swcclRedOp_t) -> ReduceOp? { ReduceOp(rawValue: Int32(bitPattern: o.rawValue)) }

/// What a swcclConfig_t says: the communicator's settings, and whether calls on it block (nil: not
/// set, so the default — or, for a split, the parent's).
struct Options {
    var config = CommConfig()
    var blocking: Bool?
}

/// The configuration a caller passed, checked for SWCCL_CONFIG_INITIALIZER. Only the fields that
/// lie within the caller's `size` are read: a struct compiled against an older header is shorter.
func readOptions(_ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> Result<Options, CCLError> {
    guard let config else { return .success(Options()) }
    let size = config.pointee.size
    guard config.pointee.magic == SWCCL_CONFIG_MAGIC, size >= 16, size <= 4096 else {
        return .failure(.invalidArgument("the config struct was not initialised with SWCCL_CONFIG_INITIALIZER (bad size or magic)"))
    }
    func has<T>(_ field: KeyPath<swcclConfig_t, T>) -> Bool {
        size >= MemoryLayout<swcclConfig_t>.offset(of: field)! + MemoryLayout<T>.size
    }
    let undef = CInt.min  // SWCCL_CONFIG_UNDEF_INT (Swift does not import that macro)
    var o = Options()
    let c = config.pointee
    if has(\.timeoutMs) { o.config.timeoutMs = Int(c.timeoutMs) > 0 ? Int(c.timeoutMs) : nil }
    if has(\.transports), let t = c.transports { o.config.transports = String(cString: t) }
    if has(\.commName), let n = c.commName { o.config.name = String(cString: n) }
    if has(\.blocking), c.blocking != undef {
        guard c.blocking == 0 || c.blocking == 1 else {
            return .failure(.invalidArgument("config.blocking is \(c.blocking): 1 (calls block, the default) or 0 (nonblocking: swcclInProgress, then poll swcclCommGetAsyncError)"))
        }
        o.blocking = c.blocking == 1
    }
    // cgaClusterSize, minCTAs, maxCTAs: CUDA launch settings, meaningless on host memory (accepted).
    if has(\.netName), let p = c.netName {
        let name = String(cString: p)
        let t: String
        switch name.lowercased() {
        case "socket", "tcp": t = "shm,tcp"
        case "ib", "verbs": t = "shm,ib"
        default:
            return .failure(.invalidArgument("config.netName \"\(name)\" is not a network here: \"Socket\" (TCP between hosts) or \"IB\" (RDMA verbs between hosts); ranks on one host use shared memory either way"))
        }
        if let given = o.config.transports {
            return .failure(.invalidArgument("config.netName \"\(name)\" and config.transports \"\(given)\" are both set: set one (netName \"\(name)\" means transports \"\(t)\")"))
        }
        o.config.transports = t
    }
    if has(\.splitShare), c.splitShare != undef {
        guard c.splitShare == 0 || c.splitShare == 1 else {
            return .failure(.invalidArgument("config.splitShare is \(c.splitShare): 0 or 1"))
        }
        // Accepted: a split communicator always has connections of its own here (nothing to share).
    }
    return .success(o)
}

/// The settings alone (callers that have no use for `blocking`).
func readConfig(_ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> Result<CommConfig, CCLError> {
    readOptions(config, operation: operation).map(\.config)
}

// MARK: - errors and version

@c @implementation
public func swcclGetErrorString(_ r: swcclResult_t) -> UnsafePointer<CChar>! {
    let s: StaticString
    switch r.rawValue {
    case swcclSuccess.rawValue: s = "no error"
    case swcclSystemError.rawValue: s = "unhandled system error (network, sockets or memory); the communicator is broken"
    case swcclInternalError.rawValue: s = "internal error in SwiftCCL; the communicator is broken"
    case swcclInvalidArgument.rawValue: s = "invalid argument"
    case swcclInvalidUsage.rawValue: s = "invalid usage"
    case swcclRemoteError.rawValue: s = "remote process exited or there was a network error; the communicator is broken"
    case swcclInProgress.rawValue: s = "operation in progress"
    case swcclTimeout.rawValue: s = "timeout: a blocking step exceeded the communicator's deadline; the communicator is broken"
    default: s = "unknown result code"
    }
    return UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

@c @implementation
public func swcclGetLastError(_ comm: swcclComm_t?) -> UnsafePointer<CChar>! {
    ForkSafety.run { () -> UnsafePointer<CChar>? in
        let empty: StaticString = ""
        let none = UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self)
        // A live communicator answers for itself only; NULL or a handle that is no longer live: the
        // calling thread's last error (which says why that handle was refused).
        // A forked child's inherited communicator: the refusal was recorded for the calling thread.
        if let h = Handles.lookup(comm), h.unready != nil { return h.lastErrorCString() ?? none }
        if let h = Handles.lookup(comm), !h.comm.owner.isInherited { return h.lastErrorCString() ?? none }
        return Handles.threadError() ?? none
    }
}

@c @implementation
public func swcclGetVersion(_ version: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let version else { return invalid("version is NULL", operation: "swcclGetVersion") }
        version.pointee = CInt(SwiftCCLVersion.code)
        return swcclSuccess
    }
}

// MARK: - communicators

@c @implementation
public func swcclGetUniqueId(_ uniqueId: UnsafeMutablePointer<swcclUniqueId>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let uniqueId else { return invalid("uniqueId is NULL", operation: "swcclGetUniqueId") }
        do {
            let id = try UniqueID.make()
            withUnsafeMutableBytes(of: &uniqueId.pointee) { dst in
                dst.copyBytes(from: id.bytes)
            }
            return swcclSuccess
        } catch {
            return report(error, operation: "swcclGetUniqueId")
        }
    }
}

/// Makes a communicator for `out`: at once (blocking, outside a group); recorded and run at the
/// outermost swcclGroupEnd (inside a group: NCCL's one thread initialising several ranks); or in the
/// background (nonblocking: swcclInProgress at once, swcclCommGetAsyncError says when it is done).
/// A handle is given out at once in the last two cases; it is refused by other calls until ready.
func setUp(_ out: UnsafeMutablePointer<swcclComm_t?>, nonblocking: Bool, operation: String,
           _ make: @escaping @Sendable () throws(CCLError) -> Communicator) -> swcclResult_t {
    if !nonblocking && !Group.isActive {
        do {
            out.pointee = Handles.register(CommHandle(try make()))
            return swcclSuccess
        } catch {
            return report(error, operation: operation)
        }
    }
    let h = CommHandle(pendingNonblocking: nonblocking)
    out.pointee = Handles.register(h)
    let job: @Sendable () -> CCLError? = {
        switch catching(make) {
        case .success(let c): h.finish(.success(c)); return nil
        case .failure(let e):
            let e = e.with(operation: operation)
            h.finish(.failure(e))
            Handles.setThreadError(e.description)
            Log.info(.api, e.description)
            return e
        }
    }
    if Group.isActive {
        Group.recordJob(waits: !nonblocking, job)
        return swcclSuccess
    }
    do {
        try BackgroundThread.start { _ = job() }
    } catch {
        h.finish(.failure(error))
        return report(error, operation: operation)
    }
    return swcclInProgress
}

func initRank(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt,
              _ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> swcclResult_t {
    guard let comm else { return invalid("comm is NULL", operation: operation) }
    comm.pointee = nil
    guard nranks >= 1 else { return invalid("nranks \(nranks) must be at least 1", operation: operation) }
    guard rank >= 0, rank < nranks else { return invalid("rank \(rank) is out of range [0, \(nranks))", operation: operation) }
    let o: Options
    switch readOptions(config, operation: operation) {
    case .success(let v): o = v
    case .failure(let e): return report(e, operation: operation)
    }
    let bytes = withUnsafeBytes(of: commId) { Array($0) }
    let id: UniqueID
    do { id = try UniqueID(bytes: bytes) } catch { return report(error, operation: operation) }
    let cfg = o.config
    return setUp(comm, nonblocking: o.blocking == false, operation: operation) { () throws(CCLError) -> Communicator in
        try Communicator(id: id, rank: Int(rank), size: Int(nranks), config: cfg)
    }
}

@c @implementation
public func swcclCommInitRank(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        initRank(comm, nranks, commId, rank, nil, operation: "swcclCommInitRank")
    }
}

@c @implementation
public func swcclCommInitRankConfig(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt,
                                    _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        return initRank(comm, nranks, commId, rank, config, operation: "swcclCommInitRankConfig")
    }
}

@c @implementation
public func swcclCommInitAll(_ comms: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt,
                             _ devlist: UnsafePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommInitAll"
        guard let comms else { return invalid("comms is NULL", operation: op) }
        guard nranks >= 1 else { return invalid("nranks \(nranks) must be at least 1", operation: op) }
        for i in 0..<Int(nranks) { comms[i] = nil }
        // Devices mean nothing on host memory; a list given is still checked as NCCL would.
        if let devlist {
            var seen = Set<CInt>()
            for i in 0..<Int(nranks) {
                let d = devlist[i]
                guard d >= 0 else { return invalid("devlist[\(i)] = \(d) is negative", operation: op) }
                guard seen.insert(d).inserted else {
                    return invalid("devlist[\(i)] = \(d) is a duplicate (device \(d) is listed twice; the entries must be distinct)", operation: op)
                }
            }
        }
        do {
            let all = try Communicator.initAll(count: Int(nranks))
            for (i, c) in all.enumerated() { comms[i] = Handles.register(CommHandle(c)) }
            return swcclSuccess
        } catch {
            return report(error, operation: op)
        }
    }
}

@c @implementation
public func swcclCommSplit(_ comm: swcclComm_t?, _ color: CInt, _ key: CInt, _ newcomm: UnsafeMutablePointer<swcclComm_t?>?,
                           _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommSplit"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            guard let newcomm else { return invalid("newcomm is NULL", h, operation: op) }
            newcomm.pointee = nil
            var cfg: CommConfig?
            var nonblocking = h.nonblocking  // config NULL: the parent's
            if config != nil {
                switch readOptions(config, operation: op) {
                case .success(let o):
                    cfg = o.config
                    if let b = o.blocking { nonblocking = !b }
                case .failure(let e): return report(e, h, operation: op)
                }
            }
            guard nonblocking else {
                do {
                    if let c = try h.comm.split(color: Int(color), key: Int(key), config: cfg) {
                        newcomm.pointee = Handles.register(CommHandle(c))
                    }
                    return swcclSuccess
                } catch {
                    return report(error, h, operation: op)
                }
            }
            // Nonblocking: the split runs on the parent's background queue, after the parent's
            // operations already queued there; both the parent and the new handle are in progress
            // until it finished (swcclCommGetAsyncError on either says when).
            guard color >= -1 else { return invalid("color \(color) is negative (use SWCCL_SPLIT_NOCOLOR for none)", h, operation: op) }
            let child = color == -1 ? nil : CommHandle(pendingNonblocking: true)
            let parent = h.comm
            do {
                let q = try h.backgroundQueue()
                try q.enqueue({ () throws(CCLError) in
                    do throws(CCLError) {
                        let c = try parent.split(color: Int(color), key: Int(key), config: cfg)
                        if let child {
                            if let c { child.finish(.success(c)) }
                            else { child.finish(.failure(CCLError(.internalError, "split gave no communicator for color \(color)").with(operation: op))) }
                        }
                    } catch {
                        child?.finish(.failure(error.with(operation: op)))
                        throw error
                    }
                }, finally: {
                    // Skipped after an earlier failure on the queue: the new handle fails too.
                    if let child, child.settingUp {
                        child.finish(.failure(CCLError.invalidUsage("the split did not run: an earlier operation of the parent communicator failed in the background").with(operation: op)))
                    }
                })
            } catch {
                return report(error, h, operation: op)
            }
            if let child { newcomm.pointee = Handles.register(child) }
            return swcclInProgress
        }
    }
}

@c @implementation
public func swcclCommShrink(_ comm: swcclComm_t?, _ excludeRanksList: UnsafeMutablePointer<CInt>?, _ excludeRanksCount: CInt,
                            _ newcomm: UnsafeMutablePointer<swcclComm_t?>?, _ config: UnsafeMutablePointer<swcclConfig_t>?,
                            _ shrinkFlags: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommShrink"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            guard let newcomm else { return invalid("newcomm is NULL", h, operation: op) }
            newcomm.pointee = nil
            guard excludeRanksCount >= 0 else { return invalid("excludeRanksCount \(excludeRanksCount) is negative", h, operation: op) }
            guard excludeRanksCount == 0 || excludeRanksList != nil else { return invalid("excludeRanksList is NULL with \(excludeRanksCount) ranks", h, operation: op) }
            guard shrinkFlags == 0 || shrinkFlags == 1 else { return invalid("shrinkFlags \(shrinkFlags) is neither SWCCL_SHRINK_DEFAULT nor SWCCL_SHRINK_ABORT", h, operation: op) }
            var cfg: CommConfig?
            var nonblocking = h.nonblocking  // of the new communicator; the shrink itself blocks
            if config != nil {
                switch readOptions(config, operation: op) {
                case .success(let o):
                    cfg = o.config
                    if let b = o.blocking { nonblocking = !b }
                case .failure(let e): return report(e, h, operation: op)
                }
            }
            let excluded = (0..<Int(excludeRanksCount)).map { Int(excludeRanksList![$0]) }
            do {
                if shrinkFlags == 1 { h.comm.abort() }
                _ = h.drainBackground()  // queued work of the parent ends (aborted, or completes) first
                let c = try h.comm.shrink(excluding: excluded, abortingInFlight: shrinkFlags == 1, config: cfg)
                newcomm.pointee = Handles.register(CommHandle(c, nonblocking: nonblocking))
                return swcclSuccess
            } catch {
                return report(error, h, operation: op)
            }
        }
    }
}

@c @implementation
public func swcclCommInitFromEnv(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommInitFromEnv"
        guard let comm else { return invalid("comm is NULL", operation: op) }
        comm.pointee = nil
        let o: Options
        switch readOptions(config, operation: op) {
        case .success(let v): o = v
        case .failure(let e): return report(e, operation: op)
        }
        let cfg = o.config
        return setUp(comm, nonblocking: o.blocking == false, operation: op) { () throws(CCLError) -> Communicator in
            try Communicator.fromEnvironment(config: cfg)
        }
    }
}

func handle(_ comm: swcclComm_t?, operation: String) -> Result<CommHandle, CCLError> {
    guard let comm else { return .failure(.invalidArgument("comm is NULL")) }
    guard let h = Handles.lookup(comm) else {
        return .failure(.invalidUsage("comm \(comm) is not a live communicator (destroyed already?)"))
    }
    if h.pending, let e = h.unready { return .failure(e) }
    if h.comm.owner.isInherited { return .failure(h.comm.owner.inheritedError("communicator \(h.comm.name)")) }
    return .success(h)
}

@c @implementation
public func swcclCommCount(_ comm: swcclComm_t?, _ count: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommCount"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            guard let count else { return invalid("count is NULL", h, operation: op) }
            count.pointee = CInt(h.comm.size)
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommUserRank(_ comm: swcclComm_t?, _ rank: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommUserRank"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            guard let rank else { return invalid("rank is NULL", h, operation: op) }
            rank.pointee = CInt(h.comm.rank)
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommFinalize(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommFinalize"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            if h.nonblocking {
                // After the operations queued in the background; swcclCommGetAsyncError says when done.
                let c = h.comm
                do {
                    try h.backgroundQueue().enqueue({ () throws(CCLError) in try c.finalize() })
                } catch {
                    return report(error, h, operation: op)
                }
                return swcclInProgress
            }
            do throws(CCLError) { try h.comm.finalize() } catch { return report(error, h, operation: op) }
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommDestroy(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommDestroy"
        guard let comm else { return swcclSuccess }  // as NCCL: destroying NULL does nothing
        guard let h = Handles.unregister(comm) else {
            return report(.invalidUsage("comm \(comm) is not a live communicator (destroyed twice?)"), operation: op)
        }
        if h.pending {
            h.waitForSetup()  // bounded by the set-up's timeout
            if h.unready != nil { return swcclSuccess }  // its set-up failed: nothing to free
        }
        // In a forked child (Python's multiprocessing, a DataLoader worker exiting) the communicator is
        // the parent's: forget the handle, touch nothing the parent shares.
        if h.comm.owner.isInherited {
            Log.info(.api, "\(op): communicator \(h.comm.name) belongs to the parent process; this forked child only forgets it")
            return swcclSuccess
        }
        // Finalize first unless the caller did (its stream operations complete); its error, if any, is
        // returned, and the communicator is freed either way.
        var failure: CCLError?
        if let e = h.drainBackground(), !h.comm.isFinalized { Log.info(.api, "\(op): background work of the communicator had failed: \(e)") }
        do throws(CCLError) { try h.comm.finalize() } catch { if error.kind != .invalidUsage { failure = error } }
        h.comm.destroy()
        if let failure { return report(failure, operation: op) }
        return swcclSuccess
    }
}

@c @implementation
public func swcclCommAbort(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommAbort"
        guard let comm else { return swcclSuccess }  // as NCCL: aborting NULL does nothing
        // Abort wakes any call blocked on this communicator; the handle stays valid until destroy... NCCL's
        // abort also frees the communicator, so do both: wake, then release our reference.
        guard let h = Handles.unregister(comm) else {
            return report(.invalidUsage("comm \(comm) is not a live communicator (destroyed already?)"), operation: op)
        }
        if h.pending {
            // A set-up still running aborts its communicator when it finishes.
            guard let c = h.abandon() else { return swcclSuccess }
            c.abort()
        } else {
            h.comm.abort()
        }
        _ = h.drainBackground()  // queued operations fail at once now
        return swcclSuccess
    }
}

@c @implementation
public func swcclCommGetAsyncError(_ comm: swcclComm_t?, _ asyncError: UnsafeMutablePointer<swcclResult_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommGetAsyncError"
        guard let comm else { return invalid("comm is NULL", operation: op) }
        guard let h = Handles.lookup(comm) else {
            return report(.invalidUsage("comm \(comm) is not a live communicator (destroyed already?)"), operation: op)
        }
        guard let asyncError else { return invalid("asyncError is NULL", operation: op) }
        // Its set-up first (running: in progress; failed: that error), then work queued in the
        // background (nonblocking), then the error that broke it.
        if h.pending, let e = h.unready {
            asyncError.pointee = h.settingUp ? swcclInProgress : result(e.kind)
            return swcclSuccess
        }
        if h.comm.owner.isInherited { return report(h.comm.owner.inheritedError("communicator \(h.comm.name)"), operation: op) }
        switch h.backgroundState {
        case nil: asyncError.pointee = swcclInProgress
        case .failure(let e)?: asyncError.pointee = result(e.kind)
        case .success?: asyncError.pointee = h.comm.asyncError.map { result($0.kind) } ?? swcclSuccess
        }
        return swcclSuccess
    }
}

// MARK: - collectives

/// The shared shape of every collective entry point: look up the communicator, convert the type and
/// (optionally) the op, refuse streams for now, run `body`, turn errors into result codes.
func collectiveCall(_ name: String, _ comm: swcclComm_t?, _ datatype: swcclDataType_t, _ op: swcclRedOp_t?, _ stream: swcclStream_t?,
                    _ body: (Communicator, DataType, ReduceOp, PreMulSum?) throws(CCLError) -> Void) -> swcclResult_t {
    switch handle(comm, operation: name) {
    case .failure(let e): return report(e, operation: name)
    case .success(let h):
        guard let type = dataType(datatype) else { return invalid("unknown datatype \(datatype.rawValue)", h, operation: name) }
        var rop = ReduceOp.sum
        var pre: PreMulSum?
        if let op {
            if let o = reduceOp(op) {
                rop = o
            } else if let p = h.ops.withLock({ $0.table[Int32(bitPattern: op.rawValue)] }) {
                guard p.type == type else {
                    return invalid("reduction op \(op.rawValue) was made for \(p.type), not \(type)", h, operation: name)
                }
                pre = p
            } else {
                return invalid("unknown reduction op \(op.rawValue) (not built in, nor made by swcclRedOpCreatePreMulSum on this communicator)", h, operation: name)
            }
        }
        do {
            if let stream {
                // Checked now, enqueued on the stream; errors of the run come from swcclStreamSynchronize.
                guard let s = Streams.lookup(stream) else {
                    return report(.invalidUsage("stream \(stream) is not a live stream (destroyed already?)"), h, operation: name)
                }
                let comm = h.comm
                try s.submit { () throws(CCLError) in try body(comm, type, rop, pre) }
            } else if h.nonblocking {
                // Nonblocking communicator: checked now, run in the background in call order;
                // swcclCommGetAsyncError says when all is done (or the error). In a group, the group's
                // end enqueues it and says swcclInProgress.
                let comm = h.comm
                try h.backgroundQueue().submit { () throws(CCLError) in try body(comm, type, rop, pre) }
                return Group.isActive ? swcclSuccess : swcclInProgress
            } else {
                try body(h.comm, type, rop, pre)
            }
            return swcclSuccess
        } catch {
            return report(error, h, operation: name)
        }
    }
}

/// size_t counts arrive as Int; values that do not fit a sane range are rejected before any use.
func checked(_ count: Int) throws(CCLError) -> Int {
    guard count >= 0, count <= Int(Int32.max) * 256 else { throw CCLError.invalidArgument("count \(UInt(bitPattern: count)) is too large") }
    return count
}

@c @implementation
public func swcclAllReduce(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                           _ datatype: swcclDataType_t, _ op: swcclRedOp_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAllReduce", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.allReduce(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, op: o, preMulSum: p)
        }
    }
}

@c @implementation
public func swcclBroadcast(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                           _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBroadcast", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.broadcast(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclBcast(_ buff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ root: CInt,
                       _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBcast", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.broadcast(send: UnsafeRawPointer(buff), recv: buff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclReduce(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t,
                        _ op: swcclRedOp_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclReduce", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.reduce(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, op: o, root: Int(root), preMulSum: p)
        }
    }
}

@c @implementation
public func swcclAllGather(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ sendcount: Int,
                           _ datatype: swcclDataType_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAllGather", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.allGather(send: sendbuff, recv: recvbuff, sendCount: try checked(sendcount), type: t)
        }
    }
}

@c @implementation
public func swcclReduceScatter(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ recvcount: Int,
                               _ datatype: swcclDataType_t, _ op: swcclRedOp_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclReduceScatter", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.reduceScatter(send: sendbuff, recv: recvbuff, recvCount: try checked(recvcount), type: t, op: o, preMulSum: p)
        }
    }
}

@c @implementation
public func swcclAlltoAll(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                          _ datatype: swcclDataType_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAlltoAll", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.allToAll(send: sendbuff, recv: recvbuff, count: try checked(count), type: t)
        }
    }
}

@c @implementation
public func swcclGather(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                        _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclGather", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.gather(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclScatter(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                         _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclScatter", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.scatter(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclSend(_ sendbuff: UnsafeRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ peer: CInt,
                      _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclSend", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            guard peer >= 0 else { throw CCLError.invalidArgument("peer \(peer) is out of range") }
            try c.send(sendbuff, count: try checked(count), type: t, to: Int(peer))
        }
    }
}

@c @implementation
public func swcclRecv(_ recvbuff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ peer: CInt,
                      _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclRecv", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            guard peer >= 0 else { throw CCLError.invalidArgument("peer \(peer) is out of range") }
            try c.recv(recvbuff, count: try checked(count), type: t, from: Int(peer))
        }
    }
}

@c @implementation
public func swcclBarrier(_ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBarrier", comm, swcclUint8, nil, stream) { (c, _, _, _) throws(CCLError) in try c.barrier() }
    }
}

// MARK: - groups

@c @implementation
public func swcclGroupStart() -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        Group.start()
        return swcclSuccess
    }
}

@c @implementation
public func swcclGroupEnd() -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        do {
            // In progress: set-ups of nonblocking communicators, or operations of nonblocking
            // communicators called without a stream, continue in the background.
            return try Group.end() ? swcclInProgress : swcclSuccess
        } catch {
            return report(error, operation: "swcclGroupEnd")
        }
    }
}

// MARK: - streams

/// Live stream handles, as for communicators.
enum Streams {
    static let table = HandleTable<ExecutionStream>(tag: 0x5354)  // "ST"

    /// The stream behind a handle: `invalidArgument` for NULL, `invalidUsage` for a handle that is not
    /// (or no longer) a live stream — as for communicators — or one a forked child inherited (its
    /// thread is not in this process).
    static func checked(_ s: swcclStream_t?) -> Result<ExecutionStream, CCLError> {
        guard let s else { return .failure(.invalidArgument("stream is NULL")) }
        guard let live = lookup(s) else { return .failure(.invalidUsage("stream \(s) is not a live stream (destroyed already?)")) }
        if live.owner.isInherited { return .failure(live.owner.inheritedError("stream \(s)")) }
        return .success(live)
    }

    static func lookup(_ s: swcclStream_t?) -> ExecutionStream? { table.lookup(s) }
}

@c @implementation
public func swcclStreamCreate(_ stream: UnsafeMutablePointer<swcclStream_t?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let stream else { return invalid("stream is NULL", operation: "swcclStreamCreate") }
        do {
            stream.pointee = Streams.table.register(try ExecutionStream())
            return swcclSuccess
        } catch {
            return report(error, operation: "swcclStreamCreate")
        }
    }
}

@c @implementation
public func swcclStreamDestroy(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamDestroy"
        guard let stream else { return invalid("stream is NULL", operation: op) }
        guard let s = Streams.table.unregister(stream) else {
            return report(.invalidUsage("stream \(stream) is not a live stream (destroyed twice?)"), operation: op)
        }
        if s.owner.isInherited { return swcclSuccess }  // the parent's stream (its thread is not here): only forgotten
        do { try s.destroy(); return swcclSuccess } catch { return report(error, operation: op) }
    }
}

@c @implementation
public func swcclStreamSynchronize(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamSynchronize"
        switch Streams.checked(stream) {
        case .failure(let e): return report(e, operation: op)
        case .success(let s):
            do { try s.synchronize(); return swcclSuccess } catch { return report(error, operation: op) }
        }
    }
}

@c @implementation
public func swcclStreamQuery(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamQuery"
        switch Streams.checked(stream) {
        case .failure(let e): return report(e, operation: op)
        case .success(let s):
            switch s.query() {
            case nil: return swcclInProgress
            case .success?: return swcclSuccess
            case .failure(let e)?: return report(e, operation: op)
            }
        }
    }
}

// MARK: - events

/// Live event handles, as for streams (their own tag: an event passed as a stream, or a stream as an
/// event, is refused).
enum Events {
    static let table = HandleTable<StreamEvent>(tag: 0x5345)  // "SE"

    /// The event behind a handle: `invalidArgument` for NULL, `invalidUsage` for a handle that is not
    /// (or no longer) a live event, or one a forked child inherited.
    static func checked(_ e: swcclEvent_t?) -> Result<StreamEvent, CCLError> {
        guard let e else { return .failure(.invalidArgument("event is NULL")) }
        guard let live = table.lookup(e) else { return .failure(.invalidUsage("event \(e) is not a live event (destroyed already?)")) }
        if live.owner.isInherited { return .failure(live.owner.inheritedError("event \(e)")) }
        return .success(live)
    }

    /// A query's or wait's answer as a result code (an error is recorded for swcclGetLastError).
    static func answer(_ r: Result<Void, CCLError>?, operation: String) -> swcclResult_t {
        switch r {
        case nil: return swcclInProgress
        case .success?: return swcclSuccess
        case .failure(let e)?: return report(e, operation: operation)
        }
    }
}

@c @implementation
public func swcclEventCreate(_ event: UnsafeMutablePointer<swcclEvent_t?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let event else { return invalid("event is NULL", operation: "swcclEventCreate") }
        event.pointee = Events.table.register(StreamEvent())
        return swcclSuccess
    }
}

@c @implementation
public func swcclEventDestroy(_ event: swcclEvent_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventDestroy"
        guard let event else { return invalid("event is NULL", operation: op) }
        // A forked child's inherited event is only forgotten, like its inherited streams.
        guard Events.table.unregister(event) != nil else {
            return report(.invalidUsage("event \(event) is not a live event (destroyed twice?)"), operation: op)
        }
        return swcclSuccess
    }
}

@c @implementation
public func swcclEventRecord(_ event: swcclEvent_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventRecord"
        switch Events.checked(event) {
        case .failure(let e): return report(e, operation: op)
        case .success(let ev):
            guard let stream else { ev.record(on: nil); return swcclSuccess }
            switch Streams.checked(stream) {
            case .failure(let e): return report(e, operation: op)
            case .success(let s): ev.record(on: s); return swcclSuccess
            }
        }
    }
}

@c @implementation
public func swcclEventQuery(_ event: swcclEvent_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventQuery"
        switch Events.checked(event) {
        case .failure(let e): return report(e, operation: op)
        case .success(let ev): return Events.answer(ev.query(), operation: op)
        }
    }
}

@c @implementation
public func swcclEventWait(_ event: swcclEvent_t?, _ timeoutMs: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventWait"
        switch Events.checked(event) {
        case .failure(let e): return report(e, operation: op)
        case .success(let ev): return Events.answer(ev.wait(timeoutMs: timeoutMs < 0 ? nil : Int(timeoutMs)), operation: op)
        }
    }
}

// MARK: - memory registration

/// A registration handle: the region and the communicator it belongs to. C sees a tagged handle of
/// `Registrations.table`, like every other handle.
final class RegistrationHandle {
    let comm: CommHandle
    let region: MemoryRegion
    init(_ comm: CommHandle, _ region: MemoryRegion) { self.comm = comm; self.region = region }
}

enum Registrations {
    static let table = HandleTable<RegistrationHandle>(tag: 0x5352)  // "SR"
}

@c @implementation
public func swcclCommRegister(_ comm: swcclComm_t?, _ buff: UnsafeMutableRawPointer?, _ size: Int,
                              _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommRegister"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            guard let out else { return invalid("handle is NULL", h, operation: op) }
            guard let buff, size > 0 else { return invalid("buff is NULL or size is 0", h, operation: op) }
            do {
                let region = try h.comm.register(UnsafeMutableRawBufferPointer(start: buff, count: size))
                out.pointee = UnsafeMutableRawPointer(Registrations.table.register(RegistrationHandle(h, region)))
                return swcclSuccess
            } catch {
                return report(error, h, operation: op)
            }
        }
    }
}

@c @implementation
public func swcclCommDeregister(_ comm: swcclComm_t?, _ reg: UnsafeMutableRawPointer?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommDeregister"
        switch handle(comm, operation: op) {
        case .failure(let e): return report(e, operation: op)
        case .success(let h):
            // Checked and removed under the table's lock: two threads deregistering one handle cannot both free it.
            guard let r = Registrations.table.unregister(reg.map { OpaquePointer($0) }, if: { $0.comm === h }) else {
                return invalid("handle is not a live registration of this communicator", h, operation: op)
            }
            h.comm.deregister(r.region)
            return swcclSuccess
        }
    }
}

// MARK: - run-time reduction operators

/// Live run-time operators one communicator may hold at once.
let maxRunTimeOps = 1 << 20

@c @implementation
public func swcclRedOpCreatePreMulSum(_ op: UnsafeMutablePointer<swcclRedOp_t>?, _ scalar: UnsafeMutableRawPointer?,
                                      _ datatype: swcclDataType_t, _ residence: CInt, _ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let name = "swcclRedOpCreatePreMulSum"
        switch handle(comm, operation: name) {
        case .failure(let e): return report(e, operation: name)
        case .success(let h):
            guard let op else { return invalid("op is NULL", h, operation: name) }
            guard let scalar else { return invalid("scalar is NULL", h, operation: name) }
            guard !h.comm.isFinalized else {
                return report(.invalidUsage("the communicator was finalized (only destroy, abort and queries remain)"), h, operation: name)
            }
            guard let type = dataType(datatype) else { return invalid("unknown datatype \(datatype.rawValue)", h, operation: name) }
            let pm: PreMulSum
            switch residence {
            case 1: pm = PreMulSum(type: type, scalarBytes: scalar)
            case 0: pm = PreMulSum(type: type, readingScalarAt: scalar)
            default: return invalid("residence \(residence) is neither 0 (read at each operation) nor 1 (host immediate)", h, operation: name)
            }
            // Ids count up from 5 (after the built-in ops); after Int32.max the freed ones are reused.
            let id = h.ops.withLock { o -> Int32? in
                guard o.table.count < maxRunTimeOps else { return nil }
                var id = o.next
                if id == Int32.max || o.table[id] != nil {
                    id = 5
                    while o.table[id] != nil { id += 1 }
                } else {
                    o.next += 1
                }
                o.table[id] = pm
                return id
            }
            guard let id else {
                return report(.invalidUsage("\(maxRunTimeOps) run-time operators are live on this communicator; destroy some with swcclRedOpDestroy"), h, operation: name)
            }
            op.pointee = swcclRedOp_t(rawValue: UInt32(bitPattern: id))
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclRedOpDestroy(_ op: swcclRedOp_t, _ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let name = "swcclRedOpDestroy"
        switch handle(comm, operation: name) {
        case .failure(let e): return report(e, operation: name)
        case .success(let h):
            let id = Int32(bitPattern: op.rawValue)
            guard id >= 5 else { return invalid("op \(id) is built in and cannot be destroyed", h, operation: name) }
            guard h.ops.withLock({ $0.table.removeValue(forKey: id) }) != nil else {
                return invalid("op \(id) is not a live operator of this communicator (destroyed twice?)", h, operation: name)
            }
            return swcclSuccess
        }
    }
}
