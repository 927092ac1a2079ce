import Glibc

/// A POSIX error number, as returned by a failed system call.
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    /// The calling thread's `errno`.
    public static var current: Errno { Errno(errno) }
    public var description: String {
        guard let s = strerror(rawValue) else { return "errno \(rawValue)" }
        return String(cString: s)
    }
    public static let again = Errno(EAGAIN)
    public static let interrupted = Errno(EINTR)
    public static let inProgress = Errno(EINPROGRESS)
}
