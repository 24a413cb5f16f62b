import Foundation
import IR
import Models
import Passes
import Runtime

/// A GGUF model compiled for one sequence length, optionally with a PEFT adapter applied: the
/// place where Models, Passes and Runtime meet for the commands that run the model forward.
struct ForwardSession {
  let model: LlamaModel
  let executable: Executable
  let sequence: Int

  /// Loads a model, traces a `[1, sequence]` forward graph, applies an adapter, and compiles.
  ///
  /// The adapter's LoRA branches are inserted and bound to its weights. Failures end the command
  /// with a clear message.
  init(modelPath: String, sequence: Int, adapter adapterPath: String?) {
    do {
      model = try LlamaModel(path: modelPath)
    } catch {
      fail(error.message)
    }
    self.sequence = sequence
    var adapter: PEFTAdapter?
    if let adapterPath { adapter = PEFTAdapter.load(adapterPath, for: model) }
    do {
      executable = try compileAdapted(
        try model.trace(batch: 1, sequence: sequence), model: model, adapter: adapter)
    } catch {
      fail("\(error)")
    }
  }

  /// Logits [sequence, vocab] for `tokens` at positions 0, 1, ...
  func logits(_ tokens: [Int32]) -> HostTensor {
    do {
      let outputs = try executable.run(inputs: [
        "tokens": HostTensor(shape: [1, tokens.count], ints: tokens),
        "positions": HostTensor(
          shape: [1, tokens.count], ints: (0..<tokens.count).map { Int32($0) }),
      ])
      return try HostTensor(
        type: TensorType(.f32, [tokens.count, model.config.vocabularySize]), data: outputs[0].data)
    } catch {
      fail("\(error)")
    }
  }
}
