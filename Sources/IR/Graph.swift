/// A graph input: a name, printed as `%name`, and the value it defines.
public struct GraphInput: Hashable, Sendable {
  public var name: String
  public var value: Value

  public init(name: String, value: Value) {
    self.name = name
    self.value = value
  }
}

/// How a trainable parameter (or state) gets its first value.
public enum Initializer: Hashable, Sendable {
  case zeros
  case constant(Double)
  /// `U(-b, b)` with `b = gain * sqrt(3 / fanIn)`, `gain = sqrt(2 / (1 + a^2))`; `fanIn` counts
  /// the dimensions `rule` names (`in` for a `[in, out]` weight). `a = sqrt(5)` is torch's
  /// `nn.Linear` default, which gives `b = 1 / sqrt(fanIn)`.
  case kaimingUniform(a: Double, fanIn: FanIn = .leading)
  case uniform(low: Double, high: Double)
  case normal(mean: Double, std: Double)

  /// torch's default for `nn.Linear` weights and PEFT's for `lora_A`: `a = sqrt(5)`.
  public static let kaimingUniformDefault = Initializer.kaimingUniform(a: 5.0.squareRoot())

  /// Which dimensions of a tensor a Kaiming initializer's fan-in multiplies.
  public enum FanIn: String, Hashable, Sendable {
    /// Every dimension but the last: `in` for a weight `[in, out]` applied as `x W` (lorac's
    /// layout, PEFT's `lora_A` transposed).
    case leading
    /// PyTorch's rule for the tensor as stored (`torch.nn.init._calculate_fan_in_and_fan_out`):
    /// `size(1) * prod(size[2...])`, so `d_in * r` for the 3-D `(n_inst, d_in, r)` A of the
    /// TransformerLens tutorial's per-head `Lora` (`size(0)` for a 1-D tensor).
    case torch
  }

  /// The fan-in of a tensor of `shape` under `rule` (at least 1).
  public static func fanIn(of shape: [Int], rule: FanIn) -> Int {
    switch rule {
    case .leading: return max(1, shape.dropLast().reduce(1, *))
    case .torch:
      guard shape.count >= 2 else { return max(1, shape.first ?? 1) }
      return max(1, shape[1] * shape.dropFirst(2).reduce(1, *))
    }
  }
}

/// A named graph-level value: a trainable parameter, a frozen constant or state.
///
/// Printed `param @name : type {init=...}`; the data lives outside the graph and is bound by name.
public struct Declaration: Hashable, Sendable {
  public enum Kind: String, Hashable, Sendable {
    /// A trainable tensor.
    case parameter = "param"
    /// A frozen tensor (weights), possibly of a storage dtype.
    case constant = "const"
    /// Mutable state carried between runs (KV cache, optimizer moments).
    case state
  }

  public var kind: Kind
  public var name: String
  public var value: Value
  public var initializer: Initializer?
  /// The seed of the initializer's random stream, when it draws random numbers.
  public var seed: UInt64?

  public init(
    kind: Kind, name: String, value: Value, initializer: Initializer? = nil, seed: UInt64? = nil
  ) {
    self.kind = kind
    self.name = name
    self.value = value
    self.initializer = initializer
    self.seed = seed
  }
}

/// One SSA instruction: `results = op(operands)`, with an optional dotted name.
public struct Instruction: Hashable, Sendable {
  public var results: [Value]
  public var op: Op
  public var operands: [Operand]
  /// The dotted path of the value (`layers.3.attn.q`), kept through passes.
  public var name: String?

  public init(results: [Value], op: Op, operands: [Operand], name: String? = nil) {
    self.results = results
    self.op = op
    self.operands = operands
    self.name = name
  }
}

/// A function in SSA form: inputs, declarations, instructions in a valid schedule order, outputs.
///
/// A value type: passes take a graph and return a new one. `types` is indexed by `Value.id`.
public struct Graph: Hashable, Sendable {
  public var name: String
  public var inputs: [GraphInput]
  public var declarations: [Declaration]
  public var body: [Instruction]
  public var outputs: [Value]
  public var types: [TensorType]

  public init(
    name: String, inputs: [GraphInput] = [], declarations: [Declaration] = [],
    body: [Instruction] = [], outputs: [Value] = [], types: [TensorType] = []
  ) {
    self.name = name
    self.inputs = inputs
    self.declarations = declarations
    self.body = body
    self.outputs = outputs
    self.types = types
  }

  /// The type of a value.
  public func type(of value: Value) -> TensorType { types[value.index] }

  /// Adds a value of the given type and returns it.
  public mutating func newValue(_ type: TensorType) -> Value {
    types.append(type)
    return Value(types.count - 1)
  }

  /// The declaration with the given name, if any.
  public func declaration(named name: String) -> Declaration? {
    declarations.first { $0.name == name }
  }

  /// Each output's name: the input's, the declaration's or the defining instruction's dotted
  /// name, or `output.N` when it has none.
  public var outputNames: [String] {
    var names: [Value: String] = [:]
    for input in inputs { names[input.value] = input.name }
    for declaration in declarations { names[declaration.value] = declaration.name }
    for instruction in body {
      if let name = instruction.name { names[instruction.results[0]] = name }
    }
    return outputs.enumerated().map { names[$1] ?? "output.\($0)" }
  }

  /// For each instruction result, the index of the instruction that defines it.
  public func definers() -> [Value: Int] {
    var definers: [Value: Int] = [:]
    for (index, instruction) in body.enumerated() {
      for result in instruction.results { definers[result] = index }
    }
    return definers
  }

  /// For each value, the indices of the instructions that read it (a computed analysis).
  public func users() -> [Value: [Int]] {
    var users: [Value: [Int]] = [:]
    for (index, instruction) in body.enumerated() {
      for operand in instruction.operands {
        if let value = operand.value { users[value, default: []].append(index) }
      }
    }
    return users
  }

  /// The same graph with values renumbered canonically: inputs first, then declarations, then
  /// instruction results in order; types of values nothing defines or reads are dropped.
  ///
  /// Printing never depends on numbering, so `parse(print(g)) == g.compacted()`.
  public func compacted() -> Graph {
    var mapping = [Int32](repeating: -1, count: types.count)
    var newTypes: [TensorType] = []
    newTypes.reserveCapacity(types.count)
    func assign(_ value: Value) -> Value {
      guard value.index >= 0, value.index < mapping.count else { return value }
      if mapping[value.index] < 0 {
        mapping[value.index] = Int32(newTypes.count)
        newTypes.append(types[value.index])
      }
      return Value(mapping[value.index])
    }
    var result = self
    for index in result.inputs.indices { result.inputs[index].value = assign(inputs[index].value) }
    for index in result.declarations.indices {
      result.declarations[index].value = assign(declarations[index].value)
    }
    for index in result.body.indices {
      result.body[index].results = body[index].results.map(assign)
    }
    // Values read but never defined (an invalid graph) keep a number after the defined ones.
    for index in result.body.indices {
      result.body[index].operands = body[index].operands.map { operand in
        if case .value(let value) = operand { return .value(assign(value)) }
        return operand
      }
    }
    result.outputs = outputs.map(assign)
    result.types = newTypes
    return result
  }
}
