import Foundation
import TestSupport
import Testing

@Test func inspectPrintsHyperParametersAndTensors() throws {
  let text = try lorac(["inspect", try modelPath()])
  #expect(text.status == 0)
  #expect(
    text.stdout.contains("vocab 49152, embedding 576, 30 layers, 9 heads (3 key/value), ffn 1536"))
  #expect(text.stdout.contains("blk.0.attn_q.weight"))
  let json = try lorac(["inspect", try modelPath(), "--json"])
  let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
  #expect((object?["tensors"] as? [Any])?.count == 272)
  #expect((object?["hyperparameters"] as? [String: Any])?["head_count_kv"] as? Int == 3)
}

@Test func tokenizePrintsIds() throws {
  let plain = try lorac(["tokenize", try modelPath(), "--text", "mystery_function(123, 456)\n"])
  #expect(
    plain.stdout
      == "{\"ids\": [2334, 23780, 79, 6607, 24, 33, 34, 35, 28, 216, 36, 37, 38, 25, 198]}\n")
  let special = try lorac(["tokenize", try modelPath(), "--text", "<|im_end|>", "--add-special"])
  #expect(special.stdout == "{\"ids\": [2]}\n")
  let literal = try lorac(["tokenize", try modelPath(), "--text", "<|im_end|>"])
  #expect(literal.stdout != "{\"ids\": [2]}\n")
}

@Test func logitsWithAPEFTAdapterMatchPEFT() throws {
  let fixture =
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: smolLMFixtures.appendingPathComponent("peft.json"))) as? [String: Any]
  let ids = try #require(fixture?["ids"] as? [Int])
  let columns = try #require(fixture?["columns"] as? [Int])
  let out = temporaryURL(".npy")
  defer { try? FileManager.default.removeItem(at: out) }
  let result = try lorac([
    "logits", try modelPath(), "--ids", ids.map(String.init).joined(separator: ","), "--out",
    out.path,
    "--adapter", smolLMFixtures.appendingPathComponent("peft_qv_r4").path,
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let ours = try readNumPy(out).values
  let reference = try readNumPy(smolLMFixtures.appendingPathComponent("peft_logits.npy")).values
  #expect(ours.count == ids.count * 49152)
  var worst: Float = 0
  for position in ids.indices {
    for (c, column) in columns.enumerated() {
      worst = max(
        worst, abs(ours[position * 49152 + column] - reference[position * columns.count + c]))
    }
  }
  #expect(worst <= 1e-3)
}

@Test func modelCommandsRejectBadInput() throws {
  let path = try modelPath()
  let out = temporaryURL(".npy")
    .path
  let cases: [([String], String)] = [
    (
      ["inspect", "/nonexistent.gguf"],
      "error: /nonexistent.gguf: cannot open: No such file or directory\n"
    ),
    (
      ["inspect", "/tmp"],
      "error: /tmp: no config.json (a model is a GGUF file or a Hugging Face folder)\n"
    ),
    (
      ["logits", path, "--ids", "1,x,3", "--out", out],
      "error: --ids: 'x' is not a token id (expected comma-separated integers like 1,2,3)\n"
    ),
    (
      ["logits", path, "--ids", "1,99999", "--out", out],
      "error: --ids: token 99999 is out of range 0..<49152\n"
    ),
    (
      ["logits", path, "--ids", "1", "--out", out, "--adapter", "/nonexistent"],
      "error: /nonexistent: no adapter_config.json (expected a PEFT adapter directory)\n"
    ),
    (
      ["logits", path, "--ids", "1", "--out", "/nonexistent/x.npy"],
      "error: /nonexistent/x.npy: cannot create a file in /nonexistent\n"
    ),
  ]
  for (arguments, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(result.stderr == message)
  }
  // An adapter of another rank: ErrorTableTests.anAdapterOfAnotherRankIsRefused (logits too).
}

@Test func gradMatchesPyTorchAndPEFT() throws {
  // PEFT adapter r=4, alpha=8 on q_proj and v_proj of every layer, set to fixed values; loss and
  // gradients from PyTorch (Tests/Fixtures/make_gradient_smolLMFixtures.py).
  let fixture =
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: smolLMFixtures.appendingPathComponent("grad_qv_r4.json")))
    as? [String: Any]
  let ids = try #require(fixture?["ids"] as? [Int])
  let referenceLoss = try #require(fixture?["loss"] as? Double)
  let out = temporaryURL(".safetensors")
  defer { try? FileManager.default.removeItem(at: out) }
  let result = try lorac([
    "grad", try modelPath(), "--adapter", smolLMFixtures.appendingPathComponent("grad_qv_r4").path,
    "--ids", ids.map(String.init).joined(separator: ","), "--out", out.path,
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let printed =
    try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Double]
  let loss = try #require(printed?["loss"])
  #expect(abs(loss - referenceLoss) <= 1e-4 * abs(referenceLoss))
  let ours = try SafetensorsReader(url: out)
  let reference = try SafetensorsReader(
    url: smolLMFixtures.appendingPathComponent("grad_qv_r4.safetensors"))
  #expect(ours.names == reference.names)
  #expect(ours.names.count == 120)
  var worst = 0.0
  for name in reference.names {
    let (a, b) = (try ours.floats(name), try reference.floats(name))
    #expect(a.count == b.count, "\(name)")
    let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
    let norm = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    worst = max(worst, difference / norm)
  }
  #expect(worst <= 1e-3, "worst relative gradient difference \(worst)")
}

