import Foundation
import Models
import TestSupport
import Testing

/// The settings of the tiny RLHF runs: 4 samples of 4 tokens, 2 minibatches, q and v of 2 layers.
let tinyRLHF = [
  "--batch", "4", "--gen-len", "4", "--minibatches", "2", "--batches-per-phase", "1",
  "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}", "--threads", "2", "--show-every", "0",
]

/// The metrics of a run without the fields that measure time, one string per phase.
private func timelessMetrics(_ folder: URL) throws -> [String] {
  let text = try String(
    contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
  return text.split(separator: "\n").map { line in
    // Every field measuring time ends in `_s` (`samples_per_s`, `rollout_s`, `elapsed_s`, ...).
    line.split(separator: ",").filter { !$0.contains("_s\":") }
      .joined(separator: ",")
  }
}

@Test func resumedRLHFRepeatsTheUninterruptedRunBitForBit() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let common =
    ["rlhf", try modelPath(), "--reward", "char-count:e", "--phases", "3"] + tinyRLHF
  let straight = folder.appendingPathComponent("straight")
  let whole = try lorac(common + ["--out", straight.path, "--save-every", "1"])
  #expect(whole.status == 0, "\(whole.stderr)")
  let split = folder.appendingPathComponent("split")
  let first = try lorac(common + ["--out", split.path, "--stop-after", "1"])
  #expect(first.status == 0, "\(first.stderr)")
  #expect(
    first.stderr.contains("stopped: saved phase 1/3 in \(split.path); resume with: lorac rlhf "))
  let second = try lorac(common + ["--out", split.path, "--resume"])
  #expect(second.status == 0, "\(second.stderr)")

  let fields = [
    "phase", "reward_mean", "reward_std", "kl", "entropy", "clipfrac", "policy_loss",
    "value_loss", "samples_per_s",
  ]
  let lines = try String(
    contentsOf: straight.appendingPathComponent("metrics.jsonl"), encoding: .utf8
  ).split(separator: "\n")
  #expect(lines.count == 3)
  for line in lines {
    let object = try #require(
      JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    for field in fields { #expect(object[field] is Double || object[field] is Int, "\(field)") }
  }
  #expect(try timelessMetrics(straight) == timelessMetrics(split))
  for file in ["adapter_model.safetensors", "value_head.safetensors"] {
    let a = try Data(contentsOf: straight.appendingPathComponent(file))
    let b = try Data(contentsOf: split.appendingPathComponent(file))
    #expect(a == b, "\(file)")
  }
  let svg = try String(contentsOf: straight.appendingPathComponent("reward.svg"), encoding: .utf8)
  #expect(svg.contains("mean reward") && svg.contains("KL(policy || reference)"))
  // The adapter is a PEFT adapter lorac reads back.
  let generated = try lorac([
    "generate", try modelPath(), "--adapter", straight.path, "--prompt", "This is",
    "--max-tokens", "2",
  ])
  #expect(generated.status == 0, "\(generated.stderr)")

  // A resume with another setting is refused before anything runs.
  let changed = try lorac(common + ["--out", split.path, "--resume", "--lr", "0.5"])
  #expect(changed.status == 1)
  #expect(
    changed.stderr
      == "error: \(split.path): --lr is 0.5 but the saved run used 0.001; a resume continues the "
      + "same run (only --phases may change), or train into a new --out\n")
}

