import Foundation

/// A tensor of compute dtype (`f32` or `i32`) whose elements are held as `Double`.
///
/// The reference interpreter's value type: in `f32` precision every element is a `Float` value
/// widened to `Double`; in `f64` precision (gradient checks) elements keep full `Double` precision.
/// `i32` elements are integral values in the `Int32` range.
public struct DenseTensor: Hashable, Sendable, CustomStringConvertible {
  public var dtype: DType
  public var shape: [Int]
  public var scalars: [Double]

  public init(dtype: DType = .f32, shape: [Int], scalars: [Double]) {
    precondition(shape.reduce(1, *) == scalars.count, "element count does not match shape")
    precondition(dtype.isCompute, "dense tensors hold f32 or i32")
    self.dtype = dtype
    self.shape = shape
    self.scalars = scalars
  }

  /// An `f32` tensor from `Float` elements.
  public init(shape: [Int], floats: [Float]) {
    self.init(dtype: .f32, shape: shape, scalars: floats.map(Double.init))
  }

  /// An `i32` tensor from `Int32` elements.
  public init(shape: [Int], ints: [Int32]) {
    self.init(dtype: .i32, shape: shape, scalars: ints.map(Double.init))
  }

  /// The elements of a host tensor, decoded; storage dtypes become `f32`.
  public init(_ host: HostTensor) {
    let dtype: DType = host.type.dtype == .i32 ? .i32 : .f32
    self.init(dtype: dtype, shape: host.type.shape, scalars: host.floats().map(Double.init))
    if dtype == .i32 { scalars = host.ints().map(Double.init) }
  }

  public var type: TensorType { TensorType(dtype, shape) }
  public var elementCount: Int { scalars.count }

  /// The elements rounded to `Float`.
  public var floats: [Float] { scalars.map(Float.init) }

  /// The elements as `Int32` (for `i32` tensors).
  public var ints: [Int32] { scalars.map { Int32(clamping: Int($0)) } }

  /// The tensor as host bytes (`f32` rounds each element).
  public var host: HostTensor {
    dtype == .i32 ? HostTensor(shape: shape, ints: ints) : HostTensor(shape: shape, floats: floats)
  }

  public var description: String {
    let shown = scalars.prefix(8).map { formatNumber($0) }.joined(separator: ", ")
    return "\(type) [\(shown)\(scalars.count > 8 ? ", ..." : "")]"
  }
}

// MARK: - Deterministic initial values

/// SplitMix64: a small, fast, well-mixed 64-bit generator with a documented, portable stream, so
/// that the same seed gives the same initial weights on every machine.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  public var state: UInt64

  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A uniform draw in `[0, 1)` from the top 53 bits.
  public mutating func nextUnit() -> Double {
    Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
  }
}

extension Initializer {
  /// The initial elements for a tensor of the given type, drawn from a stream seeded by `seed`.
  ///
  /// Uniform draws are `low + (high - low) * u` with `u` from `SplitMix64.nextUnit()`; normal
  /// draws use the Box-Muller transform on pairs of uniform draws.
  public func values(for type: TensorType, seed: UInt64) -> DenseTensor {
    let count = type.elementCount
    var generator = SplitMix64(seed: seed)
    var scalars = [Double](repeating: 0, count: count)
    func uniform(_ low: Double, _ high: Double) {
      for index in 0..<count { scalars[index] = low + (high - low) * generator.nextUnit() }
    }
    switch self {
    case .zeros:
      break
    case .constant(let value):
      scalars = [Double](repeating: value, count: count)
    case .kaimingUniform(let a, let rule):
      let fanIn = Double(Initializer.fanIn(of: type.shape, rule: rule))
      let gain = (2.0 / (1.0 + a * a)).squareRoot()
      let bound = gain * (3.0 / fanIn).squareRoot()
      uniform(-bound, bound)
    case .uniform(let low, let high):
      uniform(low, high)
    case .normal(let mean, let std):
      var index = 0
      while index < count {
        let u1 = max(generator.nextUnit(), Double.leastNormalMagnitude)
        let u2 = generator.nextUnit()
        let radius = (-2.0 * log(u1)).squareRoot()
        scalars[index] = mean + std * radius * cos(2.0 * Double.pi * u2)
        if index + 1 < count {
          scalars[index + 1] = mean + std * radius * sin(2.0 * Double.pi * u2)
        }
        index += 2
      }
    }
    if type.dtype == .i32 {
      scalars = scalars.map { $0.rounded(.towardZero) }
    } else {
      scalars = scalars.map { Double(Float($0)) }
    }
    return DenseTensor(dtype: type.dtype == .i32 ? .i32 : .f32, shape: type.shape, scalars: scalars)
  }
}
