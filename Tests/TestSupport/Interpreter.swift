import IR

/// An `f32` interpreter operand with the given values (row-major).
public func f32(_ shape: [Int], _ values: [Double]) -> InterpreterOperand {
  .tensor(DenseTensor(dtype: .f32, shape: shape, scalars: values))
}

/// An `i32` interpreter operand with the given values (row-major, whole numbers).
public func i32(_ shape: [Int], _ values: [Double]) -> InterpreterOperand {
  .tensor(DenseTensor(dtype: .i32, shape: shape, scalars: values))
}

/// Whether `a` matches `b` element by element within `tolerance * (1 + |b|)`.
public func close(_ a: [Double], _ b: [Double], _ tolerance: Double = 1e-12) -> Bool {
  a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * (1 + abs($1)) }
}
