import IR

/// Rewrites primitive patterns into the fused ops that dedicated kernels run.
///
/// | pattern (as the Llama tracer and `lora` emit it)                          | fused op |
/// |---|---|
/// | `x * rsqrt(mean(x * x, last, keep) + eps) * w`                            | `rms_norm` |
/// | `silu(gate) * up` (equal types)                                           | `swiglu` |
/// | `sum(log_softmax(z) * cast(iota == reshape(t)), last)`                    | `neg(cross_entropy(z, t))` |
/// | `matmul(x, W) + s * matmul(matmul(x, A), B)`                              | `lora_linear` |
/// | `matmul(softmax(select(mask, matmul(q, k^T) * s, -inf)), v)`              | `attention` |
///
/// Keys and values that the tracer expanded from grouped key/value heads
/// (`transpose(reshape(broadcast(reshape(k))))`) are read from their own heads instead, so the
/// expanded copies disappear too.
/// A pattern is fused only when its inner values have no use outside it (so nothing is computed
/// twice); `lora_linear` returns `x A` as its first result, so that value may be used after it.
/// Run it before `autodiff`: the fused ops have their own gradients (`rms_norm_grad`,
/// `swiglu_grad`, `cross_entropy_grad`, and primitives for `lora_linear`). After `autodiff` the
/// forward patterns whose inner values the backward pass reads are left as they are.
///
/// `fuse{elementwise=true}` also fuses trees of unary and binary ops into `elementwise`
/// instructions (see `ElementwiseChains`). They have no gradient, so run that after `autodiff`:
/// `lora,freeze,fuse,autodiff,fuse{elementwise=true},dce`.
public struct Fuse: Pass {
  public static let mnemonic = "fuse"
  public static let optionNames = ["elementwise"]

  /// Whether elementwise chains are fused too.
  public var elementwise: Bool

  public init(options: PassOptions) throws(PassError) {
    elementwise = try options.flag("elementwise", default: false)
  }

  public init(elementwise: Bool = false) { self.elementwise = elementwise }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var matcher = Matcher(graph)
    for index in graph.body.indices {
      if matcher.claimed.contains(index) { continue }
      _ =
        matcher.rmsNorm(index) || matcher.swiglu(index) || matcher.crossEntropy(index)
        || matcher.loraLinear(index) || matcher.attention(index)
    }
    let fused = matcher.rewritten()
    return elementwise ? ElementwiseChains(fused).run() : fused
  }

  /// Fused instructions by kind in `graph`, for reports (`rms_norm: 61, ...`).
  public static func census(_ graph: Graph) -> [String: Int] {
    var counts: [String: Int] = [:]
    for instruction in graph.body where instruction.op.isFused {
      counts[instruction.op.mnemonic, default: 0] += 1
    }
    return counts
  }
}

/// Pattern matching over one graph: which instruction defines and which read each value, what
/// has been claimed by a match, and the replacements made so far.
private struct Matcher {
  var graph: Graph
  let definer: [Value: Int]
  let users: [Value: [Int]]
  let outputs: Set<Value>
  /// Instructions consumed by a match (removed, or replaced at an anchor).
  var claimed: Set<Int> = []
  /// Replacement instructions at each anchor.
  var replacements: [Int: [Instruction]] = [:]
  /// Instructions that may be left dead by a match (shared `iota`, `reshape`, head expansions).
  var maybeDead: Set<Int> = []

  init(_ graph: Graph) {
    self.graph = graph
    definer = graph.definers()
    users = graph.users()
    outputs = Set(graph.outputs)
  }

  func type(_ value: Value) -> TensorType { graph.type(of: value) }

  /// The unclaimed instruction defining `operand`, if it is a value with that op kind.
  func defining(_ operand: Operand, _ accepts: (Op) -> Bool) -> (index: Int, Instruction)? {
    guard let value = operand.value, let index = definer[value], !claimed.contains(index)
    else { return nil }
    let instruction = graph.body[index]
    return accepts(instruction.op) ? (index, instruction) : nil
  }

  /// Whether every result of each instruction in `inner` is read only inside `pattern` and is
  /// not a graph output.
  func isInternal(_ inner: [Int], pattern: Set<Int>) -> Bool {
    inner.allSatisfy { index in
      graph.body[index].results.allSatisfy { result in
        !outputs.contains(result) && (users[result] ?? []).allSatisfy(pattern.contains)
      }
    }
  }

  /// Records a match: `inner` instructions disappear, `anchor` becomes `replacement`.
  mutating func commit(anchor: Int, inner: [Int], replacement: [Instruction]) {
    claimed.formUnion(inner)
    claimed.insert(anchor)
    replacements[anchor] = replacement
  }

  // MARK: - Patterns

