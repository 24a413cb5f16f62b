import Foundation
import IR
import Models
import Passes
import Runtime

/// A GGUF model's loss graph with LoRA branches, differentiated and compiled: the train step the
/// training commands run.
struct TrainingSession {
  let model: LlamaModel
  let executable: Executable
  /// Trainable parameter names, in the order of their gradients among the outputs (from 1).
  let parameters: [String]
  let batch: Int
  let sequence: Int

  /// Builds `lora,freeze,fuse,autodiff,dce` for the adapter's targets, rank and alpha, and binds the
  /// adapter's weights.
  init(
    modelPath: String, adapter adapterPath: String, batch: Int, sequence: Int, printIRAfter: String?
  ) {
    do {
      model = try LlamaModel(path: modelPath)
    } catch {
      fail(error.message)
    }
    self.batch = batch
    self.sequence = sequence
    let adapter: PEFTAdapter
    do {
      adapter = try PEFTAdapter(directory: adapterPath, config: model.config)
    } catch {
      fail(error.message)
    }
    do {
      let forward = try model.trace(batch: batch, sequence: sequence, loss: true)
      let targets = "{" + adapter.targets.joined(separator: ",") + "}"
      let pipeline = try Pipeline(
        parsing:
          "lora{rank=\(adapter.rank),alpha=\(adapter.alpha),rslora=\(adapter.useRSLoRA),targets=\(targets)},"
          + "freeze,fuse,autodiff{loss=loss},fuse{elementwise=true},dce")
      let printAfter = checkedPrintAfter(
        printIRAfter, option: "--print-ir-after", pipeline: pipeline)
      // Pass timings and IR go to stderr, and only when asked for.
      let graph = try pipeline.run(forward, printAfter: printAfter) { line in
        if printIRAfter != nil { FileHandle.standardError.write(Data((line + "\n").utf8)) }
      }
      executable = try Executable(graph, constants: try model.weights(for: graph))
      parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
      for (name, tensor) in adapter.tensors { try executable.set(name, tensor) }
    } catch {
      fail("\(error)")
    }
  }

  /// Runs forward and backward; returns the loss.
  func run(tokens: [Int32], targets: [Int32], weights: [Float]) -> Float {
    let shape = [batch, sequence]
    let positions = (0..<(batch * sequence)).map { Int32($0 % sequence) }
    do {
      let outputs = try executable.run(inputs: [
        "tokens": HostTensor(shape: shape, ints: tokens),
        "positions": HostTensor(shape: shape, ints: positions),
        "targets": HostTensor(shape: shape, ints: targets),
        "weights": HostTensor(shape: shape, floats: weights),
      ])
      return outputs[0].floats()[0]
    } catch {
      fail("\(error)")
    }
  }

  /// The gradients of the last run, by parameter name.
  func gradients() -> [String: HostTensor] {
    var result: [String: HostTensor] = [:]
    for (index, name) in parameters.enumerated() { result[name] = executable.output(1 + index) }
    return result
  }
}
