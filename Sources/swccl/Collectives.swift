// Collectives, groups and run-time reduction operators: checked, converted, then the Swift API.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

// MARK: - collectives

/// The shared shape of every collective and point-to-point entry point: look up the communicator,
/// convert the type and (optionally) the op, run `body` now, on the named stream, or (nonblocking
/// communicator) in the background, and turn errors into result codes.
func collectiveCall(_ name: String, _ comm: swcclComm_t?, _ datatype: swcclDataType_t, _ op: swcclRedOp_t?, _ stream: swcclStream_t?,
                    _ body: (Communicator, DataType, ReduceOp, PreMulSum?) throws(CCLError) -> Void) -> swcclResult_t {
    withComm(comm, operation: name) { h in
        guard let type = dataType(datatype) else { return invalid("unknown datatype \(datatype.rawValue)", h, operation: name) }
        var rop = ReduceOp.sum
        var pre: PreMulSum?
        if let op {
            if let o = reduceOp(op) {
                rop = o
            } else if let p = h.ops.withLock({ $0.table[Int32(bitPattern: op.rawValue)] }) {
                guard p.type == type else {
                    return invalid("reduction op \(op.rawValue) was made for \(p.type), not \(type)", h, operation: name)
                }
                pre = p
            } else {
                return invalid("unknown reduction op \(op.rawValue) (not built in, nor made by swcclRedOpCreatePreMulSum on this communicator)", h, operation: name)
            }
        }
        do {
            if let stream {
                // Checked now, enqueued on the stream; errors of the run come from swcclStreamSynchronize.
                guard let s = Streams.lookup(stream) else {
                    return report(.invalidUsage("stream \(stream) is not a live stream (destroyed already?)"), h, operation: name)
                }
                let comm = h.comm
                try s.submit { () throws(CCLError) in try body(comm, type, rop, pre) }
            } else if h.nonblocking {
                // Nonblocking communicator: checked now, run in the background in call order;
                // swcclCommGetAsyncError says when all is done (or the error). In a group, the group's
                // end enqueues it and says swcclInProgress.
                let comm = h.comm
                try h.backgroundQueue().submit { () throws(CCLError) in try body(comm, type, rop, pre) }
                return Group.isActive ? swcclSuccess : swcclInProgress
            } else {
                try body(h.comm, type, rop, pre)
            }
            return swcclSuccess
        } catch {
            return report(error, h, operation: name)
        }
    }
}

/// size_t counts arrive as Int; values that do not fit a sane range are rejected before any use.
func checked(_ count: Int) throws(CCLError) -> Int {
    guard count >= 0, count <= Int(Int32.max) * 256 else { throw CCLError.invalidArgument("count \(UInt(bitPattern: count)) is too large") }
    return count
}

@c @implementation
public func swcclAllReduce(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                           _ datatype: swcclDataType_t, _ op: swcclRedOp_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAllReduce", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.allReduce(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, op: o, preMulSum: p)
        }
    }
}

@c @implementation
public func swcclBroadcast(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                           _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBroadcast", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.broadcast(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclBcast(_ buff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ root: CInt,
                       _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBcast", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.broadcast(send: UnsafeRawPointer(buff), recv: buff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclReduce(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t,
                        _ op: swcclRedOp_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclReduce", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.reduce(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, op: o, root: Int(root), preMulSum: p)
        }
    }
}

@c @implementation
public func swcclAllGather(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ sendcount: Int,
                           _ datatype: swcclDataType_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAllGather", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.allGather(send: sendbuff, recv: recvbuff, sendCount: try checked(sendcount), type: t)
        }
    }
}

@c @implementation
public func swcclReduceScatter(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ recvcount: Int,
                               _ datatype: swcclDataType_t, _ op: swcclRedOp_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclReduceScatter", comm, datatype, op, stream) { (c, t, o, p) throws(CCLError) in
            try c.reduceScatter(send: sendbuff, recv: recvbuff, recvCount: try checked(recvcount), type: t, op: o, preMulSum: p)
        }
    }
}

