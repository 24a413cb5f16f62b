import ArgumentParser
import Foundation
import Models
import Runtime

/// `lorac generate`: sample a continuation with KV-cache decoding, streaming tokens as they come.
struct Generate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Generate text after a prompt (KV-cache decoding), streaming it to stdout.",
    discussion: """
      BOS is added to --prompt when the model's tokenizer metadata asks for it (as llama.cpp does), \
      never to --prompt-ids. Stops at end-of-sequence tokens unless --ignore-eos, or at a --stop \
      string. With --json prints {"prompt_ids", "ids", "text", "prefill_tokens_per_s", \
      "decode_tokens_per_s"} instead of streaming.
      """)

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "A PEFT adapter directory.")
  var adapter: String?

  @Option(help: "The prompt text.")
  var prompt: String?

  @Option(
    name: .customLong("prompt-ids"), parsing: .unconditional,
    help: "The prompt as comma-separated token ids.")
  var promptIDs: String?

  @Flag(help: "Wrap --prompt as a user message in the model's chat template.")
  var chat = false

  @Option(parsing: .unconditional, help: "Tokens to generate at most.")
  var maxTokens = 128

  @Option(parsing: .unconditional, help: "0 is greedy.")
  var temperature = 0.0

  @Option(parsing: .unconditional, help: "Keep the k most likely tokens.")
  var topK: Int?

  @Option(parsing: .unconditional, help: "Keep the most likely tokens up to this probability mass.")
  var topP: Double?

  @Option(parsing: .unconditional, help: "Penalty for tokens among the last 64 (1 is off).")
  var repeatPenalty = 1.0

  @Option(help: "Seed of the sampler.")
  var seed: UInt64 = 0

  @Option(help: "Stop when the generated text contains this string (repeatable).")
  var stop: [String] = []

  @Flag(help: "Do not stop at end-of-sequence tokens.")
  var ignoreEos = false

  @Option(parsing: .unconditional, help: "Threads (default: all cores).")
  var threads: Int?

  @Flag(
    help:
      "Round activations to int8 against q8_0/q4_1 weights, as llama.cpp does (less exact; on CPUs with avx512_vnni the default, f32-accurate path is about as fast)."
  )
  var int8Activations = false

  @Flag(help: "Print one JSON object at the end instead of streaming.")
  var json = false

  func validate() throws {
    if (prompt == nil) == (promptIDs == nil) {
      throw ValidationError("give exactly one of --prompt and --prompt-ids")
    }
    if chat && prompt == nil { throw ValidationError("--chat needs --prompt") }
    if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
    if !(temperature >= 0 && temperature.isFinite) {
      throw ValidationError("--temperature must not be negative, got \(temperature)")
    }
    if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1, got \(topK)") }
    if let topP, !(topP > 0 && topP <= 1) {
      throw ValidationError("--top-p must be in (0, 1], got \(topP)")
    }
    if !(repeatPenalty > 0) {
      throw ValidationError("--repeat-penalty must be positive, got \(repeatPenalty)")
    }
    try validateThreads(threads)
  }

  func run() throws {
    Threads.set(threads)
    let loaded: LlamaModel
    let tokenizer: Tokenizer
    do {
      loaded = try LlamaModel(path: model)
      tokenizer = try Tokenizer(gguf: loaded.file)
    } catch {
      fail(error.message)
    }
    var ids: [Int32]
    if let promptIDs {
      ids = parseIDs(promptIDs, option: "--prompt-ids")
    } else {
      var text = prompt ?? ""
      if chat {
        guard let template = tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:)) else {
          fail("--chat: the model has no ChatML chat template")
        }
        text = template.render(
          [ChatMessage(role: "user", content: text)], addGenerationPrompt: true)
      }
      ids = tokenizer.encode(text, parseSpecial: chat)
      if tokenizer.addsBeginOfSequence, let bos = tokenizer.beginOfSequence {
        ids.insert(bos, at: 0)
      }
    }
    if ids.isEmpty { fail("the prompt has no tokens") }
    let vocabulary = tokenizer.tokens.count
    if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
      fail("--prompt-ids: token \(bad) is out of range 0..<\(vocabulary)")
    }
    let endTokens: Set<Int32> =
      ignoreEos ? [] : Set([tokenizer.endOfSequence, 0].compactMap { $0 })
    let limit = loaded.contextLength
    if ids.count >= limit {
      fail(
        "the prompt has \(ids.count) tokens; the model's context of \(limit) leaves no room to "
          + "generate (at most \(limit - 1) prompt tokens)")
    }
    // Generation stops at the end of the context.
    let context = min(ids.count + maxTokens, limit)
    let session = DecodeSession(
      modelPath: model, context: min(limit, (context + 15) / 16 * 16), adapter: adapter,
      target: Target(int8Activations: int8Activations))
    let sampling = SamplingOptions(
      temperature: temperature, topK: topK, topP: topP, repetitionPenalty: repeatPenalty, seed: seed
    )
    // Streaming: print what is certain so far: complete UTF-8 characters, minus an end that
    // could still become a stop string.
    let holdBack = max(0, (stop.map(\.count).max() ?? 0) - 1)
    var streamed: [Int32] = []
    var printed = 0
    func flush(final: Bool) {
      var text = tokenizer.decode(streamed.filter { !endTokens.contains($0) })
      if let cut = stop.compactMap({ text.range(of: $0)?.lowerBound }).min() {
        text = String(text[..<cut])
      } else if !final {
        if text.hasSuffix("\u{FFFD}") { text.removeLast() }
        text = String(text.dropLast(holdBack))
      }
      guard text.count > printed else { return }
      FileHandle.standardOutput.write(Data(String(text.dropFirst(printed)).utf8))
      printed = text.count
    }
    let result: DecodeSession.Result
    do {
      result = try session.generate(
        prompt: ids, maxTokens: maxTokens, sampling: sampling,
        stop: { generated in
          if let last = generated.last, endTokens.contains(last) { return true }
          let text = tokenizer.decode(generated)
          return stop.contains { text.contains($0) }
        },
        emit: { token in
          guard !json else { return }
          streamed.append(token)
          flush(final: false)
        })
    } catch {
      fail("\(error)")
    }
    var generated = result.ids
    if let last = generated.last, endTokens.contains(last) { generated.removeLast() }
    var text = tokenizer.decode(generated)
    for marker in stop {
      if let range = text.range(of: marker) { text = String(text[..<range.lowerBound]) }
    }
    if json {
      print(
        "{\"prompt_ids\": \(ids.map(Int.init)), \"ids\": \(result.ids.map(Int.init)), \"text\": \(jsonString(text)), "
          + "\"prefill_tokens_per_s\": \(Double(ids.count) / result.prefillSeconds), "
          + "\"decode_tokens_per_s\": \(Double(result.ids.count) / max(result.decodeSeconds, 1e-9))}"
      )
    } else {
      flush(final: true)
      print()
    }
  }
}
