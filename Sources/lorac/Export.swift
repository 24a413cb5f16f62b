import ArgumentParser
import Foundation
import Models
import Sessions

/// `lorac export`: a PEFT adapter as a LoRA adapter GGUF that llama.cpp loads.
struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Export a PEFT adapter as a llama.cpp LoRA adapter GGUF (--lora in llama.cpp).",
    discussion: """
      Writes general.type = adapter, adapter.type = lora, adapter.lora.alpha (alpha / r is the \
      adapter's scale) and blk.N.<weight>.lora_a / .lora_b in F32, q/k lora_b rows in GGUF's \
      permuted order. --model supplies the architecture and head counts and checks the shapes; \
      it is required when q_proj or k_proj are adapted (without it the architecture is llama). \
      Per-head adapters (lorac train --per-head) are refused: llama.cpp has no per-head LoRA; \
      lorac merge folds them into the model instead.
      """)

  @Argument(help: "The PEFT adapter directory.")
  var adapter: String

  @Option(name: .customLong("gguf-adapter"), help: "The adapter GGUF file to write.")
  var ggufAdapter: String

  @Option(help: "The GGUF model the adapter was trained for.")
  var model: String?

  func run() throws {
    if PEFTAdapter.isPerHead(directory: adapter) {
      fail("\(adapter): \(LoraMerge.perHeadExportRefusal)")
    }
    let llama = try model.map { path throws(SessionError) in try LlamaModel.open(path) }
    if let llama, llama.file == nil {
      fail("--model: \(llama.path) is a folder; a GGUF adapter is for the GGUF model")
    }
    let peft: PEFTAdapter
    do {
      peft =
        try llama.map { try PEFTAdapter(directory: adapter, config: $0.config) }
        ?? PEFTAdapter(directory: adapter, withoutModelFor: "export")
      try LoraMerge.llamaCppAdapter(peft, model: llama?.file).write(to: ggufAdapter)
    } catch {
      fail("\(error)")
    }
    printError(
      "exported \(peft.targets.count) adapted weights (rank \(peft.rank)) to \(ggufAdapter)")
  }
}
