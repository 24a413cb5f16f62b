import IR
import Models
import Passes
import Runtime

/// The pipelines the sessions compile with, each written once.
public enum Pipelines {
  /// The passes of a train step after `lora` and `freeze`: fuse the forward, differentiate the
  /// loss, fuse the elementwise chains of the backward, drop what is dead.
  public static let trainingPasses = "fuse,autodiff{loss=loss},fuse{elementwise=true},dce"

  /// A train step's pipeline: `lora{...},freeze,` then `passes`.
  ///
  /// The `lora` options are written as given: `seed`, `rslora` and `per_head` only when they are
  /// set.
  public static func training(
    rank: Int, alpha: Double, targets: String, seed: UInt64? = nil, rsLoRA: Bool? = nil,
    perHead: Bool? = nil, passes: String = trainingPasses
  ) -> String {
    var options = ["rank=\(rank)", "alpha=\(alpha)"]
    if let rsLoRA { options.append("rslora=\(rsLoRA)") }
    if let perHead { options.append("per_head=\(perHead)") }
    options.append("targets=\(targets)")
    if let seed { options.append("seed=\(seed)") }
    return "lora{" + options.joined(separator: ",") + "},freeze," + passes
  }
}

/// Sets the run-time factor on the LoRA branches of `executable` (1: as trained, 0: the base model
/// bit for bit, from the same executable); a graph without LoRA branches has no such switch, which
/// is an error rather than a silently ignored scale.
func setAdapterScale(_ scale: Float, of executable: Executable) throws(SessionError) {
  try checkAdapterScale(scale)
  if scale != 1 && !executable.hasAdapterSwitch {
    throw SessionError("--adapter-scale: the graph has no LoRA branch to scale")
  }
  executable.adapterScale = scale
}

/// A run-time adapter scale must be a finite number.
func checkAdapterScale(_ scale: Float) throws(SessionError) {
  guard scale.isFinite else { throw SessionError("--adapter-scale must be finite, got \(scale)") }
}

/// Compiles a traced graph for inference with the adapter's branches, fused.
///
/// The adapter's `lora` pass (when there is one), the `hooks` passes (captures and edits), `fuse`,
/// then `finish` (for instance `decode`); plans the kernels for `target` and binds the model's
/// weights and the adapter's values. Executables made with one `packedForms` share the packed
/// forms of the weights.
func compileAdapted(
  _ traced: Graph, model: LlamaModel, adapter: PEFTAdapter?, hooks: [any Pass] = [],
  packedForms: PackedForms? = nil, target: Target, finish: (Graph) throws -> Graph = { $0 }
) throws(SessionError) -> Executable {
  try wrapping {
    var graph = traced
    if let adapter { graph = try adapter.loraPass().run(graph).compacted() }
    for pass in hooks { graph = try pass.run(graph) }
    graph = try finish(try Fuse().run(graph).compacted())
    let executable = try Executable(
      graph, constants: try model.weights(for: graph), packedForms: packedForms, target: target)
    for (name, tensor) in adapter?.tensors ?? [:] { try executable.set(name, tensor) }
    return executable
  }
}
