import IR

/// Orders chains of two matrix products by their FLOP count: `a (b c)` becomes `(a b) c` when
/// that is cheaper, and the other way round.
///
/// The case that matters is LoRA: `x (A B)` costs `M K N + K r N` multiply-adds and forms the
/// `[in, out]` product, `(x A) B` costs `M K r + M r N` and never does. Only plain products of
/// rank-2 right operands (weights shared over the batch) are reordered, and only when the inner
/// product has no other use, so nothing is computed twice. Names stay on the outer product.
public struct Reassociate: Pass {
  public static let mnemonic = "reassociate"
  public static let optionNames: [String] = []

  public init(options: PassOptions) throws(PassError) {}
  public init() {}

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var result = graph
    let definer = graph.definers()
    let users = graph.users()
    let outputs = Set(graph.outputs)
    let plain = Op.matmul(transposeA: false, transposeB: false)
    var removed = Set<Int>()
    for (index, outer) in graph.body.enumerated() where outer.op == plain {
      guard let left = outer.operands[0].value, let right = outer.operands[1].value else {
        continue
      }
      // a (b c) -> (a b) c, or (a b) c -> a (b c).
      for innerOnRight in [true, false] {
        let innerValue = innerOnRight ? right : left
        guard let innerIndex = definer[innerValue], !removed.contains(innerIndex),
          graph.body[innerIndex].op == plain, users[innerValue] == [index],
          !outputs.contains(innerValue),
          let p = graph.body[innerIndex].operands[0].value,
          let q = graph.body[innerIndex].operands[1].value
        else { continue }
        let (a, b, c) = innerOnRight ? (left, p, q) : (p, q, right)
        let (ta, tb, tc) = (graph.type(of: a), graph.type(of: b), graph.type(of: c))
        // Weights shared over the batch: b and c are matrices, a may carry batch dimensions.
        guard tb.rank == 2, tc.rank == 2, ta.rank >= 2, ta.dtype == .f32, tb.dtype == .f32,
          tc.dtype == .f32
        else { continue }
        let rows = ta.shape.dropLast().reduce(1, *)
        let (k, r, n) = (tb.shape[0], tb.shape[1], tc.shape[1])
        let leftFirst = rows * k * r + rows * r * n  // (a b) c
        let rightFirst = k * r * n + rows * k * n  // a (b c)
        let wantLeftFirst = leftFirst < rightFirst
        guard wantLeftFirst == innerOnRight else { continue }
        // The new inner product takes the old inner's slot, so what it reads must come before.
        let moved = wantLeftFirst ? a : c
        if let movedIndex = definer[moved], movedIndex > innerIndex { continue }
        let newInner = result.newValue(
          wantLeftFirst
            ? TensorType(.f32, Array(ta.shape.dropLast()) + [r])
            : TensorType(.f32, [k, n]))
        let innerOperands: [Operand] =
          wantLeftFirst ? [.value(a), .value(b)] : [.value(b), .value(c)]
        result.body[innerIndex] = Instruction(
          results: [newInner], op: plain, operands: innerOperands)
        result.body[index].operands =
          wantLeftFirst ? [.value(newInner), .value(c)] : [.value(a), .value(newInner)]
        removed.insert(innerIndex)
        break
      }
    }
    return result
  }
}
