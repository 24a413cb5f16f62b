// libFuzzer target: the IR text parser and verifier.
//
// Any text parses or throws `ParseError`; a parsed graph verifies or throws `VerifyError`; and a
// graph that parses prints as text that parses back to the same graph.
import IR

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIR(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
  guard let graph = try? Parser.parse(text) else { return 0 }
  do {
    try Verifier.verify(graph)
  } catch {
    return 0
  }
  let printed = Printer().print(graph)
  let reparsed: Graph
  do {
    reparsed = try Parser.parse(printed)
  } catch {
    fatalError("printed IR does not parse back: \(error)\n\(printed)")
  }
  guard reparsed == graph.compacted() else {
    fatalError("printed IR parses back to another graph:\n\(printed)")
  }
  return 0
}
