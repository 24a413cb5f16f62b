import Foundation
import IR
import Models
import Runtime
import Sessions
import TestSupport
import Testing

/// The fixture of make_dpo_fixtures.py: one DPO step with TRL's formula in PyTorch.
private struct DPOFixture: Decodable {
  struct Pair: Decodable { var prompt, chosen, rejected: String }
  var beta: Double
  var pairs: [Pair]
  var ids: [[Int32]]
  var policy_logps, reference_logps: [Double]
  var loss, reward_margin, accuracy, chosen_reward, rejected_reward: Double
}

@Test func oneDPOStepMatchesTRLsLossInPyTorch() throws {
  let fixture = try JSONDecoder().decode(
    DPOFixture.self,
    from: Data(contentsOf: smolLMFixtures.appendingPathComponent("dpo.json")))
  let model = try LlamaModel.open(try modelPath())
  // The pairs as `lorac dpo` reads them: the same ids as transformers' tokenizer.
  let data = temporaryURL(".jsonl")
  defer { try? FileManager.default.removeItem(at: data) }
  let lines = try fixture.pairs.map { pair in
    String(
      decoding: try JSONSerialization.data(
        withJSONObject: ["prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected]),
      as: UTF8.self)
  }
  try (lines.joined(separator: "\n") + "\n").write(to: data, atomically: true, encoding: .utf8)
  let pairs = try PreferencePair.load(path: data.path, tokenizer: try model.tokenizer())
  #expect(pairs.map(\.chosen.ids) + pairs.map(\.rejected.ids) == fixture.ids)

  var configuration = DPOConfiguration()
  (configuration.rank, configuration.alpha) = (4, 8)
  configuration.targets = "layers.{0,1,29}.attn.{q,v}"
  configuration.beta = fixture.beta
  configuration.pairs = pairs.count
  configuration.sequence = (fixture.ids.map(\.count).max() ?? 2) - 1
  let session = try DPOSession(model: model, configuration: configuration)
  let adapter = try PEFTAdapter.load(
    smolLMFixtures.appendingPathComponent("peft_qv_r4").path, for: model)
  try session.setParameters(adapter.tensors)

  let inputs = try session.inputs(pairs)
  let reference = inputs["reference_logps"]?.floats() ?? []
  for (ours, theirs) in zip(reference, fixture.reference_logps) {
    #expect(abs(Double(ours) - theirs) <= 1e-4 * abs(theirs), "reference \(ours) vs \(theirs)")
  }
  let figures = try session.evaluate(pairs)
  let difference = abs(figures.loss - fixture.loss) / abs(fixture.loss)
  #expect(difference <= 1e-4, "loss: \(figures.loss) vs \(fixture.loss), relative \(difference)")
  // A reward is beta times the difference of two log-probabilities a few units large and close
  // to each other, so 1e-4 relative on each (what lorac's Q4_1 kernels and the dequantised f32
  // model reach, ~1e-6 measured) bounds it by 1e-4 beta (|logp| + |ref|), not 1e-4 of itself.
  let (count, beta) = (pairs.count, fixture.beta)
  let (policy, base) = (fixture.policy_logps, fixture.reference_logps)
  func scale(_ rows: Range<Int>) -> Double {
    beta * rows.map { abs(policy[$0]) + abs(base[$0]) }.reduce(0, +) / Double(count)
  }
  let compared: [(String, Double, Double, Double)] = [
    ("chosen_reward", figures.chosenReward, fixture.chosen_reward, scale(0..<count)),
    (
      "rejected_reward", figures.rejectedReward, fixture.rejected_reward, scale(count..<(2 * count))
    ),
    ("reward_margin", figures.rewardMargin, fixture.reward_margin, scale(0..<(2 * count))),
  ]
  for (name, ours, theirs, magnitude) in compared {
    #expect(
      abs(ours - theirs) <= 1e-4 * magnitude,
      "\(name): \(ours) vs \(theirs), bound \(1e-4 * magnitude)")
  }
  #expect(figures.accuracy == fixture.accuracy)

  var shaped: [String: HostTensor] = [:]
  for (name, values) in session.gradients() {
    let shape = try session.trainer.executable.value(named: name).type.shape
    shaped[name] = HostTensor(shape: shape, floats: values)
  }
  let expected = try SafetensorsFile(
    path: smolLMFixtures.appendingPathComponent("dpo_gradients.safetensors").path)
  var worst = (name: "", difference: 0.0)
  let peft = try PEFTAdapter.peftTensors(shaped, config: model.config)
  #expect(peft.count == 12)
  for (name, tensor) in peft {
    let (a, b) = (tensor.floats(), try expected.tensor(named: name).floats())
    let difference = zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
    let norm = b.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
    if difference / norm > worst.difference { worst = (name, difference / norm) }
  }
  // The gradient parity bound of grad_qv_r4 (the same adapter's gradients through the same
  // kernels): 1e-3 relative per tensor.
  #expect(worst.difference <= 1e-3, "worst gradient \(worst)")
}
