import IR

/// The GPT-NeoX family (Pythia; `model_type` `gpt_neox`, GGUF `gptneox`): LayerNorm with bias,
/// RoPE on the first `rotary_pct` of each head, one fused q/k/v product, a GELU MLP, a parallel
/// residual (`use_parallel_residual`) and a separate head (`embed_out`).
///
/// A Hugging Face folder's `query_key_value` rows are per head (`[heads, 3, headDim]`:
/// `LlamaConfig.qkvPerHead`); llama.cpp's converter reorders them to all q, then k, then v. Either
/// way the trace slices the product's result, never the weight.
public enum GPTNeoXFamily {
  /// The Hugging Face name of a weight the trace declares by its GGUF name; nil for a name the
  /// trace never declares.
  public static func huggingFaceName(ofGGUF name: String) -> String? {
    switch name {
    case "token_embd.weight": return "gpt_neox.embed_in.weight"
    case "output_norm.weight": return "gpt_neox.final_layer_norm.weight"
    case "output_norm.bias": return "gpt_neox.final_layer_norm.bias"
    case "output.weight": return "embed_out.weight"
    default: break
    }
    let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
      let module = blockModules[String(parts[2])]
    else { return nil }
    return "gpt_neox.layers.\(layer).\(module)"
  }

  /// A block's GGUF tensor suffixes and the Hugging Face module paths they are.
  static let blockModules: [String: String] = {
    var table: [String: String] = [:]
    for (gguf, hf) in [
      ("attn_norm", "input_layernorm"), ("attn_qkv", "attention.query_key_value"),
      ("attn_output", "attention.dense"), ("ffn_norm", "post_attention_layernorm"),
      ("ffn_up", "mlp.dense_h_to_4h"), ("ffn_down", "mlp.dense_4h_to_h"),
    ] {
      table[gguf + ".weight"] = hf + ".weight"
      table[gguf + ".bias"] = hf + ".bias"
    }
    return table
  }()

  /// Reads the hyper-parameters of a GPT-NeoX config.json.
  ///
  /// The rotary share of each head is `rotary_pct` (or transformers 5's
  /// `rope_parameters.partial_rotary_factor`), its base `rotary_emb_base` (or
  /// `rope_parameters.rope_theta`); `use_parallel_residual` (default true), `hidden_act` (`gelu`:
  /// exact; `gelu_new`, `gelu_pytorch_tanh`: tanh), `layer_norm_eps`, `attention_bias` (default
  /// true), `tie_word_embeddings` (default false).
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    let hidden = try fields.positive("hidden_size")
    let heads = try fields.positive("num_attention_heads")
    guard hidden % heads == 0, heads <= 1 << 16 else {
      throw fields.fail("num_attention_heads", "\(heads) does not divide hidden_size \(hidden)")
    }
    let headDim = hidden / heads
    var fraction = 0.25
    var theta = 10_000.0
    var fractionField = "rotary_pct"
    if let parameters = fields.json["rope_parameters"], parameters != .null {
      theta = try fields.ropeTheta(fallback: 10_000)
      if parameters["partial_rotary_factor"] != nil {
        fractionField = "rope_parameters.partial_rotary_factor"
        fraction = try fields.number("partial_rotary_factor", in: parameters, fallback: 0.25)
      }
    } else {
      theta = try fields.number("rotary_emb_base", fallback: try fields.ropeTheta(fallback: 10_000))
    }
    if fields.json["rotary_pct"] != nil, fields.json["rotary_pct"] != .null {
      fractionField = "rotary_pct"
      fraction = try fields.number("rotary_pct", fallback: 0.25)
    }
    let rotary = Int(Double(headDim) * fraction)
    guard fraction <= 1, rotary > 0, rotary % 2 == 0 else {
      throw fields.fail(
        fractionField, "\(fraction) of head dimension \(headDim) is not a positive even size")
    }
    var config = LlamaConfig(
      vocabularySize: try fields.positive("vocab_size"), embeddingLength: hidden,
      layerCount: try fields.positive("num_hidden_layers"), headCount: heads,
      keyValueHeadCount: heads, feedForwardLength: try fields.positive("intermediate_size"),
      ropeTheta: theta, normEpsilon: try fields.number("layer_norm_eps", fallback: 1e-5),
      tiedEmbeddings: try fields.flag("tie_word_embeddings", fallback: false),
      interleavedRope: false, attentionBias: try fields.flag("attention_bias", fallback: true))
    config.architecture = .gptNeoX
    config.rotaryDimension = rotary
    config.parallelResidual = try fields.flag("use_parallel_residual", fallback: true)
    config.gelu = try Gpt2Family.gelu(fields, "hidden_act", fallback: "gelu")
    config.qkvPerHead = true
    return config
  }
}

