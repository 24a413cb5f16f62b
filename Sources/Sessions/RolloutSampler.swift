import Foundation
import IR

/// Draws tokens for a rollout as TransformerLens's `generate` does: logits divided by the
/// temperature, the top k kept, a draw from their softmax (greedy at temperature 0), from one
/// seeded stream (`lorac rlhf` gives every row its own, `lorac eval --reward` one to a batch).
struct RolloutSampler {
  let temperature: Double
  let topK: Int?
  var generator: SplitMix64

  init(temperature: Double, topK: Int?, seed: UInt64) {
    self.temperature = temperature
    self.topK = topK
    generator = SplitMix64(seed: seed)
  }

  mutating func next(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
    if temperature <= 0 {
      var best = 0
      for index in 1..<count where logits[index] > logits[best] { best = index }
      return Int32(best)
    }
    let k = min(topK ?? count, count)
    // The k largest logits, largest first (the earlier index first among equals).
    var kept: [(index: Int, logit: Float)] = []
    kept.reserveCapacity(k + 1)
    for index in 0..<count {
      let logit = logits[index]
      if kept.count == k, let last = kept.last, !(logit > last.logit) { continue }
      var position = kept.count
      while position > 0 && kept[position - 1].logit < logit { position -= 1 }
      kept.insert((index, logit), at: position)
      if kept.count > k { kept.removeLast() }
    }
    let maximum = Double(kept[0].logit)
    let weights = kept.map { exp((Double($0.logit) - maximum) / temperature) }
    var draw = generator.nextUnit() * weights.reduce(0, +)
    for (entry, weight) in zip(kept, weights) {
      draw -= weight
      if draw < 0 { return Int32(entry.index) }
    }
    return Int32(kept[kept.count - 1].index)
  }
}
