import ArgumentParser
import Foundation
import Models
import Sessions

/// `lorac merge`: a GGUF model with a PEFT adapter folded into its weights.
struct Merge: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Fold a PEFT adapter into a GGUF model: each adapted weight becomes W + s·B·A.",
    discussion: """
      Adapted weights are dequantized, merged and stored as f32 (or f16 with --dtype f16); every \
      other tensor and all metadata are copied as stored. The output is written to a temporary \
      file and renamed into place, so a failure leaves no partial file.
      """)

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(
    help:
      "A PEFT adapter directory (adapter_config.json + adapter_model.safetensors); repeat as DIR:WEIGHT to fold several in with those weights."
  )
  var adapter: [String]

  @Option(name: [.customShort("o"), .customLong("out")], help: "The merged GGUF file to write.")
  var out: String

  @Option(help: "Storage of the merged weights: f32 or f16.")
  var dtype = "f32"

  func validate() throws {
    guard ["f32", "f16"].contains(dtype) else {
      throw ValidationError("--dtype must be f32 or f16, got '\(dtype)'")
    }
  }

  func run() throws {
    if sameFile(out, model) { fail("\(out): refusing to overwrite the model being merged") }
    let llama = try LlamaModel.open(model)
    guard let peft = try loadAdapters(adapter, for: llama) else { fail("--adapter: no adapter") }
    guard let file = llama.file else {
      fail("\(model): merge writes a GGUF file and needs a GGUF model (folders are not merged yet)")
    }
    do {
      try LoraMerge.mergedModel(file, adapter: peft, dtype: dtype == "f16" ? .f16 : .f32)
        .write(to: out)
    } catch {
      fail(error.message)
    }
    printError("merged \(peft.targets.count) weights (\(dtype), scale \(peft.scale)) into \(out)")
  }
}

/// Whether two paths name the same existing file.
func sameFile(_ first: String, _ second: String) -> Bool {
  var a = stat()
  var b = stat()
  guard stat(first, &a) == 0, stat(second, &b) == 0 else { return false }
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino
}
