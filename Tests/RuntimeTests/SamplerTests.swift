import Foundation
import IR
import Runtime
import Testing

private func draw(_ logits: [Float], _ options: SamplingOptions, count: Int, history: [Int32] = [])
  -> [Int32: Int]
{
  var sampler = Sampler(options)
  var counts: [Int32: Int] = [:]
  logits.withUnsafeBufferPointer { buffer in
    for _ in 0..<count { counts[sampler.next(buffer, history: history), default: 0] += 1 }
  }
  return counts
}

extension RuntimeSuite {
  @Test func greedyPicksTheLargestLogit() {
    #expect(draw([1, 5, 3, 5.5, -2], SamplingOptions(), count: 3) == [3: 3])
    #expect(
      draw([1, 5, 3, 5.5], SamplingOptions(temperature: 1, topK: 1, seed: 9), count: 50) == [3: 50])
  }

  @Test func temperatureSamplesTheSoftmax() {
    // logits [0, ln 3]: probabilities 1/4 and 3/4 at temperature 1.
    let counts = draw([0, Float(log(3.0))], SamplingOptions(temperature: 1, seed: 1), count: 20000)
    let share = Double(counts[1, default: 0]) / 20000
    #expect(abs(share - 0.75) < 0.015)
    // At temperature 0.5 the ratio squares: 1/10 and 9/10.
    let cold = draw([0, Float(log(3.0))], SamplingOptions(temperature: 0.5, seed: 2), count: 20000)
    #expect(abs(Double(cold[1, default: 0]) / 20000 - 0.9) < 0.01)
  }

  @Test func topPKeepsTheSmallestSetReachingP() {
    // Probabilities 0.5, 0.3, 0.2 (logits ln of them): top-p 0.75 keeps the first two.
    let logits = [0.5, 0.3, 0.2].map { Float(log($0)) }
    let counts = draw(logits, SamplingOptions(temperature: 1, topP: 0.75, seed: 3), count: 10000)
    #expect(counts[2] == nil)
    #expect(abs(Double(counts[0, default: 0]) / 10000 - 0.625) < 0.02)
  }

  @Test func repetitionPenaltyAndSeeds() {
    // Token 0 leads by a little; penalising it (it was just generated) hands the lead to token 1.
    #expect(
      draw([2.0, 1.9], SamplingOptions(repetitionPenalty: 1.3), count: 1, history: [0]) == [1: 1])
    #expect(
      draw([-1.0, -1.2], SamplingOptions(repetitionPenalty: 1.3), count: 1, history: [0]) == [1: 1])
    let options = SamplingOptions(temperature: 1, seed: 42)
    var a = Sampler(options)
    var b = Sampler(options)
    let logits: [Float] = (0..<100).map { Float($0 % 7) }
    logits.withUnsafeBufferPointer { buffer in
      for _ in 0..<20 { #expect(a.next(buffer, history: []) == b.next(buffer, history: [])) }
    }
  }
}
