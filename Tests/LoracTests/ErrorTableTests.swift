import Foundation
import Models
import TestSupport
import Testing

// The bad-input table of docs/errors.md: every class of error at the command line, each with its
// exact message and exit status 1, and nothing on stdout.

/// Runs lorac and checks that it fails with exactly `message` on stderr and status 1.
private func expectError(
  _ arguments: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let result = try lorac(arguments)
  #expect(result.status == 1, "\(arguments.prefix(4))", sourceLocation: sourceLocation)
  #expect(result.stderr == message, sourceLocation: sourceLocation)
  #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
}

/// Writes a one-layer Llama-shaped GGUF (width 64, 4 heads, vocabulary 32) with zero weights:
/// `architecture` in the metadata and, when given, `attn_q` stored as ggml type `qType`.
private func writeTinyGGUF(_ url: URL, architecture: String = "llama", qType: UInt32? = nil)
  throws
{
  let (width, feedForward, vocabulary) = (64, 128, 32)
  let metadata: [(key: String, value: GGUFValue)] = [
    ("general.architecture", .string(architecture)),
    ("\(architecture).embedding_length", .uint32(UInt32(width))),
    ("\(architecture).attention.head_count", .uint32(4)),
    ("\(architecture).block_count", .uint32(1)),
    ("\(architecture).feed_forward_length", .uint32(UInt32(feedForward))),
    ("\(architecture).vocab_size", .uint32(UInt32(vocabulary))),
    ("\(architecture).context_length", .uint32(64)),
  ]
  let shapes: [(String, [Int])] = [
    ("token_embd.weight", [vocabulary, width]), ("blk.0.attn_norm.weight", [width]),
    ("blk.0.attn_q.weight", [width, width]), ("blk.0.attn_k.weight", [width, width]),
    ("blk.0.attn_v.weight", [width, width]), ("blk.0.attn_output.weight", [width, width]),
    ("blk.0.ffn_norm.weight", [width]), ("blk.0.ffn_gate.weight", [feedForward, width]),
    ("blk.0.ffn_up.weight", [feedForward, width]), ("blk.0.ffn_down.weight", [width, feedForward]),
    ("output_norm.weight", [width]),
  ]
  let tensors = shapes.map { name, shape -> GGUFTensorData in
    let count = shape.reduce(1, *)
    if let qType, name == "blk.0.attn_q.weight" {
      // Q5_0: 22 bytes per block of 32.
      return GGUFTensorData(
        name: name, shape: shape, typeID: qType, data: Data(count: count / 32 * 22))
    }
    return .f32(name: name, shape: shape, floats: [Float](repeating: 0, count: count))
  }
  try GGUFFileWriter(metadata: metadata, tensors: tensors).write(to: url.path)
}

@Test func missingAndUnreadableFilesAreNamed() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let file = folder.appendingPathComponent("file.txt")
  try "hello\n".write(to: file, atomically: true, encoding: .utf8)
  let cases: [([String], String)] = [
    (
      ["train", model, "--data", "/nonexistent.jsonl", "--out", folder.path],
      "error: /nonexistent.jsonl: cannot open: No such file or directory\n"
    ),
    (
      ["eval", model, "--data", "/nonexistent.jsonl"],
      "error: /nonexistent.jsonl: cannot open: No such file or directory\n"
    ),
    // A folder where a file is expected (tests run as root, so chmod 000 would not stop a read).
    (
      ["train", model, "--data", folder.path, "--out", folder.path],
      "error: \(folder.path): is a directory\n"
    ),
    (["eval", model, "--data", folder.path], "error: \(folder.path): is a directory\n"),
    (
      ["logits", model, "--ids", "1,2", "--out", folder.path],
      "error: \(folder.path): is a directory\n"
    ),
    (
      ["compile", model, "-o", folder.path], "error: \(folder.path): is a directory\n"
    ),
    // And a file where a folder is expected, refused before the model is traced.
    (
      ["train", model, "--task", "mystery_function", "--out", file.path],
      "error: \(file.path): is a file; --out names a folder (made if missing)\n"
    ),
    (["check-ir", file.path], "error: \(file.path):1:1: expected 'func', found 'hello'\n"),
  ]
  for (arguments, message) in cases { try expectError(arguments, message) }
  // Nothing was left behind in the folder given as an output file.
  #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["file.txt"])
}

