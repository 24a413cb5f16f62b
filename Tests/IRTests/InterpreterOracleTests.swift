import Foundation
import IR
import TestSupport
import Testing

// Every op of the reference interpreter against values computed by hand (written out below).

private func run(
  _ op: Op, _ operands: InterpreterOperand..., precision: InterpreterPrecision = .f64
) throws -> DenseTensor {
  try Interpreter(precision: precision).evaluate(op, operands)[0]
}

/// The matrix [[1, 2, 3], [4, 5, 6]].
private let m23 = f32([2, 3], [1, 2, 3, 4, 5, 6])

@Test func unaryFunctionsByHand() throws {
  let x = f32([3], [-1, 0, 4])
  #expect(try run(.unary(.neg), x).scalars == [1, 0, -4])
  #expect(try run(.unary(.abs), x).scalars == [1, 0, 4])
  #expect(try run(.unary(.relu), x).scalars == [0, 0, 4])
  #expect(try run(.unary(.sqrt), f32([2], [4, 9])).scalars == [2, 3])
  #expect(try run(.unary(.rsqrt), f32([2], [4, 16])).scalars == [0.5, 0.25])
  #expect(try run(.unary(.reciprocal), f32([2], [4, -0.5])).scalars == [0.25, -2])
  #expect(close(try run(.unary(.exp), f32([2], [0, 1])).scalars, [1, 2.718281828459045]))
  #expect(close(try run(.unary(.log), f32([2], [1, 2.718281828459045])).scalars, [0, 1]))
  #expect(close(try run(.unary(.tanh), f32([2], [0, 1])).scalars, [0, 0.7615941559557649]))
  // sigmoid(0) = 1/2, sigmoid(2) = 1 / (1 + e^-2) = 0.8807970779778823.
  #expect(close(try run(.unary(.sigmoid), f32([2], [0, 2])).scalars, [0.5, 0.8807970779778823]))
  // silu(x) = x * sigmoid(x): silu(2) = 1.7615941559557646, silu(-1) = -0.2689414213699951.
  #expect(
    close(
      try run(.unary(.silu), f32([2], [2, -1])).scalars, [1.7615941559557646, -0.2689414213699951]))
  #expect(close(try run(.unary(.sin), f32([2], [0, Double.pi / 2])).scalars, [0, 1]))
  #expect(close(try run(.unary(.cos), f32([2], [0, Double.pi])).scalars, [1, -1]))
  let integers = i32([3], [-3, 0, 5])
  #expect(try run(.unary(.neg), integers).scalars == [3, 0, -5])
  #expect(try run(.unary(.abs), integers).scalars == [3, 0, 5])
  #expect(try run(.unary(.relu), integers).scalars == [0, 0, 5])
  #expect(try run(.unary(.neg), i32([1], [-2_147_483_648])).scalars == [-2_147_483_648])
}

@Test func binaryFunctionsBroadcastByHand() throws {
  let row = f32([3], [10, 20, 30])
  #expect(try run(.binary(.add), m23, row).scalars == [11, 22, 33, 14, 25, 36])
  #expect(try run(.binary(.sub), m23, row).scalars == [-9, -18, -27, -6, -15, -24])
  #expect(try run(.binary(.mul), m23, row).scalars == [10, 40, 90, 40, 100, 180])
  #expect(try run(.binary(.div), row, f32([1], [4])).scalars == [2.5, 5, 7.5])
  #expect(try run(.binary(.max), m23, f32([2, 1], [2, 5])).scalars == [2, 2, 3, 5, 5, 6])
  #expect(try run(.binary(.min), m23, f32([2, 1], [2, 5])).scalars == [1, 2, 2, 4, 5, 5])
  #expect(try run(.binary(.pow), f32([3], [2, 3, 4]), .scalar(2)).scalars == [4, 9, 16])
  // [2,1] with [1,3] broadcasts to [2,3].
  let outer = try run(.binary(.add), f32([2, 1], [100, 200]), f32([1, 3], [1, 2, 3]))
  #expect(outer.shape == [2, 3])
  #expect(outer.scalars == [101, 102, 103, 201, 202, 203])
  // Scalars on either side.
  #expect(try run(.binary(.sub), .scalar(1), row).scalars == [-9, -19, -29])
  #expect(try run(.binary(.div), row, .scalar(10)).scalars == [1, 2, 3])
  // i32: division truncates toward zero, x / 0 == 0, overflow wraps.
  #expect(
    try run(.binary(.div), i32([4], [7, -7, 7, 5]), i32([4], [2, 2, -2, 0])).scalars == [
      3, -3, -3, 0,
    ])
  #expect(
    try run(.binary(.add), i32([1], [2_147_483_647]), .scalar(1)).scalars == [-2_147_483_648])
}