@Test(arguments: [
  (
    "cat > /dev/null; echo 1; echo garbage; echo 2; echo 3",
    "line 2 of its output is 'garbage', expected a finite number"
  ),
  (
    "cat > /dev/null; echo 1; echo 2",
    "answered 2 lines for 4 samples (one number per line expected)"
  ),
  ("echo 1; echo nan; echo 2; echo 3", "line 2 of its output is 'nan', expected a finite number"),
  ("cat > /dev/null; echo boom >&2; exit 1", "exited with status 1: boom"),
])
func aBadRewardProgramStopsTheRunAndKeepsTheLastCheckpoint(bad: String, message: String) throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  // A program that scores the first phase (one number per sample) and answers `bad` after.
  let marker = folder.appendingPathComponent("scored-once").path
  let command =
    "if [ -e \(marker) ]; then \(bad); else touch \(marker); while read line; do echo 1; done; fi"
  let out = folder.appendingPathComponent("run")
  let result = try lorac(
    ["rlhf", try modelPath(), "--reward-cmd", command, "--phases", "2", "--save-every", "1"]
      + tinyRLHF + ["--out", out.path])
  #expect(result.status == 1)
  let lines = result.stderr.split(separator: "\n")
  #expect(
    lines.last
      == "error: --reward-cmd '\(command)'\(message.hasPrefix("exited") ? " " : ": ")\(message)")
  // The first phase's checkpoint is whole: one metrics line, a state at phase 1, no temporary
  // files, and a resume would start from it.
  #expect(try timelessMetrics(out).count == 1)
  let files = try FileManager.default.contentsOfDirectory(atPath: out.path)
  #expect(!files.contains { $0.hasSuffix(".tmp") })
  for file in [
    "adapter_model.safetensors", "adapter_config.json", "value_head.safetensors",
    "rlhf_state.safetensors", "reward.svg",
  ] {
    #expect(files.contains(file), "\(file)")
  }
  // The same first phase with a well-behaved program: the same adapter, byte for byte.
  let good = folder.appendingPathComponent("good")
  let reference = try lorac(
    [
      "rlhf", try modelPath(), "--reward-cmd", "while read line; do echo 1; done", "--phases",
      "2", "--stop-after", "1",
    ] + tinyRLHF + ["--out", good.path])
  #expect(reference.status == 0, "\(reference.stderr)")
  #expect(
    try Data(contentsOf: out.appendingPathComponent("adapter_model.safetensors"))
      == Data(contentsOf: good.appendingPathComponent("adapter_model.safetensors")))
}

@Test func rlhfRejectsBadSettingsInOneLine() throws {
  let model = try modelPath()
  let cases: [([String], String)] = [
    (["--reward", "char-count:."], "error: Missing expected argument '--out <out>'"),
    (["--out", "/tmp/x"], "error: give exactly one of --reward and --reward-cmd"),
    (
      ["--out", "/tmp/x", "--reward", "smiles"],
      "error: --reward 'smiles' is not a reward; expected char-count:C or length (or --reward-cmd CMD)"
    ),
    (
      ["--out", "/tmp/x", "--reward", "length", "--batch", "6", "--minibatches", "4"],
      "error: --batch 6 is not a multiple of --minibatches 4"
    ),
    (
      ["--out", "/tmp/x", "--reward", "length", "--gae-lambda", "2"],
      "error: --gae-lambda must be in [0, 1], got 2.0"
    ),
  ]
  for (arguments, expected) in cases {
    let result = try lorac(["rlhf", model] + arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(
      result.stderr == expected + " (see 'lorac rlhf --help')\n", "\(arguments)")
  }
}

@Test func dumpIRPrintsTheTracedPPOObjective() throws {
  let result = try lorac(["dump-ir", try modelPath(), "--rlhf", "--batch", "2", "--seq", "6"])
  #expect(result.status == 0, "\(result.stderr)")
  for name in [
    "%old_logprobs: f32[2,4]", "%reference_logprobs: f32[2,4,49152]",
    "param @value_head.0.weight : f32[576,2304]", "\"surrogate\"", "\"value_loss\"",
    "\"entropy_bonus\"", "\"kl_penalty\"", "\"loss\"",
  ] {
    #expect(result.stdout.contains(name), "\(name)")
  }
  // Differentiated with the pipeline `lorac rlhf` runs (docs/rlhf.md): gradients for the adapter
  // and the value head only.
  let pipeline =
    "lora{rank=4,alpha=32.0,targets=layers.*.attn.{q,k,v,o},seed=1},"
    + "freeze{trainable={*.lora_{a,b},value_head.*}},fuse,autodiff{loss=loss},"
    + "fuse{elementwise=true},dce"
  let differentiated = try lorac([
    "dump-ir", try modelPath(), "--rlhf", "--batch", "2", "--seq", "6", "--pipeline", pipeline,
  ])
  #expect(differentiated.status == 0, "\(differentiated.stderr)")
  for name in ["\"value_head.0.weight.grad\"", "\"layers.29.attn.o.lora_b.grad\""] {
    #expect(differentiated.stdout.contains(name), "\(name)")
  }
  #expect(!differentiated.stdout.contains("token_embd.weight.grad"))
  let help = try lorac(["dump-ir", "--help"])
  #expect(help.stdout.replacingOccurrences(of: "\n", with: " ").contains("lora{rank=4"))
}

@Test func anInterruptedRLHFRunSavesThePhaseUnderWayAndExits130() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let out = folder.appendingPathComponent("run")
  let process = Process()
  process.executableURL = loracExecutable()
  process.arguments =
    ["rlhf", try modelPath(), "--reward", "length", "--phases", "50", "--save-every", "100"]
    + tinyRLHF + ["--out", out.path]
  let errors = Pipe()
  process.standardError = errors
  process.standardOutput = FileHandle.nullDevice
  try process.run()
  // Interrupted once the first phase is reported (a plain line: stderr is not a terminal).
  var text = ""
  let deadline = Date().addingTimeInterval(300)
  while !text.contains("phase 1/50") && Date() < deadline && process.isRunning {
    text += String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
  }
  #expect(text.contains("phase 1/50"), "\(text)")
  process.interrupt()
  text += String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  process.waitUntilExit()
  #expect(process.terminationStatus == 130, "\(text)")
  let saved = try #require(
    text.split(separator: "\n").last { $0.hasPrefix("interrupted: saved phase ") })
  let phase = try #require(
    Int(saved.dropFirst("interrupted: saved phase ".count).prefix { $0 != "/" }))
  #expect(phase >= 1 && phase < 50)
  #expect(saved.hasSuffix(" --resume"))
  #expect(try timelessMetrics(out).count == phase)
  let state = try Data(contentsOf: out.appendingPathComponent("rlhf_state.safetensors"))
  #expect(String(decoding: state.prefix(4096), as: UTF8.self).contains("\"phase\":\"\(phase)\""))
}

