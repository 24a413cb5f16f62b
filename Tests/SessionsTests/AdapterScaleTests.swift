import Foundation
import IR
import Models
import Runtime
import Sessions
import TestSupport
import Testing

@Test func adapterScaleZeroIsTheBaseModelBitForBitFromTheSameExecutable() throws {
  let model = try LlamaModel.open(try modelPath())
  let adapter = try PEFTAdapter.load(
    smolLMFixtures.appendingPathComponent("peft_qv_r4").path, for: model)
  let tokens: [Int32] = [1, 17, 300, 42, 9]
  let base = try ForwardSession(model: model, sequence: tokens.count, adapter: nil).logits(tokens)
  let session = try ForwardSession(model: model, sequence: tokens.count, adapter: adapter)
  let adapted = try session.logits(tokens)
  #expect(adapted.data != base.data)
  let executable = session.executable
  try session.setAdapterScale(0)
  #expect(try session.logits(tokens).data == base.data)
  try session.setAdapterScale(1)
  #expect(try session.logits(tokens).data == adapted.data)
  #expect(session.executable === executable)
  #expect(throws: SessionError("--adapter-scale must be finite, got nan")) {
    try session.setAdapterScale(.nan)
  }
}

@Test func aDecodeSessionScalesEveryGraphItCompiles() throws {
  let model = try LlamaModel.open(try modelPath())
  let adapter = try PEFTAdapter.load(
    smolLMFixtures.appendingPathComponent("peft_qv_r4").path, for: model)
  let plain = try prefill(DecodeSession(model: model, context: 16, adapter: nil))
  let session = DecodeSession(model: model, context: 16, adapter: adapter)
  let adapted = try prefill(session)
  #expect(adapted != plain)
  // Set before the step graph exists: it is compiled with the scale too.
  try session.setAdapterScale(0)
  #expect(try prefill(session) == plain)
  #expect(try session.compile(tokens: 1).adapterScale == 0)
  try session.setAdapterScale(1)
  #expect(try prefill(session) == adapted)
  #expect(throws: SessionError("--adapter-scale: the session has no adapter to scale")) {
    try DecodeSession(model: model, context: 16, adapter: nil).setAdapterScale(0)
  }
}

@Test func anAdapterOfTheSameShapeSwapsIntoARunningDecodeSession() throws {
  let model = try LlamaModel.open(try modelPath())
  func adapter(_ name: String) throws -> PEFTAdapter {
    try PEFTAdapter.load(smolLMFixtures.appendingPathComponent(name).path, for: model)
  }
  // Another adapter of the same shape: the fixture's values, B doubled and A negated.
  let first = try adapter("peft_qv_r4")
  let other = PEFTAdapter(
    rank: first.rank, alpha: first.alpha, targets: first.targets,
    tensors: first.tensors.mapValues { tensor in
      HostTensor(shape: tensor.type.shape, floats: tensor.floats().map { -2 * $0 })
    })
  let expected = try prefill(DecodeSession(model: model, context: 16, adapter: other))
  let session = DecodeSession(model: model, context: 16, adapter: first)
  let before = try prefill(session)
  #expect(before != expected)
  let compiled = try session.compile(tokens: prompt.count)
  try session.setAdapter(other)
  #expect(try prefill(session) == expected)
  #expect(try session.compile(tokens: prompt.count) === compiled)
  let wrongRank = try PEFTAdapter.combining([(other, 0.5), (other, 0.5)])
  #expect(throws: SessionError.self) { try session.setAdapter(wrongRank) }
  #expect(throws: SessionError.self) { try session.setAdapter(try adapter("grad_qv_r4")) }
}

private let prompt: [Int32] = [1, 17, 300, 42, 9]

/// The prefill's last-position logits of `session` for `prompt`, from empty caches.
private func prefill(_ session: DecodeSession) throws -> Data {
  let executable = try session.compile(tokens: prompt.count)
  executable.resetState()
  try session.setInputs(executable, tokens: prompt, slot: 0)
  try executable.execute()
  return executable.output(0).data
}
