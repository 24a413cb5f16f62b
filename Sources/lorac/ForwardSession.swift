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
    do {
      var graph = try model.trace(batch: 1, sequence: sequence)
      var adapterWeights: [String: HostTensor] = [:]
      if let adapterPath {
        let adapter: PEFTAdapter
        do {
          adapter = try PEFTAdapter(directory: adapterPath, config: model.config)
        } catch {
          fail(error.message)
        }
        let selector = try NameSelector(parsing: "{" + adapter.targets.joined(separator: ",") + "}")
        let lora = Lora(
          rank: adapter.rank, alpha: adapter.alpha, targets: selector, rsLoRA: adapter.useRSLoRA)
        graph = try lora.run(graph).compacted()
        adapterWeights = adapter.tensors
      }
      graph = try Fuse().run(graph).compacted()
      executable = try Executable(graph, constants: try model.weights(for: graph))
      for (name, tensor) in adapterWeights { try executable.set(name, tensor) }
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
