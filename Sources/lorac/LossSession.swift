import Foundation
import IR
import Models
import Passes
import Runtime

/// The model's loss graph compiled forward-only, optionally through a PEFT adapter: the masked
/// next-token cross-entropy `lorac train` minimises, for scoring held-out examples.
struct LossSession {
  let executable: Executable
  let batch: Int
  let sequence: Int

  init(modelPath: String, adapter adapterPath: String?, batch: Int, sequence: Int) {
    let model: LlamaModel
    do {
      model = try LlamaModel(path: modelPath)
    } catch {
      fail(error.message)
    }
    self.batch = batch
    self.sequence = sequence
    var adapter: PEFTAdapter?
    if let adapterPath { adapter = PEFTAdapter.load(adapterPath, for: model) }
    do {
      executable = try compileAdapted(
        try model.trace(batch: batch, sequence: sequence, loss: true), model: model,
        adapter: adapter)
    } catch {
      fail("\(error)")
    }
  }

  /// The summed negative log-likelihood of the weighted next tokens of `examples` and the sum of
  /// their weights (examples longer than `sequence + 1` tokens are cut, as in training).
  func score(_ examples: [TrainingExample]) -> (total: Double, count: Double) {
    var total = 0.0
    var count = 0.0
    let positions = (0..<(batch * sequence)).map { Int32($0 % sequence) }
    var start = 0
    while start < examples.count {
      var rows = Array(examples[start..<min(start + batch, examples.count)])
      start += batch
      // A short last batch is filled with rows of weight 0.
      while rows.count < batch { rows.append(TrainingExample(ids: [0, 0], weights: [0])) }
      let packed = packBatch(rows, sequence: sequence)
      let weight = packed.weights.map(Double.init).reduce(0, +)
      do {
        let outputs = try executable.run(inputs: [
          "tokens": HostTensor(shape: [batch, sequence], ints: packed.tokens),
          "positions": HostTensor(shape: [batch, sequence], ints: positions),
          "targets": HostTensor(shape: [batch, sequence], ints: packed.targets),
          "weights": HostTensor(shape: [batch, sequence], floats: packed.weights),
        ])
        // The graph's loss is the batch's weighted mean.
        total += Double(outputs[0].floats()[0]) * weight
        count += weight
      } catch {
        fail("\(error)")
      }
    }
    return (total, count)
  }
}
