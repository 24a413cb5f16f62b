import Foundation
import IR
import Models
import TestSupport
import Testing

// Per-head adapters on disk: the fixture make_per_head_fixtures.py wrote from the TransformerLens
// tutorial's Lora modules (rank 2, alpha 4, q, k, v, o of layers 0 and 15 of SmolLM2).

private let fixture = smolLMFixtures.appendingPathComponent("per_head_r2")

/// SmolLM2-135M's shape: d_model 576, 9 query heads and 3 key/value heads of 64.
private let smolLM = LlamaConfig(
  vocabularySize: 49152, embeddingLength: 576, layerCount: 30, headCount: 9, keyValueHeadCount: 3,
  feedForwardLength: 1536)

private func fixtureWeights() throws -> SafetensorsFile {
  try SafetensorsFile(path: fixture.appendingPathComponent("adapter_model.safetensors").path)
}

/// Copies the fixture to a temporary folder with `config` as its adapter_config.json and
/// `tensors` (when given) as its weights.
private func variant(
  config: String, tensors: [(name: String, tensor: HostTensor)]? = nil
) throws -> URL {
  let folder = try temporaryFolder()
  try Data(config.utf8).write(to: folder.appendingPathComponent("adapter_config.json"))
  let weights = folder.appendingPathComponent("adapter_model.safetensors")
  if let tensors {
    try SafetensorsFile.write(tensors, to: weights)
  } else {
    try FileManager.default.copyItem(
      at: fixture.appendingPathComponent("adapter_model.safetensors"), to: weights)
  }
  return folder
}

private let perHeadConfig = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "per_head": true}"#

@Test func perHeadAdapterReadsTheTutorialsLayoutAndWritesItBack() throws {
  let adapter = try PEFTAdapter(directory: fixture.path, config: smolLM)
  #expect(adapter.perHead && adapter.rank == 2 && adapter.scale == 2)
  #expect(adapter.targets.count == 8)
  #expect(adapter.tensors["layers.0.attn.q.lora_a"]?.type.shape == [9, 576, 2])
  #expect(adapter.tensors["layers.15.attn.k.lora_b"]?.type.shape == [3, 2, 64])
  #expect(adapter.tensors["layers.0.attn.o.lora_a"]?.type.shape == [9, 64, 2])
  #expect(adapter.tensors["layers.0.attn.o.lora_b"]?.type.shape == [9, 2, 576])
  #expect(PEFTAdapter.isPerHead(directory: fixture.path))
  let file = try fixtureWeights()
  let prefix = "base_model.model.model.layers.0.self_attn."
  // A as stored; v and o B as stored; q and k B with each head's 64 outputs in GGUF's order:
  // GGUF element 2i + j is Hugging Face element 32 j + i.
  #expect(
    adapter.tensors["layers.0.attn.q.lora_a"]?.floats()
      == (try file.tensor(named: prefix + "q_proj.lora_A.weight")).floats())
  #expect(
    adapter.tensors["layers.0.attn.v.lora_b"]?.floats()
      == (try file.tensor(named: prefix + "v_proj.lora_B.weight")).floats())
  for module in ["q", "k"] {
    let stored = try file.tensor(named: prefix + "\(module)_proj.lora_B.weight").floats()
    let held = try #require(adapter.tensors["layers.0.attn.\(module).lora_b"]).floats()
    var expected = stored
    for vector in 0..<(stored.count / 64) {
      for index in 0..<64 {
        let huggingFace = huggingFaceRow(ofGGUFRow: index, headDimension: 64)
        expected[vector * 64 + index] = stored[vector * 64 + huggingFace]
      }
    }
    #expect(held == expected, "\(module) lora_b")
    #expect(held != stored)
  }
  // Written back (checkpoints, `lorac grad`), every tensor is the file's, name, shape and bytes.
  let written = try PEFTAdapter.peftTensors(adapter.tensors, config: smolLM)
  #expect(written.map(\.name) == file.entries.map(\.name).sorted())
  for (name, tensor) in written {
    let original = try file.tensor(named: name)
    #expect(tensor.type == original.type && tensor.data == original.data, "\(name)")
  }
}