extension GPTNeoXFamily {
  /// Reads the hyper-parameters of a `gptneox` GGUF file as llama.cpp's converter writes it:
  /// `rope.dimension_count` rotary dimensions of each head, `rope.freq_base` (10000 when absent,
  /// as llama.cpp reads it), `use_parallel_residual`, the fused q/k/v rows reordered to all q,
  /// then k, then v.
  public static func config(gguf file: GGUFFile) throws(GGUFError) -> LlamaConfig {
    let key = { (name: String) throws(GGUFError) -> Int in
      try LlamaConfig.positive(name, in: file, architecture: "gptneox")
    }
    let (hidden, heads) = (try key("embedding_length"), try key("attention.head_count"))
    let rotary = try key("rope.dimension_count")
    guard hidden % heads == 0, rotary % 2 == 0, rotary <= hidden / heads else {
      throw GGUFError(
        message:
          "\(file.path): gptneox.attention.head_count \(heads) and rope.dimension_count \(rotary) do not fit embedding length \(hidden)"
      )
    }
    var config = LlamaConfig(
      vocabularySize: try LlamaConfig.vocabularySize(of: file, architecture: "gptneox"),
      embeddingLength: hidden, layerCount: try key("block_count"), headCount: heads,
      keyValueHeadCount: heads, feedForwardLength: try key("feed_forward_length"),
      ropeTheta: file["gptneox.rope.freq_base"]?.number ?? 10_000,
      normEpsilon: file["gptneox.attention.layer_norm_epsilon"]?.number ?? 1e-5,
      tiedEmbeddings: file.info("output.weight") == nil, interleavedRope: false,
      attentionBias: true)
    config.architecture = .gptNeoX
    config.rotaryDimension = rotary
    config.parallelResidual = file["gptneox.use_parallel_residual"]?.bool ?? true
    config.gelu = .exact
    return config
  }
}

extension TraceParts {
  /// GPT-NeoX's block in scope `layers.N`: with a parallel residual
  /// `h + attn(ln1(h)) + mlp(ln2(h))`, else as GPT-2's.
  func neoXBlock(_ h: Tensor, layer: Int, positions: Tensor, causal: Tensor) throws(TraceError)
    -> Tensor
  {
    let gguf = "blk.\(layer)."
    let x = try norm(h, gguf + "attn_norm")
    let attention = try builder.scope("attn") { () throws(TraceError) -> Tensor in
      let (q, k, v) = try fusedProjections(x, layer: layer)
      let context = try attend(
        partialRope(q, positions: positions), partialRope(k, positions: positions), v,
        causal: causal)
      return try attentionOutput(context, layer: layer)
    }
    let afterAttention = try (h + attention).named("residual.attn")
    let mlp = try geluMLP(
      norm(config.parallelResidual ? h : afterAttention, gguf + "ffn_norm"), layer: layer)
    return try (afterAttention + mlp).named("residual.mlp")
  }

  /// RoPE (rotate-half) on the first `rotaryDimension` of each head of `t: [batch, count, heads,
  /// headDim]`; the rest passes through.
  func partialRope(_ t: Tensor, positions: Tensor) throws(TraceError) -> Tensor {
    let shape = t.shape
    let rotary = config.rotaryDimension ?? shape[3]
    guard rotary < shape[3] else {
      return try rope(
        t, positions: positions, theta: config.ropeTheta, interleaved: config.interleavedRope)
    }
    let rotated = try rope(
      t.slice(start: [0, 0, 0, 0], end: [shape[0], shape[1], shape[2], rotary]),
      positions: positions, theta: config.ropeTheta, interleaved: config.interleavedRope)
    let passed = try t.slice(start: [0, 0, 0, rotary], end: shape)
    return try concat([rotated, passed], axis: 3)
  }
}