@Test func filesThatAreNotGGUFAreRefused() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let text = folder.appendingPathComponent("model.gguf")
  try "hello\n".write(to: text, atomically: true, encoding: .utf8)
  let empty = folder.appendingPathComponent("empty.gguf")
  _ = FileManager.default.createFile(atPath: empty.path, contents: Data())
  // The first 5,000 bytes of the real model: a header whose tables run past the end.
  let truncated = folder.appendingPathComponent("truncated.gguf")
  let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: try modelPath()))
  try handle.read(upToCount: 5000)?.write(to: truncated)
  try handle.close()
  try expectError(
    ["inspect", text.path],
    "error: \(text.path): offset 0: not a GGUF file (the magic number is not 'GGUF')\n")
  try expectError(
    ["logits", empty.path, "--ids", "1", "--out", folder.path + "/x.npy"],
    "error: \(empty.path): the file is empty\n")
  try expectError(
    ["generate", truncated.path, "--prompt", "hi"],
    "error: \(truncated.path): offset 8: tensor count 272 exceeds what the file size allows\n")
}

@Test func unsupportedArchitecturesAndDtypesAreNamed() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let gpt2 = folder.appendingPathComponent("bloom.gguf")
  try writeTinyGGUF(gpt2, architecture: "bloom")
  let q5 = folder.appendingPathComponent("q5.gguf")
  try writeTinyGGUF(q5, qType: 6)
  let tiny = folder.appendingPathComponent("tiny.gguf")
  try writeTinyGGUF(tiny)
  let out = folder.appendingPathComponent("x.npy").path
  try expectError(
    ["logits", gpt2.path, "--ids", "1", "--out", out],
    "error: \(gpt2.path): architecture 'bloom' is not supported (expected llama, gpt2 or gptneox)\n"
  )
  try expectError(
    ["generate", gpt2.path, "--prompt", "hi"],
    "error: \(gpt2.path): architecture 'bloom' is not supported (expected llama, gpt2 or gptneox)\n"
  )
  try expectError(
    ["logits", q5.path, "--ids", "1", "--out", out],
    "error: \(q5.path): tensor 'blk.0.attn_q.weight' is Q5_0, which lorac does not read directly\n")
  #expect(!FileManager.default.fileExists(atPath: out))
  // The tiny model itself runs: the errors above are about the architecture and the dtype.
  let fine = try lorac(["logits", tiny.path, "--ids", "1,2", "--out", out])
  #expect(fine.status == 0, "\(fine.stderr)")
  // Its context is 64 tokens.
  try expectError(
    [
      "logits", tiny.path, "--ids", Array(repeating: "1", count: 65).joined(separator: ","),
      "--out", out,
    ],
    "error: --ids: 65 tokens are more than the model's context of 64\n")
  // An adapter for another model: SmolLM2's q/v adapter (layers 0, 1, 29) on a one-layer model.
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  try expectError(
    ["logits", tiny.path, "--ids", "1,2", "--out", out, "--adapter", adapter],
    "error: \(adapter): tensor 'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight' "
      + "adapts layer 1, but the model has 1 layers (an adapter for another model?)\n")
}

