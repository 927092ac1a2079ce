import SwcclSystem

/// What identifies the machine a rank runs on. Exchanged at bootstrap; "same host" is decided from it
/// (boot id and the device of /dev/shm must both match), never from environment variables.
public struct HostIdentity: Sendable, Equatable, CustomStringConvertible {
    public var hostname: String
    public var bootID: String
    public var shmDevice: UInt64

    public init(hostname: String, bootID: String, shmDevice: UInt64) { self.hostname = hostname; self.bootID = bootID; self.shmDevice = shmDevice }

    public static let local: HostIdentity = HostIdentity(
        hostname: Sys.hostname(),
        bootID: Sys.readLine(path: "/proc/sys/kernel/random/boot_id") ?? "",
        shmDevice: Sys.deviceID(path: "/dev/shm") ?? 0)

    public func sameHost(as other: HostIdentity) -> Bool {
        !bootID.isEmpty && bootID == other.bootID && shmDevice == other.shmDevice
    }

    public var description: String { "\(hostname) boot \(bootID.prefix(8)) shm dev \(shmDevice)" }

    package func encode(into w: inout ByteWriter) {
        w.string(hostname); w.string(bootID); w.u64(shmDevice)
    }

    package static func decode(_ r: inout ByteReader) throws(CCLError) -> HostIdentity {
        HostIdentity(hostname: try r.string(), bootID: try r.string(), shmDevice: try r.u64())
    }
}

package enum Host {
    package static let name: String? = Sys.hostname()
}
