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
  /// Learning rates that replace `learningRate` for the parameters named here (PyTorch's parameter
  /// groups: RLHF steps the adapter and the value head at two rates).
  public var parameterLearningRates: [String: Double] = [:]
  /// Steps taken so far (the bias corrections use it); set it when restoring a saved state.
  public var step = 0
  /// The optimized parameters' names, in the order given at init.
  public let parameters: [String]
  /// Gradients summed by `accumulate()` since the last update.
  public private(set) var accumulated = 0

  private let executable: Executable
  private let tensors: [(parameter: UnsafeMutablePointer<Float>, gradient: Int, count: Int)]
  private let moments: UnsafeMutablePointer<Float>
  /// The running sum of `accumulate()`d gradients, laid out like the parameters (made on first use).
  private var sums: UnsafeMutablePointer<Float>?

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
    self.parameters = parameters
    self.tensors = tensors
    self.learningRate = learningRate
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.weightDecay = weightDecay
    self.maxGradientNorm = maxGradientNorm
  }

  deinit {
    moments.deallocate()
    sums?.deallocate()
  }

  /// The global L2 norm of the gradients of the last run.
  public func gradientNorm() -> Double {
    var total = 0.0
    for tensor in tensors {
      let gradient = executable.outputAddress(tensor.gradient).assumingMemoryBound(to: Float.self)
      total += lc_sum_squares_f32(gradient, Int64(tensor.count))
    }
    return total.squareRoot()
  }

  /// Adds the gradients of the last run to a running sum (gradient accumulation): after `n` calls
  /// `update()` steps with the sum's mean, `1/n` of it, instead of the last run's gradients.
  public func accumulate() {
    let total = tensors.map(\.count).reduce(0, +)
    let sums = self.sums ?? .allocate(capacity: max(total, 1))
    self.sums = sums
    var offset = 0
    for tensor in tensors {
      let gradient = executable.outputAddress(tensor.gradient).assumingMemoryBound(to: Float.self)
      if accumulated == 0 {
        (sums + offset).update(from: gradient, count: tensor.count)
      } else {
        lc_accumulate_f32(sums + offset, gradient, Int64(tensor.count))
      }
      offset += tensor.count
    }
    accumulated += 1
  }

  /// Lets `reduce` combine the running sum in place; it then stands for `count` gradients.
  ///
  /// A data-parallel run sums it across its ranks (`reduce` gets the buffer and its float count);
  /// the next `update()` applies the mean over `count`. Needs at least one `accumulate()` first.
  public func reduceSums<E: Error>(
    count: Int, _ reduce: (UnsafeMutablePointer<Float>, Int) throws(E) -> Void
  ) throws(E) {
    guard accumulated > 0, let sums else { return }
    try reduce(sums, tensors.map(\.count).reduce(0, +))
    accumulated = count
  }

  /// Applies one update and returns the gradients' global norm before clipping (computed once,
  /// for clipping and for logs).
  ///
  /// The gradients are the mean of those `accumulate()` summed since the last update, or, with
  /// none summed, the ones the executable computed last. Clipping acts on that mean.
  @discardableResult
  public func update() -> Double {
    step += 1
    var gradients: [UnsafePointer<Float>] = []
    var mean = 1.0
    if accumulated > 0, let sums {
      var offset = 0
      for tensor in tensors {
        gradients.append(UnsafePointer(sums + offset))
        offset += tensor.count
      }
      mean = 1 / Double(accumulated)
    } else {
      gradients = tensors.map {
        executable.outputAddress($0.gradient).assumingMemoryBound(to: Float.self)
      }
    }
    var total = 0.0
    for (tensor, gradient) in zip(tensors, gradients) {
      total += lc_sum_squares_f32(gradient, Int64(tensor.count))
    }
    let norm = total.squareRoot() * mean
    var scale = 1.0
    if let maxGradientNorm, norm > maxGradientNorm { scale = maxGradientNorm / (norm + 1e-6) }
    let correction1 = Float(1 - pow(beta1, Double(step)))
    let correction2 = Float(1 - pow(beta2, Double(step)))
    var offset = 0
    for (index, (tensor, gradient)) in zip(tensors, gradients).enumerated() {
      let rate = parameterLearningRates[parameters[index]] ?? learningRate
      lc_adamw_f32(
        tensor.parameter, gradient, moments + offset, moments + offset + tensor.count,
        Int64(tensor.count), Float(rate), Float(beta1), Float(beta2), Float(epsilon),
        Float(weightDecay), correction1, correction2, Float(scale * mean))
      offset += 2 * tensor.count
    }
    accumulated = 0
    return norm
  }

  // MARK: - Saving and restoring

  /// Copies of the first and second moments of the parameter called `name`, or nil for a name
  /// this optimizer does not update.
  public func moments(of name: String) -> (first: [Float], second: [Float])? {
    guard let (offset, count) = location(of: name) else { return nil }
    let first = Array(UnsafeBufferPointer(start: moments + offset, count: count))
    let second = Array(UnsafeBufferPointer(start: moments + offset + count, count: count))
    return (first, second)
  }

  /// Replaces the moments of the parameter called `name` (restoring a saved state together with
  /// `step`); the arrays must have the parameter's element count.
  public func setMoments(of name: String, first: [Float], second: [Float]) throws(RuntimeError) {
    guard let (offset, count) = location(of: name) else {
      throw RuntimeError(message: "adamw: no parameter named '\(name)'")
    }
    guard first.count == count, second.count == count else {
      throw RuntimeError(
        message:
          "adamw: '\(name)' has \(count) elements but the moments have \(first.count) and \(second.count)"
      )
    }
    (moments + offset).update(from: first, count: count)
    (moments + offset + count).update(from: second, count: count)
  }

  /// The offset of a parameter's first moment in `moments` and its element count.
  private func location(of name: String) -> (offset: Int, count: Int)? {
    guard let index = parameters.firstIndex(of: name) else { return nil }
    let offset = tensors[..<index].map { 2 * $0.count }.reduce(0, +)
    return (offset, tensors[index].count)
  }
}
