// Streams and events: operations run in order on a stream's thread; events mark points in a stream.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

@c @implementation
public func swcclStreamCreate(_ stream: UnsafeMutablePointer<swcclStream_t?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let stream else { return invalid("stream is NULL", operation: "swcclStreamCreate") }
        do {
            stream.pointee = Streams.table.register(try ExecutionStream())
            return swcclSuccess
        } catch {
            return report(error, operation: "swcclStreamCreate")
        }
    }
}

@c @implementation
public func swcclStreamDestroy(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamDestroy"
        guard let stream else { return invalid("stream is NULL", operation: op) }
        guard let s = Streams.table.unregister(stream) else {
            return report(.invalidUsage("stream \(stream) is not a live stream (destroyed twice?)"), operation: op)
        }
        if s.owner.isInherited { return swcclSuccess }  // the parent's stream (its thread is not here): only forgotten
        do { try s.destroy(); return swcclSuccess } catch { return report(error, operation: op) }
    }
}

@c @implementation
public func swcclStreamSynchronize(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamSynchronize"
        return withLive(Streams.checked(stream), operation: op) { s in
            do { try s.synchronize(); return swcclSuccess } catch { return report(error, operation: op) }
        }
    }
}

@c @implementation
public func swcclStreamQuery(_ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclStreamQuery"
        return withLive(Streams.checked(stream), operation: op) { s in
            switch s.query() {
            case nil: return swcclInProgress
            case .success?: return swcclSuccess
            case .failure(let e)?: return report(e, operation: op)
            }
        }
    }
}

@c @implementation
public func swcclEventCreate(_ event: UnsafeMutablePointer<swcclEvent_t?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let event else { return invalid("event is NULL", operation: "swcclEventCreate") }
        event.pointee = Events.table.register(StreamEvent())
        return swcclSuccess
    }
}

@c @implementation
public func swcclEventDestroy(_ event: swcclEvent_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventDestroy"
        guard let event else { return invalid("event is NULL", operation: op) }
        // A forked child's inherited event is only forgotten, like its inherited streams.
        guard Events.table.unregister(event) != nil else {
            return report(.invalidUsage("event \(event) is not a live event (destroyed twice?)"), operation: op)
        }
        return swcclSuccess
    }
}

@c @implementation
public func swcclEventRecord(_ event: swcclEvent_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventRecord"
        return withLive(Events.checked(event), operation: op) { ev in
            guard let stream else { ev.record(on: nil); return swcclSuccess }
            return withLive(Streams.checked(stream), operation: op) { s in ev.record(on: s); return swcclSuccess }
        }
    }
}

@c @implementation
public func swcclEventQuery(_ event: swcclEvent_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventQuery"
        return withLive(Events.checked(event), operation: op) { ev in Events.answer(ev.query(), operation: op) }
    }
}

@c @implementation
public func swcclEventWait(_ event: swcclEvent_t?, _ timeoutMs: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclEventWait"
        return withLive(Events.checked(event), operation: op) { ev in Events.answer(ev.wait(timeoutMs: timeoutMs < 0 ? nil : Int(timeoutMs)), operation: op) }
    }
}
