import Foundation
import IR
import Models
import Runtime
import TestSupport
import Testing

// A tiny random Llama checkpoint saved by transformers (f32, and bf16 in 4 shards), against the
// logits and greedy tokens transformers computed for it (Tests/Fixtures/make_hf_fixtures.py).

private struct TinyFixture: Decodable {
  struct Prompt: Decodable {
    var text: String
    var ids: [Int32]
    var greedy: [Int32]
    var greedy_bf16: [Int32]?
  }
  var prompts: [Prompt]
}

private func tinyFixture(_ name: String = "tiny-llama") throws -> TinyFixture {
  try JSONDecoder().decode(
    TinyFixture.self,
    from: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + ".json")))
}

private let tinyLlama = huggingFaceFixtures.appendingPathComponent("tiny-llama").path
private let tinyLlamaBF16 = huggingFaceFixtures.appendingPathComponent("tiny-llama-bf16").path

/// The largest |lorac - transformers| over every position and vocabulary entry of each prompt.
private func worstLogitDifference(
  model: LlamaModel, reference prefix: String, target: Target = .host,
  fixture: String = "tiny-llama"
) throws -> Float {
  var worst: Float = 0
  for (k, prompt) in try tinyFixture(fixture).prompts.enumerated() {
    let reference = try readNumPy(huggingFaceFixtures.appendingPathComponent("\(prefix)-\(k).npy"))
    #expect(reference.shape == [prompt.ids.count, model.config.vocabularySize])
    let logits = try runLogits(model, prompt.ids, target: target)
    #expect(logits.count == reference.values.count)
    for (ours, theirs) in zip(logits, reference.values) { worst = max(worst, abs(ours - theirs)) }
  }
  return worst
}

/// Greedy continuations of every prompt, `count` tokens each, by full forward passes.
private func greedy(
  _ model: LlamaModel, _ ids: [Int32], count: Int, target: Target = .host
) throws -> [Int32] {
  var ids = ids
  var generated: [Int32] = []
  let vocabulary = model.config.vocabularySize
  while generated.count < count {
    let logits = try runLogits(model, ids, target: target)
    let last = Array(logits[((ids.count - 1) * vocabulary)...])
    let next = Int32(try #require(last.indices.max { last[$0] < last[$1] }))
    generated.append(next)
    ids.append(next)
  }
  return generated
}

@Test func folderConfigBecomesLlamaConfig() throws {
  let model = try LlamaModel(path: tinyLlama)
  #expect(
    model.config
      == LlamaConfig(
        vocabularySize: 700, embeddingLength: 64, layerCount: 2, headCount: 4,
        keyValueHeadCount: 2, feedForwardLength: 128, ropeTheta: 10_000, normEpsilon: 1e-5,
        tiedEmbeddings: false, interleavedRope: false))
  #expect(model.file == nil)
}

@Test func folderLogitsMatchTransformers() throws {
  let worst = try worstLogitDifference(
    model: try LlamaModel(path: tinyLlama), reference: "tiny-llama-logits")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

/// bf16-stored weights decoded exactly and multiplied in f32 (bf16 products off: the host
/// target's bf16 products round activations to bf16), as transformers computes with the same
/// weights upcast to float32: the same bound as f32.
@Test func shardedBF16FolderLogitsMatchTransformers() throws {
  let model = try LlamaModel(path: tinyLlamaBF16)
  guard case .huggingFace(let folder) = model.source else {
    Issue.record("not read as a folder")
    return
  }
  #expect(folder.shards.count == 4)
  let worst = try worstLogitDifference(
    model: model, reference: "tiny-llama-bf16-logits", target: Target(bf16Products: false))
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

@Test func folderGreedyTokensMatchTransformers() throws {
  let (f32, bf16) = (try LlamaModel(path: tinyLlama), try LlamaModel(path: tinyLlamaBF16))
  for prompt in try tinyFixture().prompts {
    #expect(try greedy(f32, prompt.ids, count: 16) == prompt.greedy, "\(prompt.text)")
    #expect(
      try greedy(bf16, prompt.ids, count: 16, target: Target(bf16Products: false))
        == (prompt.greedy_bf16 ?? []), "\(prompt.text) (bf16)")
  }
}

// MARK: - Qwen2

private let tinyQwen2 = huggingFaceFixtures.appendingPathComponent("tiny-qwen2").path

@Test func qwen2ConfigHasAttentionBiasAndATiedHead() throws {
  let model = try LlamaModel(path: tinyQwen2)
  #expect(
    model.config
      == LlamaConfig(
        vocabularySize: 700, embeddingLength: 64, layerCount: 2, headCount: 4,
        keyValueHeadCount: 2, feedForwardLength: 128, ropeTheta: 1_000_000, normEpsilon: 1e-6,
        tiedEmbeddings: true, interleavedRope: false, attentionBias: true))
  let graph = try model.trace(batch: 1, sequence: 2)
  #expect(graph.declarations.contains { $0.name == "blk.1.attn_v.bias" })
  #expect(!graph.declarations.contains { $0.name == "output.weight" })
}