@Test func anAdapterOfAnotherRankIsRefused() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  for file in ["adapter_config.json", "adapter_model.safetensors"] {
    try FileManager.default.copyItem(
      at: smolLMFixtures.appendingPathComponent("peft_qv_r4/\(file)"),
      to: folder.appendingPathComponent(file))
  }
  let config = folder.appendingPathComponent("adapter_config.json")
  try String(contentsOf: config, encoding: .utf8)
    .replacingOccurrences(of: "\"r\": 4", with: "\"r\": 8")
    .write(to: config, atomically: true, encoding: .utf8)
  let message =
    "error: \(folder.path): 'layers.0.attn.q': lora_A is [4, 576] and lora_B [576, 4]; rank 8 on "
    + "this model needs [8, 576] and [576, 8]\n"
  let out = folder.appendingPathComponent("merged.gguf").path
  try expectError(["generate", model, "--adapter", folder.path, "--prompt", "hi"], message)
  try expectError(["merge", model, "--adapter", folder.path, "-o", out], message)
  try expectError(
    ["logits", model, "--ids", "1", "--out", out + ".npy", "--adapter", folder.path], message)
  try expectError(
    ["eval", model, "--adapter", folder.path, "--task", "mystery_function", "--count", "1"], message
  )
  #expect(!FileManager.default.fileExists(atPath: out))
  #expect(!FileManager.default.fileExists(atPath: out + ".npy"))
}

@Test func malformedJSONLinesAreReportedWithTheirLineNumber() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let out = folder.appendingPathComponent("out").path
  let cases: [(String, String)] = [
    ("{\"text\": \"ok\"}\n\nnot json\n", ":3: not valid JSON (offset 0: invalid literal)"),
    ("{\"text\": \"ok\"}\n{\"prompt\": \"a\"}\n", ":2: \"prompt\" needs a string \"completion\""),
    ("{\"input\": \"a\"}\n", ":1: expected \"prompt\"+\"completion\", \"text\" or \"messages\""),
    ("{\"text\": 3}\n", ":1: \"text\" must be a string, got a number"),
    (
      "{\"prompt\": \"a\", \"completion\": [1]}\n",
      ":1: \"completion\" must be a string, got an array"
    ),
    ("{\"messages\": \"hi\"}\n", ":1: \"messages\" must be an array, got a string"),
    (
      "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\"}]}\n",
      ":1: message 2 needs string \"role\" and \"content\""
    ),
    ("[1, 2]\n", ":1: expected a JSON object, got an array"),
    ("\n\n", ": no examples"),
  ]
  for (index, (text, suffix)) in cases.enumerated() {
    let data = folder.appendingPathComponent("data\(index).jsonl")
    try text.write(to: data, atomically: true, encoding: .utf8)
    try expectError(
      ["train", model, "--data", data.path, "--out", out], "error: \(data.path)\(suffix)\n")
  }
  #expect(!FileManager.default.fileExists(atPath: out))
  // eval reads prompt/completion lines; blank lines count in the numbering.
  let evalCases: [(String, String)] = [
    (
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n\nnot json\n",
      ":3: not valid JSON (offset 0: invalid literal)"
    ),
    (
      "{\"prompt\": \"a\", \"completion\": 3}\n",
      ":1: expected string \"prompt\" and \"completion\" (\"prompt\" is a string, \"completion\" is a number)"
    ),
    (
      "{\"text\": \"a\"}\n",
      ":1: expected string \"prompt\" and \"completion\" (no \"prompt\", no \"completion\")"
    ),
  ]
  for (index, (text, suffix)) in evalCases.enumerated() {
    let data = folder.appendingPathComponent("eval\(index).jsonl")
    try text.write(to: data, atomically: true, encoding: .utf8)
    try expectError(["eval", model, "--data", data.path], "error: \(data.path)\(suffix)\n")
  }
}

