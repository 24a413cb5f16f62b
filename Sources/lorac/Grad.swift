import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// `lorac grad`: the loss and the adapter gradients for one token sequence, as PEFT tensors.
struct Grad: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Compute the mean next-token loss of --ids and its gradient for every adapter tensor.",
    discussion: """
      Prints {"loss": x} and writes the gradients to --out (safetensors) under the adapter's PEFT \
      names and shapes.
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(help: "A PEFT adapter directory.")
  var adapter: String

  @Option(parsing: .unconditional, help: "Comma-separated token ids (at least 2).")
  var ids: String

  @Option(help: "The safetensors file to write.")
  var out: String

  @OptionGroup var threads: ThreadsOption

  func validate() throws { try threads.check() }

  @Option(help: "Print the IR after these passes (a pass name, or all).")
  var printIRAfter: String?

  func run() throws {
    let tokens = try parseIDs(ids, option: "--ids")
    if tokens.count < 2 { fail("--ids: need at least 2 tokens for a next-token loss") }
    let loaded = try LlamaModel.open(model)
    try loaded.check(tokens, option: "--ids")
    threads.apply()
    let session = try GradientSession(
      model: loaded, adapter: try PEFTAdapter.load(adapter, for: loaded), batch: 1,
      sequence: tokens.count, printAfter: printIRAfter, log: { printError($0) })
    let loss = try session.run(
      PackedBatch(
        [TrainingExample(ids: tokens, weights: .init(repeating: 1, count: tokens.count - 1))],
        sequence: tokens.count))
    do {
      let gradients = try PEFTAdapter.peftTensors(session.gradients(), config: loaded.config)
      try SafetensorsFile.write(
        gradients, metadata: ["format": "pt"], to: URL(fileURLWithPath: out))
    } catch {
      fail("\(error)")
    }
    print("{\"loss\": \(loss)}")
  }
}
