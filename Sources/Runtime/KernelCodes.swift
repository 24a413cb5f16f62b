import CKernels
import IR

// The codes the C kernels take for op functions and dtypes, by name: each Swift case maps to the
// header's constant in an exhaustive switch (a new case does not compile until it has a code),
// and `kernelCodesMatchTheHeader` checks once that every family has as many cases as the header's
// `_COUNT` says. Never derive a code from a case's position.

extension UnaryOp {
  /// The function's code in `enum lc_unary`.
  public var kernelCode: Int32 {
    kernelCodesMatchTheHeader()
    return uncheckedCode
  }

  fileprivate var uncheckedCode: Int32 { Int32(headerConstant.rawValue) }

  private var headerConstant: lc_unary {
    switch self {
    case .neg: LC_NEG
    case .abs: LC_ABS
    case .exp: LC_EXP
    case .log: LC_LOG
    case .sqrt: LC_SQRT
    case .rsqrt: LC_RSQRT
    case .reciprocal: LC_RECIPROCAL
    case .tanh: LC_TANH
    case .sigmoid: LC_SIGMOID
    case .relu: LC_RELU
    case .silu: LC_SILU
    case .sin: LC_SIN
    case .cos: LC_COS
    }
  }
}

extension BinaryOp {
  /// The function's code in `enum lc_binary`.
  public var kernelCode: Int32 {
    kernelCodesMatchTheHeader()
    return uncheckedCode
  }

  fileprivate var uncheckedCode: Int32 { Int32(headerConstant.rawValue) }

  private var headerConstant: lc_binary {
    switch self {
    case .add: LC_ADD
    case .sub: LC_SUB
    case .mul: LC_MUL
    case .div: LC_DIV
    case .max: LC_MAX
    case .min: LC_MIN
    case .pow: LC_POW
    }
  }
}

extension Comparison {
  /// The comparison's code in `enum lc_compare`.
  public var kernelCode: Int32 {
    kernelCodesMatchTheHeader()
    return uncheckedCode
  }

  fileprivate var uncheckedCode: Int32 { Int32(headerConstant.rawValue) }

  private var headerConstant: lc_compare {
    switch self {
    case .eq: LC_EQ
    case .ne: LC_NE
    case .lt: LC_LT
    case .le: LC_LE
    case .gt: LC_GT
    case .ge: LC_GE
    }
  }
}

extension ReduceOp {
  /// The reduction's code in `enum lc_reduce`.
  public var kernelCode: Int32 {
    kernelCodesMatchTheHeader()
    return uncheckedCode
  }

  fileprivate var uncheckedCode: Int32 { Int32(headerConstant.rawValue) }

  private var headerConstant: lc_reduce {
    switch self {
    case .sum: LC_SUM
    case .max: LC_RMAX
    case .mean: LC_MEAN
    }
  }
}

extension DType {
  /// The dtype's code in `enum lc_dtype`.
  public var kernelCode: Int32 {
    kernelCodesMatchTheHeader()
    return uncheckedCode
  }

  fileprivate var uncheckedCode: Int32 { Int32(headerConstant.rawValue) }

  private var headerConstant: lc_dtype {
    switch self {
    case .f32: LC_F32
    case .i32: LC_I32
    case .f16: LC_F16
    case .bf16: LC_BF16
    case .q8_0: LC_Q8_0
    case .q4_1: LC_Q4_1
    case .q4_k: LC_Q4_K
    case .q6_k: LC_Q6_K
    }
  }
}

/// Each family's case count and the header's `_COUNT` for it, for the check below and its test.
public let kernelCodeCounts:
  [(family: String, swiftCases: Int, headerCount: Int, codes: Set<Int32>)] = [
    (
      "UnaryOp", UnaryOp.allCases.count, Int(LC_UNARY_COUNT.rawValue),
      Set(UnaryOp.allCases.map(\.uncheckedCode))
    ),
    (
      "BinaryOp", BinaryOp.allCases.count, Int(LC_BINARY_COUNT.rawValue),
      Set(BinaryOp.allCases.map(\.uncheckedCode))
    ),
    (
      "Comparison", Comparison.allCases.count, Int(LC_COMPARE_COUNT.rawValue),
      Set(Comparison.allCases.map(\.uncheckedCode))
    ),
    (
      "ReduceOp", ReduceOp.allCases.count, Int(LC_REDUCE_COUNT.rawValue),
      Set(ReduceOp.allCases.map(\.uncheckedCode))
    ),
    (
      "DType", DType.allCases.count, Int(LC_DTYPE_COUNT.rawValue),
      Set(DType.allCases.map(\.uncheckedCode))
    ),
  ]

/// Stops the program at the first code looked up if a family and the header disagree (a case
/// without a C code, or two cases sharing one).
private let kernelCodesChecked: Bool = {
  for family in kernelCodeCounts {
    precondition(
      family.swiftCases == family.headerCount
        && family.codes == Set((0..<family.headerCount).map(Int32.init)),
      "\(family.family) has \(family.swiftCases) cases mapped to codes \(family.codes.sorted()), "
        + "but lorac_kernels.h counts \(family.headerCount)")
  }
  return true
}()

private func kernelCodesMatchTheHeader() { _ = kernelCodesChecked }
