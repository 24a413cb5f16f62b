import Foundation
import IR
import Models
import Passes
import Runtime

extension LlamaModel {
  /// The longest sequence the model is made for: `ARCH.context_length` in the GGUF (8192 when the
  /// file does not say, SmolLM2's).
  public var contextLength: Int {
    let architecture = file["general.architecture"]?.string ?? "llama"
    guard let length = file["\(architecture).context_length"]?.integer, length > 0 else {
      return 8192
    }
    return length
  }

  /// Opens the GGUF model at `path`.
  public static func open(_ path: String) throws(SessionError) -> LlamaModel {
    do {
      return try LlamaModel(path: path)
    } catch {
      throw SessionError(error.message)
    }
  }

  /// Checks that `tokens` (given with `option`) hold no id outside the vocabulary and no more
  /// tokens than the model's context.
  ///
  /// Runs before anything is compiled, so a bad id or an over-long sequence costs no tracing.
  public func check(_ tokens: [Int32], option: String) throws(SessionError) {
    let vocabulary = config.vocabularySize
    if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
      throw SessionError("\(option): token \(bad) is out of range 0..<\(vocabulary)")
    }
    if tokens.count > contextLength {
      throw SessionError(
        "\(option): \(tokens.count) tokens are more than the model's context of \(contextLength)")
    }
  }

  /// The model's tokenizer, from its GGUF metadata.
  public func tokenizer() throws(SessionError) -> Tokenizer {
    do {
      return try Tokenizer(gguf: file)
    } catch {
      throw SessionError(error.message)
    }
  }
}

extension PEFTAdapter {
  /// Reads the PEFT adapter folder at `path` for `model`.
  public static func load(_ path: String, for model: LlamaModel) throws(SessionError)
    -> PEFTAdapter
  {
    do {
      return try PEFTAdapter(directory: path, config: model.config)
    } catch {
      throw SessionError(error.message)
    }
  }

  /// The `lora` pass that inserts this adapter's branches: its targets, rank, alpha, scaling and
  /// whether they are per head.
  public func loraPass() throws(PassError) -> Lora {
    let selector = try NameSelector(parsing: "{" + targets.joined(separator: ",") + "}")
    return Lora(rank: rank, alpha: alpha, targets: selector, rsLoRA: useRSLoRA, perHead: perHead)
  }
}