@Test func comparisonsAndSelectByHand() throws {
  let a = f32([4], [1, 2, 3, .nan])
  let b = f32([1], [2])
  #expect(try run(.compare(.eq), a, b).scalars == [0, 1, 0, 0])
  #expect(try run(.compare(.ne), a, b).scalars == [1, 0, 1, 1])
  #expect(try run(.compare(.lt), a, b).scalars == [1, 0, 0, 0])
  #expect(try run(.compare(.le), a, b).scalars == [1, 1, 0, 0])
  #expect(try run(.compare(.gt), a, b).scalars == [0, 0, 1, 0])
  #expect(try run(.compare(.ge), a, b).scalars == [0, 1, 1, 0])
  #expect(try run(.compare(.lt), a, b).dtype == .i32)
  // Condition [2,1] broadcast over [2,3]: row 0 takes a, row 1 takes the scalar.
  let chosen = try run(.select, i32([2, 1], [1, 0]), m23, .scalar(-1))
  #expect(chosen.scalars == [1, 2, 3, -1, -1, -1])
}

/// x[i,j,k] = 100 i + 10 j + k over [2, 3, 4].
private let cube: InterpreterOperand = {
  var values: [Double] = []
  for i in 0..<2 {
    for j in 0..<3 {
      for k in 0..<4 { values.append(Double(100 * i + 10 * j + k)) }
    }
  }
  return f32([2, 3, 4], values)
}()

@Test func reductionsOverEachAxisByHand() throws {
  // Sum over i: 0 + 100 = 100 plus 2 * (10 j + k).
  #expect(
    try run(.reduce(.sum, axes: [0], keepDims: false), cube).scalars == [
      100, 102, 104, 106, 120, 122, 124, 126, 140, 142, 144, 146,
    ])
  // Sum over j: 3 * (100 i + k) + 30.
  #expect(
    try run(.reduce(.sum, axes: [1], keepDims: false), cube).scalars == [
      30, 33, 36, 39, 330, 333, 336, 339,
    ])
  // Sum over k: 4 * (100 i + 10 j) + 6.
  let overK = try run(.reduce(.sum, axes: [2], keepDims: true), cube)
  #expect(overK.shape == [2, 3, 1])
  #expect(overK.scalars == [6, 46, 86, 406, 446, 486])
  // Sum over j and k: 12 * 100 i + 4 * 30 + 3 * 6 = 1200 i + 138.
  #expect(try run(.reduce(.sum, axes: [1, 2], keepDims: false), cube).scalars == [138, 1338])
  // Sum over i and k: 8 * (10 j) + 4 * 100 + 2 * 6 = 80 j + 412.
  #expect(try run(.reduce(.sum, axes: [0, 2], keepDims: false), cube).scalars == [412, 492, 572])
  // Everything: 24 * 50 + 24 * 10 + 24 * 1.5 = 1476.
  #expect(try run(.reduce(.sum, axes: [0, 1, 2], keepDims: false), cube).scalars == [1476])
  #expect(
    try run(.reduce(.max, axes: [0, 1], keepDims: true), cube).scalars == [120, 121, 122, 123])
  #expect(
    try run(.reduce(.max, axes: [2], keepDims: false), cube).scalars == [3, 13, 23, 103, 113, 123])
  #expect(
    try run(.reduce(.mean, axes: [0], keepDims: false), cube).scalars == [
      50, 51, 52, 53, 60, 61, 62, 63, 70, 71, 72, 73,
    ])
  #expect(try run(.reduce(.mean, axes: [1, 2], keepDims: false), cube).scalars == [11.5, 111.5])
  #expect(
    try run(.reduce(.sum, axes: [1], keepDims: false), i32([2, 2], [1, 2, 3, 4])).scalars == [
      3, 7,
    ])
}

