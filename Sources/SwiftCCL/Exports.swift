// The Swift API is `import SwiftCCL`: the communicator and its configuration here, and the value
// types, errors and knobs its signatures use, from the layers below (re-exported; only their
// `public` declarations are visible — what crosses targets but is not API is `package`).
@_exported import SwcclSystem
@_exported import SwcclCore
@_exported import SwcclTransport
@_exported import SwcclBootstrap
@_exported import SwcclAlgorithms
