import Foundation
import IR
import Models
import Testing

private let goldenFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  .appendingPathComponent("Golden")

@Test func mlpTracesToTheGoldenText() throws {
  let golden = try String(
    contentsOf: goldenFolder.appendingPathComponent("mlp.ir"), encoding: .utf8)
  let graph = try MLP.trace()
  #expect(Printer().print(graph) == golden)
  #expect(try Parser.parse(golden) == graph)
}

@Test func mlpHasTheTutorialShape() throws {
  let graph = try MLP.trace(batch: 4)
  let shapes = graph.declarations.map { graph.type(of: $0.value).shape }
  #expect(shapes == [[32, 2], [32], [32, 32], [32], [2, 32], [2]])
  #expect(graph.declarations.allSatisfy { $0.kind == .parameter })
  #expect(graph.body.filter { $0.op == .unary(.relu) }.count == 2)
  #expect(graph.body.compactMap(\.name) == ["fc1", "fc2", "fc3", "logits", "loss"])
  #expect(
    graph.outputs.map { graph.type(of: $0) } == [TensorType(.f32, []), TensorType(.f32, [4, 2])])
}

@Test func mlpRejectsTooFewLayers() {
  #expect(throws: TraceError(message: "mlp: expected at least two feature sizes, got [2]")) {
    try MLP.trace(features: [2])
  }
}
