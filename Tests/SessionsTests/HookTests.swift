import Foundation
import IR
import Models
import Runtime
import Sessions
import TestSupport
import Testing

// Hook points against transformers (captured residual streams, a steering vector added by a
// forward hook) and against hand computation (ablations, patches, KV-cache decoding).

private let hookFixtures = smolLMFixtures.appendingPathComponent("hooks")

private struct HookFixture: Decodable {
  var ids: [Int32]
  var layers: [Int]
  var steer_layer: Int
  var steer_scale: Float
  var columns: [Int]
  var greedy: [Int32]
  var steered_greedy: [Int32]
}

private func hookFixture() throws -> HookFixture {
  try JSONDecoder().decode(
    HookFixture.self, from: Data(contentsOf: hookFixtures.appendingPathComponent("hooks.json")))
}

private func steeringVector() throws -> HostTensor {
  let url = hookFixtures.appendingPathComponent("steer.npy")
  return try NumPy.decode(Data(contentsOf: url), path: url.path)
}

/// The largest |a - b| over the largest |b|.
private func relativeToLargest(_ a: [Float], _ b: [Float]) -> Float {
  let largest = b.map(abs).max() ?? 0
  return zip(a, b).map { abs($0 - $1) }.max().map { $0 / max(largest, 1e-30) } ?? 0
}

private func captured(_ captures: [(name: String, tensor: HostTensor)], _ name: String) throws
  -> HostTensor
{
  try #require(captures.first { $0.name == name }?.tensor, "\(name) was not captured")
}

@Test func capturedResidualStreamsMatchTransformersHiddenStates() throws {
  let model = try LlamaModel.open(try modelPath())
  let fixture = try hookFixture()
  let reference = try SafetensorsFile(
    path: hookFixtures.appendingPathComponent("residual.safetensors").path)
  let names = ["embed"] + fixture.layers.map { "layers.\($0).residual.mlp" }
  let session = try ForwardSession(
    model: model, sequence: fixture.ids.count, adapter: nil,
    hooks: Hooks(captures: ["embed", "layers.*.residual.mlp"]))
  let (_, captures) = try session.run(fixture.ids)
  // One capture per layer and the embedding, in graph order, each [batch, positions, d].
  #expect(captures.map(\.name) == ["embed"] + (0..<30).map { "layers.\($0).residual.mlp" })
  for name in names {
    let ours = try captured(captures, name)
    let theirs = try reference.tensor(named: name)
    #expect(ours.type.shape == [1, fixture.ids.count, 576])
    #expect(ours.type.shape == theirs.type.shape)
    // SmolLM2's residual stream reaches ~2e4 in a few channels: bound by the largest magnitude.
    let error = relativeToLargest(ours.floats(), theirs.floats())
    #expect(error <= 1e-5, "\(name): max |difference| / max |value| = \(error)")
  }
}

@Test func steeringVectorMatchesATransformersForwardHook() throws {
  let model = try LlamaModel.open(try modelPath())
  let fixture = try hookFixture()
  let name = "layers.\(fixture.steer_layer).residual.mlp"
  let steer = try steeringVector()
  let session = try ForwardSession(
    model: model, sequence: fixture.ids.count, adapter: nil,
    hooks: Hooks(edits: [HookEdit(name: name, action: .add(steer, scale: fixture.steer_scale))]))
  let logits = try session.logits(fixture.ids).floats()
  let reference = try readNumPy(hookFixtures.appendingPathComponent("steered_logits.npy"))
  let vocabulary = model.config.vocabularySize
  var worst: Float = 0
  for position in fixture.ids.indices {
    for (c, column) in fixture.columns.enumerated() {
      let theirs = reference.values[position * fixture.columns.count + c]
      worst = max(worst, abs(logits[position * vocabulary + column] - theirs))
    }
  }
  #expect(worst <= 1e-3, "steered logits: max |difference| \(worst)")

  // Under KV-cache decoding the vector is added at every position as it is computed:
  // transformers' greedy continuation with the hook.
  let decoder = try DecodeSession(
    model: model, context: 64, adapter: nil,
    hooks: Hooks(edits: [HookEdit(name: name, action: .add(steer, scale: fixture.steer_scale))]))
  let steered = try decoder.generate(
    prompt: fixture.ids, maxTokens: fixture.steered_greedy.count, sampling: SamplingOptions(),
    stop: { _ in false }, emit: { _ in })
  #expect(steered.ids == fixture.steered_greedy)
  #expect(steered.ids != Array(fixture.greedy.prefix(steered.ids.count)))
}

