import ArgumentParser
import Dispatch
import Foundation
import Models
import Runtime

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

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "A PEFT adapter directory.")
  var adapter: String?

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

  @Option(parsing: .unconditional, help: "Threads (default: all cores).")
  var threads: Int?

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
    var cases: [(prompt: String, answer: String)] = []
    // Where each case comes from, for messages: `FILE:LINE` or the task.
    var origins: [String] = []
    if let data {
      let lines: [(line: Int, object: JSONValue)]
      do {
        lines = try Dataset.jsonLines(path: data)
      } catch {
        fail(error.message)
      }
      for (line, object) in lines {
        guard case .string(let prompt)? = object["prompt"],
          case .string(let completion)? = object["completion"]
        else {
          let found = ["prompt", "completion"].map { key in
            object[key].map { "\"\(key)\" is \($0.kindName)" } ?? "no \"\(key)\""
          }
          fail(
            "\(data):\(line): expected string \"prompt\" and \"completion\" "
              + "(\(found.joined(separator: ", ")))")
        }
        cases.append((prompt, completion))
        origins.append("\(data):\(line)")
      }
    } else {
      cases = Dataset.mysteryFunction(count: count, seed: seed)
      origins = cases.indices.map { "--task example \($0 + 1)" }
    }
    let start = DispatchTime.now().uptimeNanoseconds
    // Loss over the completion tokens, masked as in training.
    let scored = cases.map {
      Dataset.completion(prompt: $0.prompt, completion: $0.answer, tokenizer: tokenizer)
    }
    let limit = loaded.contextLength
    if let index = scored.indices.first(where: { scored[$0].ids.count > limit }) {
      fail(
        "\(origins[index]): the prompt and completion have \(scored[index].ids.count) tokens "
          + "(with end-of-sequence), more than the model's context of \(limit)")
    }
    let longestScored = scored.map { $0.ids.count - 1 }.max() ?? 1
    let scorer = LossSession(
      modelPath: model, adapter: adapter, batch: min(8, scored.count),
      sequence: max(2, longestScored))
    let (total, weighted) = scorer.score(scored)
    let loss = total / max(weighted, 1)
    let perplexity = exp(loss)
    let prompts = cases.map { tokenizer.encode($0.prompt) }
    let longest =
      zip(prompts, cases).map { $0.count + tokenizer.encode($1.answer).count + 4 }.max() ?? 16
    let session = DecodeSession(
      modelPath: model, context: min(limit, (longest + 15) / 16 * 16), adapter: adapter)
    let newline = tokenizer.encode("\n")
    var correct = 0
    var samples: [String] = []
    let limits = cases.map { tokenizer.encode($0.answer).count + 4 }
    var outputs: [[Int32]] = []
    for first in stride(from: 0, to: prompts.count, by: batch) {
      let rows = first..<min(first + batch, prompts.count)
      // Near the end of the context a continuation is cut where the cache ends.
      let room = session.context - (rows.map { prompts[$0].count }.max() ?? 0)
      do {
        outputs += try session.greedyBatch(
          prompts: Array(prompts[rows]), maxTokens: limits[rows].map { min($0, room) },
          stop: { generated in
            guard let last = generated.last else { return false }
            return last == tokenizer.endOfSequence || last == 0 || newline.contains(last)
          })
      } catch {
        fail("\(error)")
      }
    }
    for (ids, item) in zip(outputs, cases) {
      var output = ids
      while let last = output.last,
        last == tokenizer.endOfSequence || last == 0 || newline.contains(last)
      {
        output.removeLast()
      }
      let text = tokenizer.decode(output)
      if text == item.answer { correct += 1 }
      let line =
        "\(item.prompt.debugDescription) -> \(text.debugDescription) (expected \(item.answer))"
      if showFailures {
        if text != item.answer { samples.append("wrong: " + line) }
      } else if samples.count < 3 {
        samples.append(line)
      }
    }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let accuracy = Double(correct) / Double(cases.count)
    if json {
      print(
        "{\"count\": \(cases.count), \"examples\": \(cases.count), \"loss\": \(loss), \"perplexity\": \(perplexity.isFinite ? "\(perplexity)" : "null"), \"tokens\": \(Int(weighted)), \"exact_match\": \(accuracy), \"correct\": \(correct), \"seconds\": \(seconds)}"
      )
    } else {
      for sample in samples { print(sample) }
      print(
        String(
          format: "loss %.4f  perplexity %.3f  (mean over %d completion tokens)", loss, perplexity,
          Int(weighted)))
      print(
        String(
          format: "exact match %d/%d = %.1f%% (%.1f s)", correct, cases.count, accuracy * 100,
          seconds))
    }
  }
}
