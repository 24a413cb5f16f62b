import Foundation
import IR
import Runtime

#if canImport(Glibc)
  import Glibc
#endif

/// Data-parallel training over MPI (Open MPI): the ranks of one `mpirun` job, each training on its
/// share of every global batch, with the adapter gradients summed across ranks before the update.
///
/// lorac does not link MPI: under `mpirun` (Open MPI sets `OMPI_COMM_WORLD_SIZE`) it loads
/// `libmpi.so.40` at run time, so a plain run needs no MPI installed. Every collective here has a
/// fixed summation order, so a rerun with the same ranks and threads is bit-identical, and every
/// rank ends with the same bits.
public final class DataParallel {
  public let rank: Int
  public let size: Int
  private let mpi: MPILibrary

  /// The job this process belongs to when launched by `mpirun` with more than one rank, else nil
  /// (a plain run, or `mpirun -np 1`).
  public static func fromEnvironment(
    _ environment: [String: String] = ProcessInfo.processInfo
      .environment
  ) throws(SessionError) -> DataParallel? {
    guard let text = environment["OMPI_COMM_WORLD_SIZE"] else {
      if environment["PMI_SIZE"] != nil || environment["PMIX_RANK"] != nil {
        throw SessionError(
          "launched by an MPI other than Open MPI (PMI_SIZE or PMIX_RANK is set); lorac's "
            + "data-parallel training runs under Open MPI's mpirun")
      }
      return nil
    }
    guard let size = Int(text), size >= 1 else {
      throw SessionError("OMPI_COMM_WORLD_SIZE is '\(text)', not a count of ranks")
    }
    if size == 1 { return nil }
    let mpi = try MPILibrary.load()
    return try DataParallel(mpi, expectedSize: size)
  }

  private init(_ mpi: MPILibrary, expectedSize: Int) throws(SessionError) {
    self.mpi = mpi
    var initialized: Int32 = 0
    _ = mpi.initialized(&initialized)
    if initialized == 0 {
      guard mpi.initialize(nil, nil) == 0 else { throw SessionError("MPI_Init failed") }
    }
    var rank: Int32 = 0
    var size: Int32 = 0
    _ = mpi.commRank(mpi.world, &rank)
    _ = mpi.commSize(mpi.world, &size)
    guard Int(size) == expectedSize else {
      throw SessionError(
        "MPI reports \(size) ranks but OMPI_COMM_WORLD_SIZE says \(expectedSize)")
    }
    self.rank = Int(rank)
    self.size = Int(size)
  }

  deinit { _ = mpi.finalize() }

  /// Sums `count` floats at `buffer` across the ranks, in place.
  ///
  /// A ring (reduce-scatter, then all-gather): each rank sends and receives about
  /// `2 · count · (size - 1) / size` floats. Each slice is summed in one fixed order by one rank
  /// and copied to the others.
  public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws(SessionError) {
    guard size > 1, count > 0 else { return }
    let bounds = (0...size).map { $0 * count / size }
    let longest = (0..<size).map { bounds[$0 + 1] - bounds[$0] }.max() ?? 0
    let received = UnsafeMutablePointer<Float>.allocate(capacity: max(longest, 1))
    defer { received.deallocate() }
    let (right, left) = ((rank + 1) % size, (rank + size - 1) % size)
    func exchange(send: Int, receive: Int, into target: UnsafeMutablePointer<Float>)
      throws(SessionError)
    {
      let sendCount = bounds[send + 1] - bounds[send]
      let receiveCount = bounds[receive + 1] - bounds[receive]
      let status = mpi.sendReceive(
        buffer + bounds[send], Int32(sendCount), mpi.float, Int32(right), 17,
        target, Int32(receiveCount), mpi.float, Int32(left), 17, mpi.world, nil)
      guard status == 0 else { throw SessionError("MPI_Sendrecv failed with code \(status)") }
    }
    // Reduce-scatter: after step s the slice (rank - s - 1) holds the sum of s + 2 ranks' parts.
    for step in 0..<(size - 1) {
      let send = (rank - step + size) % size
      let receive = (rank - step - 1 + 2 * size) % size
      try exchange(send: send, receive: receive, into: received)
      let slice = buffer + bounds[receive]
      for index in 0..<(bounds[receive + 1] - bounds[receive]) { slice[index] += received[index] }
    }
    // All-gather: rank r holds slice (r + 1) summed; pass the finished slices around the ring.
    for step in 0..<(size - 1) {
      let send = (rank + 1 - step + size) % size
      let receive = (rank - step + size) % size
      try exchange(send: send, receive: receive, into: buffer + bounds[receive])
    }
  }

