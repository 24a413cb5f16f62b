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

  @Option(help: "Examples to generate for --task (fresh ones: a seed the training does not use).")
  var count = 200

  @Option(help: "Seed of the generated examples.")
  var seed: UInt64 = 1_000_003

  @Option(help: "Prompts decoded together (greedy) for the exact-match score.")
  var batch = 8

  @Option(help: "Threads (default: all cores).")
  var threads: Int?

  @Flag(help: "Print one JSON object.")
  var json = false

  func validate() throws {
    if (data == nil) == (task == nil) {
      throw ValidationError("give exactly one of --data and --task")
    }
    if let task, task != "mystery_function" {
      throw ValidationError("unknown --task '\(task)' (known: mystery_function)")
    }
    if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
  }

  func run() throws {
    Threads.set(threads)
    let tokenizer: Tokenizer
    do {
      tokenizer = try Tokenizer(gguf: GGUFFile(path: model))
    } catch {
      fail(error.message)
    }
    var cases: [(prompt: String, answer: String)] = []
    if let data {
      guard let contents = FileManager.default.contents(atPath: data) else {
        fail("\(data): cannot read the file")
      }
      for (index, line) in contents.split(separator: UInt8(ascii: "\n")).enumerated() {
        guard let object = try? JSONValue.parse(Array(line)),
          case .string(let prompt)? = object["prompt"],
          case .string(let completion)? = object["completion"]
        else { fail("\(data):\(index + 1): expected {\"prompt\": ..., \"completion\": ...}") }
        cases.append((prompt, completion))
      }
    } else {
      cases = Dataset.mysteryFunction(count: count, seed: seed)
    }
    let start = DispatchTime.now().uptimeNanoseconds
    // Loss over the completion tokens, masked as in training.
    let scored = cases.map {
      Dataset.completion(prompt: $0.prompt, completion: $0.answer, tokenizer: tokenizer)
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
      modelPath: model, context: (longest + 15) / 16 * 16, adapter: adapter)
    let newline = tokenizer.encode("\n")
    var correct = 0
    var samples: [String] = []
    let limits = cases.map { tokenizer.encode($0.answer).count + 4 }
    var outputs: [[Int32]] = []
    for first in stride(from: 0, to: prompts.count, by: batch) {
      let rows = first..<min(first + batch, prompts.count)
      do {
        outputs += try session.greedyBatch(
          prompts: Array(prompts[rows]), maxTokens: Array(limits[rows]),
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
      if samples.count < 3 {
        samples.append(
          "\(item.prompt.debugDescription) -> \(text.debugDescription) (expected \(item.answer))")
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
