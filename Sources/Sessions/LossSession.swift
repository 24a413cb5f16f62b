import Foundation
import IR
import Models
import Passes
import Runtime

/// The model's loss graph compiled forward-only, optionally through a PEFT adapter: the masked
/// next-token cross-entropy training minimises, for scoring held-out examples.
public struct LossSession {
  public let executable: Executable
  public let batch: Int
  public let sequence: Int

  public init(
    model: LlamaModel, adapter: PEFTAdapter?, batch: Int, sequence: Int, target: Target = .host
  ) throws(SessionError) {
    self.batch = batch
    self.sequence = sequence
    executable = try compileAdapted(
      try wrapping { try model.trace(batch: batch, sequence: sequence, loss: true) }, model: model,
      adapter: adapter, target: target)
  }

  /// Sets the factor on the adapter's branches (1: as trained, 0: the base model).
  public func setAdapterScale(_ scale: Float) throws(SessionError) {
    try Sessions.setAdapterScale(scale, of: executable)
  }

  /// The summed negative log-likelihood of the weighted next tokens of `examples` and the sum of
  /// their weights (examples longer than `sequence + 1` tokens are cut, as in training).
  public func score(_ examples: [TrainingExample]) throws(SessionError) -> (
    total: Double, count: Double
  ) {
    var total = 0.0
    var count = 0.0
    var start = 0
    while start < examples.count {
      var rows = Array(examples[start..<min(start + batch, examples.count)])
      start += batch
      // A short last batch is filled with rows of weight 0.
      while rows.count < batch { rows.append(TrainingExample(ids: [0, 0], weights: [0])) }
      let packed = PackedBatch(rows, sequence: sequence)
      let weight = packed.weights.map(Double.init).reduce(0, +)
      let outputs = try wrapping { try executable.run(inputs: packed.inputs) }
      // The graph's loss is the batch's weighted mean.
      total += Double(outputs[0].floats()[0]) * weight
      count += weight
    }
    return (total, count)
  }
}

/// Rows of token ids, next-token targets and loss weights for a batch of examples, each cut or
/// padded (with token 0 and weight 0) to `sequence` positions: the inputs of a loss graph.
public struct PackedBatch {
  public var rows: Int
  public var sequence: Int
  public var tokens: [Int32] = []
  public var targets: [Int32] = []
  public var weights: [Float] = []

  public init(_ examples: [TrainingExample], sequence: Int) {
    rows = examples.count
    self.sequence = sequence
    for example in examples {
      let ids = Array(example.ids.prefix(sequence + 1))
      let padded = ids + [Int32](repeating: 0, count: sequence + 1 - ids.count)
      tokens += padded.prefix(sequence)
      targets += padded.dropFirst()
      let w = Array(example.weights.prefix(ids.count - 1))
      weights += w + [Float](repeating: 0, count: sequence - w.count)
    }
  }

  /// The loss graph's inputs: tokens, positions (0 ..< sequence in each row), targets, weights.
  public var inputs: [String: HostTensor] {
    let shape = [rows, sequence]
    return [
      "tokens": HostTensor(shape: shape, ints: tokens),
      "positions": HostTensor(
        shape: shape, ints: (0..<(rows * sequence)).map { Int32($0 % sequence) }),
      "targets": HostTensor(shape: shape, ints: targets),
      "weights": HostTensor(shape: shape, floats: weights),
    ]
  }
}
