import Dispatch
import Foundation
import IR
import Synchronization

/// The hyper-parameters of a Llama-family decoder.
public struct LlamaConfig: Hashable, Sendable {
  public var vocabularySize: Int
  public var embeddingLength: Int
  public var layerCount: Int
  public var headCount: Int
  public var keyValueHeadCount: Int
  public var feedForwardLength: Int
  public var ropeTheta: Double
  public var normEpsilon: Double
  /// Whether the output head reuses the token embedding (`token_embd.weight`).
  public var tiedEmbeddings: Bool
  /// GGUF stores Q/K rows permuted for adjacent-pair rotation; Hugging Face weights rotate halves.
  public var interleavedRope: Bool
  /// Whether the q, k and v projections add a bias (`blk.N.attn_{q,k,v}.bias`; Qwen2's).
  public var attentionBias: Bool
  /// The dimension of one attention head when it is not embeddingLength / headCount (a
  /// config.json's `head_dim`), else nil.
  public var explicitHeadDimension: Int?

  public init(
    vocabularySize: Int, embeddingLength: Int, layerCount: Int, headCount: Int,
    keyValueHeadCount: Int, feedForwardLength: Int, ropeTheta: Double = 10_000,
    normEpsilon: Double = 1e-5, tiedEmbeddings: Bool = true, interleavedRope: Bool = true,
    attentionBias: Bool = false, explicitHeadDimension: Int? = nil
  ) {
    self.vocabularySize = vocabularySize
    self.embeddingLength = embeddingLength
    self.layerCount = layerCount
    self.headCount = headCount
    self.keyValueHeadCount = keyValueHeadCount
    self.feedForwardLength = feedForwardLength
    self.ropeTheta = ropeTheta
    self.normEpsilon = normEpsilon
    self.tiedEmbeddings = tiedEmbeddings
    self.interleavedRope = interleavedRope
    self.attentionBias = attentionBias
    self.explicitHeadDimension = explicitHeadDimension
  }

  /// The dimension of one attention head: explicit, or embeddingLength / headCount.
  public var headDimension: Int { explicitHeadDimension ?? embeddingLength / headCount }

  /// The block a family traces; every one keeps the value names of `Llama.trace`.
  public enum Architecture: String, Hashable, Sendable {
    /// RMSNorm, RoPE, separate q/k/v, SwiGLU (Llama, Mistral, Qwen2).
    case llama
    /// LayerNorm with bias, learned positions, fused qkv, GELU MLP (`Gpt2Family`).
    case gpt2
    /// LayerNorm with bias, partial RoPE, fused per-head qkv, GELU MLP, parallel residual
    /// (`GPTNeoXFamily`).
    case gptNeoX
  }

  /// The GELU a GPT-2 or GPT-NeoX MLP applies.
  public enum GELU: String, Hashable, Sendable {
    /// `0.5 x (1 + erf(x / sqrt 2))` (`gelu`).
    case exact
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (`gelu_new`, `gelu_pytorch_tanh`).
    case tanh
  }

  /// The block the trace builds.
  public var architecture: Architecture = .llama
  /// GPT-2: the rows of the learned position table (`position_embd.weight`).
  public var positionCount: Int = 0
  /// GPT-NeoX: the leading dimensions of each head that RoPE rotates (the rest pass through);
  /// nil rotates all of them.
  public var rotaryDimension: Int?
  /// GPT-NeoX: attention and MLP both read the block input (`use_parallel_residual`).
  public var parallelResidual: Bool = false
  /// GPT-2, GPT-NeoX: the MLP's activation.
  public var gelu: GELU = .exact
  /// Weights stored `[in, out]` and applied without `transpose_b` (GPT-2's Conv1D in a Hugging
  /// Face folder); GGUF files store `[out, in]`.
  public var inputMajorWeights: Bool = false
  /// GPT-NeoX in a Hugging Face folder: the fused qkv output is `[heads, 3, headDim]` (each
  /// head's q, k, v side by side); else `[3, heads, headDim]` (all q, then k, then v).
  public var qkvPerHead: Bool = false
}

/// A Llama-family decoder traced into the IR from its hyper-parameters alone.
///
/// Weights are constants named as in GGUF files (`blk.3.attn_q.weight`, stored `[out, in]` and
/// applied with `transpose_b`), so a GGUF file's tensors bind by name; the computed values carry
/// the dotted names passes select by: `embed`, `layers.N.attn.{q,k,v,o}`,
/// `layers.N.mlp.{gate,up,down}`, `head`.
public enum Llama {
  /// What `trace(extend:)` adds after the logits: given the tokens, the final residual stream and
  /// the logits, the graph's outputs (a value head and an objective, say).
  public typealias Extension = (_ tokens: Tensor, _ residual: Tensor, _ logits: Tensor)
    throws(TraceError) -> [Tensor]

