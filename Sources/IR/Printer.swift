/// Prints graphs as canonical text: one instruction per line, results numbered `%0, %1, ...` in
/// order, inputs as `%name`, declarations as `@name`, a `: type` after every result aligned at a
/// fixed column, and the value's dotted name as a trailing string literal.
///
/// ```
/// func @mlp(%x: f32[4,2]) -> (f32[4,2]) {
///   const @fc1.weight : f32[32,2]
///   %0 = matmul %x, @fc1.weight {transpose_b}    : f32[4,32]     "fc1"
///   return %0
/// }
/// ```
public struct Printer: Sendable {
  /// The column (0-based) at which the `:` before result types starts, unless the line is longer.
  public static let typeColumn = 45
  /// The column (0-based) at which the value's name starts, unless the line is longer.
  public static let nameColumn = 59

  public init() {}

  /// The canonical text of a graph.
  public func print(_ graph: Graph) -> String {
    let numbering = Numbering(graph)
    var text = "func @\(graph.name)("
    for (index, argument) in graph.inputs.enumerated() {
      if index > 0 { text += ", " }
      text += "%\(argument.name): \(graph.type(of: argument.value))"
    }
    text += ") -> ("
    for (index, output) in graph.outputs.enumerated() {
      if index > 0 { text += ", " }
      text += typeText(of: output, in: graph)
    }
    text += ") {\n"
    for declaration in graph.declarations {
      text += "  "
      text += declarationText(declaration, in: graph)
      text += "\n"
    }
    for instruction in graph.body {
      text += "  "
      text += instructionText(instruction, in: graph, numbering: numbering)
      text += "\n"
    }
    text += "  return"
    for (index, output) in graph.outputs.enumerated() {
      text += index == 0 ? " " : ", "
      text += numbering.name(of: output)
    }
    text += "\n}\n"
    return text
  }

  /// The text of one declaration: `param @name : f32[16,2] {init=zeros}`.
  public func declarationText(_ declaration: Declaration, in graph: Graph) -> String {
    var text = "\(declaration.kind.rawValue) @\(declaration.name) : "
    text += typeText(of: declaration.value, in: graph)
    let attributes = declaration.attributes
    if !attributes.isEmpty { text += " " + attributeText(attributes) }
    return text
  }

  /// The text of one instruction, without indentation: `%3 = add %1, %2 : f32[4]   "fc"`.
  ///
  /// `aligned: false` separates the parts by single spaces, for quoting in messages.
  public func instructionText(
    _ instruction: Instruction, in graph: Graph, numbering: Numbering, aligned: Bool = true
  ) -> String {
    var text = "  "  // Columns count from the start of the indented line.
    for (index, result) in instruction.results.enumerated() {
      if index > 0 { text += ", " }
      text += numbering.name(of: result)
    }
    text += " = "
    text += instruction.op.mnemonic
    for (index, operand) in instruction.operands.enumerated() {
      text += index == 0 ? " " : ", "
      switch operand {
      case .value(let value): text += numbering.name(of: value)
      case .scalar(let scalar): text += formatNumber(scalar)
      }
    }
    let attributes = instruction.op.attributes
    if !attributes.isEmpty { text += " " + attributeText(attributes) }
    pad(&text, to: aligned ? Printer.typeColumn : 0)
    text += ": "
    for (index, result) in instruction.results.enumerated() {
      if index > 0 { text += ", " }
      text += typeText(of: result, in: graph)
    }
    if let name = instruction.name {
      pad(&text, to: aligned ? Printer.nameColumn : 0)
      text += quoted(name)
    }
    text.removeFirst(2)
    return text
  }

  private func typeText(of value: Value, in graph: Graph) -> String {
    value.index >= 0 && value.index < graph.types.count
      ? graph.types[value.index].description : "<no type>"
  }

  private func pad(_ text: inout String, to column: Int) {
    let length = text.utf8.count
    text += String(repeating: " ", count: length < column ? column - length : 1)
  }
}

/// Writes `{key, key=value}` for a list of attributes.
func attributeText(_ attributes: [(key: String, value: AttributeValue)]) -> String {
  var text = "{"
  for (index, attribute) in attributes.enumerated() {
    if index > 0 { text += ", " }
    text += attribute.key
    if attribute.value != .flag { text += "=" + attribute.value.text }
  }
  return text + "}"
}

