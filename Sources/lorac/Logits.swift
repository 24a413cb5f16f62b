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

  @Option(help: "Comma-separated token ids, e.g. 1,2,3.")
  var ids: String

  @Option(help: "The .npy file to write.")
  var out: String

  @Option(help: "Threads for the kernels (default: all cores).")
  var threads: Int?

  func run() throws {
    let tokens = parseIDs(ids, option: "--ids")
    let loaded: LlamaModel
    do { loaded = try LlamaModel(path: model) } catch { fail(error.message) }
    if let bad = tokens.first(where: { $0 < 0 || Int($0) >= loaded.config.vocabularySize }) {
      fail("--ids: token \(bad) is out of range 0..<\(loaded.config.vocabularySize)")
    }
    Threads.set(threads)
    let logits: HostTensor
    do {
      let graph = try loaded.trace(batch: 1, sequence: tokens.count)
      let executable = try Executable(graph, constants: try loaded.weights(for: graph))
      let outputs = try executable.run(inputs: [
        "tokens": HostTensor(shape: [1, tokens.count], ints: tokens),
        "positions": HostTensor(
          shape: [1, tokens.count], ints: (0..<tokens.count).map { Int32($0) }),
      ])
      let vocabulary = loaded.config.vocabularySize
      logits = try HostTensor(
        type: TensorType(.f32, [tokens.count, vocabulary]), data: outputs[0].data)
    } catch {
      fail("\(error)")
    }
    do {
      try writeAtomically(NumPy.encode(logits), to: URL(fileURLWithPath: out))
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
