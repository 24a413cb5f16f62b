import Foundation
import IR
import TestSupport
import Testing

/// The IR texts the IR fuzz target (Fuzz/ir.swift) ever failed on, under
/// `Tests/Fixtures/fuzz/ir/`, each with the error it must give now ("" when parsing is fine too).
let irExpected: [String: String] = [:]

@Test(arguments: FuzzInputs.names("ir"))
func irFuzzInput(name: String) throws {
  let expected = try #require(irExpected[name], "no expected outcome for \(name)")
  let data = try FuzzInputs.data("ir", name)
  let text = String(decoding: data, as: UTF8.self)
  var errors: [String] = []
  do {
    let graph = try Parser.parse(text)
    do {
      try Verifier.verify(graph)
      // What parses and verifies prints as text that parses back to the same graph.
      #expect(try Parser.parse(Printer().print(graph)) == graph.compacted())
    } catch {
      errors.append("\(error)")
    }
  } catch {
    errors.append("\(error)")
  }
  if !expected.isEmpty {
    #expect(errors.contains { $0.contains(expected) }, "\(name): \(errors)")
  }
}

@Test func irFuzzInputsAreListed() { expectEveryInputListed("ir", irExpected) }

/// The IR fuzz target's dictionary (`Fuzz/ir.dict`) holds every mnemonic and attribute name of
/// the op table, so a new op is fuzzed with its spelling.
@Test func irFuzzDictionaryHasEveryMnemonicAndAttribute() throws {
  let dictionary = testsFolder.deletingLastPathComponent().appendingPathComponent("Fuzz/ir.dict")
  let text = try String(contentsOf: dictionary, encoding: .utf8)
  let entries = Set(text.split(separator: "\n").map { $0.trimmingCharacters(in: ["\""]) })
  let names = Op.allMnemonics + OpKind.allCases.flatMap { $0.facts.attributes.map(\.name) }
  for name in names where !entries.contains(name) {
    Issue.record("Fuzz/ir.dict lacks \"\(name)\"")
  }
}
