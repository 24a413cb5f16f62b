import IR

/// Reverse-mode differentiation from a scalar loss to the trainable parameters.
///
/// Activity analysis first: an instruction is differentiated only when one of its operands
/// depends on a parameter (forward) and its result reaches the loss (backward), so no work is
/// spent on frozen weights beyond the input gradient that flows through them, and no gradient is
/// formed for a constant. The graph then returns its original outputs followed by one gradient per
/// parameter, in declaration order, named `<parameter>.grad`.
public struct Autodiff: Pass {
  public static let mnemonic = "autodiff"
  public static let optionNames = ["loss"]

  /// The dotted name of the scalar loss value.
  public var loss: String

  public init(options: PassOptions) throws(PassError) {
    loss = options.text("loss") ?? "loss"
  }

  public init(loss: String = "loss") { self.loss = loss }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    guard let lossIndex = graph.body.lastIndex(where: { $0.name == loss }) else {
      throw PassError(message: "autodiff: no value named '\(loss)'")
    }
    let lossValue = graph.body[lossIndex].results[0]
    guard graph.type(of: lossValue) == TensorType(.f32, []) else {
      throw PassError(
        message: "autodiff: the loss '\(loss)' must be f32[], got \(graph.type(of: lossValue))")
    }
    let parameters = graph.declarations.filter { $0.kind == .parameter }
    if parameters.isEmpty { throw PassError(message: "autodiff: the graph has no parameters") }

    // Forward activity: depends on a parameter through f32 values.
    var active = Set(parameters.map(\.value))
    for instruction in graph.body[...lossIndex] {
      let depends = instruction.operands.contains { $0.value.map(active.contains) ?? false }
      if depends {
        for result in instruction.results where graph.type(of: result).dtype == .f32 {
          active.insert(result)
        }
      }
    }
    // Backward: reaches the loss.
    var reaches: Set<Value> = [lossValue]
    for instruction in graph.body[...lossIndex].reversed()
    where instruction.results.contains(where: reaches.contains) {
      for operand in instruction.operands { if let value = operand.value { reaches.insert(value) } }
    }

    var emitter = Emitter(graph)
    let forwardCount = graph.body.count
    /// Names the backward instruction that computed `value`, unless it already has a name.
    func name(_ value: Value, _ name: String, in emitter: inout Emitter) {
      guard let index = emitter.graph.body.lastIndex(where: { $0.results.first == value }),
        index >= forwardCount, emitter.graph.body[index].name == nil
      else { return }
      emitter.graph.body[index].name = name
    }
    var adjoints: [Value: Value] = [:]
    adjoints[lossValue] = try emitter.emit(.fill(value: 1, type: TensorType(.f32, [])), [])

    for instruction in graph.body[...lossIndex].reversed() {
      let gradients = instruction.results.map { result -> Value? in
        active.contains(result) && reaches.contains(result) ? adjoints[result] : nil
      }
      // The result the instruction's name belongs to (`y` of `lora_linear (xa, y)`).
      let named: Int = if case .loraLinear = instruction.op { 1 } else { 0 }
      guard gradients.contains(where: { $0 != nil }) else { continue }
      // Every use of a result comes later, so its gradient is complete here.
      if let valueName = instruction.name, gradients.indices.contains(named),
        let gradient = gradients[named]
      {
        name(gradient, valueName + ".grad", in: &emitter)
      }
      let wanted = instruction.operands.map { operand -> Bool in
        guard let value = operand.value else { return false }
        return active.contains(value) && reaches.contains(value)
      }
      if !wanted.contains(true) { continue }
      let contributions: [Value?]
      if case .loraLinear = instruction.op {
        contributions = try loraLinearVJP(
          instruction, gradients: gradients, wanted: wanted, &emitter)
      } else if let gradient = gradients[0], gradients.count == 1 {
        contributions = try vjp(instruction, gradient: gradient, wanted: wanted, &emitter)
      } else {
        throw PassError(
          message: "autodiff: \(instruction.op.mnemonic) has no gradient"
            + (instruction.name.map { " (value \"\($0)\")" } ?? ""))
      }
      for (operand, contribution) in zip(instruction.operands, contributions) {
        guard let value = operand.value, let contribution else { continue }
        if let existing = adjoints[value] {
          adjoints[value] = try emitter.binary(.add, existing, contribution)
        } else {
          adjoints[value] = contribution
        }
      }
    }

    var outputs = graph.outputs
    for parameter in parameters {
      var gradient: Value
      if let adjoint = adjoints[parameter.value] {
        gradient = adjoint
      } else {
        gradient = try emitter.zeros(graph.type(of: parameter.value))
      }
      name(gradient, parameter.name + ".grad", in: &emitter)
      outputs.append(gradient)
    }
    emitter.graph.outputs = outputs
    return emitter.graph
  }
}