@Test func matmulTransposesAndBatchesByHand() throws {
  // [[1,2,3],[4,5,6]] x [[1,0],[0,1],[1,1]] = [[4,5],[10,11]].
  let w = f32([3, 2], [1, 0, 0, 1, 1, 1])
  #expect(try run(.matmul(transposeA: false, transposeB: false), m23, w).scalars == [4, 5, 10, 11])
  // transpose_b: w stored [2,3] = [[1,0,1],[0,1,1]].
  let wt = f32([2, 3], [1, 0, 1, 0, 1, 1])
  #expect(try run(.matmul(transposeA: false, transposeB: true), m23, wt).scalars == [4, 5, 10, 11])
  // transpose_a: A^T A for A = m23 is [[17,22,27],[22,29,36],[27,36,45]].
  #expect(
    try run(.matmul(transposeA: true, transposeB: false), m23, m23).scalars == [
      17, 22, 27, 22, 29, 36, 27, 36, 45,
    ])
  // Both: (m23^T)(wt^T)... = [3,2] x [3,2]^T is [3,3]: rows of m23^T dotted with rows of wt^T.
  let both = try run(
    .matmul(transposeA: true, transposeB: true), m23, f32([3, 2], [1, 0, 0, 1, 1, 1]))
  #expect(both.scalars == [1, 4, 5, 2, 5, 7, 3, 6, 9])
  // Batched left with a shared right operand: [2,2,3] x [3,2].
  let batch = f32([2, 2, 3], [1, 2, 3, 4, 5, 6, 0, 0, 1, 1, 0, 0])
  #expect(
    try run(.matmul(transposeA: false, transposeB: false), batch, w).scalars == [
      4, 5, 10, 11, 1, 1, 1, 0,
    ])
  // Batched on both sides: [2,2,3] x [2,3,2], second right operand doubles the first.
  let rights = f32([2, 3, 2], [1, 0, 0, 1, 1, 1, 2, 0, 0, 2, 2, 2])
  #expect(
    try run(.matmul(transposeA: false, transposeB: false), batch, rights).scalars == [
      4, 5, 10, 11, 2, 2, 2, 0,
    ])
}

@Test func shapeOpsByHand() throws {
  #expect(try run(.reshape(to: [3, 2]), m23).scalars == [1, 2, 3, 4, 5, 6])
  #expect(try run(.transpose(permutation: [1, 0]), m23).scalars == [1, 4, 2, 5, 3, 6])
  // [2,3,4] -> [4,2,3]: y[k,i,j] = x[i,j,k]; first row: k = 0, i = 0, j = 0..2.
  let rotated = try run(.transpose(permutation: [2, 0, 1]), cube)
  #expect(rotated.shape == [4, 2, 3])
  #expect(Array(rotated.scalars.prefix(7)) == [0, 10, 20, 100, 110, 120, 1])
  #expect(try run(.broadcast(to: [2, 3]), f32([3], [1, 2, 3])).scalars == [1, 2, 3, 1, 2, 3])
  #expect(try run(.broadcast(to: [2, 3]), f32([2, 1], [7, 8])).scalars == [7, 7, 7, 8, 8, 8])
  #expect(try run(.slice(start: [0, 1], end: [2, 3]), m23).scalars == [2, 3, 5, 6])
  #expect(
    try run(.concat(axis: 0), m23, f32([1, 3], [7, 8, 9])).scalars == [1, 2, 3, 4, 5, 6, 7, 8, 9])
  #expect(
    try run(.concat(axis: 1), m23, f32([2, 1], [7, 8])).scalars == [1, 2, 3, 7, 4, 5, 6, 8])
}

