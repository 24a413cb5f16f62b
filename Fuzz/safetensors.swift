// libFuzzer target: the safetensors reader.
//
// Any bytes parse or throw `SafetensorsError`; every tensor of a parsed file converts to a host
// tensor and its floats, or throws.
import Foundation
import Models

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Data(bytes: data, count: size)
  guard let file = try? SafetensorsFile(data: bytes, path: "fuzz.safetensors") else { return 0 }
  for entry in file.entries {
    if let tensor = try? file.tensor(named: entry.name) { _ = tensor.floats() }
  }
  return 0
}
