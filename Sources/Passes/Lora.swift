import IR

/// Inserts a LoRA branch at every selected matmul: `y = xW` becomes
/// `y = xW + s * (xA)B` with `A: f32[in, rank]` (kaiming-uniform, a = sqrt 5) and
/// `B: f32[rank, out]` (zeros), evaluated `(xA)B` so `A·B` is never formed.
///
/// `s = alpha / rank`, or `alpha / sqrt(rank)` with `rslora=true`. Parameters are named after the
/// target (`layers.3.attn.q.lora_a`, `.lora_b`); the base product becomes `<name>.base` and the
/// sum keeps the target's name. Each target's A is seeded `seed + k` for the k-th target.
///
/// With `per_head=true` each target gets one LoRA instance per attention head, as the
/// TransformerLens tutorial's `Lora(n_inst=...)` does; which heads is read from the graph:
/// - a product whose result the graph splits into heads (`reshape` to `[..., n, d]`: q, k, v)
///   gets `A: f32[n, in, rank]`, `B: f32[n, rank, d]`, and head `h` of the result adds
///   `s * (x A[h]) B[h]`;
/// - a product whose input is a concatenation of heads (a `reshape` from `[..., n, ..., d]`: o)
///   gets `A: f32[n, d, rank]`, `B: f32[n, rank, out]` and adds `s * sum_h (z_h A[h]) B[h]`.
///
/// A is initialised as torch's `kaiming_uniform_(a=sqrt 5)` does on the 3-D tensor
/// (`fan_in=torch`: `U(±1/sqrt(in * rank))`), B with zeros. The per-head products are batched
/// over heads; `(xA)B` order holds here too.
public struct Lora: Pass {
  public static let mnemonic = "lora"
  public static let optionNames = ["rank", "alpha", "targets", "rslora", "seed", "per_head"]

  public var rank: Int
  public var alpha: Double
  public var targets: NameSelector
  public var rsLoRA: Bool
  public var seed: UInt64
  /// One instance per attention head (q and o: query heads; k and v: key/value heads).
  public var perHead: Bool

  public init(options: PassOptions) throws(PassError) {
    rank = try options.integer("rank", default: 8, in: 1...65536)
    alpha = try options.number("alpha", default: Double(rank))
    targets = try options.selector("targets", default: "*")
    rsLoRA = try options.flag("rslora", default: false)
    seed = UInt64(try options.integer("seed", default: 0, in: 0...Int.max))
    perHead = try options.flag("per_head", default: false)
  }

  public init(
    rank: Int, alpha: Double, targets: NameSelector, rsLoRA: Bool = false, seed: UInt64 = 0,
    perHead: Bool = false
  ) {
    self.rank = rank
    self.alpha = alpha
    self.targets = targets
    self.rsLoRA = rsLoRA
    self.seed = seed
    self.perHead = perHead
  }

