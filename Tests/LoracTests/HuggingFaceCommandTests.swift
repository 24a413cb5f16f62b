import Foundation
import TestSupport
import Testing

// The commands on a Hugging Face folder (the tiny random Llama of make_hf_fixtures.py).

private let tinyLlama = huggingFaceFixtures.appendingPathComponent("tiny-llama").path
private let tinyLlamaBF16 = huggingFaceFixtures.appendingPathComponent("tiny-llama-bf16").path

@Test func inspectSummarisesAFolderAsAGGUF() throws {
  let text = try lorac(["inspect", tinyLlamaBF16])
  #expect(text.status == 0, "\(text.stderr)")
  #expect(
    text.stdout.hasPrefix("\(tinyLlamaBF16): Hugging Face folder, 4 safetensors files, llama"))
  #expect(text.stdout.contains("vocab 700, embedding 64, 2 layers, 4 heads (2 key/value), ffn 128"))
  #expect(text.stdout.contains("separate output head"))
  #expect(
    text.stdout.contains(
      "pre-tokenizer Split+ByteLevel, 700 tokens, bos 0 <|begin_of_text|> (added)"))
  #expect(text.stdout.contains("model.layers.1.self_attn.k_proj.weight"))
  let json = try lorac(["inspect", tinyLlama, "--json"])
  let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
  #expect((object?["tensors"] as? [Any])?.count == 21)
  #expect(object?["format"] as? String == "huggingface")
  #expect((object?["hyperparameters"] as? [String: Any])?["head_count_kv"] as? Int == 2)
}

private struct TinyFixture: Decodable {
  struct Prompt: Decodable {
    var text: String
    var ids: [Int32]
    var greedy: [Int32]
  }
  var prompts: [Prompt]
}

/// `lorac generate` decodes with the KV cache; its greedy tokens are transformers', for the
/// Llama folder (BOS added by its tokenizer.json), the Qwen2 one (q/k/v biases, no BOS), a
/// Llama whose head_dim is not hidden_size / heads, GPT-2 (learned positions) and GPT-NeoX
/// (partial RoPE, parallel and sequential residuals).
@Test(
  arguments: [
    "tiny-llama", "tiny-qwen2", "tiny-llama-head-dim", "tiny-mistral", "tiny-gpt2", "tiny-neox",
    "tiny-neox-sequential",
  ])
func generateOnAFolderMatchesTransformersGreedy(_ name: String) throws {
  let fixture = try JSONDecoder().decode(
    TinyFixture.self,
    from: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + ".json")))
  let folder = huggingFaceFixtures.appendingPathComponent(name).path
  for prompt in fixture.prompts {
    // The prompt's text through the folder's tokenizer.json.
    let result = try lorac([
      "generate", folder, "--prompt", prompt.text, "--max-tokens", "16", "--ignore-eos",
      "--json",
    ])
    #expect(result.status == 0, "\(result.stderr)")
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    #expect((object?["prompt_ids"] as? [Int]) == prompt.ids.map(Int.init))
    #expect((object?["ids"] as? [Int]) == prompt.greedy.map(Int.init), "\(prompt.text)")
  }
}

/// A copy of the tiny f32 folder with `old` replaced by `new` in `file` (nil: no edit).
private func editedFolder(_ file: String? = nil, _ old: String = "", _ new: String = "") throws
  -> URL
{
  let folder = try temporaryFolder()
  for name in try FileManager.default.contentsOfDirectory(atPath: tinyLlama) {
    try FileManager.default.copyItem(
      atPath: tinyLlama + "/" + name, toPath: folder.appendingPathComponent(name).path)
  }
  if let file {
    let url = folder.appendingPathComponent(file)
    let text = try String(contentsOf: url, encoding: .utf8)
    #expect(text.contains(old), "\(file) has no \(old)")
    try text.replacingOccurrences(of: old, with: new).write(
      to: url, atomically: true, encoding: .utf8)
  }
  return folder
}

