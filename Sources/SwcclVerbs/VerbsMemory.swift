import Glibc
import CSwcclVerbs
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Registration: a cache of memory regions keyed by page range, shared by concurrent requests.
/// Regions registered by the user (`VerbsTransport.register`) stay until `deregister`; others are
/// released when their last request completes — memory the caller may free once a request is
/// complete is never left registered, so a later buffer at the same address is never served stale
/// pages.
extension VerbsWire {
    /// A registration covering [p, p + n), shared if one exists; its reference count is raised.
    package mutating func acquire(_ p: UnsafeRawPointer, _ n: Int, writable: Bool, peer: Int?) throws(CCLError) -> Int {
        let start = UInt(bitPattern: p), end = start + UInt(max(n, 1))
        for (id, r) in regs where r.start <= start && end <= r.end && (r.writable || !writable) {
            regs[id]!.refs += 1
            return id
        }
        let page = UInt(4096)
        let s = start & ~(page - 1), e = (end + page - 1) & ~(page - 1)
        var mr = cswccl_reg_mr(pd, UnsafeMutableRawPointer(bitPattern: s), Int(e - s), 1)
        var isWritable = true
        if mr == nil && !writable && (errno == EFAULT || errno == EACCES || errno == EPERM) {
            mr = cswccl_reg_mr(pd, UnsafeMutableRawPointer(bitPattern: s), Int(e - s), 0)
            isWritable = false
        }
        guard let mr else {
            throw CCLError(.systemError, "\(device): registering \(Int(e - s)) bytes at 0x\(String(s, radix: 16)): \(Errno.current) (locked-memory limit? ulimit -l)", rank: rank, peer: peer)
        }
        let id = nextRegID
        nextRegID = nextRegID == Int(Int32.max) ? 1 : nextRegID + 1
        regs[id] = Registration(start: s, end: e, mr: mr, refs: 1, user: 0, writable: isWritable)
        return id
    }

    package mutating func release(reg id: Int) {
        guard id != 0, regs[id] != nil else { return }
        regs[id]!.refs -= 1
        releaseIfIdle(id)
    }

    package mutating func releaseIfIdle(_ id: Int) {
        guard let r = regs[id], r.refs <= 0, r.user <= 0 else { return }
        _ = cswccl_dereg_mr(r.mr)
        regs[id] = nil
    }

    /// `VerbsTransport.register`: pinned until `deregister`.
    package mutating func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0) }
        let id = try acquire(UnsafeRawPointer(base), buffer.count, writable: true, peer: nil)
        regs[id]!.user += 1
        regs[id]!.refs -= 1
        return MemoryRegion(base: base, length: buffer.count, key: UInt64(id))
    }

    package mutating func deregister(_ region: MemoryRegion) {
        let id = Int(region.key)
        guard id != 0, regs[id] != nil, regs[id]!.user > 0 else { return }
        regs[id]!.user -= 1
        releaseIfIdle(id)
    }
}
