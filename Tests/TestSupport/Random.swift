import Foundation
import IR

extension SplitMix64 {
  /// A number uniform in `low..<high`: `low + (high - low) * nextUnit()`.
  public mutating func uniform(_ low: Double, _ high: Double) -> Double {
    low + (high - low) * nextUnit()
  }
}

/// Random f32 values uniform in [-0.5, 0.5) for every declaration of `kind` in `graph`, drawn from
/// one SplitMix64 stream in declaration order.
public func randomDeclarations(_ graph: Graph, seed: UInt64, kind: Declaration.Kind = .constant)
  -> [String: DenseTensor]
{
  var generator = SplitMix64(seed: seed)
  return randomDeclarations(graph, generator: &generator, kind: kind)
}

/// Random f32 values uniform in [-0.5, 0.5) for every declaration of `kind` in `graph`, drawn from
/// `generator` in declaration order.
public func randomDeclarations(
  _ graph: Graph, generator: inout SplitMix64, kind: Declaration.Kind
) -> [String: DenseTensor] {
  var result: [String: DenseTensor] = [:]
  for declaration in graph.declarations where declaration.kind == kind {
    let type = graph.type(of: declaration.value)
    result[declaration.name] = DenseTensor(
      dtype: .f32, shape: type.shape,
      scalars: (0..<type.elementCount).map { _ in generator.uniform(-0.5, 0.5) })
  }
  return result
}

/// Random f64 bindings for every input of `graph`: f32 inputs uniform in [-1, 1), i32 inputs in
/// `0..<limit`, except that an input named `targets` starts with -100 (an ignored target) and the
/// run-time adapter scale (`%adapter_scale`) is 1, as an executable runs it by default.
public func randomInputs(_ graph: Graph, seed: UInt64, limit: Int) -> [String: DenseTensor] {
  var generator = SplitMix64(seed: seed)
  var result: [String: DenseTensor] = [:]
  for input in graph.inputs {
    let type = graph.type(of: input.value)
    if input.name == adapterScaleInputName {
      result[input.name] = DenseTensor(dtype: .f32, shape: type.shape, scalars: [1])
    } else if type.dtype == .i32 {
      var values = (0..<type.elementCount).map { _ in Double(generator.next() % UInt64(limit)) }
      if input.name == "targets" { values[0] = -100 }
      result[input.name] = DenseTensor(dtype: .i32, shape: type.shape, scalars: values)
    } else {
      result[input.name] = DenseTensor(
        dtype: .f32, shape: type.shape,
        scalars: (0..<type.elementCount).map { _ in generator.uniform(-1, 1) })
    }
  }
  return result
}

/// Random dense values for a type: floats in [-2, 2), ints in [0, limit).
public func randomTensor(_ type: TensorType, seed: UInt64, intLimit: Int = 4) -> DenseTensor {
  var generator = SplitMix64(seed: seed)
  let count = type.elementCount
  if type.dtype == .i32 {
    return DenseTensor(
      dtype: .i32, shape: type.shape,
      scalars: (0..<count).map { _ in Double(Int(generator.next() % UInt64(intLimit))) })
  }
  return DenseTensor(
    dtype: .f32, shape: type.shape,
    scalars: (0..<count).map { _ in Double(Float(generator.nextUnit() * 4 - 2)) })
}

/// Random bytes for a storage-typed tensor with sane block scales (so no value is inf or NaN).
public func randomStorage(_ type: TensorType, seed: UInt64) throws -> HostTensor {
  var generator = SplitMix64(seed: seed)
  var bytes = (0..<type.byteCount).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
  func setHalf(_ offset: Int, _ value: Float) {
    let bits = halfFromFloat(value)
    bytes[offset] = UInt8(bits & 0xFF)
    bytes[offset + 1] = UInt8(bits >> 8)
  }
  let blocks = type.byteCount / type.dtype.blockBytes
  for block in 0..<blocks {
    let base = block * type.dtype.blockBytes
    let scale = Float(generator.nextUnit() * 0.05 + 0.001)
    switch type.dtype {
    case .f16: setHalf(base, Float(generator.nextUnit() * 2 - 1))
    case .bf16:
      let bits = bfloat16FromFloat(Float(generator.nextUnit() * 2 - 1))
      bytes[base] = UInt8(bits & 0xFF)
      bytes[base + 1] = UInt8(bits >> 8)
    case .q8_0: setHalf(base, scale)
    case .q4_1:
      setHalf(base, scale)
      setHalf(base + 2, -8 * scale)
    case .q4_k:
      setHalf(base, scale)
      setHalf(base + 2, scale)
    case .q6_k: setHalf(base + 208, scale)
    case .f32, .i32: break
    }
  }
  if type.dtype == .f32 {
    return HostTensor(
      shape: type.shape,
      floats: (0..<type.elementCount).map { _ in Float(generator.nextUnit() - 0.5) })
  }
  return try HostTensor(type: type, data: Data(bytes))
}

/// Random storage (`randomStorage`) for every constant of `graph`, seeded by `seed` plus its index.
public func randomWeights(_ graph: Graph, seed: UInt64) throws -> [String: HostTensor] {
  var weights: [String: HostTensor] = [:]
  for (offset, declaration) in graph.declarations.enumerated() where declaration.kind == .constant {
    let type = graph.type(of: declaration.value)
    weights[declaration.name] = try randomStorage(type, seed: seed &+ UInt64(offset))
  }
  return weights
}
