import Foundation

/// A loss curve as a standalone SVG line chart: steps on x, loss on y, both axes with tick labels,
/// one polyline point per step with a finite loss.
enum LossCurve {
  static let width = 640.0
  static let height = 400.0
  /// The plot area's margins: left, right, top, bottom.
  static let margins = (left: 64.0, right: 20.0, top: 28.0, bottom: 48.0)

  static func svg(
    _ points: [(step: Int, loss: Double)], title: String = "training loss",
    x xTitle: String = "step",
    y yTitle: String = "loss"
  ) -> String {
    let finite = points.filter { $0.loss.isFinite }
    let steps = finite.map { Double($0.step) }
    let losses = finite.map(\.loss)
    let xTicks = ticks(low: steps.min() ?? 0, high: steps.max() ?? 1, integers: true)
    let yTicks = ticks(low: losses.min() ?? 0, high: losses.max() ?? 1, integers: false)
    let (left, right) = (margins.left, width - margins.right)
    let (top, bottom) = (margins.top, height - margins.bottom)
    func x(_ value: Double) -> Double {
      left + (value - xTicks.low) / (xTicks.high - xTicks.low) * (right - left)
    }
    func y(_ value: Double) -> Double {
      bottom - (value - yTicks.low) / (yTicks.high - yTicks.low) * (bottom - top)
    }
    var lines: [String] = []
    lines.append(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(format(width))\" "
        + "height=\"\(format(height))\" viewBox=\"0 0 \(format(width)) \(format(height))\" "
        + "font-family=\"sans-serif\" font-size=\"12\">")
    lines.append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>")
    lines.append(
      "<text x=\"\(format((left + right) / 2))\" y=\"18\" text-anchor=\"middle\" "
        + "font-size=\"14\">\(title)</text>")
    // Grid lines and tick labels.
    for value in xTicks.values {
      let position = format(x(value))
      lines.append(
        "<line x1=\"\(position)\" y1=\"\(format(top))\" x2=\"\(position)\" y2=\"\(format(bottom))\" "
          + "stroke=\"#e0e0e0\"/>")
      lines.append(
        "<text x=\"\(position)\" y=\"\(format(bottom + 16))\" text-anchor=\"middle\">"
          + "\(label(value, step: xTicks.step))</text>")
    }
    for value in yTicks.values {
      let position = format(y(value))
      lines.append(
        "<line x1=\"\(format(left))\" y1=\"\(position)\" x2=\"\(format(right))\" y2=\"\(position)\" "
          + "stroke=\"#e0e0e0\"/>")
      lines.append(
        "<text x=\"\(format(left - 6))\" y=\"\(format(y(value) + 4))\" text-anchor=\"end\">"
          + "\(label(value, step: yTicks.step))</text>")
    }
    // Axes and their titles.
    lines.append(
      "<path d=\"M \(format(left)) \(format(top)) L \(format(left)) \(format(bottom)) "
        + "L \(format(right)) \(format(bottom))\" fill=\"none\" stroke=\"black\"/>")
    lines.append(
      "<text x=\"\(format((left + right) / 2))\" y=\"\(format(height - 10))\" "
        + "text-anchor=\"middle\">\(xTitle)</text>")
    lines.append(
      "<text x=\"16\" y=\"\(format((top + bottom) / 2))\" text-anchor=\"middle\" "
        + "transform=\"rotate(-90 16 \(format((top + bottom) / 2)))\">\(yTitle)</text>")
    let coordinates = finite.map { "\(format(x(Double($0.step)))),\(format(y($0.loss)))" }
    lines.append(
      "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\""
        + coordinates.joined(separator: " ") + "\"/>")
    lines.append("</svg>")
    return lines.joined(separator: "\n") + "\n"
  }

  /// About five round tick values covering `low...high`.
  ///
  /// They are 1, 2 or 5 times a power of ten apart; the range widens to the ticks around it.
  static func ticks(low: Double, high: Double, integers: Bool)
    -> (low: Double, high: Double, step: Double, values: [Double])
  {
    var (low, high) = (low, high)
    if high - low < (integers ? 1 : 1e-9 * max(1, abs(high))) {
      let pad = integers ? 1 : max(0.5 * abs(high), 1e-3)
      (low, high) = (low - (integers ? 0 : pad), high + pad)
    }
    let rough = (high - low) / 5
    let power = pow(10, floor(log10(rough)))
    var step = power
    for factor in [1.0, 2.0, 5.0, 10.0] where factor * power >= rough {
      step = factor * power
      break
    }
    if integers { step = max(1, step.rounded()) }
    let first = floor(low / step + 1e-9)
    let last = ceil(high / step - 1e-9)
    let values = stride(from: first, through: last, by: 1).map { $0 * step }
    return (first * step, last * step, step, values)
  }

  /// A tick label with as many decimals as the tick spacing needs.
  static func label(_ value: Double, step: Double) -> String {
    let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
    return String(format: "%.\(decimals)f", value == 0 ? 0 : value)
  }

  /// A coordinate with two decimals.
  static func format(_ value: Double) -> String { String(format: "%.2f", value) }
}
