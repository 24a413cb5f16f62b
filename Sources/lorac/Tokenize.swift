import ArgumentParser
import Models

/// `lorac tokenize`: token ids of a text under a model's tokenizer (GGUF metadata or a folder's
/// tokenizer.json).
struct Tokenize: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the token ids of --text as {\"ids\": [...]}.",
    discussion: "No special tokens are added or parsed unless --add-special is given.")

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
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
      if HuggingFaceFolder.isFolder(model) {
        tokenizer = try Tokenizer(huggingFace: HuggingFaceFolder(path: model))
      } else {
        tokenizer = try Tokenizer(gguf: GGUFFile(path: model))
      }
    } catch let error as HuggingFaceError {
      fail(error.message)
    } catch let error as GGUFError {
      fail(error.message)
    } catch {
      fail("\(error)")
    }
    var ids = tokenizer.encode(text, parseSpecial: addSpecial)
    if addSpecial, tokenizer.addsBeginOfSequence, let bos = tokenizer.beginOfSequence {
      ids.insert(bos, at: 0)
    }
    print("{\"ids\": [\(ids.map(String.init).joined(separator: ", "))]}")
  }
}