  /// Traces `llama(tokens: i32[batch, sequence], positions: i32[batch, sequence]) -> logits`.
  ///
  /// - Parameters:
  ///   - weightType: The storage dtype of each weight by GGUF name (f32 when it returns nil).
  ///   - loss: Adds inputs `targets: i32[batch, sequence]` and `weights: f32[batch, sequence]` and
  ///     returns only the mean next-token cross-entropy `loss = -sum(w * log p(target)) / sum(w)`
  ///     (weight 0 masks padding or prompt tokens), named "loss".
  ///   - extend: Replaces the outputs (and `loss`) with what it returns given the tokens, the
  ///     final residual stream `[batch, sequence, dim]` (before the last norm) and the logits: a
  ///     value head and an objective (RLHF), traced into the same graph.
  ///   - logitPositions: With `extend`, the positions whose logits it receives (`[batch,
  ///     logitPositions.count, vocab]`): the final residual stream is sliced before the head, so
  ///     the other positions' logits (vocabulary-wide, and their gradients) never exist.
  public static func trace(
    _ config: LlamaConfig, batch: Int, sequence: Int, loss: Bool = false,
    weightType: @escaping (String) -> DType? = { _ in nil },
    logitPositions: Range<Int>? = nil,
    extend: Extension? = nil
  ) throws(TraceError) -> Graph {
    guard config.headCount > 0, config.keyValueHeadCount > 0,
      config.headCount % config.keyValueHeadCount == 0,
      config.explicitHeadDimension != nil || config.embeddingLength % config.headCount == 0,
      config.headDimension > 0,
      config.architecture == .gpt2
        || (config.rotaryDimension ?? config.headDimension) % 2 == 0
          && (config.rotaryDimension ?? 0) <= config.headDimension
    else {
      throw TraceError(
        message:
          "llama: \(config.headCount) heads and \(config.keyValueHeadCount) key/value heads do not divide embedding length \(config.embeddingLength) into even head dimensions"
      )
    }
    let b = GraphBuilder(name: "llama")
    let parts = TraceParts(builder: b, config: config, weightType: weightType)
    let tokens = try b.input(name: "tokens", shape: [batch, sequence], dtype: .i32)
    let positions = try b.input(name: "positions", shape: [batch, sequence], dtype: .i32)
    let (embedding, embedded) = try parts.embed(tokens, positions: positions)
    var h = embedded

    // Causal mask [sequence, sequence]: key position <= query position.
    let rows = try b.iota(shape: [sequence, sequence], axis: 0)
    let columns = try b.iota(shape: [sequence, sequence], axis: 1)
    let causal = try columns.compare(.le, rows)

    for layer in 0..<config.layerCount {
      let block = h
      h = try b.scope("layers.\(layer)") { () throws(TraceError) -> Tensor in
        try parts.block(block, layer: layer, positions: positions, causal: causal)
      }
    }
    if let extend {
      var final = h
      if let range = logitPositions {
        guard range.lowerBound >= 0, range.upperBound <= sequence, !range.isEmpty else {
          throw TraceError(
            message: "llama: logit positions \(range) are not within 0..<\(sequence)")
        }
        final = try h.slice(
          start: [0, range.lowerBound, 0], end: [batch, range.upperBound, config.embeddingLength])
      }
      return try b.finish(outputs: try extend(tokens, h, parts.head(final, embedding: embedding)))
    }
    let logits = try parts.head(h, embedding: embedding)
    guard loss else { return try b.finish(outputs: [logits]) }
    let targets = try b.input(name: "targets", shape: [batch, sequence], dtype: .i32)
    let weights = try b.input(name: "weights", shape: [batch, sequence])
    return try b.finish(outputs: [try crossEntropy(logits, targets: targets, weights: weights)])
  }

  /// `-sum(w * log softmax(logits)[target]) / max(sum(w), 1)`, named "loss": the target's log
  /// probability is picked with a one-hot mask from `iota == target`.
  static func crossEntropy(_ logits: Tensor, targets: Tensor, weights: Tensor) throws(TraceError)
    -> Tensor
  {
    let b = logits.builder
    let shape = logits.shape
    let logProbabilities = try logSoftmax(logits)
    let vocabulary = try b.iota(shape: shape, axis: shape.count - 1)
    let oneHot = try vocabulary.compare(.eq, targets.reshaped(targets.shape + [1])).cast(to: .f32)
    let picked = try (logProbabilities * oneHot).sum(axes: [-1])
    let total = try (picked * weights).sum()
    let count = try maximum(weights.sum(), b.fill(1, shape: []))
    return try (-total / count).named("loss")
  }
}