  /// The factor the branch is scaled by.
  public var scale: Double { rsLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var emitter = Emitter(graph)
    emitter.graph.body = []
    let (users, definers) = (graph.users(), graph.definers())
    var matched = 0
    for instruction in graph.body {
      guard let name = instruction.name, targets.matches(name) else {
        emitter.graph.body.append(instruction)
        continue
      }
      // A named part of a fused product (GPT-2's and GPT-NeoX's q, k, v) is a linear layer of
      // the product's input: its branch is added to the part, unless the product has one.
      if let part = Lora.selectedColumns(of: instruction, in: graph, definers: definers),
        !(part.product.name.map(targets.matches) ?? false)
      {
        let inputs = graph.type(of: part.x).shape.last ?? 0
        let outputs = graph.type(of: instruction.results[0]).shape.last ?? 0
        var base = instruction
        base.results = [emitter.graph.newValue(graph.type(of: instruction.results[0]))]
        base.name = name + ".base"
        emitter.graph.body.append(base)
        let branch = try branch(
          &emitter, x: part.x, instruction: instruction, name: name, inputs: inputs,
          outputs: outputs, seed: seed &+ UInt64(matched), graph: graph, users: users,
          definers: definers)
        // Never fused into `lora_linear`, so it takes the run-time adapter scale as an input.
        let scaled = try emitter.binary(
          .mul, try emitter.binary(.mul, branch, scale), emitter.adapterScaleInput())
        emitter.graph.body.append(
          Instruction(
            results: instruction.results, op: .binary(.add),
            operands: [.value(base.results[0]), .value(scaled)], name: name))
        matched += 1
        continue
      }
      guard case .matmul(let transposeA, let transposeB) = instruction.op,
        case .value(let x) = instruction.operands[0]
      else {
        emitter.graph.body.append(instruction)
        continue
      }
      let weight = graph.type(of: instruction.operands[1].value ?? x)
      guard !transposeA, weight.rank == 2 else {
        throw PassError(
          message: "lora: '\(name)' is not a linear layer (it needs x [..., in] times a 2-D weight)"
        )
      }
      for declaration in emitter.graph.declarations
      where declaration.name == name + ".lora_a" || declaration.name == name + ".lora_b" {
        throw PassError(message: "lora: '\(declaration.name)' already exists")
      }
      let inputs = graph.type(of: x).shape.last ?? 0
      let outputs = transposeB ? weight.shape[0] : weight.shape[1]
      let seed = seed &+ UInt64(matched)
      var base = instruction
      base.results = [emitter.graph.newValue(graph.type(of: instruction.results[0]))]
      base.name = name + ".base"
      emitter.graph.body.append(base)
      let branch = try branch(
        &emitter, x: x, instruction: instruction, name: name, inputs: inputs, outputs: outputs,
        seed: seed, graph: graph, users: users, definers: definers)
      var scaled = try emitter.binary(.mul, branch, scale)
      if perHead {
        // Unfused branches take the run-time adapter scale as an input (fused `lora_linear`
        // ones take it inside the kernel): 0 switches the adapter off, 1 runs it as trained.
        scaled = try emitter.binary(.mul, scaled, emitter.adapterScaleInput())
      }
      // The sum keeps the original result, so later uses need no renaming.
      emitter.graph.body.append(
        Instruction(
          results: instruction.results, op: .binary(.add),
          operands: [.value(base.results[0]), .value(scaled)], name: name))
      matched += 1
    }
    if matched == 0 {
      let named = graph.body.compactMap { instruction -> String? in
        if case .matmul = instruction.op { return instruction.name }
        if Lora.selectedColumns(of: instruction, in: graph, definers: definers) != nil {
          return instruction.name
        }
        return nil
      }
      let nearest = NameSelector.nearest(to: targets.pattern, among: named)
      throw PassError(
        message: "lora: no matmul named like '\(targets.pattern)'"
          + (nearest.isEmpty ? "" : " (nearest: \(nearest.joined(separator: ", ")))"))
    }
    return emitter.graph
  }
}

extension Lora {
  /// Declares the target's A and B and appends its unscaled branch for the input `x`: `(x A) B`,
  /// or per head.
  fileprivate func branch(
    _ emitter: inout Emitter, x: Value, instruction: Instruction, name: String, inputs: Int,
    outputs: Int, seed: UInt64, graph: Graph, users: [Value: [Int]], definers: [Value: Int]
  ) throws(PassError) -> Value {
    if perHead {
      let layout = try HeadLayout(
        of: instruction, name: name, in: graph, users: users, definers: definers)
      return try emitter.perHeadBranch(
        x, layout: layout, inputs: inputs, outputs: outputs, rank: rank, name: name, seed: seed)
    }
    let a = emitter.graph.newValue(TensorType(.f32, [inputs, rank]))
    let b = emitter.graph.newValue(TensorType(.f32, [rank, outputs]))
    emitter.graph.declarations += [
      Declaration(
        kind: .parameter, name: name + ".lora_a", value: a,
        initializer: .kaimingUniformDefault, seed: seed),
      Declaration(kind: .parameter, name: name + ".lora_b", value: b, initializer: .zeros),
    ]
    let xa = try emitter.emit(
      .matmul(transposeA: false, transposeB: false), [.value(x), .value(a)])
    return try emitter.emit(
      .matmul(transposeA: false, transposeB: false), [.value(xa), .value(b)])
  }

