import Foundation
import TestSupport
import Testing

/// Short text examples (loss on every token), so that a train step on the real model takes a
/// fraction of a second.
func writeTrainingData(_ url: URL, variant: String = "") throws {
  try """
  {"text": "LoRA adapts a frozen model\(variant)."}
  {"text": "The cat sat on the mat."}
  {"text": "Two plus two is four."}
  {"text": "Compilers turn graphs into loops."}
  {"text": "CPUs can train small adapters."}
  """.write(to: url, atomically: true, encoding: .utf8)
}

/// The settings of the tiny runs: two adapted projections in two layers, rank 2.
let tinyTraining = [
  "--batch", "2", "--seq", "10", "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}",
  "--warmup", "2", "--lr", "0.01", "--threads", "2",
]

@Test func resumedTrainingRepeatsTheUninterruptedLossesBitForBit() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("data.jsonl")
  try writeTrainingData(data)
  let common = ["train", try modelPath(), "--data", data.path, "--steps", "6"] + tinyTraining
  let straight = folder.appendingPathComponent("straight")
  let whole = try lorac(common + ["--out", straight.path, "--save-every", "2"])
  #expect(whole.status == 0, "\(whole.stderr)")

  let split = folder.appendingPathComponent("split")
  let first = try lorac(common + ["--out", split.path, "--stop-after", "3"])
  #expect(first.status == 0, "\(first.stderr)")
  #expect(
    first.stderr.contains(
      "stopped: saved step 3/6 in \(split.path); resume with: lorac train "))
  #expect(first.stderr.hasSuffix(" --resume\n"))
  #expect(!first.stderr.contains("--stop-after"))
  #expect(try trainingMetricFields(split).count == 3)
  // Only the model, data and folder are repeated: the settings come from the state.
  let second = try lorac([
    "train", try modelPath(), "--data", data.path, "--out", split.path, "--resume",
    "--threads", "2",
  ])
  #expect(second.status == 0, "\(second.stderr)")
  #expect(second.stderr.contains("step 4/6"))
  #expect(!second.stderr.contains("step 1/6"))

  let expected = try trainingMetricFields(straight)
  #expect(expected.count == 6)
  #expect(expected.first?.hasPrefix("{\"step\": 1, \"loss\": ") == true)
  #expect(try trainingMetricFields(split) == expected)
  // The final adapters and training states are the same bytes (metadata aside: elapsed time).
  let adapter = "adapter_model.safetensors"
  #expect(
    try Data(contentsOf: split.appendingPathComponent(adapter))
      == Data(contentsOf: straight.appendingPathComponent(adapter)))
  let names = try FileManager.default.contentsOfDirectory(atPath: split.path).sorted()
  #expect(
    names == [
      "adapter_config.json", "adapter_model.safetensors", "loss.svg", "metrics.jsonl",
      "training_state.safetensors",
    ])
  let states = try [straight, split].map {
    try SafetensorsReader(url: $0.appendingPathComponent("training_state.safetensors"))
  }
  #expect(states[0].names == states[1].names)
  #expect(states[0].names.contains("adam_v.layers.1.attn.v.lora_b"))
  for name in states[0].names where name != "data_order" {
    #expect(try states[0].floats(name) == states[1].floats(name), "\(name)")
  }
  let metadata = states[1].header["__metadata__"] as? [String: String]
  #expect(metadata?["step"] == "6")
  #expect(metadata?["optimizer_step"] == "6")
  #expect(metadata?["hp.rank"] == "2")
}

@Test func resumeRefusesAnotherModelOtherDataOrOtherSettings() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("data.jsonl")
  try writeTrainingData(data)
  let out = folder.appendingPathComponent("out")
  let model = try modelPath()
  let start = try lorac(
    ["train", model, "--data", data.path, "--out", out.path, "--steps", "2"] + tinyTraining)
  #expect(start.status == 0, "\(start.stderr)")
  // Other data: one example differs by one word.
  let other = folder.appendingPathComponent("other.jsonl")
  try writeTrainingData(other, variant: " quickly")
  // Another model: the same file with its last byte (tensor data) changed.
  let copy = folder.appendingPathComponent("changed.gguf")
  var bytes = try Data(contentsOf: URL(fileURLWithPath: model))
  bytes[bytes.count - 1] ^= 1
  try bytes.write(to: copy)
  let resume = ["--out", out.path, "--resume", "--steps", "3", "--threads", "2"]
  let cases: [([String], Int32, String)] = [
    (
      ["train", model, "--data", data.path, "--rank", "4"] + resume, 1,
      "error: \(out.path): the training state was made with --rank 2, not 4; resume with the "
        + "same value or train into a new --out\n"
    ),
    (
      ["train", model, "--data", data.path, "--seq", "12"] + resume, 1,
      "error: \(out.path): the training state was made with --seq 10, not 12; resume with the "
        + "same value or train into a new --out\n"
    ),
    (
      ["train", model, "--data", other.path] + resume, 1,
      "error: \(out.path): the training state was made with other data (fingerprint "
    ),
    (
      ["train", copy.path, "--data", data.path] + resume, 1,
      "error: \(out.path): the training state was made with another model (fingerprint "
    ),
    (
      [
        "train", model, "--data", data.path, "--out", folder.appendingPathComponent("none").path,
        "--resume",
      ], 1,
      "error: \(folder.appendingPathComponent("none").path): no training state to resume "
        + "(training_state.safetensors is missing); run without --resume to start\n"
    ),
    (
      ["train", model, "--data", data.path, "--out", out.path, "--resume", "--steps", "1"], 1,
      "error: \(out.path): the training state is at step 2, past --steps 1\n"
    ),
    (
      ["train", model, "--data", data.path, "--out", out.path, "--resume", "--threads", "2"], 0,
      "\(out.path): already trained 2 steps; nothing to do (raise --steps to continue)\n"
    ),
    (
      ["train", model, "--data", data.path, "--out", out.path, "--save-every", "0"], 1,
      "error: --save-every must be at least 1, got 0 (see 'lorac train --help')\n"
    ),
    (
      ["train", model, "--data", data.path, "--out", out.path, "--accumulate", "0"], 1,
      "error: --accumulate must be at least 1, got 0 (see 'lorac train --help')\n"
    ),
    (
      ["train", model, "--data", data.path, "--out", out.path, "--stop-after", "0"], 1,
      "error: --stop-after must be at least 1, got 0 (see 'lorac train --help')\n"
    ),
    (
      ["train", model, "--data", data.path, "--stop-after", "2"] + resume, 1,
      "error: --stop-after 2 is not past the training state's step 2\n"
    ),
  ]
  for (arguments, status, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == status, "\(arguments): \(result.stderr)")
    #expect(result.stderr.hasPrefix(message), "\(arguments): \(result.stderr)")
  }
  // Nothing above touched the state.
  #expect(try trainingMetricFields(out).count == 2)
}
