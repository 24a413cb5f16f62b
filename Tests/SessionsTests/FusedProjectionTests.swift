import Foundation
import IR
import Models
import Runtime
import Sessions
import TestSupport
import Testing

// LoRA on GPT-2's and GPT-NeoX's fused q/k/v product (make_gpt2neox_fixtures.py): separate q, k,
// v adapters checked against PEFT through the fused module they are blocks of.

private struct PEFTCase: Decodable {
  var ids: [Int32]
  var loss: Double
  var split_loss: Double
  var split_rank: Int
  var split_alpha: Double
}

private func fixture(_ name: String) throws -> PEFTCase {
  try JSONDecoder().decode(
    PEFTCase.self,
    from: Data(contentsOf: huggingFaceFixtures.appendingPathComponent(name + "-peft.json")))
}

/// Every tensor of a safetensors file, by name.
private func tensors(_ file: String) throws -> [String: HostTensor] {
  let weights = try SafetensorsFile(path: huggingFaceFixtures.appendingPathComponent(file).path)
  var result: [String: HostTensor] = [:]
  for entry in weights.entries { result[entry.name] = try weights.tensor(named: entry.name) }
  return result
}

private func relativeDifference(_ a: [Float], _ b: [Float]) -> Double {
  let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
  return difference / b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
}

/// `layers.N.attn.{q,k,v}` adapters (rank 4, alpha 8) are PEFT's rank-12 adapter (alpha 24) on
/// `c_attn` / `query_key_value` whose B is zero outside the q, k, v rows (GPT-NeoX: per head):
/// lorac's loss and every gradient are PEFT's within 1e-4 relative.
@Test(arguments: ["tiny-gpt2", "tiny-neox"])
func splitQKVAdaptersMatchPEFTThroughTheFusedModule(_ name: String) throws {
  let reference = try fixture(name)
  let model = try LlamaModel.open(huggingFaceFixtures.appendingPathComponent(name).path)
  let split = try tensors(name + "-split.safetensors")
  let targets = Set(split.keys.map { String($0.dropLast(7)) }).sorted()
  #expect(targets.count == 3 * model.config.layerCount)
  let adapter = PEFTAdapter(
    rank: reference.split_rank, alpha: reference.split_alpha, targets: targets, tensors: split)
  let ids = reference.ids
  let session = try GradientSession(
    model: model, adapter: adapter, batch: 1, sequence: ids.count)
  let loss = try session.run(
    PackedBatch(
      [TrainingExample(ids: ids, weights: .init(repeating: 1, count: ids.count - 1))],
      sequence: ids.count))
  #expect(
    abs(Double(loss) - reference.split_loss) <= 1e-4 * reference.split_loss,
    "\(loss) vs \(reference.split_loss)")
  let expected = try tensors(name + "-split-grad.safetensors")
  let gradients = session.gradients()
  #expect(Set(gradients.keys) == Set(expected.keys))
  var worst = 0.0
  for (key, tensor) in expected {
    let mine = try #require(gradients[key])
    #expect(mine.type.shape == tensor.type.shape, "\(key)")
    worst = max(worst, relativeDifference(mine.floats(), tensor.floats()))
  }
  #expect(worst <= 1e-4, "worst relative gradient difference \(worst)")
}

/// Split q, k, v adapters are saved as PEFT's fused module at rank 3r (rank_pattern) with B zero
/// outside their blocks, and read back as the same q, k, v tensors.
@Test(arguments: ["tiny-gpt2", "tiny-neox"])
func splitQKVAdaptersRoundTripThroughTheFusedPEFTModule(_ name: String) throws {
  let reference = try fixture(name)
  let model = try LlamaModel.open(huggingFaceFixtures.appendingPathComponent(name).path)
  var split = try tensors(name + "-split.safetensors")
  // Only q and v in layer 1: k is zero in the fused blocks and is not read back.
  split = split.filter { !$0.key.hasPrefix("layers.1.attn.k.") }
  let targets = Set(split.keys.map { String($0.dropLast(7)) }).sorted()
  let adapter = PEFTAdapter(
    rank: reference.split_rank, alpha: reference.split_alpha, targets: targets, tensors: split)
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  try adapter.save(to: folder, config: model.config, baseModel: model.baseModelName)
  let text = try String(
    contentsOf: folder.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  let module = name == "tiny-gpt2" ? "c_attn" : "query_key_value"
  #expect(text.contains("\"rank_pattern\": {\"\(module)\": 12}"), "\(text)")
  #expect(text.contains("\"fan_in_fan_out\": \(name == "tiny-gpt2")"))
  let read = try PEFTAdapter.load(folder.path, for: model)
  #expect(read.rank == reference.split_rank && read.scale == adapter.scale)
  #expect(Set(read.targets) == Set(targets))
  for (key, tensor) in split {
    #expect(read.tensors[key]?.floats() == tensor.floats(), "\(key)")
  }
}

/// A branch on a part of the fused product is not fused into `lora_linear`, so it takes the
/// run-time adapter scale as an input: 0 is the base model bit for bit.
@Test func splitQKVAdaptersFollowTheAdapterScale() throws {
  let name = "tiny-neox"
  let reference = try fixture(name)
  let model = try LlamaModel.open(huggingFaceFixtures.appendingPathComponent(name).path)
  let split = try tensors(name + "-split.safetensors")
  let adapter = PEFTAdapter(
    rank: reference.split_rank, alpha: reference.split_alpha,
    targets: Set(split.keys.map { String($0.dropLast(7)) }).sorted(), tensors: split)
  let tokens = Array(reference.ids.prefix(6))
  let base = try ForwardSession(model: model, sequence: tokens.count, adapter: nil).logits(tokens)
  let session = try ForwardSession(model: model, sequence: tokens.count, adapter: adapter)
  #expect(try session.logits(tokens).data != base.data)
  try session.setAdapterScale(0)
  #expect(try session.logits(tokens).data == base.data)
}
