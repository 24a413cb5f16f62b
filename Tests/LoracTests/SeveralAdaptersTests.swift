import Foundation
import TestSupport
import Testing

@Test func severalAdaptersSumTheirBranchesLikeTheModelMergedWithEach() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  let first = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  // A second adapter of another rank on other layers, trained here.
  let second = folder.appendingPathComponent("ko").path
  let train = try lorac([
    "train", model, "--task", "mystery_function", "--examples", "16", "--steps", "2",
    "--batch", "2", "--seq", "12", "--rank", "2", "--targets", "layers.{0,1}.attn.{k,o}",
    "--lr", "0.01", "--out", second,
  ])
  #expect(train.status == 0, "\(train.stderr)")
  func logits(_ arguments: [String]) throws -> [Float] {
    let out = folder.appendingPathComponent("\(UUID()).npy")
    let result = try lorac(
      ["logits"] + arguments + ["--ids", "1,17,300,42,9,77", "--out", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    return try readNumPy(out).values
  }
  func merge(_ base: String, _ adapter: String, into name: String) throws -> String {
    let out = folder.appendingPathComponent(name).path
    let result = try lorac(["merge", base, "--adapter", adapter, "-o", out])
    #expect(result.status == 0, "\(result.stderr)")
    return out
  }
  // The oracle: the model merged with 0.7 of the first, then with 0.3 of the second.
  let once = try merge(model, first + ":0.7", into: "once.gguf")
  let twice = try merge(once, second + ":0.3", into: "twice.gguf")
  let merged = try logits([twice])
  let summed = try logits([model, "--adapter", first + ":0.7", "--adapter", second + ":0.3"])
  let base = try logits([model])
  let difference = zip(merged, summed).map { abs($0 - $1) }.max() ?? .infinity
  let effect = zip(base, summed).map { abs($0 - $1) }.max() ?? 0
  #expect(difference <= 1e-4, "max |merged - summed| = \(difference)")
  #expect(effect > 1e-2, "the adapters change the logits by only \(effect)")
  // merge takes several at once too, with the same result.
  let together = try lorac([
    "merge", model, "--adapter", first + ":0.7", "--adapter", second + ":0.3", "-o",
    folder.appendingPathComponent("together.gguf").path,
  ])
  #expect(together.status == 0, "\(together.stderr)")
  let fromTogether = try logits([folder.appendingPathComponent("together.gguf").path])
  #expect((zip(fromTogether, merged).map { abs($0 - $1) }.max() ?? .infinity) <= 1e-4)
  // A weight that is not finite is refused.
  let bad = try lorac([
    "logits", model, "--ids", "1", "--out", "x.npy", "--adapter", first + ":inf",
  ])
  #expect(bad.status == 1)
  #expect(bad.stderr == "error: --adapter \(first):inf: the weight must be a finite number\n")
}
