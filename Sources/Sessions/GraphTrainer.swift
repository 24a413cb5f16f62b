import IR
import Passes
import Runtime

/// AdamW's settings.
public struct OptimizerSettings: Sendable, Hashable {
  public var learningRate: Double
  public var weightDecay: Double
  /// Gradients whose global L2 norm exceeds this are scaled down to it (nil: no clipping).
  public var maxGradientNorm: Double?

  public init(learningRate: Double, weightDecay: Double = 0, maxGradientNorm: Double? = nil) {
    self.learningRate = learningRate
    self.weightDecay = weightDecay
    self.maxGradientNorm = maxGradientNorm
  }
}

/// The trainable parameters of any differentiated graph, trained with AdamW: a compiled train step.
///
/// The graph returns its loss first and, last, one gradient per parameter in declaration order
/// (what the `autodiff` pass makes). `step` runs forward, backward and the update in one call.
public final class GraphTrainer {
  public let executable: Executable
  /// Trainable parameter names, in declaration order (the order of their gradients).
  public let parameters: [String]
  public let optimizer: AdamW

  /// Compiles a differentiated `graph` for `target` with `constants` bound by name.
  public convenience init(
    _ graph: Graph, constants: [String: HostTensor] = [:], optimizer settings: OptimizerSettings,
    target: Target = .host
  ) throws(SessionError) {
    let executable = try wrapping {
      try Executable(graph, constants: constants, target: target)
    }
    try self.init(executable, optimizer: settings)
  }

  /// Trains the parameters of an executable of a differentiated graph.
  public init(_ executable: Executable, optimizer settings: OptimizerSettings) throws(SessionError)
  {
    let graph = executable.graph
    let parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
    let first = graph.outputs.count - parameters.count
    guard !parameters.isEmpty, first >= 1 else {
      throw SessionError(
        "the graph has \(parameters.count) parameters and \(graph.outputs.count) outputs; "
          + "a train step returns its loss, then one gradient per parameter (run autodiff)")
    }
    self.executable = executable
    self.parameters = parameters
    optimizer = try wrapping {
      try AdamW(
        executable, parameters: parameters, gradientOutputs: Array(first..<graph.outputs.count),
        learningRate: settings.learningRate, weightDecay: settings.weightDecay,
        maxGradientNorm: settings.maxGradientNorm)
    }
  }

  /// Runs `pipeline` on the forward graph `forward` and compiles the result; constants the caller
  /// does not give take the values of the forward graph's initializers (a frozen random MLP, say).
  public convenience init(
    forward: Graph, pipeline: String, constants: [String: HostTensor] = [:],
    optimizer settings: OptimizerSettings, target: Target = .host
  ) throws(SessionError) {
    let graph = try wrapping { try parsePipeline(pipeline).run(forward) }
    var bound = constants
    for declaration in forward.declarations where bound[declaration.name] == nil {
      guard graph.declaration(named: declaration.name)?.kind == .constant,
        let initializer = declaration.initializer
      else { continue }
      bound[declaration.name] =
        initializer.values(
          for: forward.type(of: declaration.value), seed: declaration.seed ?? 0
        ).host
    }
    try self.init(graph, constants: bound, optimizer: settings, target: target)
  }

  /// Runs forward and backward on `inputs` and returns the loss; the gradients wait for
  /// `update()` (or are summed by `accumulate()` first).
  public func run(_ inputs: [String: HostTensor]) throws(SessionError) -> Float {
    try wrapping {
      for (name, tensor) in inputs { try executable.set(name, tensor) }
      try executable.execute()
    }
    return executable.output(0).floats()[0]
  }

  /// Puts saved parameters and their AdamW moments back (a resume); `file` names the saved state
  /// in errors.
  public func restore(
    parameters saved: [String: HostTensor], first: [String: [Float]], second: [String: [Float]],
    file: String
  ) throws(SessionError) {
    for name in parameters {
      guard let tensor = saved[name], let m = first[name], let v = second[name] else {
        throw SessionError("\(file): no tensor '\(name)'")
      }
      do {
        try executable.set(name, tensor)
        try optimizer.setMoments(of: name, first: m, second: v)
      } catch {
        throw SessionError("\(file): \(error.message)")
      }
    }
  }

  /// Adds the last run's gradients to the running sum (gradient accumulation).
  public func accumulate() { optimizer.accumulate() }

  /// One AdamW update from the last run's gradients (or their accumulated mean); returns the
  /// gradients' global norm before clipping.
  @discardableResult
  public func update() -> Double { optimizer.update() }

  /// One train step: forward, backward and the update; returns the loss before the update.
  @discardableResult
  public func step(_ inputs: [String: HostTensor]) throws(SessionError) -> Float {
    let loss = try run(inputs)
    update()
    return loss
  }

  /// The graph's outputs for `inputs` (loss, then the forward outputs, then the gradients), with
  /// no update.
  public func outputs(_ inputs: [String: HostTensor]) throws(SessionError) -> [HostTensor] {
    try wrapping { try executable.run(inputs: inputs) }
  }
}
