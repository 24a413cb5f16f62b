import Foundation
import TestSupport
import Testing

@Test func evalReportsTheMaskedLossAndPerplexityOfTheCompletions() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let model = try modelPath()
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  let cases = [(">>> mystery_function(12, 30)\n", "42"), ("The capital of France is", " Paris")]
  let data = folder.appendingPathComponent("eval.jsonl")
  try cases.map { "{\"prompt\": \(jsonQuoted($0.0)), \"completion\": \(jsonQuoted($0.1))}" }
    .joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
  // The oracle: log-softmax of `lorac logits` over the completion tokens and the end-of-sequence
  // token after them, prompt tokens unweighted, as training weighs them.
  func ids(_ text: String) throws -> [Int] {
    let result = try lorac(["tokenize", model, "--text", text])
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    return try #require(object?["ids"] as? [Int])
  }
  let inspect = try lorac(["inspect", model, "--json"])
  let info = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
  let eos = try #require((info?["tokenizer"] as? [String: Any])?["eos"] as? Int)
  var total = 0.0
  var count = 0
  for (prompt, completion) in cases {
    let promptIDs = try ids(prompt)
    let sequence = promptIDs + (try ids(completion)) + [eos]
    let npy = folder.appendingPathComponent("logits.npy")
    let logits = try lorac([
      "logits", model, "--ids", sequence.map(String.init).joined(separator: ","), "--out",
      npy.path, "--adapter", adapter,
    ])
    #expect(logits.status == 0, "\(logits.stderr)")
    let file = try Data(contentsOf: npy)
    let header = Int(file[8]) | Int(file[9]) << 8
    let values = file[(10 + header)...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    let vocabulary = values.count / sequence.count
    for position in (promptIDs.count - 1)..<(sequence.count - 1) {
      let row = values[(position * vocabulary)..<((position + 1) * vocabulary)].map(Double.init)
      let top = row.max() ?? 0
      let logSum = top + log(row.map { exp($0 - top) }.reduce(0, +))
      total += logSum - row[sequence[position + 1]]
      count += 1
    }
  }
  let expected = total / Double(count)
  let result = try lorac(["eval", model, "--data", data.path, "--adapter", adapter, "--json"])
  #expect(result.status == 0, "\(result.stderr)")
  let object = try #require(
    try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
  let loss = try #require(object["loss"] as? Double)
  #expect(abs(loss - expected) <= 1e-4 * expected, "loss \(loss), by hand \(expected)")
  let perplexity = try #require(object["perplexity"] as? Double)
  #expect(abs(perplexity - exp(expected)) <= 1e-3 * exp(expected))
  #expect(object["tokens"] as? Int == count)
  #expect(object["count"] as? Int == 2)
  let match = try #require(object["exact_match"] as? Double)
  #expect(match >= 0 && match <= 1)
  // The human-readable report carries the same numbers.
  let plain = try lorac(["eval", model, "--data", data.path, "--adapter", adapter])
  #expect(plain.status == 0)
  #expect(
    plain.stdout.contains(
      String(
        format: "loss %.4f  perplexity %.3f  (mean over %d completion tokens)\n", loss, perplexity,
        count)))
  #expect(plain.stdout.contains("exact match "))
}

/// A JSON string literal.
private func jsonQuoted(_ text: String) -> String {
  let data = try? JSONSerialization.data(withJSONObject: [text], options: [.fragmentsAllowed])
  return String(decoding: data ?? Data(), as: UTF8.self).dropFirst().dropLast().description
}

@Test func batchedGreedyDecodingGivesTheOneByOneContinuations() throws {
  // Sums of different digit counts make prompts of different lengths in one batch; each row's
  // greedy continuation (printed for the first three) and the score must not depend on batching.
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  var results: [String] = []
  for batch in ["1", "4"] {
    let result = try lorac([
      "eval", try modelPath(), "--adapter", adapter, "--task", "mystery_function", "--count",
      "10", "--seed", "7", "--batch", batch,
    ])
    #expect(result.status == 0, "\(result.stderr)")
    // Everything but the timing.
    results.append(
      result.stdout.replacingOccurrences(
        of: #"\([0-9.]+ s\)"#, with: "", options: .regularExpression))
  }
  #expect(results[0] == results[1])
  #expect(results[0].contains("exact match"))
  let bad = try lorac(["eval", try modelPath(), "--task", "mystery_function", "--batch", "0"])
  #expect(bad.status == 1)
  #expect(bad.stderr == "error: --batch must be at least 1, got 0 (see 'lorac eval --help')\n")
}

@Test func evalShowFailuresPrintsEveryWrongContinuation() throws {
  // The base model gets some of these sums wrong; each wrong one is a line, and the lines add up
  // with the score.
  let result = try lorac([
    "eval", try modelPath(), "--task", "mystery_function", "--count", "6", "--show-failures",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let lines = result.stdout.split(separator: "\n").map(String.init)
  let wrong = lines.filter { $0.hasPrefix("wrong: \">>> mystery_function(") }
  let score = try #require(lines.first { $0.hasPrefix("exact match ") })
  let correct = try #require(Int(score.dropFirst("exact match ".count).prefix { $0 != "/" }))
  #expect(wrong.count == 6 - correct)
  #expect(wrong.count > 0)
  #expect(wrong.allSatisfy { $0.contains("(expected ") })
}
