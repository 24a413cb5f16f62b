import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// `lorac eval`: mean token loss, perplexity and greedy exact-match accuracy of completions.
struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Loss, perplexity and greedy exact-match accuracy of completions on --data or a --task.",
    discussion: """
      The loss is the mean next-token cross-entropy over the completion tokens and the \
      end-of-sequence token after them (the tokens training learns); perplexity is its \
      exponential. Each prompt is also decoded greedily (KV cache) until end-of-sequence, a \
      newline or the answer's length plus 4 tokens; a completion matches when it equals the \
      expected text exactly.
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

  @Flag(help: "Print one JSON object.")
  var json = false

  @Flag(help: "Print every wrong continuation (prompt, output, expected), not only 3 samples.")
  var showFailures = false

  func validate() throws {
    if (data == nil) == (task == nil) {
      throw ValidationError("give exactly one of --data and --task")
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
}
