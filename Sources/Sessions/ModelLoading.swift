import Foundation
import IR
import Models
import Passes
import Runtime

extension LlamaModel {
  /// The longest sequence the model is made for: `ARCH.context_length` in a GGUF file, the
  /// family's reading of a folder's config.json (`max_position_embeddings`; Mistral's sliding
  /// window when shorter), 8192 when neither says (SmolLM2's).
  public var contextLength: Int {
    switch source {
    case .gguf(let file):
      let architecture = file["general.architecture"]?.string ?? "llama"
      guard let length = file["\(architecture).context_length"]?.integer, length > 0 else {
        return 8192
      }
      return length
    case .huggingFace(let folder):
      let fields = folder.configFields
      return (try? ModelFamily(fields))?.contextLength(fields) ?? 8192
    }
  }

  /// Opens the model at `path`: a GGUF file or a Hugging Face folder.
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

  /// The model's tokenizer: from a GGUF file's metadata, or a folder's tokenizer.json.
  public func tokenizer() throws(SessionError) -> Tokenizer {
    switch source {
    case .gguf(let file):
      do {
        return try Tokenizer(gguf: file)
      } catch {
        throw SessionError(error.message)
      }
    case .huggingFace(let folder):
      do {
        return try Tokenizer(huggingFace: folder)
      } catch {
        throw SessionError(error.message)
      }
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
