import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// NCCL-style group calls (`swcclGroupStart`/`swcclGroupEnd`), per thread and nestable. Inside a
/// group, every call is validated at once and recorded in its communicator's batch; nothing runs.
/// At the outermost `end` every batch starts:
/// - a batch first posts all its receives, then all its sends, then waits for them (so a ring of
///   sends and receives in one group cannot deadlock), then runs its collectives in call order;
/// - a batch whose operations named a stream is enqueued on that stream as one operation (its errors
///   come from the stream's `synchronize`); the others run at once, each communicator's on its own
///   thread, so collectives of several communicators of one process (`initAll`) issued from one
///   thread in one group progress together;
/// - `end` returns when the batches without a stream have finished, with the first error among them;
///   a failure in one batch does not keep the others from running.
/// Buffers must stay valid until the operation has run (`end` returns, or the stream has run it).
public enum Group {
    final class State {
        var depth = 0
        var batches: [Batch] = []
        var jobs: [(work: @Sendable () -> CCLError?, waits: Bool)] = []
    }

    /// What one group recorded for one communicator.
    final class Batch: @unchecked Sendable {
        let comm: Communicator
        let stream: ExecutionStream?
        var p2p: [PointToPoint] = []
        var calls: [(name: String, body: () throws(CCLError) -> Void)] = []
        init(_ comm: Communicator, _ stream: ExecutionStream?) { self.comm = comm; self.stream = stream }
    }

    struct PointToPoint {
        let send: UnsafeRawBufferPointer?
        let to: Int
        let recv: UnsafeMutableRawBufferPointer?
        let from: Int
    }

    nonisolated(unsafe) private static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in if let p { Unmanaged<State>.fromOpaque(p).release() } }
        return k
    }()

    static var state: State {
        if let p = pthread_getspecific(key) { return Unmanaged<State>.fromOpaque(p).takeUnretainedValue() }
        let s = State()
        pthread_setspecific(key, Unmanaged.passRetained(s).toOpaque())
        return s
    }

    /// Whether the calling thread is inside a group.
    public static var isActive: Bool { state.depth > 0 }

    public static func start() { state.depth += 1 }

    /// The batch of `comm` in the open group; every operation of one communicator in a group must use
    /// the same stream (or none), since they progress together.
    private static func batch(_ comm: Communicator) throws(CCLError) -> Batch {
        let stream = ExecutionStream.current
        let s = state
        if let b = s.batches.first(where: { $0.comm === comm }) {
            guard b.stream === stream else {
                throw CCLError.invalidUsage("operations of one communicator in a group must all use the same stream (or all none)")
            }
            return b
        }
        let b = Batch(comm, stream)
        s.batches.append(b)
        return b
    }

    static func record(_ comm: Communicator, _ op: PointToPoint) throws(CCLError) {
        try batch(comm).p2p.append(op)
    }

    static func record(_ comm: Communicator, _ name: String, _ body: @escaping () throws(CCLError) -> Void) throws(CCLError) {
        try batch(comm).calls.append((name, body))
    }

    /// Records work that is not an operation of an existing communicator — the set-up of one (NCCL
    /// lets one thread initialise several ranks inside a group). At the outermost `end` every job
    /// starts on a thread of its own, before the batches run; `end` waits for the jobs with `waits`
    /// (and returns the first error among them) and leaves the others running in the background.
    package static func recordJob(waits: Bool, _ work: @escaping @Sendable () -> CCLError?) {
        state.jobs.append((work, waits))
    }

    /// Ends the group; at the outermost level starts every job and batch and returns the first error
    /// of the jobs it waits for and of the batches run without a stream (or of enqueueing those with
    /// one). Returns true when work was left running in the background: jobs that do not wait, or
    /// batches enqueued on a stream whose `reportsInProgress` is set.
    @discardableResult
    public static func end() throws(CCLError) -> Bool {
        let s = state
        guard s.depth > 0 else { throw CCLError.invalidUsage("swcclGroupEnd without swcclGroupStart") }
        s.depth -= 1
        if s.depth > 0 { return false }
        let batches = s.batches
        s.batches = []
        let jobs = s.jobs
        s.jobs = []
        var firstError: CCLError?
        var background = jobs.contains { !$0.waits }
        if !jobs.isEmpty { firstError = runJobs(jobs) }
        var now: [Batch] = []
        // Batches that named the same stream become one operation of that stream, which runs them
        // concurrently too (several communicators of one process may share a stream).
        var onStream: [(stream: ExecutionStream, batches: [Batch])] = []
        for b in batches {
            if let stream = b.stream {
                if let k = onStream.firstIndex(where: { $0.stream === stream }) { onStream[k].batches.append(b) }
                else { onStream.append((stream, [b])) }
            } else {
                now.append(b)
            }
        }
        for (stream, group) in onStream {
            if stream.reportsInProgress { background = true }
            for b in group { b.comm.streamOperation(started: true) }
            do throws(CCLError) {
                try stream.enqueue({ () throws(CCLError) in if let e = runConcurrently(group) { throw e } },
                                   finally: { for b in group { b.comm.streamOperation(started: false) } })
            } catch {
                for b in group {
                    b.comm.streamOperation(started: false)
                    let e = b.comm.record(error.with(operation: "group", rank: b.comm.rank))
                    firstError = firstError ?? e
                }
            }
        }
        if let e = runConcurrently(now) { firstError = firstError ?? e }
        if let e = firstError { throw e }
        return background
    }

    /// Starts every job on a thread of its own; waits for those that wait and returns their first
    /// error (a job whose thread cannot start runs here instead).
    private static func runJobs(_ jobs: [(work: @Sendable () -> CCLError?, waits: Bool)]) -> CCLError? {
        final class Outcome: @unchecked Sendable {
            let done = Condition()
            var errors: [CCLError?]
            var running = 0
            init(_ n: Int) { errors = Array(repeating: nil, count: n) }
        }
        let out = Outcome(jobs.count)
        for (i, job) in jobs.enumerated() {
            if job.waits { out.done.lock(); out.running += 1; out.done.unlock() }
            let waits = job.waits
            let work = job.work
            let body: @Sendable () -> Void = {
                let e = work()
                guard waits else { return }
                out.done.lock()
                out.errors[i] = e
                out.running -= 1
                out.done.broadcast()
                out.done.unlock()
            }
            do { try Sys.startThread(body) } catch {
                // No thread: run it here (a job waiting for the others may then time out).
                Log.warn(.initialization, "group: cannot start a thread (\(error)); running a job on the calling thread")
                body()
            }
        }
        out.done.lock()
        while out.running > 0 { out.done.wait() }
        let first = out.errors.lazy.compactMap { $0 }.first
        out.done.unlock()
        return first
    }

    /// Runs the batches at once, all but the first on threads of their own; returns the first error.
    private static func runConcurrently(_ batches: [Batch]) -> CCLError? {
        guard !batches.isEmpty else { return nil }
        final class Outcome: @unchecked Sendable {
            let done = Condition()
            var errors: [CCLError?]
            var running = 0
            init(_ n: Int) { errors = Array(repeating: nil, count: n) }
        }
        let out = Outcome(batches.count)
        @Sendable func execute(_ i: Int) -> CCLError? {
            do throws(CCLError) { try batches[i].execute(); return nil } catch { return error }
        }
        for i in 1..<batches.count {
            out.done.lock(); out.running += 1; out.done.unlock()
            do {
                try Sys.startThread {
                    let e = execute(i)
                    out.done.lock()
                    out.errors[i] = e
                    out.running -= 1
                    out.done.broadcast()
                    out.done.unlock()
                }
            } catch {
                // Run after the first instead, it would wait for it (ranks of one process) until both
                // time out: report at once that it could not start.
                let comm = batches[i].comm
                let e = comm.record(CCLError.system("cannot start a thread for this communicator's part of the group", error)
                    .with(operation: "group", rank: comm.rank))
                out.done.lock(); out.running -= 1; out.errors[i] = e; out.done.unlock()
            }
        }
        let mine = execute(0)
        out.done.lock(); out.errors[0] = mine; out.done.unlock()
        out.done.lock()
        while out.running > 0 { out.done.wait() }
        let first = out.errors.lazy.compactMap { $0 }.first
        out.done.unlock()
        return first
    }
}

