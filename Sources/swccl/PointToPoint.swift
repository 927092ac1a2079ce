// Point-to-point: swcclSend and swcclRecv (inside a group they pair up at its end).
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

@c @implementation
public func swcclSend(_ sendbuff: UnsafeRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ peer: CInt,
                      _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclSend", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            guard peer >= 0 else { throw CCLError.invalidArgument("peer \(peer) is out of range") }
            try c.send(sendbuff, count: try checked(count), type: t, to: Int(peer))
        }
    }
}

@c @implementation
public func swcclRecv(_ recvbuff: UnsafeMutableRawPointer?, _ count: Int, _ datatype: swcclDataType_t, _ peer: CInt,
                      _ comm: swcclComm_t?, _ stream: swcclStream_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        collectiveCall("swcclRecv", comm, datatype, nil, stream) { (c, t, _, _) throws(CCLError) in
            guard peer >= 0 else { throw CCLError.invalidArgument("peer \(peer) is out of range") }
            try c.recv(recvbuff, count: try checked(count), type: t, from: Int(peer))
        }
    }
}
