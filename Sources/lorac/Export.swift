import ArgumentParser
import Foundation
import Models

/// `lorac export`: a PEFT adapter as a LoRA adapter GGUF that llama.cpp loads.
struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Export a PEFT adapter as a llama.cpp LoRA adapter GGUF (--lora in llama.cpp).",
    discussion: """
      Writes general.type = adapter, adapter.type = lora, adapter.lora.alpha (alpha / r is the \
      adapter's scale) and blk.N.<weight>.lora_a / .lora_b in F32, q/k lora_b rows in GGUF's \
      permuted order. --model supplies the architecture and head counts and checks the shapes; \
      it is required when q_proj or k_proj are adapted (without it the architecture is llama).
      """)

  @Argument(help: "The PEFT adapter directory.")
  var adapter: String

  @Option(name: .customLong("gguf-adapter"), help: "The adapter GGUF file to write.")
  var ggufAdapter: String

  @Option(help: "The GGUF model the adapter was trained for.")
  var model: String?

  func run() throws {
    var file: GGUFFile?
    let peft: PEFTAdapter
    do {
      if let model {
        let llama: LlamaModel
        do {
          llama = try LlamaModel(path: model)
        } catch {
          fail(error.message)
        }
        file = llama.file
        peft = try PEFTAdapter(directory: adapter, config: llama.config)
      } else {
        peft = try PEFTAdapter(directory: adapter, withoutModelFor: "export")
      }
    } catch {
      fail(error.message)
    }
    do {
      try LoraMerge.llamaCppAdapter(peft, model: file).write(to: ggufAdapter)
    } catch {
      fail(error.message)
    }
    FileHandle.standardError.write(
      Data(
        "exported \(peft.targets.count) adapted weights (rank \(peft.rank)) to \(ggufAdapter)\n"
          .utf8))
  }
}
