import Glibc
import Synchronization
import SwcclSystem
import SwcclCore

/// The parts of a request slot that the table needs (`MessageRequest` is the engine's).
@usableFromInline package protocol RequestSlot {
    init()
    var generation: UInt32 { get set }
    var inUse: Bool { get set }
    var isSend: Bool { get }
    var peer: Int32 { get }
    var tag: UInt64 { get }
    var length: Int { get }
    /// Finished successfully (its bytes are in place, or the sender's buffer is free again).
    var isDone: Bool { get }
}

/// A backend's outstanding requests: a fixed table of slots reused under a generation number (so a
/// stale `Request` handle is detected, and no allocation happens per request), with the errors of
/// failed ones kept until the caller collects them. Inlinable: the message engine is specialized in
/// each backend's target, and so must this be (no generic calls per request).
@usableFromInline package struct RequestTable<Slot: RequestSlot> {
    @usableFromInline package var slots: [Slot]
    @usableFromInline package var free: [Int32]
    @usableFromInline package var errors: [Int: CCLError] = [:]
    /// Generations wrap within this mask (a backend that carries them in fewer bits).
    @usableFromInline package let generationMask: UInt32

    @inlinable package init(capacity: Int, generationMask: UInt32 = .max) {
        slots = Array(repeating: Slot(), count: capacity)
        free = (0..<Int32(capacity)).reversed()
        self.generationMask = generationMask
    }

    @inlinable package var capacity: Int { slots.count }

    @inlinable package subscript(_ i: Int32) -> Slot {
        get { slots[Int(i)] }
        _modify { yield &slots[Int(i)] }
    }

    @inlinable package subscript(_ i: Int) -> Slot {
        get { slots[i] }
        _modify { yield &slots[i] }
    }

    /// A free slot, filled by `make` (given the slot's next generation) and marked in use.
    @inlinable package mutating func allocate(rank: Int, peer: Int, _ make: (UInt32) -> Slot) throws(CCLError) -> Int32 {
        guard let i = free.popLast() else {
            throw CCLError(.invalidUsage, "more than \(slots.count) outstanding requests", rank: rank, peer: peer)
        }
        var s = make((slots[Int(i)].generation &+ 1) & generationMask)
        s.inUse = true
        slots[Int(i)] = s
        return i
    }

    @inlinable package func handle(_ i: Int32) -> Request { Request(slot: UInt32(i), generation: slots[Int(i)].generation) }

    /// The slot of an outstanding request, or an error for a handle that is stale or was never issued.
    @inlinable package func validate(_ r: Request) throws(CCLError) -> Int32 {
        guard Int(r.slot) < slots.count, slots[Int(r.slot)].inUse, slots[Int(r.slot)].generation == r.generation else {
            throw CCLError.invalidUsage("request \(r.slot)/\(r.generation) is not outstanding (already completed?)")
        }
        return Int32(r.slot)
    }

    @inlinable package mutating func setError(_ i: Int32, _ e: CCLError) { errors[Int(i)] = e }

    @inlinable package mutating func takeError(_ i: Int32) -> CCLError {
        errors.removeValue(forKey: Int(i)) ?? CCLError(.internalError, "request failed")
    }

    /// Whether a request posted before `i` in `list` (one pair and direction, in posting order) with
    /// the same tag is still pending: same-tag messages complete in posting order.
    @inlinable package func earlierPending(_ i: Int32, in list: [Int32]) -> Bool {
        let tag = slots[Int(i)].tag
        for j in list {
            if j == i { return false }
            if slots[Int(j)].tag == tag && !slots[Int(j)].isDone { return true }
        }
        return false
    }

    @inlinable package mutating func release(_ i: Int32) {
        slots[Int(i)].inUse = false
        free.append(i)
    }

    /// The error of a request still pending at its deadline, naming the peer and what was awaited.
    package func timeoutError(_ i: Int32, rank: Int, over transport: String, peerAddress: String?) -> CCLError {
        let s = slots[Int(i)]
        let peer = Int(s.peer)
        let what = s.isSend ? "for rank \(peer) to take \(s.length) bytes (tag \(s.tag))"
                            : "to receive \(s.length) bytes from rank \(peer) (tag \(s.tag))"
        return CCLError(.timeout, "timed out waiting \(what)\(transport); the peer is stopped, overloaded, or not in the same operation",
                        rank: rank, peer: peer, peerAddress: peerAddress)
    }
}

/// A backend's abort state: `raise` from any thread sets the flag, keeps the first reason and writes
/// the eventfd that every blocking poll of the backend includes (a backend that sleeps elsewhere —
/// shared memory's doorbell — makes it without one and wakes itself).
@usableFromInline package final class AbortSignal: Sendable {
    package let wakeFD: Int32
    @usableFromInline let flag = Atomic<Bool>(false)
    private let reason = Mutex<String>("")

    package init(eventFD: Bool = true) throws(CCLError) {
        if !eventFD { wakeFD = -1; return }
        do { wakeFD = try Sys.eventFD() } catch { throw CCLError.system("eventfd", error) }
    }

    deinit { if wakeFD >= 0 { Sys.close(wakeFD) } }

    @inlinable package var isRaised: Bool { flag.load(ordering: .acquiring) }

    package func raise(_ why: String) {
        reason.withLock { if $0.isEmpty { $0 = why } }
        flag.store(true, ordering: .releasing)
        if wakeFD >= 0 { Sys.signal(eventFD: wakeFD) }
    }

    @usableFromInline package func error(rank: Int) -> CCLError {
        CCLError(.remoteError, "communicator aborted: \(reason.withLock { $0 })", rank: rank)
    }

    package func drain() { if wakeFD >= 0 { Sys.drain(eventFD: wakeFD) } }

    /// One `poll` over `set`, whose first entry is this signal's eventfd: the number of ready
    /// descriptors; throws the abort error if the signal woke it.
    package func poll(_ set: inout [pollfd], timeoutMs: Int32, rank: Int) throws(CCLError) -> Int {
        for k in set.indices { set[k].revents = 0 }
        let n: Int
        do throws(Errno) { n = try set.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: timeoutMs) } }
        catch { throw CCLError.system("poll", error).with(rank: rank) }
        if n > 0 && set[0].revents != 0 {
            drain()
            if isRaised { throw error(rank: rank) }
        }
        return n
    }
}