@Test func theFixturesAIsTorchsKaimingInitWithTheBoundLoracUses() throws {
  // torch's own fan-in of each 3-D A (recorded by the script), the bound it gives and the largest
  // |A| torch drew: lorac's `fan_in=torch` rule gives the same fan-in and bound, and its draws
  // fill the same interval.
  let json = try #require(
    try JSONSerialization.jsonObject(
      with: Data(contentsOf: smolLMFixtures.appendingPathComponent("per_head.json")))
      as? [String: Any])
  let fanIns = try #require(json["torch_fan_in"] as? [String: Int])
  let bounds = try #require(json["a_bounds"] as? [String: Double])
  let largest = try #require(json["a_max_abs"] as? [String: Double])
  let adapter = try PEFTAdapter(directory: fixture.path, config: smolLM)
  for module in ["q", "k", "v", "o"] {
    let shape = try #require(adapter.tensors["layers.0.attn.\(module).lora_a"]).type.shape
    #expect(Initializer.fanIn(of: shape, rule: .torch) == fanIns[module], "\(module)")
    let bound = 1 / Double(Initializer.fanIn(of: shape, rule: .torch)).squareRoot()
    #expect(abs(bound - (bounds[module] ?? 0)) < 1e-12, "\(module)")
    let drawn = Initializer.kaimingUniform(a: 5.0.squareRoot(), fanIn: .torch)
      .values(for: TensorType(.f32, shape), seed: 9).scalars
    let ours = drawn.map(abs).max() ?? 0
    let theirs = try #require(largest[module])
    #expect(theirs <= bound && ours <= Double(Float(bound)))
    #expect(ours > 0.995 * bound && theirs > 0.995 * bound, "\(module): \(ours), \(theirs)")
  }
}

@Test func perHeadAdaptersRejectBadInputInOneLine() throws {
  func message(_ directory: URL) -> String? {
    defer { try? FileManager.default.removeItem(at: directory) }
    do {
      _ = try PEFTAdapter(directory: directory.path, config: smolLM)
      return nil
    } catch {
      return error.message.replacingOccurrences(of: directory.path, with: "DIR")
    }
  }
  // The flag must be a boolean.
  #expect(
    message(try variant(config: #"{"r": 2, "lora_alpha": 4, "per_head": "yes"}"#))
      == "DIR: adapter_config.json: 'per_head' must be true or false")
  // 3-D tensors without the flag: the shapes, and what the config should say.
  #expect(
    message(try variant(config: #"{"r": 2, "lora_alpha": 4}"#))
      == "DIR: 'layers.0.attn.k': lora_A is [3, 576, 2] and lora_B [3, 2, 64]; rank 2 on this model needs [2, 576] and [192, 2] (3-D tensors are a per-head adapter's: its adapter_config.json must say \"per_head\": true)"
  )
  // Another model's head counts (SmolLM2-360M: 15 heads, 5 key/value heads of 64 on 960).
  let other = LlamaConfig(
    vocabularySize: 49152, embeddingLength: 960, layerCount: 32, headCount: 15,
    keyValueHeadCount: 5, feedForwardLength: 2560)
  #expect(throws: FileError.self) { try PEFTAdapter(directory: fixture.path, config: other) }
  do {
    _ = try PEFTAdapter(directory: fixture.path, config: other)
  } catch {
    #expect(
      error.message
        == "\(fixture.path): 'layers.0.attn.k': lora_A is [3, 576, 2] and lora_B [3, 2, 64]; a per-head adapter of rank 2 on this model needs [5, 960, 2] and [5, 2, 64] ([heads, in, r], [heads, r, out])"
    )
  }
  // A per-head MLP projection.
  let mlp = "base_model.model.model.layers.0.mlp.up_proj"
  #expect(
    message(
      try variant(
        config: perHeadConfig,
        tensors: [
          (
            mlp + ".lora_A.weight",
            HostTensor(shape: [1, 576, 2], floats: .init(repeating: 0, count: 1152))
          ),
          (
            mlp + ".lora_B.weight",
            HostTensor(shape: [1, 2, 1536], floats: .init(repeating: 0, count: 3072))
          ),
        ]))
      == "DIR: 'layers.0.mlp.up': a per-head adapter holds only attention projections (q_proj, k_proj, v_proj, o_proj)"
  )
  // Ordinary 2-D tensors under a per-head config.
  let v = "base_model.model.model.layers.0.self_attn.v_proj"
  #expect(
    message(
      try variant(
        config: perHeadConfig,
        tensors: [
          (
            v + ".lora_A.weight",
            HostTensor(shape: [2, 576], floats: .init(repeating: 0, count: 1152))
          ),
          (
            v + ".lora_B.weight",
            HostTensor(shape: [192, 2], floats: .init(repeating: 0, count: 384))
          ),
        ]))
      == "DIR: 'layers.0.attn.v': lora_A is [2, 576] and lora_B [192, 2]; a per-head adapter of rank 2 on this model needs [3, 576, 2] and [3, 2, 64] ([heads, in, r], [heads, r, out])"
  )
}