/// The pieces every family's trace shares.
///
/// Weights by GGUF name (outside every scope), the norms, linear layers, causal attention and the
/// head. A family's block lives in its file in
/// `Families/` (`TraceParts.gpt2Block`, `TraceParts.neoXBlock`) and is chosen by `block`.
struct TraceParts {
  let builder: GraphBuilder
  let config: LlamaConfig
  let weightType: (String) -> DType?

  func weight(_ name: String, _ shape: [Int]) throws(TraceError) -> Tensor {
    try builder.atTopLevel { () throws(TraceError) in
      try builder.constant(name: name, shape: shape, dtype: weightType(name) ?? .f32)
    }
  }

  /// The token embedding table and the embedded tokens (`embed`), plus GPT-2's learned
  /// positions (`pos_embed`).
  func embed(_ tokens: Tensor, positions: Tensor) throws(TraceError) -> (
    table: Tensor, embedded: Tensor
  ) {
    let table = try weight("token_embd.weight", [config.vocabularySize, config.embeddingLength])
    let embedded = try gather(table, tokens, axis: 0).named("embed")
    guard config.architecture == .gpt2 else { return (table, embedded) }
    let positionTable = try weight(
      "position_embd.weight", [config.positionCount, config.embeddingLength])
    return (table, try embedded + gather(positionTable, positions, axis: 0).named("pos_embed"))
  }

  /// One block of `layer` on the residual stream `h`, in scope `layers.N`.
  func block(_ h: Tensor, layer: Int, positions: Tensor, causal: Tensor) throws(TraceError)
    -> Tensor
  {
    switch config.architecture {
    case .llama: try llamaBlock(h, layer: layer, positions: positions, causal: causal)
    case .gpt2: try gpt2Block(h, layer: layer, positions: positions, causal: causal)
    case .gptNeoX: try neoXBlock(h, layer: layer, positions: positions, causal: causal)
    }
  }

  /// Llama's block: pre-norm attention and SwiGLU MLP, each added to the residual stream.
  func llamaBlock(_ h: Tensor, layer: Int, positions: Tensor, causal: Tensor) throws(TraceError)
    -> Tensor
  {
    let gguf = "blk.\(layer)."
    let x = try norm(h, gguf + "attn_norm")
    let attention = try builder.scope("attn") { () throws(TraceError) -> Tensor in
      let (qr, kr, v) = try projections(x, layer: layer, positions: positions)
      let context = try attend(qr, kr, v, causal: causal)
      return try linear(context, gguf + "attn_output.weight", config.embeddingLength, "o")
    }
    let afterAttention = try (h + attention).named("residual.attn")
    let mlp = try self.mlp(norm(afterAttention, gguf + "ffn_norm"), layer: layer)
    return try (afterAttention + mlp).named("residual.mlp")
  }

  /// Causal attention: the context `[batch, sequence, heads * headDim]`.
  ///
  /// `q` is `[batch, sequence, heads, headDim]`, `k` and `v` `[batch, sequence, kvHeads,
  /// headDim]`; the probabilities are named `probs`. The op pattern is the one `fuse` makes `attention` of.
  func attend(_ q: Tensor, _ k: Tensor, _ v: Tensor, causal: Tensor) throws(TraceError) -> Tensor {
    let (batch, sequence) = (q.shape[0], q.shape[1])
    let (heads, kvHeads, headDim) = (
      config.headCount, config.keyValueHeadCount, config.headDimension
    )
    // Grouped-query attention: each key/value head serves heads / kvHeads query heads.
    func expand(_ t: Tensor) throws(TraceError) -> Tensor {
      if heads == kvHeads { return t }
      return try t.reshaped([batch, sequence, kvHeads, 1, headDim])
        .broadcast(to: [batch, sequence, kvHeads, heads / kvHeads, headDim])
        .reshaped([batch, sequence, heads, headDim])
    }
    let qt = try q.transposed([0, 2, 1, 3])
    let kt = try expand(k).transposed([0, 2, 1, 3])
    // (The reshape to v's own shape is the one the Llama trace always had; `fold` drops it.)
    let vt = try expand(v.reshaped([batch, sequence, config.keyValueHeadCount, headDim]))
      .transposed([0, 2, 1, 3])
    let scores = try matmul(qt, kt, transposeB: true) * (1.0 / Double(headDim).squareRoot())
    let masked = try builder.emit(
      .select, [.value(causal.value), .value(scores.value), .scalar(-.infinity)])[0]
    let probabilities = try softmax(masked).named("probs")
    return try matmul(probabilities, vt).transposed([0, 2, 1, 3])
      .reshaped([batch, sequence, heads * headDim])
  }

