/// The Qwen2 family (Qwen2, Qwen2.5; `model_type` `qwen2`) read from a Hugging Face folder: the
/// Llama trace with a bias on the q, k and v projections, tensors named as Llama's
/// (`model.layers.N.self_attn.q_proj.bias`).
public enum Qwen2Family {
  /// Reads the hyper-parameters of a Qwen2 config.json.
  ///
  /// Sliding-window attention (`use_sliding_window` true) is an error naming the field: lorac
  /// traces full causal attention. Qwen2 configs default to RMSNorm epsilon 1e-6 and a separate
  /// head, as transformers' do.
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    if try fields.flag("use_sliding_window", fallback: false) {
      throw fields.fail(
        "use_sliding_window", "true is not supported (lorac attends causally to every token)")
    }
    var config = try LlamaFamily.sharedConfig(fields)
    config.attentionBias = true
    return config
  }
}
