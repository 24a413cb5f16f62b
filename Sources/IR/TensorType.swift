/// A static shape and an element type, printed as `f32[16,32,576]` (`f32[]` for a scalar).
public struct TensorType: Hashable, Sendable, CustomStringConvertible {
  public var dtype: DType
  public var shape: [Int]

  /// The largest number of elements a tensor type may describe (2^48), so byte counts never
  /// overflow.
  public static let maxElementCount = 1 << 48
  /// The largest rank a tensor type may have.
  public static let maxRank = 16

  public init(_ dtype: DType, _ shape: [Int]) {
    self.dtype = dtype
    self.shape = shape
  }

  public init(dtype: DType, shape: [Int]) {
    self.init(dtype, shape)
  }

  public var rank: Int { shape.count }

  /// The product of the dimensions (1 for a scalar).
  public var elementCount: Int { shape.reduce(1, *) }

  /// The number of bytes a dense row-major tensor of this type takes.
  ///
  /// Valid only for types that pass `validate()`.
  public var byteCount: Int { elementCount / dtype.blockSize * dtype.blockBytes }

  public var description: String {
    var text = dtype.rawValue
    text += "["
    for (index, dimension) in shape.enumerated() {
      if index > 0 { text += "," }
      text += String(dimension)
    }
    text += "]"
    return text
  }

  /// The same shape with another element type.
  public func with(dtype newType: DType) -> TensorType { TensorType(newType, shape) }

  /// The reason this type is not a valid tensor type, or nil when it is valid.
  ///
  /// Dimensions must be positive, the element count at most `maxElementCount`, the rank at most
  /// `maxRank`, and block-quantized types need a non-empty shape whose innermost dimension is a
  /// multiple of the block size.
  public func problem() -> String? {
    if shape.count > TensorType.maxRank {
      return "rank \(shape.count) exceeds the maximum of \(TensorType.maxRank)"
    }
    var count = 1
    for dimension in shape {
      if dimension <= 0 { return "dimension \(dimension) in \(self) is not positive" }
      let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
      if overflow || product > TensorType.maxElementCount {
        return "\(self) has more than \(TensorType.maxElementCount) elements"
      }
      count = product
    }
    if dtype.blockSize > 1 {
      guard let inner = shape.last else {
        return "\(dtype.rawValue) needs at least one dimension"
      }
      if inner % dtype.blockSize != 0 {
        return
          "\(self): innermost dimension \(inner) is not a multiple of the \(dtype.rawValue) block size \(dtype.blockSize)"
      }
    }
    return nil
  }
}
