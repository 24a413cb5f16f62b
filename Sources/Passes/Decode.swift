import IR

/// Turns a fused forward graph into a decoding graph over key/value caches.
///
/// The forward graph computes `tokens: i32[B, S]` from scratch with causal `attention` ops (run
/// `fuse` first). The decoding graph takes the same `S` new tokens per sequence and keeps every
/// attention's keys and values in `state` caches `[B, G, context, D]`: the new keys and values are
/// written at cache slot `cache_start[2]` (`cache_start: i32[4]` is `[0, 0, slot, 0]`), and each
/// query attends to the slots `key_mask: i32[B, S, context]` allows. The i-th attention's caches
/// are `layers.i.attn.k_cache` and `.v_cache`. With `last` (the default), the `head` product is
/// computed for the last new token only, and the graph returns `f32[B, vocab]`. One pass makes
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
      lastRow = try emitter.emit(
        .slice(start: [0, count - 1, 0], end: [batch, count, width]), [.value(hidden)])
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
