import Foundation

/// A tensor in host memory as bytes: what weight loaders return and what executables bind.
///
/// The bytes are row-major and little-endian, in the layout of `type.dtype` (for block-quantized
/// types, the GGUF block layout). `data` may be backed by a memory-mapped file.
public struct HostTensor: Hashable, Sendable {
  public let type: TensorType
  public let data: Data

  /// Wraps bytes that must be exactly `type.byteCount` long.
  public init(type: TensorType, data: Data) throws(HostTensorError) {
    if let problem = type.problem() { throw HostTensorError(message: problem) }
    guard data.count == type.byteCount else {
      throw HostTensorError(
        message: "\(type) needs \(type.byteCount) bytes, got \(data.count)")
    }
    self.type = type
    self.data = data
  }

  /// An `f32` tensor from its elements in row-major order.
  public init(shape: [Int], floats: [Float]) {
    precondition(shape.reduce(1, *) == floats.count, "element count does not match shape")
    type = TensorType(.f32, shape)
    data = floats.withUnsafeBytes { Data($0) }
  }

  /// An `i32` tensor from its elements in row-major order.
  public init(shape: [Int], ints: [Int32]) {
    precondition(shape.reduce(1, *) == ints.count, "element count does not match shape")
    type = TensorType(.i32, shape)
    data = ints.withUnsafeBytes { Data($0) }
  }

  /// The elements as `Float`, decoding any floating-point or quantized dtype (and converting
  /// `i32`).
  public func floats() -> [Float] {
    var result = [Float](repeating: 0, count: type.elementCount)
    data.withUnsafeBytes { raw in
      result.withUnsafeMutableBufferPointer { out in
        decodeElements(raw, dtype: type.dtype, into: out)
      }
    }
    return result
  }

  /// The elements of an `i32` tensor (other dtypes are converted, truncating toward zero).
  public func ints() -> [Int32] {
    if type.dtype == .i32 {
      return data.withUnsafeBytes { raw in
        (0..<type.elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self) }
      }
    }
    return floats().map { Int32(clamping: Int($0.rounded(.towardZero))) }
  }
}

/// Bytes and a tensor type that do not fit together.
public struct HostTensorError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}

// MARK: - Scalar reference decoding of every dtype

/// Converts IEEE half-precision bits to a Float.
public func floatFromHalf(_ bits: UInt16) -> Float {
  let sign = UInt32(bits >> 15) << 31
  let exponent = Int((bits >> 10) & 0x1F)
  let mantissa = UInt32(bits & 0x3FF)
  if exponent == 0 {
    // Zero or subnormal: mantissa * 2^-24.
    let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
    return sign != 0 ? -magnitude : magnitude
  }
  if exponent == 31 {
    return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
  }
  return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}

/// Converts a Float to IEEE half-precision bits, rounding to nearest even.
public func halfFromFloat(_ value: Float) -> UInt16 {
  Float16(value).bitPattern
}

/// Converts bfloat16 bits (the top half of a Float) to a Float.
public func floatFromBFloat16(_ bits: UInt16) -> Float {
  Float(bitPattern: UInt32(bits) << 16)
}

/// Converts a Float to bfloat16 bits, rounding to nearest even (NaN stays NaN).
public func bfloat16FromFloat(_ value: Float) -> UInt16 {
  if value.isNaN { return 0x7FC0 }
  let bits = value.bitPattern
  let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
  return UInt16((bits &+ rounding) >> 16)
}

