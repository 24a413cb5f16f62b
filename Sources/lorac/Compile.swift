import ArgumentParser
import Foundation
import IR
import Models
import Passes
import Runtime
import Sessions

/// `lorac compile`: trace, rewrite and plan a graph once, and store it as a `.lorac` bundle.
struct Compile: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compile a model graph ahead of time into a .lorac bundle.",
    discussion: """
      The bundle holds the IR after --pipeline, the pipeline, the memory plan, the adapter's \
      values (--adapter, or the pipeline's own initial values) and the base model's path, size \
      and fingerprint; the base weights stay in the model file. With --adapter the adapter's \
      lora pass runs first. --loss compiles the train graph (loss and adapter gradients; the \
      pipeline must differentiate it, e.g. 'lora{...},freeze,fuse,autodiff{loss=loss},dce'). \
      lorac run executes a bundle without tracing again; lorac dump-ir prints its IR.
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(help: "The pass pipeline (default: fuse).")
  var pipeline = "fuse"

  @Option(help: "A PEFT adapter directory to compile in.")
  var adapter: String?

  @Option(parsing: .unconditional, help: "Sequences per run.")
  var batch = 1

  @Option(parsing: .unconditional, help: "Tokens per sequence.")
  var seq = 16

  @Flag(help: "Compile the train graph (next-token loss) instead of the logits.")
  var loss = false

  @Option(name: .shortAndLong, help: "The .lorac bundle to write.")
  var output: String

  func validate() throws {
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
    if seq < 1 { throw ValidationError("--seq must be at least 1, got \(seq)") }
  }

  func run() throws {
    let bundle = try CompiledBundle.compiling(
      model: model, pipeline: pipeline, adapter: adapter, batch: batch, sequence: seq, loss: loss)
    do {
      try bundle.write(to: output)
    } catch {
      fail(error.message)
    }
    printError(
      "compiled \(bundle.graph.body.count) instructions, arena \(bundle.arenaBytes) bytes "
        + "(\(bundle.naiveBytes) without reuse) -> \(output)")
  }
}

/// `lorac run`: executes a `.lorac` bundle.
struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a .lorac bundle: logits to --out (.npy), or the loss and gradients.",
    discussion: """
      --ids gives batch x seq token ids for a logits bundle, and batch x (seq + 1) for a loss \
      bundle (inputs and next-token targets, every position weighted). The base model is read \
      from the path the bundle names (or --model) and must be the same file: its size and \
      fingerprint are checked.
      """)

  @Argument(help: "The .lorac bundle.")
  var bundle: String

  @Option(parsing: .unconditional, help: "Comma-separated token ids.")
  var ids: String

  @Option(help: "Where to write the logits (.npy) or the gradients (.safetensors).")
  var out: String?

  @Option(help: "The base model, when it moved since compiling.")
  var model: String?

  @OptionGroup var threads: ThreadsOption

  func validate() throws { try threads.check() }

  func run() throws {
    threads.apply()
    let session = try BundleSession(path: bundle, model: model)
    let output = try session.run(ids: try parseIDs(ids, option: "--ids"))
    do {
      switch output {
      case .logits(let logits):
        guard let out else { fail("--out: where to write the logits (.npy)") }
        try writeAtomically(NumPy.encode(logits), to: URL(fileURLWithPath: out))
      case .loss(let loss, let gradients):
        print("{\"loss\": \(loss)}")
        if let out { try SafetensorsFile.write(gradients, to: URL(fileURLWithPath: out)) }
      }
    } catch let error as FileError {
      fail(error.message)
    } catch {
      fail("\(error)")
    }
  }
}
