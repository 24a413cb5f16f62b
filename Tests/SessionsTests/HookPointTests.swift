import IR
import Models
import Sessions
import TestSupport
import Testing

@Test func hookPointsAreTheGraphsNamedValuesPerToken() throws {
  let model = try LlamaModel.open(try modelPath())
  let points = try model.hookPoints()
  // SmolLM2: the embedding, ten values in each of 30 blocks, the head.
  #expect(points.count == 2 + 30 * 10)
  #expect(Set(points.map(\.name)).count == points.count)
  let byName = Dictionary(uniqueKeysWithValues: points.map { ($0.name, $0) })
  // Per token, by hand from the config: d = 576, 3 key/value heads of 64, ffn 1536, 9 heads
  // attending over the sequence, vocabulary 49152.
  #expect(byName["embed"]?.shape == [576])
  #expect(byName["layers.0.attn.k"]?.shape == [192])
  #expect(byName["layers.17.mlp.up"]?.shape == [1536])
  #expect(byName["layers.3.attn.probs"]?.shape == [9, nil])
  #expect(byName["layers.3.attn.probs"]?.typeText == "f32[9, seq]")
  #expect(byName["layers.29.residual.mlp"]?.shape == [576])
  #expect(byName["head"]?.shape == [49152])
  #expect(points.first?.name == "embed" && points.last?.name == "head")
}
