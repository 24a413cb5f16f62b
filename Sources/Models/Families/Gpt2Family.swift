import IR

/// The GPT-2 family (`model_type` `gpt2`, GGUF `gpt2`): LayerNorm with bias, learned absolute
/// positions, one fused q/k/v product, a GELU MLP and a tied head.
///
/// A Hugging Face folder stores GPT-2's linears as Conv1D weights `[in, out]`, which the trace
/// applies as they are (`LlamaConfig.inputMajorWeights`); a GGUF stores them `[out, in]`. The fused
/// product `layers.N.attn.qkv` (`c_attn`) is split into `layers.N.attn.{q,k,v}` by slicing its
/// result: the weight is one mapped tensor, never copied or split.
public enum Gpt2Family {
  /// The Hugging Face names of a weight the trace declares by its GGUF name, the usual one first
  /// (`transformer.h.0.attn.c_attn.weight`) then the one without `transformer.` that OpenAI's
  /// `gpt2` repository uses; empty for a name the trace never declares.
  public static func huggingFaceNames(ofGGUF name: String) -> [String] {
    let module: String
    switch name {
    case "token_embd.weight": module = "wte.weight"
    case "position_embd.weight": module = "wpe.weight"
    case "output_norm.weight": module = "ln_f.weight"
    case "output_norm.bias": module = "ln_f.bias"
    case "output.weight": return ["lm_head.weight"]
    default:
      let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
      guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
        let suffix = blockModules[String(parts[2])]
      else { return [] }
      module = "h.\(layer).\(suffix)"
    }
    return ["transformer." + module, module]
  }

  /// A block's GGUF tensor suffixes and the Hugging Face module paths they are.
  static let blockModules: [String: String] = {
    var table: [String: String] = [:]
    for (gguf, hf) in [
      ("attn_norm", "ln_1"), ("attn_qkv", "attn.c_attn"), ("attn_output", "attn.c_proj"),
      ("ffn_norm", "ln_2"), ("ffn_up", "mlp.c_fc"), ("ffn_down", "mlp.c_proj"),
    ] {
      table[gguf + ".weight"] = hf + ".weight"
      table[gguf + ".bias"] = hf + ".bias"
    }
    return table
  }()

  /// Reads the hyper-parameters of a GPT-2 config.json.
  ///
  /// `n_embd`, `n_head`, `n_layer`, `n_positions`, `n_inner` (null: 4 x n_embd),
  /// `activation_function` (`gelu_new`, `gelu_pytorch_tanh`: tanh GELU; `gelu`: exact),
  /// `layer_norm_epsilon`, `tie_word_embeddings`. What the trace does not implement is an error
  /// naming the field: `scale_attn_weights` false, `scale_attn_by_inverse_layer_idx` or
  /// `add_cross_attention` true.
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    func either(_ name: String, _ alias: String, fallback: Int? = nil) throws(HuggingFaceError)
      -> Int
    {
      if let value = fields.json[name], value != .null { return try fields.positive(name) }
      return try fields.positive(alias, fallback: fallback)
    }
    let hidden = try either("n_embd", "hidden_size")
    let heads = try either("n_head", "num_attention_heads")
    guard hidden % heads == 0, heads <= 1 << 16 else {
      throw fields.fail("n_head", "\(heads) does not divide n_embd \(hidden)")
    }
    if !(try fields.flag("scale_attn_weights", fallback: true)) {
      throw fields.fail("scale_attn_weights", "false is not supported")
    }
    for field in ["scale_attn_by_inverse_layer_idx", "add_cross_attention"]
    where try fields.flag(field, fallback: false) {
      throw fields.fail(field, "true is not supported for model_type 'gpt2'")
    }
    var config = LlamaConfig(
      vocabularySize: try fields.positive("vocab_size"), embeddingLength: hidden,
      layerCount: try either("n_layer", "num_hidden_layers"), headCount: heads,
      keyValueHeadCount: heads,
      feedForwardLength: try fields.positive("n_inner", fallback: 4 * hidden),
      normEpsilon: try fields.number("layer_norm_epsilon", fallback: 1e-5),
      tiedEmbeddings: try fields.flag("tie_word_embeddings", fallback: true),
      interleavedRope: false, attentionBias: true)
    config.architecture = .gpt2
    config.positionCount = try either("n_positions", "max_position_embeddings", fallback: 1024)
    config.gelu = try gelu(fields, "activation_function", fallback: "gelu_new")
    config.inputMajorWeights = true
    return config
  }

  /// Reads the hyper-parameters of a `gpt2` GGUF file as llama.cpp's converter writes it: the
  /// linears `[out, in]` (transposed from Conv1D), `output.weight` a copy of the embedding (tied
  /// when absent), `gpt2.context_length` learned positions, tanh GELU.
  public static func config(gguf file: GGUFFile) throws(GGUFError) -> LlamaConfig {
    let key = { (name: String) throws(GGUFError) -> Int in
      try LlamaConfig.positive(name, in: file, architecture: "gpt2")
    }
    let (hidden, heads) = (try key("embedding_length"), try key("attention.head_count"))
    guard hidden % heads == 0 else {
      throw GGUFError(
        message: "\(file.path): gpt2.attention.head_count \(heads) does not divide \(hidden)")
    }
    var config = LlamaConfig(
      vocabularySize: try LlamaConfig.vocabularySize(of: file, architecture: "gpt2"),
      embeddingLength: hidden, layerCount: try key("block_count"), headCount: heads,
      keyValueHeadCount: heads, feedForwardLength: try key("feed_forward_length"),
      normEpsilon: file["gpt2.attention.layer_norm_epsilon"]?.number ?? 1e-5,
      tiedEmbeddings: file.info("output.weight") == nil, interleavedRope: false,
      attentionBias: true)
    config.architecture = .gpt2
    config.positionCount = try key("context_length")
    config.gelu = .tanh
    return config
  }

  /// The GELU a config.json's activation field names (GPT-2's and GPT-NeoX's spellings).
  static func gelu(_ fields: HuggingFaceConfig, _ field: String, fallback: String)
    throws(HuggingFaceError) -> LlamaConfig.GELU
  {
    let name = try fields.string(field) ?? fallback
    switch name {
    case "gelu": return .exact
    case "gelu_new", "gelu_pytorch_tanh": return .tanh
    default:
      throw fields.fail(field, "'\(name)' is not supported (gelu, gelu_new, gelu_pytorch_tanh)")
    }
  }

  /// `n_positions` (or `max_position_embeddings`) when it is a positive integer.
  static func contextLength(_ fields: HuggingFaceConfig) -> Int? {
    if case .integer(let length)? = fields.json["n_positions"], length > 0 { return length }
    return ModelFamily.maximumPositions(fields)
  }
}

