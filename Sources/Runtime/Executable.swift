import CKernels
import Foundation
import IR

/// A graph compiled for the CPU: a schedule of kernel calls over one planned arena.
///
/// Inputs, parameters and state live in buffers the executable owns; constants are bound by name
/// and read in place (zero-copy) when their bytes are aligned; every intermediate lives in the
/// arena at the offset `plan` gives. `execute()` allocates nothing.
public final class Executable {
  public let graph: Graph
  public let plan: ArenaPlan
  /// The kernel of every instruction, its weight form, ISA path, scratch and whether it runs
  /// once: the steps and the arena are made from it, nothing decides again.
  public let kernelPlan: KernelPlan

  private let arena: UnsafeMutableRawPointer
  /// Storage of inputs, parameters, state, literals and unaligned constants, freed on deinit.
  private var owned: [UnsafeMutableRawPointer] = []
  /// Constants read in place, retained so their bytes outlive the executable's use of them.
  private var retained: [Value: HostTensor] = [:]
  /// The address of every value.
  private var addresses: [UnsafeMutableRawPointer?]
  /// Input, parameter and state buffers by name.
  private var bindable: [String: (value: Value, address: UnsafeMutableRawPointer)] = [:]
  private var steps: [Step] = []
  /// Packed forms of constants by kind (in `ownForms`, or in `shared`).
  private var forms: [FormKey: UnsafeMutableRawPointer] = [:]
  /// Packed forms shared with other executables (nil: each is made here).
  private let shared: PackedForms?
  /// This executable's own packed forms (freed with it).
  private lazy var ownForms = PackedForms()
  /// The factor every `lora_linear` branch is scaled by at run time (see `adapterScale`).
  let adapterFactor = UnsafeMutablePointer<Float>.allocate(capacity: 1)

  /// A run-time factor on the LoRA branch of every `lora_linear` instruction.
  ///
  /// 1 (the default) runs the adapter as trained; 0 switches it off, so the same executable and
  /// weights serve as the frozen base model (a reference policy) with no second copy; other values
  /// blend. With 0 the branch's second product is skipped. Graphs whose LoRA branches were not fused
  /// have none to switch: `hasAdapterSwitch` tells.
  public var adapterScale: Float {
    get { adapterFactor.pointee }
    set { adapterFactor.pointee = newValue }
  }

  /// Whether the graph has `lora_linear` instructions or an `%adapter_scale` input (unfused,
  /// per-head branches) for `adapterScale` to act on.
  public var hasAdapterSwitch: Bool {
    scaleInput != nil || graph.body.contains { if case .loraLinear = $0.op { true } else { false } }
  }

  /// The buffer of the graph's `%adapter_scale: f32[]` input, written from `adapterScale` before
  /// every run (an input's buffer may be reused within a run).
  private lazy var scaleInput: UnsafeMutablePointer<Float>? = {
    guard let binding = bindable[adapterScaleInputName],
      graph.inputs.contains(where: { $0.name == adapterScaleInputName && $0.value == binding.value }
      ),
      graph.type(of: binding.value) == TensorType(.f32, [])
    else { return nil }
    return binding.address.assumingMemoryBound(to: Float.self)
  }()

  /// One kernel call; returns an error message (only when an index is out of range).
  struct Step {
    var instruction: Int
    var run: () -> String?
  }

  /// Compiles `graph` for `target`, binding its constants by name.
  ///
  /// Parameters and state start from their initializer (zeros when they have none) and can be
  /// replaced with `set(_:_:)`.
  /// - Throws: `RuntimeError` when this CPU cannot run the target's ISA tier, for a missing or
  ///   mismatched constant, or an op the kernels do not implement for the given types.
  /// With `packedForms`, constants read in place are packed once for every executable made with
  /// the same store (a model's decoding graphs of several lengths, say).
  public convenience init(
    _ graph: Graph, constants: [String: HostTensor] = [:], packedForms: PackedForms? = nil,
    target: Target = .host
  ) throws(RuntimeError) {
    try self.init(
      graph, plan: KernelPlan(graph, target: target, sharedForms: packedForms != nil),
      constants: constants, packedForms: packedForms)
  }

