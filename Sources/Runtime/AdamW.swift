import CKernels
import Foundation
import IR

/// AdamW over an executable's trainable parameters, reading their gradients from its outputs.
///
/// PyTorch's formulation: decoupled weight decay, bias correction, optional clipping of the
/// gradients' global norm. With `weightDecay = 0` it is Adam. The moments live here, one pair of
/// buffers per parameter; `step()` allocates nothing.
public final class AdamW {
  public var learningRate: Double
  public var beta1: Double
  public var beta2: Double
  public var epsilon: Double
  public var weightDecay: Double
  /// Gradients whose global L2 norm exceeds this are scaled down to it (nil: no clipping).
  public var maxGradientNorm: Double?
  /// Steps taken so far.
  public private(set) var step = 0

  private let executable: Executable
  private let tensors: [(parameter: UnsafeMutablePointer<Float>, gradient: Int, count: Int)]
  private let moments: UnsafeMutablePointer<Float>

  /// Optimizes `parameters` (by name), whose gradients are the executable's outputs at
  /// `gradientOutputs` (same order).
  public init(
    _ executable: Executable, parameters: [String], gradientOutputs: [Int],
    learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8,
    weightDecay: Double = 0, maxGradientNorm: Double? = nil
  ) throws(RuntimeError) {
    guard parameters.count == gradientOutputs.count else {
      throw RuntimeError(
        message: "adamw: \(parameters.count) parameters but \(gradientOutputs.count) gradients")
    }
    var tensors: [(UnsafeMutablePointer<Float>, Int, Int)] = []
    for (name, output) in zip(parameters, gradientOutputs) {
      let (value, address) = try executable.parameterStorage(name)
      let type = executable.graph.type(of: value)
      let gradientType = executable.graph.type(of: executable.graph.outputs[output])
      guard type == gradientType, type.dtype == .f32 else {
        throw RuntimeError(
          message: "adamw: '\(name)' is \(type) but its gradient is \(gradientType)")
      }
      tensors.append((address.assumingMemoryBound(to: Float.self), output, type.elementCount))
    }
    let total = tensors.map(\.2).reduce(0, +)
    moments = .allocate(capacity: max(2 * total, 1))
    moments.initialize(repeating: 0, count: max(2 * total, 1))
    self.executable = executable
    self.tensors = tensors
    self.learningRate = learningRate
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.weightDecay = weightDecay
    self.maxGradientNorm = maxGradientNorm
  }

  deinit { moments.deallocate() }

  /// The global L2 norm of the gradients of the last run.
  public func gradientNorm() -> Double {
    var total = 0.0
    for tensor in tensors {
      let gradient = executable.outputAddress(tensor.gradient).assumingMemoryBound(to: Float.self)
      total += lc_sum_squares_f32(gradient, Int64(tensor.count))
    }
    return total.squareRoot()
  }

  /// Applies one update from the gradients the executable computed last, and returns their
  /// global norm before clipping (computed once, for clipping and for logs).
  @discardableResult
  public func update() -> Double {
    step += 1
    let norm = gradientNorm()
    var scale = 1.0
    if let maxGradientNorm, norm > maxGradientNorm { scale = maxGradientNorm / (norm + 1e-6) }
    let correction1 = Float(1 - pow(beta1, Double(step)))
    let correction2 = Float(1 - pow(beta2, Double(step)))
    var offset = 0
    for tensor in tensors {
      let gradient = executable.outputAddress(tensor.gradient).assumingMemoryBound(to: Float.self)
      lc_adamw_f32(
        tensor.parameter, gradient, moments + offset, moments + offset + tensor.count,
        Int64(tensor.count), Float(learningRate), Float(beta1), Float(beta2), Float(epsilon),
        Float(weightDecay), correction1, correction2, Float(scale))
      offset += 2 * tensor.count
    }
    return norm
  }
}
