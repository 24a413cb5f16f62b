import Foundation
import IR
import TestSupport
import Testing

// The reference interpreter against values computed by hand: every expected number below is
// written out literally (or as obvious arithmetic on literals, explained in a comment).

/// The single result of `op` on `operands`.
private func eval(
  _ op: Op, _ operands: InterpreterOperand..., precision: InterpreterPrecision = .f32
) throws -> DenseTensor {
  try Interpreter(precision: precision).evaluate(op, operands)[0]
}

/// Whether `actual` matches `expected` element by element within `tolerance * max(1, |expected|)`.
private func isClose(_ actual: [Double], _ expected: [Double], tolerance: Double = 1e-6) -> Bool {
  actual.count == expected.count
    && zip(actual, expected).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) }
}

/// [[1, 2, 3], [4, 5, 6]].
private let a23 = f32([2, 3], [1, 2, 3, 4, 5, 6])

/// x[i, j, k] = 12i + 4j + k, the numbers 0 ..< 24 in row-major order.
private let x234 = f32([2, 3, 4], (0..<24).map(Double.init))

private let int32Min = -2_147_483_648.0
private let int32Max = 2_147_483_647.0

@Suite struct InterpreterTests {
  // MARK: - Unary

  @Test func unarySignFunctionsOnF32() throws {
    let x = f32([3], [-1.5, 0, 2])
    #expect(try eval(.unary(.neg), x).scalars == [1.5, 0, -2])
    #expect(try eval(.unary(.abs), x).scalars == [1.5, 0, 2])
    #expect(try eval(.unary(.relu), x).scalars == [0, 0, 2])
  }

  @Test func unarySignFunctionsOnI32WrapAround() throws {
    let x = i32([4], [-3, 0, 5, int32Min])
    let negated = try eval(.unary(.neg), x)
    #expect(negated.dtype == .i32)
    // -Int32.min does not fit: it wraps to Int32.min, as do |Int32.min| and C's int32 arithmetic.
    #expect(negated.scalars == [3, 0, -5, int32Min])
    #expect(try eval(.unary(.abs), x).scalars == [3, 0, 5, int32Min])
    #expect(try eval(.unary(.relu), x).scalars == [0, 0, 5, 0])
  }

