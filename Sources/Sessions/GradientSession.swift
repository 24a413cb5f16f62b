import Foundation
import IR
import Models
import Passes
import Runtime

/// A GGUF model's loss graph with a PEFT adapter's LoRA branches, differentiated and compiled:
/// the loss of a batch and its gradient for every adapter tensor.
public struct GradientSession {
  public let model: LlamaModel
  public let executable: Executable
  /// Trainable parameter names, in the order of their gradients among the outputs (from 1).
  public let parameters: [String]
  public let batch: Int
  public let sequence: Int

  /// Builds the training pipeline for the adapter's targets, rank and alpha, and binds the
  /// adapter's weights.
  ///
  /// `printAfter` names the passes whose IR goes to `log` (with every pass's time); a pass name
  /// that is not in the pipeline is an error naming `printOption`.
  public init(
    model: LlamaModel, adapter: PEFTAdapter, batch: Int, sequence: Int,
    printAfter: String? = nil, printOption: String = "--print-ir-after",
    log: (String) -> Void = { _ in }, target: Target = .host
  ) throws(SessionError) {
    self.model = model
    self.batch = batch
    self.sequence = sequence
    let targets = "{" + adapter.targets.joined(separator: ",") + "}"
    let pipeline = try parsePipeline(
      Pipelines.training(
        rank: adapter.rank, alpha: adapter.alpha, targets: targets, rsLoRA: adapter.useRSLoRA,
        perHead: adapter.perHead ? true : nil))
    let selected = try printSelection(printAfter, option: printOption, pipeline: pipeline)
    (executable, parameters) = try wrapping {
      let forward = try model.trace(batch: batch, sequence: sequence, loss: true)
      // Pass timings and IR go to the log, and only when asked for.
      let graph = try pipeline.run(forward, printAfter: selected) { line in
        if printAfter != nil { log(line) }
      }
      let executable = try Executable(
        graph, constants: try model.weights(for: graph), target: target)
      for (name, tensor) in adapter.tensors { try executable.set(name, tensor) }
      return (executable, graph.declarations.filter { $0.kind == .parameter }.map(\.name))
    }
  }

  /// Runs forward and backward on a packed batch; returns the loss.
  public func run(_ batch: PackedBatch) throws(SessionError) -> Float {
    try wrapping { try executable.run(inputs: batch.inputs)[0].floats()[0] }
  }

  /// The gradients of the last run, by parameter name.
  public func gradients() -> [String: HostTensor] {
    var result: [String: HostTensor] = [:]
    for (index, name) in parameters.enumerated() { result[name] = executable.output(1 + index) }
    return result
  }
}

/// Parses pipeline text, keeping the parser's message.
public func parsePipeline(_ text: String) throws(SessionError) -> Pipeline {
  do {
    return try Pipeline(parsing: text)
  } catch {
    throw SessionError(error.message)
  }
}

/// The pass names of pipeline text, in order: `lora{rank=4},fuse` -> `[lora, fuse]`.
public func passNames(_ pipeline: String) -> [String] {
  var names: [String] = []
  var current = ""
  var depth = 0
  for character in pipeline + "," {
    switch character {
    case "{":
      if depth == 0 { names.append(current) }
      depth += 1
    case "}": depth -= 1
    case "," where depth == 0:
      if !current.isEmpty && names.last != current { names.append(current) }
      current = ""
    default:
      if depth == 0 { current.append(character) }
    }
  }
  return names.map { $0.trimmingCharacters(in: .whitespaces) }
}

/// What `value` (comma-separated pass names, or all; given with `option`) asks `pipeline` to
/// print; a name that is not a pass of the pipeline is an error (it would print nothing, silently).
public func printSelection(_ value: String?, option: String, pipeline: Pipeline)
  throws(SessionError) -> Pipeline.PrintAfter
{
  guard let value else { return .none }
  if value == "all" { return .all }
  var names: [String] = []
  for name in passNames(pipeline.description) where !names.contains(name) { names.append(name) }
  let asked = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
  for name in asked where !names.contains(name) {
    throw SessionError(
      "\(option): '\(name)' is not a pass of the pipeline '\(pipeline)' (give one of "
        + "\(names.joined(separator: ", ")), or all)")
  }
  return .passes(Set(asked))
}