  /// Binds `graph` to a kernel plan made for it (`KernelPlan(graph, target:)`, or one read back
  /// from a bundle), binding its constants by name.
  /// - Throws: `RuntimeError` when the plan does not have one entry per instruction or this CPU
  ///   cannot run its target, and as `init(_:constants:packedForms:target:)`.
  public init(
    _ graph: Graph, plan kernelPlan: KernelPlan, constants: [String: HostTensor] = [:],
    packedForms: PackedForms? = nil
  ) throws(RuntimeError) {
    try kernelPlan.target.checkHost()
    guard kernelPlan.entries.count == graph.body.count else {
      throw RuntimeError(
        message:
          "a kernel plan of \(kernelPlan.entries.count) entries for a graph of \(graph.body.count) instructions"
      )
    }
    self.graph = graph
    self.kernelPlan = kernelPlan
    shared = packedForms
    adapterFactor.initialize(to: 1)
    let once = kernelPlan.runsOnce
    runsOnce = once
    // What runs once and is read by later runs keeps its own range for the whole program.
    var onceResults = Set<Value>()
    for index in once { onceResults.formUnion(graph.body[index].results) }
    plan = ArenaPlan(
      graph, scratchBytes: { kernelPlan.entries[$0].scratchBytes }, runsOnce: onceResults)
    arena = Executable.mapArena(max(plan.arenaBytes, 64))
    addresses = [UnsafeMutableRawPointer?](repeating: nil, count: graph.types.count)
    // Every stored property is set, so a throw from here on runs deinit, which frees the arena
    // and the buffers made so far.
    try bindStorage(constants: constants)
    var initial: [Step] = []
    for (index, instruction) in graph.body.enumerated() {
      guard let step = try makeStep(index, instruction) else { continue }
      if once.contains(index) { initial.append(step) } else { steps.append(step) }
    }
    applyThreads()
    try run(initial)
    releasePackedOnly()
  }

  /// Lets go of bf16 constants that only packed products read (they read the packed forms), so
  /// their bytes are freed once the caller drops its copy of the weights too.
  private func releasePackedOnly() {
    let packedWeights = forms.keys.compactMap { key -> Value? in
      if case .bf16 = key.kind { key.weight } else { nil }
    }
    guard !packedWeights.isEmpty else { return }
    var read = Set(graph.outputs)
    for (index, instruction) in graph.body.enumerated() {
      let packedWeight =
        kernelPlan.entries[index].kernel == .bf16Packed ? instruction.operands[1].value : nil
      for (position, operand) in instruction.operands.enumerated() {
        guard let value = operand.value, !(position == 1 && value == packedWeight) else { continue }
        read.insert(value)
      }
    }
    for weight in packedWeights where !read.contains(weight) { retained[weight] = nil }
  }

  /// Returns freed heap memory to the system (glibc keeps freed blocks of a few MB, such as the
  /// bf16 copies that packing made redundant, in its heap otherwise).
  public static func trimHeap() {
    lc_trim_heap()
  }

  /// Instructions that run once, at load: their operands depend only on constants and literals
  /// (`iota`, `fill`, the causal mask, a merged weight `W + s A B` of frozen factors); computed
  /// when the executable is made, and not again by `execute()` (`KernelPlan.Entry.runsOnce`).
  public let runsOnce: Set<Int>

  deinit {
    adapterFactor.deallocate()
    munmap(arena, max(plan.arenaBytes, 64))
    for buffer in owned { free(buffer) }
  }

  // MARK: - Running

  /// Gives the pages of the arena's workspace (every intermediate and output of a run; not the
  /// values computed once at load, nor inputs, parameters and state) back to the system.
  ///
  /// For executables that take turns (a rollout's decoding graphs, an evaluation graph and a
  /// training step): each one's workspace is resident only while it is used, so the peak is the
  /// largest of them rather than their sum. The next `execute()` faults the pages back in, zeroed;
  /// outputs must be read before this.
  public func releaseWorkspace() {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (plan.persistentBytes + page - 1) / page * page
    let end = max(plan.arenaBytes, 64)
    guard end > start else { return }
    _ = madvise(arena + start, end - start, MADV_DONTNEED)
  }

  /// Runs every kernel once over the current inputs, parameters and state.
  public func execute() throws(RuntimeError) {
    applyThreads()
    scaleInput?.pointee = adapterScale
    try run(steps)
  }

  /// Sets the target's thread count when it has one and another is in force (OpenMP's count is
  /// process-wide).
  private func applyThreads() {
    if let threads = kernelPlan.target.threads, Threads.count != threads { Threads.set(threads) }
  }