@Test func rlhfTrainsAPerHeadAdapterWithTheAdapterOffAsReference() throws {
  // The tutorial's own form: LoraHooks, one instance per head; the reference is the same graph at
  // adapter scale 0 (per-head branches take it through %adapter_scale).
  let out = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: out) }
  let result = try lorac(
    ["rlhf", try modelPath(), "--reward", "char-count:e", "--phases", "2", "--per-head"]
      + tinyRLHF + ["--out", out.path])
  #expect(result.status == 0, "\(result.stderr)")
  let config = try String(
    contentsOf: out.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  #expect(config.contains("\"per_head\": true"), "\(config)")
  // The first phase's rollout comes from the untrained adapter (B = 0): its KL to the reference
  // is 0, and the second phase's (after one learning phase) is not.
  let lines = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    .split(separator: "\n")
  let kl = try lines.map { line in
    try #require(
      (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["kl"]
        as? Double)
  }
  #expect(kl.count == 2 && kl[0] == 0 && kl[1] != 0, "\(kl)")
}

/// The TransformerLens tutorial's RLHF smoke test on the tiny GPT-NeoX folder.
///
/// Rank 4, alpha 32, batch 8, 2 minibatches, 8 tokens, 2 phases, the default targets (q, k, v: parts of the fused
/// `query_key_value`, and o). The first phase's policy is the reference (B starts at zero), the
/// second's is not; the adapter is PEFT's fused module at rank 12 and lorac reads it back.
@Test func rlhfRunsTwoPhasesOnTheTinyNeoXFolder() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let model = huggingFaceFixtures.appendingPathComponent("tiny-neox").path
  let result = try lorac([
    "rlhf", model, "--out", folder.path, "--reward", "char-count:e", "--phases", "2", "--batch",
    "8", "--minibatches", "2", "--gen-len", "8", "--rank", "4", "--alpha", "32", "--threads", "2",
    "--show-every", "0",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let lines = try String(
    contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8
  ).split(separator: "\n")
  #expect(lines.count == 2)
  let phases = try lines.map { line in
    try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
  }
  #expect(phases.first?["kl"] as? Double == 0)
  #expect((phases.last?["kl"] as? Double ?? 0) > 0)
  for phase in phases {
    for field in ["reward_mean", "entropy", "policy_loss", "value_loss"] {
      #expect((phase[field] as? Double)?.isFinite == true, "\(field)")
    }
  }
  let config = try String(
    contentsOf: folder.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  #expect(config.contains("\"rank_pattern\": {\"query_key_value\": 12}"))
  #expect(config.contains("\"target_modules\": [\"dense\", \"query_key_value\"]"))
  let generated = try lorac([
    "generate", model, "--adapter", folder.path, "--prompt", "This is", "--max-tokens", "4",
  ])
  #expect(generated.status == 0, "\(generated.stderr)")
}

/// An adapter trained on the GGUF forms of GPT-2 and GPT-NeoX with the default targets (q, k, v:
/// parts of the fused weight; o): `lorac merge` folds the parts into the fused `attn_qkv` weight,
/// and the merged model's logits are the adapted model's within 1e-4; `lorac export` writes the
/// fused weight's adapter at rank 3r, whose llama.cpp branch (alpha / its rank) is the merged
/// change of the weight.
@Test(arguments: ["tiny-gpt2-small.gguf", "tiny-neox-sequential.gguf"])
func mergeAndExportFoldQKVPartsIntoTheFusedWeight(_ file: String) throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let model = try fixtureGGUF(huggingFaceFixtures, file)
  let adapter = folder.appendingPathComponent("adapter").path
  let trained = try lorac([
    "rlhf", model, "--out", adapter, "--reward", "char-count:e", "--phases", "2", "--batch", "8",
    "--minibatches", "2", "--gen-len", "8", "--rank", "4", "--alpha", "32", "--threads", "2",
    "--show-every", "0",
  ])
  #expect(trained.status == 0, "\(trained.stderr)")
  let merged = folder.appendingPathComponent("merged.gguf").path
  let merge = try lorac(["merge", model, "--adapter", adapter, "--out", merged])
  #expect(merge.status == 0, "\(merge.stderr)")
  let ids = "5,9,17,33,2,101,64,7"
  func logits(_ arguments: [String]) throws -> [Float] {
    let out = folder.appendingPathComponent("logits.npy")
    let result = try lorac(["logits"] + arguments + ["--ids", ids, "--out", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    return try readNumPy(out).values
  }
  let (adapted, folded, base) = (
    try logits([model, "--adapter", adapter]), try logits([merged]), try logits([model])
  )
  let worst = zip(adapted, folded).map { abs($0 - $1) }.max() ?? .infinity
  let moved = zip(adapted, base).map { abs($0 - $1) }.max() ?? 0
  #expect(worst <= 1e-4 && moved > 1e-3, "merged vs adapted \(worst), adapter effect \(moved)")

  let exported = folder.appendingPathComponent("adapter.gguf").path
  let export = try lorac(["export", adapter, "--gguf-adapter", exported, "--model", model])
  #expect(export.status == 0, "\(export.stderr)")
  let (lora, original, folding) = (
    try GGUFFile(path: exported), try GGUFFile(path: model), try GGUFFile(path: merged)
  )
  let name = "blk.0.attn_qkv.weight"
  let a = try lora.tensor(named: name + ".lora_a")  // [3r, in]
  let b = try lora.tensor(named: name + ".lora_b")  // [out, 3r]
  let (rank, inputs, outputs) = (a.type.shape[0], a.type.shape[1], b.type.shape[0])
  #expect(rank == 12)
  let alpha = try #require(lora["adapter.lora.alpha"]?.number)
  let scale = Float(alpha) / Float(rank)
  let (av, bv) = (a.floats(), b.floats())
  let (w0, w1) = (try original.dequantized(named: name), try folding.dequantized(named: name))
  var worstDelta: Float = 0
  for o in 0..<outputs {
    for i in 0..<inputs {
      var delta: Float = 0
      for k in 0..<rank { delta += bv[o * rank + k] * av[k * inputs + i] }
      worstDelta = max(worstDelta, abs(scale * delta - (w1[o * inputs + i] - w0[o * inputs + i])))
    }
  }
  #expect(worstDelta <= 1e-5, "llama.cpp's branch differs from the merged change by \(worstDelta)")
}
