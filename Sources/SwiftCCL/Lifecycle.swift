import Glibc
import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// A communicator's life: abort, finalize, destroy, and how every operation runs (refused once it is
/// unusable, serialised with other threads, a fatal error recorded as the asynchronous error).
extension Communicator {
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
}