  /// The norm whose weights are `prefix.weight` (and, for LayerNorm, `prefix.bias`) over the last
  /// axis: RMSNorm for Llama, LayerNorm for GPT-2 and GPT-NeoX.
  func norm(_ x: Tensor, _ prefix: String) throws(TraceError) -> Tensor {
    guard config.architecture != .llama else { return try rmsNorm(x, prefix + ".weight") }
    return try layerNorm(x, prefix)
  }

  /// `x * (mean(x^2) + eps)^(-1/2) * w` over the last axis.
  func rmsNorm(_ x: Tensor, _ name: String) throws(TraceError) -> Tensor {
    let scale = try weight(name, [config.embeddingLength])
    let meanSquare = try (x * x).mean(axes: [-1], keepDims: true)
    return try x * rsqrt(meanSquare + config.normEpsilon) * scale
  }

  /// `c * (mean(c^2) + eps)^(-1/2) * w + b` with `c = x - mean(x)` over the last axis: the
  /// centred part is the RMSNorm pattern, which `fuse` makes `rms_norm`.
  func layerNorm(_ x: Tensor, _ prefix: String) throws(TraceError) -> Tensor {
    let scale = try weight(prefix + ".weight", [config.embeddingLength])
    let shift = try weight(prefix + ".bias", [config.embeddingLength])
    let centred = try x - x.mean(axes: [-1], keepDims: true)
    let variance = try (centred * centred).mean(axes: [-1], keepDims: true)
    return try centred * rsqrt(variance + config.normEpsilon) * scale + shift
  }

  /// `gelu(x)` in the form `config.gelu` names.
  ///
  /// The exact form's `erf` is Abramowitz and Stegun 7.1.26
  /// (absolute error below 1.5e-7), composed from elementwise ops so that autodiff and the
  /// kernels need nothing new.
  func gelu(_ x: Tensor) throws(TraceError) -> Tensor {
    switch config.gelu {
    case .tanh:
      let inner = try (x + x * x * x * 0.044715) * (2.0 / Double.pi).squareRoot()
      return try x * 0.5 * (tanh(inner) + 1.0)
    case .exact:
      // Phi(x) = 1 - q for x >= 0 and q for x < 0, q = 0.5 poly(t) exp(-x^2 / 2),
      // t = 1 / (1 + p |x| / sqrt 2).
      let z = try x.apply(.abs) * (1.0 / 2.0.squareRoot())
      let t = try 1.0 / (z * 0.327_591_1 + 1.0)
      var poly = try t * 1.061_405_429 - 1.453_152_027
      poly = try poly * t + 1.421_413_741
      poly = try poly * t - 0.284_496_736
      poly = try poly * t + 0.254_829_592
      poly = try poly * t
      let tail = try poly * exp(z * z * -1.0) * 0.5
      let cdf = try select(x.compare(.ge, 0), 1.0 - tail, tail)
      return try x * cdf
    }
  }

  /// The product of `x` and the weight `weightName` (`[outputs, in]`, or `[in, outputs]` with
  /// `inputMajorWeights`), named `name`, plus the bias `biasName` after it when given (a LoRA
  /// branch on the named product is then added before the bias: the same sum).
  func affine(
    _ x: Tensor, _ weightName: String, bias biasName: String?, _ outputs: Int, _ name: String
  ) throws(TraceError) -> Tensor {
    let inputs = x.shape[x.rank - 1]
    let product: Tensor
    if config.inputMajorWeights {
      product = try matmul(x, weight(weightName, [inputs, outputs])).named(name)
    } else {
      product = try matmul(x, weight(weightName, [outputs, inputs]), transposeB: true).named(name)
    }
    guard let biasName else { return product }
    return try product + weight(biasName, [outputs])
  }

  /// `x W^T` with W stored [outputs, inputs], the result named `name` in the current scope.
  func linear(_ x: Tensor, _ weightName: String, _ outputs: Int, _ name: String)
    throws(TraceError) -> Tensor
  {
    let w = try weight(weightName, [outputs, x.shape[x.rank - 1]])
    return try matmul(x, w, transposeB: true).named(name)
  }

