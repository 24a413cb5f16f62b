import IR

/// Folds what needs no computing at run time.
///
/// - Identities: `x * 1`, `x + 0`, `x - 0`, `x / 1`, a `reshape`/`broadcast` to the operand's own
///   shape, an identity `transpose`, a `cast` to the operand's dtype are `x`.
/// - Splats: a `reshape` or `broadcast` of a `fill` is a `fill` of the result's type, and a product
///   with a splat is a product with a scalar literal (`autodiff`'s seed `broadcast(fill 1) * x`
///   becomes `x`).
/// - `reshape(reshape(x))` is one `reshape`.
///
/// Whatever still depends only on constants (masks from `iota`, products of frozen factors) the
/// executable computes once, when it is made. Names move to the value that replaces a named one.
public struct Fold: Pass {
  public static let mnemonic = "fold"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var result = graph
    var replacement: [Value: Value] = [:]
    var splats: [Value: Double] = [:]
    var definer: [Value: Int] = [:]
    func resolve(_ operand: Operand) -> Operand {
      guard case .value(var value) = operand else { return operand }
      while let next = replacement[value] { value = next }
      return .value(value)
    }
    var body: [Instruction] = []
    for var instruction in graph.body {
      instruction.operands = instruction.operands.map(resolve)
      let type = graph.type(of: instruction.results[0])
      let operands = instruction.operands
      func scalar(_ operand: Operand) -> Double? {
        if case .scalar(let value) = operand { return value }
        return operand.value.flatMap { splats[$0] }
      }
      func same(_ operand: Operand) -> Value? {
        operand.value.flatMap { graph.type(of: $0) == type ? $0 : nil }
      }
      var substitute: Value?
      switch instruction.op {
      case .binary(.mul):
        if scalar(operands[1]) == 1, let x = same(operands[0]) {
          substitute = x
        } else if scalar(operands[0]) == 1, let x = same(operands[1]) {
          substitute = x
        } else if let c = scalar(operands[0]), operands[0].value != nil, same(operands[1]) != nil {
          instruction.operands = [operands[1], .scalar(c)]
        } else if let c = scalar(operands[1]), operands[1].value != nil, same(operands[0]) != nil {
          instruction.operands = [operands[0], .scalar(c)]
        }
      case .binary(.add):
        if scalar(operands[1]) == 0, let x = same(operands[0]) {
          substitute = x
        } else if scalar(operands[0]) == 0, let x = same(operands[1]) {
          substitute = x
        }
      case .binary(.sub):
        if scalar(operands[1]) == 0, let x = same(operands[0]) { substitute = x }
      case .binary(.div):
        if scalar(operands[1]) == 1, let x = same(operands[0]) { substitute = x }
      case .reshape, .broadcast, .cast:
        if let x = same(operands[0]) {
          substitute = x
        } else if let c = operands[0].value.flatMap({ splats[$0] }), type.dtype == .f32 {
          instruction = Instruction(
            results: instruction.results, op: .fill(value: c, type: type), operands: [],
            name: instruction.name)
        } else if case .reshape = instruction.op, let x = operands[0].value,
          let index = definer[x], case .reshape = body[index].op
        {
          instruction.operands = body[index].operands
        }
      case .transpose(let permutation):
        if permutation == Array(0..<permutation.count), let x = same(operands[0]) { substitute = x }
      default:
        break
      }
      if let substitute {
        replacement[instruction.results[0]] = substitute
        if let name = instruction.name, let index = definer[substitute], body[index].name == nil {
          body[index].name = name
        }
        continue
      }
      if case .fill(let value, let fillType) = instruction.op, fillType.dtype == .f32 {
        splats[instruction.results[0]] = value
      }
      for value in instruction.results { definer[value] = body.count }
      body.append(instruction)
    }
    result.body = body
    result.outputs = graph.outputs.map { resolve(.value($0)).value ?? $0 }
    return try DeadCodeElimination().run(result)
  }
}
