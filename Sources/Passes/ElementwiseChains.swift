import IR

/// Fuses trees of unary and binary `f32` ops into single `elementwise` instructions, so a chain
/// such as the backward pass's `add(add(g1, g2), g3)` reads its inputs and writes its result once
/// instead of once per op.
///
/// A tree grows from a root through operands whose defining op is a unary or binary op over
/// values of the root's element count (no broadcasting; scalar literals are kept as literals),
/// read by nothing else and not graph outputs; `reshape`s between them are looked through (a
/// reshape is a view). Trees of at least two ops become one instruction with the root's result
/// and name; leaves of another shape are reshaped to the root's (free). A tree stops growing at
/// `LC_EW_MAX_DEPTH`'s eight live values.
struct ElementwiseChains {
  static let maximumDepth = 8

  var graph: Graph
  let definer: [Value: Int]
  let users: [Value: [Int]]
  let outputs: Set<Value>

  init(_ graph: Graph) {
    self.graph = graph
    definer = graph.definers()
    users = graph.users()
    outputs = Set(graph.outputs)
  }

  /// Whether `instruction` is an op a tree may hold, for a result of `count` elements.
  func isCandidate(_ instruction: Instruction, count: Int) -> Bool {
    guard instruction.results.count == 1 else { return false }
    let type = graph.type(of: instruction.results[0])
    guard type.dtype == .f32, type.elementCount == count else { return false }
    switch instruction.op {
    case .unary, .binary: break
    default: return false
    }
    return instruction.operands.allSatisfy { operand in
      guard let value = operand.value else { return true }
      return graph.type(of: value) == type
    }
  }

  /// Whether `value` is read once, by the instruction at `reader`, and is not an output.
  func readOnlyBy(_ value: Value, _ reader: Int) -> Bool {
    !outputs.contains(value) && users[value] == [reader]
  }

  /// The instruction that may be inlined for operand `value` of the instruction at `reader`:
  /// its index and the reshapes looked through on the way.
  func inlinable(_ value: Value, reader: Int, count: Int) -> (index: Int, through: [Int])? {
    var through: [Int] = []
    var current = value
    var currentReader = reader
    while let index = definer[current], readOnlyBy(current, currentReader) {
      let instruction = graph.body[index]
      if case .reshape = instruction.op, let source = instruction.operands[0].value,
        graph.type(of: source).elementCount == count
      {
        through.append(index)
        current = source
        currentReader = index
        continue
      }
      return isCandidate(instruction, count: count) ? (index, through) : nil
    }
    return nil
  }

  func run() -> Graph {
    var claimed: Set<Int> = []
    var replacements: [Int: [Instruction]] = [:]
    var result = graph
    for root in graph.body.indices.reversed() where !claimed.contains(root) {
      let top = graph.body[root]
      guard isCandidate(top, count: graph.type(of: top.results[0]).elementCount) else {
        continue
      }
      let rootType = graph.type(of: top.results[0])
      var leaves: [Value] = []
      var inner: [Int] = []

      func leaf(_ value: Value) -> ElementwiseExpression {
        if let position = leaves.firstIndex(of: value) { return .operand(position) }
        leaves.append(value)
        return .operand(leaves.count - 1)
      }
      func grow(_ index: Int) -> ElementwiseExpression {
        let instruction = graph.body[index]
        let arguments = instruction.operands.map { operand -> ElementwiseExpression in
          switch operand {
          case .scalar(let number): return .literal(number)
          case .value(let value):
            if let (next, through) = inlinable(value, reader: index, count: rootType.elementCount),
              !claimed.contains(next)
            {
              inner += through + [next]
              return grow(next)
            }
            return leaf(value)
          }
        }
        switch instruction.op {
        case .unary(let function): return .unary(function, arguments[0])
        case .binary(let function): return .binary(function, arguments[0], arguments[1])
        default: return arguments[0]  // isCandidate admits nothing else
        }
      }
      let expression = grow(root)
      guard expression.nodeCount >= 2, expression.depth <= Self.maximumDepth else { continue }
      var replacement: [Instruction] = []
      var operands: [Operand] = []
      for value in leaves {
        if graph.type(of: value) == rootType {
          operands.append(.value(value))
        } else {
          let view = result.newValue(rootType)
          replacement.append(
            Instruction(
              results: [view], op: .reshape(to: rootType.shape), operands: [.value(value)],
              name: nil))
          operands.append(.value(view))
        }
      }
      replacement.append(
        Instruction(
          results: top.results, op: .elementwise(expression), operands: operands, name: top.name))
      claimed.insert(root)
      claimed.formUnion(inner)
      replacements[root] = replacement
    }
    result.body = graph.body.rewritten(replacements, removing: claimed)
    return result
  }
}
