import Foundation

/// `log softmax(logits)[token]`, summed in f64 from the largest logit (stable for any logits).
public func logProbability(of token: Int32, in logits: UnsafeBufferPointer<Float>) -> Double {
  guard let largest = logits.max() else { return -.infinity }
  let maximum = Double(largest)
  var total = 0.0
  for logit in logits { total += Foundation.exp(Double(logit) - maximum) }
  return Double(logits[Int(token)]) - maximum - Foundation.log(total)
}