extension TraceParts {
  /// GPT-2's block in scope `layers.N`: `h + attn(ln_1(h))`, then `+ mlp(ln_2(...))`.
  func gpt2Block(_ h: Tensor, layer: Int, positions: Tensor, causal: Tensor) throws(TraceError)
    -> Tensor
  {
    let gguf = "blk.\(layer)."
    let x = try norm(h, gguf + "attn_norm")
    let attention = try builder.scope("attn") { () throws(TraceError) -> Tensor in
      let (q, k, v) = try fusedProjections(x, layer: layer)
      return try attentionOutput(attend(q, k, v, causal: causal), layer: layer)
    }
    let afterAttention = try (h + attention).named("residual.attn")
    let mlp = try geluMLP(norm(afterAttention, gguf + "ffn_norm"), layer: layer)
    return try (afterAttention + mlp).named("residual.mlp")
  }

  /// The fused product `qkv` of `x: [batch, count, dim]` (plus its bias) and its q, k, v parts,
  /// named `q`, `k`, `v` (`[batch, count, heads * headDim]`, slices of the product's result, not
  /// of the weight), returned split into heads `[batch, count, heads, headDim]`.
  ///
  /// The parts are `[3, heads, headDim]` of the output (GPT-2, a GGUF), or `[heads, 3, headDim]`
  /// with `qkvPerHead` (GPT-NeoX in a Hugging Face folder).
  func fusedProjections(_ x: Tensor, layer: Int) throws(TraceError) -> (
    q: Tensor, k: Tensor, v: Tensor
  ) {
    let gguf = "blk.\(layer)."
    let (batch, count) = (x.shape[0], x.shape[1])
    let (heads, headDim) = (config.headCount, config.headDimension)
    let width = heads * headDim
    let qkv = try affine(
      x, gguf + "attn_qkv.weight", bias: config.attentionBias ? gguf + "attn_qkv.bias" : nil,
      3 * width, "qkv")
    var parts: [Tensor] = []
    for (index, name) in ["q", "k", "v"].enumerated() {
      let part: Tensor
      if config.qkvPerHead {
        part = try qkv.reshaped([batch, count, heads, 3 * headDim])
          .slice(
            start: [0, 0, 0, index * headDim], end: [batch, count, heads, (index + 1) * headDim]
          )
          .reshaped([batch, count, width])
      } else {
        part = try qkv.slice(
          start: [0, 0, index * width], end: [batch, count, (index + 1) * width])
      }
      parts.append(try part.named(name).reshaped([batch, count, heads, headDim]))
    }
    return (parts[0], parts[1], parts[2])
  }

  /// The attention output product `o` of the context (with its bias).
  func attentionOutput(_ context: Tensor, layer: Int) throws(TraceError) -> Tensor {
    let gguf = "blk.\(layer)."
    return try affine(
      context, gguf + "attn_output.weight",
      bias: config.attentionBias ? gguf + "attn_output.bias" : nil, config.embeddingLength, "o")
  }

  /// `down(gelu(up(y)))` with biases, in scope `mlp`.
  func geluMLP(_ y: Tensor, layer: Int) throws(TraceError) -> Tensor {
    let gguf = "blk.\(layer)."
    return try builder.scope("mlp") { () throws(TraceError) -> Tensor in
      let up = try affine(
        y, gguf + "ffn_up.weight", bias: gguf + "ffn_up.bias", config.feedForwardLength, "up")
      return try affine(
        gelu(up), gguf + "ffn_down.weight", bias: gguf + "ffn_down.bias", config.embeddingLength,
        "down")
    }
  }
}
