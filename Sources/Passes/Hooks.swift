import IR

// Hook points: TransformerLens's `run_with_cache` and forward hooks, as rewrites of the graph.
// Each pass selects named values by glob (`names=layers.*.residual.mlp`); a pattern that names
// nothing is an error that lists the nearest names. The edits (`patch`, `add`, `ablate`) put
// their result in the value's place: later instructions and outputs read it, it takes the
// value's name, and the value itself is renamed `<name>.original`. Run them before `fuse`: a
// fusion that would hide a captured value is not made, and the rest of the graph keeps its own.

/// Returns every selected value as an extra graph output, in graph order, after those already
/// returned: `capture{names=layers.*.residual.mlp}`.
public struct Capture: Pass {
  public static let mnemonic = "capture"
  public static let optionNames = ["names"]

  /// The globs; a value any of them matches is returned once.
  public var names: [NameSelector]

  public init(options: PassOptions) throws(PassError) {
    names = [try requiredSelector(options)]
  }

  public init(names: [NameSelector]) { self.names = names }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var selected = Set<Int>()
    for selector in names {
      selected.formUnion(try selectedValues(graph, selector, pass: Self.mnemonic))
    }
    var result = graph
    for index in selected.sorted() { result.outputs.append(graph.body[index].results[0]) }
    return result
  }
}

/// Replaces each selected value by an input where a mask says so.
///
/// `v` becomes `select(mask, patch, v)` with inputs `%<name>.patch` (v's type) and
/// `%<name>.patch_mask` (i32, v's shape). Where the mask is 0 the value is left exactly as it
/// was, so one graph patches any set of positions.
public struct Patch: NamesPass {
  public static let mnemonic = "patch"

  public var names: NameSelector

  public init(names: NameSelector) { self.names = names }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    try edit(graph, names, pass: Self.mnemonic) { (emitter, value, name) throws(PassError) in
      let type = emitter.type(value)
      let patch = try newInput(&emitter.graph, name + ".patch", type)
      let mask = try newInput(&emitter.graph, name + ".patch_mask", TensorType(.i32, type.shape))
      return try emitter.emit(.select, [.value(mask), .value(patch), .value(value)], name: name)
    }
  }
}

/// Adds an input `%<name>.add` (the value's type) times `scale` to each selected value: a
/// steering vector, as a forward hook that returns `output + scale * vector` does.
public struct Add: Pass {
  public static let mnemonic = "add"
  public static let optionNames = ["names", "scale"]

  public var names: NameSelector
  public var scale: Double

  public init(options: PassOptions) throws(PassError) {
    names = try requiredSelector(options)
    scale = try options.number("scale", default: 1)
  }

  public init(names: NameSelector, scale: Double = 1) {
    self.names = names
    self.scale = scale
  }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    try edit(graph, names, pass: Self.mnemonic) { (emitter, value, name) throws(PassError) in
      let type = emitter.type(value)
      var vector = try newInput(&emitter.graph, name + ".add", type)
      if scale != 1 { vector = try emitter.binary(.mul, vector, scale) }
      return try emitter.binary(.add, value, vector, name: name)
    }
  }
}

/// Zeroes each selected value (zero ablation); what only fed it is left dead for `dce`.
public struct Ablate: NamesPass {
  public static let mnemonic = "ablate"

  public var names: NameSelector

  public init(names: NameSelector) { self.names = names }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    try edit(graph, names, pass: Self.mnemonic) { (emitter, value, name) throws(PassError) in
      try emitter.emit(.fill(value: 0, type: emitter.type(value)), [], name: name)
    }
  }
}

/// A hook pass whose one option is the `names` glob.
public protocol NamesPass: Pass {
  init(names: NameSelector)
}

extension NamesPass {
  public static var optionNames: [String] { ["names"] }

  public init(options: PassOptions) throws(PassError) {
    self.init(names: try requiredSelector(options))
  }
}

private func requiredSelector(_ options: PassOptions) throws(PassError) -> NameSelector {
  guard options.text("names") != nil else {
    throw PassError(message: "\(options.pass): option 'names' is required (a glob of value names)")
  }
  return try options.selector("names", default: "")
}

/// The indices of the named instructions whose name `selector` matches, in graph order; none is
/// an error naming the nearest names.
private func selectedValues(_ graph: Graph, _ selector: NameSelector, pass: String)
  throws(PassError) -> [Int]
{
  let selected = graph.body.indices.filter { graph.body[$0].name.map(selector.matches) ?? false }
  if selected.isEmpty {
    let known = graph.body.compactMap(\.name)
    let nearest = NameSelector.nearest(to: selector.pattern, among: known)
    let hint =
      nearest.isEmpty ? "the graph names no value" : "nearest: " + nearest.joined(separator: ", ")
    throw PassError(message: "\(pass): no value named like '\(selector.pattern)' (\(hint))")
  }
  return selected
}

private func newInput(_ graph: inout Graph, _ name: String, _ type: TensorType)
  throws(PassError) -> Value
{
  if graph.inputs.contains(where: { $0.name == name }) {
    throw PassError(message: "the graph already has an input named '\(name)'")
  }
  let value = graph.newValue(type)
  graph.inputs.append(GraphInput(name: name, value: value))
  return value
}

/// Rewrites each selected value: `replacement` emits the new value right after the value's
/// instruction; every later read and every output of the value reads the new one instead.
private func edit(
  _ graph: Graph, _ selector: NameSelector, pass: String,
  _ replacement: (inout Emitter, Value, String) throws(PassError) -> Value
) throws(PassError) -> Graph {
  let selected = Set(try selectedValues(graph, selector, pass: pass))
  var emitter = Emitter(graph)
  emitter.graph.body = []
  var renamed: [Value: Value] = [:]
  func mapped(_ operand: Operand) -> Operand {
    if case .value(let value) = operand, let new = renamed[value] { return .value(new) }
    return operand
  }
  for (index, original) in graph.body.enumerated() {
    var instruction = original
    instruction.operands = instruction.operands.map(mapped)
    guard selected.contains(index), let name = instruction.name else {
      emitter.graph.body.append(instruction)
      continue
    }
    instruction.name = name + ".original"
    emitter.graph.body.append(instruction)
    renamed[instruction.results[0]] = try replacement(&emitter, instruction.results[0], name)
  }
  emitter.graph.outputs = graph.outputs.map { renamed[$0] ?? $0 }
  return emitter.graph
}
