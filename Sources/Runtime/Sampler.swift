import Foundation
import IR

/// How the next token is chosen from logits.
public struct SamplingOptions: Sendable, Hashable {
  /// 0 picks the most likely token (greedy); otherwise logits are divided by it.
  public var temperature: Double = 0
  /// Keep only the k most likely tokens (nil: all).
  public var topK: Int?
  /// Keep the smallest set of tokens whose probability reaches p (nil: all).
  public var topP: Double?
  /// llama.cpp's penalty on tokens among the last `repetitionWindow` ones: positive logits are
  /// divided by it, negative ones multiplied (1: off).
  public var repetitionPenalty: Double = 1
  public var repetitionWindow = 64
  public var seed: UInt64 = 0

  public init(
    temperature: Double = 0, topK: Int? = nil, topP: Double? = nil, repetitionPenalty: Double = 1,
    seed: UInt64 = 0
  ) {
    self.temperature = temperature
    self.topK = topK
    self.topP = topP
    self.repetitionPenalty = repetitionPenalty
    self.seed = seed
  }
}

/// Picks tokens from logits: repetition penalty, then greedy, or temperature with top-k and
/// top-p, drawn from a seeded stream (the same seed gives the same text).
public struct Sampler: Sendable {
  public let options: SamplingOptions
  private var generator: SplitMix64
  private var scratch: [(Int32, Float)] = []

  public init(_ options: SamplingOptions) {
    self.options = options
    generator = SplitMix64(seed: options.seed)
  }

  /// The next token given `logits` over the vocabulary and the tokens so far.
  public mutating func next(_ logits: UnsafeBufferPointer<Float>, history: [Int32]) -> Int32 {
    var values = Array(logits)
    if options.repetitionPenalty != 1 {
      let penalty = Float(options.repetitionPenalty)
      for token in Set(history.suffix(options.repetitionWindow))
      where token >= 0 && Int(token) < values.count {
        let index = Int(token)
        values[index] = values[index] > 0 ? values[index] / penalty : values[index] * penalty
      }
    }
    if options.temperature <= 0 {
      var best = 0
      for index in values.indices where values[index] > values[best] { best = index }
      return Int32(best)
    }
    // Candidates sorted by logit, cut by top-k, softmax at the temperature, cut by top-p.
    scratch = values.enumerated().map { (Int32($0.offset), $0.element) }
    scratch.sort { $0.1 > $1.1 }
    if let k = options.topK, k > 0, k < scratch.count { scratch.removeLast(scratch.count - k) }
    let maximum = scratch[0].1
    var probabilities = scratch.map { exp(Double($0.1 - maximum) / options.temperature) }
    let total = probabilities.reduce(0, +)
    probabilities = probabilities.map { $0 / total }
    var keep = probabilities.count
    if let p = options.topP, p < 1 {
      var cumulative = 0.0
      for (index, probability) in probabilities.enumerated() {
        cumulative += probability
        if cumulative >= p {
          keep = index + 1
          break
        }
      }
    }
    let mass = probabilities.prefix(keep).reduce(0, +)
    var draw = generator.nextUnit() * mass
    for index in 0..<keep {
      draw -= probabilities[index]
      if draw < 0 { return scratch[index].0 }
    }
    return scratch[keep - 1].0
  }
}
