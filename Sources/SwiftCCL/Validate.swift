import SwcclCore

/// Argument checks shared by every collective.
enum Validate {
    static func buffers(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType) throws(CCLError) {
        try buffers(send: send, sendBytes: count, recv: recv, recvBytes: count, type: type, inPlaceOffset: 0)
    }

    /// Checks counts (in elements) and pointers; `inPlaceOffset` is the element offset of `send`
    /// relative to `recv` at which the two may coincide (nil: no in-place form). Any other overlap is
    /// an error.
    static func buffers(send: UnsafeRawPointer?, sendBytes sendCount: Int, recv: UnsafeMutableRawPointer?, recvBytes recvCount: Int,
                        type: DataType, inPlaceOffset: Int?) throws(CCLError) {
        guard sendCount >= 0, recvCount >= 0 else { throw CCLError.invalidArgument("count \(min(sendCount, recvCount)) is negative") }
        let (sb, o1) = sendCount.multipliedReportingOverflow(by: type.size)
        let (rb, o2) = recvCount.multipliedReportingOverflow(by: type.size)
        guard !o1, !o2, sb < Int(Int64.max / 4), rb < Int(Int64.max / 4) else {
            throw CCLError.invalidArgument("count of \(type) is too large")
        }
        guard sendCount == 0 || send != nil else { throw CCLError.invalidArgument("sendbuff is NULL") }
        guard recvCount == 0 || recv != nil else { throw CCLError.invalidArgument("recvbuff is NULL") }
        guard let s = send, let r = recv, sb > 0, rb > 0 else { return }
        let a = UInt(bitPattern: s), b = UInt(bitPattern: UnsafeRawPointer(r))
        if let off = inPlaceOffset, Int(bitPattern: a) &- Int(bitPattern: b) == off * type.size { return }
        if a < b &+ UInt(rb) && b < a &+ UInt(sb) {
            throw CCLError.invalidArgument(inPlaceOffset == nil ? "sendbuff and recvbuff overlap (this operation has no in-place form)"
                                                                  : "sendbuff and recvbuff overlap other than in the in-place layout")
        }
    }
}
