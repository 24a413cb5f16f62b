import Dispatch
import Foundation
import IR
import Models
import Runtime

/// One prompt and the completion expected after it, with where it came from (`FILE:LINE`, or
/// the task's example number) for messages.
public struct EvaluationCase: Sendable, Hashable {
  public var prompt: String
  public var answer: String
  public var origin: String

  public init(prompt: String, answer: String, origin: String) {
    self.prompt = prompt
    self.answer = answer
    self.origin = origin
  }

  /// The `{"prompt", "completion"}` lines of a jsonl file.
  public static func read(jsonl path: String) throws(SessionError) -> [EvaluationCase] {
    let lines: [(line: Int, object: JSONValue)]
    do {
      lines = try Dataset.jsonLines(path: path)
    } catch {
      throw SessionError(error.message)
    }
    var cases: [EvaluationCase] = []
    for (line, object) in lines {
      guard case .string(let prompt)? = object["prompt"],
        case .string(let completion)? = object["completion"]
      else {
        let found = ["prompt", "completion"].map { key in
          object[key].map { "\"\(key)\" is \($0.kindName)" } ?? "no \"\(key)\""
        }
        throw SessionError(
          "\(path):\(line): expected string \"prompt\" and \"completion\" "
            + "(\(found.joined(separator: ", ")))")
      }
      cases.append(EvaluationCase(prompt: prompt, answer: completion, origin: "\(path):\(line)"))
    }
    return cases
  }

  /// `count` fresh examples of the tutorials' mystery_function task.
  public static func mysteryFunction(count: Int, seed: UInt64) -> [EvaluationCase] {
    Dataset.mysteryFunction(count: count, seed: seed).enumerated().map {
      EvaluationCase(prompt: $1.prompt, answer: $1.answer, origin: "--task example \($0 + 1)")
    }
  }
}

/// What an evaluation measured.
public struct EvaluationResult: Sendable {
  /// The mean next-token cross-entropy over the completion tokens and the end-of-sequence token
  /// after them, and its exponential.
  public var loss: Double
  public var perplexity: Double
  /// The weighted tokens the loss is the mean of.
  public var tokens: Int
  /// The greedy continuation of each prompt (end tokens and the newline that ends it removed).
  public var outputs: [String]
  /// How many continuations equal their expected completion exactly.
  public var correct: Int
  public var seconds: Double

  public var exactMatch: Double { Double(correct) / Double(max(outputs.count, 1)) }
}

/// Loss, perplexity and greedy exact-match accuracy of completions.
public struct Evaluator {
  public let model: LlamaModel
  public let tokenizer: Tokenizer
  public let adapter: PEFTAdapter?
  /// The factor on the adapter's branches (0: the base model, from the same compiled graphs).
  public let adapterScale: Float
  public let target: Target

  public init(
    model: LlamaModel, tokenizer: Tokenizer, adapter: PEFTAdapter?, adapterScale: Float = 1,
    target: Target = .host
  ) {
    self.model = model
    self.tokenizer = tokenizer
    self.adapter = adapter
    self.adapterScale = adapterScale
    self.target = target
  }

  /// The tokenized examples of `cases` (masked as in training: the completion and the
  /// end-of-sequence token after it count), checked to fit the model's context.
  public static func scoredExamples(
    _ cases: [EvaluationCase], model: LlamaModel, tokenizer: Tokenizer
  ) throws(SessionError) -> [TrainingExample] {
    let scored = cases.map {
      Dataset.completion(prompt: $0.prompt, completion: $0.answer, tokenizer: tokenizer)
    }
    let limit = model.contextLength
    if let index = scored.indices.first(where: { scored[$0].ids.count > limit }) {
      throw SessionError(
        "\(cases[index].origin): the prompt and completion have \(scored[index].ids.count) tokens "
          + "(with end-of-sequence), more than the model's context of \(limit)")
    }
    return scored
  }

  /// Scores `cases` (masked as in training) and decodes each prompt greedily, `batch` prompts at
  /// a time, until end-of-sequence, a newline or the answer's length plus 4 tokens.
  ///
  /// `scored` are `scoredExamples(cases, ...)` when the caller made them already (to check the
  /// cases before loading an adapter); otherwise they are made here.
  public func evaluate(_ cases: [EvaluationCase], scored: [TrainingExample]? = nil, batch: Int)
    throws(SessionError) -> EvaluationResult
  {
    let start = DispatchTime.now().uptimeNanoseconds
    let scored =
      if let scored { scored } else {
        try Evaluator.scoredExamples(cases, model: model, tokenizer: tokenizer)
      }
    let limit = model.contextLength
    let longestScored = scored.map { $0.ids.count - 1 }.max() ?? 1
    let scorer = try LossSession(
      model: model, adapter: adapter, batch: min(8, scored.count),
      sequence: max(2, longestScored), target: target)
    if adapter != nil { try scorer.setAdapterScale(adapterScale) }
    let (total, weighted) = try scorer.score(scored)
    let loss = total / max(weighted, 1)
    let prompts = cases.map { tokenizer.encode($0.prompt) }
    let limits = cases.map { tokenizer.encode($0.answer).count + 4 }
    let longest = zip(prompts, limits).map { $0.count + $1 }.max() ?? 16
    let session = DecodeSession(
      model: model, context: min(limit, (longest + 15) / 16 * 16), adapter: adapter,
      target: target)
    if adapter != nil { try session.setAdapterScale(adapterScale) }
    let newline = tokenizer.encode("\n")
    func ends(_ token: Int32) -> Bool {
      token == tokenizer.endOfSequence || token == 0 || newline.contains(token)
    }
    var outputs: [String] = []
    for first in stride(from: 0, to: prompts.count, by: batch) {
      let rows = first..<min(first + batch, prompts.count)
      // Near the end of the context a continuation is cut where the cache ends.
      let room = session.context - (rows.map { prompts[$0].count }.max() ?? 0)
      let decoded = try session.greedyBatch(
        prompts: Array(prompts[rows]), maxTokens: limits[rows].map { min($0, room) },
        stop: { generated in generated.last.map(ends) ?? false })
      for var ids in decoded {
        while let last = ids.last, ends(last) { ids.removeLast() }
        outputs.append(tokenizer.decode(ids))
      }
    }
    let correct = zip(outputs, cases).filter { $0 == $1.answer }.count
    return EvaluationResult(
      loss: loss, perplexity: exp(loss), tokens: Int(weighted), outputs: outputs,
      correct: correct, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
  }
}