  @Test func unaryExponentialsAndRoots() throws {
    // e = 2.718281828459045, 1/e = 0.36787944117144233, ln 0.5 = -0.6931471805599453.
    #expect(
      isClose(
        try eval(.unary(.exp), f32([3], [0, 1, -1])).scalars,
        [1, 2.718281828459045, 0.36787944117144233]))
    #expect(
      isClose(
        try eval(.unary(.log), f32([3], [1, 2.718281828459045, 0.5])).scalars,
        [0, 1, -0.6931471805599453]))
    #expect(try eval(.unary(.sqrt), f32([3], [4, 2.25, 0])).scalars == [2, 1.5, 0])
    #expect(try eval(.unary(.rsqrt), f32([2], [4, 0.25])).scalars == [0.5, 2])
    #expect(try eval(.unary(.reciprocal), f32([3], [4, -0.5, 8])).scalars == [0.25, -2, 0.125])
  }

  @Test func unaryActivations() throws {
    // tanh(1) = 0.7615941559557649.
    #expect(
      isClose(
        try eval(.unary(.tanh), f32([3], [0, 1, -1])).scalars,
        [0, 0.7615941559557649, -0.7615941559557649]))
    // sigmoid(2) = 1 / (1 + e^-2) = 0.8807970779778823, sigmoid(-2) = 0.11920292202211755.
    #expect(
      isClose(
        try eval(.unary(.sigmoid), f32([3], [0, 2, -2])).scalars,
        [0.5, 0.8807970779778823, 0.11920292202211755]))
    // silu(x) = x * sigmoid(x): silu(2) = 2 * 0.8807970779778823, silu(-1) = -1 / (1 + e).
    #expect(
      isClose(
        try eval(.unary(.silu), f32([3], [0, 2, -1])).scalars,
        [0, 1.7615941559557646, -0.2689414213699951]))
  }

  @Test func unaryTrigonometry() throws {
    let pi = 3.141592653589793
    #expect(
      isClose(try eval(.unary(.sin), f32([3], [0, pi / 2, -pi / 6])).scalars, [0, 1, -0.5]))
    #expect(isClose(try eval(.unary(.cos), f32([3], [0, pi, pi / 3])).scalars, [1, -1, 0.5]))
  }

  @Test func unaryRejectsI32ForRealFunctions() {
    #expect(throws: InterpreterError(message: "exp: expected f32 operand, got i32[1]")) {
      try eval(.unary(.exp), i32([1], [1]))
    }
  }

  // MARK: - Binary

  @Test func binaryBroadcastsRowAcrossMatrix() throws {
    // [[1, 2, 3], [4, 5, 6]] with the row [10, 20, 30].
    let row = f32([3], [10, 20, 30])
    #expect(try eval(.binary(.add), a23, row).scalars == [11, 22, 33, 14, 25, 36])
    #expect(try eval(.binary(.sub), a23, row).scalars == [-9, -18, -27, -6, -15, -24])
    #expect(try eval(.binary(.mul), a23, row).scalars == [10, 40, 90, 40, 100, 180])
    // Divisors that are powers of two keep the quotients exact: 1/2, 2/4, 3/8, 4/2, 5/4, 6/8.
    #expect(
      try eval(.binary(.div), a23, f32([3], [2, 4, 8])).scalars == [0.5, 0.5, 0.375, 2, 1.25, 0.75])
    #expect(try eval(.binary(.max), a23, f32([3], [2, 2, 5])).scalars == [2, 2, 5, 4, 5, 6])
    #expect(try eval(.binary(.min), a23, f32([3], [2, 2, 5])).scalars == [1, 2, 3, 2, 2, 5])
  }

  @Test func binaryBroadcastsColumnAgainstRow() throws {
    // [[1], [5]] against [[2, 4, 6]] gives [2, 3] results.
    let column = f32([2, 1], [1, 5])
    let row = f32([1, 3], [2, 4, 6])
    let sum = try eval(.binary(.add), column, row)
    #expect(sum.shape == [2, 3])
    #expect(sum.scalars == [3, 5, 7, 7, 9, 11])
    #expect(try eval(.binary(.sub), column, row).scalars == [-1, -3, -5, 3, 1, -1])
    #expect(try eval(.binary(.max), column, row).scalars == [2, 4, 6, 5, 5, 6])
    #expect(try eval(.binary(.min), column, row).scalars == [1, 1, 1, 2, 4, 5])
  }

  @Test func binaryScalarLiteralOnEitherSide() throws {
    #expect(try eval(.binary(.sub), a23, .scalar(1)).scalars == [0, 1, 2, 3, 4, 5])
    #expect(try eval(.binary(.sub), .scalar(10), a23).scalars == [9, 8, 7, 6, 5, 4])
    #expect(try eval(.binary(.div), .scalar(1), f32([2], [2, 4])).scalars == [0.5, 0.25])
    #expect(try eval(.binary(.pow), a23, .scalar(2)).scalars == [1, 4, 9, 16, 25, 36])
    #expect(try eval(.binary(.pow), .scalar(2), f32([3], [1, 2, 3])).scalars == [2, 4, 8])
    #expect(try eval(.binary(.pow), f32([2], [4, 9]), f32([1], [0.5])).scalars == [2, 3])
  }

  @Test func binaryI32ArithmeticWraps() throws {
    // Int32.max + 1 = Int32.min; Int32.min - 1 = Int32.max; 65536 * 65536 = 2^32 wraps to 0.
    let sum = try eval(.binary(.add), i32([1], [int32Max]), i32([1], [1]))
    #expect(sum.dtype == .i32)
    #expect(sum.scalars == [int32Min])
    #expect(try eval(.binary(.sub), i32([1], [int32Min]), .scalar(1)).scalars == [int32Max])
    #expect(
      try eval(.binary(.mul), i32([2], [65536, -3]), i32([2], [65536, 7])).scalars == [0, -21])
    #expect(try eval(.binary(.max), i32([2], [3, -4]), i32([2], [-1, -2])).scalars == [3, -2])
    #expect(try eval(.binary(.min), i32([2], [3, -4]), i32([2], [-1, -2])).scalars == [-1, -4])
  }

  @Test func binaryI32DivisionTruncatesAndDividingByZeroGivesZero() throws {
    // 7/2 = 3, -7/2 = -3, 7/-2 = -3, -7/-2 = 3 (toward zero), 5/0 = 0, Int32.min / -1 wraps.
    let quotient = try eval(
      .binary(.div), i32([6], [7, -7, 7, -7, 5, int32Min]), i32([6], [2, 2, -2, -2, 0, -1]))
    #expect(quotient.scalars == [3, -3, -3, 3, 0, int32Min])
  }

  @Test func binaryI32ScalarLiteralTruncatesTowardZero() throws {
    // 2.7 becomes 2 and -1.9 becomes -1.
    #expect(try eval(.binary(.add), i32([2], [5, -5]), .scalar(2.7)).scalars == [7, -3])
    #expect(try eval(.binary(.mul), .scalar(-1.9), i32([2], [5, -5])).scalars == [-5, 5])
  }

  @Test func binaryRejectsPowOnI32AndShapesThatDoNotBroadcast() {
    #expect(throws: InterpreterError(message: "pow: expected f32 operands, got i32[1], i32[1]")) {
      try eval(.binary(.pow), i32([1], [2]), i32([1], [2]))
    }
    #expect(throws: InterpreterError(message: "add: shapes do not broadcast: f32[2], f32[3]")) {
      try eval(.binary(.add), f32([2], [1, 2]), f32([3], [1, 2, 3]))
    }
  }

  // MARK: - Comparisons and select

  @Test func compareEachComparison() throws {
    let x = f32([3], [1, 2, 3])
    let y = f32([3], [2, 2, 2])
    let equal = try eval(.compare(.eq), x, y)
    #expect(equal.dtype == .i32)
    #expect(equal.scalars == [0, 1, 0])
    #expect(try eval(.compare(.ne), x, y).scalars == [1, 0, 1])
    #expect(try eval(.compare(.lt), x, y).scalars == [1, 0, 0])
    #expect(try eval(.compare(.le), x, y).scalars == [1, 1, 0])
    #expect(try eval(.compare(.gt), x, y).scalars == [0, 0, 1])
    #expect(try eval(.compare(.ge), x, y).scalars == [0, 1, 1])
  }

  @Test func compareBroadcastsAndTakesScalarsOnEitherSide() throws {
    #expect(try eval(.compare(.gt), a23, .scalar(3)).scalars == [0, 0, 0, 1, 1, 1])
    // 3 < a: the same positions.
    #expect(try eval(.compare(.lt), .scalar(3), a23).scalars == [0, 0, 0, 1, 1, 1])
    // [[1], [5]] < [[2, 4, 6]].
    let less = try eval(.compare(.lt), f32([2, 1], [1, 5]), f32([1, 3], [2, 4, 6]))
    #expect(less.shape == [2, 3])
    #expect(less.scalars == [1, 1, 1, 0, 0, 1])
    #expect(try eval(.compare(.lt), i32([2], [1, -2]), .scalar(0)).scalars == [0, 1])
  }

  @Test func compareNaNIsFalseExceptNotEqual() throws {
    let x = f32([2], [.nan, 1])
    let y = f32([2], [.nan, 1])
    #expect(try eval(.compare(.eq), x, y).scalars == [0, 1])
    #expect(try eval(.compare(.ne), x, y).scalars == [1, 0])
    #expect(try eval(.compare(.lt), x, y).scalars == [0, 0])
    #expect(try eval(.compare(.le), x, y).scalars == [0, 1])
    #expect(try eval(.compare(.gt), x, y).scalars == [0, 0])
    #expect(try eval(.compare(.ge), x, y).scalars == [0, 1])
  }

  @Test func selectBroadcastsConditionAndBranches() throws {
    // Condition [[1], [0]]: the first row from a, the second from the literal -1.
    let rows = try eval(.select, i32([2, 1], [1, 0]), a23, .scalar(-1))
    #expect(rows.scalars == [1, 2, 3, -1, -1, -1])
    // Condition [1, 0, 2] (any non-zero is true) over the columns; the literal 7 is the `a` branch.
    let columns = try eval(.select, i32([3], [1, 0, 2]), .scalar(7), a23)
    #expect(columns.shape == [2, 3])
    #expect(columns.scalars == [7, 2, 7, 7, 5, 7])
    let integers = try eval(.select, i32([2], [0, 1]), i32([2], [10, 20]), i32([1], [-5]))
    #expect(integers.dtype == .i32)
    #expect(integers.scalars == [-5, 20])
  }

  // MARK: - Reductions of x[i, j, k] = 12i + 4j + k, shape [2, 3, 4]

  @Test func reduceSumEachAxis() throws {
    // Axis 0: x[0,j,k] + x[1,j,k] = 2(4j + k) + 12.
    let axis0 = try eval(.reduce(.sum, axes: [0], keepDims: false), x234)
    #expect(axis0.shape == [3, 4])
    #expect(axis0.scalars == [12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34])
    // Axis 1: 3(12i + k) + 4(0 + 1 + 2) = 36i + 3k + 12.
    let axis1 = try eval(.reduce(.sum, axes: [1], keepDims: false), x234)
    #expect(axis1.shape == [2, 4])
    #expect(axis1.scalars == [12, 15, 18, 21, 48, 51, 54, 57])
    // Axis 2: 4(12i + 4j) + (0 + 1 + 2 + 3) = 48i + 16j + 6.
    let axis2 = try eval(.reduce(.sum, axes: [2], keepDims: false), x234)
    #expect(axis2.shape == [2, 3])
    #expect(axis2.scalars == [6, 22, 38, 54, 70, 86])
  }

  @Test func reduceMaxEachAxis() throws {
    // The largest index along the axis wins: i = 1, j = 2, k = 3.
    let axis0 = try eval(.reduce(.max, axes: [0], keepDims: false), x234)
    #expect(axis0.scalars == [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23])
    let axis1 = try eval(.reduce(.max, axes: [1], keepDims: false), x234)
    #expect(axis1.scalars == [8, 9, 10, 11, 20, 21, 22, 23])
    let axis2 = try eval(.reduce(.max, axes: [2], keepDims: false), x234)
    #expect(axis2.scalars == [3, 7, 11, 15, 19, 23])
  }

  @Test func reduceMeanEachAxis() throws {
    // The sums above divided by 2, 3 and 4.
    let axis0 = try eval(.reduce(.mean, axes: [0], keepDims: false), x234)
    #expect(axis0.scalars == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17])
    let axis1 = try eval(.reduce(.mean, axes: [1], keepDims: false), x234)
    #expect(axis1.scalars == [4, 5, 6, 7, 16, 17, 18, 19])
    let axis2 = try eval(.reduce(.mean, axes: [2], keepDims: false), x234)
    #expect(axis2.scalars == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5])
  }

  @Test func reduceOverPairsOfAxes() throws {
    // Axes 0, 1: sum over i, j of 12i + 4j + k = 6k + 12 * 3 + 4 * 2 * 3 = 6k + 60.
    let sum01 = try eval(.reduce(.sum, axes: [0, 1], keepDims: false), x234)
    #expect(sum01.shape == [4])
    #expect(sum01.scalars == [60, 66, 72, 78])
    // Axes 0, 2: 8 * 4j + 4 * 12 + 2 * 6 = 32j + 60.
    #expect(
      try eval(.reduce(.sum, axes: [0, 2], keepDims: false), x234).scalars == [60, 92, 124])
    // Axes 1, 2: 0 + ... + 11 = 66 and 12 + ... + 23 = 210.
    #expect(try eval(.reduce(.sum, axes: [1, 2], keepDims: false), x234).scalars == [66, 210])
    #expect(
      try eval(.reduce(.max, axes: [0, 1], keepDims: false), x234).scalars == [20, 21, 22, 23])
    #expect(try eval(.reduce(.max, axes: [0, 2], keepDims: false), x234).scalars == [15, 19, 23])
    #expect(try eval(.reduce(.max, axes: [1, 2], keepDims: false), x234).scalars == [11, 23])
    // The sums divided by 6, 8 and 12.
    #expect(
      try eval(.reduce(.mean, axes: [0, 1], keepDims: false), x234).scalars == [10, 11, 12, 13])
    #expect(
      try eval(.reduce(.mean, axes: [0, 2], keepDims: false), x234).scalars == [7.5, 11.5, 15.5])
    #expect(try eval(.reduce(.mean, axes: [1, 2], keepDims: false), x234).scalars == [5.5, 17.5])
  }

  @Test func reduceOverAllAxes() throws {
    // 0 + 1 + ... + 23 = 276; the mean is 276 / 24 = 11.5.
    let sum = try eval(.reduce(.sum, axes: [0, 1, 2], keepDims: false), x234)
    #expect(sum.shape == [])
    #expect(sum.scalars == [276])
    #expect(try eval(.reduce(.max, axes: [0, 1, 2], keepDims: false), x234).scalars == [23])
    #expect(try eval(.reduce(.mean, axes: [2, 0, 1], keepDims: false), x234).scalars == [11.5])
  }

  @Test func reduceKeepDimsKeepsSizeOneDimensions() throws {
    let axis1 = try eval(.reduce(.sum, axes: [1], keepDims: true), x234)
    #expect(axis1.shape == [2, 1, 4])
    #expect(axis1.scalars == [12, 15, 18, 21, 48, 51, 54, 57])
    let axes02 = try eval(.reduce(.mean, axes: [0, 2], keepDims: true), x234)
    #expect(axes02.shape == [1, 3, 1])
    #expect(axes02.scalars == [7.5, 11.5, 15.5])
    let all = try eval(.reduce(.max, axes: [0, 1, 2], keepDims: true), x234)
    #expect(all.shape == [1, 1, 1])
    #expect(all.scalars == [23])
  }

  @Test func reduceOnI32() throws {
    let x = i32([2, 2], [1, -2, 3, 4])
    let sum = try eval(.reduce(.sum, axes: [0], keepDims: false), x)
    #expect(sum.dtype == .i32)
    #expect(sum.scalars == [4, 2])
    #expect(try eval(.reduce(.max, axes: [1], keepDims: false), x).scalars == [1, 4])
    // Int32.max + 1 wraps like the elementwise add.
    let wrapped = try eval(.reduce(.sum, axes: [0], keepDims: false), i32([2], [int32Max, 1]))
    #expect(wrapped.scalars == [int32Min])
  }

  // MARK: - Matmul

  @Test func matmulPlain() throws {
    // [[1, 2, 3], [4, 5, 6]] x [[1, 2], [3, 4], [5, 6]]:
    // [1 + 6 + 15, 2 + 8 + 18; 4 + 15 + 30, 8 + 20 + 36].
    let product = try eval(
      .matmul(transposeA: false, transposeB: false), a23, f32([3, 2], [1, 2, 3, 4, 5, 6]))
    #expect(product.shape == [2, 2])
    #expect(product.scalars == [22, 28, 49, 64])
  }

  @Test func matmulTransposeFlagsOnSquareMatrices() throws {
    // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]].
    let a = f32([2, 2], [1, 2, 3, 4])
    let b = f32([2, 2], [5, 6, 7, 8])
    // a b = [1*5 + 2*7, 1*6 + 2*8; 3*5 + 4*7, 3*6 + 4*8].
    #expect(
      try eval(.matmul(transposeA: false, transposeB: false), a, b).scalars == [19, 22, 43, 50])
    // aT b = [[1, 3], [2, 4]] b = [1*5 + 3*7, 1*6 + 3*8; 2*5 + 4*7, 2*6 + 4*8].
    #expect(
      try eval(.matmul(transposeA: true, transposeB: false), a, b).scalars == [26, 30, 38, 44])
    // a bT = a [[5, 7], [6, 8]] = [1*5 + 2*6, 1*7 + 2*8; 3*5 + 4*6, 3*7 + 4*8].
    #expect(
      try eval(.matmul(transposeA: false, transposeB: true), a, b).scalars == [17, 23, 39, 53])
    // aT bT = [1*5 + 3*6, 1*7 + 3*8; 2*5 + 4*6, 2*7 + 4*8].
    #expect(
      try eval(.matmul(transposeA: true, transposeB: true), a, b).scalars == [23, 31, 34, 46])
  }

  @Test func matmulTransposeFlagsOnRectangularMatrices() throws {
    // The stored transposes of [[1, 2, 3], [4, 5, 6]] and [[1, 2], [3, 4], [5, 6]] give the
    // plain product [[22, 28], [49, 64]].
    let aT = f32([3, 2], [1, 4, 2, 5, 3, 6])
    let bT = f32([2, 3], [1, 3, 5, 2, 4, 6])
    let b = f32([3, 2], [1, 2, 3, 4, 5, 6])
    #expect(
      try eval(.matmul(transposeA: true, transposeB: false), aT, b).scalars == [22, 28, 49, 64])
    #expect(
      try eval(.matmul(transposeA: false, transposeB: true), a23, bT).scalars == [22, 28, 49, 64])
    let both = try eval(.matmul(transposeA: true, transposeB: true), aT, bT)
    #expect(both.shape == [2, 2])
    #expect(both.scalars == [22, 28, 49, 64])
  }

  @Test func matmulBatchedWithBroadcastRhs() throws {
    // Batch 0 is [[1, 2, 3], [4, 5, 6]]; batch 1 picks rows 0 and 1 of the shared rhs.
    let lhs = f32([2, 2, 3], [1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0])
    let product = try eval(
      .matmul(transposeA: false, transposeB: false), lhs, f32([3, 2], [1, 2, 3, 4, 5, 6]))
    #expect(product.shape == [2, 2, 2])
    #expect(product.scalars == [22, 28, 49, 64, 1, 2, 3, 4])
  }

  @Test func matmulBatchedOnBothSides() throws {
    // Batch 1: [[1, 0, 0], [0, 1, 0]] x [[1, 0], [0, 1], [1, 1]] = [[1, 0], [0, 1]].
    let lhs = f32([2, 2, 3], [1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0])
    let rhs = f32([2, 3, 2], [1, 2, 3, 4, 5, 6, 1, 0, 0, 1, 1, 1])
    let product = try eval(.matmul(transposeA: false, transposeB: false), lhs, rhs)
    #expect(product.shape == [2, 2, 2])
    #expect(product.scalars == [22, 28, 49, 64, 1, 0, 0, 1])
    // A rank-2 lhs broadcasts over the rhs batch: a23 x [[1, 0], [0, 1], [1, 1]] =
    // [1 + 3, 2 + 3; 4 + 6, 5 + 6].
    let broadcastLhs = try eval(.matmul(transposeA: false, transposeB: false), a23, rhs)
    #expect(broadcastLhs.shape == [2, 2, 2])
    #expect(broadcastLhs.scalars == [22, 28, 49, 64, 4, 5, 10, 11])
  }

  @Test func matmulAccumulatesInDoubleAndRoundsOnce() throws {
    // 1 + 2^-30 - 1 = 2^-30 in Double; rounding after each f32 addition would give 0.
    let tiny = 9.313225746154785e-10  // 2^-30
    let product = try eval(
      .matmul(transposeA: false, transposeB: false), f32([1, 3], [1, tiny, -1]),
      f32([3, 1], [1, 1, 1]))
    #expect(product.scalars == [tiny])
  }

  // MARK: - Shapes

  @Test func reshapeKeepsRowMajorOrder() throws {
    let reshaped = try eval(.reshape(to: [3, 2]), a23)
    #expect(reshaped.shape == [3, 2])
    #expect(reshaped.scalars == [1, 2, 3, 4, 5, 6])
    #expect(try eval(.reshape(to: [6]), a23).shape == [6])
  }

  @Test func transposeRank3() throws {
    // Permutation [2, 0, 1]: y[k, i, j] = x[i, j, k] = 12i + 4j + k, shape [4, 2, 3].
    let rotated = try eval(.transpose(permutation: [2, 0, 1]), x234)
    #expect(rotated.shape == [4, 2, 3])
    #expect(
      rotated.scalars == [
        0, 4, 8, 12, 16, 20,
        1, 5, 9, 13, 17, 21,
        2, 6, 10, 14, 18, 22,
        3, 7, 11, 15, 19, 23,
      ])
    // Permutation [1, 0, 2]: y[j, i, k] = 12i + 4j + k, shape [3, 2, 4].
    let swapped = try eval(.transpose(permutation: [1, 0, 2]), x234)
    #expect(swapped.shape == [3, 2, 4])
    #expect(
      swapped.scalars == [
        0, 1, 2, 3, 12, 13, 14, 15,
        4, 5, 6, 7, 16, 17, 18, 19,
        8, 9, 10, 11, 20, 21, 22, 23,
      ])
  }

  @Test func broadcastRowAndColumn() throws {
    #expect(try eval(.broadcast(to: [2, 3]), f32([3], [1, 2, 3])).scalars == [1, 2, 3, 1, 2, 3])
    #expect(try eval(.broadcast(to: [2, 3]), f32([2, 1], [1, 2])).scalars == [1, 1, 1, 2, 2, 2])
    let scalar = try eval(.broadcast(to: [2, 2]), i32([], [7]))
    #expect(scalar.dtype == .i32)
    #expect(scalar.scalars == [7, 7, 7, 7])
  }

  @Test func sliceBoxes() throws {
    // Columns 1 ..< 3 of [[1, 2, 3], [4, 5, 6]].
    let columns = try eval(.slice(start: [0, 1], end: [2, 3]), a23)
    #expect(columns.shape == [2, 2])
    #expect(columns.scalars == [2, 3, 5, 6])
    // x[1, 0..<2, 1..<3] = 12 + {0, 4} + {1, 2}.
    let box = try eval(.slice(start: [1, 0, 1], end: [2, 2, 3]), x234)
    #expect(box.shape == [1, 2, 2])
    #expect(box.scalars == [13, 14, 17, 18])
  }

  @Test func concatOnEachAxis() throws {
    let rows = try eval(.concat(axis: 0), a23, f32([1, 3], [7, 8, 9]))
    #expect(rows.shape == [3, 3])
    #expect(rows.scalars == [1, 2, 3, 4, 5, 6, 7, 8, 9])
    let columns = try eval(
      .concat(axis: 1), a23, f32([2, 1], [7, 8]), f32([2, 2], [9, 10, 11, 12]))
    #expect(columns.shape == [2, 6])
    #expect(columns.scalars == [1, 2, 3, 7, 9, 10, 4, 5, 6, 8, 11, 12])
  }

  // MARK: - Gather and scatter

  /// [[0, 1], [10, 11], [20, 21]].
  private let table = f32([3, 2], [0, 1, 10, 11, 20, 21])

  @Test func gatherAxis0() throws {
    let rows = try eval(.gather(axis: 0), table, i32([3], [2, 0, 2]))
    #expect(rows.shape == [3, 2])
    #expect(rows.scalars == [20, 21, 0, 1, 20, 21])
    // Indices [[1, 0], [2, 2]]: shape [2, 2] + [2].
    let nested = try eval(.gather(axis: 0), table, i32([2, 2], [1, 0, 2, 2]))
    #expect(nested.shape == [2, 2, 2])
    #expect(nested.scalars == [10, 11, 0, 1, 20, 21, 20, 21])
    let integers = try eval(.gather(axis: 0), i32([3], [5, 6, 7]), i32([2], [2, 0]))
    #expect(integers.dtype == .i32)
    #expect(integers.scalars == [7, 5])
  }

  @Test func gatherAxis1() throws {
    // Columns 1, 0, 1 of each row.
    let columns = try eval(.gather(axis: 1), table, i32([3], [1, 0, 1]))
    #expect(columns.shape == [3, 3])
    #expect(columns.scalars == [1, 0, 1, 11, 10, 11, 21, 20, 21])
    // Indices [[1, 0], [1, 1]]: shape [3] + [2, 2].
    let nested = try eval(.gather(axis: 1), table, i32([2, 2], [1, 0, 1, 1]))
    #expect(nested.shape == [3, 2, 2])
    #expect(nested.scalars == [1, 0, 1, 1, 11, 10, 11, 11, 21, 20, 21, 21])
  }

  @Test func scatterAddAccumulatesRepeatedIndices() throws {
    // Rows 1, 1, 2 of a target of ones: row 1 gets [1, 2] + [10, 20], row 2 gets [5, 5].
    let ones = f32([3, 2], [1, 1, 1, 1, 1, 1])
    let added = try eval(
      .scatterAdd(axis: 0), ones, i32([3], [1, 1, 2]), f32([3, 2], [1, 2, 10, 20, 5, 5]))
    #expect(added.scalars == [1, 1, 12, 23, 6, 6])
    // Axis 1, columns 0, 2, 0: column 0 gets 1 + 3 and 4 + 6, column 2 gets 2 and 5.
    let zeros = f32([2, 3], [0, 0, 0, 0, 0, 0])
    let columns = try eval(.scatterAdd(axis: 1), zeros, i32([3], [0, 2, 0]), a23)
    #expect(columns.scalars == [4, 0, 2, 10, 0, 5])
  }

  @Test func gatherRejectsOutOfRangeIndex() {
    #expect(
      throws: InterpreterError(message: "gather: index 3 at position 1 is out of range 0..<3")
    ) {
      try eval(.gather(axis: 0), table, i32([2], [0, 3]))
    }
    #expect(
      throws: InterpreterError(message: "gather: index -1 at position 0 is out of range 0..<2")
    ) {
      try eval(.gather(axis: 1), table, i32([1], [-1]))
    }
  }

  @Test func scatterAddRejectsOutOfRangeIndex() {
    #expect(
      throws: InterpreterError(
        message: "scatter_add: index 5 at position 1 is out of range 0..<3")
    ) {
      try eval(.scatterAdd(axis: 0), table, i32([2], [0, 5]), f32([2, 2], [1, 1, 1, 1]))
    }
    #expect(
      throws: InterpreterError(
        message: "scatter_add: index -2 at position 0 is out of range 0..<3")
    ) {
      try eval(.scatterAdd(axis: 0), table, i32([1], [-2]), f32([1, 2], [1, 1]))
    }
  }

  @Test func evaluateRejectsMalformedTensors() {
    // Indices that are not integers, and an element count that does not match the shape.
    #expect(
      throws: InterpreterError(
        message: "gather: operand 2 holds 1.5 at position 0, which is not an i32")
    ) {
      try eval(.gather(axis: 0), table, i32([1], [1.5]))
    }
    var short = DenseTensor(dtype: .f32, shape: [3], scalars: [1, 2, 3])
    short.shape = [4]
    #expect(throws: InterpreterError(message: "neg: operand 1 has 3 elements for type f32[4]")) {
      try eval(.unary(.neg), .tensor(short))
    }
  }

  // MARK: - Casts and generators

  @Test func castF32ToI32TruncatesAndClamps() throws {
    let cast = try eval(.cast(to: .i32), f32([6], [1.9, -1.9, -0.5, 1e12, -1e12, .nan]))
    #expect(cast.dtype == .i32)
    #expect(cast.scalars == [1, -1, 0, int32Max, int32Min, 0])
  }

  @Test func castI32ToF32AndCopies() throws {
    let cast = try eval(.cast(to: .f32), i32([3], [-3, 7, 16_777_217]))
    #expect(cast.dtype == .f32)
    // 2^24 + 1 has no Float: it rounds to 2^24 in f32 precision and stays exact in f64.
    #expect(cast.scalars == [-3, 7, 16_777_216])
    #expect(
      try eval(.cast(to: .f32), i32([1], [16_777_217]), precision: .f64).scalars == [16_777_217])
    #expect(try eval(.cast(to: .f32), f32([2], [1.5, -2])).scalars == [1.5, -2])
    #expect(try eval(.cast(to: .i32), i32([2], [4, -4])).scalars == [4, -4])
  }

  @Test func iotaOnEachAxis() throws {
    let rows = try eval(.iota(axis: 0, type: TensorType(.i32, [2, 3])))
    #expect(rows.dtype == .i32)
    #expect(rows.scalars == [0, 0, 0, 1, 1, 1])
    #expect(
      try eval(.iota(axis: 1, type: TensorType(.i32, [2, 3]))).scalars == [0, 1, 2, 0, 1, 2])
    let cube = TensorType(.f32, [2, 2, 2])
    #expect(try eval(.iota(axis: 0, type: cube)).scalars == [0, 0, 0, 0, 1, 1, 1, 1])
    #expect(try eval(.iota(axis: 1, type: cube)).scalars == [0, 0, 1, 1, 0, 0, 1, 1])
    #expect(try eval(.iota(axis: 2, type: cube)).scalars == [0, 1, 0, 1, 0, 1, 0, 1])
  }

  @Test func fillRepeatsTheValue() throws {
    let floats = try eval(.fill(value: -2.5, type: TensorType(.f32, [2, 2])))
    #expect(floats.shape == [2, 2])
    #expect(floats.scalars == [-2.5, -2.5, -2.5, -2.5])
    // i32 truncates toward zero.
    #expect(try eval(.fill(value: -7.9, type: TensorType(.i32, [3]))).scalars == [-7, -7, -7])
  }

  // MARK: - Softmax

  // Rows [0, ln 2, ln 5] and [1, 1, 1]: exp gives [1, 2, 5] / 8 and thirds.
  private let softmaxRows = f32([2, 3], [0, 0.6931471805599453, 1.6094379124341003, 1, 1, 1])
  // Columns [0, ln 3], [0, 0], [0, -ln 3]: exp gives [1, 3] / 4, halves, [1, 1/3] * 3/4.
  private let softmaxColumns = f32([2, 3], [0, 0, 0, 1.0986122886681098, 0, -1.0986122886681098])

  @Test func softmaxOnEachAxis() throws {
    let third = 1 / 3.0
    #expect(
      isClose(
        try eval(.softmax(axis: 1), softmaxRows).scalars, [0.125, 0.25, 0.625, third, third, third])
    )
    #expect(
      isClose(
        try eval(.softmax(axis: 0), softmaxColumns).scalars, [0.25, 0.5, 0.75, 0.75, 0.5, 0.25]))
  }

  @Test func logSoftmaxOnEachAxis() throws {
    // ln 0.125 = -2.0794415416798357, ln 0.25 = -1.3862943611198906, ln 0.625 =
    // -0.4700036292457356, ln 1/3 = -1.0986122886681098, ln 0.5 = -0.6931471805599453,
    // ln 0.75 = -0.2876820724517809.
    #expect(
      isClose(
        try eval(.logSoftmax(axis: 1), softmaxRows).scalars,
        [
          -2.0794415416798357, -1.3862943611198906, -0.4700036292457356,
          -1.0986122886681098, -1.0986122886681098, -1.0986122886681098,
        ]))
    #expect(
      isClose(
        try eval(.logSoftmax(axis: 0), softmaxColumns).scalars,
        [
          -1.3862943611198906, -0.6931471805599453, -0.2876820724517809,
          -0.2876820724517809, -0.6931471805599453, -1.3862943611198906,
        ]))
  }

  @Test func softmaxIsStableForLargeInputs() throws {
    // softmax([1000, 1001]) = [1, e] / (1 + e); log(1 + e) = 1.3132616875182228.
    let large = f32([2], [1000, 1001])
    #expect(
      isClose(try eval(.softmax(axis: 0), large).scalars, [0.2689414213699951, 0.7310585786300049]))
    #expect(
      isClose(
        try eval(.logSoftmax(axis: 0), large).scalars, [-1.3132616875182228, -0.3132616875182228]))
    // exp(-1000) underflows, but log_softmax stays finite: [-1000, 0].
    #expect(try eval(.logSoftmax(axis: 0), f32([2], [-1000, 0])).scalars == [-1000, 0])
    #expect(try eval(.softmax(axis: 0), f32([2], [-1000, 0])).scalars == [0, 1])
  }

  // MARK: - Rope

  // x = [1, 2, 3, 4] (one head of dimension 4) at position 1 with theta 10000: pair k rotates by
  // 10000^(-2k/4), so pair 0 by 1 and pair 1 by 0.01.
  private let c1 = 0.5403023058681398  // cos(1)
  private let s1 = 0.8414709848078965  // sin(1)
  private let c2 = 0.9999500004166653  // cos(0.01)
  private let s2 = 0.009999833334166664  // sin(0.01)
  private let ropeInput = f32([1, 1, 4], [1, 2, 3, 4])

  @Test func ropeRotateHalfPairsFirstAndSecondHalves() throws {
    // Pairs (0, 2) and (1, 3).
    let rotated = try eval(.rope(theta: 10000, interleaved: false), ropeInput, i32([1], [1]))
    #expect(rotated.shape == [1, 1, 4])
    #expect(
      isClose(
        rotated.scalars, [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 1 * s1 + 3 * c1, 2 * s2 + 4 * c2]))
  }

  @Test func ropeInterleavedPairsNeighbours() throws {
    // Pairs (0, 1) and (2, 3).
    let rotated = try eval(.rope(theta: 10000, interleaved: true), ropeInput, i32([1], [1]))
    #expect(
      isClose(
        rotated.scalars, [1 * c1 - 2 * s1, 1 * s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2]))
  }

  @Test func ropeUsesEachPositionForEveryHead() throws {
    // Positions [0, 1], two heads of dimension 2 each: [1, 0] and [0, 1] at both positions.
    // Position 0 is the identity; at position 1, (1, 0) -> (c1, s1) and (0, 1) -> (-s1, c1).
    let x = f32([2, 2, 2], [1, 0, 0, 1, 1, 0, 0, 1])
    for interleaved in [false, true] {
      let rotated = try eval(.rope(theta: 10000, interleaved: interleaved), x, i32([2], [0, 1]))
      #expect(isClose(rotated.scalars, [1, 0, 0, 1, c1, s1, -s1, c1]))
    }
  }

  @Test func ropeAtNegatedPositionInverts() throws {
    let rotated = try eval(.rope(theta: 10000, interleaved: false), ropeInput, i32([1], [3]))
    let back = try eval(
      .rope(theta: 10000, interleaved: false), .tensor(rotated), i32([1], [-3]))
    #expect(isClose(back.scalars, [1, 2, 3, 4]))
  }

  // MARK: - Dynamic slices

  @Test func dynamicSliceClampsStart() throws {
    // Size [1, 2] at [1, 2] clamps to [1, 1]: [5, 6]; size [2, 1] at [-4, 1] clamps to [0, 1].
    #expect(try eval(.dynamicSlice(sizes: [1, 2]), a23, i32([2], [1, 2])).scalars == [5, 6])
    #expect(try eval(.dynamicSlice(sizes: [2, 1]), a23, i32([2], [-4, 1])).scalars == [2, 5])
    // Negative starts clamp to 0: size [1, 1] at [-3, -1] reads [0, 0].
    #expect(try eval(.dynamicSlice(sizes: [1, 1]), a23, i32([2], [-3, -1])).scalars == [1])
    let inside = try eval(.dynamicSlice(sizes: [2, 2]), a23, i32([2], [0, 1]))
    #expect(inside.shape == [2, 2])
    #expect(inside.scalars == [2, 3, 5, 6])
  }

  @Test func dynamicUpdateSliceClampsStart() throws {
    let update = f32([1, 2], [-1, -2])
    // [5, 5] clamps to [1, 1]; [-1, 0] clamps to [0, 0].
    #expect(
      try eval(.dynamicUpdateSlice, a23, update, i32([2], [5, 5])).scalars == [1, 2, 3, 4, -1, -2])
    #expect(
      try eval(.dynamicUpdateSlice, a23, update, i32([2], [-1, 0])).scalars == [-1, -2, 3, 4, 5, 6])
  }

  // MARK: - InterpreterPrecision

  @Test func f32PrecisionRoundsResultsAndF64DoesNot() throws {
    let one = f32([1], [1])
    #expect(try eval(.binary(.add), one, .scalar(1e-10), precision: .f32).scalars == [1])
    #expect(try eval(.binary(.add), one, .scalar(1e-10), precision: .f64).scalars == [1 + 1e-10])
  }

  @Test func f32PrecisionRoundsOperandsAndLiteralsOnEntry() throws {
    // Float(0.1) = 0.100000001490116119384765625.
    let zero = f32([1], [0])
    #expect(
      try eval(.binary(.add), zero, .scalar(0.1), precision: .f32).scalars == [0.10000000149011612])
    #expect(try eval(.binary(.add), zero, .scalar(0.1), precision: .f64).scalars == [0.1])
    #expect(try eval(.unary(.neg), f32([1], [0.1])).scalars == [-0.10000000149011612])
  }

  // MARK: - Whole graphs

  /// `(%x: f32[2]) { param @b = 0; const @s; %3 = add %x, @b "h"; %4 = mul %3, @s; return %4, %3 }`.
  private func smallGraph() -> Graph {
    let vector = TensorType(.f32, [2])
    return Graph(
      name: "small",
      inputs: [GraphInput(name: "x", value: Value(0))],
      declarations: [
        Declaration(kind: .parameter, name: "b", value: Value(1), initializer: .zeros),
        Declaration(kind: .constant, name: "s", value: Value(2)),
      ],
      body: [
        Instruction(
          results: [Value(3)], op: .binary(.add), operands: [.value(Value(0)), .value(Value(1))],
          name: "h"),
        Instruction(
          results: [Value(4)], op: .binary(.mul), operands: [.value(Value(3)), .value(Value(2))]),
      ],
      outputs: [Value(4), Value(3)],
      types: [vector, vector, vector, vector, vector])
  }

  private let inputX = DenseTensor(shape: [2], floats: [1, 2])
  private let constantS = DenseTensor(shape: [2], floats: [10, 20])

  @Test func runEvaluatesAGraphAndInitializesUnboundParameters() throws {
    // @b starts at zero: h = [1, 2], h * s = [10, 40].
    let outputs = try Interpreter().run(smallGraph(), bindings: ["x": inputX, "s": constantS])
    #expect(outputs.count == 2)
    #expect(outputs[0].scalars == [10, 40])
    #expect(outputs[1].scalars == [1, 2])
    // A bound parameter wins: h = [1.5, 2.5], h * s = [15, 50].
    let b = DenseTensor(shape: [2], floats: [0.5, 0.5])
    let bound = try Interpreter().run(
      smallGraph(), bindings: ["x": inputX, "s": constantS, "b": b])
    #expect(bound.map(\.scalars) == [[15, 50], [1.5, 2.5]])
  }

  @Test func runRejectsMissingBinding() {
    #expect(throws: InterpreterError(message: "no binding for 's' : f32[2]")) {
      try Interpreter().run(smallGraph(), bindings: ["x": inputX])
    }
  }

  @Test func runRejectsWrongShapedOrTypedBinding() {
    let long = DenseTensor(shape: [3], floats: [1, 2, 3])
    #expect(throws: InterpreterError(message: "'x' is declared f32[2], but its binding is f32[3]"))
    {
      try Interpreter().run(smallGraph(), bindings: ["x": long, "s": constantS])
    }
    let integers = DenseTensor(shape: [2], ints: [1, 2])
    #expect(throws: InterpreterError(message: "'s' is declared f32[2], but its binding is i32[2]"))
    {
      try Interpreter().run(smallGraph(), bindings: ["x": inputX, "s": integers])
    }
  }

  @Test func runRejectsUnknownBindingName() {
    #expect(throws: InterpreterError(message: "binding 'typo' matches no input or declaration")) {
      try Interpreter().run(
        smallGraph(), bindings: ["x": inputX, "s": constantS, "typo": constantS])
    }
  }

  @Test func runNamesTheFailingInstruction() {
    // gather(@table, %ids) "emb" with an index past the 3 rows.
    let graph = Graph(
      name: "lookup",
      inputs: [GraphInput(name: "ids", value: Value(0))],
      declarations: [Declaration(kind: .constant, name: "table", value: Value(1))],
      body: [
        Instruction(
          results: [Value(2)], op: .gather(axis: 0),
          operands: [.value(Value(1)), .value(Value(0))], name: "emb")
      ],
      outputs: [Value(2)],
      types: [TensorType(.i32, [2]), TensorType(.f32, [3, 2]), TensorType(.f32, [2, 2])])
    let table = DenseTensor(shape: [3, 2], floats: [0, 1, 10, 11, 20, 21])
    let ids = DenseTensor(shape: [2], ints: [2, 7])
    #expect(
      throws: InterpreterError(
        message:
          "instruction 0 (gather \"emb\"): gather: index 7 at position 1 is out of range 0..<3")
    ) {
      try Interpreter().run(graph, bindings: ["ids": ids, "table": table])
    }
  }

  @Test func runRejectsAResultOfTheWrongDeclaredType() {
    var graph = smallGraph()
    graph.types[4] = TensorType(.f32, [3])
    #expect(
      throws: InterpreterError(
        message: "instruction 1 (mul): result v4 is declared f32[3], but the op gives f32[2]")
    ) {
      try Interpreter().run(graph, bindings: ["x": inputX, "s": constantS])
    }
  }

  @Test func runBindsStorageConstantsToDecodedF32() throws {
    // x [1, 2] times a q8_0 weight [2, 32] whose decoded rows are all 1 and all 2: 1 + 2 = 3.
    let graph = Graph(
      name: "quantized",
      inputs: [GraphInput(name: "x", value: Value(0))],
      declarations: [Declaration(kind: .constant, name: "w", value: Value(1))],
      body: [
        Instruction(
          results: [Value(2)], op: .matmul(transposeA: false, transposeB: false),
          operands: [.value(Value(0)), .value(Value(1))])
      ],
      outputs: [Value(2)],
      types: [TensorType(.f32, [1, 2]), TensorType(.q8_0, [2, 32]), TensorType(.f32, [1, 32])])
    let weight = DenseTensor(
      dtype: .f32, shape: [2, 32],
      scalars: [Double](repeating: 1, count: 32) + [Double](repeating: 2, count: 32))
    let input = DenseTensor(shape: [1, 2], floats: [1, 1])
    let product = try Interpreter().run(graph, bindings: ["x": input, "w": weight])[0]
    #expect(product.scalars == [Double](repeating: 3, count: 32))
    let wrong = DenseTensor(
      dtype: .f32, shape: [2, 16], scalars: [Double](repeating: 1, count: 32))
    #expect(
      throws: InterpreterError(
        message: "'w' is declared q8_0[2,32] (bound as f32[2,32]), but its binding is f32[2,16]")
    ) {
      try Interpreter().run(graph, bindings: ["x": input, "w": wrong])
    }
  }

  @Test func runRoundsF32BindingsOnEntry() throws {
    // h = x + 0 with x = 0.1: Float(0.1) in f32 precision, 0.1 exactly in f64.
    let tenth = DenseTensor(dtype: .f32, shape: [2], scalars: [0.1, 0.1])
    let ones = DenseTensor(shape: [2], floats: [1, 1])
    let rounded = try Interpreter(precision: .f32).run(
      smallGraph(), bindings: ["x": tenth, "s": ones])
    #expect(rounded[1].scalars == [0.10000000149011612, 0.10000000149011612])
    let exact = try Interpreter(precision: .f64).run(
      smallGraph(), bindings: ["x": tenth, "s": ones])
    #expect(exact[1].scalars == [0.1, 0.1])
  }
}
