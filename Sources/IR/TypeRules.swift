/// A type rule failed: names the op's mnemonic and what was wrong.
public struct TypeError: Error, Hashable, Sendable, CustomStringConvertible {
  public var op: String
  public var message: String

  public init(op: String, message: String) {
    self.op = op
    self.message = message
  }

  public var description: String { "\(op): \(message)" }
}

/// The type of an operand as a type rule sees it: a tensor, or a scalar literal.
public enum OperandType: Hashable, Sendable, CustomStringConvertible {
  case tensor(TensorType)
  case scalar

  public var description: String {
    switch self {
    case .tensor(let type): type.description
    case .scalar: "scalar"
    }
  }
}

/// Broadcasts shapes numpy-style, or returns nil when they are incompatible.
public func broadcastShapes(_ shapes: [[Int]]) -> [Int]? {
  let rank = shapes.map(\.count).max() ?? 0
  var result = [Int](repeating: 1, count: rank)
  for shape in shapes {
    let offset = rank - shape.count
    for (index, dimension) in shape.enumerated() {
      let current = result[offset + index]
      if current == 1 {
        result[offset + index] = dimension
      } else if dimension != 1 && dimension != current {
        return nil
      }
    }
  }
  return result
}

extension Op {
  /// How many operands the op takes: an exact count, or nil for "one or more" (`concat`), from
  /// the op table.
  public var arity: Int? { OpKind.operandCounts[kind.rawValue] }

