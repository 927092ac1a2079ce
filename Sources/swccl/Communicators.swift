// Communicators: unique ids, init (blocking, nonblocking, in a group), split, shrink, queries,
// finalize, destroy, abort, memory registration.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

// MARK: - communicators

@c @implementation
public func swcclGetUniqueId(_ uniqueId: UnsafeMutablePointer<swcclUniqueId>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        guard let uniqueId else { return invalid("uniqueId is NULL", operation: "swcclGetUniqueId") }
        do {
            let id = try UniqueID.make()
            withUnsafeMutableBytes(of: &uniqueId.pointee) { dst in
                dst.copyBytes(from: id.bytes)
            }
            return swcclSuccess
        } catch {
            return report(error, operation: "swcclGetUniqueId")
        }
    }
}

/// Makes a communicator for `out`: at once (blocking, outside a group); recorded and run at the
/// outermost swcclGroupEnd (inside a group: NCCL's one thread initialising several ranks); or in the
/// background (nonblocking: swcclInProgress at once, swcclCommGetAsyncError says when it is done).
/// A handle is given out at once in the last two cases; it is refused by other calls until ready.
func setUp(_ out: UnsafeMutablePointer<swcclComm_t?>, nonblocking: Bool, operation: String,
           _ make: @escaping @Sendable () throws(CCLError) -> Communicator) -> swcclResult_t {
    if !nonblocking && !Group.isActive {
        do {
            out.pointee = Handles.register(CommHandle(try make()))
            return swcclSuccess
        } catch {
            return report(error, operation: operation)
        }
    }
    let h = CommHandle(pendingNonblocking: nonblocking)
    out.pointee = Handles.register(h)
    let job: @Sendable () -> CCLError? = {
        switch catching(make) {
        case .success(let c): h.finish(.success(c)); return nil
        case .failure(let e):
            let e = e.with(operation: operation)
            h.finish(.failure(e))
            Handles.setThreadError(e.description)
            Log.info(.api, e.description)
            return e
        }
    }
    if Group.isActive {
        Group.recordJob(waits: !nonblocking, job)
        return swcclSuccess
    }
    do {
        try BackgroundThread.start { _ = job() }
    } catch {
        h.finish(.failure(error))
        return report(error, operation: operation)
    }
    return swcclInProgress
}

func initRank(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt,
              _ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> swcclResult_t {
    guard let comm else { return invalid("comm is NULL", operation: operation) }
    comm.pointee = nil
    guard nranks >= 1 else { return invalid("nranks \(nranks) must be at least 1", operation: operation) }
    guard rank >= 0, rank < nranks else { return invalid("rank \(rank) is out of range [0, \(nranks))", operation: operation) }
    let o: Options
    switch readOptions(config, operation: operation) {
    case .success(let v): o = v
    case .failure(let e): return report(e, operation: operation)
    }
    let bytes = withUnsafeBytes(of: commId) { Array($0) }
    let id: UniqueID
    do { id = try UniqueID(bytes: bytes) } catch { return report(error, operation: operation) }
    let cfg = o.config
    return setUp(comm, nonblocking: o.blocking == false, operation: operation) { () throws(CCLError) -> Communicator in
        try Communicator(id: id, rank: Int(rank), size: Int(nranks), config: cfg)
    }
}

@c @implementation
public func swcclCommInitRank(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        initRank(comm, nranks, commId, rank, nil, operation: "swcclCommInitRank")
    }
}

@c @implementation
public func swcclCommInitRankConfig(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt, _ commId: swcclUniqueId, _ rank: CInt,
                                    _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        return initRank(comm, nranks, commId, rank, config, operation: "swcclCommInitRankConfig")
    }
}

