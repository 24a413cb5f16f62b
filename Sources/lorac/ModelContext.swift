import Models

extension LlamaModel {
  /// The longest sequence the model is made for: `ARCH.context_length` in the GGUF (8192 when the
  /// file does not say, SmolLM2's).
  var contextLength: Int {
    let architecture = file["general.architecture"]?.string ?? "llama"
    guard let length = file["\(architecture).context_length"]?.integer, length > 0 else {
      return 8192
    }
    return length
  }
}

/// Opens the model at `path` and ends the command when `tokens` (given with `option`) hold an id
/// outside the vocabulary or more tokens than the model's context; returns the model.
///
/// Runs before anything is compiled, so a bad id or an over-long sequence costs no tracing.
@discardableResult
func checkTokens(_ tokens: [Int32], option: String, model path: String) -> LlamaModel {
  let model: LlamaModel
  do {
    model = try LlamaModel(path: path)
  } catch {
    fail(error.message)
  }
  let vocabulary = model.config.vocabularySize
  if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
    fail("\(option): token \(bad) is out of range 0..<\(vocabulary)")
  }
  if tokens.count > model.contextLength {
    fail(
      "\(option): \(tokens.count) tokens are more than the model's context of \(model.contextLength)"
    )
  }
  return model
}
