import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// `lorac logits`: the model's logits at every position of a token sequence, as `.npy`.
struct Logits: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write the float32 logits [n, vocab] for every position of --ids to a .npy file.")

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(parsing: .unconditional, help: "Comma-separated token ids, e.g. 1,2,3.")
  var ids: String

  @Option(help: "The .npy file to write.")
  var out: String

  @OptionGroup var threads: ThreadsOption

  @OptionGroup var adapterScale: AdapterScaleOption

  @OptionGroup(title: "Hook points") var hooks: HookOptions

  func validate() throws {
    try threads.check()
    try adapterScale.check(adapters: adapter)
    try hooks.check()
  }

  @Option(
    help:
      "A PEFT adapter directory; repeat as DIR:WEIGHT to sum several adapters' branches with those weights."
  )
  var adapter: [String] = []

  func run() throws {
    let tokens = try parseIDs(ids, option: "--ids")
    let loaded = try LlamaModel.open(model)
    try loaded.check(tokens, option: "--ids")
    threads.apply()
    let session = try ForwardSession(
      model: loaded, sequence: tokens.count, adapter: try loadAdapters(adapter, for: loaded),
      hooks: try hooks.hooks())
    if !adapter.isEmpty { try session.setAdapterScale(adapterScale.scale) }
    let (logits, captures) = try session.run(tokens)
    do {
      try writeAtomically(NumPy.encode(logits), to: URL(fileURLWithPath: out))
    } catch {
      fail(error.message)
    }
    try hooks.write(captures)
  }
}