  /// When `instruction` (a `slice` or `reshape`) selects some of the output columns of a linear
  /// product `x W` (or `x W + b`), for every row on its own: the product and `x`.
  ///
  /// Walks back through `slice`s and `reshape`s that keep the leading (row) axes and a bias added
  /// to the product, to a `matmul` of a 2-D weight; the selected value is then `x W'` (+ `b'`)
  /// for the selected columns `W'` of `W`, so a LoRA branch `s (x A) B` on it is a linear layer's.
  static func selectedColumns(
    of instruction: Instruction, in graph: Graph, definers: [Value: Int]
  ) -> (x: Value, product: Instruction)? {
    switch instruction.op {
    case .slice, .reshape: break
    default: return nil
    }
    let rows = Array(graph.type(of: instruction.results[0]).shape.dropLast())
    guard !rows.isEmpty else { return nil }
    func keepsRows(_ value: Value) -> Bool {
      let shape = graph.type(of: value).shape
      return shape.count > rows.count && Array(shape.prefix(rows.count)) == rows
    }
    var current = instruction
    while keepsRows(current.results[0]) {
      var source: Value?
      switch current.op {
      case .slice(let start, let end):
        let shape = graph.type(of: current.results[0]).shape
        guard start.prefix(rows.count).allSatisfy({ $0 == 0 }),
          Array(end.prefix(rows.count)) == Array(shape.prefix(rows.count))
        else { return nil }
        source = current.operands[0].value
      case .reshape:
        source = current.operands[0].value
      case .binary(.add):
        // The product plus a bias vector along the last axis.
        let shape = graph.type(of: current.results[0]).shape
        guard current.operands.count == 2, let first = current.operands[0].value,
          let second = current.operands[1].value,
          graph.type(of: first).shape == shape,
          graph.type(of: second).shape == [shape.last ?? 0]
        else { return nil }
        source = first
      case .matmul(false, _):
        guard let x = current.operands[0].value, let w = current.operands[1].value,
          graph.type(of: w).rank == 2, keepsRows(x)
        else { return nil }
        return (x, current)
      default:
        return nil
      }
      guard let source, let index = definers[source] else { return nil }
      current = graph.body[index]
    }
    return nil
  }
}

// MARK: - Per-head LoRA

/// How a per-head target meets the attention heads, read from the graph around it.
enum HeadLayout: Equatable {
  /// The product's result is split into `heads` heads of `dimension` (q, k, v).
  case splitsOutput(heads: Int, dimension: Int)
  /// The product's input is `heads` heads of `dimension` laid side by side (o).
  case concatenatedInput(heads: Int, dimension: Int)

  /// The layout of the matmul `instruction` (named `name`): a `reshape` of its result (or of its
  /// result plus a bias) to `[..., n, d]`, else its input made by a `reshape` from `[..., n, ..., d]` (the batch
  /// dimensions kept, the last axis split with `d` innermost).
  ///
  /// - Throws: `PassError` when neither holds: the target is not an attention projection.
  init(
    of instruction: Instruction, name: String, in graph: Graph, users: [Value: [Int]],
    definers: [Value: Int]
  ) throws(PassError) {
    let result = graph.type(of: instruction.results[0]).shape
    let batch = Array(result.dropLast())
    // The result, or a bias added to it (Qwen2's q, k, v), is what is split into heads.
    var outputs = [instruction.results[0]]
    for index in users[instruction.results[0]] ?? [] {
      if case .binary(.add) = graph.body[index].op,
        graph.type(of: graph.body[index].results[0]).shape == result
      {
        outputs.append(graph.body[index].results[0])
      }
    }
    for index in outputs.flatMap({ users[$0] ?? [] }) {
      guard case .reshape(let shape) = graph.body[index].op, shape.count == result.count + 1,
        Array(shape.prefix(batch.count)) == batch
      else { continue }
      self = .splitsOutput(heads: shape[shape.count - 2], dimension: shape[shape.count - 1])
      return
    }
    if let x = instruction.operands[0].value, let index = definers[x],
      case .reshape = graph.body[index].op, let source = graph.body[index].operands[0].value
    {
      let (input, split) = (graph.type(of: x).shape, graph.type(of: source).shape)
      let width = input.last ?? 0
      if split.count > input.count, Array(split.prefix(input.count - 1)) == Array(input.dropLast()),
        let dimension = split.last, dimension > 0, width % dimension == 0
      {
        self = .concatenatedInput(heads: width / dimension, dimension: dimension)
        return
      }
    }
    throw PassError(
      message:
        "lora: per-head target '\(name)' is not an attention projection (its result is not split into heads and its input is not a concatenation of heads)"
    )
  }
}

