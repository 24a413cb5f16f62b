/// The Mistral family (`model_type` `mistral`) read from a Hugging Face folder: Llama's layers and
/// tensor names, with sliding-window attention.
///
/// Attention over a window of `sliding_window` tokens is full causal attention for every sequence
/// of at most that many tokens, so lorac makes the window the model's context rather than mask
/// inside it: longer sequences are refused (the context check every command makes), never
/// approximated.
public enum MistralFamily {
  /// Reads the hyper-parameters of a Mistral config.json (as Llama's).
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    switch fields.json["sliding_window"] {
    case nil, .null?: break
    case .integer(let window)? where window > 0: break
    default:
      // A window lorac cannot read would otherwise be ignored: full attention past the window.
      throw fields.fail("sliding_window", "must be a positive integer or null")
    }
    return try LlamaFamily.config(fields)
  }

  /// The longest sequence lorac runs: `max_position_embeddings`, or `sliding_window` when smaller.
  public static func contextLength(_ fields: HuggingFaceConfig) -> Int? {
    let positions = ModelFamily.maximumPositions(fields)
    guard case .integer(let window)? = fields.json["sliding_window"], window > 0 else {
      return positions
    }
    return min(positions ?? window, window)
  }
}
