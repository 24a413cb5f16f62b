import IR

/// Turns a fused forward graph into a decoding graph over key/value caches.
///
/// The forward graph computes `tokens: i32[B, S]` from scratch with causal `attention` ops (run
/// `fuse` first). The decoding graph takes the same `S` new tokens per sequence and keeps every
/// attention's keys and values in `state` caches `[B, G, context, D]`: the new keys and values are
/// written at cache slot `cache_start[2]` (`cache_start: i32[4]` is `[0, 0, slot, 0]`), and each
/// query attends to the slots `key_mask: i32[B, S, context]` allows. The i-th attention's caches
/// are `layers.i.attn.k_cache` and `.v_cache`. With `last` (the default), the `head` product is
/// computed for the last new token only, and the graph returns `f32[B, vocab]`; so is every op
/// before it that works row by row and whose result only that needs (the last layer's query,
/// attention, output product and MLP; not its keys and values, which go to the cache). One pass makes
/// both the prefill graph (S = prompt length) and the one-token step graph (S = 1).
public struct Decode: Pass {
  public static let mnemonic = "decode"
  public static let optionNames = ["context", "last"]

  /// Cache slots per sequence.
  public var context: Int
  /// Whether only the last position's logits are computed.
  public var last: Bool

  public init(options: PassOptions) throws(PassError) {
    context = try options.integer("context", default: 2048, in: 1...1_048_576)
    last = try options.flag("last", default: true)
  }

  public init(context: Int, last: Bool = true) {
    self.context = context
    self.last = last
  }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    guard let tokens = graph.inputs.first(where: { $0.name == "tokens" }),
      graph.type(of: tokens.value).rank == 2
    else {
      throw PassError(message: "decode: the graph has no tokens input of shape [batch, sequence]")
    }
    let shape = graph.type(of: tokens.value).shape
    let (batch, count) = (shape[0], shape[1])
    guard count <= context else {
      throw PassError(message: "decode: \(count) new tokens do not fit a context of \(context)")
    }
    let attentions = graph.body.indices.filter {
      if case .attention = graph.body[$0].op { true } else { false }
    }
    if attentions.isEmpty {
      throw PassError(message: "decode: no attention op to give a cache (run fuse first)")
    }
    for name in ["cache_start", "key_mask"] where graph.inputs.contains(where: { $0.name == name })
    {
      throw PassError(message: "decode: the graph already has an input named '\(name)'")
    }
    var emitter = Emitter(graph)
    let start = emitter.graph.newValue(TensorType(.i32, [4]))
    let keyMask = emitter.graph.newValue(TensorType(.i32, [batch, count, context]))
    emitter.graph.inputs += [
      GraphInput(name: "cache_start", value: start), GraphInput(name: "key_mask", value: keyMask),
    ]
    emitter.graph.body = []
    let mask = try emitter.reshape(keyMask, [batch, 1, count, context])
    var layer = 0
    for (index, instruction) in graph.body.enumerated() {
      guard attentions.contains(index), let keys = instruction.operands[1].value,
        let values = instruction.operands[2].value
      else {
        emitter.graph.body.append(instruction)
        continue
      }
      let keyType = graph.type(of: keys)
      guard keyType.shape[2] == count, graph.type(of: values) == keyType else {
        throw PassError(
          message: "decode: attention \(layer) reads \(keyType) keys, not the \(count) new ones")
      }
      let cacheType = TensorType(
        .f32, [keyType.shape[0], keyType.shape[1], context, keyType.shape[3]])
      var updated: [Value] = []
      for (kind, new) in [("k", keys), ("v", values)] {
        let name = "layers.\(layer).attn.\(kind)_cache"
        if graph.declaration(named: name) != nil {
          throw PassError(message: "decode: '\(name)' already exists")
        }
        let cache = emitter.graph.newValue(cacheType)
        emitter.graph.declarations.append(Declaration(kind: .state, name: name, value: cache))
        updated.append(
          try emitter.emit(
            .dynamicUpdateSlice, [.value(cache), .value(new), .value(start)], name: name + ".next"))
      }
      var attention = instruction
      attention.operands = [
        instruction.operands[0], .value(updated[0]), .value(updated[1]), .value(mask),
      ]
      emitter.graph.body.append(attention)
      layer += 1
    }
    if last { try lastPositionOnly(&emitter, batch: batch, count: count) }
    return try DeadCodeElimination().run(emitter.graph)
  }

  /// Computes the `head` product of the last position only and returns it as `[batch, vocab]`.
  private func lastPositionOnly(_ emitter: inout Emitter, batch: Int, count: Int)
    throws(PassError)
  {
    let graph = emitter.graph
    guard let headIndex = graph.body.lastIndex(where: { $0.name == "head" }),
      case .matmul(false, let transposeB) = graph.body[headIndex].op,
      let hidden = graph.body[headIndex].operands[0].value,
      let output = graph.outputs.firstIndex(of: graph.body[headIndex].results[0])
    else {
      throw PassError(message: "decode: no matmul named 'head' among the outputs (use last=false)")
    }
    let width = graph.type(of: hidden).shape.last ?? 0
    guard graph.type(of: hidden).shape == [batch, count, width] else {
      throw PassError(message: "decode: the head reads \(graph.type(of: hidden)), not [B, S, E]")
    }
    // Rebuild the head after its operand: slice, reshape, product.
    var body = Array(graph.body[..<headIndex])
    let tail = Array(graph.body[(headIndex + 1)...])
    emitter.graph.body = body
    var lastRow = hidden
    if count > 1 {
      lastRow = try sliceRows(
        &emitter, graph: graph, of: hidden, axis: 1, from: count - 1, replacing: headIndex)
    }
    let rows = try emitter.reshape(lastRow, [batch, width])
    let logits = try emitter.emit(
      .matmul(transposeA: false, transposeB: transposeB),
      [.value(rows), graph.body[headIndex].operands[1]], name: "head")
    body = emitter.graph.body + tail
    emitter.graph.body = body
    emitter.graph.outputs[output] = logits
  }
}

