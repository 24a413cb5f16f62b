/// The Llama family read from a Hugging Face folder (`model_type` `llama`): how its config.json
/// fields become a `LlamaConfig`, and which Hugging Face tensor each weight of lorac's trace (named
/// as in GGUF files) is.
///
/// The trace is the one `Llama.trace` writes for GGUF files, with one difference: Hugging Face
/// keeps q_proj and k_proj rows in their natural order, where llama.cpp's converter permutes them
/// per head, so the trace rotates halves (`rope` without `interleaved`) instead of permuting the
/// weights at load.
public enum LlamaFamily {
  /// The Hugging Face name of a weight the Llama trace declares by its GGUF name:
  /// `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; nil for a name the
  /// trace never declares.
  public static func huggingFaceName(ofGGUF name: String) -> String? {
    switch name {
    case "token_embd.weight": return "model.embed_tokens.weight"
    case "output_norm.weight": return "model.norm.weight"
    case "output.weight": return "lm_head.weight"
    default: break
    }
    let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
      let module = blockModules[String(parts[2])]
    else { return nil }
    return "model.layers.\(layer).\(module)"
  }

  /// A block's GGUF tensor suffixes and the Hugging Face module paths they are.
  static let blockModules: [String: String] = [
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
  ]

  /// Reads the hyper-parameters of a Llama config.json (`model_type` `llama`).
  ///
  /// Features lorac does not trace yet are errors naming the field, never approximations:
  /// `attention_bias` or `mlp_bias` true, an activation other than SiLU, RoPE scaling. A
  /// `head_dim` other than hidden_size / heads is read (q and o are then heads x head_dim wide).
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    let type = try fields.modelType()
    for field in ["attention_bias", "mlp_bias"] where try fields.flag(field, fallback: false) {
      throw fields.fail(field, "true is not supported for model_type '\(type)'")
    }
    return try sharedConfig(fields)
  }

  /// The fields every Llama-like family spells the same way, checked: sizes, heads, `head_dim`
  /// (explicit only when it differs from hidden_size / heads),
  /// `hidden_act` SiLU, RoPE without scaling, the norm epsilon and a tied or separate head.
  static func sharedConfig(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    let hidden = try fields.positive("hidden_size")
    let heads = try fields.positive("num_attention_heads")
    let kvHeads = try fields.positive("num_key_value_heads", fallback: heads)
    guard heads <= 1 << 16 else {
      throw fields.fail("num_attention_heads", "must be at most 65536, got \(heads)")
    }
    if let act = try fields.string("hidden_act"), act != "silu" {
      throw fields.fail("hidden_act", "'\(act)' is not supported (lorac's MLP is SwiGLU)")
    }
    var explicitHeadDimension: Int?
    if fields.json["head_dim"] != nil, fields.json["head_dim"] != .null {
      let headDim = try fields.positive("head_dim")
      guard headDim % 2 == 0, headDim <= 1 << 16 else {
        throw fields.fail("head_dim", "must be even and at most 65536, got \(headDim)")
      }
      if hidden % heads != 0 || hidden / heads != headDim { explicitHeadDimension = headDim }
    }
    guard heads % kvHeads == 0,
      explicitHeadDimension != nil || (hidden % heads == 0 && (hidden / heads) % 2 == 0)
    else {
      throw fields.fail(
        "num_attention_heads",
        "\(heads) with \(kvHeads) key/value heads does not divide hidden_size \(hidden) into even head dimensions"
      )
    }
    return LlamaConfig(
      vocabularySize: try fields.positive("vocab_size"), embeddingLength: hidden,
      layerCount: try fields.positive("num_hidden_layers"), headCount: heads,
      keyValueHeadCount: kvHeads, feedForwardLength: try fields.positive("intermediate_size"),
      ropeTheta: try fields.ropeTheta(fallback: 10_000),
      normEpsilon: try fields.number("rms_norm_eps", fallback: 1e-6),
      tiedEmbeddings: try fields.flag("tie_word_embeddings", fallback: false),
      interleavedRope: false, explicitHeadDimension: explicitHeadDimension)
  }
}