  /// Runs every kernel once, like `execute()`, timing each: seconds by instruction index.
  public func executeTimed() throws(RuntimeError) -> [Int: Double] {
    applyThreads()
    scaleInput?.pointee = adapterScale
    var seconds: [Int: Double] = [:]
    for step in steps {
      let start = DispatchTime.now().uptimeNanoseconds
      try run([step])
      seconds[step.instruction, default: 0] +=
        Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
    return seconds
  }

  private func run(_ steps: [Step]) throws(RuntimeError) {
    for step in steps {
      if let message = step.run() {
        let instruction = graph.body[step.instruction]
        let name = instruction.name.map { " \"\($0)\"" } ?? ""
        throw RuntimeError(
          message: "instruction \(step.instruction) (\(instruction.op.mnemonic)\(name)): \(message)"
        )
      }
    }
  }

  /// Sets the named inputs, runs, and returns copies of the outputs.
  public func run(inputs: [String: HostTensor] = [:]) throws(RuntimeError) -> [HostTensor] {
    for (name, tensor) in inputs { try set(name, tensor) }
    try execute()
    return graph.outputs.indices.map(output)
  }

  /// Copies `tensor` into the input, parameter or state called `name`.
  public func set(_ name: String, _ tensor: HostTensor) throws(RuntimeError) {
    guard let binding = bindable[name] else {
      let names = bindable.keys.sorted().joined(separator: ", ")
      throw RuntimeError(message: "no input, parameter or state named '\(name)' (have: \(names))")
    }
    let type = graph.type(of: binding.value)
    guard tensor.type == type else {
      throw RuntimeError(message: "'\(name)' is \(type), got \(tensor.type)")
    }
    tensor.data.withUnsafeBytes { bytes in
      if let base = bytes.baseAddress {
        binding.address.copyMemory(from: base, byteCount: type.byteCount)
      }
    }
  }

  /// A copy of the current value of an input, parameter or state.
  public func value(named name: String) throws(RuntimeError) -> HostTensor {
    guard let binding = bindable[name] else {
      throw RuntimeError(message: "no input, parameter or state named '\(name)'")
    }
    return copy(binding.value)
  }

  /// The value and buffer of a parameter or state, for optimizers in this module.
  func parameterStorage(_ name: String) throws(RuntimeError) -> (Value, UnsafeMutableRawPointer) {
    guard let binding = bindable[name],
      graph.declarations.contains(where: { $0.name == name && $0.kind != .constant })
    else {
      throw RuntimeError(message: "no parameter named '\(name)'")
    }
    return (binding.value, binding.address)
  }

  /// Copies every state buffer that `other` has under the same name and type (a prefill graph
  /// handing its key/value caches to the one-token step graph).
  public func copyState(from other: Executable) throws(RuntimeError) {
    for declaration in graph.declarations where declaration.kind == .state {
      guard let source = other.bindable[declaration.name], let target = bindable[declaration.name]
      else { throw RuntimeError(message: "no state named '\(declaration.name)' to copy") }
      let type = graph.type(of: declaration.value)
      guard other.graph.type(of: source.value) == type else {
        throw RuntimeError(
          message:
            "state '\(declaration.name)' is \(type) here but \(other.graph.type(of: source.value)) there"
        )
      }
      target.address.copyMemory(from: source.address, byteCount: type.byteCount)
    }
  }

  /// Puts every state buffer back to its declared initial value (zeros when it has none), as in a
  /// newly compiled executable: a prefill that starts again from empty key/value caches.
  public func resetState() {
    for declaration in graph.declarations where declaration.kind == .state {
      guard let binding = bindable[declaration.name] else { continue }
      initialize(declaration, at: binding.address)
    }
  }

  /// Writes a parameter's or state's initial value (its initializer, zeros without one) to
  /// `address`.
  private func initialize(_ declaration: Declaration, at address: UnsafeMutableRawPointer) {
    let type = graph.type(of: declaration.value)
    let initializer = declaration.initializer ?? .zeros
    if case .zeros = initializer {
      address.initializeMemory(as: UInt8.self, repeating: 0, count: type.byteCount)
      return
    }
    initializer.values(for: type, seed: declaration.seed ?? 0).host.data.withUnsafeBytes {
      bytes in
      if let base = bytes.baseAddress { address.copyMemory(from: base, byteCount: type.byteCount) }
    }
  }

  /// A copy of output `index` as computed by the last run.
  public func output(_ index: Int) -> HostTensor { copy(graph.outputs[index]) }

  /// The address of output `index` (valid until the next run), for reading without a copy.
  public func outputAddress(_ index: Int) -> UnsafeRawPointer {
    UnsafeRawPointer(address(graph.outputs[index]))
  }

  private func copy(_ value: Value) -> HostTensor {
    let type = graph.type(of: value)
    let data = Data(bytes: address(value), count: type.byteCount)
    // The type and byte count match by construction.
    return (try? HostTensor(type: type, data: data)) ?? HostTensor(shape: [0], floats: [])
  }

  private func address(_ value: Value) -> UnsafeMutableRawPointer {
    // Every value gets an address during compilation.
    addresses[value.index] ?? arena
  }

  // MARK: - Storage

  private static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
    var pointer: UnsafeMutableRawPointer?
    let status = posix_memalign(&pointer, ArenaPlan.alignment, max(bytes, 1))
    guard status == 0, let pointer else { fatalError("out of memory allocating \(bytes) bytes") }
    memset(pointer, 0, max(bytes, 1))
    return pointer
  }

