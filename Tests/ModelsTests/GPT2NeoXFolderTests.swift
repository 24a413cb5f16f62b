import Foundation
import IR
import Models
import Runtime
import TestSupport
import Testing

// Tiny random GPT-2 and GPT-NeoX checkpoints saved by transformers, against the logits and greedy
// tokens transformers computed for them (Tests/Fixtures/make_gpt2neox_fixtures.py).

private struct Prompts: Decodable {
  struct Prompt: Decodable {
    var text: String
    var ids: [Int32]
    var greedy: [Int32]
  }
  var prompts: [Prompt]
}

private func folder(_ name: String) -> String {
  huggingFaceFixtures.appendingPathComponent(name).path
}

private func prompts(_ name: String) throws -> [Prompts.Prompt] {
  try JSONDecoder().decode(
    Prompts.self, from: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + ".json"))
  ).prompts
}

@Test func gpt2ConfigReadsLearnedPositionsConv1DAndTanhGELU() throws {
  let config = try LlamaModel(path: folder("tiny-gpt2")).config
  var expected = LlamaConfig(
    vocabularySize: 384, embeddingLength: 64, layerCount: 2, headCount: 4, keyValueHeadCount: 4,
    feedForwardLength: 128, normEpsilon: 1e-5, tiedEmbeddings: true, interleavedRope: false,
    attentionBias: true)
  expected.architecture = .gpt2
  expected.positionCount = 128
  expected.gelu = .tanh
  expected.inputMajorWeights = true
  #expect(config == expected)
}

@Test func neoXConfigReadsPartialRotaryAndParallelResidual() throws {
  let config = try LlamaModel(path: folder("tiny-neox")).config
  var expected = LlamaConfig(
    vocabularySize: 387, embeddingLength: 64, layerCount: 2, headCount: 4, keyValueHeadCount: 4,
    feedForwardLength: 128, ropeTheta: 10_000, normEpsilon: 1e-5, tiedEmbeddings: false,
    interleavedRope: false, attentionBias: true)
  expected.architecture = .gptNeoX
  expected.rotaryDimension = 4
  expected.parallelResidual = true
  expected.gelu = .exact
  expected.qkvPerHead = true
  #expect(config == expected)
  let sequential = try LlamaModel(path: folder("tiny-neox-sequential")).config
  #expect(!sequential.parallelResidual && sequential.rotaryDimension == 4)
  #expect(sequential.ropeTheta == 1000 && sequential.normEpsilon == 1e-6)
  // Pythia's own config.json spells the rotary share and base as transformers 4 did.
  let old = try HuggingFaceConfig(
    bytes: Array(
      """
      {"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4,
       "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 387,
       "rotary_pct": 0.25, "rotary_emb_base": 10000, "rope_scaling": null,
       "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
       "tie_word_embeddings": false}
      """.utf8), path: "config.json")
  #expect(try ModelFamily.config(old) == expected)
}

