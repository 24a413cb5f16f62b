import Dispatch
import Foundation
import IR
import KernelBench
import Runtime

// lorac's benchmark harness. Each benchmark prints medians of several runs after a warm-up, and a
// ratio against a baseline measured in the same run, because the machine is shared and noisy.
//
//   swift run -c release LoracBench ir [--instructions N] [--runs N] [--json]

/// Seconds taken by `body`.
func time(_ body: () throws -> Void) rethrows -> Double {
  let start = DispatchTime.now().uptimeNanoseconds
  try body()
  return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// A transformer-like chain of about `count` instructions with names, attributes and parameters.
func syntheticGraph(instructions count: Int) throws -> Graph {
  let b = GraphBuilder(name: "synthetic")
  var h = try b.input(name: "x", shape: [16, 64])
  var layer = 0
  while b.graph.body.count + 8 <= count {
    h = try b.scope("layers.\(layer)") { () throws(TraceError) -> Tensor in
      let w = try b.parameter(
        name: "weight", shape: [64, 64], initializer: .kaimingUniformDefault, seed: UInt64(layer))
      let bias = try b.constant(name: "bias", shape: [64])
      let y = try matmul(h, w, transposeB: true).named("proj")
      let z = try relu(y + bias)
      let s = try softmax(z * 0.125).named("probs")
      let r = try s.reshaped([4, 4, 64]).transposed([1, 0, 2]).reshaped([16, 64])
      return try (r + h).named("residual")
    }
    layer += 1
  }
  return try b.finish(outputs: [h])
}

func benchmarkIR(instructions: Int, runs: Int, json: Bool) throws {
  let graph = try syntheticGraph(instructions: instructions)
  let printer = Printer()
  var printTimes: [Double] = []
  var parseTimes: [Double] = []
  var scanTimes: [Double] = []
  var text = ""
  for run in 0...runs {
    let printed = time { text = printer.print(graph) }
    var parsed: Graph?
    let parsing = try time { parsed = try Parser.parse(text) }
    guard parsed == graph else { fatalError("round trip changed the graph") }
    // Baseline: splitting the same text into line strings, the least any line-based reader does.
    var lines = 0
    let scanning = time { lines = text.split(separator: "\n").count }
    guard lines == graph.body.count + graph.declarations.count + 3 else { fatalError("line count") }
    if run > 0 {  // Run 0 is the warm-up.
      printTimes.append(printed)
      parseTimes.append(parsing)
      scanTimes.append(max(scanning, 1e-9))
    }
  }
  let total = median(zip(printTimes, parseTimes).map { $0 + $1 })
  let scan = median(scanTimes)
  if json {
    print(
      """
      {"ir_roundtrip": {"instructions": \(graph.body.count), "bytes": \(text.utf8.count), \
      "runs": \(runs), "print_s": \(median(printTimes)), "parse_s": \(median(parseTimes)), \
      "total_s": \(total), "target_s": 0.5, "ratio_to_line_split": \(total / scan)}}
      """)
  } else {
    print(
      "ir round trip: \(graph.body.count) instructions, \(text.utf8.count) bytes, median of \(runs) runs"
    )
    print(String(format: "  print  %8.1f ms", median(printTimes) * 1e3))
    print(String(format: "  parse  %8.1f ms", median(parseTimes) * 1e3))
    print(String(format: "  total  %8.1f ms   (target < 500 ms)", total * 1e3))
    print(
      String(
        format: "  baseline: splitting the text into lines %.1f ms; round trip = %.1fx that",
        scan * 1e3, total / scan))
  }
}

let arguments = Array(CommandLine.arguments.dropFirst())
func option(_ name: String, default value: Int, in arguments: [String]) -> Int {
  guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count,
    let parsed = Int(arguments[index + 1]), parsed > 0
  else { return value }
  return parsed
}
let json = arguments.contains("--json")
switch arguments.first {
case "ir":
  try benchmarkIR(
    instructions: option("--instructions", default: 20_000, in: arguments),
    runs: option("--runs", default: 7, in: arguments),
    json: json)
case "kernels":
  let runs = option("--runs", default: 5, in: arguments)
  var target = Target.host
  if let index = arguments.firstIndex(of: "--isa"), index + 1 < arguments.count {
    guard let isa = Target.ISA(rawValue: arguments[index + 1]) else {
      FileHandle.standardError.write(Data("unknown --isa '\(arguments[index + 1])'\n".utf8))
      exit(2)
    }
    target.isa = isa
  }
  let results =
    try KernelBenchmarks.run(threads: [1, 2], runs: runs, target: target)
    + KernelBenchmarks.fused(threads: [1, 2], runs: runs)
  print(json ? KernelBenchmarks.json(results) : KernelBenchmarks.table(results))
default:
  FileHandle.standardError.write(
    Data("usage: LoracBench ir|kernels [--instructions N] [--runs N] [--isa TIER] [--json]\n".utf8))
  exit(2)
}
