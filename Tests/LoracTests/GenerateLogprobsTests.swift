import Foundation
import TestSupport
import Testing

@Test(arguments: [false, true])
func generateJSONGivesEachTokensLogProbabilityUnderTheModel(adapted: Bool) throws {
  let model = try modelPath()
  let adapter =
    adapted ? ["--adapter", smolLMFixtures.appendingPathComponent("peft_qv_r4").path] : []
  // Sampled at temperature 0.7 among the top 5: the log-probabilities are still the model's own.
  let result = try lorac(
    [
      "generate", model, "--prompt", "This is", "--max-tokens", "6", "--json", "--temperature",
      "0.7", "--top-k", "5", "--seed", "3", "--ignore-eos",
    ] + adapter)
  #expect(result.status == 0, "\(result.stderr)")
  let object = try #require(
    JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
  let prompt = try #require(object["prompt_ids"] as? [Int])
  let ids = try #require(object["ids"] as? [Int])
  let logprobs = try #require(object["logprobs"] as? [Double])
  #expect(ids.count == 6 && logprobs.count == ids.count)
  // The same under one forward pass over prompt + generated tokens (no KV cache).
  let out = temporaryURL(".npy")
  defer { try? FileManager.default.removeItem(at: out) }
  let sequence = prompt + ids.dropLast()
  let logits = try lorac(
    [
      "logits", model, "--ids", sequence.map(String.init).joined(separator: ","), "--out",
      out.path,
    ] + adapter)
  #expect(logits.status == 0, "\(logits.stderr)")
  let (shape, values) = try readNumPy(out)
  let vocabulary = shape[1]
  var worst = 0.0
  for (k, id) in ids.enumerated() {
    let row = values[((prompt.count - 1 + k) * vocabulary)..<((prompt.count + k) * vocabulary)]
    let maximum = Double(row.max() ?? 0)
    let total = row.map { exp(Double($0) - maximum) }.reduce(0, +)
    let expected = Double(row[row.startIndex + id]) - maximum - log(total)
    worst = max(worst, abs(expected - logprobs[k]))
  }
  // KV-cache decoding and a full forward run different kernels (f32 both); measured 2e-6 apart
  // (7e-6 with the adapter).
  #expect(worst <= 1e-4, "worst log-probability difference \(worst)")
}