@c @implementation
public func swcclCommInitAll(_ comms: UnsafeMutablePointer<swcclComm_t?>?, _ nranks: CInt,
                             _ devlist: UnsafePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommInitAll"
        guard let comms else { return invalid("comms is NULL", operation: op) }
        guard nranks >= 1 else { return invalid("nranks \(nranks) must be at least 1", operation: op) }
        for i in 0..<Int(nranks) { comms[i] = nil }
        // Devices mean nothing on host memory; a list given is still checked as NCCL would.
        if let devlist {
            var seen = Set<CInt>()
            for i in 0..<Int(nranks) {
                let d = devlist[i]
                guard d >= 0 else { return invalid("devlist[\(i)] = \(d) is negative", operation: op) }
                guard seen.insert(d).inserted else {
                    return invalid("devlist[\(i)] = \(d) is a duplicate (device \(d) is listed twice; the entries must be distinct)", operation: op)
                }
            }
        }
        do {
            let all = try Communicator.initAll(count: Int(nranks))
            for (i, c) in all.enumerated() { comms[i] = Handles.register(CommHandle(c)) }
            return swcclSuccess
        } catch {
            return report(error, operation: op)
        }
    }
}

@c @implementation
public func swcclCommSplit(_ comm: swcclComm_t?, _ color: CInt, _ key: CInt, _ newcomm: UnsafeMutablePointer<swcclComm_t?>?,
                           _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommSplit"
        return withComm(comm, operation: op) { h in
            guard let newcomm else { return invalid("newcomm is NULL", h, operation: op) }
            newcomm.pointee = nil
            var cfg: CommConfig?
            var nonblocking = h.nonblocking  // config NULL: the parent's
            if config != nil {
                switch readOptions(config, operation: op) {
                case .success(let o):
                    cfg = o.config
                    if let b = o.blocking { nonblocking = !b }
                case .failure(let e): return report(e, h, operation: op)
                }
            }
            guard nonblocking else {
                do {
                    if let c = try h.comm.split(color: Int(color), key: Int(key), config: cfg) {
                        newcomm.pointee = Handles.register(CommHandle(c))
                    }
                    return swcclSuccess
                } catch {
                    return report(error, h, operation: op)
                }
            }
            // Nonblocking: the split runs on the parent's background queue, after the parent's
            // operations already queued there; both the parent and the new handle are in progress
            // until it finished (swcclCommGetAsyncError on either says when).
            guard color >= -1 else { return invalid("color \(color) is negative (use SWCCL_SPLIT_NOCOLOR for none)", h, operation: op) }
            let child = color == -1 ? nil : CommHandle(pendingNonblocking: true)
            let parent = h.comm
            do {
                let q = try h.backgroundQueue()
                try q.enqueue({ () throws(CCLError) in
                    do throws(CCLError) {
                        let c = try parent.split(color: Int(color), key: Int(key), config: cfg)
                        if let child {
                            if let c { child.finish(.success(c)) }
                            else { child.finish(.failure(CCLError(.internalError, "split gave no communicator for color \(color)").with(operation: op))) }
                        }
                    } catch {
                        child?.finish(.failure(error.with(operation: op)))
                        throw error
                    }
                }, finally: {
                    // Skipped after an earlier failure on the queue: the new handle fails too.
                    if let child, child.settingUp {
                        child.finish(.failure(CCLError.invalidUsage("the split did not run: an earlier operation of the parent communicator failed in the background").with(operation: op)))
                    }
                })
            } catch {
                return report(error, h, operation: op)
            }
            if let child { newcomm.pointee = Handles.register(child) }
            return swcclInProgress
        }
    }
}

