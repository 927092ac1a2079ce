import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Persistent, pre-faulted scratch memory of a communicator (grown on demand, never per call).
package final class Scratch: @unchecked Sendable {
    package init() {}
    private var base: UnsafeMutableRawPointer?
    private var capacity = 0

    /// At least `bytes` of scratch; `systemError` (not a crash) when the memory cannot be had.
    package func get(_ bytes: Int) throws(CCLError) -> UnsafeMutableRawPointer {
        if bytes > capacity {
            free(base)
            base = nil
            capacity = 0
            let want = max(bytes, 64 << 10)
            var p: UnsafeMutableRawPointer?
            let rc = posix_memalign(&p, 4096, want)
            guard rc == 0, let p else {
                throw CCLError.system("cannot allocate \(want) bytes of scratch memory", Errno(rc == 0 ? ENOMEM : rc))
            }
            memset(p, 0, want)  // fault the pages in now, not inside the collective
            base = p
            capacity = want
        }
        return base!
    }

    package func release() { free(base); base = nil; capacity = 0 }
}