/// Random q/k/v biases (transformers initialises them to zero) and norms, a tied head.
@Test func qwen2FolderLogitsAndGreedyTokensMatchTransformers() throws {
  let model = try LlamaModel(path: tinyQwen2)
  let worst = try worstLogitDifference(
    model: model, reference: "tiny-qwen2-logits", fixture: "tiny-qwen2")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
  for prompt in try tinyFixture("tiny-qwen2").prompts {
    #expect(try greedy(model, prompt.ids, count: 16) == prompt.greedy, "\(prompt.text)")
  }
}

/// head_dim 32 with hidden 64 and 4 heads: q and o are 128 wide, not hidden_size.
@Test func explicitHeadDimensionMatchesTransformers() throws {
  let model = try LlamaModel(
    path: huggingFaceFixtures.appendingPathComponent("tiny-llama-head-dim").path)
  #expect(model.config.headDimension == 32 && model.config.explicitHeadDimension == 32)
  let worst = try worstLogitDifference(
    model: model, reference: "tiny-llama-head-dim-logits", fixture: "tiny-llama-head-dim")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
  for prompt in try tinyFixture("tiny-llama-head-dim").prompts {
    #expect(try greedy(model, prompt.ids, count: 16) == prompt.greedy, "\(prompt.text)")
  }
}

