import ArgumentParser
import Dispatch
import Foundation
import IR
import KernelBench
import Models
import Passes
import Runtime
import Sessions

extension Bench {
  /// `lorac bench train`: LoRA training steps (forward, backward, AdamW) on random tokens.
  struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Measure LoRA train steps (forward, backward, AdamW) and the train compile time.",
      discussion: """
        Random tokens, every position weighted in the loss. Prints the median of --runs steps \
        after a warm-up step; tokens/s counts batch x seq tokens per step. Compile time is \
        trace + passes + memory plan.
        """)

    @Argument(help: "The GGUF model.")
    var model: String

    @Option(parsing: .unconditional, help: "Sequences per step.")
    var batch = 16

    @Option(parsing: .unconditional, help: "Tokens per sequence.")
    var seq = 32

    @Option(parsing: .unconditional, help: "LoRA rank.")
    var rank = 8

    @Option(help: "Value names to adapt (a glob).")
    var targets = "layers.*.attn.{q,k,v,o}"

    @Option(help: "The passes between lora/freeze and the executable.")
    var passes = Pipelines.trainingPasses

    @Option(help: WeightPrecision.help(default: nil))
    var precision: WeightPrecision = .f32

    @Option(parsing: .unconditional, help: "Steps measured after one warm-up step.")
    var runs = 5

    @Option(parsing: .unconditional, help: "Threads (default: all cores).")
    var threads: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "After the measured steps, time one more step kernel by kernel and print the ops.")
    var profile = false

    func validate() throws {
      for (name, value) in [("--batch", batch), ("--seq", seq), ("--rank", rank), ("--runs", runs)]
      where value < 1 {
        throw ValidationError("\(name) must be at least 1, got \(value)")
      }
      if let threads, threads < 1 {
        throw ValidationError("--threads must be at least 1, got \(threads)")
      }
    }

    func run() throws {
      Threads.set(threads)
      if let note = precisionNote(precision) { printError(note) }
      let loaded = try LlamaModel.open(model)
      if seq > loaded.contextLength {
        fail("--seq \(seq) is more than the model's context of \(loaded.contextLength) tokens")
      }
      let start = DispatchTime.now().uptimeNanoseconds
      var phases: [UInt64] = []
      let executable: Executable
      let parameters: [String]
      do {
        let pipeline = try Pipeline(
          parsing: Pipelines.training(
            rank: rank, alpha: Double(2 * rank), targets: targets, passes: passes))
        let traced = try loaded.trace(
          batch: batch, sequence: seq, loss: true, precision: precision)
        phases.append(DispatchTime.now().uptimeNanoseconds)
        let graph = try pipeline.run(traced)
        phases.append(DispatchTime.now().uptimeNanoseconds)
        let constants = try loaded.weights(for: graph)
        phases.append(DispatchTime.now().uptimeNanoseconds)
        executable = try Executable(graph, constants: constants)
        parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
      } catch {
        fail("\(error)")
      }
      // Compile is trace + passes + plan (and steps); rounding the weights to bf16 and packing
      // them (--precision bf16) is loading, reported apart.
      let (trace, passes, load) = (
        Double(phases[0] - start) / 1e9, Double(phases[1] - phases[0]) / 1e9,
        Double(phases[2] - phases[1]) / 1e9
      )
      if precision == .bf16 { Executable.trimHeap() }
      let packing = executable.packingSeconds
      let compile = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 - load - packing
      let optimizer = try AdamW(
        executable, parameters: parameters, gradientOutputs: Array(1...parameters.count),
        learningRate: 1e-4, maxGradientNorm: 1)
      var generator = SplitMix64(seed: 1)
      let count = batch * seq
      let ids = (0..<(count + 1)).map { _ in
        Int32(generator.next() % UInt64(loaded.config.vocabularySize))
      }
      try executable.set("tokens", HostTensor(shape: [batch, seq], ints: Array(ids.prefix(count))))
      try executable.set("targets", HostTensor(shape: [batch, seq], ints: Array(ids.dropFirst())))
      try executable.set(
        "positions", HostTensor(shape: [batch, seq], ints: (0..<count).map { Int32($0 % seq) }))
      try executable.set(
        "weights", HostTensor(shape: [batch, seq], floats: [Float](repeating: 1, count: count)))
      let seconds = try KernelBenchmarks.median(runs: runs) {
        try executable.execute()
        _ = optimizer.update()
      }
      let rate = Double(count) / seconds
      let rss = peakResidentBytes()
      if profile { try printStepProfile(executable, runs: 1) }
      if json {
        print(
          "{\"tokens_per_s\": \(rate), \"step_s\": \(seconds), \"runs\": \(runs), "
            + "\"batch\": \(batch), \"seq\": \(seq), \"rank\": \(rank), "
            + "\"targets\": \"\(targets)\", \"threads\": \(Threads.count), "
            + "\"compile_s\": \(compile), \"trace_s\": \(trace), \"passes_s\": \(passes), "
            + "\"plan_s\": \(compile - trace - passes), \"weights_s\": \(load), \"packing_s\": \(packing), "
            + "\"precision\": \"\(precision)\", \"packed_bytes\": \(executable.packedWeightBytes), "
            + "\"arena_bytes\": \(executable.plan.arenaBytes), "
            + "\"instructions\": \(executable.graph.body.count), \"peak_rss_bytes\": \(rss)}")
      } else {
        print(
          String(
            format:
              "train step %dx%d, rank %d on %@, %@: %.1f ms, %.0f tokens/s (median of %d, %d threads)",
            batch, seq, rank, targets, precision.description, seconds * 1e3, rate, runs,
            Threads.count))
        print(
          String(
            format:
              "compile %.0f ms (trace %.0f, passes %.0f, plan %.0f), %d instructions; arena %d bytes; peak RSS %d bytes",
            compile * 1e3, trace * 1e3, passes * 1e3, (compile - trace - passes) * 1e3,
            executable.graph.body.count, executable.plan.arenaBytes, rss))
        if precision == .bf16 {
          print(
            String(
              format: "weights rounded to bf16 in %.0f ms, packed in %.0f ms (%d bytes)",
              load * 1e3, packing * 1e3, executable.packedWeightBytes))
        }
      }
    }
  }
}
