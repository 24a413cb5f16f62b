import Models
import Testing

@Test(arguments: [
  ("0", JSONValue.integer(0)), ("-12", .integer(-12)), ("1.5", .number(1.5)),
  ("-0.25e+2", .number(-25)), ("1E-2", .number(0.01)), ("1e2", .number(100)),
  ("18446744073709551616", .number(18_446_744_073_709_551_616)),
])
func jsonNumbersParse(text: String, value: JSONValue) throws {
  #expect(try JSONValue.parse(Array(text.utf8)) == value)
}

@Test(arguments: [
  ("+1", "invalid value"), ("01", "invalid value"), (".5", "invalid value"),
  ("1.", "invalid value"),
  ("1e", "invalid value"), ("-", "invalid value"), ("1e+", "invalid value"),
  ("1e999", "number out of range"), ("-1e999", "number out of range"),
])
func jsonNumbersOutsideTheGrammarAreErrors(text: String, message: String) {
  do {
    let value = try JSONValue.parse(Array(text.utf8))
    Issue.record("'\(text)' parsed as \(value)")
  } catch {
    #expect(error.message == "offset 0: \(message)")
  }
}