  /// `y = (x * r) * w` with `r = rsqrt(mean(x * x) + eps)`, either side of each `mul`.
  mutating func rmsNorm(_ anchor: Int) -> Bool {
    let top = graph.body[anchor]
    guard top.op == .binary(.mul) else { return false }
    for (normedSide, scaleSide) in [(0, 1), (1, 0)] {
      guard let scale = top.operands[scaleSide].value,
        let (normedIndex, normed) = defining(top.operands[normedSide], { $0 == .binary(.mul) })
      else { continue }
      for (xSide, rSide) in [(0, 1), (1, 0)] {
        guard let x = normed.operands[xSide].value,
          let (rIndex, r) = defining(normed.operands[rSide], { $0 == .unary(.rsqrt) }),
          let (sumIndex, shifted) = defining(r.operands[0], { $0 == .binary(.add) })
        else { continue }
        let xType = type(x)
        guard xType.dtype == .f32, xType.rank >= 1,
          type(scale) == TensorType(.f32, [xType.shape[xType.rank - 1]]),
          type(top.results[0]) == xType
        else { continue }
        let last = xType.rank - 1
        var epsilon: Double?
        var meanOperand: Operand?
        for (meanSide, epsilonSide) in [(0, 1), (1, 0)] {
          if case .scalar(let value) = shifted.operands[epsilonSide] {
            epsilon = value
            meanOperand = shifted.operands[meanSide]
          }
        }
        guard let epsilon, let meanOperand,
          let (meanIndex, _) = defining(
            meanOperand, { $0 == .reduce(.mean, axes: [last], keepDims: true) }),
          let (squareIndex, square) = defining(
            graph.body[meanIndex].operands[0], { $0 == .binary(.mul) }),
          square.operands[0].value == x, square.operands[1].value == x
        else { continue }
        let inner = [squareIndex, meanIndex, sumIndex, rIndex, normedIndex]
        guard isInternal(inner, pattern: Set(inner + [anchor])) else { continue }
        let fused = Instruction(
          results: top.results, op: .rmsNorm(epsilon: epsilon),
          operands: [.value(x), .value(scale)], name: top.name)
        commit(anchor: anchor, inner: inner, replacement: [fused])
        return true
      }
    }
    return false
  }

  /// `silu(gate) * up` with equal types.
  mutating func swiglu(_ anchor: Int) -> Bool {
    let top = graph.body[anchor]
    guard top.op == .binary(.mul) else { return false }
    for (siluSide, upSide) in [(0, 1), (1, 0)] {
      guard let up = top.operands[upSide].value,
        let (siluIndex, silu) = defining(top.operands[siluSide], { $0 == .unary(.silu) }),
        let gate = silu.operands[0].value,
        type(gate) == type(up), type(up) == type(top.results[0]), type(up).dtype == .f32,
        isInternal([siluIndex], pattern: [siluIndex, anchor])
      else { continue }
      let fused = Instruction(
        results: top.results, op: .swiglu, operands: [.value(gate), .value(up)], name: top.name)
      commit(anchor: anchor, inner: [siluIndex], replacement: [fused])
      return true
    }
    return false
  }

  /// `sum(log_softmax(z) * cast(iota == reshape(t)), last)`: the log-probability of each target,
  /// which is `-cross_entropy(z, t)` (both are 0 for a target outside the vocabulary).
  mutating func crossEntropy(_ anchor: Int) -> Bool {
    let top = graph.body[anchor]
    guard case .reduce(.sum, let axes, false) = top.op,
      let (productIndex, product) = defining(top.operands[0], { $0 == .binary(.mul) })
    else { return false }
    for (logSide, maskSide) in [(0, 1), (1, 0)] {
      guard
        let (logIndex, logSoftmax) = defining(
          product.operands[logSide], { if case .logSoftmax = $0 { true } else { false } }),
        let logits = logSoftmax.operands[0].value,
        case .logSoftmax(let axis) = logSoftmax.op
      else { continue }
      let logitsType = type(logits)
      let last = logitsType.rank - 1
      guard axis == last, axes == [last],
        let (castIndex, _) = defining(product.operands[maskSide], { $0 == .cast(to: .f32) }),
        let (equalIndex, equal) = defining(
          graph.body[castIndex].operands[0], { $0 == .compare(.eq) })
      else { continue }
      for (iotaSide, targetSide) in [(0, 1), (1, 0)] {
        guard
          let (iotaIndex, _) = defining(
            equal.operands[iotaSide],
            { $0 == .iota(axis: last, type: logitsType.with(dtype: .i32)) }
          ),
          let (reshapeIndex, reshape) = defining(
            equal.operands[targetSide], { if case .reshape = $0 { true } else { false } }),
          let targets = reshape.operands[0].value,
          type(targets) == TensorType(.i32, Array(logitsType.shape.dropLast()))
        else { continue }
        let inner = [logIndex, castIndex, equalIndex, productIndex]
        guard isInternal(inner, pattern: Set(inner + [anchor])) else { continue }
        let losses = graph.newValue(type(targets).with(dtype: .f32))
        let fused = [
          Instruction(
            results: [losses], op: .crossEntropy, operands: [.value(logits), .value(targets)]),
          Instruction(
            results: top.results, op: .unary(.neg), operands: [.value(losses)], name: top.name),
        ]
        commit(anchor: anchor, inner: inner, replacement: fused)
        maybeDead.formUnion([iotaIndex, reshapeIndex])
        return true
      }
    }
    return false
  }

