import ArgumentParser
import Foundation
import IR
import Models
import Passes
import Runtime
import Sessions

/// `lorac dump-ir`: prints a model's IR text, optionally after a pass pipeline.
struct DumpIR: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dump-ir",
    abstract: "Print the IR of a model as text, optionally after a pass pipeline.",
    discussion: """
      lorac dump-ir MODEL.gguf --pipeline 'lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o}},freeze,autodiff,dce' \
      --loss prints the train graph; --after PASS|all also prints the IR after those passes (to stderr, with \
      each pass's time), and the final IR goes to stdout.
      """)

  /// The built-in example models.
  enum Example: String, ExpressibleByArgument, CaseIterable {
    case mlp
  }

  @Argument(help: "A GGUF model, a .lorac bundle (its compiled IR), or use --example.")
  var model: String?

  @Option(
    help: "A built-in example model: \(Example.allCases.map(\.rawValue).joined(separator: ", ")).")
  var example: Example?

  @Option(parsing: .unconditional, help: "Batch size of the traced graph.")
  var batch: Int = 4

  @Option(parsing: .unconditional, help: "Sequence length of a traced language model.")
  var seq: Int = 16

  @Flag(
    help: "Trace a language model with its next-token loss (the graph training differentiates).")
  var loss = false

  @Flag(
    help: """
      Trace the PPO objective of `lorac rlhf` (value head, clipped surrogate, value loss, \
      entropy bonus, KL to the reference) for --batch rows of --seq tokens, the first 2 the \
      prefix; `lorac rlhf` differentiates it with --pipeline '\(Pipelines.rlhf(RLHFConfiguration()))'.
      """)
  var rlhf = false

  @Option(help: "A pass pipeline to run before printing.")
  var pipeline: String?

  @Option(help: "Also print the IR after these passes (comma-separated, or all).")
  var after: String?

  @Flag(
    help: """
      Print the kernel plan beside each instruction of the final IR (kernel, weight form, ISA \
      path, scratch bytes, once for what runs at load); a bundle's stored plan unless --isa is given.
      """)
  var plan = false

  @Option(
    help: """
      The ISA tier to plan for with --plan: \(Target.ISA.allCases.map(\.rawValue).joined(separator: ", ")) \
      (default: the widest this CPU runs; any tier can be printed on any host).
      """)
  var isa: Target.ISA?

  func validate() throws {
    if model == nil && example == nil {
      throw ValidationError("give a model file or --example")
    }
    if model != nil && example != nil {
      throw ValidationError("give a model file or --example, not both")
    }
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
    if seq < 1 { throw ValidationError("--seq must be at least 1, got \(seq)") }
    if after != nil && pipeline == nil { throw ValidationError("--after needs --pipeline") }
    if rlhf && (loss || example != nil) {
      throw ValidationError("--rlhf traces a GGUF model's PPO objective: no --loss or --example")
    }
    if rlhf && seq < 3 { throw ValidationError("--rlhf needs --seq of at least 3, got \(seq)") }
    if isa != nil && !plan { throw ValidationError("--isa needs --plan") }
  }

  func run() throws {
    var graph: Graph
    var storedPlan: String?
    do {
      if let model, model.hasSuffix(".lorac") {
        let bundle = try CompiledBundle(path: model)
        graph = bundle.graph
        storedPlan = bundle.plan
      } else if let model, rlhf {
        let llama = try LlamaModel(path: model)
        graph = try RLHFGraphs.objective(
          llama.config, batch: batch, prefix: 2, generated: seq - 2,
          coefficients: RLHFConfiguration().coefficients, valueHeadSeed: 0,
          weightType: llama.storedWeightType)
      } else if let model {
        graph = try LlamaModel(path: model).trace(batch: batch, sequence: seq, loss: loss)
      } else {
        graph = try MLP.trace(batch: batch)
      }
    } catch let error as GGUFError {
      fail(error.message)
    } catch let error as FileError {
      fail(error.message)
    } catch {
      fail("\(error)")
    }
    if let pipeline {
      let passes = try parsePipeline(pipeline)
      let printAfter = try printSelection(after, option: "--after", pipeline: passes)
      do {
        graph = try passes.run(graph, printAfter: printAfter) { line in
          if after != nil { printError(line) }
        }
      } catch {
        fail(error.message)
      }
    }
    guard plan else {
      print(Printer().print(graph), terminator: "")
      return
    }
    let kernels = KernelPlan.shown(for: graph, stored: isa == nil ? storedPlan : nil, isa: isa)
    print(kernels.annotatedText(for: graph), terminator: "")
  }
}