/// Quotes a string for the text format, escaping `"`, `\` and control characters.
func quoted(_ string: String) -> String {
  var text = "\""
  for scalar in string.unicodeScalars {
    switch scalar {
    case "\"": text += "\\\""
    case "\\": text += "\\\\"
    case "\n": text += "\\n"
    case "\t": text += "\\t"
    case _ where scalar.value < 0x20 || scalar.value == 0x7F:
      text += "\\u{" + String(scalar.value, radix: 16) + "}"
    default: text.unicodeScalars.append(scalar)
    }
  }
  return text + "\""
}

/// How each value of a graph is written: `%name` for inputs, `@name` for declarations, `%n` for
/// instruction results numbered densely in order.
public struct Numbering: Sendable {
  private var names: [String?]

  public init(_ graph: Graph) {
    names = [String?](repeating: nil, count: graph.types.count)
    func set(_ value: Value, _ name: String) {
      if value.index >= 0 && value.index < names.count && names[value.index] == nil {
        names[value.index] = name
      }
    }
    for argument in graph.inputs { set(argument.value, "%" + argument.name) }
    for declaration in graph.declarations { set(declaration.value, "@" + declaration.name) }
    var counter = 0
    for instruction in graph.body {
      for result in instruction.results {
        set(result, "%" + String(counter))
        counter += 1
      }
    }
  }

  /// The printed name of a value (`%<undefined v7>` for a value nothing defines).
  public func name(of value: Value) -> String {
    if value.index >= 0 && value.index < names.count, let name = names[value.index] {
      return name
    }
    return "%<undefined \(value)>"
  }
}

extension Declaration {
  /// The attributes the text shows: the initializer, its parameters and the seed.
  public var attributes: [(key: String, value: AttributeValue)] {
    var attributes: [(key: String, value: AttributeValue)] = []
    switch initializer {
    case nil: break
    case .zeros: attributes.append(("init", .word("zeros")))
    case .constant(let value):
      attributes += [("init", .word("constant")), ("value", .number(value))]
    case .kaimingUniform(let a, let rule):
      attributes.append(("init", .word("kaiming_uniform")))
      if a != 5.0.squareRoot() { attributes.append(("a", .number(a))) }
      if rule != .leading { attributes.append(("fan_in", .word(rule.rawValue))) }
    case .uniform(let low, let high):
      attributes += [("init", .word("uniform")), ("low", .number(low)), ("high", .number(high))]
    case .normal(let mean, let std):
      attributes.append(("init", .word("normal")))
      if mean != 0 { attributes.append(("mean", .number(mean))) }
      attributes.append(("std", .number(std)))
    }
    if let seed { attributes.append(("seed", .integer(Int(truncatingIfNeeded: seed)))) }
    return attributes
  }

  /// Reads an initializer and seed from declaration attributes.
  static func initializer(
    from attributes: [(key: String, value: AttributeValue)]
  ) throws(AttributeError) -> (Initializer?, UInt64?) {
    var reader = AttributeReader(mnemonic: "declaration", attributes: attributes)
    let kind = try reader.word("init")
    let initializer: Initializer?
    switch kind {
    case nil: initializer = nil
    case "zeros": initializer = .zeros
    case "constant": initializer = .constant(try reader.number("value"))
    case "kaiming_uniform":
      let a = try reader.optionalNumber("a") ?? 5.0.squareRoot()
      let rule = try reader.word("fan_in") ?? Initializer.FanIn.leading.rawValue
      guard let fanIn = Initializer.FanIn(rawValue: rule) else {
        throw AttributeError(message: "fan_in must be leading or torch, got '\(rule)'")
      }
      initializer = .kaimingUniform(a: a, fanIn: fanIn)
    case "uniform":
      initializer = .uniform(low: try reader.number("low"), high: try reader.number("high"))
    case "normal":
      initializer = .normal(
        mean: try reader.optionalNumber("mean") ?? 0, std: try reader.number("std"))
    case .some(let other):
      throw AttributeError(
        message:
          "unknown initializer '\(other)' (expected zeros, constant, kaiming_uniform, uniform, normal)"
      )
    }
    let seed = try reader.optionalInteger("seed")
    if let seed, seed < 0 {
      throw AttributeError(message: "seed must not be negative, got \(seed)")
    }
    try reader.finish()
    return (initializer, seed.map { UInt64($0) })
  }
}
