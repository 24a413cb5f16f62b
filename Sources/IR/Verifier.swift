/// A graph breaks an invariant; the message quotes the offending instruction or declaration.
public struct VerifyError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// Checks the invariants every pass must preserve: each value defined once and before use, every
/// op's operand and result types, well-formed names, declarations and outputs.
public enum Verifier {
  /// Throws the first broken invariant found.
  public static func verify(_ graph: Graph) throws(VerifyError) {
    let printer = Printer()
    let numbering = Numbering(graph)
    func fail(_ message: String) -> VerifyError { VerifyError(message: message) }
    func inRange(_ value: Value) -> Bool { value.index >= 0 && value.index < graph.types.count }

    if !Names.isValid(graph.name) { throw fail("invalid function name '@\(graph.name)'") }
    for type in graph.types {
      if let problem = type.problem() { throw fail("invalid type: \(problem)") }
    }
    var defined = [Bool](repeating: false, count: graph.types.count)
    func define(_ value: Value, _ what: String) throws(VerifyError) {
      guard inRange(value) else { throw fail("\(what) defines \(value), which has no type") }
      if defined[value.index] { throw fail("\(what) redefines \(numbering.name(of: value))") }
      defined[value.index] = true
    }

    var names = Set<String>()
    for argument in graph.inputs {
      if !Names.isValidInput(argument.name) { throw fail("invalid input name '%\(argument.name)'") }
      if !names.insert(argument.name).inserted { throw fail("duplicate name '\(argument.name)'") }
      try define(argument.value, "input %\(argument.name)")
    }
    for declaration in graph.declarations {
      let what = "declaration @\(declaration.name)"
      if !Names.isValid(declaration.name) {
        throw fail("invalid declaration name '@\(declaration.name)'")
      }
      if !names.insert(declaration.name).inserted {
        throw fail("duplicate name '\(declaration.name)' (\(what))")
      }
      try define(declaration.value, what)
      let text = printer.declarationText(declaration, in: graph)
      let type = graph.type(of: declaration.value)
      if declaration.kind != .constant && !type.dtype.isCompute {
        throw fail("'\(text)': only constants may have storage type \(type.dtype.rawValue)")
      }
      if declaration.kind == .constant
        && (declaration.initializer != nil || declaration.seed != nil)
      {
        throw fail("'\(text)': a constant has no initializer; its data is bound by name")
      }
      if let seed = declaration.seed, seed > UInt64(Int.max) {
        throw fail("'\(text)': seed \(seed) is out of range")
      }
    }

    for (index, instruction) in graph.body.enumerated() {
      let text = {
        printer.instructionText(instruction, in: graph, numbering: numbering, aligned: false)
      }
      func failHere(_ message: String) -> VerifyError {
        fail("instruction \(index) '\(text())': \(message)")
      }
      var operandTypes: [OperandType] = []
      for operand in instruction.operands {
        switch operand {
        case .scalar:
          operandTypes.append(.scalar)
        case .value(let value):
          guard inRange(value), defined[value.index] else {
            throw failHere("operand \(numbering.name(of: value)) is used before it is defined")
          }
          operandTypes.append(.tensor(graph.type(of: value)))
        }
      }
      let types: [TensorType]
      do {
        types = try instruction.op.resultTypes(operandTypes)
      } catch {
        throw failHere(error.description)
      }
      guard types.count == instruction.results.count else {
        throw failHere(
          "\(instruction.op.mnemonic) has \(types.count) results, the instruction \(instruction.results.count)"
        )
      }
      for (result, type) in zip(instruction.results, types) {
        guard inRange(result) else { throw failHere("result \(result) has no type") }
        if graph.type(of: result) != type {
          throw failHere(
            "result \(numbering.name(of: result)) has type \(graph.type(of: result)), but \(instruction.op.mnemonic) gives \(type)"
          )
        }
      }
      if let name = instruction.name, !Names.isValid(name) {
        throw failHere("invalid value name \"\(name)\"")
      }
      for result in instruction.results {
        try define(result, "instruction \(index) '\(text())'")
      }
    }

    for (index, output) in graph.outputs.enumerated() {
      guard inRange(output), defined[output.index] else {
        throw fail("output \(index) (\(numbering.name(of: output))) is not defined")
      }
    }
  }
}