  /// Every rank's `values` (the same count on each), in rank order.
  public func allGather(_ values: [Double]) throws(SessionError) -> [[Double]] {
    var result = [Double](repeating: 0, count: values.count * size)
    let status = values.withUnsafeBytes { send in
      result.withUnsafeMutableBytes { receive in
        mpi.allGather(
          send.baseAddress, Int32(values.count), mpi.double, receive.baseAddress,
          Int32(values.count), mpi.double, mpi.world)
      }
    }
    guard status == 0 else { throw SessionError("MPI_Allgather failed with code \(status)") }
    return (0..<size).map { Array(result[($0 * values.count)..<(($0 + 1) * values.count)]) }
  }

  /// Every rank's `values` (the same count on each), concatenated in rank order.
  public func allGather(floats values: [Float]) throws(SessionError) -> [Float] {
    guard values.count <= Int(Int32.max) else {
      throw SessionError("MPI_Allgather: \(values.count) floats per rank are too many")
    }
    var result = [Float](repeating: 0, count: values.count * size)
    let status = values.withUnsafeBytes { send in
      result.withUnsafeMutableBytes { receive in
        mpi.allGather(
          send.baseAddress, Int32(values.count), mpi.float, receive.baseAddress,
          Int32(values.count), mpi.float, mpi.world)
      }
    }
    guard status == 0 else { throw SessionError("MPI_Allgather failed with code \(status)") }
    return result
  }

  /// Every rank's text (for fingerprints), in rank order.
  public func allGather(text: String) throws(SessionError) -> [String] {
    // Lengths first, then the bytes padded to the longest.
    let bytes = Array(text.utf8)
    let lengths = try allGather([Double(bytes.count)]).map { Int($0[0]) }
    let longest = lengths.max() ?? 0
    var padded = [UInt8](repeating: 0, count: longest)
    padded.replaceSubrange(0..<bytes.count, with: bytes)
    var result = [UInt8](repeating: 0, count: longest * size)
    let status = padded.withUnsafeBytes { send in
      result.withUnsafeMutableBytes { receive in
        mpi.allGather(
          send.baseAddress, Int32(longest), mpi.byte, receive.baseAddress, Int32(longest),
          mpi.byte, mpi.world)
      }
    }
    guard status == 0 else { throw SessionError("MPI_Allgather failed with code \(status)") }
    return (0..<size).map {
      String(decoding: result[($0 * longest)..<($0 * longest + lengths[$0])], as: UTF8.self)
    }
  }

  /// Stops every rank of the job (after a rank found an error the others cannot see): a rank that
  /// merely exited would leave the others waiting in a collective, and its own MPI_Finalize
  /// waiting for them.
  public func abort(code: Int32) -> Never {
    _ = mpi.abort(mpi.world, code)
    exit(code)
  }
}

/// The few MPI functions lorac calls, looked up in Open MPI's `libmpi.so.40` at run time.
///
/// Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, ...) are the addresses of its global objects
/// `ompi_mpi_comm_world`, `ompi_mpi_float`, ...; `MPI_STATUS_IGNORE` is a null pointer.
struct MPILibrary {
  typealias Handle = OpaquePointer?
  let initialize: @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
  let initialized: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
  let finalize: @convention(c) () -> Int32
  let commRank: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
  let commSize: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
  let sendReceive:
    @convention(c) (
      UnsafeRawPointer?, Int32, Handle, Int32, Int32, UnsafeMutableRawPointer?, Int32, Handle,
      Int32, Int32, Handle, OpaquePointer?
    ) -> Int32
  let allGather:
    @convention(c) (
      UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle
    )
      -> Int32
  let abort: @convention(c) (Handle, Int32) -> Int32
  let world: Handle
  let float: Handle
  let double: Handle
  let byte: Handle

  static func load() throws(SessionError) -> MPILibrary {
    var library: UnsafeMutableRawPointer?
    for name in ["libmpi.so.40", "libmpi.so"] {
      // RTLD_GLOBAL: Open MPI's plugins resolve their symbols against libmpi.
      library = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
      if library != nil { break }
    }
    guard let library else {
      let reason = dlerror().map { String(cString: $0) } ?? "not found"
      throw SessionError(
        "launched under mpirun, but Open MPI's library cannot be loaded (\(reason)); install "
          + "openmpi-bin and libopenmpi-dev (scripts/setup does)")
    }
    func symbol(_ name: String) throws(SessionError) -> UnsafeMutableRawPointer {
      guard let address = dlsym(library, name) else {
        throw SessionError("Open MPI's library has no symbol '\(name)' (not Open MPI 4 or 5?)")
      }
      return address
    }
    func function<T>(_ name: String, as type: T.Type) throws(SessionError) -> T {
      unsafeBitCast(try symbol(name), to: type)
    }
    return MPILibrary(
      initialize: try function(
        "MPI_Init", as: (@convention(c) (OpaquePointer?, OpaquePointer?) -> Int32).self),
      initialized: try function(
        "MPI_Initialized", as: (@convention(c) (UnsafeMutablePointer<Int32>) -> Int32).self),
      finalize: try function("MPI_Finalize", as: (@convention(c) () -> Int32).self),
      commRank: try function(
        "MPI_Comm_rank", as: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self),
      commSize: try function(
        "MPI_Comm_size", as: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self),
      sendReceive: try function(
        "MPI_Sendrecv",
        as: (@convention(c) (
          UnsafeRawPointer?, Int32, Handle, Int32, Int32, UnsafeMutableRawPointer?, Int32, Handle,
          Int32, Int32, Handle, OpaquePointer?
        ) -> Int32).self),
      allGather: try function(
        "MPI_Allgather",
        as: (@convention(c) (
          UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle
        ) -> Int32).self),
      abort: try function("MPI_Abort", as: (@convention(c) (Handle, Int32) -> Int32).self),
      world: OpaquePointer(try symbol("ompi_mpi_comm_world")),
      float: OpaquePointer(try symbol("ompi_mpi_float")),
      double: OpaquePointer(try symbol("ompi_mpi_double")),
      byte: OpaquePointer(try symbol("ompi_mpi_byte")))
  }
}