@Test func ablationsAreZerosByHand() throws {
  let model = try LlamaModel.open(try modelPath())
  let ids: [Int32] = [1, 504, 3575, 282, 4649, 314, 7042]
  let session = try ForwardSession(
    model: model, sequence: ids.count, adapter: nil,
    hooks: Hooks(
      captures: ["layers.{2,3}.residual.*", "layers.3.attn.o", "layers.5.mlp.down"],
      edits: [
        HookEdit(name: "layers.3.attn.o", action: .ablate),
        HookEdit(name: "layers.5.mlp.*", action: .ablate),
      ]))
  let (_, captures) = try session.run(ids)
  // The attention output is zero, so the residual stream passes layer 3's attention unchanged
  // (x + 0 == x exactly); the MLP's values are zero too, so layer 5's MLP adds nothing.
  #expect(try captured(captures, "layers.3.attn.o").floats().allSatisfy { $0 == 0 })
  #expect(
    try captured(captures, "layers.3.residual.attn").floats()
      == captured(captures, "layers.2.residual.mlp").floats())
  #expect(try captured(captures, "layers.5.mlp.down").floats().allSatisfy { $0 == 0 })
  #expect(
    try captured(captures, "layers.3.residual.mlp").floats()
      != captured(captures, "layers.3.residual.attn").floats())
}

@Test func patchingTheWholeResidualStreamGivesTheOtherPromptsLogits() throws {
  // After layer 5 the model reads only the residual stream: patched with prompt B's at every
  // position, prompt A's logits are B's.
  let model = try LlamaModel.open(try modelPath())
  let a: [Int32] = [1, 504, 3575, 282, 4649, 314]
  let b: [Int32] = [1, 1780, 314, 1075, 28, 216]
  let capture = try ForwardSession(
    model: model, sequence: b.count, adapter: nil,
    hooks: Hooks(captures: ["layers.5.residual.mlp"]))
  let (logitsB, captures) = try capture.run(b)
  let streamB = try captured(captures, "layers.5.residual.mlp")
  let rows = try HostTensor(
    type: TensorType(.f32, [b.count, 576]), data: streamB.data)
  let patched = try ForwardSession(
    model: model, sequence: a.count, adapter: nil,
    hooks: Hooks(edits: [HookEdit(name: "layers.5.residual.mlp", action: .patch(rows))]))
  let logitsA = try patched.logits(a).floats()
  let plainA = try ForwardSession(model: model, sequence: a.count, adapter: nil).logits(a)
  #expect(logitsA != plainA.floats())
  let error = relativeToLargest(logitsA, logitsB.floats())
  #expect(error <= 1e-6, "patched A against B: \(error)")

  // A patch of the first two positions only leaves the others' own values in that layer.
  let firstTwo = try HostTensor(
    type: TensorType(.f32, [2, 576]), data: streamB.data.prefix(2 * 576 * 4))
  let partial = try ForwardSession(
    model: model, sequence: a.count, adapter: nil,
    hooks: Hooks(
      captures: ["layers.5.residual.mlp"],
      edits: [HookEdit(name: "layers.5.residual.mlp", action: .patch(firstTwo))]))
  let (_, partialCaptures) = try partial.run(a)
  let stream = try captured(partialCaptures, "layers.5.residual.mlp").floats()
  let plainStream = try captured(
    try ForwardSession(
      model: model, sequence: a.count, adapter: nil,
      hooks: Hooks(captures: ["layers.5.residual.mlp"])
    ).run(a).captures, "layers.5.residual.mlp"
  ).floats()
  #expect(Array(stream[..<(2 * 576)]) == Array(streamB.floats()[..<(2 * 576)]))
  #expect(Array(stream[(2 * 576)...]) == Array(plainStream[(2 * 576)...]))
}

