import SwcclSystem

/// What a rank tells its peers when its communicator breaks, or when it has been blocked on one peer
/// for long: so that every rank can name the rank that actually died, stopped or disagreed, not a
/// neighbour that merely went away because of it.
///
/// - `abort`: this communicator broke; `culprit` is the rank to blame (the one that died, stopped,
///   disagreed, or `origin` itself for a local failure), `origin` the rank that saw it first,
///   `operation` where (`allreduce #17`), `cause` the original one-line cause. A rank that breaks
///   because of a peer's notice forwards that notice unchanged.
/// - `waiting`: `origin` has been blocked on `culprit` for half the timeout in `operation`. A rank
///   that times out waiting on a peer follows these notices to the rank at the end of the chain.
/// - `resumed`: `origin` moves again (a `waiting` notice it sent is void).
///
/// Every backend carries a rank's notices to its peers (TCP: a NOTICE frame on each control stream;
/// shared memory: a notice area in the rank's segment; verbs: the control connection), and keeps the
/// latest one received from each peer (`Transport.peerNotice`).
public struct Notice: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case abort = 1, waiting = 2, resumed = 3 }
    public var kind: Kind
    public var culprit: Int
    public var origin: Int
    public var errorKind: CCLError.Kind
    public var operation: String
    public var cause: String

    public init(_ kind: Kind, culprit: Int, origin: Int, errorKind: CCLError.Kind = .remoteError, operation: String, cause: String) {
        self.kind = kind; self.culprit = culprit; self.origin = origin; self.errorKind = errorKind
        self.operation = operation; self.cause = cause
    }

    /// Longest encoding (the cause is cut to fit).
    package static let maxBytes = 1024
    package static let magic: UInt8 = 0x4e  // "N"

    /// The notice a rank sends when its communicator breaks with `e`: a relayed notice unchanged,
    /// else one naming `e`'s peer (or this rank, for a failure of its own).
    package static func abort(for e: CCLError, rank: Int) -> Notice {
        if let n = e.relayed { return n }
        return Notice(.abort, culprit: e.peer ?? rank, origin: rank, errorKind: e.kind,
                      operation: e.context ?? "an operation", cause: e.cause)
    }

    package func encode() -> [UInt8] {
        var w = ByteWriter()
        w.u8(Notice.magic); w.u8(kind.rawValue); w.u8(UInt8(truncatingIfNeeded: errorKind.rawValue))
        w.u32(UInt32(truncatingIfNeeded: culprit)); w.u32(UInt32(truncatingIfNeeded: origin))
        w.string(String(decoding: Array(operation.utf8.prefix(200)), as: UTF8.self))
        w.string(String(decoding: Array(cause.utf8.prefix(Notice.maxBytes - 240)), as: UTF8.self))
        return w.bytes
    }

    package static func decode(_ bytes: [UInt8]) -> Notice? {
        var r = ByteReader(bytes)
        guard let m = try? r.u8(), m == magic, let k = try? r.u8(), let kind = Kind(rawValue: k),
              let ek = try? r.u8(), let errorKind = CCLError.Kind(rawValue: Int32(ek)),
              let c = try? r.u32(), let o = try? r.u32(), let op = try? r.string(), let cause = try? r.string() else { return nil }
        return Notice(kind, culprit: Int(Int32(bitPattern: c)), origin: Int(Int32(bitPattern: o)), errorKind: errorKind,
                      operation: CCLError.oneLine(op), cause: CCLError.oneLine(cause))
    }

    /// Takes the complete notices off the front of `buffer`, a stream of `[length u32][Notice]` (the
    /// verbs control connection), leaving an incomplete one in it: each decoded, nil when unreadable.
    /// A length of 0 or beyond `maxBytes` is garbage: the whole buffer is dropped.
    package static func unframe(_ buffer: inout [UInt8]) -> [Notice?] {
        var out: [Notice?] = []
        var start = 0
        while buffer.count - start >= 4 {
            let len = Int(buffer[start]) | Int(buffer[start + 1]) << 8 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 24
            guard len > 0, len <= maxBytes else { buffer.removeAll(); return out }
            guard buffer.count - start >= 4 + len else { break }
            out.append(decode(Array(buffer[start + 4..<start + 4 + len])))
            start += 4 + len
        }
        buffer.removeFirst(start)
        return out
    }

    /// The error a rank reports when it learns of this (abort) notice: the original kind and cause,
    /// naming the culprit as the peer and saying who saw it where. A rank blamed itself (its
    /// arguments differ from the origin's, or it was too slow for it) names the origin.
    package func error(at rank: Int) -> CCLError {
        let text = culprit == origin ? "rank \(origin) failed in \(operation): \(cause)"
            : culprit == rank ? "rank \(origin) blames this rank in \(operation): \(cause)"
            : "\(cause) (seen by rank \(origin) in \(operation))"
        var e = CCLError(errorKind, text, rank: rank, peer: culprit == rank ? origin : culprit)
        e.relayed = self
        e.breaksCommunicator = true
        return e
    }
}
