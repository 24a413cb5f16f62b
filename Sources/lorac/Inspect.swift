import ArgumentParser
import Models
import Sessions

/// `lorac inspect`: what a GGUF model or a Hugging Face folder holds.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Show a model's architecture, hyper-parameters, tokenizer and tensor table (a GGUF file or a Hugging Face folder)."
  )

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  /// One row of the tensor table.
  private typealias Row = (name: String, shape: [Int], dtype: String, bytes: Int)

  func run() throws {
    let loaded = try LlamaModel.open(model)
    let tokenizer = try loaded.tokenizer()
    let (format, architecture, name, rows) = summary(loaded)
    let config = loaded.config
    let parameters = rows.map { $0.shape.reduce(1, *) }.reduce(0, +)
    let totalBytes = rows.map(\.bytes).reduce(0, +)
    if json {
      let tensors = rows.map { t in
        "{\"name\": \(jsonString(t.name)), \"shape\": \(t.shape), \"dtype\": \"\(t.dtype)\", \"bytes\": \(t.bytes)}"
      }
      print(
        """
        {"path": \(jsonString(model)), \(format.json), "architecture": \(jsonString(architecture)), \
        "name": \(jsonString(name)), "parameters": \(parameters), "tensor_bytes": \(totalBytes), \
        "hyperparameters": {"vocab_size": \(config.vocabularySize), "embedding_length": \(config.embeddingLength), \
        "block_count": \(config.layerCount), "head_count": \(config.headCount), \
        "head_count_kv": \(config.keyValueHeadCount), "feed_forward_length": \(config.feedForwardLength), \
        "rope_freq_base": \(config.ropeTheta), "rms_norm_eps": \(config.normEpsilon), \
        "tied_embeddings": \(config.tiedEmbeddings)}, \
        "tokenizer": {"model": \(jsonString(tokenizer.modelName)), "pre": \(jsonString(tokenizer.preTokenizer)), "tokens": \(tokenizer.tokens.count), \
        "bos": \(tokenizer.beginOfSequence.map(String.init) ?? "null"), "eos": \(tokenizer.endOfSequence.map(String.init) ?? "null"), \
        "add_bos": \(tokenizer.addsBeginOfSequence), "chat_template": \(chatTemplate(tokenizer))}, \
        "tensors": [\(tensors.joined(separator: ", "))]}
        """)
      return
    }
    print("\(model): \(format.text), \(architecture) \"\(name)\"")
    print("  \(parameters) parameters in \(rows.count) tensors, \(totalBytes) bytes")
    print(
      "  vocab \(config.vocabularySize), embedding \(config.embeddingLength), \(config.layerCount) layers, "
        + "\(config.headCount) heads (\(config.keyValueHeadCount) key/value), ffn \(config.feedForwardLength)"
    )
    let head = config.tiedEmbeddings ? "tied embeddings" : "separate output head"
    switch config.architecture {
    case .llama:
      print("  rope theta \(config.ropeTheta), rms eps \(config.normEpsilon), \(head)")
    case .gpt2:
      print(
        "  \(config.positionCount) learned positions, layer norm eps \(config.normEpsilon), "
          + "\(config.gelu) GELU, \(head)")
    case .gptNeoX:
      print(
        "  rope theta \(config.ropeTheta) on \(config.rotaryDimension ?? config.headDimension) of "
          + "\(config.headDimension) per head, layer norm eps \(config.normEpsilon), "
          + "\(config.parallelResidual ? "parallel" : "sequential") residual, \(config.gelu) GELU, "
          + head)
    }
    let bos = tokenizer.beginOfSequence.map { "\($0) \(tokenizer.tokens[Int($0)])" } ?? "none"
    let eos = tokenizer.endOfSequence.map { "\($0) \(tokenizer.tokens[Int($0)])" } ?? "none"
    print(
      "  tokenizer: gpt2 BPE, pre-tokenizer \(tokenizer.preTokenizer), \(tokenizer.tokens.count) tokens, "
        + "bos \(bos) (\(tokenizer.addsBeginOfSequence ? "added" : "not added")), eos \(eos)")
    print("  tensors:")
    let width = max(28, (rows.map(\.name.count).max() ?? 0) + 1)
    for tensor in rows {
      let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
      print(
        "    \(tensor.name.padding(toLength: width, withPad: " ", startingAt: 0)) \(shape.padding(toLength: 14, withPad: " ", startingAt: 0)) \(tensor.dtype.padding(toLength: 5, withPad: " ", startingAt: 0)) \(tensor.bytes)"
      )
    }
  }

  /// The chat family as JSON: null without a template, `"unrecognised"` for one lorac does not
  /// render.
  private func chatTemplate(_ tokenizer: Tokenizer) -> String {
    guard tokenizer.chatTemplate != nil else { return "null" }
    let format = try? tokenizer.chatFormat()
    return jsonString(format?.identifier ?? "unrecognised")
  }

  /// The format (text and JSON field), the architecture, the model's name and the tensor table.
  private func summary(_ loaded: LlamaModel) -> (
    format: (text: String, json: String), architecture: String, name: String, rows: [Row]
  ) {
    switch loaded.source {
    case .gguf(let file):
      return (
        ("GGUF v\(file.version)", "\"version\": \(file.version)"),
        file["general.architecture"]?.string ?? "?", file["general.name"]?.string ?? "",
        file.tensors.map { ($0.name, $0.shape, $0.typeName, $0.byteCount) }
      )
    case .huggingFace(let folder):
      var type = "?"
      if case .string(let text)? = folder.config["model_type"] { type = text }
      var name = ""
      for key in ["_name_or_path", "_model_name_or_path"] {
        if case .string(let text)? = folder.config[key] { name = text }
      }
      let shards = folder.shards.count
      return (
        (
          "Hugging Face folder, \(shards) safetensors file\(shards == 1 ? "" : "s")",
          "\"format\": \"huggingface\", \"shards\": \(shards)"
        ),
        type, name,
        folder.entries.map { ($0.name, $0.shape, $0.dtype.lowercased(), $0.end - $0.begin) }
      )
    }
  }
}
