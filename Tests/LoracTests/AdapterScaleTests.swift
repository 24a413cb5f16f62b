import Foundation
import TestSupport
import Testing

@Test func adapterScaleZeroGivesTheBaseLogitsAndNeedsAnAdapter() throws {
  let model = try modelPath()
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  let (base, zero, one) = (temporaryURL(".npy"), temporaryURL(".npy"), temporaryURL(".npy"))
  defer { for url in [base, zero, one] { try? FileManager.default.removeItem(at: url) } }
  let ids = ["--ids", "1,17,300,42,9"]
  #expect(try lorac(["logits", model] + ids + ["--out", base.path]).status == 0)
  let scaled = try lorac(
    ["logits", model] + ids + ["--adapter", adapter, "--adapter-scale", "0", "--out", zero.path])
  #expect(scaled.status == 0, "\(scaled.stderr)")
  #expect(
    try lorac(["logits", model] + ids + ["--adapter", adapter, "--out", one.path]).status == 0)
  #expect(try Data(contentsOf: zero) == Data(contentsOf: base))
  #expect(try Data(contentsOf: one) != Data(contentsOf: base))
  for command in [
    ["logits", model] + ids + ["--out", zero.path], ["generate", model, "--prompt", "hi"],
  ] {
    let refused = try lorac(command + ["--adapter-scale", "0.5"])
    #expect(refused.status == 1)
    #expect(refused.stderr.hasPrefix("error: --adapter-scale needs --adapter (see 'lorac "))
  }
}
