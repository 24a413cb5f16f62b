import ArgumentParser
import Foundation
import KernelBench
import Runtime

/// `lorac bench`: measures lorac against baselines run on the same machine in the same run.
struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmark lorac against baselines measured in the same run.",
    subcommands: [Kernels.self, Prefill.self, Decode.self, Train.self])

  /// `lorac bench kernels`.
  struct Kernels: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract:
        "GEMM against cblas_sgemm, decoding mat-vecs against memory bandwidth, fused ops against the primitives they replace.",
      discussion: "Medians of --runs runs after a warm-up, at each of --threads.")

    @Option(help: "Runs per figure after one warm-up run.")
    var runs: Int = 5

    @Option(help: "Comma-separated thread counts.")
    var threads: String = "1,2"

    @Option(help: "Comma-separated groups to run: gemm, matvec, fused (default: all).")
    var only: String = "gemm,matvec,fused"

    @Flag(help: "Print one JSON object keyed by benchmark and thread count.")
    var json = false

    @Option(
      help: """
        The ISA tier whose kernels gemm and matvec measure: \(Target.ISA.allCases.map(\.rawValue).joined(separator: ", ")) \
        (default: the widest this CPU runs).
        """)
    var isa: Target.ISA?

    private var groups: Set<String> { Set(only.split(separator: ",").map(String.init)) }

    func validate() throws {
      if runs < 1 { throw ValidationError("--runs must be at least 1, got \(runs)") }
      let unknown = groups.subtracting(["gemm", "matvec", "fused"])
      if groups.isEmpty || !unknown.isEmpty {
        throw ValidationError(
          "--only takes gemm, matvec and fused, got '\(only)'")
      }
      if parsedThreads == nil {
        throw ValidationError("--threads must be positive integers like 1,2, got '\(threads)'")
      }
    }

    private var parsedThreads: [Int]? {
      let values = threads.split(separator: ",").map { Int($0) }
      guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
      return values.compactMap { $0 }
    }

    func run() throws {
      let counts = parsedThreads ?? [1]
      let target = Target(isa: isa ?? .host)
      do { try target.checkHost() } catch { fail(error.message) }
      let results =
        try KernelBenchmarks.run(threads: counts, runs: runs, groups: groups, target: target)
        + (groups.contains("fused") ? KernelBenchmarks.fused(threads: counts, runs: runs) : [])
      print(json ? KernelBenchmarks.json(results) : KernelBenchmarks.table(results))
    }
  }
}

/// Prints the mean time of one step by kind of instruction (op, and the weight dtype of
/// products), largest first, to stderr.
///
/// Each instruction is timed on its own over `runs` steps, so the sum is a little above an
/// untimed step's.
func printStepProfile(_ executable: Executable, runs: Int) throws {
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
  let total = byKind.values.map(\.seconds).reduce(0, +)
  var lines = [String(format: "profile of one step (mean of %d): %.2f ms", runs, total * 1e3)]
  for (kind, entry) in byKind.sorted(by: { $0.value.seconds > $1.value.seconds }) {
    lines.append(
      String(
        format: "%8.3f ms %5.1f%%  %4d x %@", entry.seconds * 1e3,
        100 * entry.seconds / max(total, 1e-12), entry.count, kind))
  }
  FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
}

extension Target.ISA: ExpressibleByArgument {}
