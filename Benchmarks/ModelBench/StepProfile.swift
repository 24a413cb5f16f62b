import Foundation
import IR
import Runtime

/// The mean time of one run of an executable by kind of instruction (the op, and the weight dtype
/// of products), largest first.
///
/// Each instruction is timed on its own over `runs` runs, so the sum is a little above an untimed
/// run's.
public struct StepProfile: Sendable {
  public var runs: Int
  /// Kinds with their mean seconds per run and instruction count, largest first.
  public var kinds: [(kind: String, seconds: Double, count: Int)]

  public init(_ executable: Executable, runs: Int) throws(RuntimeError) {
    var seconds: [Int: Double] = [:]
    for _ in 0..<runs {
      for (index, time) in try executable.executeTimed() { seconds[index, default: 0] += time }
    }
    var byKind: [String: (seconds: Double, count: Int)] = [:]
    let graph = executable.graph
    for (index, time) in seconds {
      let instruction = graph.body[index]
      var kind = instruction.op.mnemonic
      switch instruction.op {
      case .matmul, .loraLinear:
        if let w = instruction.operands[1].value { kind += " \(graph.type(of: w).dtype)" }
      default: break
      }
      byKind[kind, default: (0, 0)].seconds += time / Double(runs)
      byKind[kind, default: (0, 0)].count += 1
    }
    self.runs = runs
    kinds = byKind.sorted { $0.value.seconds > $1.value.seconds }.map {
      ($0.key, $0.value.seconds, $0.value.count)
    }
  }

  /// `profile of one step (mean of N): T ms`, then one line per kind.
  public var text: String {
    let total = kinds.map(\.seconds).reduce(0, +)
    var lines = [String(format: "profile of one step (mean of %d): %.2f ms", runs, total * 1e3)]
    for entry in kinds {
      lines.append(
        String(
          format: "%8.3f ms %5.1f%%  %4d x %@", entry.seconds * 1e3,
          100 * entry.seconds / max(total, 1e-12), entry.count, entry.kind))
    }
    return lines.joined(separator: "\n") + "\n"
  }
}

/// Seconds since `start` (a `DispatchTime` uptime in nanoseconds).
func seconds(since start: UInt64) -> Double {
  Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}
