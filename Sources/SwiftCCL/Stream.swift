import Glibc

/// A CPU execution queue, the host-memory counterpart of a CUDA stream (`swcclStream_t`): operations
/// enqueued on one stream run in order on the stream's own thread; `synchronize` waits for all of them
/// and reports the first error. After an error the stream skips what follows (its result would be
/// meaningless) until it is synchronized, which reports and clears the error. Several streams and
/// communicators may be used at once from several threads; every rank must still issue the operations
/// of one communicator in the same order.
public final class ExecutionStream: @unchecked Sendable {
    public typealias Operation = () throws(CCLError) -> Void
    private let cond = Condition()
    private var queue: [(op: Operation, finally: (() -> Void)?)] = []
    private var head = 0
    private var busy = false
    private var failure: CCLError?
    private var stopping = false
    private var stopped = false
    /// The process that made the stream: a forked child has no thread for it.
    public let owner = ProcessOwner()

    public init() throws(CCLError) {
        do {
            try Sys.startThread { [self] in self.loop() }
        } catch {
            throw CCLError.system("cannot start the stream's thread", error)
        }
    }

    private func loop() {
        cond.lock()
        while true {
            while head == queue.count && !stopping { cond.wait() }
            if head == queue.count && stopping { break }
            let (op, finally) = queue[head]
            head += 1
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
            if let error, failure == nil { failure = error }
            busy = false
            cond.broadcast()
        }
        stopped = true
        cond.broadcast()
        cond.unlock()
    }

    /// Appends an operation; it runs after everything enqueued before it (or is skipped after an
    /// earlier failure, until `synchronize` reports it); `finally` runs after it in either case.
    public func enqueue(_ op: @escaping Operation, finally: (() -> Void)? = nil) throws(CCLError) {
        cond.lock(); defer { cond.unlock() }
        guard !stopping else { throw CCLError.invalidUsage("the stream was destroyed") }
        queue.append((op, finally))
        cond.broadcast()
    }

    /// Waits until every enqueued operation has finished; throws (and clears) the first error.
    public func synchronize() throws(CCLError) {
        cond.lock()
        while head < queue.count || busy { cond.wait() }
        let e = failure
        failure = nil
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
        cond.unlock()
        if let e { throw e }
    }
}
