import Glibc
import CSwcclShims
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// A CPU execution queue, the host-memory counterpart of a CUDA stream (`swcclStream_t`): operations
/// enqueued on one stream run in order on the stream's own thread; `synchronize` waits for all of them
/// and reports the first error. After an error the stream skips what follows (its result would be
/// meaningless) until it is synchronized, which reports and clears the error. Several streams and
/// communicators may be used at once from several threads; every rank must still issue the operations
/// of one communicator in the same order.
public final class ExecutionStream: @unchecked Sendable {
    package typealias Operation = () throws(CCLError) -> Void
    private let cond = Condition()
    private var queue: [(op: Operation, finally: (() -> Void)?)] = []
    private var head = 0
    private var busy = false
    private var failure: CCLError?
    private var stopping = false
    private var stopped = false
    /// The process that made the stream: a forked child has no thread for it.
    package let owner = ProcessOwner()
    /// Set on a stream that carries a nonblocking communicator's operations called without a stream:
    /// a group whose work went onto it reports that work as still in progress.
    package var reportsInProgress = false

    // Completion, for events (`StreamEvent`). Operations are numbered 1, 2, … in enqueue order;
    // `completed` is the number of the last one finished (run or skipped), published after its
    // failure (if any) is in `failures`. Waiters read it without the lock, spin, then sleep on `bell`
    // (bumped after every completion; woken only when `sleepers` says someone sleeps).
    /// Operations enqueued so far (under `cond`).
    private var enqueued: UInt64 = 0
    /// Operations taken off the queue so far (under `cond`).
    private var dequeued: UInt64 = 0
    private let completed = Atomic<UInt64>(0)
    private let failureCount = Atomic<Int>(0)
    private let sleepers = Atomic<UInt32>(0)
    private let bell: UnsafeMutablePointer<UInt32>
    /// Each failure with the number of its operation, oldest first (under `cond`). A failure's
    /// operation and every later one up to the next `synchronize` (which clears the failure) report
    /// it; at most one failure falls between two clears, since the stream skips work after one.
    private var failures: [(index: UInt64, error: CCLError)] = []
    /// The operation number up to which failures were reported and cleared by `synchronize` or
    /// `destroy` (under `cond`): events recorded later report only failures after it.
    private var clearedThrough: UInt64 = 0
    /// Failures dropped from `failures` (kept bounded) reached up to this operation number.
    private var forgottenThrough: UInt64 = 0
    private static let maxFailures = 1024

    public init() throws(CCLError) {
        bell = .allocate(capacity: 1)
        bell.initialize(to: 0)
        do {
            try Sys.startThread { [self] in self.loop() }
        } catch {
            bell.deallocate()
            throw CCLError.system("cannot start the stream's thread", error)
        }
    }

    deinit { bell.deallocate() }

