import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclAlgorithms

/// The collectives of the Swift API. Each entry point only describes its call (`CollectiveCall`);
/// `perform` runs every one the same way: the communicator usable, the root and the buffers checked
/// against the collective's layout (`CallArguments.Collective.layout`), the algorithm chosen, a
/// sequence number and a context whose tags carry the arguments' fingerprint, then the algorithm's
/// entry in `Algorithm.specs` — at once, at the end of the open group, or on the current stream.
extension Communicator {
    /// Reduces `count` elements of `type` from every rank's `send` with `op` and leaves the result in every
    /// rank's `recv`. In place when `send == recv`.
    /// With `preMulSum`, every rank's input is first multiplied by its scalar, then summed (`op` is
    /// then ignored); NCCL's `ncclRedOpCreatePreMulSum`.
    public func allReduce(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, op: ReduceOp,
                          preMulSum: PreMulSum? = nil) throws(CCLError) {
        try perform(CollectiveCall(.allreduce, send: send, recv: recv, count: count, type: type, op: op, preMulSum: preMulSum))
    }

    public func allReduce<T: CCLElement>(_ send: UnsafeBufferPointer<T>, into recv: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws(CCLError) {
        guard send.count == recv.count else {
            throw record(CCLError.invalidArgument("send has \(send.count) elements but recv \(recv.count)").with(operation: "allreduce", rank: rank))
        }
        try allReduce(send: UnsafeRawPointer(send.baseAddress), recv: UnsafeMutableRawPointer(recv.baseAddress), count: send.count, type: T.dataType, op: op)
    }

    public func allReduce<T: CCLElement>(_ buffer: inout [T], op: ReduceOp) throws(CCLError) {
        try buffer.withUnsafeMutableBufferPointer { (b) throws(CCLError) in
            try allReduce(send: UnsafeRawPointer(b.baseAddress), recv: UnsafeMutableRawPointer(b.baseAddress), count: b.count, type: T.dataType, op: op)
        }
    }

    /// Every rank receives the concatenation of all ranks' `sendCount` elements, in rank order.
    /// In place when `send == recv + rank * sendCount * size`.
    public func allGather(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, sendCount: Int, type: DataType) throws(CCLError) {
        try perform(CollectiveCall(.allgather, send: send, recv: recv, count: sendCount, type: type))
    }

    /// Reduces the ranks' arrays of `recvCount * size` elements and leaves block `rank` on each rank.
    /// In place when `recv == send + rank * recvCount * size`.
    public func reduceScatter(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, recvCount: Int, type: DataType, op: ReduceOp,
                              preMulSum: PreMulSum? = nil) throws(CCLError) {
        try perform(CollectiveCall(.reducescatter, send: send, recv: recv, count: recvCount, type: type, op: op, preMulSum: preMulSum))
    }

    /// Copies `count` elements of `send` on `root` into `recv` on every rank (`send` is read on the root
    /// only). In place when `send == recv`.
    public func broadcast(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try perform(CollectiveCall(.broadcast, send: send, recv: recv, count: count, type: type, root: root))
    }

    /// Reduces every rank's `count` elements with `op` into `recv` on `root` (`recv` is used on the root
    /// only). In place when `send == recv`.
    public func reduce(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, op: ReduceOp, root: Int,
                       preMulSum: PreMulSum? = nil) throws(CCLError) {
        try perform(CollectiveCall(.reduce, send: send, recv: recv, count: count, type: type, op: op, root: root, preMulSum: preMulSum))
    }

    /// Sends block j (`count` elements) of `send` to rank j and receives rank j's block into block j of
    /// `recv`. Not in place.
    public func allToAll(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType) throws(CCLError) {
        try perform(CollectiveCall(.alltoall, send: send, recv: recv, count: count, type: type))
    }

    /// Collects every rank's `count` elements into `recv` on `root`, in rank order. In place when
    /// `send == recv + root * count * size` on the root.
    public func gather(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try perform(CollectiveCall(.gather, send: send, recv: recv, count: count, type: type, root: root))
    }

    /// Sends block j of `send` on `root` to rank j. In place when `recv == send + root * count * size`
    /// on the root.
    public func scatter(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, root: Int) throws(CCLError) {
        try perform(CollectiveCall(.scatter, send: send, recv: recv, count: count, type: type, root: root))
    }

    /// Blocks until every rank calls it: a dissemination barrier over the transport (⌈log₂ n⌉ rounds
    /// of empty messages), so waiting ranks spin briefly and then sleep like any collective.
    public func barrier() throws(CCLError) {
        try perform(CollectiveCall(.barrier))
    }

    // MARK: the one path

    /// Checks and runs one collective call (see the extension's comment). Errors before the first
    /// transfer leave the communicator usable; any after it breaks the communicator.
    func perform(_ call: CollectiveCall) throws(CCLError) {
        let c = call.collective
        try run(c.name) { () throws(CCLError) in
            let type = call.type ?? .uint8
            if let root = call.root { try checkRoot(root) }
            let layout = c.layout(count: call.count, rank: rank, size: size, root: call.root ?? 0)
            try Validate.buffers(send: call.send, sendBytes: layout.sendCount, recv: call.recv, recvBytes: layout.recvCount, type: type,
                                 inPlaceOffset: layout.inPlace)
            try call.preMulSum?.check(type)
            let algorithm = c.kind.map { selector.choose($0, bytes: c.selectorBytes(call.count, type.size, ranks: size)) }
            let args = CallArguments(collective: c, count: call.count, type: call.type, op: call.preMulSum == nil ? call.op : .sum,
                                     root: call.root, preMulSum: call.preMulSum != nil, algorithm: algorithm)
            if Group.isActive {
                // Arguments were checked already; the operation itself runs at the group's end.
                try Group.record(self, c.name) { () throws(CCLError) in try self.runCollective(call, args) }
                return
            }
            if let stream = ExecutionStream.current {
                // Arguments were checked already; the operation runs on the stream's thread, in order.
                try enqueue(on: stream, c.name) { () throws(CCLError) in try self.runCollective(call, args) }
                return
            }
            try runCollective(call, args)
        }
    }

    /// Takes the sequence number and runs the algorithm. A failure is explained by a peer's other
    /// arguments when there is evidence of them; a disagreement found is told to every peer.
    private func runCollective(_ call: CollectiveCall, _ args: CallArguments) throws(CCLError) {
        let ctx = context(nextSequence(), operation: args.collective.name, arguments: args)
        do throws(CCLError) { try execute(call, args, ctx) } catch {
            let aborted = state.withLock { $0.aborted }
            let e = aborted ? error : ctx.explained(error)
            if let d = argumentCheck.take() { ctx.notifyDisagreement(culprit: d.peer, theirs: d.theirs) }
            throw e.with(sequence: ctx.sequence).breaking
        }
    }

    /// This rank's part: a call with count 0 is still a call (a barrier tagged with its fingerprint);
    /// a pre-multiplied sum scales the input first (into the output where it has the input's size,
    /// else into scratch of its own).
    private func execute(_ call: CollectiveCall, _ args: CallArguments, _ ctx: CollectiveContext) throws(CCLError) {
        guard call.count > 0, let type = call.type else { return try Barrier.zeroCount(ctx) }
        var input = call.send
        if let pm = call.preMulSum, let send = call.send {
            let layout = call.collective.layout(count: call.count, rank: rank, size: size, root: call.root ?? 0)
            let scaled = layout.scalesIntoRecv ? call.recv.unsafelyUnwrapped : try preMulScratch.get(layout.sendCount * type.size)
            pm.scale(into: scaled, from: send, count: layout.sendCount)
            input = UnsafeRawPointer(scaled)
        }
        try args.collective.run(args.algorithm, ctx, Operands(send: input, recv: call.recv, count: call.count, type: type,
                                                              op: args.op ?? .sum, root: call.root ?? 0))
    }

    func checkRoot(_ root: Int) throws(CCLError) {
        guard root >= 0, root < size else { throw CCLError.invalidArgument("root \(root) is out of range [0, \(size))") }
    }

    func nextSequence() -> UInt64 {
        sequence &+= 1
        return sequence
    }

    /// `fingerprint`: the tags' fingerprint when it is not the arguments' (0 for point-to-point waits).
    func context(_ sequence: UInt64, operation: String, arguments: CallArguments, fingerprint: UInt32? = nil) -> CollectiveContext {
        CollectiveContext.make(rank: rank, size: size, transport: transport, arena: arena, sequence: sequence,
                          fingerprint: fingerprint ?? arguments.fingerprint, arguments: arguments, check: argumentCheck,
                          operation: operation, timeoutMs: timeoutMs, scratch: scratch,
                          oneShot: oneShot, steps: steps, blame: blame)
    }
}

/// One collective call as its entry point describes it. `count` is the count the entry point takes
/// (`Operands.count`); `type` is nil for the barrier, `op` for collectives without one, `root` for
/// those without a root.
struct CollectiveCall {
    let collective: CallArguments.Collective
    var send: UnsafeRawPointer?
    var recv: UnsafeMutableRawPointer?
    var count: Int
    var type: DataType?
    var op: ReduceOp?
    var root: Int?
    var preMulSum: PreMulSum?

