// libFuzzer target: the PEFT adapter loader.
//
// An input is `adapter_config.json`, a zero byte, then `adapter_model.safetensors`. Any input
// loads an adapter or throws `FileError`, for a small Llama (2 layers, width 8, 2 heads, 1 KV
// head, feed-forward 16) and without a model.
import Foundation
import Models

let config = LlamaConfig(
  vocabularySize: 32, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
  feedForwardLength: 16)

/// A valid safetensors file with no tensors.
let empty: SafetensorsFile = {
  do {
    return try SafetensorsFile(
      data: Data([2, 0, 0, 0, 0, 0, 0, 0]) + Data("{}".utf8), path: "adapter_model.safetensors")
  } catch {
    fatalError("\(error)")
  }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPEFT(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let input = UnsafeBufferPointer(start: data, count: size)
  let split = input.firstIndex(of: 0) ?? size
  let json = Data(input[0..<split])
  let weightBytes = Data(input[min(split + 1, size)...])
  // Weights that do not parse are replaced by an empty file, so the config is still read.
  let weights =
    (try? SafetensorsFile(data: weightBytes, path: "adapter_model.safetensors")) ?? empty
  _ = try? PEFTAdapter(configJSON: json, weights: weights, directory: "fuzz", config: config)
  // And without a model, the widths taken from the tensors' shapes (as `lorac export` does).
  _ = try? PEFTAdapter(
    configJSON: json, weights: weights, directory: "fuzz", withoutModelFor: "export")
  return 0
}