  /// `matmul(x, W) + s * matmul(matmul(x, A), B)` (the `lora` pass's branch, either side of the
  /// `add` and the `mul`).
  mutating func loraLinear(_ anchor: Int) -> Bool {
    let top = graph.body[anchor]
    guard top.op == .binary(.add) else { return false }
    let plain = Op.matmul(transposeA: false, transposeB: false)
    for (baseSide, branchSide) in [(0, 1), (1, 0)] {
      guard
        let (baseIndex, base) = defining(
          top.operands[baseSide], { if case .matmul(false, _) = $0 { true } else { false } }),
        case .matmul(_, let transposeW) = base.op,
        let (scaledIndex, scaled) = defining(top.operands[branchSide], { $0 == .binary(.mul) })
      else { continue }
      for (productSide, scaleSide) in [(0, 1), (1, 0)] {
        guard case .scalar(let scale) = scaled.operands[scaleSide],
          let (upIndex, up) = defining(scaled.operands[productSide], { $0 == plain }),
          let (downIndex, down) = defining(up.operands[0], { $0 == plain }),
          let x = base.operands[0].value, down.operands[0].value == x,
          let weight = base.operands[1].value, let a = down.operands[1].value,
          let b = up.operands[1].value,
          type(weight).rank == 2, type(a).rank == 2, type(b).rank == 2, type(x).rank >= 2,
          type(top.results[0]) == type(base.results[0])
        else { continue }
        let inner = [baseIndex, upIndex, scaledIndex]
        guard isInternal(inner, pattern: Set(inner + [anchor, downIndex])) else { continue }
        // `x A` moves to the anchor: every other use of it must come later.
        let xa = down.results[0]
        guard (users[xa] ?? []).allSatisfy({ $0 == upIndex || $0 > anchor }) else { continue }
        let fused = Instruction(
          results: [xa, top.results[0]], op: .loraLinear(scale: scale, transposeW: transposeW),
          operands: [.value(x), .value(weight), .value(a), .value(b)], name: top.name)
        commit(anchor: anchor, inner: inner + [downIndex], replacement: [fused])
        return true
      }
    }
    return false
  }

  /// Whether `operand` is `-inf`: a literal, or a `fill` of it.
  func isNegativeInfinity(_ operand: Operand) -> Bool {
    if case .scalar(let value) = operand { return value == -.infinity }
    guard let (_, fill) = defining(operand, { if case .fill = $0 { true } else { false } }),
      case .fill(let value, _) = fill.op
    else { return false }
    return value == -.infinity
  }

  /// For `x = transpose(reshape(broadcast(reshape(x0))))` expanding `x0: [B, T, G, D]` to
  /// `[B, H, T, D]` (each of the G heads repeated H / G times): `x0` and the chain's instructions.
  func groupedHeads(_ value: Value) -> (source: Value, chain: [Int])? {
    let expanded = type(value)
    guard expanded.rank == 4,
      let (transposeIndex, transpose) = defining(
        .value(value), { $0 == .transpose(permutation: [0, 2, 1, 3]) }),
      let (wideIndex, wide) = defining(
        transpose.operands[0], { if case .reshape = $0 { true } else { false } }),
      let (spreadIndex, spread) = defining(
        wide.operands[0], { if case .broadcast = $0 { true } else { false } }),
      let (narrowIndex, narrow) = defining(
        spread.operands[0], { if case .reshape = $0 { true } else { false } }),
      let source = narrow.operands[0].value
    else { return nil }
    let (b, h, t, d) = (expanded.shape[0], expanded.shape[1], expanded.shape[2], expanded.shape[3])
    // The narrow form is [B, T, G, 1, D]; its source may have any shape of that size (`fold`
    // merges the tracer's reshape to [B, T, G, D] into it).
    let narrowShape = type(narrow.results[0]).shape
    guard narrowShape.count == 5, narrowShape[3] == 1 else { return nil }
    let g = narrowShape[2]
    guard g > 0, h % g == 0, type(source).elementCount == b * t * g * d,
      narrowShape == [b, t, g, 1, d],
      type(spread.results[0]).shape == [b, t, g, h / g, d],
      type(wide.results[0]).shape == [b, t, h, d]
    else { return nil }
    return (source, [transposeIndex, wideIndex, spreadIndex, narrowIndex])
  }

