import CKernels
import Foundation
import IR
import Runtime
import TestSupport
import Testing

/// How a difference is scaled: by each element's magnitude, or by the tensor's largest one (for
/// sums and products, whose rounding error grows with the terms, not with the result).
enum Scale { case element, tensor }

/// The serialized suite every runtime test belongs to: OpenMP and OpenBLAS settings are process-
/// wide, so runtime tests do not run concurrently.
@Suite(.serialized) struct RuntimeSuite {}

/// Runs `graph` with the executable and with the f32 reference interpreter on the same random
/// inputs and returns the largest difference over all outputs, relative to `1 + |reference|`
/// (per element, or the largest |reference| of the tensor).
///
/// With `bf16Inputs` the random f32 inputs are bf16 values, which the packed bf16 products round
/// to themselves: their results then differ from the interpreter's by f32 summation order only.
func compareWithInterpreter(
  _ graph: Graph, seed: UInt64 = 1, intLimit: Int = 4, constants: [String: HostTensor] = [:],
  scale: Scale = .element, bf16Inputs: Bool = false, target: Target = .host
) throws -> Double {
  var bindings: [String: DenseTensor] = [:]
  var hostInputs: [String: HostTensor] = [:]
  for (offset, input) in graph.inputs.enumerated() {
    var value = randomTensor(
      graph.type(of: input.value), seed: seed &+ UInt64(offset), intLimit: intLimit)
    if bf16Inputs && value.dtype == .f32 {
      value = DenseTensor(
        dtype: .f32, shape: value.shape,
        scalars: value.scalars.map { Double(floatFromBFloat16(bfloat16FromFloat(Float($0)))) })
    }
    bindings[input.name] = value
    hostInputs[input.name] = value.host
  }
  for (name, tensor) in constants { bindings[name] = DenseTensor(tensor) }
  let expected = try Interpreter(precision: .f32).run(graph, bindings: bindings)
  let executable = try Executable(graph, constants: constants, target: target)
  let actual = try executable.run(inputs: hostInputs)
  var worst = 0.0
  for (reference, result) in zip(expected, actual) {
    #expect(result.type == reference.type)
    let values = DenseTensor(result).scalars
    let largest = reference.scalars.map(abs).filter(\.isFinite).max() ?? 0
    for (a, b) in zip(values, reference.scalars) {
      if a.isNaN && b.isNaN { continue }
      if a == b { continue }
      worst = max(worst, abs(a - b) / (1 + (scale == .element ? abs(b) : largest)))
    }
  }
  return worst
}

/// y = W x for a storage-typed W [n, k] through the fast or the reference kernel.
func matvec(_ dtype: DType, _ weight: HostTensor, _ x: [Float], reference: Bool) -> [Float] {
  let n = weight.type.shape[0]
  let k = weight.type.shape[1]
  var y = [Float](repeating: 0, count: n)
  let code = dtype.kernelCode
  weight.data.withUnsafeBytes { w in
    x.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        if reference {
          lc_matvec_quantized_reference(
            code, ys.baseAddress, xs.baseAddress, w.baseAddress, Int64(n), Int64(k))
        } else {
          lc_matvec_quantized(
            code, ys.baseAddress, xs.baseAddress, w.baseAddress, Int64(n), Int64(k))
        }
      }
    }
  }
  return y
}

/// `lora_linear(x, w, a, b)` with x [m, k], a constant w of `dtype` ([n, k] with
/// `transposeW`, else [k, n]), a [k, r] and b [r, n] as inputs.
func loraLinearGraph(m: Int, n: Int, k: Int, r: Int, dtype: DType, transposeW: Bool) throws
  -> Graph
{
  let b = GraphBuilder(name: "lora")
  let x = try b.input(name: "x", shape: [m, k])
  let w = try b.constant(name: "w", shape: transposeW ? [n, k] : [k, n], dtype: dtype)
  let a = try b.input(name: "a", shape: [k, r])
  let bb = try b.input(name: "b", shape: [r, n])
  let results = try b.emit(
    .loraLinear(scale: 1.75, transposeW: transposeW),
    [.value(x.value), .value(w.value), .value(a.value), .value(bb.value)])
  return try b.finish(outputs: results)
}
