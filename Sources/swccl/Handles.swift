// Handles given to C and how a call finds the live object behind one.
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

    /// The live object behind a handle that C passed as argument `name` (`comm`, `stream`, …):
    /// `invalidArgument` for NULL, `invalidUsage` for a handle that is not (or no longer) a live
    /// `noun`, or `refuse`'s error (an object a forked child inherited, a set-up not finished).
    func live(_ p: OpaquePointer?, _ name: String, _ noun: String,
              refuse: (Object, OpaquePointer) -> CCLError? = { _, _ in nil }) -> Result<Object, CCLError> {
        guard let p else { return .failure(.invalidArgument("\(name) is NULL")) }
        guard let o = lookup(p) else { return .failure(.invalidUsage("\(name) \(p) is not a live \(noun) (destroyed already?)")) }
        if let e = refuse(o, p) { return .failure(e) }
        return .success(o)
    }
}

/// Runs `body` with the object of a handle lookup (`HandleTable.live`), or reports why there is none
/// as `operation`'s error. Every entry point that takes a handle goes through here or `withComm`.
func withLive<Object>(_ lookup: Result<Object, CCLError>, _ handle: CommHandle? = nil, operation: String,
                      _ body: (Object) -> swcclResult_t) -> swcclResult_t {
    switch lookup {
    case .failure(let e): return report(e, handle, operation: operation)
    case .success(let o): return body(o)
    }
}

/// Runs `body` with the usable communicator behind `comm` (`Handles.live`), or reports why not.
func withComm(_ comm: swcclComm_t?, operation: String, _ body: (CommHandle) -> swcclResult_t) -> swcclResult_t {
    withLive(Handles.live(comm), operation: operation, body)
}

enum Handles {
    static let comms = HandleTable<CommHandle>(tag: 0x5343)  // "SC"
    static func register(_ h: CommHandle) -> OpaquePointer { comms.register(h) }

    /// The communicator behind a handle, usable: its set-up finished (a pending handle's failure is
    /// its error) and not inherited by a forked child.
    static func live(_ comm: swcclComm_t?) -> Result<CommHandle, CCLError> {
        comms.live(comm, "comm", "communicator") { h, _ in
            if h.pending, let e = h.unready { return e }
            if h.comm.owner.isInherited { return h.comm.owner.inheritedError("communicator \(h.comm.name)") }
            return nil
        }
    }
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

// MARK: - streams

/// Live stream handles, as for communicators.
enum Streams {
    static let table = HandleTable<ExecutionStream>(tag: 0x5354)  // "ST"

    /// The stream behind a handle: `invalidArgument` for NULL, `invalidUsage` for a handle that is not
    /// (or no longer) a live stream — as for communicators — or one a forked child inherited (its
    /// thread is not in this process).
    static func checked(_ s: swcclStream_t?) -> Result<ExecutionStream, CCLError> {
        table.live(s, "stream", "stream") { live, p in live.owner.isInherited ? live.owner.inheritedError("stream \(p)") : nil }
    }

    static func lookup(_ s: swcclStream_t?) -> ExecutionStream? { table.lookup(s) }
}

// MARK: - events

/// Live event handles, as for streams (their own tag: an event passed as a stream, or a stream as an
/// event, is refused).
enum Events {
    static let table = HandleTable<StreamEvent>(tag: 0x5345)  // "SE"

    /// The event behind a handle: `invalidArgument` for NULL, `invalidUsage` for a handle that is not
    /// (or no longer) a live event, or one a forked child inherited.
    static func checked(_ e: swcclEvent_t?) -> Result<StreamEvent, CCLError> {
        table.live(e, "event", "event") { live, p in live.owner.isInherited ? live.owner.inheritedError("event \(p)") : nil }
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