/// A minimal F32 safetensors reader for checking outputs independently of lorac's own reader.
struct SafetensorsReader {
  let data: Data
  let header: [String: Any]
  let start: Int

  init(url: URL) throws {
    data = try Data(contentsOf: url)
    let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    header = try JSONSerialization.jsonObject(with: data[8..<(8 + length)]) as? [String: Any] ?? [:]
    start = 8 + length
  }

  var names: [String] { header.keys.filter { $0 != "__metadata__" }.sorted() }

  func floats(_ name: String) throws -> [Float] {
    let entry = try #require(header[name] as? [String: Any])
    let offsets = try #require(entry["data_offsets"] as? [Int])
    return data[(start + offsets[0])..<(start + offsets[1])].withUnsafeBytes {
      Array($0.bindMemory(to: Float.self))
    }
  }
}

@Test func kvCacheGreedyDecodingMatchesTransformers() throws {
  // The 32-token greedy continuations transformers produced, now through prefill + one-token
  // steps over the KV cache.
  let fixture =
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: smolLMFixtures.appendingPathComponent("prompts.json")))
    as? [String: Any]
  let prompts = try #require(fixture?["prompts"] as? [[String: Any]])
  for prompt in prompts {
    let ids = try #require(prompt["ids"] as? [Int])
    let greedy = try #require(prompt["greedy"] as? [Int])
    let result = try lorac([
      "generate", try modelPath(), "--prompt-ids", ids.map(String.init).joined(separator: ","),
      "--max-tokens", String(greedy.count), "--json",
    ])
    #expect(result.status == 0, "\(result.stderr)")
    let output = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    #expect(output?["prompt_ids"] as? [Int] == ids)
    #expect(output?["ids"] as? [Int] == greedy)
  }
}

@Test func generateStreamsTextAndStopsAtStopStrings() throws {
  let plain = try lorac([
    "generate", try modelPath(), "--prompt", "The capital of France is", "--max-tokens", "32",
  ])
  #expect(plain.status == 0)
  #expect(plain.stdout == " Paris.\n\nThe answer is: 2018-01-22 12:12:53.\n")
  let stopped = try lorac([
    "generate", try modelPath(), "--prompt", "The capital of France is", "--max-tokens", "32",
    "--stop",
    "answer",
  ])
  #expect(stopped.stdout == " Paris.\n\nThe \n")
  let sampled = [
    "--temperature", "0.8", "--top-k", "40", "--top-p", "0.95", "--seed", "7", "--json",
  ]
  let first = try lorac(
    ["generate", try modelPath(), "--prompt", "Once upon a time", "--max-tokens", "16"] + sampled)
  let second = try lorac(
    ["generate", try modelPath(), "--prompt", "Once upon a time", "--max-tokens", "16"] + sampled)
  let ids = { (run: RunResult) in
    (try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])?["ids"]
      as? [Int]
  }
  #expect(first.status == 0 && ids(first) != nil && ids(first) == ids(second))
  let bad: [([String], String)] = [
    (
      ["generate", try modelPath()],
      "error: give exactly one of --prompt and --prompt-ids (see 'lorac generate --help')\n"
    ),
    (
      ["generate", try modelPath(), "--prompt", "x", "--top-p", "1.5"],
      "error: --top-p must be in (0, 1], got 1.5 (see 'lorac generate --help')\n"
    ),
    (
      ["generate", try modelPath(), "--prompt-ids", "1,70000"],
      "error: --prompt-ids: token 70000 is out of range 0..<49152\n"
    ),
  ]
  for (arguments, message) in bad {
    let result = try lorac(arguments)
    #expect(result.status == 1)
    #expect(result.stderr == message)
  }
}