/// Logits at every position of five prompts within 1e-4 of transformers' (float32), and the 16
/// greedy tokens by full forward passes identical.
@Test(arguments: ["tiny-gpt2", "tiny-neox", "tiny-neox-sequential"])
func gpt2AndNeoXFoldersMatchTransformers(_ name: String) throws {
  let model = try LlamaModel(path: folder(name))
  var worst: Float = 0
  for (k, prompt) in try prompts(name).enumerated() {
    let reference = try readNumPy(
      huggingFaceFixtures.appendingPathComponent("\(name)-logits-\(k).npy"))
    #expect(reference.shape == [prompt.ids.count, model.config.vocabularySize])
    let logits = try runLogits(model, prompt.ids)
    #expect(logits.count == reference.values.count)
    for (ours, theirs) in zip(logits, reference.values) { worst = max(worst, abs(ours - theirs)) }
    var ids = prompt.ids
    var generated: [Int32] = []
    while generated.count < 16 {
      let all = try runLogits(model, ids)
      let last = Array(all[((ids.count - 1) * model.config.vocabularySize)...])
      let next = Int32(try #require(last.indices.max { last[$0] < last[$1] }))
      generated.append(next)
      ids.append(next)
    }
    #expect(generated == prompt.greedy, "\(prompt.text)")
  }
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

/// The fused q/k/v weight is bound as the shard's mapped memory, and q, k and v are slices of its
/// product (no weight is split or copied).
@Test func fusedQKVWeightIsMappedAndSplitAfterTheProduct() throws {
  for (name, hf, shape) in [
    ("tiny-gpt2", "transformer.h.1.attn.c_attn.weight", [64, 192]),
    ("tiny-neox", "gpt_neox.layers.1.attention.query_key_value.weight", [192, 64]),
  ] {
    let model = try LlamaModel(path: folder(name))
    guard case .huggingFace(let stored) = model.source else {
      Issue.record("not read as a folder")
      continue
    }
    let graph = try model.trace(batch: 1, sequence: 3)
    let declaration = try #require(graph.declarations.first { $0.name == "blk.1.attn_qkv.weight" })
    #expect(graph.type(of: declaration.value) == TensorType(.f32, shape))
    #expect(!graph.declarations.contains { $0.name.contains("attn_q.") })
    let bound = try #require(try model.weights(for: graph)["blk.1.attn_qkv.weight"])
    let mapped = try stored.tensor(named: hf)
    let (a, b) = (
      bound.data.withUnsafeBytes { $0.baseAddress },
      mapped.data.withUnsafeBytes { $0.baseAddress }
    )
    #expect(a != nil && a == b, "\(name): the bound weight is not the shard's mapped memory")
    for part in ["q", "k", "v"] {
      let instruction = try #require(graph.body.first { $0.name == "layers.1.attn.\(part)" })
      #expect(graph.type(of: instruction.results[0]) == TensorType(.f32, [1, 3, 64]))
      switch instruction.op {
      case .slice, .reshape: break
      default: Issue.record("\(name): layers.1.attn.\(part) is \(instruction.op)")
      }
    }
  }
}

/// Features the GPT-2 and GPT-NeoX traces do not implement are one-line errors naming the field.
@Test func gpt2AndNeoXConfigErrorsNameTheField() throws {
  let cases: [(String, String, String)] = [
    (
      #""model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 1, "vocab_size": 9, "activation_function": "relu""#,
      "config.json: activation_function 'relu' is not supported (gelu, gelu_new, gelu_pytorch_tanh)",
      ""
    ),
    (
      #""model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 1, "vocab_size": 9, "scale_attn_by_inverse_layer_idx": true"#,
      "config.json: scale_attn_by_inverse_layer_idx true is not supported for model_type 'gpt2'", ""
    ),
    (
      #""model_type": "gpt2", "n_embd": 64, "n_head": 5, "n_layer": 1, "vocab_size": 9"#,
      "config.json: n_head 5 does not divide n_embd 64", ""
    ),
    (
      #""model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 9, "rotary_pct": 0.1"#,
      "config.json: rotary_pct 0.1 of head dimension 16 is not a positive even size", ""
    ),
    (
      #""model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 9, "rope_parameters": {"rope_type": "linear", "factor": 2}"#,
      "config.json: rope_parameters.rope_type 'linear' is not supported (lorac reads default RoPE)",
      ""
    ),
  ]
  for (fields, expected, _) in cases {
    do {
      _ = try ModelFamily.config(
        try HuggingFaceConfig(bytes: Array("{\(fields)}".utf8), path: "config.json"))
      Issue.record("\(fields) was read")
    } catch {
      #expect(error.message == expected)
    }
  }
}

/// GGUF files written as llama.cpp's converter writes them (GPT-2's linears transposed to
/// `[out, in]` and its head a copy of the embedding; NeoX's q/k/v rows reordered from per head to
/// all q, k, v): logits within 1e-4 of transformers' on the checkpoint they were made from, and
/// the greedy tokens.
@Test(arguments: [
  ("tiny-gpt2-small.gguf", "tiny-gpt2-small"),
  ("tiny-neox-sequential.gguf", "tiny-neox-sequential"),
])
func gpt2AndNeoXGGUFFilesMatchTransformers(_ file: String, _ name: String) throws {
  let model = try LlamaModel(path: fixtureGGUF(huggingFaceFixtures, file))
  #expect(model.file != nil)
  #expect(!model.config.inputMajorWeights && !model.config.qkvPerHead)
  var worst: Float = 0
  var compared = 0
  for (k, prompt) in try prompts(name).enumerated() {
    let url = huggingFaceFixtures.appendingPathComponent("\(name)-logits-\(k).npy")
    if FileManager.default.fileExists(atPath: url.path) {
      let reference = try readNumPy(url)
      let logits = try runLogits(model, prompt.ids)
      #expect(logits.count == reference.values.count)
      for (ours, theirs) in zip(logits, reference.values) { worst = max(worst, abs(ours - theirs)) }
      compared += 1
    }
    var ids = prompt.ids
    var generated: [Int32] = []
    while generated.count < 16 {
      let all = try runLogits(model, ids)
      let last = Array(all[((ids.count - 1) * model.config.vocabularySize)...])
      let next = Int32(try #require(last.indices.max { last[$0] < last[$1] }))
      generated.append(next)
      ids.append(next)
    }
    #expect(generated == prompt.greedy, "\(prompt.text)")
  }
  #expect(compared >= 3)
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}
