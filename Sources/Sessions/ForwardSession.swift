import Foundation
import IR
import Models
import Passes
import Runtime

/// A GGUF model compiled for one sequence length, optionally with a PEFT adapter applied: the
/// logits of every position of one sequence.
public struct ForwardSession {
  public let model: LlamaModel
  public let executable: Executable
  public let sequence: Int

  /// Traces a `[1, sequence]` forward graph of `model`, inserts the adapter's LoRA branches (bound
  /// to its weights) and compiles for `target`.
  public init(model: LlamaModel, sequence: Int, adapter: PEFTAdapter?, target: Target = .host)
    throws(SessionError)
  {
    self.model = model
    self.sequence = sequence
    executable = try compileAdapted(
      try wrapping { try model.trace(batch: 1, sequence: sequence) }, model: model,
      adapter: adapter, target: target)
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
    try wrapping {
      let outputs = try executable.run(inputs: [
        "tokens": HostTensor(shape: [1, tokens.count], ints: tokens),
        "positions": HostTensor(
          shape: [1, tokens.count], ints: (0..<tokens.count).map { Int32($0) }),
      ])
      return try HostTensor(
        type: TensorType(.f32, [tokens.count, model.config.vocabularySize]), data: outputs[0].data)
    }
  }
}
