import ArgumentParser
import Foundation
import IR
import Models
import Passes
import Runtime

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
      do {
        let passes = try Pipeline(parsing: pipeline)
        let printAfter = checkedPrintAfter(after, option: "--after", pipeline: passes)
        graph = try passes.run(graph, printAfter: printAfter) { line in
          if after != nil { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
      } catch {
        fail(error.message)
      }
    }
    guard plan else {
      print(Printer().print(graph), terminator: "")
      return
    }
    print(
      kernelPlan(for: graph, stored: isa == nil ? storedPlan : nil).annotatedText(for: graph),
      terminator: "")
  }

  /// The stored plan of a bundle when it reads back for this graph, else a new one for --isa.
  private func kernelPlan(for graph: Graph, stored: String?) -> KernelPlan {
    if let stored, let parsed = try? KernelPlan(parsing: stored),
      parsed.entries.count == graph.body.count
    {
      return parsed
    }
    return KernelPlan(graph, target: Target(isa: isa ?? .host))
  }
}

/// The pass names of pipeline text, in order: `lora{rank=4},fuse` -> `[lora, fuse]`.
func passNames(_ pipeline: String) -> [String] {
  var names: [String] = []
  var current = ""
  var depth = 0
  for character in pipeline + "," {
    switch character {
    case "{":
      if depth == 0 { names.append(current) }
      depth += 1
    case "}": depth -= 1
    case "," where depth == 0:
      if !current.isEmpty && names.last != current { names.append(current) }
      current = ""
    default:
      if depth == 0 { current.append(character) }
    }
  }
  return names.map { $0.trimmingCharacters(in: .whitespaces) }
}

/// What `option` (comma-separated pass names, or all) asks `pipeline` to print; a name that is not
/// a pass of the pipeline is an error (it would print nothing, silently).
func checkedPrintAfter(_ value: String?, option: String, pipeline: Pipeline) -> Pipeline.PrintAfter
{
  guard let value else { return .none }
  if value == "all" { return .all }
  var names: [String] = []
  for name in passNames(pipeline.description) where !names.contains(name) { names.append(name) }
  let asked = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
  for name in asked where !names.contains(name) {
    fail(
      "\(option): '\(name)' is not a pass of the pipeline '\(pipeline)' (give one of "
        + "\(names.joined(separator: ", ")), or all)")
  }
  return .passes(Set(asked))
}
