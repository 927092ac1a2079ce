// Result codes, last errors (per communicator and per thread), the version.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

func result(_ kind: CCLError.Kind) -> swcclResult_t {
    switch kind {
    case .systemError: return swcclSystemError
    case .internalError: return swcclInternalError
    case .invalidArgument: return swcclInvalidArgument
    case .invalidUsage: return swcclInvalidUsage
    case .remoteError: return swcclRemoteError
    case .timeout: return swcclTimeout
    }
}

/// Records `error` (on the communicator if there is one, and for this thread) and returns its code.
func report(_ error: CCLError, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    let e = error.with(operation: operation, rank: handle?.comm.rank, communicator: handle?.comm.name)
    let text = e.description
    handle?.comm.noteLastError(text)
    Handles.setThreadError(text)
    Log.info(.api, text)
    return result(e.kind)
}

/// The same, for a `do` block inside a closure (there the caught error is untyped; it is a CCLError).
func report(_ error: any Error, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    report(error as? CCLError ?? CCLError(.internalError, "\(error)"), handle, operation: operation)
}

func invalid(_ message: String, _ handle: CommHandle? = nil, operation: String) -> swcclResult_t {
    report(CCLError.invalidArgument(message), handle, operation: operation)
}

// MARK: - errors and version

@c @implementation
public func swcclGetErrorString(_ r: swcclResult_t) -> UnsafePointer<CChar>! {
    let s: StaticString
    switch r.rawValue {
    case swcclSuccess.rawValue: s = "no error"
    case swcclSystemError.rawValue: s = "unhandled system error (network, sockets or memory); the communicator is broken"
    case swcclInternalError.rawValue: s = "internal error in SwiftCCL; the communicator is broken"
    case swcclInvalidArgument.rawValue: s = "invalid argument"
    case swcclInvalidUsage.rawValue: s = "invalid usage"
    case swcclRemoteError.rawValue: s = "remote process exited or there was a network error; the communicator is broken"
    case swcclInProgress.rawValue: s = "operation in progress"
    case swcclTimeout.rawValue: s = "timeout: a blocking step exceeded the communicator's deadline; the communicator is broken"
    default: s = "unknown result code"
    }
    return UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

@c @implementation
public func swcclGetLastError(_ comm: swcclComm_t?) -> UnsafePointer<CChar>! {
    ForkSafety.run { () -> UnsafePointer<CChar>? in
        let empty: StaticString = ""
        let none = UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self)
        // A live communicator answers for itself only; NULL or a handle that is no longer live: the
        // calling thread's last error (which says why that handle was refused).
        // A forked child's inherited communicator: the refusal was recorded for the calling thread.
        if let h = Handles.lookup(comm), h.unready != nil { return h.lastErrorCString() ?? none }
        if let h = Handles.lookup(comm), !h.comm.owner.isInherited { return h.lastErrorCString() ?? none }
        return Handles.threadError() ?? none
    }
}

@c @implementation
public func swcclGetVersion(_ version: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let version else { return invalid("version is NULL", operation: "swcclGetVersion") }
        version.pointee = CInt(SwiftCCLVersion.code)
        return swcclSuccess
    }
}
