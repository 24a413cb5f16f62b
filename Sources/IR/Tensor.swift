/// A value being traced: model code computes with these as with arrays, and each operation
/// appends an instruction to the builder's graph.
public struct Tensor {
  public let builder: GraphBuilder
  public let value: Value
  public let type: TensorType

  public var shape: [Int] { type.shape }
  public var dtype: DType { type.dtype }
  public var rank: Int { type.rank }

  /// Gives the instruction that computed this tensor a dotted name, prefixed by the scope path.
  @discardableResult
  public func named(_ name: String) throws(TraceError) -> Tensor {
    try builder.setName(name, of: value)
    return self
  }

  private func apply(_ op: Op, _ others: [Operand] = []) throws(TraceError) -> Tensor {
    try builder.emit1(op, [.value(value)] + others)
  }

  // MARK: - Elementwise

  /// `f(self)` elementwise.
  public func apply(_ function: UnaryOp) throws(TraceError) -> Tensor {
    try apply(.unary(function))
  }

  /// `self <op> other` elementwise with broadcasting.
  public func apply(_ function: BinaryOp, _ other: Tensor) throws(TraceError) -> Tensor {
    try apply(.binary(function), [.value(other.value)])
  }

  /// `self <op> scalar` elementwise.
  public func apply(_ function: BinaryOp, _ scalar: Double) throws(TraceError) -> Tensor {
    try apply(.binary(function), [.scalar(scalar)])
  }

  /// `self <comparison> other` as `i32` 1 or 0.
  public func compare(_ comparison: Comparison, _ other: Tensor) throws(TraceError) -> Tensor {
    try apply(.compare(comparison), [.value(other.value)])
  }

  /// `self <comparison> scalar` as `i32` 1 or 0.
  public func compare(_ comparison: Comparison, _ scalar: Double) throws(TraceError) -> Tensor {
    try apply(.compare(comparison), [.scalar(scalar)])
  }

  public static func + (lhs: Tensor, rhs: Tensor) throws(TraceError) -> Tensor {
    try lhs.apply(.add, rhs)
  }
  public static func - (lhs: Tensor, rhs: Tensor) throws(TraceError) -> Tensor {
    try lhs.apply(.sub, rhs)
  }
  public static func * (lhs: Tensor, rhs: Tensor) throws(TraceError) -> Tensor {
    try lhs.apply(.mul, rhs)
  }
  public static func / (lhs: Tensor, rhs: Tensor) throws(TraceError) -> Tensor {
    try lhs.apply(.div, rhs)
  }
  public static func + (lhs: Tensor, rhs: Double) throws(TraceError) -> Tensor {
    try lhs.apply(.add, rhs)
  }
  public static func - (lhs: Tensor, rhs: Double) throws(TraceError) -> Tensor {
    try lhs.apply(.sub, rhs)
  }
  public static func * (lhs: Tensor, rhs: Double) throws(TraceError) -> Tensor {
    try lhs.apply(.mul, rhs)
  }
  public static func / (lhs: Tensor, rhs: Double) throws(TraceError) -> Tensor {
    try lhs.apply(.div, rhs)
  }
  public static func + (lhs: Double, rhs: Tensor) throws(TraceError) -> Tensor {
    try rhs.builder.emit1(.binary(.add), [.scalar(lhs), .value(rhs.value)])
  }
  public static func - (lhs: Double, rhs: Tensor) throws(TraceError) -> Tensor {
    try rhs.builder.emit1(.binary(.sub), [.scalar(lhs), .value(rhs.value)])
  }
  public static func * (lhs: Double, rhs: Tensor) throws(TraceError) -> Tensor {
    try rhs.builder.emit1(.binary(.mul), [.scalar(lhs), .value(rhs.value)])
  }
  public static func / (lhs: Double, rhs: Tensor) throws(TraceError) -> Tensor {
    try rhs.builder.emit1(.binary(.div), [.scalar(lhs), .value(rhs.value)])
  }
  public static prefix func - (operand: Tensor) throws(TraceError) -> Tensor {
    try operand.apply(.neg)
  }

  // MARK: - Reductions

  /// Sums over `axes` (negative axes count from the end).
  public func sum(axes: [Int], keepDims: Bool = false) throws(TraceError) -> Tensor {
    try reduce(.sum, axes, keepDims)
  }

  /// The maximum over `axes`.
  public func max(axes: [Int], keepDims: Bool = false) throws(TraceError) -> Tensor {
    try reduce(.max, axes, keepDims)
  }

  /// The mean over `axes`.
  public func mean(axes: [Int], keepDims: Bool = false) throws(TraceError) -> Tensor {
    try reduce(.mean, axes, keepDims)
  }

  /// Sums every element into a scalar.
  public func sum() throws(TraceError) -> Tensor { try sum(axes: Array(0..<rank)) }

  private func reduce(_ function: ReduceOp, _ axes: [Int], _ keepDims: Bool) throws(TraceError)
    -> Tensor
  {
    try apply(.reduce(function, axes: axes.map { normalize($0, rank: rank) }, keepDims: keepDims))
  }

  // MARK: - Shapes

