import IR

/// Removes instructions none of whose results is used or returned.
public struct DeadCodeElimination: Pass {
  public static let mnemonic = "dce"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var live = Set(graph.outputs)
    var keep = [Bool](repeating: false, count: graph.body.count)
    for index in graph.body.indices.reversed() {
      let instruction = graph.body[index]
      guard instruction.results.contains(where: live.contains) else { continue }
      keep[index] = true
      for operand in instruction.operands { if let value = operand.value { live.insert(value) } }
    }
    var result = graph
    result.body = graph.body.indices.filter { keep[$0] }.map { graph.body[$0] }
    return result
  }
}

/// Replaces an instruction identical to an earlier one (same op and operands) by the earlier
/// result; the earlier one takes the later one's name if it had none.
public struct CommonSubexpressionElimination: Pass {
  public static let mnemonic = "cse"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  private struct Key: Hashable {
    var op: Op
    var operands: [Operand]
  }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var replacement: [Value: Value] = [:]
    var seen: [Key: Int] = [:]
    var body: [Instruction] = []
    func map(_ operand: Operand) -> Operand {
      if case .value(let value) = operand, let other = replacement[value] { return .value(other) }
      return operand
    }
    for var instruction in graph.body {
      instruction.operands = instruction.operands.map(map)
      let key = Key(op: instruction.op, operands: instruction.operands)
      if let earlier = seen[key] {
        for (old, new) in zip(instruction.results, body[earlier].results) { replacement[old] = new }
        if body[earlier].name == nil { body[earlier].name = instruction.name }
        continue
      }
      seen[key] = body.count
      body.append(instruction)
    }
    var result = graph
    result.body = body
    result.outputs = graph.outputs.map { replacement[$0] ?? $0 }
    return result
  }
}