@Test func gatherAndScatterByHand() throws {
  // Axis 0: rows 2, 0, 2 of [[0,1],[10,11],[20,21]], shaped [3] -> [3,2].
  let table = f32([3, 2], [0, 1, 10, 11, 20, 21])
  #expect(
    try run(.gather(axis: 0), table, i32([3], [2, 0, 2])).scalars == [20, 21, 0, 1, 20, 21])
  // Axis 1 with [2,2] indices: result [3,2,2].
  let columns = try run(.gather(axis: 1), table, i32([2, 2], [1, 0, 1, 1]))
  #expect(columns.shape == [3, 2, 2])
  #expect(columns.scalars == [1, 0, 1, 1, 11, 10, 11, 11, 21, 20, 21, 21])
  // Repeated index 1 accumulates both updates.
  let added = try run(
    .scatterAdd(axis: 0), f32([3, 2], [0, 0, 0, 0, 0, 0]), i32([3], [1, 1, 2]),
    f32([3, 2], [1, 2, 10, 20, 5, 5]))
  #expect(added.scalars == [0, 0, 11, 22, 5, 5])
  #expect(throws: InterpreterError(message: "gather: index 3 at position 1 is out of range 0..<3"))
  {
    try run(.gather(axis: 0), table, i32([2], [0, 3]))
  }
  #expect(
    throws: InterpreterError(message: "scatter_add: index -1 at position 0 is out of range 0..<3")
  ) {
    try run(.scatterAdd(axis: 0), table, i32([1], [-1]), f32([1, 2], [1, 1]))
  }
}

@Test func castsAndGeneratorsByHand() throws {
  #expect(
    try run(.cast(to: .i32), f32([4], [1.9, -1.9, .nan, 1e12])).scalars == [
      1, -1, 0, 2_147_483_647,
    ])
  #expect(try run(.cast(to: .f32), i32([2], [-3, 7])).scalars == [-3, 7])
  #expect(try run(.iota(axis: 1, type: TensorType(.i32, [2, 3]))).scalars == [0, 1, 2, 0, 1, 2])
  #expect(try run(.iota(axis: 0, type: TensorType(.f32, [2, 3]))).scalars == [0, 0, 0, 1, 1, 1])
  #expect(try run(.fill(value: -2.5, type: TensorType(.f32, [2]))).scalars == [-2.5, -2.5])
}

@Test func softmaxOnEachAxisByHand() throws {
  // Rows [0, ln 2, ln 3... ]: softmax of [0, ln 2, ln 5] is [1, 2, 5] / 8.
  let x = f32([2, 3], [0, log(2), log(5), 1000, 1000, 1000])
  #expect(
    close(try run(.softmax(axis: 1), x).scalars, [0.125, 0.25, 0.625, 1 / 3.0, 1 / 3.0, 1 / 3.0]))
  #expect(
    close(
      try run(.logSoftmax(axis: 1), x).scalars,
      [log(0.125), log(0.25), log(0.625), -log(3), -log(3), -log(3)]))
  // Axis 0 of [[0, 0, 0], [ln 3, 0, -1000]]: [1/4, 3/4], [1/2, 1/2], [1, 0].
  let columns = f32([2, 3], [0, 0, 0, log(3), 0, -1000])
  #expect(close(try run(.softmax(axis: 0), columns).scalars, [0.25, 0.5, 1, 0.75, 0.5, 0]))
  // Large inputs stay finite: softmax([1000, 1001]) = [1, e] / (1 + e).
  #expect(
    close(
      try run(.softmax(axis: 0), f32([2], [1000, 1001])).scalars,
      [0.2689414213699951, 0.7310585786300049]))
}

