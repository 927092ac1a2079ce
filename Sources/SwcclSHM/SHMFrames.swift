import CSwcclShims
import SwcclSystem
import SwcclCore

// The shared-memory layout. A rank's segment: a 4 KiB header (magic, rank count, owner, pid, PID
// namespace; on their own cache lines the doorbell futex word, the sleeper count, the count of peers
// that mapped it, the closed flag; the window's layout signature, the FIFO slot count; at `offNotice`
// the owner's latest notice), then one inbound FIFO per peer — a `tail` word (slots the owner
// consumed, on its own cache line) and `slots` slots of `slotBytes` — then the symmetric window.
// A slot: a 64-byte header — sequence number (written last, store release), kind, length, tag,
// message id, offset, total — and up to `payloadBytes` of payload.
extension SHMTransport {
    package static let magic: UInt64 = 0x5357_4343_5348_4d32  // "SWCCSHM2"
    package static let slotBytes = 32 << 10
    package static let slotHeader = 64
    package static var payloadBytes: Int { slotBytes - slotHeader }
    package static let segmentHeader = 4096
    // Offsets in the segment header (each word on its own cache line where others write it).
    package static let offMagic = 0, offRanks = 8, offOwner = 16, offPid = 24, offPidNamespace = 32
    package static let offDoorbell = 64, offSleepers = 128, offMapped = 192, offClosed = 256, offWindow = 320, offFIFO = 328
    /// The owner's latest `Notice`: a version word (odd while it is rewritten), the length, the bytes.
    package static let offNotice = 2048
    package static let noticeAreaBytes = 16 + Notice.maxBytes

    // Slot kinds.
    package static let eager: UInt32 = 1, rts: UInt32 = 2, cts: UInt32 = 3, data: UInt32 = 4
    /// CTS codes (in the slot's offset field): send the data; the receive expected another size; the
    /// receiver already copied the data from the sender's buffer (cross-memory attach).
    package static let clearToSend: UInt64 = 0, rejected: UInt64 = 1, pulled: UInt64 = 2

    /// The segment name a peer published, if it is one this backend makes: `/swccl-<32 hex
    /// digits>-r<rank>` (nothing else is ever opened, so no published name reaches outside /dev/shm).
    package static func decode(_ address: EndpointAddress) -> String? {
        guard let n = address.bytes.first, address.bytes.count == Int(n) + 1 else { return nil }
        let name = address.bytes[1...]
        let prefix = "/swccl-".utf8
        guard name.count <= 64, name.starts(with: prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        let hex = rest.prefix(32), tail = rest.dropFirst(32)
        guard hex.count == 32, hex.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
              tail.count > 2, tail.starts(with: "-r".utf8), tail.dropFirst(2).allSatisfy({ (48...57).contains($0) }) else { return nil }
        return String(decoding: name, as: UTF8.self)
    }

    /// What is wrong with a FIFO slot's header as the peer wrote it, if anything (pure: the fuzz harness
    /// calls it): an eager message fits its slot and says so twice, data is a piece of a slot's size
    /// at a position in its message (checked against the receive in `SHMWire.drain`), the kind is known.
    package static func slotProblem(kind: UInt32, len: Int, offset: Int, total: Int) -> String? {
        switch kind {
        case eager: return len == total && len <= payloadBytes ? nil : "eager message of \(len) bytes, total \(total)"
        case rts: return total > 0 ? nil : "rendezvous request of \(total) bytes"
        case cts: return nil
        case data: return len > 0 && len <= payloadBytes && offset >= 0 && total >= 0 ? nil : "data of \(len) bytes at \(offset), total \(total)"
        default: return "slot kind \(kind)"
        }
    }

    /// The words of a notice area (at `offNotice` of a segment, `noticeAreaBytes` long).
    package static func noticeWords(area: UnsafeMutableRawPointer) -> (version: UnsafeMutablePointer<UInt64>, length: UnsafeMutablePointer<UInt32>, bytes: UnsafeMutableRawPointer) {
        (area.assumingMemoryBound(to: UInt64.self), (area + 8).assumingMemoryBound(to: UInt32.self), area + 16)
    }

    /// Reads the notice area at `area` as a peer wrote it, whatever it holds (pure but for the atomic
    /// loads: the fuzz harness hands it arbitrary bytes): its version and notice, nil if none, torn
    /// by a rewrite, or unreadable. Never reads beyond `noticeAreaBytes`.
    package static func readNoticeArea(_ area: UnsafeMutableRawPointer) -> (UInt64, Notice?) {
        let w = noticeWords(area: area)
        let v1 = cshim_load_acquire_u64(w.version)
        guard v1 != 0, v1 & 1 == 0 else { return (v1, nil) }
        let n = Int(min(cshim_load_u32(w.length), UInt32(Notice.maxBytes)))
        let bytes = Array(UnsafeRawBufferPointer(start: w.bytes, count: n))
        guard cshim_load_acquire_u64(w.version) == v1 else { return (v1, nil) }
        return (v1, Notice.decode(bytes))
    }

    /// Writes `notice` into the notice area of the segment at `seg` (version odd while rewritten).
    package static func writeNotice(_ notice: Notice, into seg: UnsafeMutableRawPointer) {
        let bytes = notice.encode()
        let w = noticeWords(area: seg + offNotice)
        let v = cshim_load_acquire_u64(w.version)
        cshim_store_release_u64(w.version, v | 1)  // odd: being rewritten
        bytes.withUnsafeBytes { w.bytes.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        cshim_store_u32(w.length, UInt32(bytes.count))
        cshim_store_release_u64(w.version, (v | 1) &+ 1)
    }

    @inline(__always) package static func word32(_ seg: UnsafeMutableRawPointer, _ off: Int) -> UnsafeMutablePointer<UInt32> {
        (seg + off).assumingMemoryBound(to: UInt32.self)
    }
    @inline(__always) package static func word64(_ p: UnsafeMutableRawPointer) -> UnsafeMutablePointer<UInt64> { p.assumingMemoryBound(to: UInt64.self) }

    /// Bumps a segment's doorbell and wakes its owner if it sleeps.
    package static func ring(_ seg: UnsafeMutableRawPointer) {
        _ = cshim_fetch_add_u32(word32(seg, offDoorbell), 1)
        if cshim_load_u32(word32(seg, offSleepers)) != 0 { Sys.futexWake(word32(seg, offDoorbell)) }
    }
}