@Test func perHeadAdaptersCombineHeadByHeadAndNotWithOrdinaryOnes() throws {
  let adapter = try PEFTAdapter(directory: fixture.path, config: smolLM)
  let ordinary = try PEFTAdapter(
    directory: smolLMFixtures.appendingPathComponent("peft_qv_r4").path, config: smolLM)
  #expect(
    throws: FileError(
      message:
        "--adapter: per-head and ordinary adapters cannot be combined (fold one into the model with lorac merge first)"
    )
  ) { try PEFTAdapter.combining([(adapter, 1), (ordinary, 1)]) }
  // 0.7 and 0.3 of the same adapter: ranks stacked per head, B scaled by weight times scale 2.
  let both = try PEFTAdapter.combining([(adapter, 0.7), (adapter, 0.3)])
  #expect(both.perHead && both.rank == 4 && both.scale == 1 && both.targets == adapter.targets)
  let a = try #require(adapter.tensors["layers.15.attn.o.lora_a"]).floats()  // [9, 64, 2]
  let b = try #require(adapter.tensors["layers.15.attn.o.lora_b"]).floats()  // [9, 2, 576]
  let stackedA = try #require(both.tensors["layers.15.attn.o.lora_a"])
  let stackedB = try #require(both.tensors["layers.15.attn.o.lora_b"])
  #expect(stackedA.type.shape == [9, 64, 4] && stackedB.type.shape == [9, 4, 576])
  let (sa, sb) = (stackedA.floats(), stackedB.floats())
  for h in [0, 8] {
    for i in [0, 63] {
      for k in 0..<2 {
        #expect(sa[(h * 64 + i) * 4 + k] == a[(h * 64 + i) * 2 + k])
        #expect(sa[(h * 64 + i) * 4 + 2 + k] == a[(h * 64 + i) * 2 + k])
      }
    }
    for k in 0..<2 {
      for j in [0, 575] {
        #expect(sb[(h * 4 + k) * 576 + j] == Float(0.7 * 2) * b[(h * 2 + k) * 576 + j])
        #expect(sb[(h * 4 + 2 + k) * 576 + j] == Float(0.3 * 2) * b[(h * 2 + k) * 576 + j])
      }
    }
  }
}

@Test func perHeadProductsFillEachHeadsBlockByHand() {
  // Two heads, rank 1: A[0] = [1, 2]^T, A[1] = [3, 4]^T; B[0] = [1, 10], B[1] = [100, 1000].
  let a: [Float] = [1, 2, 3, 4]
  let b: [Float] = [1, 10, 100, 1000]
  // q-like, [out 4, in 2]: head 0's outputs are rows 0-1 (A[0] B[0] = [[1, 10], [2, 20]] as
  // [in, out], so row o holds column o), head 1's rows 2-3.
  var q = [Float](repeating: 0, count: 8)
  LoraMerge.addPerHeadProducts(
    to: &q, outputs: 4, inputs: 2, a: a, b: b, instances: 2, rank: 1, concatenatedInput: false,
    scale: 1)
  #expect(q == [1, 2, 10, 20, 300, 400, 3000, 4000])
  // o-like, [out 2, in 4]: head 0 reads inputs 0-1, head 1 inputs 2-3, both write every output.
  var o = [Float](repeating: 1, count: 8)
  LoraMerge.addPerHeadProducts(
    to: &o, outputs: 2, inputs: 4, a: a, b: b, instances: 2, rank: 1, concatenatedInput: true,
    scale: 0.5)
  #expect(o == [1.5, 2, 151, 201, 6, 11, 1501, 2001])
}

@Test func aPerHeadAdapterIsNotALlamaCppAdapter() throws {
  let adapter = try PEFTAdapter(directory: fixture.path, config: smolLM)
  #expect(throws: GGUFError(message: LoraMerge.perHeadExportRefusal)) {
    try LoraMerge.llamaCppAdapter(adapter, model: nil)
  }
  #expect(
    !PEFTAdapter.isPerHead(directory: smolLMFixtures.appendingPathComponent("peft_qv_r4").path))
}
