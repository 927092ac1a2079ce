import SwcclSystem

/// The library version; equals the SWCCL_MAJOR/MINOR/PATCH macros of include/swccl.h.
public enum SwiftCCLVersion {
    public static let major = 0
    public static let minor = 1
    public static let patch = 0
    /// MAJOR*10000 + MINOR*100 + PATCH, as `swcclGetVersion` returns it.
    public static let code = major * 10000 + minor * 100 + patch
    public static let string = "\(major).\(minor).\(patch)"
}