  /// The arena: anonymous pages, which the kernel hands out already zeroed (no memset pass over
  /// hundreds of megabytes at compile time), asked for as huge pages where the kernel allows, which
  /// reads at higher bandwidth and faults 512 times less often.
  private static func mapArena(_ bytes: Int) -> UnsafeMutableRawPointer {
    guard
      let pointer = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
      pointer != MAP_FAILED
    else { fatalError("out of memory mapping an arena of \(bytes) bytes") }
    if bytes >= 1 << 21 { _ = madvise(pointer, bytes, MADV_HUGEPAGE) }
    return pointer
  }

  /// One block on huge pages for every parameter and state (KV caches, adapters, optimizer
  /// moments) when they add up to 2 MB or more, and each one's offset in it.
  ///
  /// A decoding step reads the whole KV cache once: the attention of a SmolLM2 step at position
  /// 1024 (47 MB of cache) took 3.2-3.6 ms on one core over 4 KB pages, 2.8-3.3 ms over huge
  /// pages.
  private static func persistentSlab(_ graph: Graph) -> (
    slab: UnsafeMutableRawPointer?, offsets: [Value: Int]
  ) {
    var offsets: [Value: Int] = [:]
    var total = 0
    for declaration in graph.declarations
    where declaration.kind == .parameter || declaration.kind == .state {
      offsets[declaration.value] = total
      let bytes = graph.type(of: declaration.value).byteCount
      total += (bytes + ArenaPlan.alignment - 1) / ArenaPlan.alignment * ArenaPlan.alignment
    }
    guard total >= 1 << 21, let slab = lc_alloc_large(Int64(total)) else { return (nil, [:]) }
    return (slab, offsets)
  }

  private func ownedBuffer(_ bytes: Int) -> UnsafeMutableRawPointer {
    let buffer = Executable.allocate(bytes)
    owned.append(buffer)
    return buffer
  }

  private func bindStorage(constants: [String: HostTensor]) throws(RuntimeError) {
    let persistent = Executable.persistentSlab(graph)
    if let slab = persistent.slab { owned.append(slab) }
    for input in graph.inputs {
      let buffer = ownedBuffer(graph.type(of: input.value).byteCount)
      addresses[input.value.index] = buffer
      bindable[input.name] = (input.value, buffer)
    }
    var unused = Set(constants.keys)
    for declaration in graph.declarations {
      let type = graph.type(of: declaration.value)
      switch declaration.kind {
      case .constant:
        guard let tensor = constants[declaration.name] else {
          throw RuntimeError(message: "no data for constant @\(declaration.name) : \(type)")
        }
        unused.remove(declaration.name)
        guard tensor.type == type else {
          throw RuntimeError(
            message:
              "constant @\(declaration.name) is declared \(type), but its data is \(tensor.type)")
        }
        addresses[declaration.value.index] = constantAddress(tensor, declaration.value)
      case .parameter, .state:
        let buffer: UnsafeMutableRawPointer
        if let slab = persistent.slab, let offset = persistent.offsets[declaration.value] {
          buffer = slab + offset
        } else {
          buffer = ownedBuffer(type.byteCount)
        }
        initialize(declaration, at: buffer)
        addresses[declaration.value.index] = buffer
        bindable[declaration.name] = (declaration.value, buffer)
      }
    }
    if let extra = unused.sorted().first {
      throw RuntimeError(
        message: "data for '\(extra)', which the graph does not declare as a constant")
    }
    for (index, offset) in plan.offsets.enumerated() {
      if let offset, addresses[index] == nil { addresses[index] = arena + offset }
    }
    for (alias, root) in plan.aliases { addresses[alias.index] = addresses[resolve(root).index] }
  }