extension DataParallel {
  /// Fails on every rank unless all ranks run the same model, data, settings and resumed step
  /// (each rank's summary against rank 0's, gathered by all).
  func checkAgreement(record: CheckpointRecord, resumedStep: Int?, examples: Int, folder: URL)
    throws(SessionError)
  {
    let parts = [
      ("model", record.modelFingerprint),
      ("data", "\(record.dataFingerprint) (\(examples) examples)"),
      (
        "settings",
        record.settings.keys.sorted().map { "\($0)=\(record.settings[$0] ?? "")" }
          .joined(separator: " ")
      ),
      ("seed", String(record.seed)), ("resumed step", resumedStep.map(String.init) ?? "none"),
      // Kernels sum in an order that depends on the thread count (the clipping norm, say), so
      // ranks with different counts would drift apart.
      ("threads", String(Threads.count)),
      ("output folder", folder.standardizedFileURL.path),
    ]
    try checkAgreement(parts)
  }

  /// Fails on every rank unless all ranks give the same `parts` (name, value) as rank 0, naming
  /// the first that differs.
  func checkAgreement(_ parts: [(String, String)]) throws(SessionError) {
    let mine = parts.map { "\($0.0): \($0.1)" }.joined(separator: "\n")
    let all = try allGather(text: mine)
    let first = all[0].split(separator: "\n", omittingEmptySubsequences: false)
    for (other, text) in all.enumerated().dropFirst() where text != all[0] {
      let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
      let differing = zip(first, lines).first { $0 != $1 }
      throw SessionError(
        "rank \(other) disagrees with rank 0 on its \(differing.map { String($0.0.prefix { $0 != ":" }) } ?? "setup") "
          + "(rank 0 \(differing.map { String($0.0) } ?? ""); rank \(other) \(differing.map { String($0.1) } ?? "")); "
          + "every rank must run the same command on the same files")
    }
  }

  /// Fails on every rank unless all ranks hold the same adapter bits after `step` (`unit`
  /// names what is counted; `what` the parameters compared).
  ///
  /// For tests only: with `LORAC_TEST_PERTURB_RANK` set to this rank's number (and
  /// `LORAC_TEST_PERTURB_FROM`, if set, at most `step`), the first element of the first parameter
  /// is changed first, as a rank that drifted would be, so the comparison must fail.
  func checkSameAdapter(
    _ executable: Executable, _ parameters: [String], step: Int, unit: String = "step",
    what: String = "adapters"
  ) throws(SessionError) {
    try perturbForTests(executable, parameters, step: step)
    var fingerprint = Fingerprint()
    for name in parameters {
      let tensor = try wrapping { try executable.value(named: name) }
      tensor.data.withUnsafeBytes { fingerprint.add(bytes: $0) }
    }
    let all = try allGather(text: fingerprint.hex)
    if let other = all.indices.first(where: { all[$0] != all[0] }) {
      throw SessionError(
        "the ranks' \(what) differ after \(unit) \(step) (rank 0 \(all[0]), rank \(other) "
          + "\(all[other])); stopping before a checkpoint is written")
    }
  }

  /// The test hook of `checkSameAdapter` (docs/distributed.md): adds 1 to the first element of the
  /// first parameter on rank `LORAC_TEST_PERTURB_RANK` from step `LORAC_TEST_PERTURB_FROM` on.
  private func perturbForTests(_ executable: Executable, _ parameters: [String], step: Int)
    throws(SessionError)
  {
    let environment = ProcessInfo.processInfo.environment
    guard let text = environment["LORAC_TEST_PERTURB_RANK"], Int(text) == rank,
      step >= Int(environment["LORAC_TEST_PERTURB_FROM"] ?? "") ?? 0,
      let name = parameters.first
    else { return }
    let tensor = try wrapping { try executable.value(named: name) }
    var values = tensor.floats()
    guard !values.isEmpty else { return }
    values[0] += 1
    try wrapping { try executable.set(name, HostTensor(shape: tensor.type.shape, floats: values)) }
  }
}