/// Mistral's sliding window (64 here, longer than every sequence of the fixture) is the context.
@Test func mistralFolderMatchesTransformersWithinItsWindow() throws {
  let model = try LlamaModel(
    path: huggingFaceFixtures.appendingPathComponent("tiny-mistral").path)
  #expect(model.config.keyValueHeadCount == 1 && !model.config.tiedEmbeddings)
  let worst = try worstLogitDifference(
    model: model, reference: "tiny-mistral-logits", target: Target(bf16Products: false),
    fixture: "tiny-mistral")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

/// f16 weights are declared f16 (read as stored, decoded exactly by the kernels): transformers'
/// logits on the same weights upcast to float32, within the f32 bound.
@Test func f16FolderLogitsMatchTransformers() throws {
  let model = try LlamaModel(
    path: huggingFaceFixtures.appendingPathComponent("tiny-llama-head-dim-f16").path)
  let graph = try model.trace(batch: 1, sequence: 2)
  let declared = graph.declarations.first { $0.name == "blk.0.attn_q.weight" }
  #expect(declared.map { graph.type(of: $0.value) } == TensorType(.f16, [128, 64]))
  let worst = try worstLogitDifference(
    model: model, reference: "tiny-llama-head-dim-f16-logits", fixture: "tiny-llama-head-dim")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

@Test func folderWeightsAreMappedNotCopied() throws {
  let model = try LlamaModel(path: tinyLlamaBF16)
  guard case .huggingFace(let folder) = model.source else {
    Issue.record("not read as a folder")
    return
  }
  let graph = try model.trace(batch: 1, sequence: 4)
  func declared(_ name: String) -> TensorType? {
    graph.declarations.first { $0.name == name }.map { graph.type(of: $0.value) }
  }
  // Matrices keep their stored bf16; norm vectors are widened to f32 (elementwise ops are f32).
  #expect(declared("blk.0.attn_q.weight") == TensorType(.bf16, [64, 64]))
  #expect(declared("token_embd.weight") == TensorType(.bf16, [700, 64]))
  #expect(declared("blk.0.attn_norm.weight") == TensorType(.f32, [64]))
  let weights = try model.weights(for: graph)
  let bound = try #require(weights["blk.1.ffn_down.weight"])
  let stored = try folder.tensor(named: "model.layers.1.mlp.down_proj.weight")
  let (a, b) = (
    bound.data.withUnsafeBytes { $0.baseAddress }, stored.data.withUnsafeBytes { $0.baseAddress }
  )
  #expect(a != nil && a == b, "the bound weight is not the shard's mapped memory")
}

// MARK: - Bad folders

/// A copy of the tiny f32 folder with `edit` applied to its files.
private func brokenFolder(_ edit: (URL) throws -> Void) throws -> URL {
  let folder = try temporaryFolder()
  for name in try FileManager.default.contentsOfDirectory(atPath: tinyLlamaBF16) {
    try FileManager.default.copyItem(
      atPath: tinyLlamaBF16 + "/" + name, toPath: folder.appendingPathComponent(name).path)
  }
  try edit(folder)
  return folder
}

private func replace(_ folder: URL, _ file: String, _ old: String, _ new: String) throws {
  let url = folder.appendingPathComponent(file)
  let text = try String(contentsOf: url, encoding: .utf8)
  #expect(text.contains(old), "\(file) has no \(old)")
  try text.replacingOccurrences(of: old, with: new).write(
    to: url, atomically: true, encoding: .utf8)
}

/// The one-line message opening (or tracing and binding) the folder fails with.
private func failure(_ folder: URL) throws -> String {
  defer { try? FileManager.default.removeItem(at: folder) }
  do {
    let model = try LlamaModel(path: folder.path)
    _ = try model.weights(for: try model.trace(batch: 1, sequence: 2))
  } catch let error as GGUFError {
    return error.message
  }
  Issue.record("\(folder.path) opened")
  return ""
}

@Test func badFoldersAreOneLineErrorsNamingFileAndField() throws {
  let cases: [(edit: (URL) throws -> Void, expected: String)] = [
    (
      { try replace($0, "config.json", "\"llama\"", "\"llama9\"") },
      "config.json: model_type 'llama9' is not supported (supported: gpt2, gpt_neox, llama, mistral, qwen2)"
    ),
    (
      {
        try replace(
          $0, "config.json", "\"model_type\": \"llama\"",
          "\"model_type\": \"qwen2\", \"use_sliding_window\": true")
      },
      "config.json: use_sliding_window true is not supported (lorac attends causally to every token)"
    ),
    (
      {
        try replace(
          $0, "config.json", "\"model_type\": \"llama\"",
          "\"model_type\": \"mistral\", \"sliding_window\": \"4096\"")
      },
      "config.json: sliding_window must be a positive integer or null"
    ),
    (
      { try replace($0, "config.json", "\"model_type\": \"llama\"", "\"model_type\": \"qwen2\"") },
      "no tensor 'model.layers.0.self_attn.q_proj.bias' in the model's safetensors"
    ),
    (
      { try replace($0, "config.json", "\"hidden_size\": 64", "\"hidden_size\": -64") },
      "config.json: hidden_size must be a positive integer"
    ),
    (
      {
        try replace(
          $0, "config.json", "\"num_attention_heads\": 4", "\"num_attention_heads\": 1099511627776")
      },
      "config.json: num_attention_heads must be at most 65536, got 1099511627776"
    ),
    (
      { try replace($0, "config.json", "\"attention_bias\": false", "\"attention_bias\": true") },
      "config.json: attention_bias true is not supported for model_type 'llama'"
    ),
    (
      { try replace($0, "config.json", "\"rope_type\": \"default\"", "\"rope_type\": \"llama3\"") },
      "config.json: rope_parameters.rope_type 'llama3' is not supported (lorac reads default RoPE)"
    ),
    (
      { try replace($0, "config.json", "\"intermediate_size\": 128", "\"intermediate_size\": 96") },
      "tensor 'model.layers.0.mlp.gate_proj.weight' is bf16[128,64]; the model's hyper-parameters make it bf16[96,64]"
    ),
    (
      { try replace($0, "config.json", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3") },
      "no tensor 'model.layers.2.input_layernorm.weight' in the model's safetensors"
    ),
    (
      {
        try FileManager.default.removeItem(
          at: $0.appendingPathComponent("model-00003-of-00004.safetensors"))
      },
      "model.safetensors.index.json: weight_map names 'model-00003-of-00004.safetensors', which is not in the folder"
    ),
    (
      {
        try replace(
          $0, "model.safetensors.index.json", "\"model-00003-of-00004.safetensors\"",
          "\"../model-00003-of-00004.safetensors\"")
      },
      "'../model-00003-of-00004.safetensors' is not a .safetensors file name in the folder"
    ),
    (
      {
        try replace(
          $0, "model.safetensors.index.json", "\"lm_head.weight\": \"model-00004",
          "\"lm_head.weight\": \"model-00003")
      },
      "model.safetensors.index.json: weight_map places 'lm_head.weight' in model-00003-of-00004.safetensors, which does not hold it"
    ),
    (
      { try FileManager.default.removeItem(at: $0.appendingPathComponent("config.json")) },
      "no config.json (a model is a GGUF file or a Hugging Face folder)"
    ),
    (
      {
        try "{\"model_type\": ".write(
          to: $0.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
      },
      "config.json: "
    ),
  ]
  for (edit, expected) in cases {
    let message = try failure(try brokenFolder(edit))
    #expect(message.contains(expected), "\(message)")
    #expect(!message.contains("\n"), "\(message)")
  }
}