@Test func trainWritesAPEFTAdapterThatEvalAndGenerateLoad() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("data.jsonl")
  try """
  {"prompt": ">>> mystery_function(1, 2)\\n", "completion": "3"}
  {"text": "lorac trains LoRA adapters on CPUs."}
  {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
  """.write(to: data, atomically: true, encoding: .utf8)
  let out = folder.appendingPathComponent("adapter")
  let train = try lorac([
    "train", try modelPath(), "--data", data.path, "--out", out.path, "--steps", "3", "--batch",
    "2",
    "--rank", "4", "--targets", "layers.{0,1}.attn.{q,v}",
  ])
  #expect(train.status == 0, "\(train.stderr)")
  #expect(train.stderr.contains("step 3/3"))
  let files = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
  #expect(
    files == [
      "adapter_config.json", "adapter_model.safetensors", "loss.svg", "metrics.jsonl",
      "training_state.safetensors",
    ])
  let metrics = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
  #expect(metrics.split(separator: "\n").count == 3)
  let weights = try SafetensorsReader(url: out.appendingPathComponent("adapter_model.safetensors"))
  #expect(weights.names.count == 2 * 2 * 2)
  #expect(weights.names.contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"))
  // B moved away from zero: the adapter is not a silent no-op.
  let b = try weights.floats("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
  #expect(b.contains { $0 != 0 })
  let eval = try lorac([
    "eval", try modelPath(), "--adapter", out.path, "--task", "mystery_function", "--count", "3",
    "--json",
  ])
  #expect(eval.status == 0, "\(eval.stderr)")
  #expect(eval.stdout.contains("\"examples\": 3"))
  let generate = try lorac([
    "generate", try modelPath(), "--adapter", out.path, "--prompt", "Hi", "--max-tokens", "3",
  ])
  #expect(generate.status == 0)
}

@Test func trainRejectsBadData() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("bad.jsonl")
  try "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n".write(
    to: data, atomically: true, encoding: .utf8)
  let out = folder.appendingPathComponent("out").path
  let cases: [([String], String)] = [
    (
      ["train", try modelPath(), "--data", data.path, "--out", out],
      "error: \(data.path):2: not valid JSON (offset 23: unterminated string)\n"
    ),
    (
      ["train", try modelPath(), "--task", "addition", "--out", out],
      "error: unknown --task 'addition' (known: mystery_function) (see 'lorac train --help')\n"
    ),
    (
      ["train", try modelPath(), "--out", out],
      "error: give exactly one of --data and --task (see 'lorac train --help')\n"
    ),
    (
      ["train", try modelPath(), "--task", "mystery_function", "--out", out, "--rank", "0"],
      "error: --rank must be at least 1, got 0 (see 'lorac train --help')\n"
    ),
    (
      [
        "train", try modelPath(), "--task", "mystery_function", "--out", out, "--targets",
        "nothing.*",
      ],
      "error: lora: no matmul named like 'nothing.*'"
    ),
    (
      ["eval", try modelPath(), "--task", "mystery_function", "--adapter", "/nonexistent"],
      "error: /nonexistent: no adapter_config.json (expected a PEFT adapter directory)\n"
    ),
  ]
  for (arguments, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(result.stderr.hasPrefix(message), "\(result.stderr)")
  }
}

@Test func dumpIRRunsAPipelineOnTheModel() throws {
  let pipeline = "lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o}},freeze,autodiff,dce"
  let result = try lorac([
    "dump-ir", try modelPath(), "--batch", "1", "--seq", "4", "--loss", "--pipeline", pipeline,
    "--after", "lora",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  #expect(
    result.stdout.hasPrefix(
      "func @llama(%tokens: i32[1,4], %positions: i32[1,4], %targets: i32[1,4], %weights: f32[1,4])"
    ))
  #expect(result.stdout.contains("param @layers.29.attn.o.lora_b : f32[8,576] {init=zeros}"))
  #expect(result.stdout.contains("\"layers.0.attn.q.lora_a.grad\""))
  let lines = result.stderr.split(separator: "\n")
  #expect(lines.filter { $0.hasPrefix("# ----- after ") }.count == 4)
  #expect(result.stderr.contains("func @llama("))  // the IR after lora
  // The printed train graph parses back to the same text.
  let check = try lorac(["check-ir", "-"], stdin: result.stdout)
  #expect(check.status == 0)
  #expect(check.stdout == result.stdout)
  let unknown = try lorac(["dump-ir", try modelPath(), "--pipeline", "lora,fsue"])
  #expect(unknown.status == 1)
  #expect(
    unknown.stderr
      == "error: unknown pass 'fsue' (known passes: lora, freeze, fold, reassociate, fuse, decode, merge, unmerge, autodiff, capture, patch, add, ablate, dce, cse)\n"
  )
}
