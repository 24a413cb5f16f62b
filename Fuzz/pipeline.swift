// libFuzzer target: the pass-pipeline text parser (and every pass's option parsing).
//
// Any text parses or throws `PassError`; a parsed pipeline prints as text that parses back to
// the same text.
import Passes

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPipeline(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
  guard let pipeline = try? Pipeline(parsing: text) else { return 0 }
  let printed = pipeline.description
  do {
    let again = try Pipeline(parsing: printed)
    guard again.description == printed else {
      fatalError("pipeline '\(printed)' prints as '\(again.description)' after a round trip")
    }
  } catch {
    fatalError("printed pipeline '\(printed)' does not parse back: \(error)")
  }
  return 0
}