/// Mistral's sliding window of 64 tokens is its context: 65 ids are refused, not approximated.
@Test func mistralRefusesSequencesPastItsWindow() throws {
  let folder = huggingFaceFixtures.appendingPathComponent("tiny-mistral").path
  let out = temporaryURL(".npy")
  defer { try? FileManager.default.removeItem(at: out) }
  let ids = Array(repeating: "5", count: 65).joined(separator: ",")
  let result = try lorac(["logits", folder, "--ids", ids, "--out", out.path])
  #expect(result.status == 1)
  #expect(result.stderr == "error: --ids: 65 tokens are more than the model's context of 64\n")
}

@Test func badFoldersAreOneLineErrorsAtTheCommandLine() throws {
  let empty = try temporaryFolder()
  let unknownType = try editedFolder("config.json", "\"llama\"", "\"gemma\"")
  let metaspace = try editedFolder(
    "tokenizer.json", "\"type\": \"Split\"", "\"type\": \"Whitespace\"")
  let noWeights = try editedFolder()
  try FileManager.default.removeItem(at: noWeights.appendingPathComponent("model.safetensors"))
  defer {
    for folder in [empty, unknownType, metaspace, noWeights] {
      try? FileManager.default.removeItem(at: folder)
    }
  }
  let out = temporaryURL(".npy").path
  let cases: [([String], String)] = [
    (
      ["inspect", empty.path],
      "error: \(empty.path): no config.json (a model is a GGUF file or a Hugging Face folder)\n"
    ),
    (
      ["logits", unknownType.path, "--ids", "1", "--out", out],
      "error: \(unknownType.path)/config.json: model_type 'gemma' is not supported (supported: gpt2, gpt_neox, llama, mistral, qwen2)\n"
    ),
    (
      ["tokenize", metaspace.path, "--text", "hi"],
      "error: \(metaspace.path)/tokenizer.json: pre_tokenizer.pretokenizers[0].type 'Whitespace' is not supported (supported: ByteLevel, Digits, Metaspace, Split, Sequence)\n"
    ),
    (
      ["inspect", noWeights.path],
      "error: \(noWeights.path): no model.safetensors or model.safetensors.index.json\n"
    ),
  ]
  for (arguments, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(result.stderr == message)
    #expect(result.stdout.isEmpty)
  }
}

/// A PEFT adapter on all seven linears of the tiny folder (q_proj and k_proj in Hugging Face row
/// order, as a folder keeps them): `lorac logits` and `lorac grad` against PEFT.
@Test func peftAdapterOnAFolderMatchesPEFT() throws {
  let fixture =
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: huggingFaceFixtures.appendingPathComponent("tiny-llama-peft.json")))
    as? [String: Any]
  let ids = try #require(fixture?["ids"] as? [Int]).map(String.init).joined(separator: ",")
  let referenceLoss = try #require(fixture?["loss"] as? Double)
  let adapter = huggingFaceFixtures.appendingPathComponent("tiny-llama-peft").path
  let (logitsOut, gradientsOut) = (temporaryURL(".npy"), temporaryURL(".safetensors"))
  defer {
    try? FileManager.default.removeItem(at: logitsOut)
    try? FileManager.default.removeItem(at: gradientsOut)
  }
  let logits = try lorac([
    "logits", tinyLlama, "--ids", ids, "--out", logitsOut.path, "--adapter", adapter,
  ])
  #expect(logits.status == 0, "\(logits.stderr)")
  let ours = try readNumPy(logitsOut).values
  let reference = try readNumPy(
    huggingFaceFixtures.appendingPathComponent("tiny-llama-peft-logits.npy")
  ).values
  #expect(ours.count == reference.count)
  let worstLogit = zip(ours, reference).map { abs($0 - $1) }.max() ?? .infinity
  #expect(worstLogit <= 1e-4, "max |logit difference| \(worstLogit)")

  let grad = try lorac([
    "grad", tinyLlama, "--adapter", adapter, "--ids", ids, "--out", gradientsOut.path,
  ])
  #expect(grad.status == 0, "\(grad.stderr)")
  let printed = try JSONSerialization.jsonObject(with: Data(grad.stdout.utf8)) as? [String: Double]
  let loss = try #require(printed?["loss"])
  #expect(abs(loss - referenceLoss) <= 1e-4 * abs(referenceLoss), "\(loss) vs \(referenceLoss)")
  let (mine, theirs) = (
    try SafetensorsReader(url: gradientsOut),
    try SafetensorsReader(
      url: huggingFaceFixtures.appendingPathComponent("tiny-llama-peft-grad.safetensors"))
  )
  #expect(mine.names == theirs.names && theirs.names.count == 28)
  var worst = 0.0
  for name in theirs.names {
    let (a, b) = (try mine.floats(name), try theirs.floats(name))
    #expect(a.count == b.count, "\(name)")
    let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
    let norm = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    worst = max(worst, difference / norm)
  }
  #expect(worst <= 1e-4, "worst relative gradient difference \(worst)")
}