extension Group.Batch {
    /// Point-to-point first (every receive, then every send, then the waits), then the collectives in
    /// call order. Stops at the first error: the communicator is broken by then.
    func execute() throws(CCLError) {
        if !p2p.isEmpty { try comm.run("group", pointToPoint) }
        for (name, body) in calls { try comm.run(name, body) }
    }

    /// Sends to self are paired with receives from self in call order and copied; the rest is posted.
    private func pointToPoint() throws(CCLError) {
        let sends = p2p.filter { $0.send != nil && $0.to == comm.rank }.map { $0.send! }
        let recvs = p2p.filter { $0.recv != nil && $0.from == comm.rank }.map { $0.recv! }
        guard sends.count == recvs.count else {
            throw CCLError.invalidUsage("the group has \(sends.count) sends to self but \(recvs.count) receives from self")
        }
        for (d, r) in zip(sends, recvs) where d.count != r.count {
            throw CCLError.invalidUsage("a send to self of \(d.count) bytes meets a receive from self of \(r.count)")
        }
        for (d, r) in zip(sends, recvs) {
            if let src = d.baseAddress, let dst = r.baseAddress, r.count > 0, UnsafeRawPointer(dst) != src {
                dst.copyMemory(from: src, byteCount: d.count)
            }
        }
        var pending: [(Request, Int)] = []
        pending.reserveCapacity(p2p.count * 2)
        let number = comm.nextPointToPoint()
        do throws(CCLError) {
            for op in p2p { if let r = op.recv, op.from != comm.rank {
                pending.append((try comm.transport.irecv(from: op.from, tag: comm.p2pTag(op.from, sending: false), into: r), op.from))
            } }
            for op in p2p { if let d = op.send, op.to != comm.rank {
                pending.append((try comm.transport.isend(to: op.to, tag: comm.p2pTag(op.to, sending: true), d), op.to))
            } }
            try comm.waitPointToPoint(pending, operation: "group", number: number)
        } catch { throw error.with(sequence: number).breaking }
    }
}

/// A detached thread for work that outlives the call starting it (the set-up of a nonblocking
/// communicator).
package enum BackgroundThread {
    package static func start(_ body: @escaping @Sendable () -> Void) throws(CCLError) {
        do { try Sys.startThread(body) } catch { throw CCLError.system("cannot start a thread", error) }
    }
}