@Test func pipelineSyntaxErrorsNameThePassOrTheText() throws {
  let cases: [(String, String)] = [
    (
      "fuse,nosuch",
      "unknown pass 'nosuch' (known passes: lora, freeze, fold, reassociate, fuse, decode, merge, unmerge, autodiff, capture, patch, add, ablate, dce, cse)"
    ),
    (
      "lora{bogus=1}",
      "lora: unknown option 'bogus' (accepted: rank, alpha, targets, rslora, seed, per_head)"
    ),
    ("lora{rank=x}", "lora: option 'rank' must be an integer in 1...65536, got 'x'"),
    ("lora{rank=4", "pipeline: unbalanced '{' in 'lora{rank=4'"),
    ("fuse,,dce", "pipeline: empty entry in 'fuse,,dce'"),
  ]
  for (pipeline, message) in cases {
    try expectError(
      ["dump-ir", "--example", "mlp", "--pipeline", pipeline], "error: \(message)\n")
  }
  try expectError(
    ["dump-ir", "--example", "mlp", "--pipeline", "fuse", "--after", "lora"],
    "error: --after: 'lora' is not a pass of the pipeline 'fuse' (give one of fuse, or all)\n")
  let grad = try lorac([
    "grad", try modelPath(), "--adapter", smolLMFixtures.appendingPathComponent("peft_qv_r4").path,
    "--ids", "1,2,3", "--out", "/tmp/unused.safetensors", "--print-ir-after", "lora,fuze",
  ])
  #expect(grad.status == 1)
  #expect(grad.stderr.hasPrefix("error: --print-ir-after: 'fuze' is not a pass of the pipeline"))
  #expect(grad.stderr.hasSuffix("(give one of lora, freeze, fuse, autodiff, dce, or all)\n"))
  try expectError(
    ["compile", try modelPath(), "--pipeline", "lora{rank=0}", "-o", "/tmp/unused.lorac"],
    "error: lora: option 'rank' must be an integer in 1...65536, got '0'\n")
}

@Test func outOfRangeAndMalformedFlagsAreOneLineWithStatusOne() throws {
  let model = try modelPath()
  let train = ["train", model, "--task", "mystery_function", "--out", "/tmp/unused"]
  let generate = ["generate", model, "--prompt", "hi"]
  let help = { (command: String) in " (see 'lorac \(command) --help')\n" }
  let cases: [([String], String)] = [
    (train + ["--rank", "0"], "error: --rank must be at least 1, got 0" + help("train")),
    (train + ["--lr", "-1"], "error: --lr must be positive, got -1.0" + help("train")),
    (train + ["--lr", "nan"], "error: --lr must be positive, got nan" + help("train")),
    (train + ["--alpha", "0"], "error: --alpha must be positive, got 0.0" + help("train")),
    (train + ["--threads", "0"], "error: --threads must be at least 1, got 0" + help("train")),
    (train + ["--batch", "0"], "error: --batch must be at least 1, got 0" + help("train")),
    (train + ["--seq", "1"], "error: --seq must be at least 2, got 1" + help("train")),
    (train + ["--warmup", "-1"], "error: --warmup must be at least 0, got -1" + help("train")),
    (
      train + ["--weight-decay", "-0.1"],
      "error: --weight-decay must be at least 0, got -0.1" + help("train")
    ),
    (
      train + ["--max-grad-norm", "0"],
      "error: --max-grad-norm must be positive, got 0.0" + help("train")
    ),
    (generate + ["--top-p", "2"], "error: --top-p must be in (0, 1], got 2.0" + help("generate")),
    (
      generate + ["--temperature", "-1"],
      "error: --temperature must not be negative, got -1.0" + help("generate")
    ),
    (generate + ["--top-k", "0"], "error: --top-k must be at least 1, got 0" + help("generate")),
    (
      generate + ["--max-tokens", "0"],
      "error: --max-tokens must be at least 1, got 0" + help("generate")
    ),
    (
      generate + ["--repeat-penalty", "0"],
      "error: --repeat-penalty must be positive, got 0.0" + help("generate")
    ),
    (
      generate + ["--threads", "-2"],
      "error: --threads must be at least 1, got -2" + help("generate")
    ),
    (
      ["eval", model, "--task", "mystery_function", "--batch", "0"],
      "error: --batch must be at least 1, got 0" + help("eval")
    ),
    (
      ["logits", model, "--ids", "1", "--out", "/tmp/unused.npy", "--threads", "0"],
      "error: --threads must be at least 1, got 0" + help("logits")
    ),
    // What swift-argument-parser itself rejects takes the same one-line form.
    (
      generate + ["--max-tokens", "many"],
      "error: The value 'many' is invalid for '--max-tokens <max-tokens>'" + help("generate")
    ),
    (
      generate + ["--max-tokens"],
      "error: Missing value for '--max-tokens <max-tokens>'" + help("generate")
    ),
    (generate + ["--bogus"], "error: Unknown option '--bogus'" + help("generate")),
    (["generate"], "error: Missing expected argument '<model>'" + help("generate")),
    (["nosuch"], "error: Unexpected argument 'nosuch' (see 'lorac --help')\n"),
    (["dump-ir"], "error: give a model file or --example (see 'lorac dump-ir --help')\n"),
    // Token ids outside the vocabulary.
    (
      ["generate", model, "--prompt-ids", "1,49152"],
      "error: --prompt-ids: token 49152 is out of range 0..<49152\n"
    ),
    (
      ["logits", model, "--ids", "-1", "--out", "/tmp/unused.npy"],
      "error: --ids: token -1 is out of range 0..<49152\n"
    ),
    (
      [
        "grad", model, "--adapter", smolLMFixtures.appendingPathComponent("peft_qv_r4").path,
        "--ids",
        "1,49152", "--out", "/tmp/unused.safetensors",
      ],
      "error: --ids: token 49152 is out of range 0..<49152\n"
    ),
  ]
  for (arguments, message) in cases { try expectError(arguments, message) }
}