  /// The q, k, v projections of `x: [batch, count, dim]` for `layer`, with RoPE applied to q and k,
  /// shaped `[batch, count, heads, headDim]` (k and v with the key/value heads), in the current scope.
  func projections(_ x: Tensor, layer: Int, positions: Tensor) throws(TraceError)
    -> (q: Tensor, k: Tensor, v: Tensor)
  {
    let gguf = "blk.\(layer)."
    let (batch, count) = (x.shape[0], x.shape[1])
    let (heads, kvHeads, headDim) = (
      config.headCount, config.keyValueHeadCount, config.headDimension
    )
    var q = try linear(x, gguf + "attn_q.weight", heads * headDim, "q")
    var k = try linear(x, gguf + "attn_k.weight", kvHeads * headDim, "k")
    var v = try linear(x, gguf + "attn_v.weight", kvHeads * headDim, "v")
    if config.attentionBias {
      // After the named product, which LoRA targets: a branch added before or after the bias
      // is the same sum, as PEFT's Linear computes it.
      q = try q + weight(gguf + "attn_q.bias", [heads * headDim])
      k = try k + weight(gguf + "attn_k.bias", [kvHeads * headDim])
      v = try v + weight(gguf + "attn_v.bias", [kvHeads * headDim])
    }
    let qr = try rope(
      q.reshaped([batch, count, heads, headDim]), positions: positions,
      theta: config.ropeTheta, interleaved: config.interleavedRope)
    let kr = try rope(
      k.reshaped([batch, count, kvHeads, headDim]), positions: positions,
      theta: config.ropeTheta, interleaved: config.interleavedRope)
    return (qr, kr, try v.reshaped([batch, count, kvHeads, headDim]))
  }

  /// `down(silu(gate(y)) * up(y))` in scope `mlp`.
  func mlp(_ y: Tensor, layer: Int) throws(TraceError) -> Tensor {
    let gguf = "blk.\(layer)."
    return try builder.scope("mlp") { () throws(TraceError) -> Tensor in
      let gate = try linear(y, gguf + "ffn_gate.weight", config.feedForwardLength, "gate")
      let up = try linear(y, gguf + "ffn_up.weight", config.feedForwardLength, "up")
      return try linear(silu(gate) * up, gguf + "ffn_down.weight", config.embeddingLength, "down")
    }
  }

  /// The logits of `h` through the final norm and the (tied or separate) output head.
  func head(_ h: Tensor, embedding: Tensor) throws(TraceError) -> Tensor {
    let normed = try norm(h, "output_norm")
    let head =
      config.tiedEmbeddings
      ? embedding : try weight("output.weight", [config.vocabularySize, config.embeddingLength])
    return try matmul(normed, head, transposeB: true).named("head")
  }
}