  /// The same elements with another shape; one dimension may be `-1` (inferred).
  public func reshaped(_ shape: [Int]) throws(TraceError) -> Tensor {
    var target = shape
    if let inferred = shape.firstIndex(of: -1), shape.filter({ $0 == -1 }).count == 1 {
      let known = shape.filter { $0 != -1 }.reduce(1, *)
      if known > 0 && type.elementCount % known == 0 {
        target[inferred] = type.elementCount / known
      }
    }
    return try apply(.reshape(to: target))
  }

  /// Permutes the axes: result axis `k` is axis `permutation[k]`.
  public func transposed(_ permutation: [Int]) throws(TraceError) -> Tensor {
    try apply(.transpose(permutation: permutation))
  }

  /// Broadcasts numpy-style to `shape`.
  public func broadcast(to shape: [Int]) throws(TraceError) -> Tensor {
    try apply(.broadcast(to: shape))
  }

  /// The box `start ..< end` of every axis.
  public func slice(start: [Int], end: [Int]) throws(TraceError) -> Tensor {
    try apply(.slice(start: start, end: end))
  }

  /// Converts the elements to `dtype`.
  public func cast(to dtype: DType) throws(TraceError) -> Tensor { try apply(.cast(to: dtype)) }
}

// MARK: - Free functions, for code that reads like tensor code

/// `a x b` over the two innermost axes, batch axes broadcast.
public func matmul(
  _ lhs: Tensor, _ rhs: Tensor, transposeA: Bool = false, transposeB: Bool = false
) throws(TraceError) -> Tensor {
  try lhs.builder.emit1(
    .matmul(transposeA: transposeA, transposeB: transposeB), [.value(lhs.value), .value(rhs.value)])
}

public func relu(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.relu) }
public func silu(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.silu) }
public func sigmoid(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.sigmoid) }
public func tanh(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.tanh) }
public func exp(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.exp) }
public func log(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.log) }
public func sqrt(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.sqrt) }
public func rsqrt(_ x: Tensor) throws(TraceError) -> Tensor { try x.apply(.rsqrt) }
public func maximum(_ a: Tensor, _ b: Tensor) throws(TraceError) -> Tensor { try a.apply(.max, b) }
public func minimum(_ a: Tensor, _ b: Tensor) throws(TraceError) -> Tensor { try a.apply(.min, b) }
public func pow(_ a: Tensor, _ b: Double) throws(TraceError) -> Tensor { try a.apply(.pow, b) }

/// `condition != 0 ? a : b` elementwise with broadcasting.
public func select(_ condition: Tensor, _ a: Tensor, _ b: Tensor) throws(TraceError) -> Tensor {
  try condition.builder.emit1(.select, [.value(condition.value), .value(a.value), .value(b.value)])
}

/// Numerically stable softmax along `axis` (default: the last).
public func softmax(_ x: Tensor, axis: Int = -1) throws(TraceError) -> Tensor {
  try x.builder.emit1(.softmax(axis: normalize(axis, rank: x.rank)), [.value(x.value)])
}

/// Numerically stable log-softmax along `axis` (default: the last).
public func logSoftmax(_ x: Tensor, axis: Int = -1) throws(TraceError) -> Tensor {
  try x.builder.emit1(.logSoftmax(axis: normalize(axis, rank: x.rank)), [.value(x.value)])
}

/// Joins tensors along `axis`.
public func concat(_ tensors: [Tensor], axis: Int) throws(TraceError) -> Tensor {
  guard let first = tensors.first else { throw TraceError(message: "concat: no operands") }
  return try first.builder.emit1(
    .concat(axis: normalize(axis, rank: first.rank)), tensors.map { .value($0.value) })
}

/// `take(table, indices, axis)`: an embedding lookup is `gather(embed, ids, axis: 0)`.
public func gather(_ table: Tensor, _ indices: Tensor, axis: Int = 0) throws(TraceError) -> Tensor {
  try table.builder.emit1(
    .gather(axis: normalize(axis, rank: table.rank)), [.value(table.value), .value(indices.value)])
}

/// `target` with `updates` added at `indices` along `axis` (the transpose of `gather`).
public func scatterAdd(
  _ target: Tensor, _ indices: Tensor, _ updates: Tensor, axis: Int = 0
) throws(TraceError) -> Tensor {
  try target.builder.emit1(
    .scatterAdd(axis: normalize(axis, rank: target.rank)),
    [.value(target.value), .value(indices.value), .value(updates.value)])
}

/// Rotary position embedding of `x: [..., heads, dim]` at `positions: i32[...]`.
public func rope(
  _ x: Tensor, positions: Tensor, theta: Double, interleaved: Bool = false
) throws(TraceError) -> Tensor {
  try x.builder.emit1(
    .rope(theta: theta, interleaved: interleaved), [.value(x.value), .value(positions.value)])
}

/// The box of `sizes` at `starts: i32[rank]` (clamped to fit).
public func dynamicSlice(_ x: Tensor, starts: Tensor, sizes: [Int]) throws(TraceError) -> Tensor {
  try x.builder.emit1(.dynamicSlice(sizes: sizes), [.value(x.value), .value(starts.value)])
}

/// `x` with the box at `starts: i32[rank]` (clamped) replaced by `update`.
public func dynamicUpdateSlice(
  _ x: Tensor, _ update: Tensor, starts: Tensor
) throws(TraceError) -> Tensor {
  try x.builder.emit1(
    .dynamicUpdateSlice, [.value(x.value), .value(update.value), .value(starts.value)])
}
