import Foundation
import TestSupport
import Testing

/// `lorac eval --reward`: greedy samples (temperature 0) are `lorac generate`'s greedy
/// continuation, and the rewards are the character counts of prefix + completion, counted here.
@Test func evalRewardScoresSampledCompletionsAsTheRewardSays() throws {
  let model = try modelPath()
  let result = try lorac([
    "eval", model, "--reward", "char-count:e", "--prefix", "This is", "--count", "3", "--batch",
    "2", "--gen-len", "6", "--temperature", "0", "--json",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let object = try #require(
    JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
  let rewards = try #require(object["rewards"] as? [Double])
  let samples = try #require(object["samples"] as? [String])
  let mean = try #require(object["reward_mean"] as? Double)
  #expect(rewards.count == 3 && samples.count == 3)
  let generated = try lorac([
    "generate", model, "--prompt", "This is", "--max-tokens", "6", "--ignore-eos", "--json",
  ])
  #expect(generated.status == 0, "\(generated.stderr)")
  let text = try #require(
    (JSONSerialization.jsonObject(with: Data(generated.stdout.utf8)) as? [String: Any])?["text"]
      as? String)
  for (sample, reward) in zip(samples, rewards) {
    #expect(sample == "This is" + text)
    #expect(reward == Double(sample.filter { $0 == "e" }.count))
  }
  #expect(abs(mean - rewards.reduce(0, +) / 3) < 1e-12)
}

/// Sampled completions come from the seed: the same seed draws the same samples, another seed
/// others; an adapter at scale 0 samples exactly as the base model.
@Test func evalRewardSamplesFollowTheSeedAndTheAdapterScale() throws {
  let model = try modelPath()
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  func samples(_ extra: [String]) throws -> [String] {
    let result = try lorac(
      [
        "eval", model, "--reward", "length", "--count", "4", "--batch", "4", "--gen-len", "5",
        "--json",
      ] + extra)
    #expect(result.status == 0, "\(result.stderr)")
    let object = try #require(
      JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    return try #require(object["samples"] as? [String])
  }
  let first = try samples(["--seed", "7"])
  #expect(try samples(["--seed", "7"]) == first)
  #expect(try samples(["--seed", "8"]) != first)
  #expect(try samples(["--seed", "7", "--adapter", adapter, "--adapter-scale", "0"]) == first)
}

@Test func evalRewardRefusesBadSettingsInOneLine() throws {
  let model = try modelPath()
  for (arguments, message) in [
    (["--reward", "char-count:"], "needs a character"),
    (["--reward", "length", "--task", "mystery_function"], "exactly one of"),
    (["--reward", "length", "--gen-len", "0"], "--gen-len must be at least 1"),
    (["--reward", "length", "--top-k", "0"], "--top-k must be at least 1"),
    (["--reward-cmd", "echo oops"], "line 1"),
  ] {
    let result = try lorac(["eval", model, "--count", "2", "--gen-len", "2"] + arguments)
    #expect(result.status != 0, "\(arguments)")
    #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
  }
}
