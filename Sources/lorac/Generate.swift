import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// `lorac generate`: sample a continuation with KV-cache decoding, streaming tokens as they come.
struct Generate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Generate text after a prompt (KV-cache decoding), streaming it to stdout.",
    discussion: """
      BOS is added to --prompt when the model's tokenizer metadata asks for it (as llama.cpp does), \
      never to --prompt-ids. Stops at end-of-sequence tokens unless --ignore-eos, or at a --stop \
      string. With --json prints {"prompt_ids", "ids", "text", "prefill_tokens_per_s", \
      "decode_tokens_per_s", "logprobs"} instead of streaming; "logprobs" holds each generated \
      token's log-probability under the model (the log-softmax of its logits, before temperature \
      and penalties; with --adapter, the adapted model's).
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(
    help:
      "A PEFT adapter directory; repeat as DIR:WEIGHT to sum several adapters' branches with those weights."
  )
  var adapter: [String] = []

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

  @OptionGroup var threads: ThreadsOption

  @OptionGroup var adapterScale: AdapterScaleOption

  @OptionGroup(title: "Hook points") var hooks: HookOptions

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
    do {
      try sampling.check()
    } catch {
      throw ValidationError(error.message)
    }
    try threads.check()
    try adapterScale.check(adapters: adapter)
    try hooks.check()
  }

  /// The sampler's options from the flags.
  private var sampling: SamplingOptions {
    SamplingOptions(
      temperature: temperature, topK: topK, topP: topP, repetitionPenalty: repeatPenalty, seed: seed
    )
  }

  func run() throws {
    threads.apply()
    let loaded = try LlamaModel.open(model)
    let tokenizer = try loaded.tokenizer()
    let ids =
      try promptIDs.map { text throws(SessionError) in try parseIDs(text, option: "--prompt-ids") }
      ?? tokenizer.prompt(prompt ?? "", chat: chat)
    try loaded.checkPrompt(ids, vocabulary: tokenizer.tokens.count, option: "--prompt-ids")
    // Generation stops at the end of the context.
    let context = min(ids.count + maxTokens, loaded.contextLength)
    let session = try DecodeSession(
      model: loaded, context: min(loaded.contextLength, (context + 15) / 16 * 16),
      adapter: try loadAdapters(adapter, for: loaded), hooks: try hooks.hooks(),
      target: Target(int8Activations: int8Activations))
    if !adapter.isEmpty { try session.setAdapterScale(adapterScale.scale) }
    let generator = TextGenerator(
      session: session, tokenizer: tokenizer, stopStrings: stop, ignoreEndOfSequence: ignoreEos)
    let output = try generator.generate(
      prompt: ids, maxTokens: maxTokens, sampling: sampling,
      stream: json ? nil : { FileHandle.standardOutput.write(Data($0.utf8)) })
    try hooks.write(output.captures)
    if json {
      print(
        "{\"prompt_ids\": \(ids.map(Int.init)), \"ids\": \(output.ids.map(Int.init)), \"text\": \(jsonString(output.text)), "
          + "\"prefill_tokens_per_s\": \(Double(ids.count) / output.prefillSeconds), "
          + "\"decode_tokens_per_s\": \(Double(output.decodeSteps) / max(output.decodeSeconds, 1e-9)), "
          + "\"logprobs\": [\(output.logprobs.map { $0.isFinite ? "\($0)" : "null" }.joined(separator: ", "))]}"
      )
    } else {
      print()
    }
  }
}
