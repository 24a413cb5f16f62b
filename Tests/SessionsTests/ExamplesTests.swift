import Foundation
import TestSupport
import Testing

/// Runs a built example program and returns its standard output (it must exit 0).
private func runExample(_ name: String, arguments: [String] = []) throws -> String {
  let result = try run(productExecutable(name), arguments)
  #expect(result.status == 0, "\(name): \(result.stderr)")
  return result.stdout
}

/// The loss of each `step N  loss X` line.
private func losses(_ output: String) -> [Double] {
  output.split(separator: "\n").compactMap { line in
    line.hasPrefix("step ") ? line.split(separator: " ").last.flatMap { Double($0) } : nil
  }
}

@Test func xorExampleLearnsXORWithRankTwoLoRA() throws {
  let output = try runExample("xor")
  let values = losses(output)
  #expect(values.count == 20)
  #expect(try #require(values.last) < values[0] / 4, "\(values)")
  #expect(output.contains("accuracy 4/4"), "\(output)")
}

@Test func finetuneExampleTrainsTwentyStepsAndGenerates() throws {
  let output = try runExample("finetune", arguments: [try modelPath()])
  let values = losses(output)
  #expect(values.count == 20)
  #expect(try #require(values.last) < values[0] / 2, "\(values)")
  #expect(output.contains(">>> mystery_function(40, 2) -> "), "\(output)")
}
