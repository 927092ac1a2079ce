import Glibc

/// A plain mutex with explicit lock/unlock, for code that holds it across a blocking poll.
package final class Lock: @unchecked Sendable {
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    package init() {
        m = .allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
    }
    deinit { pthread_mutex_destroy(m); m.deallocate() }
    @inline(__always) package func lock() { pthread_mutex_lock(m) }
    @inline(__always) package func unlock() { pthread_mutex_unlock(m) }
    @inline(__always) package func withLock<R>(_ body: () throws -> R) rethrows -> R { lock(); defer { unlock() }; return try body() }
}

/// A condition variable paired with its own mutex.
package final class Condition: @unchecked Sendable {
    private let m: UnsafeMutablePointer<pthread_mutex_t>
    private let c: UnsafeMutablePointer<pthread_cond_t>
    package init() {
        m = .allocate(capacity: 1); m.initialize(to: pthread_mutex_t()); pthread_mutex_init(m, nil)
        c = .allocate(capacity: 1); c.initialize(to: pthread_cond_t())
        // Timed waits measure the monotonic clock (as `Deadline` does), not the wall clock.
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(c, &attr)
        pthread_condattr_destroy(&attr)
    }
    deinit { pthread_cond_destroy(c); c.deallocate(); pthread_mutex_destroy(m); m.deallocate() }
    package func lock() { pthread_mutex_lock(m) }
    package func unlock() { pthread_mutex_unlock(m) }
    /// Waits (the mutex held) until signalled.
    package func wait() { pthread_cond_wait(c, m) }
    /// Waits (the mutex held) until signalled or until the monotonic clock reads `nanos`; false when
    /// the time came first.
    package func wait(untilNanos nanos: UInt64) -> Bool {
        var ts = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        return pthread_cond_timedwait(c, m, &ts) != ETIMEDOUT
    }
    package func broadcast() { pthread_cond_broadcast(c) }
}