@Test func ropeByHand() throws {
  // x = [1, 2, 3, 4] (1 head of dimension 4) at position 1, theta 10000:
  // pair k rotates by 10000^(-2k/4): k = 0 by 1, k = 1 by 0.01.
  let (c1, s1, c2, s2) = (cos(1.0), sin(1.0), cos(0.01), sin(0.01))
  let x = f32([1, 1, 4], [1, 2, 3, 4])
  // Rotate-half pairs (0, 2) and (1, 3).
  let half = try run(.rope(theta: 10000, interleaved: false), x, i32([1], [1]))
  #expect(
    close(half.scalars, [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 1 * s1 + 3 * c1, 2 * s2 + 4 * c2]))
  // Interleaved pairs (0, 1) and (2, 3).
  let adjacent = try run(.rope(theta: 10000, interleaved: true), x, i32([1], [1]))
  #expect(
    close(adjacent.scalars, [1 * c1 - 2 * s1, 1 * s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2]))
  // Position 0 is the identity.
  #expect(
    try run(.rope(theta: 10000, interleaved: false), x, i32([1], [0])).scalars == [1, 2, 3, 4])
}

@Test func dynamicSlicesClampByHand() throws {
  // Start [1, 2] of a [2,3] box of size [1, 2] clamps to [1, 1]: [5, 6].
  #expect(try run(.dynamicSlice(sizes: [1, 2]), m23, i32([2], [1, 2])).scalars == [5, 6])
  #expect(try run(.dynamicSlice(sizes: [2, 1]), m23, i32([2], [-4, 1])).scalars == [2, 5])
  let updated = try run(.dynamicUpdateSlice, m23, f32([1, 2], [0, 0]), i32([2], [5, 5]))
  #expect(updated.scalars == [1, 2, 3, 4, 0, 0])
}

@Test func f32PrecisionRoundsEveryResult() throws {
  let x = f32([1], [1])
  #expect(try run(.binary(.add), x, .scalar(1e-10), precision: .f32).scalars == [1])
  #expect(try run(.binary(.add), x, .scalar(1e-10), precision: .f64).scalars == [1 + 1e-10])
  #expect(try run(.unary(.exp), x, precision: .f32).scalars == [Double(Float(M_E))])
}

@Test func runBindsByNameAndReportsMistakes() throws {
  let graph = try Parser.parse(
    """
    func @f(%x: f32[2]) -> (f32[2]) {
      param @w : f32[2] {init=constant, value=3.0}
      const @c : f32[2]
      %0 = mul %x, @w                            : f32[2]
      %1 = add %0, @c                            : f32[2]        "y"
      return %1
    }
    """)
  let x = DenseTensor(shape: [2], floats: [1, 2])
  let c = DenseTensor(shape: [2], floats: [10, 20])
  #expect(try Interpreter().run(graph, bindings: ["x": x, "c": c])[0].scalars == [13, 26])
  #expect(try Interpreter().run(graph, bindings: ["x": x, "c": c, "w": c])[0].scalars == [20, 60])
  #expect(throws: InterpreterError(message: "no binding for 'c' : f32[2]")) {
    try Interpreter().run(graph, bindings: ["x": x])
  }
  #expect(throws: InterpreterError(message: "'x' is declared f32[2], but its binding is f32[3]")) {
    try Interpreter().run(
      graph, bindings: ["x": DenseTensor(shape: [3], floats: [1, 2, 3]), "c": c])
  }
  #expect(throws: InterpreterError(message: "binding 'typo' matches no input or declaration")) {
    try Interpreter().run(graph, bindings: ["x": x, "c": c, "typo": c])
  }
}