/// Rows `from...` of `root` along `axis`, computed from sliced operands as far up as possible.
///
/// The slice is pushed up through the ops that work row by row along the sequence axis, as far as
/// every use of a value is such a sliced op: a prefill then runs the last layer's query product,
/// attention, output product and MLP for the last position only, while the keys and values of
/// every position still go to the cache (llama.cpp does the same). On SmolLM2 that skips ~3% of a
/// 128-token prefill's products (1 thread: 305-310 ms against 315-319 ms, same-minute A/B).
///
/// The sliced ops are appended to `emitter`'s body (the graph's body before instruction
/// `replacing`, which uses `root`); the full ones they replace have no other use left, and dead
/// code elimination drops them. Operands needed whole elsewhere are sliced where they are.
private func sliceRows(
  _ emitter: inout Emitter, graph: Graph, of root: Value, axis: Int, from: Int,
  replacing user: Int
) throws(PassError) -> Value {
  var uses: [Value: Int] = [:]
  for (index, instruction) in graph.body.enumerated() where index != user {
    for case .value(let value) in instruction.operands { uses[value, default: 0] += 1 }
  }
  for value in graph.outputs where value != graph.body[user].results[0] {
    uses[value, default: 0] += 1
  }
  uses[root, default: 0] += 1
  // Backwards: a value is computed sliced when every use of it asks for the same rows.
  var requests: [Value: (count: Int, axis: Int?)] = [root: (1, axis)]
  var sliced: [Int: (axis: Int, operands: [Int?])] = [:]
  for index in stride(from: user - 1, through: 0, by: -1) {
    let instruction = graph.body[index]
    // Every used result (lora_linear has two) wanted at the same rows by all of its uses.
    var wanted: Int?
    var whole = false
    for result in instruction.results where (uses[result] ?? 0) > 0 {
      guard let request = requests[result], let axis = request.axis, request.count == uses[result],
        wanted == nil || wanted == axis
      else {
        whole = true
        break
      }
      wanted = axis
    }
    guard !whole, let wanted, let axes = slicedOperandAxes(instruction, axis: wanted, in: graph)
    else { continue }
    sliced[index] = (wanted, axes)
    for (operand, operandAxis) in zip(instruction.operands, axes) {
      guard case .value(let value) = operand, let operandAxis else { continue }
      let before = requests[value]
      let agreed = before == nil || before?.axis == operandAxis ? operandAxis : nil
      requests[value] = ((before?.count ?? 0) + 1, agreed)
    }
  }
  // Forwards: the sliced ops, each on the sliced forms of its operands.
  var rows: [Value: Value] = [:]
  var plain: [Pair: Value] = [:]
  func rowsOf(_ value: Value, _ axis: Int) throws(PassError) -> Value {
    if let known = rows[value] { return known }
    if let known = plain[Pair(value: value, axis: axis)] { return known }
    let shape = emitter.type(value).shape
    guard axis < shape.count, shape[axis] > from else {
      throw PassError(message: "internal: decode sliced rows \(from)... of \(emitter.type(value))")
    }
    var start = [Int](repeating: 0, count: shape.count)
    start[axis] = from
    let result = try emitter.emit(.slice(start: start, end: shape), [.value(value)])
    plain[Pair(value: value, axis: axis)] = result
    return result
  }
  for (index, (axis, axes)) in sliced.sorted(by: { $0.key < $1.key }) {
    let instruction = graph.body[index]
    var operands: [Operand] = []
    for (operand, operandAxis) in zip(instruction.operands, axes) {
      if case .value(let value) = operand, let operandAxis {
        operands.append(.value(try rowsOf(value, operandAxis)))
      } else {
        operands.append(operand)
      }
    }
    var op = instruction.op
    if case .reshape(var shape) = op {
      shape[axis] -= from
      op = .reshape(to: shape)
    }
    let results = try emitter.emitAll(op, operands, name: instruction.name)
    for (result, sliced) in zip(instruction.results, results) { rows[result] = sliced }
  }
  return try rowsOf(root, axis)
}

