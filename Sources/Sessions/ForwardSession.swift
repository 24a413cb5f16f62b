import Foundation
import IR
import Models
import Passes
import Runtime

/// A GGUF model compiled for one sequence length, optionally with a PEFT adapter applied and with
/// hooks (captures, patches, steering vectors, ablations): the logits of every position of one
/// sequence, and the captured values.
public struct ForwardSession {
  public let model: LlamaModel
  public let executable: Executable
  public let sequence: Int
  private let hooks: BoundHooks?

  /// Traces a `[1, sequence]` forward graph of `model`, inserts the adapter's LoRA branches (bound
  /// to its weights) and the hooks, and compiles for `target`.
  public init(
    model: LlamaModel, sequence: Int, adapter: PEFTAdapter?, hooks: Hooks = Hooks(),
    target: Target = .host
  ) throws(SessionError) {
    self.model = model
    self.sequence = sequence
    let bound =
      hooks.isEmpty
      ? nil
      : try BoundHooks(
        hooks, points: try model.hookPoints(), positions: sequence, sequence: sequence)
    self.hooks = bound
    executable = try compileAdapted(
      try wrapping { try model.trace(batch: 1, sequence: sequence) }, model: model,
      adapter: adapter, hooks: bound?.passes ?? [], target: target)
  }

  /// The factor on the adapter's branches (1 by default; 0 gives the base model bit for bit);
  /// changing it recompiles nothing.
  public var adapterScale: Float { executable.adapterScale }

  /// Sets `adapterScale`.
  public func setAdapterScale(_ scale: Float) throws(SessionError) {
    try Sessions.setAdapterScale(scale, of: executable)
  }

  /// Logits [sequence, vocab] for `tokens` at positions 0, 1, ...
  public func logits(_ tokens: [Int32]) throws(SessionError) -> HostTensor {
    try run(tokens).logits
  }

  /// Logits [sequence, vocab] for `tokens`, and each captured value as `[1, sequence, ...]`
  /// under its name, in graph order.
  public func run(_ tokens: [Int32]) throws(SessionError) -> (
    logits: HostTensor, captures: [(name: String, tensor: HostTensor)]
  ) {
    try hooks?.feed(executable, start: 0, count: tokens.count)
    let logits = try wrapping {
      let outputs = try executable.run(inputs: [
        "tokens": HostTensor(shape: [1, tokens.count], ints: tokens),
        "positions": HostTensor(
          shape: [1, tokens.count], ints: (0..<tokens.count).map { Int32($0) }),
      ])
      return try HostTensor(
        type: TensorType(.f32, [tokens.count, model.config.vocabularySize]), data: outputs[0].data)
    }
    guard let hooks else { return (logits, []) }
    return (logits, zip(hooks.captured, hooks.captures(of: executable)).map { ($0.name, $1) })
  }
}