extension Llama {
  /// Traces one decoding step over a key/value cache: `tokens` new tokens per sequence are
  /// appended at cache slot `cache_start[1]` and attend to the slots `key_mask` allows.
  ///
  /// Inputs: `tokens: i32[batch, tokens]`, `positions: i32[batch, tokens]` (RoPE positions),
  /// `cache_start: i32[4]` (`[0, 0, slot, 0]`), `key_mask: i32[batch, tokens, context]` (1 where a
  /// query may attend to a slot). State: `layers.N.attn.{k,v}_cache : f32[batch, kvHeads, context,
  /// headDim]`, updated in place. Output: the logits of the last new token, `f32[batch, vocab]`.
  /// The same graph serves prefill (`tokens` = prompt length) and one-token steps (`tokens` = 1).
  public static func traceDecoding(
    _ config: LlamaConfig, batch: Int, tokens count: Int, context: Int,
    weightType: @escaping (String) -> DType? = { _ in nil }
  ) throws(TraceError) -> Graph {
    let b = GraphBuilder(name: count == 1 ? "step" : "prefill")
    let (dim, heads, kvHeads) = (config.embeddingLength, config.headCount, config.keyValueHeadCount)
    let headDim = config.headDimension
    guard config.architecture == .llama else {
      throw TraceError(message: "traceDecoding traces Llama blocks only (use the decode pass)")
    }
    let parts = TraceParts(builder: b, config: config, weightType: weightType)
    let (weight, rmsNorm, linear) = (parts.weight, parts.rmsNorm, parts.linear)
    let tokens = try b.input(name: "tokens", shape: [batch, count], dtype: .i32)
    let positions = try b.input(name: "positions", shape: [batch, count], dtype: .i32)
    let start = try b.input(name: "cache_start", shape: [4], dtype: .i32)
    let keyMask = try b.input(name: "key_mask", shape: [batch, count, context], dtype: .i32)
    let mask = try keyMask.reshaped([batch, 1, count, context])
    let embedding = try weight("token_embd.weight", [config.vocabularySize, dim])
    var h = try gather(embedding, tokens, axis: 0).named("embed")
    for layer in 0..<config.layerCount {
      let gguf = "blk.\(layer)."
      h = try b.scope("layers.\(layer)") { () throws(TraceError) -> Tensor in
        let x = try rmsNorm(h, gguf + "attn_norm.weight")
        let attention = try b.scope("attn") { () throws(TraceError) -> Tensor in
          let (qr, kr, v) = try parts.projections(x, layer: layer, positions: positions)
          // Caches are [batch, kvHeads, context, headDim], so grouped-query attention is a
          // matmul batched over key/value heads that reads the cache in place; each key/value
          // head's `group` query heads form the rows.
          let group = heads / kvHeads
          let cacheShape = [batch, kvHeads, context, headDim]
          let kCache = try b.state(name: "k_cache", shape: cacheShape)
          let vCache = try b.state(name: "v_cache", shape: cacheShape)
          let kNew = try kr.transposed([0, 2, 1, 3])
          let vNew = try v.transposed([0, 2, 1, 3])
          let keys = try dynamicUpdateSlice(kCache, kNew, starts: start).named("k_cache.next")
          let values = try dynamicUpdateSlice(vCache, vNew, starts: start).named("v_cache.next")
          let queries = try qr.reshaped([batch, count, kvHeads, group, headDim])
            .transposed([0, 2, 1, 3, 4]).reshaped([batch, kvHeads, count * group, headDim])
          let scores =
            try matmul(queries, keys, transposeB: true) * (1.0 / Double(headDim).squareRoot())
          let rowMask = try mask.reshaped([batch, 1, count, 1, context])
            .broadcast(to: [batch, kvHeads, count, group, context])
            .reshaped([batch, kvHeads, count * group, context])
          let masked = try select(rowMask, scores, b.fill(-.infinity, shape: []))
          let probabilities = try softmax(masked)
          let context = try matmul(probabilities, values)
            .reshaped([batch, kvHeads, count, group, headDim]).transposed([0, 2, 1, 3, 4])
            .reshaped([batch, count, heads * headDim])
          return try linear(context, gguf + "attn_output.weight", dim, "o")
        }
        let afterAttention = try h + attention
        let mlp = try parts.mlp(rmsNorm(afterAttention, gguf + "ffn_norm.weight"), layer: layer)
        return try afterAttention + mlp
      }
    }
    let last = count == 1 ? h : try h.slice(start: [0, count - 1, 0], end: [batch, count, dim])
    return try b.finish(outputs: [
      try parts.head(last.reshaped([batch, dim]), embedding: embedding)
    ])
  }
}

extension LlamaConfig {
  /// Reads the hyper-parameters of a Llama-family GGUF file from its metadata alone.
  ///
  /// - Throws: `GGUFError` naming the missing or invalid key.
  public init(gguf file: GGUFFile) throws(GGUFError) {
    guard let architecture = file["general.architecture"]?.string else {
      throw GGUFError(message: "\(file.path): no general.architecture")
    }
    switch architecture {
    case "gpt2":
      self = try Gpt2Family.config(gguf: file)
      return
    case "gptneox":
      self = try GPTNeoXFamily.config(gguf: file)
      return
    case "llama", "mistral", "granite", "smollm": break
    default:
      throw GGUFError(
        message:
          "\(file.path): architecture '\(architecture)' is not supported (expected llama, gpt2 or gptneox)"
      )
    }
    let integer = { (key: String) throws(GGUFError) -> Int in
      try LlamaConfig.positive(key, in: file, architecture: architecture)
    }
    let embedding = try integer("embedding_length")
    let heads = try integer("attention.head_count")
    let vocabulary = try LlamaConfig.vocabularySize(of: file, architecture: architecture)
    self.init(
      vocabularySize: vocabulary, embeddingLength: embedding,
      layerCount: try integer("block_count"), headCount: heads,
      keyValueHeadCount: file["\(architecture).attention.head_count_kv"] == nil
        ? heads : try integer("attention.head_count_kv"),
      feedForwardLength: try integer("feed_forward_length"),
      ropeTheta: file["\(architecture).rope.freq_base"]?.number ?? 10_000,
      normEpsilon: file["\(architecture).attention.layer_norm_rms_epsilon"]?.number ?? 1e-5,
      tiedEmbeddings: file.info("output.weight") == nil, interleavedRope: true)
  }

  /// The positive integer `ARCH.key` of a GGUF file.
  static func positive(_ key: String, in file: GGUFFile, architecture: String) throws(GGUFError)
    -> Int
  {
    guard let value = file["\(architecture).\(key)"]?.integer, value > 0, value <= 1 << 40 else {
      throw GGUFError(message: "\(file.path): missing or invalid \(architecture).\(key)")
    }
    return value
  }

