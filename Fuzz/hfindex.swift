// libFuzzer target: a Hugging Face model.safetensors.index.json.
//
// Any bytes parse to a map from tensor name to a shard file name that is a plain
// `.safetensors` name inside the folder, or throw `HuggingFaceError`.
import Foundation
import Models

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzShardIndex(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  guard
    let placement = try? HuggingFaceFolder.shardIndex(bytes, path: "model.safetensors.index.json")
  else { return 0 }
  for shard in placement.values
  where shard.contains("/") || shard.hasPrefix(".") || !shard.hasSuffix(".safetensors") {
    fatalError("the index accepted the shard name '\(shard)'")
  }
  return 0
}