@Test func sequencesLongerThanTheContextAreRefusedBeforeCompiling() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let ids = { (count: Int) in Array(repeating: "28", count: count).joined(separator: ",") }
  try expectError(
    ["generate", model, "--prompt-ids", ids(8192)],
    "error: the prompt has 8192 tokens; the model's context of 8192 leaves no room to generate "
      + "(at most 8191 prompt tokens)\n")
  try expectError(
    ["generate", model, "--prompt", String(repeating: "word ", count: 9000)],
    "error: the prompt has 9001 tokens; the model's context of 8192 leaves no room to generate "
      + "(at most 8191 prompt tokens)\n")
  try expectError(
    ["logits", model, "--ids", ids(8193), "--out", folder.appendingPathComponent("x.npy").path],
    "error: --ids: 8193 tokens are more than the model's context of 8192\n")
  try expectError(
    [
      "grad", model, "--adapter", smolLMFixtures.appendingPathComponent("peft_qv_r4").path, "--ids",
      ids(8193), "--out", folder.appendingPathComponent("g.safetensors").path,
    ],
    "error: --ids: 8193 tokens are more than the model's context of 8192\n")
  let data = folder.appendingPathComponent("long.jsonl")
  try "{\"prompt\": \"\(String(repeating: "a ", count: 9000))\", \"completion\": \"b\"}\n".write(
    to: data, atomically: true, encoding: .utf8)
  try expectError(
    ["eval", model, "--data", data.path],
    "error: \(data.path):1: the prompt and completion have 9003 tokens (with end-of-sequence), "
      + "more than the model's context of 8192\n")
  let out = folder.appendingPathComponent("out")
  try expectError(
    ["train", model, "--task", "mystery_function", "--seq", "9000", "--out", out.path],
    "error: --seq 9000 is more than the model's context of 8192 tokens\n")
  #expect(!FileManager.default.fileExists(atPath: out.path))
  try expectError(
    ["compile", model, "--seq", "9000", "-o", folder.appendingPathComponent("b.lorac").path],
    "error: --seq 9000 is more than the model's context of 8192 tokens\n")
  #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["long.jsonl"])
}