  /// The types of the op's results for operands of the given types: the only shape rule, used by
  /// the tracer, the parser and the verifier.
  ///
  /// - Throws: `TypeError` naming the op and the operand types when the operands do not fit.
  public func resultTypes(_ operands: [OperandType]) throws(TypeError) -> [TensorType] {
    let name = mnemonic
    func fail(_ message: String) -> TypeError { TypeError(op: name, message: message) }
    func list() -> String { operands.map(\.description).joined(separator: ", ") }

    if let arity, operands.count != arity {
      throw fail("expected \(arity) operand\(arity == 1 ? "" : "s"), got \(operands.count)")
    }
    if arity == nil && operands.isEmpty { throw fail("expected at least one operand, got 0") }

    // Scalars are allowed only where they take another operand's dtype.
    let scalarPositions: Set<Int>
    switch self {
    case .binary, .compare: scalarPositions = [0, 1]
    case .select: scalarPositions = [1, 2]
    default: scalarPositions = []
    }
    var tensors: [TensorType?] = []
    for (index, operand) in operands.enumerated() {
      switch operand {
      case .scalar:
        guard scalarPositions.contains(index) else {
          throw fail("operand \(index + 1) may not be a scalar literal")
        }
        tensors.append(nil)
      case .tensor(let type):
        if let problem = type.problem() { throw fail("operand \(index + 1): \(problem)") }
        tensors.append(type)
      }
    }
    // Operands that must be compute-typed (storage types are read only where stated).
    let storageAllowed: Set<Int>
    switch self {
    case .matmul, .loraLinear: storageAllowed = [1]
    case .gather: storageAllowed = [0]
    case .cast: storageAllowed = [0]
    default: storageAllowed = []
    }
    for (index, type) in tensors.enumerated() {
      if let type, !type.dtype.isCompute, !storageAllowed.contains(index) {
        throw fail("operand \(index + 1) has storage type \(type), which \(name) cannot read")
      }
    }
    func tensor(_ index: Int) -> TensorType {
      // Callers ask only for positions that cannot hold scalars, or after checking.
      tensors[index] ?? TensorType(.f32, [])
    }
    func checkAxis(_ axis: Int, rank: Int) throws(TypeError) {
      if axis < 0 || axis >= rank { throw fail("axis \(axis) out of range for rank \(rank)") }
    }
    func requireFloat(_ index: Int) throws(TypeError) {
      if tensor(index).dtype != .f32 {
        throw fail("expected f32 operand \(index + 1), got \(tensor(index))")
      }
    }
    func requireIndices(_ index: Int) throws(TypeError) {
      if tensor(index).dtype != .i32 {
        throw fail("expected i32 indices as operand \(index + 1), got \(tensor(index))")
      }
    }

    switch self {
    case .unary(let function):
      let type = tensor(0)
      if type.dtype == .i32 && !function.acceptsIntegers {
        throw fail("expected f32 operand, got \(type)")
      }
      return [type]

    case .binary, .compare:
      let present = tensors.compactMap { $0 }
      guard let first = present.first else { throw fail("both operands are scalar literals") }
      if let other = present.dropFirst().first, other.dtype != first.dtype {
        throw fail("dtype mismatch: \(list())")
      }
      if case .binary(.pow) = self, first.dtype != .f32 {
        throw fail("expected f32 operands, got \(list())")
      }
      guard let shape = broadcastShapes(present.map(\.shape)) else {
        throw fail("shapes do not broadcast: \(list())")
      }
      if case .compare = self { return [TensorType(.i32, shape)] }
      return [TensorType(first.dtype, shape)]

    case .select:
      let condition = tensor(0)
      if condition.dtype != .i32 { throw fail("expected an i32 condition, got \(condition)") }
      let branches = [tensors[1], tensors[2]].compactMap { $0 }
      guard let first = branches.first else { throw fail("both branches are scalar literals") }
      if let other = branches.dropFirst().first, other.dtype != first.dtype {
        throw fail("dtype mismatch between branches: \(list())")
      }
      guard let shape = broadcastShapes([condition.shape] + branches.map(\.shape)) else {
        throw fail("shapes do not broadcast: \(list())")
      }
      return [TensorType(first.dtype, shape)]

    case .reduce(let function, let axes, let keepDims):
      let type = tensor(0)
      if function == .mean && type.dtype != .f32 { throw fail("expected f32 operand, got \(type)") }
      if axes.isEmpty { throw fail("axes must not be empty") }
      for axis in axes { try checkAxis(axis, rank: type.rank) }
      if Set(axes).count != axes.count { throw fail("repeated axis in \(axes)") }
      var shape: [Int] = []
      for (index, dimension) in type.shape.enumerated() {
        if axes.contains(index) {
          if keepDims { shape.append(1) }
        } else {
          shape.append(dimension)
        }
      }
      return [TensorType(type.dtype, shape)]

    case .matmul(let transposeA, let transposeB):
      let lhs = tensor(0)
      let rhs = tensor(1)
      if lhs.dtype != .f32 { throw fail("expected an f32 left operand, got \(lhs)") }
      if rhs.dtype == .i32 { throw fail("expected a floating-point right operand, got \(rhs)") }
      if lhs.rank < 2 || rhs.rank < 2 {
        throw fail("operands need rank >= 2: \(lhs) x \(rhs)")
      }
      let (m, k1) =
        transposeA
        ? (lhs.shape[lhs.rank - 1], lhs.shape[lhs.rank - 2])
        : (lhs.shape[lhs.rank - 2], lhs.shape[lhs.rank - 1])
      let (k2, n) =
        transposeB
        ? (rhs.shape[rhs.rank - 1], rhs.shape[rhs.rank - 2])
        : (rhs.shape[rhs.rank - 2], rhs.shape[rhs.rank - 1])
      if k1 != k2 { throw fail("contraction mismatch: \(lhs) x \(rhs)") }
      guard
        let batch = broadcastShapes([
          Array(lhs.shape.dropLast(2)), Array(rhs.shape.dropLast(2)),
        ])
      else { throw fail("batch dimensions do not broadcast: \(lhs) x \(rhs)") }
      return [TensorType(.f32, batch + [m, n])]

    case .reshape(let shape):
      let type = tensor(0)
      let target = TensorType(type.dtype, shape)
      if let problem = target.problem() { throw fail("invalid target shape: \(problem)") }
      if target.elementCount != type.elementCount {
        throw fail("cannot reshape \(type) (\(type.elementCount) elements) to \(target)")
      }
      return [target]

    case .transpose(let permutation):
      let type = tensor(0)
      if permutation.count != type.rank || Set(permutation) != Set(0..<type.rank) {
        throw fail("\(permutation) is not a permutation of the \(type.rank) axes of \(type)")
      }
      return [TensorType(type.dtype, permutation.map { type.shape[$0] })]

    case .broadcast(let shape):
      let type = tensor(0)
      let target = TensorType(type.dtype, shape)
      if let problem = target.problem() { throw fail("invalid target shape: \(problem)") }
      guard shape.count >= type.rank, broadcastShapes([type.shape, shape]) == shape else {
        throw fail("cannot broadcast \(type) to \(target)")
      }
      return [target]

    case .slice(let start, let end):
      let type = tensor(0)
      if start.count != type.rank || end.count != type.rank {
        throw fail("start and end need \(type.rank) entries for \(type)")
      }
      for axis in 0..<type.rank
      where start[axis] < 0 || start[axis] >= end[axis] || end[axis] > type.shape[axis] {
        throw fail("slice \(start[axis])..<\(end[axis]) out of range for axis \(axis) of \(type)")
      }
      return [TensorType(type.dtype, zip(start, end).map { $1 - $0 })]

    case .concat(let axis):
      let first = tensor(0)
      try checkAxis(axis, rank: first.rank)
      var total = 0
      for index in tensors.indices {
        let type = tensor(index)
        var matches = type.dtype == first.dtype && type.rank == first.rank
        if matches {
          for dimension in 0..<first.rank where dimension != axis {
            matches = matches && type.shape[dimension] == first.shape[dimension]
          }
        }
        if !matches { throw fail("operands do not match except along axis \(axis): \(list())") }
        total += type.shape[axis]
      }
      var shape = first.shape
      shape[axis] = total
      return [TensorType(first.dtype, shape)]

    case .gather(let axis):
      let table = tensor(0)
      try requireIndices(1)
      try checkAxis(axis, rank: table.rank)
      // Rows of a block-quantized table are whole blocks; gathering inside a row is not.
      if table.dtype.blockSize > 1 && axis == table.rank - 1 {
        throw fail("cannot gather inside the blocks of \(table)")
      }
      let indices = tensor(1)
      let shape = Array(table.shape[..<axis]) + indices.shape + Array(table.shape[(axis + 1)...])
      return [TensorType(table.dtype.isCompute ? table.dtype : .f32, shape)]

    case .scatterAdd(let axis):
      let target = tensor(0)
      try requireIndices(1)
      try checkAxis(axis, rank: target.rank)
      let indices = tensor(1)
      let updates = tensor(2)
      let expected =
        Array(target.shape[..<axis]) + indices.shape + Array(target.shape[(axis + 1)...])
      if updates.dtype != target.dtype || updates.shape != expected {
        throw fail(
          "updates must be \(TensorType(target.dtype, expected)) for target \(target) and indices \(indices), got \(updates)"
        )
      }
      return [target]

    case .cast(let dtype):
      let type = tensor(0)
      if !dtype.isCompute { throw fail("cannot cast to storage type \(dtype.rawValue)") }
      if type.dtype == .i32 && dtype != .f32 && dtype != .i32 {
        throw fail("cannot cast \(type) to \(dtype.rawValue)")
      }
      if !type.dtype.isCompute && dtype != .f32 {
        throw fail("storage type \(type.dtype.rawValue) casts only to f32")
      }
      return [type.with(dtype: dtype)]

    case .iota(_, let type), .fill(_, let type):
      if let problem = type.problem() { throw fail(problem) }
      if !type.dtype.isCompute { throw fail("result must be f32 or i32, got \(type)") }
      if case .iota(let axis, _) = self { try checkAxis(axis, rank: type.rank) }
      return [type]

    case .softmax(let axis), .logSoftmax(let axis):
      try requireFloat(0)
      try checkAxis(axis, rank: tensor(0).rank)
      return [tensor(0)]

    case .rope(let theta, _):
      let type = tensor(0)
      try requireFloat(0)
      try requireIndices(1)
      if !(theta > 0) || !theta.isFinite { throw fail("theta must be positive, got \(theta)") }
      if type.rank < 2 { throw fail("expected x of rank >= 2 ([..., heads, dim]), got \(type)") }
      guard let dim = type.shape.last, dim % 2 == 0 else {
        throw fail("the last dimension of \(type) must be even")
      }
      let positions = tensor(1)
      if positions.shape != Array(type.shape.dropLast(2)) {
        throw fail(
          "positions must be i32\(Array(type.shape.dropLast(2))) for \(type), got \(positions)")
      }
      return [type]

    case .dynamicSlice(let sizes):
      let type = tensor(0)
      try requireIndices(1)
      if tensor(1).shape != [type.rank] {
        throw fail("starts must be i32[\(type.rank)] for \(type), got \(tensor(1))")
      }
      if sizes.count != type.rank || zip(sizes, type.shape).contains(where: { $0 < 1 || $0 > $1 }) {
        throw fail("sizes \(sizes) do not fit in \(type)")
      }
      return [TensorType(type.dtype, sizes)]

    case .dynamicUpdateSlice:
      let type = tensor(0)
      let update = tensor(1)
      try requireIndices(2)
      if update.dtype != type.dtype || update.rank != type.rank
        || zip(update.shape, type.shape).contains(where: { $0 > $1 })
      {
        throw fail("update \(update) does not fit in \(type)")
      }
      if tensor(2).shape != [type.rank] {
        throw fail("starts must be i32[\(type.rank)] for \(type), got \(tensor(2))")
      }
      return [type]

    case .rmsNorm(let epsilon), .rmsNormGrad(let epsilon):
      let type = tensor(0)
      try requireFloat(0)
      if type.rank < 1 { throw fail("expected x of rank >= 1, got \(type)") }
      if !(epsilon >= 0) || !epsilon.isFinite {
        throw fail("eps must be a finite number >= 0, got \(epsilon)")
      }
      let scale = TensorType(.f32, [type.shape[type.rank - 1]])
      if tensor(1) != scale {
        throw fail("expected the scale \(scale) for \(type), got \(tensor(1))")
      }
      if case .rmsNormGrad = self, tensor(2) != type {
        throw fail("expected the gradient \(type), got \(tensor(2))")
      }
      return [type]

    case .elementwise(let expression):
      if operands.count != expression.operandCount {
        throw fail(
          "the expression reads \(expression.operandCount) operand(s), got \(operands.count)")
      }
      let type = tensor(0)
      try requireFloat(0)
      for index in 1..<tensors.count where tensor(index) != type {
        throw fail("operands must all be \(type): \(list())")
      }
      return [type]

    case .swiglu, .swigluGrad:
      let type = tensor(0)
      try requireFloat(0)
      for index in 1..<tensors.count where tensor(index) != type {
        throw fail("operands must all be \(type): \(list())")
      }
      return self == .swiglu ? [type] : [type, type]

    case .crossEntropy, .crossEntropyGrad:
      let logits = tensor(0)
      try requireFloat(0)
      try requireIndices(1)
      if logits.rank < 1 { throw fail("expected logits of rank >= 1, got \(logits)") }
      let rows = Array(logits.shape.dropLast())
      if tensor(1).shape != rows {
        throw fail("targets must be i32\(rows) for \(logits), got \(tensor(1))")
      }
      if self == .crossEntropy { return [TensorType(.f32, rows)] }
      if tensor(2) != TensorType(.f32, rows) {
        throw fail("expected the gradient \(TensorType(.f32, rows)), got \(tensor(2))")
      }
      return [logits]

    case .loraLinear(let scale, let transposeW):
      let (x, w, a, b) = (tensor(0), tensor(1), tensor(2), tensor(3))
      try requireFloat(0)
      try requireFloat(2)
      try requireFloat(3)
      if !scale.isFinite { throw fail("scale must be finite, got \(scale)") }
      if w.dtype == .i32 || w.rank != 2 { throw fail("expected a 2-D weight, got \(w)") }
      if x.rank < 2 { throw fail("expected x of rank >= 2, got \(x)") }
      let inputs = x.shape[x.rank - 1]
      let (k, n) = transposeW ? (w.shape[1], w.shape[0]) : (w.shape[0], w.shape[1])
      if k != inputs { throw fail("contraction mismatch: \(x) x \(w)") }
      guard a.rank == 2, a.shape[0] == inputs, b.rank == 2, b.shape[0] == a.shape[1],
        b.shape[1] == n
      else {
        throw fail("expected A f32[\(inputs), r] and B f32[r, \(n)], got \(a) and \(b)")
      }
      let batch = Array(x.shape.dropLast())
      return [TensorType(.f32, batch + [a.shape[1]]), TensorType(.f32, batch + [n])]

    case .attention(let scale), .attentionGrad(let scale):
      let (q, k, v, mask) = (tensor(0), tensor(1), tensor(2), tensor(3))
      for index in [0, 1, 2] { try requireFloat(index) }
      if !scale.isFinite { throw fail("scale must be finite, got \(scale)") }
      guard q.rank == 4, k.rank == 4, k.shape[0] == q.shape[0], k.shape[3] == q.shape[3],
        k.shape[1] > 0, q.shape[1] % k.shape[1] == 0, v == k
      else {
        throw fail(
          "expected q [B, H, S, D] and k, v [B, G, T, D] with G dividing H, got \(list())")
      }
      let scores = [q.shape[0], q.shape[1], q.shape[2], k.shape[2]]
      if mask.dtype != .i32 || mask.rank > 4 || broadcastShapes([mask.shape, scores]) != scores {
        throw fail("the mask must be i32 and broadcast to \(scores), got \(mask)")
      }
      if case .attention = self { return [q] }
      if tensor(4) != q { throw fail("expected the gradient \(q), got \(tensor(4))") }
      return [q, k, k]
    }
  }
}
