import ArgumentParser
import Models

/// `lorac inspect`: what a GGUF model holds.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a GGUF model's architecture, hyper-parameters, tokenizer and tensor table.")

  @Argument(help: "The GGUF model.")
  var model: String

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  func run() throws {
    let file: GGUFFile
    let config: LlamaConfig
    let tokenizer: Tokenizer
    do {
      file = try GGUFFile(path: model)
      config = try LlamaConfig(gguf: file)
      tokenizer = try Tokenizer(gguf: file)
    } catch {
      fail(error.message)
    }
    if json {
      printJSON(file, config, tokenizer)
    } else {
      printText(file, config, tokenizer)
    }
  }

  private func printJSON(_ file: GGUFFile, _ config: LlamaConfig, _ tokenizer: Tokenizer) {
    let (architecture, name, totalBytes, parameters) = summary(file)
    let tensors = file.tensors.map { t in
      "{\"name\": \(jsonString(t.name)), \"shape\": \(t.shape), \"dtype\": \"\(t.typeName)\", \"bytes\": \(t.byteCount)}"
    }
    print(
      """
      {"path": \(jsonString(model)), "version": \(file.version), "architecture": \(jsonString(architecture)), \
      "name": \(jsonString(name)), "parameters": \(parameters), "tensor_bytes": \(totalBytes), \
      "hyperparameters": {"vocab_size": \(config.vocabularySize), "embedding_length": \(config.embeddingLength), \
      "block_count": \(config.layerCount), "head_count": \(config.headCount), \
      "head_count_kv": \(config.keyValueHeadCount), "feed_forward_length": \(config.feedForwardLength), \
      "rope_freq_base": \(config.ropeTheta), "rms_norm_eps": \(config.normEpsilon), \
      "tied_embeddings": \(config.tiedEmbeddings)}, \
      "tokenizer": {"model": "gpt2", "pre": \(jsonString(tokenizer.preTokenizer)), "tokens": \(tokenizer.tokens.count), \
      "bos": \(tokenizer.beginOfSequence.map(String.init) ?? "null"), "eos": \(tokenizer.endOfSequence.map(String.init) ?? "null"), \
      "add_bos": \(tokenizer.addsBeginOfSequence), "chat_template": \(tokenizer.chatTemplate == nil ? "null" : "\"chatml\"")}, \
      "tensors": [\(tensors.joined(separator: ", "))]}
      """)
  }

  private func printText(_ file: GGUFFile, _ config: LlamaConfig, _ tokenizer: Tokenizer) {
    let (architecture, name, totalBytes, parameters) = summary(file)
    print("\(model): GGUF v\(file.version), \(architecture) \"\(name)\"")
    print("  \(parameters) parameters in \(file.tensors.count) tensors, \(totalBytes) bytes")
    print(
      "  vocab \(config.vocabularySize), embedding \(config.embeddingLength), \(config.layerCount) layers, "
        + "\(config.headCount) heads (\(config.keyValueHeadCount) key/value), ffn \(config.feedForwardLength)"
    )
    print(
      "  rope theta \(config.ropeTheta), rms eps \(config.normEpsilon), "
        + (config.tiedEmbeddings ? "tied embeddings" : "separate output head"))
    let bos = tokenizer.beginOfSequence.map { "\($0) \(tokenizer.tokens[Int($0)])" } ?? "none"
    let eos = tokenizer.endOfSequence.map { "\($0) \(tokenizer.tokens[Int($0)])" } ?? "none"
    print(
      "  tokenizer: gpt2 BPE, pre-tokenizer \(tokenizer.preTokenizer), \(tokenizer.tokens.count) tokens, "
        + "bos \(bos) (\(tokenizer.addsBeginOfSequence ? "added" : "not added")), eos \(eos)")
    print("  tensors:")
    for tensor in file.tensors {
      let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
      print(
        "    \(tensor.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(shape.padding(toLength: 14, withPad: " ", startingAt: 0)) \(tensor.typeName.padding(toLength: 5, withPad: " ", startingAt: 0)) \(tensor.byteCount)"
      )
    }
  }

  /// The architecture, the model's name, the tensors' bytes and their element count.
  private func summary(_ file: GGUFFile) -> (String, String, Int, Int) {
    (
      file["general.architecture"]?.string ?? "?", file["general.name"]?.string ?? "",
      file.tensors.map(\.byteCount).reduce(0, +),
      file.tensors.map { $0.shape.reduce(1, *) }.reduce(0, +)
    )
  }
}