  /// A GGUF file's vocabulary size: `ARCH.vocab_size`, the tokens, or the embedding's rows.
  static func vocabularySize(of file: GGUFFile, architecture: String) throws(GGUFError) -> Int {
    if file["\(architecture).vocab_size"] != nil {
      return try positive("vocab_size", in: file, architecture: architecture)
    } else if let tokens = file["tokenizer.ggml.tokens"]?.array {
      return tokens.count
    } else if let embed = file.info("token_embd.weight") {
      return embed.shape[0]
    }
    throw GGUFError(message: "\(file.path): cannot tell the vocabulary size")
  }
}

/// A Llama-family model loaded from a GGUF file or a Hugging Face folder: its hyper-parameters and
/// its weights, memory-mapped.
public struct LlamaModel: Sendable {
  /// Where the weights come from.
  public enum Source: Sendable {
    case gguf(GGUFFile)
    case huggingFace(HuggingFaceFolder)
  }

  public let source: Source
  public let config: LlamaConfig

  /// The GGUF file, nil for a Hugging Face folder.
  public var file: GGUFFile? {
    if case .gguf(let file) = source { return file }
    return nil
  }

  /// The file or folder the model was opened from.
  public var path: String {
    switch source {
    case .gguf(let file): file.path
    case .huggingFace(let folder): folder.path
    }
  }

  /// Opens a GGUF model, or a Hugging Face folder when `path` is a folder, and reads its
  /// hyper-parameters.
  ///
  /// - Throws: `GGUFError` whose message names the file (for a folder: `config.json`, the shard
  ///   index or a shard) and the field that is missing or malformed.
  public init(path: String) throws(GGUFError) {
    if HuggingFaceFolder.isFolder(path) {
      do {
        let folder = try HuggingFaceFolder(path: path)
        source = .huggingFace(folder)
        config = try ModelFamily.config(folder.configFields)
      } catch {
        throw GGUFError(message: error.message)
      }
    } else {
      let file = try GGUFFile(path: path)
      source = .gguf(file)
      config = try LlamaConfig(gguf: file)
    }
  }

  /// The stored type of a weight, by the name the trace declares it with (its GGUF name); nil when
  /// the model has no such tensor or stores it in a dtype lorac does not read.
  public func storedType(of name: String) -> TensorType? {
    switch source {
    case .gguf(let file):
      guard let info = file.info(name), let dtype = info.dtype else { return nil }
      return TensorType(dtype, info.shape)
    case .huggingFace(let folder):
      guard let hf = huggingFaceName(ofGGUF: name, in: folder), let entry = folder.entry(hf),
        let dtype = HuggingFaceFolder.dtypes[entry.dtype]
      else { return nil }
      return TensorType(dtype, entry.shape)
    }
  }

  /// The Hugging Face tensor of a weight the trace declares by its GGUF name: the first of the
  /// family's names for it that the folder holds, else the usual one (nil: none is known).
  func huggingFaceName(ofGGUF name: String, in folder: HuggingFaceFolder) -> String? {
    let names = ModelFamily.huggingFaceNames(ofGGUF: name, architecture: config.architecture)
    return names.first(where: folder.contains) ?? names.first
  }

  /// A stored weight by the name the trace declares it with, sharing the file's memory.
  public func storedTensor(named name: String) throws(GGUFError) -> HostTensor {
    switch source {
    case .gguf(let file):
      return try file.tensor(named: name)
    case .huggingFace(let folder):
      guard let hf = huggingFaceName(ofGGUF: name, in: folder) else {
        throw GGUFError(message: "\(folder.path): no Hugging Face tensor is known for '\(name)'")
      }
      do {
        return try folder.tensor(named: hf)
      } catch {
        throw GGUFError(message: error.message)
      }
    }
  }

  /// Traces the forward graph (or, with `loss`, the loss graph) with each weight's dtype chosen
  /// by `weightType(precision)`.
  public func trace(
    batch: Int, sequence: Int, loss: Bool = false, precision: WeightPrecision = .f32
  ) throws(TraceError) -> Graph {
    try Llama.trace(
      config, batch: batch, sequence: sequence, loss: loss, weightType: weightType(precision))
  }

  /// The dtype the traces declare each weight with, by its GGUF name.
  ///
  /// Each weight matrix in its stored dtype, or with `precision` `.bf16` declared `bf16`. Vectors
  /// are declared as GGUF stores them (f32); a Hugging Face folder's f16 or bf16 vectors (norm
  /// weights) are declared f32 and widened at load.
  public func weightType(_ precision: WeightPrecision) -> (String) -> DType? {
    { name in
      guard let stored = storedType(of: name) else { return nil }
      if precision == .bf16 && stored.rank == 2 { return .bf16 }
      if case .huggingFace = source, stored.rank < 2 { return .f32 }
      return stored.dtype
    }
  }

