import ArgumentParser
import Models

/// `lorac tokenize`: token ids of a text under a GGUF model's tokenizer.
struct Tokenize: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the token ids of --text as {\"ids\": [...]}.",
    discussion: "No special tokens are added or parsed unless --add-special is given.")

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "The text to tokenize.")
  var text: String

  @Flag(
    help:
      "Parse control tokens written in the text (<|im_start|> ...) and add BOS when the model asks for it."
  )
  var addSpecial = false

  func run() throws {
    let tokenizer: Tokenizer
    do {
      tokenizer = try Tokenizer(gguf: GGUFFile(path: model))
    } catch {
      fail(error.message)
    }
    var ids = tokenizer.encode(text, parseSpecial: addSpecial)
    if addSpecial, tokenizer.addsBeginOfSequence, let bos = tokenizer.beginOfSequence {
      ids.insert(bos, at: 0)
    }
    print("{\"ids\": [\(ids.map(String.init).joined(separator: ", "))]}")
  }
}
