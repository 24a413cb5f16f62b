import Foundation
import Passes
import TestSupport
import Testing

/// The pipeline texts the pipeline fuzz target (Fuzz/pipeline.swift) ever failed on, under
/// `Tests/Fixtures/fuzz/pipeline/`, each with the error it must give now ("" when parsing is fine
/// too).
let pipelineExpected: [String: String] = [
  // 26 `{a,b}` groups expanded to 2^26 globs (minutes and gigabytes); now capped at 1000.
  "brace-expansion-bomb": "expands to more than 1000 alternatives"
]

@Test(arguments: FuzzInputs.names("pipeline"))
func pipelineFuzzInput(name: String) throws {
  let expected = try #require(pipelineExpected[name], "no expected outcome for \(name)")
  let data = try FuzzInputs.data("pipeline", name)
  let text = String(decoding: data, as: UTF8.self)
  do {
    let pipeline = try Pipeline(parsing: text)
    // What parses prints as text that parses back the same.
    #expect(try Pipeline(parsing: pipeline.description).description == pipeline.description)
    #expect(expected.isEmpty, "\(name) parsed; expected \(expected)")
  } catch {
    #expect("\(error)".contains(expected), "\(name): \(error)")
  }
}

@Test func pipelineFuzzInputsAreListed() {
  expectEveryInputListed("pipeline", pipelineExpected)
}

@Test func selectorsExpandUpToTheLimit() throws {
  let nine = try NameSelector(parsing: String(repeating: "{a,b}", count: 9))  // 512 globs
  #expect(nine.matches("abababbba"))
  #expect(!nine.matches("abababbb"))
  let nested = try NameSelector(parsing: "layers.{a{1,2,3},b}.x")
  #expect(["layers.a1.x", "layers.a3.x", "layers.b.x"].allSatisfy(nested.matches))
  #expect(!nested.matches("layers.a.x"))
  let ten = String(repeating: "{a,b}", count: 10)  // 1024 globs
  do {
    _ = try NameSelector(parsing: ten)
    Issue.record("\(ten) parsed")
  } catch {
    #expect(error.message == "pattern '\(ten)' expands to more than 1000 alternatives")
  }
  do {
    _ = try NameSelector(parsing: "{a,b")
    Issue.record("an unbalanced pattern parsed")
  } catch {
    #expect(error.message.contains("unbalanced '{'"))
  }
}
