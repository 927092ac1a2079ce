// Test support (as NIOTestUtils): a bare transport's testbed, raw sockets that misbehave on purpose,
// and the backends themselves, for the conformance suite and the rank helper.
@_exported import SwiftCCL
@_exported import SwcclTCP
@_exported import SwcclSHM
@_exported import SwcclVerbs
