/// The element type of a tensor.
///
/// `f32` and `i32` are compute types: every instruction computes in them. The others are storage
/// types: they appear only on frozen constants (weights as a GGUF file stores them) and are read
/// directly by the ops that understand them (`matmul` as its right operand, `gather` as its table,
/// and `cast`). Block-quantized types pack `blockSize` consecutive values of the innermost
/// dimension into `blockBytes` bytes, so that dimension must be a multiple of `blockSize`.
public enum DType: String, Hashable, Sendable, CaseIterable {
  case f32, i32, f16, bf16, q8_0, q4_1, q4_k, q6_k

  /// Whether instructions may compute in this type (as opposed to only storing it).
  public var isCompute: Bool { self == .f32 || self == .i32 }

  /// Whether values of this type are real numbers (everything but `i32`).
  public var isFloatingPoint: Bool { self != .i32 }

  /// The number of values one storage block holds (1 for scalar types).
  public var blockSize: Int {
    switch self {
    case .f32, .i32, .f16, .bf16: 1
    case .q8_0, .q4_1: 32
    case .q4_k, .q6_k: 256
    }
  }

  /// The number of bytes one storage block takes.
  public var blockBytes: Int {
    switch self {
    case .f32, .i32: 4
    case .f16, .bf16: 2
    case .q8_0: 34
    case .q4_1: 20
    case .q4_k: 144
    case .q6_k: 210
    }
  }
}