/// Decodes `out.count` elements of `dtype` from `raw`, one block at a time (the scalar reference
/// implementation of every GGUF block layout lorac reads).
func decodeElements(
  _ raw: UnsafeRawBufferPointer, dtype: DType, into out: UnsafeMutableBufferPointer<Float>
) {
  func half(_ offset: Int) -> Float {
    floatFromHalf(raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
  }
  func byte(_ offset: Int) -> UInt8 { raw[offset] }
  let blocks = out.count / dtype.blockSize
  switch dtype {
  case .f32:
    for index in 0..<out.count {
      out[index] = raw.loadUnaligned(fromByteOffset: 4 * index, as: Float.self)
    }
  case .i32:
    for index in 0..<out.count {
      out[index] = Float(raw.loadUnaligned(fromByteOffset: 4 * index, as: Int32.self))
    }
  case .f16:
    for index in 0..<out.count { out[index] = half(2 * index) }
  case .bf16:
    for index in 0..<out.count {
      out[index] = floatFromBFloat16(raw.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
    }
  case .q8_0:
    // f16 d; i8 qs[32]: x[j] = qs[j] * d.
    for block in 0..<blocks {
      let base = block * 34
      let scale = half(base)
      for j in 0..<32 { out[block * 32 + j] = Float(Int8(bitPattern: byte(base + 2 + j))) * scale }
    }
  case .q4_1:
    // f16 d; f16 m; u8 qs[16]: low nibbles are values 0..15, high nibbles 16..31.
    for block in 0..<blocks {
      let base = block * 20
      let scale = half(base)
      let minimum = half(base + 2)
      for j in 0..<16 {
        let q = byte(base + 4 + j)
        out[block * 32 + j] = Float(q & 0xF) * scale + minimum
        out[block * 32 + j + 16] = Float(q >> 4) * scale + minimum
      }
    }
  case .q4_k:
    // f16 d; f16 dmin; u8 scales[12]; u8 qs[128]: 8 sub-blocks of 32 with 6-bit scales and mins.
    for block in 0..<blocks {
      let base = block * 144
      let scale = half(base)
      let minScale = half(base + 2)
      let scales = base + 4
      let quants = base + 16
      func scaleAndMin(_ j: Int) -> (Float, Float) {
        if j < 4 {
          return (Float(byte(scales + j) & 63), Float(byte(scales + j + 4) & 63))
        }
        let sc = (byte(scales + j + 4) & 0xF) | ((byte(scales + j - 4) >> 6) << 4)
        let m = (byte(scales + j + 4) >> 4) | ((byte(scales + j) >> 6) << 4)
        return (Float(sc), Float(m))
      }
      for chunk in 0..<4 {
        let (sc1, m1) = scaleAndMin(2 * chunk)
        let (sc2, m2) = scaleAndMin(2 * chunk + 1)
        for l in 0..<32 {
          let q = byte(quants + 32 * chunk + l)
          out[block * 256 + 64 * chunk + l] = scale * sc1 * Float(q & 0xF) - minScale * m1
          out[block * 256 + 64 * chunk + 32 + l] = scale * sc2 * Float(q >> 4) - minScale * m2
        }
      }
    }
  case .q6_k:
    // u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d (last).
    for block in 0..<blocks {
      let base = block * 210
      let scale = half(base + 208)
      for part in 0..<2 {
        let low = base + 64 * part
        let high = base + 128 + 32 * part
        let scales = base + 192 + 8 * part
        let outBase = block * 256 + 128 * part
        for l in 0..<32 {
          let group = l / 16
          let h = byte(high + l)
          let q1 = Int(byte(low + l) & 0xF) | Int((h >> 0) & 3) << 4
          let q2 = Int(byte(low + l + 32) & 0xF) | Int((h >> 2) & 3) << 4
          let q3 = Int(byte(low + l) >> 4) | Int((h >> 4) & 3) << 4
          let q4 = Int(byte(low + l + 32) >> 4) | Int((h >> 6) & 3) << 4
          func s(_ k: Int) -> Float { Float(Int8(bitPattern: byte(scales + group + 2 * k))) }
          out[outBase + l] = scale * s(0) * Float(q1 - 32)
          out[outBase + l + 32] = scale * s(1) * Float(q2 - 32)
          out[outBase + l + 64] = scale * s(2) * Float(q3 - 32)
          out[outBase + l + 96] = scale * s(3) * Float(q4 - 32)
        }
      }
    }
  }
}
