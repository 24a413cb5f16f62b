/// A mistake found while tracing: names the op, its operand types and the scope path.
public struct TraceError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// Records tensor code as a graph: model code calls ops on `Tensor` handles, and every call
/// appends one type-checked instruction.
///
/// ```swift
/// let builder = GraphBuilder(name: "mlp")
/// let x = try builder.input(name: "x", shape: [4, 2])
/// let w = try builder.scope("fc1") { () throws(TraceError) in
///   try builder.parameter(name: "weight", shape: [32, 2], initializer: .zeros)
/// }
/// let h = try relu(matmul(x, w, transposeB: true)).named("fc1")
/// let graph = try builder.finish(outputs: [h])
/// ```
/// A shape or dtype mistake fails at once with a `TraceError`; one `try` covers a whole expression.
public final class GraphBuilder {
  public private(set) var graph: Graph
  private var scopes: [String] = []
  private var definitions: [Value: Int] = [:]
  private var names = Set<String>()

  public init(name: String) {
    graph = Graph(name: name)
  }

  /// The dotted path of the current scope (`layers.3.attn`), empty at the top level.
  public var scopePath: String { scopes.joined(separator: ".") }

  /// `name` prefixed by the scope path.
  public func qualified(_ name: String) -> String {
    scopes.isEmpty ? name : scopePath + "." + name
  }

  /// Runs `body` with `name` appended to the scope path.
  public func scope<Result, Failure: Error>(
    _ name: String, _ body: () throws(Failure) -> Result
  ) throws(Failure) -> Result {
    scopes.append(name)
    defer { scopes.removeLast() }
    return try body()
  }

  /// Runs `body` at the top level, outside every scope (for values named by a file's own
  /// names, like GGUF weights).
  public func atTopLevel<Result, Failure: Error>(
    _ body: () throws(Failure) -> Result
  ) throws(Failure) -> Result {
    let saved = scopes
    scopes = []
    defer { scopes = saved }
    return try body()
  }

  // MARK: - Graph-level values

  /// A graph input (not prefixed by the scope path).
  public func input(name: String, shape: [Int], dtype: DType = .f32) throws(TraceError) -> Tensor {
    let type = TensorType(dtype, shape)
    guard Names.isValidInput(name) else { throw fail("invalid input name '\(name)'") }
    if let problem = type.problem() { throw fail("input \(name): \(problem)") }
    if !dtype.isCompute { throw fail("input \(name) must be f32 or i32, got \(type)") }
    try claim(name)
    let value = graph.newValue(type)
    graph.inputs.append(GraphInput(name: name, value: value))
    return Tensor(builder: self, value: value, type: type)
  }

  /// A trainable parameter named by the scope path, created with `initializer` from `seed`.
  public func parameter(
    name: String, shape: [Int], dtype: DType = .f32, initializer: Initializer,
    seed: UInt64? = nil
  ) throws(TraceError) -> Tensor {
    try declare(
      .parameter, name: name, type: TensorType(dtype, shape), initializer: initializer, seed: seed)
  }

  /// A frozen constant named by the scope path; its data is bound by name when the graph runs.
  public func constant(name: String, shape: [Int], dtype: DType = .f32) throws(TraceError) -> Tensor
  {
    try declare(.constant, name: name, type: TensorType(dtype, shape), initializer: nil, seed: nil)
  }

  /// State carried between runs (KV cache, optimizer moments), named by the scope path.
  public func state(
    name: String, shape: [Int], dtype: DType = .f32, initializer: Initializer? = .zeros
  ) throws(TraceError) -> Tensor {
    try declare(
      .state, name: name, type: TensorType(dtype, shape), initializer: initializer, seed: nil)
  }

