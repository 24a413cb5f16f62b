import ArgumentParser
import Foundation
import IR
import Models
import Passes

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
  }

  func run() throws {
    var graph: Graph
    do {
      if let model, model.hasSuffix(".lorac") {
        graph = try CompiledBundle(path: model).graph
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
    print(Printer().print(graph), terminator: "")
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
