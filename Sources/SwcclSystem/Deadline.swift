/// A point in time on the monotonic clock by which a blocking step must finish.
public struct Deadline: Sendable, Comparable {
    public let nanos: UInt64
    public init(nanos: UInt64) { self.nanos = nanos }
    public static func after(milliseconds ms: Int) -> Deadline {
        Deadline(nanos: Sys.monotonicNanos() &+ UInt64(min(max(ms, 0), Int(Int32.max))) &* 1_000_000)
    }
    public static var distantFuture: Deadline { Deadline(nanos: UInt64.max / 2) }
    public var hasPassed: Bool { Sys.monotonicNanos() >= nanos }
    /// Milliseconds left, rounded up, for poll(); 0 when passed.
    public var remainingMs: Int32 {
        let now = Sys.monotonicNanos()
        if now >= nanos { return 0 }
        let ms = (nanos - now + 999_999) / 1_000_000
        return ms > UInt64(Int32.max) ? Int32.max : Int32(ms)
    }
    public static func < (a: Deadline, b: Deadline) -> Bool { a.nanos < b.nanos }
}