@c @implementation
public func swcclCommShrink(_ comm: swcclComm_t?, _ excludeRanksList: UnsafeMutablePointer<CInt>?, _ excludeRanksCount: CInt,
                            _ newcomm: UnsafeMutablePointer<swcclComm_t?>?, _ config: UnsafeMutablePointer<swcclConfig_t>?,
                            _ shrinkFlags: CInt) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommShrink"
        return withComm(comm, operation: op) { h in
            guard let newcomm else { return invalid("newcomm is NULL", h, operation: op) }
            newcomm.pointee = nil
            guard excludeRanksCount >= 0 else { return invalid("excludeRanksCount \(excludeRanksCount) is negative", h, operation: op) }
            guard excludeRanksCount == 0 || excludeRanksList != nil else { return invalid("excludeRanksList is NULL with \(excludeRanksCount) ranks", h, operation: op) }
            guard shrinkFlags == 0 || shrinkFlags == 1 else { return invalid("shrinkFlags \(shrinkFlags) is neither SWCCL_SHRINK_DEFAULT nor SWCCL_SHRINK_ABORT", h, operation: op) }
            var cfg: CommConfig?
            var nonblocking = h.nonblocking  // of the new communicator; the shrink itself blocks
            if config != nil {
                switch readOptions(config, operation: op) {
                case .success(let o):
                    cfg = o.config
                    if let b = o.blocking { nonblocking = !b }
                case .failure(let e): return report(e, h, operation: op)
                }
            }
            let excluded = (0..<Int(excludeRanksCount)).map { Int(excludeRanksList![$0]) }
            do {
                if shrinkFlags == 1 { h.comm.abort() }
                _ = h.drainBackground()  // queued work of the parent ends (aborted, or completes) first
                let c = try h.comm.shrink(excluding: excluded, abortingInFlight: shrinkFlags == 1, config: cfg)
                newcomm.pointee = Handles.register(CommHandle(c, nonblocking: nonblocking))
                return swcclSuccess
            } catch {
                return report(error, h, operation: op)
            }
        }
    }
}

@c @implementation
public func swcclCommInitFromEnv(_ comm: UnsafeMutablePointer<swcclComm_t?>?, _ config: UnsafeMutablePointer<swcclConfig_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommInitFromEnv"
        guard let comm else { return invalid("comm is NULL", operation: op) }
        comm.pointee = nil
        let o: Options
        switch readOptions(config, operation: op) {
        case .success(let v): o = v
        case .failure(let e): return report(e, operation: op)
        }
        let cfg = o.config
        return setUp(comm, nonblocking: o.blocking == false, operation: op) { () throws(CCLError) -> Communicator in
            try Communicator.fromEnvironment(config: cfg)
        }
    }
}

