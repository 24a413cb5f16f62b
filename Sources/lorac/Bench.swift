import ArgumentParser
import Foundation
import KernelBench
import Runtime
import Sessions

/// `lorac bench`: measures lorac against baselines run on the same machine in the same run.
struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmark lorac against baselines measured in the same run.",
    subcommands: [Kernels.self, Prefill.self, Decode.self, Train.self, RLHF.self])

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

    @OptionGroup var isa: ISAOption

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
      let target = try isa.target()
      let results =
        try KernelBenchmarks.run(threads: counts, runs: runs, groups: groups, target: target)
        + (groups.contains("fused") ? KernelBenchmarks.fused(threads: counts, runs: runs) : [])
      print(json ? KernelBenchmarks.json(results) : KernelBenchmarks.table(results))
    }
  }
}

/// `--isa`: the ISA tier the kernels are planned for, so that every tier this CPU runs can be
/// measured on it.
struct ISAOption: ParsableArguments {
  @Option(
    help: """
      The ISA tier to plan the kernels for: \(Target.ISA.allCases.map(\.rawValue).joined(separator: ", ")) \
      (default: the widest this CPU runs).
      """)
  var isa: Target.ISA?

  /// The target of `isa` with the other settings given; an error when this CPU cannot run it.
  func target(int8Activations: Bool = false) throws -> Target {
    let target = Target(isa: isa ?? .host, int8Activations: int8Activations)
    do {
      try target.checkHost()
    } catch {
      throw SessionError(error.message)
    }
    return target
  }
}

extension Target.ISA: ExpressibleByArgument {}