/// PEFT adapters on GPT-2's and GPT-NeoX's fused q/k/v module (`c_attn`, `query_key_value`), the
/// attention output and both MLP linears: `lorac grad`'s loss and every gradient tensor are
/// PEFT's within 1e-4 relative, under PEFT's names.
@Test(arguments: ["tiny-gpt2", "tiny-neox"])
func fusedPEFTAdapterGradientsMatchPEFT(_ name: String) throws {
  let fixture =
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + "-peft.json")))
    as? [String: Any]
  let ids = try #require(fixture?["ids"] as? [Int]).map(String.init).joined(separator: ",")
  let referenceLoss = try #require(fixture?["loss"] as? Double)
  let folder = huggingFaceFixtures.appendingPathComponent(name).path
  let adapter = huggingFaceFixtures.appendingPathComponent(name + "-peft").path
  let out = temporaryURL(".safetensors")
  defer { try? FileManager.default.removeItem(at: out) }
  let grad = try lorac(["grad", folder, "--adapter", adapter, "--ids", ids, "--out", out.path])
  #expect(grad.status == 0, "\(grad.stderr)")
  let printed = try JSONSerialization.jsonObject(with: Data(grad.stdout.utf8)) as? [String: Double]
  let loss = try #require(printed?["loss"])
  #expect(abs(loss - referenceLoss) <= 1e-4 * abs(referenceLoss), "\(loss) vs \(referenceLoss)")
  let (mine, theirs) = (
    try SafetensorsReader(url: out),
    try SafetensorsReader(
      url: huggingFaceFixtures.appendingPathComponent(name + "-peft-grad.safetensors"))
  )
  #expect(mine.names == theirs.names && theirs.names.count == 16)
  var worst = 0.0
  for name in theirs.names {
    let (a, b) = (try mine.floats(name), try theirs.floats(name))
    #expect(a.count == b.count, "\(name)")
    let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
    let norm = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    worst = max(worst, difference / norm)
  }
  #expect(worst <= 1e-4, "worst relative gradient difference \(worst)")
}

/// `lorac generate` on the GGUF forms of a GPT-2 and a GPT-NeoX (KV-cache decoding from the prompt
/// ids): transformers' greedy tokens.
@Test(arguments: [
  ("tiny-gpt2-small.gguf", "tiny-gpt2-small"),
  ("tiny-neox-sequential.gguf", "tiny-neox-sequential"),
])
func generateOnGPT2AndNeoXGGUFMatchesTransformersGreedy(_ file: String, _ name: String) throws {
  let fixture = try JSONDecoder().decode(
    TinyFixture.self,
    from: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + ".json")))
  let model = try fixtureGGUF(huggingFaceFixtures, file)
  for prompt in fixture.prompts {
    let result = try lorac([
      "generate", model, "--prompt-ids", prompt.ids.map(String.init).joined(separator: ","),
      "--max-tokens", "16", "--ignore-eos", "--json",
    ])
    #expect(result.status == 0, "\(result.stderr)")
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    #expect((object?["ids"] as? [Int]) == prompt.greedy.map(Int.init), "\(prompt.text)")
  }
}