  private func resolve(_ value: Value) -> Value { plan.aliases[value].map(resolve) ?? value }

  /// A constant's bytes in place when they are large enough to have stable storage and aligned
  /// for their element type; otherwise a private aligned copy.
  private func constantAddress(_ tensor: HostTensor, _ value: Value) -> UnsafeMutableRawPointer {
    let count = tensor.data.count
    var inPlace: UnsafeMutableRawPointer?
    if count >= 4096 {
      tensor.data.withUnsafeBytes { bytes in
        if let base = bytes.baseAddress, Int(bitPattern: base) % 4 == 0 {
          inPlace = UnsafeMutableRawPointer(mutating: base)
        }
      }
    }
    if let inPlace {
      // Large Data keeps its bytes on the heap or in a mapping: the address is stable while
      // the Data is retained, and nothing writes to constants.
      retained[value] = tensor
      return inPlace
    }
    let buffer = ownedBuffer(count)
    tensor.data.withUnsafeBytes { bytes in
      if let base = bytes.baseAddress { buffer.copyMemory(from: base, byteCount: count) }
    }
    return buffer
  }

  /// A 4-byte literal holding `scalar` in `dtype`, owned by the executable.
  private func literal(_ scalar: Double, _ dtype: DType) -> UnsafeMutableRawPointer {
    let buffer = ownedBuffer(4)
    if dtype == .i32 {
      buffer.storeBytes(
        of: Int32(clamping: Int(scalar.isFinite ? scalar.rounded(.towardZero) : 0)), as: Int32.self)
    } else {
      buffer.storeBytes(of: Float(scalar), as: Float.self)
    }
    return buffer
  }

  // MARK: - Scratch

  /// The `kind` form of a constant (bf16 packed for one orientation, q4_1/q8_0 interleaved, or a
  /// copy on huge pages), made on first use (when steps are built) and shared by every
  /// instruction that needs it, and with the executables made with the same `PackedForms` when
  /// the constant is read in place.
  func packedForm(_ weight: Value, _ kind: PackedForms.Kind) throws(RuntimeError)
    -> UnsafeRawPointer
  {
    let key = FormKey(weight: weight, kind: kind)
    if let form = forms[key] { return UnsafeRawPointer(form) }
    let type = graph.type(of: weight)
    let source = address(weight)
    let start = DispatchTime.now().uptimeNanoseconds
    // A shared store only takes sources read in place, and keeps their storage; the rest go to
    // this executable's own store, which outlives none of its sources.
    let (form, made) =
      if let shared, let tensor = retained[weight] {
        try shared.form(kind, of: tensor, at: source, type: type)
      } else {
        try ownForms.form(kind, of: nil, at: source, type: type)
      }
    if made { packingSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
    forms[key] = form
    return UnsafeRawPointer(form)
  }

  private struct FormKey: Hashable {
    var weight: Value
    var kind: PackedForms.Kind
  }

  /// Seconds spent packing weights (bf16 panels, interleaved q4_1/q8_0, huge-page copies) while
  /// the executable was made (loading work, like reading the weights, rather than compiling).
  public private(set) var packingSeconds = 0.0

  /// Bytes of packed bf16, interleaved q4_1/q8_0 and huge-page weights made so far (they live
  /// outside the arena, like constants).
  public var packedWeightBytes: Int {
    forms.keys.reduce(0) { total, key in
      total + PackedForms.bytes(graph.type(of: key.weight), key.kind)
    }
  }

  // MARK: - Steps

  private func makeStep(_ index: Int, _ instruction: Instruction) throws(RuntimeError) -> Step? {
    let builder = StepBuilder(
      executable: self, graph: graph, index: index, instruction: instruction)
    guard let run = try builder.make() else { return nil }
    return Step(instruction: index, run: run)
  }

  /// The address of an operand (a literal for scalars), for step construction.
  func operandAddress(_ operand: Operand, dtype: DType) -> UnsafeMutableRawPointer {
    switch operand {
    case .value(let value): address(value)
    case .scalar(let scalar): literal(scalar, dtype)
    }
  }

  func resultAddress(_ instruction: Instruction, _ position: Int = 0) -> UnsafeMutableRawPointer {
    address(instruction.results[position])
  }

  func scratchAddress(_ index: Int) -> UnsafeMutableRawPointer? {
    plan.scratch[index].map { arena + $0.offset }
  }
}