  private func declare(
    _ kind: Declaration.Kind, name: String, type: TensorType, initializer: Initializer?,
    seed: UInt64?
  ) throws(TraceError) -> Tensor {
    let full = qualified(name)
    guard Names.isValid(full) else { throw fail("invalid name '\(full)'") }
    if let problem = type.problem() { throw fail("\(full): \(problem)") }
    if kind != .constant && !type.dtype.isCompute {
      throw fail("\(full): only constants may have storage type \(type.dtype.rawValue)")
    }
    try claim(full)
    let value = graph.newValue(type)
    graph.declarations.append(
      Declaration(kind: kind, name: full, value: value, initializer: initializer, seed: seed))
    return Tensor(builder: self, value: value, type: type)
  }

  private func claim(_ name: String) throws(TraceError) {
    if !names.insert(name).inserted { throw fail("'\(name)' is already declared") }
  }

  // MARK: - Instructions

  /// Appends one instruction after checking its type rule, and returns its results.
  public func emit(_ op: Op, _ operands: [Operand], name: String? = nil) throws(TraceError)
    -> [Tensor]
  {
    let operandTypes = operands.map { operand -> OperandType in
      switch operand {
      case .value(let value): .tensor(graph.type(of: value))
      case .scalar: .scalar
      }
    }
    let types: [TensorType]
    do {
      types = try op.resultTypes(operandTypes)
    } catch {
      let where_ = scopes.isEmpty ? "" : " in scope '\(scopePath)'"
      let listed = operandTypes.map(\.description).joined(separator: ", ")
      throw TraceError(message: "\(error.description)\(where_) (operands: \(listed))")
    }
    let results = types.map { graph.newValue($0) }
    if let name {
      let full = qualified(name)
      guard Names.isValid(full) else { throw fail("invalid value name '\(full)'") }
    }
    definitions[results[0]] = graph.body.count
    graph.body.append(
      Instruction(results: results, op: op, operands: operands, name: name.map(qualified)))
    return zip(results, types).map { Tensor(builder: self, value: $0, type: $1) }
  }

  /// Appends a one-result instruction.
  func emit1(_ op: Op, _ operands: [Operand]) throws(TraceError) -> Tensor {
    // Every primitive op has exactly one result.
    try emit(op, operands)[0]
  }

  /// Names the instruction that defines `value` with `name` prefixed by the scope path.
  func setName(_ name: String, of value: Value) throws(TraceError) {
    let full = qualified(name)
    guard Names.isValid(full) else { throw fail("invalid value name '\(full)'") }
    guard let index = definitions[value] else {
      throw fail("only instruction results can be named; '\(full)' names an input or declaration")
    }
    graph.body[index].name = full
  }

  /// A tensor whose elements are their index along `axis`.
  public func iota(shape: [Int], dtype: DType = .i32, axis: Int) throws(TraceError) -> Tensor {
    try emit1(.iota(axis: normalize(axis, rank: shape.count), type: TensorType(dtype, shape)), [])
  }

  /// A tensor filled with `value`.
  public func fill(_ value: Double, shape: [Int], dtype: DType = .f32) throws(TraceError) -> Tensor
  {
    try emit1(.fill(value: value, type: TensorType(dtype, shape)), [])
  }

  /// The finished graph with the given outputs, renumbered canonically and verified.
  public func finish(outputs: [Tensor]) throws(TraceError) -> Graph {
    var result = graph
    result.outputs = outputs.map(\.value)
    result = result.compacted()
    do {
      try Verifier.verify(result)
    } catch {
      throw TraceError(message: "traced graph does not verify: \(error.message)")
    }
    return result
  }

  private func fail(_ message: String) -> TraceError {
    TraceError(message: scopes.isEmpty ? message : "\(message) (in scope '\(scopePath)')")
  }
}

/// Maps a possibly negative axis (`-1` = last) into `0..<rank`; out-of-range axes are left for the
/// type rule to report.
func normalize(_ axis: Int, rank: Int) -> Int {
  axis < 0 && axis >= -rank ? axis + rank : axis
}