@c @implementation
public func swcclCommCount(_ comm: swcclComm_t?, _ count: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommCount"
        return withComm(comm, operation: op) { h in
            guard let count else { return invalid("count is NULL", h, operation: op) }
            count.pointee = CInt(h.comm.size)
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommUserRank(_ comm: swcclComm_t?, _ rank: UnsafeMutablePointer<CInt>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommUserRank"
        return withComm(comm, operation: op) { h in
            guard let rank else { return invalid("rank is NULL", h, operation: op) }
            rank.pointee = CInt(h.comm.rank)
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommFinalize(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommFinalize"
        return withComm(comm, operation: op) { h in
            if h.nonblocking {
                // After the operations queued in the background; swcclCommGetAsyncError says when done.
                let c = h.comm
                do {
                    try h.backgroundQueue().enqueue({ () throws(CCLError) in try c.finalize() })
                } catch {
                    return report(error, h, operation: op)
                }
                return swcclInProgress
            }
            do throws(CCLError) { try h.comm.finalize() } catch { return report(error, h, operation: op) }
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommDestroy(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommDestroy"
        guard let comm else { return swcclSuccess }  // as NCCL: destroying NULL does nothing
        guard let h = Handles.unregister(comm) else {
            return report(.invalidUsage("comm \(comm) is not a live communicator (destroyed twice?)"), operation: op)
        }
        if h.pending {
            h.waitForSetup()  // bounded by the set-up's timeout
            if h.unready != nil { return swcclSuccess }  // its set-up failed: nothing to free
        }
        // In a forked child (Python's multiprocessing, a DataLoader worker exiting) the communicator is
        // the parent's: forget the handle, touch nothing the parent shares.
        if h.comm.owner.isInherited {
            Log.info(.api, "\(op): communicator \(h.comm.name) belongs to the parent process; this forked child only forgets it")
            return swcclSuccess
        }
        // Finalize first unless the caller did (its stream operations complete); its error, if any, is
        // returned, and the communicator is freed either way.
        var failure: CCLError?
        if let e = h.drainBackground(), !h.comm.isFinalized { Log.info(.api, "\(op): background work of the communicator had failed: \(e)") }
        do throws(CCLError) { try h.comm.finalize() } catch { if error.kind != .invalidUsage { failure = error } }
        h.comm.destroy()
        if let failure { return report(failure, operation: op) }
        return swcclSuccess
    }
}

@c @implementation
public func swcclCommAbort(_ comm: swcclComm_t?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommAbort"
        guard let comm else { return swcclSuccess }  // as NCCL: aborting NULL does nothing
        // Abort wakes any call blocked on this communicator; the handle stays valid until destroy... NCCL's
        // abort also frees the communicator, so do both: wake, then release our reference.
        guard let h = Handles.unregister(comm) else {
            return report(.invalidUsage("comm \(comm) is not a live communicator (destroyed already?)"), operation: op)
        }
        if h.pending {
            // A set-up still running aborts its communicator when it finishes.
            guard let c = h.abandon() else { return swcclSuccess }
            c.abort()
        } else {
            h.comm.abort()
        }
        _ = h.drainBackground()  // queued operations fail at once now
        return swcclSuccess
    }
}

@c @implementation
public func swcclCommGetAsyncError(_ comm: swcclComm_t?, _ asyncError: UnsafeMutablePointer<swcclResult_t>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommGetAsyncError"
        // Answers for a handle whose set-up is still running or failed (`Handles.live` would refuse it).
        return withLive(Handles.comms.live(comm, "comm", "communicator"), operation: op) { h in
            guard let asyncError else { return invalid("asyncError is NULL", operation: op) }
            // Its set-up first (running: in progress; failed: that error), then work queued in the
            // background (nonblocking), then the error that broke it.
            if h.pending, let e = h.unready {
                asyncError.pointee = h.settingUp ? swcclInProgress : result(e.kind)
                return swcclSuccess
            }
            if h.comm.owner.isInherited { return report(h.comm.owner.inheritedError("communicator \(h.comm.name)"), operation: op) }
            switch h.backgroundState {
            case nil: asyncError.pointee = swcclInProgress
            case .failure(let e)?: asyncError.pointee = result(e.kind)
            case .success?: asyncError.pointee = h.comm.asyncError.map { result($0.kind) } ?? swcclSuccess
            }
            return swcclSuccess
        }
    }
}

@c @implementation
public func swcclCommRegister(_ comm: swcclComm_t?, _ buff: UnsafeMutableRawPointer?, _ size: Int,
                              _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommRegister"
        return withComm(comm, operation: op) { h in
            guard let out else { return invalid("handle is NULL", h, operation: op) }
            guard let buff, size > 0 else { return invalid("buff is NULL or size is 0", h, operation: op) }
            do {
                let region = try h.comm.register(UnsafeMutableRawBufferPointer(start: buff, count: size))
                out.pointee = UnsafeMutableRawPointer(Registrations.table.register(RegistrationHandle(h, region)))
                return swcclSuccess
            } catch {
                return report(error, h, operation: op)
            }
        }
    }
}

@c @implementation
public func swcclCommDeregister(_ comm: swcclComm_t?, _ reg: UnsafeMutableRawPointer?) -> swcclResult_t {
    ForkSafety.run { () -> swcclResult_t in
        let op = "swcclCommDeregister"
        return withComm(comm, operation: op) { h in
            // Checked and removed under the table's lock: two threads deregistering one handle cannot both free it.
            guard let r = Registrations.table.unregister(reg.map { OpaquePointer($0) }, if: { $0.comm === h }) else {
                return invalid("handle is not a live registration of this communicator", h, operation: op)
            }
            h.comm.deregister(r.region)
            return swcclSuccess
        }
    }
}
