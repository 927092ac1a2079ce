import Glibc
import SwcclSystem

/// Every failure SwiftCCL reports. `kind` maps one-to-one onto `swcclResult_t`; the other fields say who
/// failed and why, so that a user can tell a dead peer from a wrong call without a debugger.
public struct CCLError: Error, Sendable, CustomStringConvertible {
    /// Mirrors `swcclResult_t` (raw values equal).
    public enum Kind: Int32, Sendable {
        case systemError = 2, internalError = 3, invalidArgument = 4, invalidUsage = 5
        case remoteError = 6, timeout = 8
    }
    public var kind: Kind
    /// What the caller was doing (`allreduce`, `init`, `connect`, ...).
    public var operation: String?
    /// This process' rank in the communicator, when known.
    public var rank: Int?
    /// The peer involved, when there is one.
    public var peer: Int?
    /// The peer's host or transport address, when known.
    public var peerAddress: String?
    /// Human-readable cause.
    public var cause: String
    /// Underlying system error, if any.
    public var errno: Errno?
    /// Set when the error struck after transfers were under way: even an argument or usage error then
    /// leaves requests in flight, so the communicator cannot be used again.
    package var breaksCommunicator = false
    /// The communicator's name (`CommConfig.name`, else `comm`), when the error came from one.
    public var communicator: String?
    /// The operation's sequence number in its communicator (collectives share one sequence; point-to-
    /// point calls are numbered apart), when it had one.
    public var sequence: UInt64?
    /// Set when this rank failed because a peer told it so: the peer's notice, with the rank that
    /// actually died, stopped or disagreed (`peer` is then that rank) and the original cause. A rank
    /// whose communicator breaks forwards it unchanged, so every rank names the same culprit.
    public var relayed: Notice?

    public init(_ kind: Kind, _ cause: String, operation: String? = nil, rank: Int? = nil, peer: Int? = nil,
                peerAddress: String? = nil, errno: Errno? = nil) {
        self.kind = kind; self.cause = cause; self.operation = operation; self.rank = rank
        self.peer = peer; self.peerAddress = peerAddress; self.errno = errno
    }

    public static func invalidArgument(_ cause: String) -> CCLError { CCLError(.invalidArgument, cause) }
    public static func invalidUsage(_ cause: String) -> CCLError { CCLError(.invalidUsage, cause) }
    package static func system(_ cause: String, _ e: Errno, peer: Int? = nil) -> CCLError {
        CCLError(.systemError, "\(cause): \(e)", peer: peer, errno: e)
    }

    /// Fills in context fields that are still empty (an error raised deep in a transport learns the
    /// operation and rank on its way up).
    package func with(operation: String? = nil, rank: Int? = nil, peer: Int? = nil, peerAddress: String? = nil,
                     communicator: String? = nil, sequence: UInt64? = nil) -> CCLError {
        var e = self
        if e.operation == nil { e.operation = operation }
        if e.rank == nil { e.rank = rank }
        if e.peer == nil { e.peer = peer }
        if e.peerAddress == nil { e.peerAddress = peerAddress }
        if e.communicator == nil { e.communicator = communicator }
        if e.sequence == nil { e.sequence = sequence }
        return e
    }

    /// The communicator is unusable after this error (NCCL semantics): everything but argument errors.
    public var isFatal: Bool { breaksCommunicator || (kind != .invalidArgument && kind != .invalidUsage) }

    /// The same error, marked as breaking the communicator.
    package var breaking: CCLError { var e = self; e.breaksCommunicator = true; return e }

    public var kindName: String {
        switch kind {
        case .systemError: return "system error"
        case .internalError: return "internal error"
        case .invalidArgument: return "invalid argument"
        case .invalidUsage: return "invalid usage"
        case .remoteError: return "remote error"
        case .timeout: return "timeout"
        }
    }

    /// The operation and where it ran: `allreduce #17 on comm 'dp'`, `init`, `comm 'dp'` (nil if none is known).
    public var context: String? {
        var s = operation ?? ""
        if let q = sequence { s += (s.isEmpty ? "#" : " #") + String(q) }
        if let c = communicator { s += (s.isEmpty ? "" : " on ") + "comm '\(c)'" }
        return s.isEmpty ? nil : s
    }

    /// One line: operation (with its sequence number and communicator), rank, host, peer, cause —
    /// `allreduce #17 on comm 'dp': timeout on rank 1 (host), peer rank 0 at 10.0.0.1:4242: ...`.
    /// Whatever went into it (host names, causes from peers) is made one line here.
    public var description: String {
        var s = ""
        if let c = context { s += c + ": " }
        s += kindName
        if let r = rank { s += " on rank \(r)" }
        if let h = Host.name { s += " (\(h))" }
        if let p = peer {
            s += ", peer rank \(p)"
            if let a = peerAddress { s += " at \(a)" }
        } else if let a = peerAddress { s += ", peer \(a)" }
        s += ": " + cause
        return CCLError.oneLine(s)
    }

    /// `text` with every control character (newline, carriage return, tab, escape, ...) replaced by a
    /// space, so a message stays on one line whatever a host name or a peer's text contained.
    package static func oneLine(_ text: String) -> String {
        @inline(__always) func control(_ c: Unicode.Scalar) -> Bool {
            c.value < 0x20 || (0x7f...0x9f).contains(c.value) || c.value == 0x2028 || c.value == 0x2029
        }
        guard text.unicodeScalars.contains(where: control) else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map { control($0) ? " " : $0 }))
    }
}

/// Converts any error into a `CCLError`.
package func asCCLError(_ error: any Error) -> CCLError {
    if let e = error as? CCLError { return e }
    if let e = error as? Errno { return CCLError(.systemError, e.description, errno: e) }
    return CCLError(.internalError, "\(error)")
}

/// Runs a typed-throwing body inside an untyped closure (e.g. `Array.withUnsafeBytes`) and carries the
/// typed error out: `try buf.withUnsafeBytes { b in catching { () throws(CCLError) in ... } }.get()`.
@inline(__always)
package func catching<T, E: Error>(_ body: () throws(E) -> T) -> Result<T, E> {
    do { return .success(try body()) } catch { return .failure(error) }
}