extension Emitter {
  /// The graph's `%adapter_scale: f32[]` input, added on first use.
  mutating func adapterScaleInput() throws(PassError) -> Value {
    if let input = graph.inputs.first(where: { $0.name == adapterScaleInputName }) {
      guard graph.type(of: input.value) == TensorType(.f32, []) else {
        throw PassError(message: "lora: the graph's input '\(adapterScaleInputName)' is not f32[]")
      }
      return input.value
    }
    let value = graph.newValue(TensorType(.f32, []))
    graph.inputs.append(GraphInput(name: adapterScaleInputName, value: value))
    return value
  }

  /// Declares `<name>.lora_a` and `.lora_b` for a per-head target and appends the unscaled
  /// branch for the target's input `x`; returns its value, shaped as the target's result.
  ///
  /// ```
  /// q, k, v (n heads of d):  x [..., in] · (A [n, in, r] as [in, n·r])  -> [rows, n, r]
  ///                          -> per head (· B[h] [r, d]) -> [..., n·d]
  /// o (n heads of d):        x [..., n·d] as [n, rows, d] · A [n, d, r]  -> [rows, n·r]
  ///                          · (B [n, r, out] as [n·r, out]) -> [..., out] (the sum over heads)
  /// ```
  mutating func perHeadBranch(
    _ x: Value, layout: HeadLayout, inputs: Int, outputs: Int, rank: Int, name: String,
    seed: UInt64
  ) throws(PassError) -> Value {
    let batch = Array(type(x).shape.dropLast())
    let rows = batch.reduce(1, *)
    let swap = Op.transpose(permutation: [1, 0, 2])
    let plain = Op.matmul(transposeA: false, transposeB: false)
    func declare(_ a: [Int], _ b: [Int]) -> (Value, Value) {
      let (va, vb) = (graph.newValue(TensorType(.f32, a)), graph.newValue(TensorType(.f32, b)))
      graph.declarations += [
        Declaration(
          kind: .parameter, name: name + ".lora_a", value: va,
          initializer: .kaimingUniform(a: 5.0.squareRoot(), fanIn: .torch), seed: seed),
        Declaration(kind: .parameter, name: name + ".lora_b", value: vb, initializer: .zeros),
      ]
      return (va, vb)
    }
    switch layout {
    case .splitsOutput(let heads, let dimension):
      let (a, b) = declare([heads, inputs, rank], [heads, rank, dimension])
      let columns = try reshape(try emit(swap, [.value(a)]), [inputs, heads * rank])
      let xa = try emit(plain, [.value(x), .value(columns)])
      let byHead = try emit(swap, [.value(try reshape(xa, [rows, heads, rank]))])
      let xab = try emit(plain, [.value(byHead), .value(b)])
      return try reshape(try emit(swap, [.value(xab)]), batch + [outputs])
    case .concatenatedInput(let heads, let dimension):
      let (a, b) = declare([heads, dimension, rank], [heads, rank, outputs])
      let byHead = try emit(swap, [.value(try reshape(x, [rows, heads, dimension]))])
      let xa = try emit(plain, [.value(byHead), .value(a)])
      let joined = try reshape(try emit(swap, [.value(xa)]), batch + [heads * rank])
      return try emit(plain, [.value(joined), .value(try reshape(b, [heads * rank, outputs]))])
    }
  }
}