  /// The weights a traced graph declares, bound by name: without copying where the graph
  /// declares a weight in its stored dtype, else decoded and rounded to the declared `bf16`
  /// (round to nearest even) or widened to the declared `f32`, one weight per core at a time.
  public func weights(for graph: Graph) throws(GGUFError) -> [String: HostTensor] {
    var result: [String: HostTensor] = [:]
    var converted: [(name: String, stored: HostTensor, dtype: DType)] = []
    for declaration in graph.declarations where declaration.kind == .constant {
      let stored = try storedTensor(named: declaration.name)
      let declared = graph.type(of: declaration.value)
      let widens = [.f16, .bf16].contains(stored.type.dtype)
      if stored.type == declared {
        result[declaration.name] = stored
      } else if declared == TensorType(.bf16, stored.type.shape)
        || (declared == TensorType(.f32, stored.type.shape) && widens)
      {
        converted.append((declaration.name, stored, declared.dtype))
      } else {
        var what = declaration.name
        if case .huggingFace(let folder) = source,
          let hf = huggingFaceName(ofGGUF: what, in: folder)
        {
          what = hf
        }
        throw GGUFError(
          message:
            "\(path): tensor '\(what)' is \(stored.type); the model's hyper-parameters make it "
            + "\(declared)")
      }
    }
    let rounded = Mutex([String: HostTensor]())
    let pending = converted
    DispatchQueue.concurrentPerform(iterations: pending.count) { index in
      let (name, stored, dtype) = pending[index]
      let floats = stored.floats()
      let tensor: HostTensor?
      if dtype == .f32 {
        tensor = HostTensor(shape: stored.type.shape, floats: floats)
      } else {
        let bits = floats.map(bfloat16FromFloat)
        tensor = bits.withUnsafeBytes { bytes in
          try? HostTensor(type: TensorType(.bf16, stored.type.shape), data: Data(bytes))
        }
      }
      rounded.withLock { $0[name] = tensor }
    }
    for (name, _, dtype) in converted {
      guard let tensor = rounded.withLock({ $0[name] }) else {
        throw GGUFError(message: "\(path): tensor '\(name)' could not be converted to \(dtype)")
      }
      result[name] = tensor
    }
    return result
  }

  /// What an adapter's `base_model_name_or_path` should say for this model: for a GGUF file, the
  /// Hugging Face repository it names (`GGUFFile.baseModelName`); for a folder, its absolute path.
  public var baseModelName: String {
    switch source {
    case .gguf(let file): file.baseModelName
    case .huggingFace(let folder): URL(fileURLWithPath: folder.path).standardizedFileURL.path
    }
  }
}

extension GGUFFile {
  /// What an adapter's `base_model_name_or_path` should say for this model: the Hugging Face
  /// repository the file names (`general.source.huggingface.repository`, or the repository of
  /// `general.source.url` or `general.base_model.0.repo_url`), else the file's absolute path.
  ///
  /// llama.cpp's converter writes these keys when it knows them; a file without them (SmolLM2's
  /// GGUF from PyPI has only `general.organization` and a display name) is named by its path.
  public var baseModelName: String {
    func repository(_ url: String?) -> String? {
      guard let url, let range = url.range(of: "huggingface.co/") else { return nil }
      let parts = url[range.upperBound...].split(separator: "/").prefix(2)
      return parts.count == 2 ? parts.joined(separator: "/") : nil
    }
    if let name = self["general.source.huggingface.repository"]?.string, !name.isEmpty {
      return name
    }
    return repository(self["general.source.url"]?.string)
      ?? repository(self["general.base_model.0.repo_url"]?.string)
      ?? URL(fileURLWithPath: path).standardizedFileURL.path
  }
}

/// What a model's frozen weights are computed in: the one precision enum of lorac (the training
/// commands' `--precision`).
public enum WeightPrecision: String, CaseIterable, Sendable, LosslessStringConvertible {
  /// Each weight as the file stores it (quantized blocks are decoded exactly to f32); f32
  /// products (OpenBLAS sgemm).
  case f32
  /// Weight matrices rounded to bf16 at load, activations rounded to bf16 for the base products
  /// (avx512_bf16 dot products, f32 sums); adapters, gradients and AdamW stay f32.
  case bf16

  public init?(_ description: String) { self.init(rawValue: description) }

  public var description: String { rawValue }
}
