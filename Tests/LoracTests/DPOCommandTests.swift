import Foundation
import TestSupport
import Testing

private func writePairs(_ url: URL) throws {
  try """
  {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " a cheese."}
  {"prompt": "Two plus two is", "chosen": " four.", "rejected": " seven."}
  {"prompt": "The sky is", "chosen": " blue.", "rejected": " made of soup."}
  """.write(to: url, atomically: true, encoding: .utf8)
}

private let tinyDPO = [
  "--batch", "2", "--steps", "4", "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}",
  "--warmup", "1", "--lr", "0.01", "--threads", "2",
]

@Test func resumedDPORepeatsTheUninterruptedRunBitForBit() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("pairs.jsonl")
  try writePairs(data)
  let common = ["dpo", try modelPath(), "--data", data.path] + tinyDPO
  let straight = folder.appendingPathComponent("straight")
  let whole = try lorac(common + ["--out", straight.path])
  #expect(whole.status == 0, "\(whole.stderr)")
  let split = folder.appendingPathComponent("split")
  let first = try lorac(common + ["--out", split.path, "--stop-after", "2"])
  #expect(first.status == 0, "\(first.stderr)")
  #expect(
    first.stderr.contains("stopped: saved step 2/4 in \(split.path); resume with: lorac dpo "))
  let second = try lorac([
    "dpo", try modelPath(), "--data", data.path, "--out", split.path, "--resume", "--threads", "2",
  ])
  #expect(second.status == 0, "\(second.stderr)")
  func losses(_ folder: URL) throws -> [String] {
    try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
      .split(separator: "\n").map { line in
        line.split(separator: ",").filter { !$0.contains("_per_s") && !$0.contains("elapsed_s") }
          .joined(separator: ",")
      }
  }
  let lines = try losses(straight)
  #expect(lines.count == 4)
  #expect(try lines == losses(split))
  for field in ["\"loss\"", "\"reward_margin\"", "\"accuracy\"", "\"chosen_reward\""] {
    #expect(lines[0].contains(field), "\(field)")
  }
  #expect(
    try Data(contentsOf: straight.appendingPathComponent("adapter_model.safetensors"))
      == Data(contentsOf: split.appendingPathComponent("adapter_model.safetensors")))
}

@Test func dpoRejectsBadPairsWithTheirLine() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let cases: [(String, String)] = [
    (
      "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n",
      ":2: expected \"prompt\", \"chosen\" and \"rejected\""
    ),
    (
      "{\"prompt\": \"a\", \"chosen\": 3, \"rejected\": \"c\"}\n",
      ":1: \"chosen\" must be a string, got a number"
    ),
    ("not json\n", ":1: not valid JSON (offset 0: invalid literal)"),
  ]
  for (index, (text, message)) in cases.enumerated() {
    let data = folder.appendingPathComponent("bad\(index).jsonl")
    try text.write(to: data, atomically: true, encoding: .utf8)
    let out = folder.appendingPathComponent("run\(index)")
    let result = try lorac(["dpo", try modelPath(), "--data", data.path, "--out", out.path])
    #expect(result.status == 1)
    #expect(result.stderr == "error: \(data.path)\(message)\n")
    #expect(!FileManager.default.fileExists(atPath: out.path))
  }
}

@Test func dpoLearnsFromTheFirstStep() throws {
  // Every run starts with the policy equal to the reference (B = 0), where the loss is ln 2 and
  // its gradient must still be the sigmoid's -1/2 (a relu/abs form of softplus had a zero
  // subgradient there, so no DPO run ever moved).
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("pairs.jsonl")
  try writePairs(data)
  let out = folder.appendingPathComponent("run")
  let result = try lorac(
    ["dpo", try modelPath(), "--data", data.path, "--out", out.path] + tinyDPO)
  #expect(result.status == 0, "\(result.stderr)")
  let lines = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    .split(separator: "\n")
  let first = try #require(
    try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
  #expect(abs((first["loss"] as? Double ?? 0) - log(2)) < 1e-6)
  #expect((first["grad_norm"] as? Double ?? 0) > 0, "\(first)")
  // The second step's loss is no longer ln 2: the first update moved the adapter.
  let second = try #require(
    try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
  #expect(abs((second["loss"] as? Double ?? log(2)) - log(2)) > 1e-4, "\(second)")
}
