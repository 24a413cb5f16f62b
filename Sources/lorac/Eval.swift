import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// `lorac eval`: mean token loss, perplexity and greedy exact-match accuracy of completions.
struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Loss, perplexity and exact-match accuracy on --data or a --task; or the mean --reward of sampled completions.",
    discussion: """
      The loss is the mean next-token cross-entropy over the completion tokens and the \
      end-of-sequence token after them (the tokens training learns); perplexity is its \
      exponential. Each prompt is also decoded greedily (KV cache) until end-of-sequence, a \
      newline or the answer's length plus 4 tokens; a completion matches when it equals the \
      expected text exactly. With --reward (or --reward-cmd) instead, --count completions of \
      --gen-len tokens are sampled after --prefix as `lorac rlhf` samples its rollouts \
      (--temperature, --top-k, --batch rows at a time) and scored; it prints their mean reward.
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(
    help:
      "A PEFT adapter directory; repeat as DIR:WEIGHT to sum several adapters' branches with those weights."
  )
  var adapter: [String] = []

  @Option(help: "A jsonl file of {\"prompt\", \"completion\"} lines.")
  var data: String?

  @Option(help: "A built-in task instead of --data: mystery_function.")
  var task: String?

  @Option(
    parsing: .unconditional,
    help: "Examples to generate for --task (fresh ones: a seed the training does not use).")
  var count = 200

  @Option(help: "Seed of the generated examples.")
  var seed: UInt64 = 1_000_003

  @Option(
    parsing: .unconditional, help: "Prompts decoded together (greedy) for the exact-match score.")
  var batch = 8

  @OptionGroup var threads: ThreadsOption

  @OptionGroup var adapterScale: AdapterScaleOption

  @Option(
    help: "Instead of --data or --task: score sampled completions with char-count:C or length.")
  var reward: String?

  @Option(help: "Instead of --reward: a reward program (JSON lines in, one number per line out).")
  var rewardCmd: String?

  @Option(help: "With --reward: the text every sample starts with.")
  var prefix = RLHFConfiguration().prefix

  @Option(parsing: .unconditional, help: "With --reward: tokens sampled after the prefix.")
  var genLen = RLHFConfiguration().generated

  @Option(parsing: .unconditional, help: "With --reward: the sampling temperature.")
  var temperature = RLHFConfiguration().temperature

  @Option(parsing: .unconditional, help: "With --reward: sample among the k most likely tokens.")
  var topK = RLHFConfiguration().topK ?? 10

  @Flag(help: "Print one JSON object.")
  var json = false

  @Flag(help: "Print every wrong continuation (prompt, output, expected), not only 3 samples.")
  var showFailures = false

  func validate() throws {
    let sources = [data, task, reward, rewardCmd].compactMap { $0 }.count
    if sources != 1 {
      throw ValidationError("give exactly one of --data, --task, --reward and --reward-cmd")
    }
    if let reward {
      do { _ = try RewardFunction(parsing: reward) } catch { throw ValidationError(error.message) }
    }
    if let task, task != "mystery_function" {
      throw ValidationError("unknown --task '\(task)' (known: mystery_function)")
    }
    if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
    try threads.check()
    try adapterScale.check(adapters: adapter)
  }

  func run() throws {
    threads.apply()
    if reward != nil || rewardCmd != nil { return try runReward() }
    let loaded = try LlamaModel.open(model)
    let tokenizer = try loaded.tokenizer()
    let cases =
      try data.map { path throws(SessionError) in try EvaluationCase.read(jsonl: path) }
      ?? EvaluationCase.mysteryFunction(count: count, seed: seed)
    // Cases too long for the context are named before the adapter is read.
    let scored = try Evaluator.scoredExamples(cases, model: loaded, tokenizer: tokenizer)
    let evaluator = Evaluator(
      model: loaded, tokenizer: tokenizer, adapter: try loadAdapters(adapter, for: loaded),
      adapterScale: adapterScale.scale)
    let result = try evaluator.evaluate(cases, scored: scored, batch: batch)
    if json {
      let perplexity = result.perplexity.isFinite ? "\(result.perplexity)" : "null"
      print(
        "{\"count\": \(cases.count), \"examples\": \(cases.count), \"loss\": \(result.loss), \"perplexity\": \(perplexity), \"tokens\": \(result.tokens), \"exact_match\": \(result.exactMatch), \"correct\": \(result.correct), \"seconds\": \(result.seconds)}"
      )
      return
    }
    var samples: [String] = []
    for (text, item) in zip(result.outputs, cases) {
      let line =
        "\(item.prompt.debugDescription) -> \(text.debugDescription) (expected \(item.answer))"
      if showFailures {
        if text != item.answer { samples.append("wrong: " + line) }
      } else if samples.count < 3 {
        samples.append(line)
      }
    }
    for sample in samples { print(sample) }
    print(
      String(
        format: "loss %.4f  perplexity %.3f  (mean over %d completion tokens)", result.loss,
        result.perplexity, result.tokens))
    print(
      String(
        format: "exact match %d/%d = %.1f%% (%.1f s)", result.correct, cases.count,
        result.exactMatch * 100, result.seconds))
  }

  /// `--reward`: the mean reward of `--count` sampled completions.
  private func runReward() throws {
    let function =
      try rewardCmd.map { RewardFunction.command($0) } ?? RewardFunction(parsing: reward ?? "")
    let loaded = try LlamaModel.open(model)
    let evaluation = RewardEvaluation(
      prefix: prefix, reward: function, samples: count, batch: batch, generated: genLen,
      temperature: temperature, topK: topK, seed: seed)
    let result = try evaluation.run(
      model: loaded, tokenizer: try loaded.tokenizer(),
      adapter: try loadAdapters(adapter, for: loaded), adapterScale: adapterScale.scale)
    if json {
      let rewards = result.rewards.map { "\($0)" }.joined(separator: ", ")
      let samples = result.completions.prefix(3).map { jsonString(prefix + $0) }
        .joined(separator: ", ")
      print(
        "{\"count\": \(count), \"reward\": \(jsonString(function.description)), \"reward_mean\": \(result.mean), \"reward_std\": \(result.standardDeviation), \"rewards\": [\(rewards)], \"samples\": [\(samples)], \"seconds\": \(result.seconds)}"
      )
      return
    }
    for completion in result.completions.prefix(3) { print((prefix + completion).debugDescription) }
    print(
      String(
        format: "reward %@: mean %.3f (sd %.3f) over %d samples of %d tokens (%.1f s)",
        function.description, result.mean, result.standardDeviation, count, genLen,
        result.seconds))
  }
}