    @inline(__always)
    init(_ collective: CallArguments.Collective, send: UnsafeRawPointer? = nil, recv: UnsafeMutableRawPointer? = nil, count: Int = 0,
         type: DataType? = nil, op: ReduceOp? = nil, root: Int? = nil, preMulSum: PreMulSum? = nil) {
        self.collective = collective; self.send = send; self.recv = recv; self.count = count; self.type = type; self.op = op
        self.root = root; self.preMulSum = preMulSum
    }
}

extension CallArguments.Collective {
    /// What one rank's part reads and writes, in elements (0: that buffer is not used on this rank).
    struct Layout {
        var sendCount: Int
        var recvCount: Int
        /// The element offset of `send` relative to `recv` at which the two may coincide (the in-place
        /// form); nil: the collective has none, any overlap is an error.
        var inPlace: Int?
        /// Whether a pre-multiplied sum scales the input into `recv` (same size) rather than scratch.
        var scalesIntoRecv = false
    }

    /// The table of buffer layouts: `count` as the entry point takes it, on `rank` of `size`.
    @inline(__always)
    func layout(count: Int, rank: Int, size: Int, root: Int) -> Layout {
        let isRoot = rank == root
        switch self {
        case .allreduce: return Layout(sendCount: count, recvCount: count, inPlace: 0, scalesIntoRecv: true)
        case .allgather: return Layout(sendCount: count, recvCount: count * size, inPlace: rank * count)
        case .reducescatter: return Layout(sendCount: count * size, recvCount: count, inPlace: -rank * count)
        case .broadcast: return Layout(sendCount: isRoot ? count : 0, recvCount: count, inPlace: 0)
        case .reduce: return Layout(sendCount: count, recvCount: isRoot ? count : 0, inPlace: 0)
        case .alltoall: return Layout(sendCount: count * size, recvCount: count * size, inPlace: nil)
        case .gather: return Layout(sendCount: count, recvCount: isRoot ? count * size : 0, inPlace: root * count)
        case .scatter: return Layout(sendCount: isRoot ? count * size : 0, recvCount: count, inPlace: -root * count)
        case .barrier: return Layout(sendCount: 0, recvCount: 0, inPlace: nil)
        }
    }
}