    private func loop() {
        cond.lock()
        while true {
            while head == queue.count && !stopping { cond.wait() }
            if head == queue.count && stopping { break }
            let (op, finally) = queue[head]
            head += 1
            dequeued += 1
            let index = dequeued
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
            busy = true
            let skip = failure != nil
            cond.unlock()
            var error: CCLError?
            if !skip {
                do throws(CCLError) { try op() } catch let e { error = e }
            }
            finally?()
            cond.lock()
            if let error, failure == nil {
                failure = error
                failures.append((index, error))
                if failures.count > Self.maxFailures { forgottenThrough = failures.removeFirst().index }
                failureCount.add(1, ordering: .sequentiallyConsistent)
            }
            busy = false
            complete(index)
            cond.broadcast()
        }
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    /// Appends an operation; it runs after everything enqueued before it (or is skipped after an
    /// earlier failure, until `synchronize` reports it); `finally` runs after it in either case.
    package func enqueue(_ op: @escaping Operation, finally: (() -> Void)? = nil) throws(CCLError) {
        cond.lock(); defer { cond.unlock() }
        guard !stopping else { throw CCLError.invalidUsage("the stream was destroyed") }
        queue.append((op, finally))
        enqueued += 1
        cond.broadcast()
    }

    /// Waits until every enqueued operation has finished; throws (and clears) the first error.
    public func synchronize() throws(CCLError) {
        cond.lock()
        while head < queue.count || busy { cond.wait() }
        let e = failure
        failure = nil
        clearedThrough = dequeued
        cond.unlock()
        if let e { throw e }
    }

    /// nil while work is pending, else the result `synchronize` would give (without clearing it).
    public func query() -> Result<Void, CCLError>? {
        cond.lock(); defer { cond.unlock() }
        if head < queue.count || busy { return nil }
        if let f = failure { return .failure(f) }
        return .success(())
    }

    // MARK: completion, for events

    /// Publishes that operation `index` finished and wakes event waiters that sleep.
    @inline(__always) private func complete(_ index: UInt64) {
        completed.store(index, ordering: .sequentiallyConsistent)
        _ = cshim_fetch_add_u32(bell, 1)
        if sleepers.load(ordering: .sequentiallyConsistent) != 0 { Sys.futexWake(bell) }
    }

    /// The point after every operation enqueued so far, and the failures already cleared by then:
    /// what an event records.
    func mark() -> (target: UInt64, floor: UInt64) {
        cond.lock(); defer { cond.unlock() }
        return (enqueued, clearedThrough)
    }

    /// nil while an operation up to `target` is pending; else the first failure among the
    /// operations numbered (`floor`, `target`], or success. Never blocks for long (the lock is taken
    /// only when the stream ever failed).
    func outcome(target: UInt64, floor: UInt64) -> Result<Void, CCLError>? {
        guard completed.load(ordering: .acquiring) >= target else { return nil }
        if failureCount.load(ordering: .sequentiallyConsistent) == 0 { return .success(()) }
        cond.lock(); defer { cond.unlock() }
        if let f = failures.first(where: { $0.index > floor }), f.index <= target { return .failure(f.error) }
        if floor < forgottenThrough && target > floor {
            return .failure(CCLError.invalidUsage("the outcome of the operations before this event is no longer known: its stream failed more than \(Self.maxFailures) times since the event was recorded (synchronize the stream to clear failures)"))
        }
        return .success(())
    }

    /// Waits until every operation up to `target` has finished or `deadline` (monotonic
    /// nanoseconds) passed; true if finished. Polls briefly — `SWCCL_SPIN_US`, at most 50 µs, yielding
    /// the core between polls: the stream's thread, itself spinning on its peers, needs it more —
    /// then sleeps on a futex the stream's thread rings after each operation. Holds no lock.
    func waitCompleted(_ target: UInt64, deadline: UInt64) -> Bool {
        if completed.load(ordering: .acquiring) >= target { return true }
        var now = Sys.monotonicNanos()
        if now >= deadline { return false }
        let spinEnd = min(deadline, now &+ min(Knobs.spinNanos, 50_000))
        var polls = 0
        while now < spinEnd {
            if completed.load(ordering: .acquiring) >= target { return true }
            polls += 1
            if polls < 64 { cshim_cpu_relax() } else { Sys.yieldCore() }
            now = Sys.monotonicNanos()
        }
        while true {
            let seen = cshim_load_u32(bell)
            if completed.load(ordering: .sequentiallyConsistent) >= target { return true }
            now = Sys.monotonicNanos()
            if now >= deadline { return false }
            sleepers.add(1, ordering: .sequentiallyConsistent)
            // A completion after `seen` changed the bell: the wait returns at once.
            if completed.load(ordering: .sequentiallyConsistent) < target {
                Sys.futexWait(bell, expected: seen, nanos: min(deadline - now, 100_000_000))
            }
            sleepers.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    // MARK: the calling thread's current stream

    nonisolated(unsafe) private static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    /// The stream that collectives called on this thread are enqueued on (set by `submit`).
    static var current: ExecutionStream? {
        guard let p = pthread_getspecific(key) else { return nil }
        return Unmanaged<ExecutionStream>.fromOpaque(p).takeUnretainedValue()
    }

    /// Runs `body` with this stream as the calling thread's current stream: every collective and
    /// send/receive it calls checks its arguments at once (errors are thrown here) and is enqueued on
    /// the stream instead of running.
    public func submit<R>(_ body: () throws(CCLError) -> R) throws(CCLError) -> R {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(Self.key, previous) }
        return try body()
    }

    /// Finishes pending work, stops the thread, and reports an error not yet reported.
    public func destroy() throws(CCLError) {
        cond.lock()
        stopping = true
        cond.broadcast()
        while !stopped { cond.wait() }
        let e = failure
        failure = nil
        clearedThrough = dequeued
        cond.unlock()
        if let e { throw e }
    }
}

/// A point in a stream, to be told when the operations before it have completed (the host-memory
/// counterpart of a CUDA event; `swcclEvent_t`). `record(on:)` marks the point after everything
/// enqueued on the stream so far (recording again moves the mark); `query` and `wait` report
/// whether every operation before the mark finished, and the first failure among them. Failures that
/// `synchronize` reported and cleared before the event was recorded are not reported again.
public final class StreamEvent: @unchecked Sendable {
    private struct Mark: @unchecked Sendable {
        var stream: ExecutionStream?
        var target: UInt64 = 0
        var floor: UInt64 = 0
    }
    private let mark = Mutex<Mark>(Mark())
    /// The process that made the event: a forked child cannot use it.
    package let owner = ProcessOwner()

    /// An event that is complete (as one recorded with no stream).
    public init() {}

    /// Marks the point after every operation enqueued on `stream` so far; nil: complete at once (an
    /// operation without a stream finished before its call returned).
    public func record(on stream: ExecutionStream?) {
        let m = stream?.mark()
        mark.withLock { $0 = Mark(stream: stream, target: m?.target ?? 0, floor: m?.floor ?? 0) }
    }

    /// nil while an operation before the mark is pending; else success, or the first failure among
    /// the operations before the mark (since the stream was last synchronized). Never blocks.
    public func query() -> Result<Void, CCLError>? {
        let m = mark.withLock { $0 }
        guard let s = m.stream else { return .success(()) }
        return s.outcome(target: m.target, floor: m.floor)
    }

    /// Waits until the operations before the mark completed, at most `timeoutMs` (nil: no limit of
    /// the caller's; each operation's own deadline still bounds it); returns as `query`, nil if the
    /// time ran out first.
    public func wait(timeoutMs: Int?) -> Result<Void, CCLError>? {
        let m = mark.withLock { $0 }
        guard let s = m.stream else { return .success(()) }
        let deadline = timeoutMs.map { Sys.monotonicNanos() &+ UInt64(min(max($0, 0), Int(Int32.max))) &* 1_000_000 } ?? UInt64.max
        guard s.waitCompleted(m.target, deadline: deadline) else { return nil }
        return s.outcome(target: m.target, floor: m.floor)
    }
}
