import CSwcclShims
import SwcclSystem

/// What a forked child may and may not do with the library.
///
/// Two hazards follow a `fork()` of a process that loaded SwiftCCL (Python's multiprocessing and
/// PyTorch's DataLoader fork by default on Linux):
/// - **The child's first thread runs with its parent thread's id cached by the Swift runtime.** The
///   runtime's locks (one-time initialisation, metadata caches, `Synchronization.Mutex`) store the
///   owner's thread id for priority-inheritance futexes and read it from a per-thread cache that fork
///   copies. When that thread holds such a lock and a new thread of the child contends for it, the
///   kernel is asked about a thread that is not in this process, fails, and both spin forever. So on
///   that one thread every library entry point runs its work on a stand-in thread (`run`), started at
///   the first call and the same for every later one (what is kept per thread — the last error, an
///   open group, the current stream — stays consistent), whose cache is right; threads the child
///   creates itself call straight through.
/// - **Objects inherited from the parent are the parent's.** A communicator, its sockets and its
///   shared memory are shared with the parent after fork; a child that closed them would tell the
///   parent's peers that the parent left. `ProcessOwner` tells an inherited object from one the
///   process made itself, so that teardown of an inherited one is a local no-op and using it is an error.
package enum ForkSafety {
    /// Runs `body` here, or on the stand-in thread when this is the thread a forked child started with.
    @inlinable @inline(__always)
    package static func run<R>(_ body: () -> R) -> R {
        if !_threadIsForkStale() { return body() }
        var result: R? = nil
        if _runOnProxyThread({ result = body() }) { return result! }
        return body()  // no thread could be started: the best left is to try here
    }

    @usableFromInline package static func _threadIsForkStale() -> Bool { Sys.threadIsForkStale }
    @usableFromInline package static func _runOnProxyThread(_ body: () -> Void) -> Bool { Sys.runOnProxyThread(body) }
}

/// The process (fork generation) that made an object: a forked child inherits the object but does not
/// own it.
package struct ProcessOwner: Sendable {
    package let generation = Sys.forkGeneration
    package let pid = Sys.getpid()
    package init() {}
    /// True in a forked child of the process that made the object.
    @inline(__always) package var isInherited: Bool { Sys.forkGeneration != generation }
    /// Says why an inherited object cannot be used here.
    package func inheritedError(_ what: String) -> CCLError {
        CCLError(.invalidUsage, "\(what) was created by process \(pid) and inherited by this forked child (pid \(Sys.getpid())): a child cannot use its parent's communicator (create its own after fork); the parent's job is unaffected")
    }
}
