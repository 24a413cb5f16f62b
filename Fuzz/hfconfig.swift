// libFuzzer target: a Hugging Face config.json.
//
// Any bytes parse to the Llama family's hyper-parameters, and trace, or throw
// `HuggingFaceError` (or, for hyper-parameters that parse but cannot trace, `TraceError`).
import Foundation
import IR
import Models

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHuggingFaceConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  guard let fields = try? HuggingFaceConfig(bytes: bytes, path: "config.json"),
    let config = try? ModelFamily.config(fields)
  else { return 0 }
  // Tracing builds a graph of the config's sizes: only small models are traced.
  let (layers, width) = (config.layerCount, config.embeddingLength)
  if layers <= 4, width <= 1024, config.vocabularySize <= 1024, config.feedForwardLength <= 1024 {
    _ = try? Llama.trace(config, batch: 1, sequence: 2)
  }
  return 0
}
