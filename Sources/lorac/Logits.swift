import ArgumentParser
import Foundation
import IR
import Models
import Runtime

/// `lorac logits`: the model's logits at every position of a token sequence, as `.npy`.
struct Logits: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write the float32 logits [n, vocab] for every position of --ids to a .npy file.")

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(parsing: .unconditional, help: "Comma-separated token ids, e.g. 1,2,3.")
  var ids: String

  @Option(help: "The .npy file to write.")
  var out: String

  @Option(parsing: .unconditional, help: "Threads for the kernels (default: all cores).")
  var threads: Int?

  @Option(help: "A PEFT adapter directory (adapter_config.json + adapter_model.safetensors).")
  var adapter: String?

  func validate() throws { try validateThreads(threads) }

  func run() throws {
    let tokens = parseIDs(ids, option: "--ids")
    checkTokens(tokens, option: "--ids", model: model)
    Threads.set(threads)
    let session = ForwardSession(modelPath: model, sequence: tokens.count, adapter: adapter)
    do {
      try writeAtomically(NumPy.encode(session.logits(tokens)), to: URL(fileURLWithPath: out))
    } catch {
      fail(error.message)
    }
  }
}

/// Parses `1,2,3` into token ids, failing with a message naming the option.
func parseIDs(_ text: String, option: String) -> [Int32] {
  let parts = text.split(separator: ",", omittingEmptySubsequences: false)
  var ids: [Int32] = []
  for part in parts {
    guard let id = Int32(part.trimmingCharacters(in: .whitespaces)) else {
      fail("\(option): '\(part)' is not a token id (expected comma-separated integers like 1,2,3)")
    }
    ids.append(id)
  }
  if ids.isEmpty { fail("\(option): no token ids") }
  return ids
}