@Test func kvCacheDecodingPatchesEachPositionWhenComputedAndCapturesEveryPosition() throws {
  // The decoding session against the forward graph on the whole sequence: a patch over the prompt
  // and the first generated positions, captures of a later layer at every position.
  let model = try LlamaModel.open(try modelPath())
  let prompt: [Int32] = [1, 504, 3575, 282, 4649]
  let newTokens = 6
  var generator = SplitMix64(seed: 11)
  let covered = prompt.count + 3
  let rows = HostTensor(
    shape: [covered, 576],
    floats: (0..<(covered * 576)).map { _ in Float(generator.next() % 2001) / 1000 - 1 })
  let hooks = Hooks(
    captures: ["layers.20.residual.mlp", "layers.7.attn.k"],
    edits: [HookEdit(name: "layers.4.residual.attn", action: .add(rows, scale: 3))])
  let decoder = try DecodeSession(model: model, context: 32, adapter: nil, hooks: hooks)
  let result = try decoder.generate(
    prompt: prompt, maxTokens: newTokens, sampling: SamplingOptions(), stop: { _ in false },
    emit: { _ in })
  #expect(result.ids.count == newTokens)
  let sequence = prompt + result.ids
  let forward = try ForwardSession(
    model: model, sequence: sequence.count, adapter: nil, hooks: hooks)
  let (logits, captures) = try forward.run(sequence)
  // Greedy: each generated token is the forward graph's argmax at the position before it.
  let vocabulary = model.config.vocabularySize
  let values = logits.floats()
  for (k, token) in result.ids.enumerated() {
    let start = (prompt.count - 1 + k) * vocabulary
    var best = 0
    for column in 1..<vocabulary where values[start + column] > values[start + best] {
      best = column
    }
    #expect(Int32(best) == token, "token \(k)")
  }
  for name in ["layers.20.residual.mlp", "layers.7.attn.k"] {
    let ours = try captured(result.captures, name)
    let theirs = try captured(captures, name)
    #expect(ours.type.shape == theirs.type.shape)
    #expect(ours.type.shape[1] == sequence.count)
    let error = relativeToLargest(ours.floats(), theirs.floats())
    #expect(error <= 1e-5, "\(name): decoded against forward: \(error)")
  }
}

@Test func hookErrorsNameTheValueAndTheShapes() throws {
  let model = try LlamaModel.open(try modelPath())
  func message(_ hooks: Hooks, decoding: Bool = false) -> String {
    do {
      if decoding {
        _ = try DecodeSession(model: model, context: 16, adapter: nil, hooks: hooks)
      } else {
        _ = try ForwardSession(model: model, sequence: 4, adapter: nil, hooks: hooks)
      }
      return "no error"
    } catch {
      return error.message
    }
  }
  #expect(
    message(Hooks(captures: ["layers.3.attn.pattern"]))
      == "--capture layers.3.attn.pattern: no value of the model has that name (nearest: "
      + "layers.3.attn.probs, layers.0.attn.probs, layers.1.attn.probs; `lorac names MODEL` "
      + "lists them all)")
  #expect(message(Hooks(captures: ["layers.40.*"])).hasPrefix("--capture layers.40.*: no value"))
  let wrong = HostTensor(shape: [577], floats: [Float](repeating: 0, count: 577))
  #expect(
    message(Hooks(edits: [HookEdit(name: "layers.1.residual.mlp", action: .patch(wrong))]))
      == "--patch layers.1.residual.mlp: the tensor is f32[577]; layers.1.residual.mlp is "
      + "f32[576] per token, so expected f32[576] or f32[positions, 576]")
  let long = HostTensor(shape: [5, 576], floats: [Float](repeating: 0, count: 5 * 576))
  #expect(
    message(Hooks(edits: [HookEdit(name: "embed", action: .add(long, scale: 1))]))
      == "--add embed: the tensor has 5 positions; the run computes 4")
  let integer = HostTensor(shape: [576], ints: [Int32](repeating: 0, count: 576))
  #expect(
    message(Hooks(edits: [HookEdit(name: "embed", action: .patch(integer))])).hasPrefix(
      "--patch embed: the tensor is i32[576]; expected f32[576]"))
  #expect(
    message(Hooks(edits: [HookEdit(name: "layers.*.attn.o", action: .patch(wrong))])).hasPrefix(
      "--patch layers.*.attn.o: name one value, not a pattern (it matches 30:"))
  #expect(
    message(Hooks(captures: ["layers.2.attn.probs"]), decoding: true)
      == "--capture layers.2.attn.probs: its shape f32[9, seq] runs over the keys, which KV-cache "
      + "decoding does not form; capture or change it with `lorac logits`")
  // Attention probabilities per query: [positions, heads, keys] in the forward graph.
  let probs = try ForwardSession(
    model: model, sequence: 4, adapter: nil, hooks: Hooks(captures: ["layers.2.attn.probs"])
  ).run([1, 504, 3575, 282]).captures[0].tensor
  #expect(probs.type.shape == [1, 4, 9, 4])
  let p = probs.floats()
  for query in 0..<4 {
    for head in 0..<9 {
      let row = p[((query * 9) + head) * 4..<((query * 9) + head + 1) * 4]
      #expect(abs(row.reduce(0, +) - 1) < 1e-5)
      #expect(row.dropFirst(query + 1).allSatisfy { $0 == 0 }, "causal: query \(query)")
    }
  }
}