@c @implementation
public func swcclAlltoAll(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                          _ datatype: swcclDataType_t, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclAlltoAll", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.allToAll(send: sendbuff, recv: recvbuff, count: try checked(count), type: t)
        }
    }
}

@c @implementation
public func swcclGather(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                        _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclGather", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.gather(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclScatter(_ sendbuff: UnsafeRawPointer?, _ recvbuff: UnsafeMutableRawPointer?, _ count: Int,
                         _ datatype: swcclDataType_t, _ root: CInt, _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclScatter", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            try c.scatter(send: sendbuff, recv: recvbuff, count: try checked(count), type: t, root: Int(root))
        }
    }
}

@c @implementation
public func swcclBarrier(_ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclBarrier", comm, swcclUint8, nil, stream) { (c, _, _, _) throws(CCLError) in try c.barrier() }
    }
}

// MARK: - groups

@c @implementation
public func swcclGroupStart() -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        Group.start()
        return swcclSuccess
    }
}

@c @implementation
public func swcclGroupEnd() -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        do {
            // In progress: set-ups of nonblocking communicators, or operations of nonblocking
            // communicators called without a stream, continue in the background.
            return try Group.end() ? swcclInProgress : swcclSuccess
        } catch {
            return report(error, operation: "swcclGroupEnd")
        }
    }
}

// MARK: - run-time reduction operators

/// Live run-time operators one communicator may hold at once.
let maxRunTimeOps = 1 << 20

@c @implementation
public func swcclRedOpCreatePreMulSum(_ op: UnsafeMutablePointer<swcclRedOp_t>?, _ scalar: UnsafeMutableRawPointer?,
                                      _ datatype: swcclDataType_t, _ residence: CInt, _ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let name = "swcclRedOpCreatePreMulSum"
        return withComm(comm, operation: name) { h in
            guard let op else { return invalid("op is NULL", h, operation: name) }
            guard let scalar else { return invalid("scalar is NULL", h, operation: name) }
            guard !h.comm.isFinalized else {
                return report(.invalidUsage("the communicator was finalized (only destroy, abort and queries remain)"), h, operation: name)
            }
            guard let type = dataType(datatype) else { return invalid("unknown datatype \(datatype.rawValue)", h, operation: name) }
            let pm: PreMulSum
            switch residence {
            case 1: pm = PreMulSum(type: type, scalarBytes: scalar)
            case 0: pm = PreMulSum(type: type, readingScalarAt: scalar)
            default: return invalid("residence \(residence) is neither 0 (read at each operation) nor 1 (host immediate)", h, operation: name)
            }
            // Ids count up from 5 (after the built-in ops); after Int32.max the freed ones are reused.
            let id = h.ops.withLock { o -> Int32? in
                guard o.table.count < maxRunTimeOps else { return nil }
                var id = o.next
                if id == Int32.max || o.table[id] != nil {
                    id = 5
                    while o.table[id] != nil { id += 1 }
                } else {
                    o.next += 1
                }
                o.table[id] = pm
                return id
            }
            guard let id else {
                return report(.invalidUsage("\(maxRunTimeOps) run-time operators are live on this communicator; destroy some with swcclRedOpDestroy"), h, operation: name)
            }
            op.pointee = swcclRedOp_t(rawValue: UInt32(bitPattern: id))
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclRedOpDestroy(_ op: swcclRedOp_t, _ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let name = "swcclRedOpDestroy"
        return withComm(comm, operation: name) { h in
            let id = Int32(bitPattern: op.rawValue)
            guard id >= 5 else { return invalid("op \(id) is built in and cannot be destroyed", h, operation: name) }
            guard h.ops.withLock({ $0.table.removeValue(forKey: id) }) != nil else {
                return invalid("op \(id) is not a live operator of this communicator (destroyed twice?)", h, operation: name)
            }
            return swcclSuccess
        }
    }
}