  /// `matmul(softmax(select(mask, matmul(q, k, transpose_b) * s, -inf)), v)` over
  /// `[B, H, S, D]` queries.
  mutating func attention(_ anchor: Int) -> Bool {
    let top = graph.body[anchor]
    guard top.op == .matmul(transposeA: false, transposeB: false),
      var values = top.operands[1].value,
      let (softmaxIndex, softmax) = defining(
        top.operands[0], { if case .softmax = $0 { true } else { false } }),
      case .softmax(let axis) = softmax.op, axis == 3,
      let (selectIndex, select) = defining(softmax.operands[0], { $0 == .select }),
      let mask = select.operands[0].value, isNegativeInfinity(select.operands[2]),
      let (scaledIndex, scaled) = defining(select.operands[1], { $0 == .binary(.mul) })
    else { return false }
    for (productSide, scaleSide) in [(0, 1), (1, 0)] {
      guard case .scalar(let scale) = scaled.operands[scaleSide],
        let (scoresIndex, scores) = defining(
          scaled.operands[productSide], { $0 == .matmul(transposeA: false, transposeB: true) }),
        let queries = scores.operands[0].value, var keys = scores.operands[1].value,
        type(keys) == type(values), type(scaled.results[0]) == type(select.results[0])
      else { continue }
      let inner = [scoresIndex, scaledIndex, selectIndex, softmaxIndex]
      guard isInternal(inner, pattern: Set(inner + [anchor])) else { continue }
      var replacement: [Instruction] = []
      if let (k0, kChain) = groupedHeads(keys), let (v0, vChain) = groupedHeads(values),
        type(k0).elementCount == type(v0).elementCount
      {
        // Read the grouped heads in place of the expanded copies: [B, T, G, D] -> [B, G, T, D].
        var heads: [Value] = []
        let (b, t, d) = (type(keys).shape[0], type(keys).shape[2], type(keys).shape[3])
        let g = type(k0).elementCount / (b * t * d)
        for source in [k0, v0] {
          var grouped = source
          if type(source).shape != [b, t, g, d] {
            grouped = graph.newValue(TensorType(.f32, [b, t, g, d]))
            replacement.append(
              Instruction(
                results: [grouped], op: .reshape(to: [b, t, g, d]), operands: [.value(source)]))
          }
          let transposed = graph.newValue(TensorType(.f32, [b, g, t, d]))
          replacement.append(
            Instruction(
              results: [transposed], op: .transpose(permutation: [0, 2, 1, 3]),
              operands: [.value(grouped)]))
          heads.append(transposed)
        }
        (keys, values) = (heads[0], heads[1])
        maybeDead.formUnion(kChain + vChain)
      }
      let op = Op.attention(scale: scale)
      let operands: [Operand] = [.value(queries), .value(keys), .value(values), .value(mask)]
      guard
        let types = try? op.resultTypes(operands.map { .tensor(type($0.value ?? queries)) }),
        types == [type(top.results[0])]
      else { continue }
      replacement.append(
        Instruction(results: top.results, op: op, operands: operands, name: top.name))
      commit(anchor: anchor, inner: inner, replacement: replacement)
      if let fill = select.operands[2].value, let index = definer[fill] { maybeDead.insert(index) }
      return true
    }
    return false
  }

  // MARK: - Result

  /// The graph with every match applied and the instructions matches left dead removed.
  func rewritten() -> Graph {
    var result = graph
    result.body = graph.body.rewritten(replacements, removing: claimed)
    // Remove candidates nothing reads any more, until none is left (chains die from the end).
    let candidates = Set(maybeDead.flatMap { graph.body[$0].results })
    while true {
      let read = Set(result.body.flatMap { $0.operands.compactMap(\.value) })
      let before = result.body.count
      result.body.removeAll { instruction in
        instruction.results.allSatisfy { candidates.contains($0) && !read.contains($0) }
          && !instruction.results.contains(where: outputs.contains)
      }
      if result.body.count == before { return result }
    }
  }
}

extension Array where Element == Instruction {
  /// The body with the instruction at each key of `replacements` replaced by its value and those
  /// in `removed` (that are not replaced) dropped.
  func rewritten(_ replacements: [Int: [Instruction]], removing removed: Set<Int>) -> [Instruction]
  {
    var body: [Instruction] = []
    for (index, instruction) in enumerated() {
      if let replacement = replacements[index] {
        body += replacement
      } else if !removed.contains(index) {
        body.append(instruction)
      }
    }
    return body
  }
}
