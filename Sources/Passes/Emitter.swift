import IR

/// Appends type-checked instructions to a graph being rewritten.
struct Emitter {
  var graph: Graph

  init(_ graph: Graph) { self.graph = graph }

  func type(_ value: Value) -> TensorType { graph.type(of: value) }

  /// Appends `op(operands)` and returns its first result.
  @discardableResult
  mutating func emit(_ op: Op, _ operands: [Operand], name: String? = nil) throws(PassError)
    -> Value
  {
    try emitAll(op, operands, name: name)[0]
  }

  mutating func emitAll(_ op: Op, _ operands: [Operand], name: String? = nil) throws(PassError)
    -> [Value]
  {
    let types: [TensorType]
    do {
      types = try op.resultTypes(
        operands.map { operand -> OperandType in
          switch operand {
          case .value(let value): .tensor(graph.type(of: value))
          case .scalar: .scalar
          }
        })
    } catch {
      throw PassError(message: "internal: a pass built an ill-typed \(error.description)")
    }
    let results = types.map { graph.newValue($0) }
    graph.body.append(Instruction(results: results, op: op, operands: operands, name: name))
    return results
  }

  // Shorthands.
  mutating func binary(_ function: BinaryOp, _ a: Value, _ b: Value, name: String? = nil)
    throws(PassError) -> Value
  {
    try emit(.binary(function), [.value(a), .value(b)], name: name)
  }

  mutating func binary(_ function: BinaryOp, _ a: Value, _ b: Double, name: String? = nil)
    throws(PassError) -> Value
  {
    try emit(.binary(function), [.value(a), .scalar(b)], name: name)
  }

  mutating func unary(_ function: UnaryOp, _ a: Value) throws(PassError) -> Value {
    try emit(.unary(function), [.value(a)])
  }

  mutating func zeros(_ type: TensorType) throws(PassError) -> Value {
    try emit(.fill(value: 0, type: type), [])
  }

  mutating func reshape(_ value: Value, _ shape: [Int]) throws(PassError) -> Value {
    type(value).shape == shape ? value : try emit(.reshape(to: shape), [.value(value)])
  }

  /// Sums `value` down to `shape` (undoing numpy broadcasting).
  mutating func unbroadcast(_ value: Value, to shape: [Int]) throws(PassError) -> Value {
    let current = type(value).shape
    if current == shape { return value }
    let offset = current.count - shape.count
    var axes = Array(0..<offset)
    for (axis, dimension) in shape.enumerated() where dimension == 1 && current[offset + axis] != 1
    {
      axes.append(offset + axis)
    }
    var result = value
    if !axes.isEmpty {
      result = try emit(.reduce(.sum, axes: axes, keepDims: false), [.value(value)])
    }
    return try reshape(result, shape)
  }
}
