import IR
import Models
import Passes
import Runtime

extension PEFTAdapter {
  /// Reads the PEFT adapter folder at `path` for `model`, ending the command on a bad one.
  static func load(_ path: String, for model: LlamaModel) -> PEFTAdapter {
    do {
      return try PEFTAdapter(directory: path, config: model.config)
    } catch {
      fail(error.message)
    }
  }

  /// The `lora` pass that inserts this adapter's branches: its targets, rank, alpha and scaling.
  func loraPass() throws(PassError) -> Lora {
    let selector = try NameSelector(parsing: "{" + targets.joined(separator: ",") + "}")
    return Lora(rank: rank, alpha: alpha, targets: selector, rsLoRA: useRSLoRA)
  }
}

/// Compiles a traced graph for inference with the adapter's branches, fused.
///
/// The adapter's `lora` pass (when there is one), `fuse`, then `finish` (for instance `decode`);
/// binds the model's weights and the adapter's values. Executables made with one `packedForms`
/// share the packed forms of the weights.
func compileAdapted(
  _ traced: Graph, model: LlamaModel, adapter: PEFTAdapter?, packedForms: PackedForms? = nil,
  target: Target = .host, finish: (Graph) throws -> Graph = { $0 }
) throws -> Executable {
  var graph = traced
  if let adapter { graph = try adapter.loraPass().run(graph).compacted() }
  graph = try finish(try Fuse().run(graph).compacted())
  let executable = try Executable(
    graph, constants: try model.weights(for: graph), packedForms: packedForms, target: target)
  for (name, tensor) in adapter?.tensors ?? [:] { try executable.set(name, tensor) }
  return executable
}
