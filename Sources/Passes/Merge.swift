import IR

/// Bakes each LoRA branch into its base weight for inference: `lora_linear(x, W, A, B)` becomes
/// `matmul(x, W')` with `W' = f32(W) + s (A B)` (transposed for a `[out, in]` weight), named
/// `<target>.merged_weight`.
///
/// Run it after `freeze` and `fuse`: with A and B frozen, `W'` depends only on constants, so the
/// executable computes it once, when it is made, and every run is one GEMM per layer on an f32
/// weight. This is the one pass that forms `A B` on purpose. `x A` is still computed when
/// something else reads it. `unmerge` undoes it.
public struct Merge: Pass {
  public static let mnemonic = "merge"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var emitter = Emitter(graph)
    emitter.graph.body = []
    let users = graph.users()
    var merged = 0
    for instruction in graph.body {
      guard case .loraLinear(let scale, let transposeW) = instruction.op,
        let (x, w, a, b) = quadruple(instruction.operands)
      else {
        emitter.graph.body.append(instruction)
        continue
      }
      let name = instruction.name ?? "lora_linear.\(merged)"
      let weight =
        emitter.type(w).dtype == .f32 ? w : try emitter.emit(.cast(to: .f32), [.value(w)])
      var delta = try emitter.emit(
        .matmul(transposeA: false, transposeB: false), [.value(a), .value(b)])
      if transposeW { delta = try emitter.emit(.transpose(permutation: [1, 0]), [.value(delta)]) }
      let scaled = try emitter.binary(.mul, delta, scale)
      let combined = try emitter.binary(.add, weight, scaled, name: name + ".merged_weight")
      let xa = instruction.results[0]
      if !(users[xa] ?? []).isEmpty || graph.outputs.contains(xa) {
        emitter.graph.body.append(
          Instruction(
            results: [xa], op: .matmul(transposeA: false, transposeB: false),
            operands: [.value(x), .value(a)]))
      }
      emitter.graph.body.append(
        Instruction(
          results: [instruction.results[1]], op: .matmul(transposeA: false, transposeB: transposeW),
          operands: [.value(x), .value(combined)], name: instruction.name))
      merged += 1
    }
    if merged == 0 {
      throw PassError(message: "merge: no lora_linear to merge (run lora and fuse first)")
    }
    return emitter.graph
  }
}

/// Undoes `merge`: `matmul(x, f32(W) + s (A B))` (as `merge` writes it) is `lora_linear(x, W, A, B)`
/// again, so an adapter can be trained further or switched off.
public struct Unmerge: Pass {
  public static let mnemonic = "unmerge"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    let definer = graph.definers()
    func defining(_ operand: Operand) -> Instruction? {
      operand.value.flatMap { definer[$0] }.map { graph.body[$0] }
    }
    var result = graph
    var unmerged = 0
    for (index, instruction) in graph.body.enumerated() {
      guard case .matmul(false, let transposeW) = instruction.op,
        let x = instruction.operands[0].value,
        let combined = defining(instruction.operands[1]), combined.op == .binary(.add),
        combined.name?.hasSuffix(".merged_weight") == true,
        let scaled = defining(combined.operands[1]), scaled.op == .binary(.mul),
        case .scalar(let scale) = scaled.operands[1]
      else { continue }
      var product = defining(scaled.operands[0])
      if transposeW {
        guard product?.op == .transpose(permutation: [1, 0]) else { continue }
        product = product.flatMap { defining($0.operands[0]) }
      }
      guard let product, product.op == .matmul(transposeA: false, transposeB: false),
        let a = product.operands[0].value, let b = product.operands[1].value
      else { continue }
      var weight = combined.operands[0]
      if let cast = defining(weight), cast.op == .cast(to: .f32) { weight = cast.operands[0] }
      guard let w = weight.value else { continue }
      let xa = result.newValue(
        TensorType(.f32, Array(graph.type(of: x).shape.dropLast()) + [graph.type(of: a).shape[1]]))
      result.body[index] = Instruction(
        results: [xa, instruction.results[0]],
        op: .loraLinear(scale: scale, transposeW: transposeW),
        operands: [.value(x), .value(w), .value(a), .value(b)], name: instruction.name)
      unmerged += 1
    }
    if unmerged == 0 { throw PassError(message: "unmerge: no merged weight (made by merge) found") }
    return try DeadCodeElimination().run(result)
  }
}

/// The four value operands of a `lora_linear`.
private func quadruple(_ operands: [Operand]) -> (Value, Value, Value, Value)? {
  guard operands.count == 4, let x = operands[0].value, let w = operands[1].value,
    let a = operands[2].value, let b = operands[3].value
  else { return nil }
  return (x, w, a, b)
}
