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

/// Per-head LoRA on the parts of GPT-2's fused product: head h of q, k, v adds
/// `s (x A[h]) B[h]`, which is an ordinary adapter of rank heads x r whose A stacks the heads' A
/// and whose B is block-diagonal (same logits within 1e-4); saved and read back as it was.
@Test(arguments: ["tiny-gpt2", "tiny-neox"])
func perHeadAdaptersOnFusedPartsAreBlockDiagonalOrdinaryOnes(_ name: String) throws {
  let model = try LlamaModel.open(huggingFaceFixtures.appendingPathComponent(name).path)
  let (heads, headDim, width) = (
    model.config.headCount, model.config.headDimension, model.config.embeddingLength
  )
  let rank = 2
  var random = SplitMix64(seed: 7)
  var perHead: [String: HostTensor] = [:]
  var ordinary: [String: HostTensor] = [:]
  var targets: [String] = []
  for layer in 0..<model.config.layerCount {
    for part in ["q", "k", "v"] {
      let target = "layers.\(layer).attn.\(part)"
      targets.append(target)
      let a = (0..<(heads * width * rank)).map { _ in Float(random.uniform(-0.3, 0.3)) }
      let b = (0..<(heads * rank * headDim)).map { _ in Float(random.uniform(-0.3, 0.3)) }
      perHead[target + ".lora_a"] = HostTensor(shape: [heads, width, rank], floats: a)
      perHead[target + ".lora_b"] = HostTensor(shape: [heads, rank, headDim], floats: b)
      var wideA = [Float](repeating: 0, count: width * heads * rank)
      var wideB = [Float](repeating: 0, count: heads * rank * heads * headDim)
      for h in 0..<heads {
        for i in 0..<width {
          for k in 0..<rank {
            wideA[i * heads * rank + h * rank + k] = a[(h * width + i) * rank + k]
          }
        }
        for k in 0..<rank {
          for j in 0..<headDim {
            wideB[(h * rank + k) * heads * headDim + h * headDim + j] =
              b[(h * rank + k) * headDim + j]
          }
        }
      }
      ordinary[target + ".lora_a"] = HostTensor(shape: [width, heads * rank], floats: wideA)
      ordinary[target + ".lora_b"] = HostTensor(
        shape: [heads * rank, heads * headDim], floats: wideB)
    }
  }
  let alpha = 4.0
  let adapter = PEFTAdapter(
    rank: rank, alpha: alpha, targets: targets, tensors: perHead, perHead: true)
  let wide = PEFTAdapter(
    rank: heads * rank, alpha: alpha * Double(heads), targets: targets, tensors: ordinary)
  let tokens: [Int32] = [5, 9, 17, 33, 2, 101]
  let base = try ForwardSession(model: model, sequence: tokens.count, adapter: nil).logits(tokens)
  let mine = try ForwardSession(model: model, sequence: tokens.count, adapter: adapter).logits(
    tokens)
  let theirs = try ForwardSession(model: model, sequence: tokens.count, adapter: wide).logits(
    tokens)
  let worst = zip(mine.floats(), theirs.floats()).map { abs($0 - $1) }.max() ?? .infinity
  let moved = zip(mine.floats(), base.floats()).map { abs($0 - $1) }.max() ?? 0
  #expect(worst <= 1e-4 && moved > 1e-2, "per head vs block-diagonal \(worst), effect \(moved)")

  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  try adapter.save(to: folder, config: model.config, baseModel: model.baseModelName)
  let read = try PEFTAdapter.load(folder.path, for: model)
  #expect(read.perHead && Set(read.targets) == Set(targets))
  for (key, tensor) in perHead { #expect(read.tensors[key]?.floats() == tensor.floats(), "\(key)") }
}