private struct Pair: Hashable {
  var value: Value
  var axis: Int
}

/// For an op whose result is wanted only at some rows along `axis`: the axis along which each
/// operand is then needed only at those rows (nil: needed whole), or nil if the op does not work
/// row by row along `axis`.
private func slicedOperandAxes(_ instruction: Instruction, axis: Int, in graph: Graph) -> [Int?]? {
  let type = graph.type(of: instruction.results[0])
  let operands = instruction.operands.map { $0.value.map { graph.type(of: $0) } }
  switch instruction.op {
  case .unary, .binary, .swiglu, .elementwise:
    // Elementwise without broadcasting: every tensor operand has the result's shape.
    guard operands.allSatisfy({ $0 == nil || $0?.shape == type.shape }) else { return nil }
    return operands.map { $0 == nil ? nil : axis }
  case .rmsNorm:
    return axis < type.rank - 1 ? [axis, nil] : nil
  case .matmul(false, _):
    // Rows of x [..., S, K] by one matrix, each on its own.
    return operands.count == 2 && operands[1]?.rank == 2 && axis < type.rank - 1
      ? [axis, nil] : nil
  case .loraLinear:
    return axis < type.rank - 1 ? [axis, nil, nil, nil] : nil
  case .rope:
    return axis < type.rank - 2 ? [axis, axis] : nil
  case .transpose(let permutation):
    return [permutation[axis]]
  case .reshape(let shape):
    // Only a reshape that keeps every axis up to this one.
    guard let source = operands[0], axis < source.rank, axis < shape.count,
      Array(source.shape[...axis]) == Array(shape[...axis])
    else { return nil }
    return [axis]
  case .attention:
    // Query rows are independent: q and the mask's query axis; every key and value.
    guard axis == 2, let mask = operands[3], mask.rank == 4 else { return nil }
    return [2, nil, nil, mask.shape[2] == 1 ? nil : 2]
  default:
    return nil
  }
}
