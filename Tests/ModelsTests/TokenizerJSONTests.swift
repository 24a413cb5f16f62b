import Foundation
import Models
import TestSupport
import Testing

// tokenizer.json against the tokenizers library: three byte-level BPE tokenizers trained on a
// small corpus (Llama 3's regex split, Qwen2's NFC + regex split, SmolLM2's digits + GPT-2
// pattern) on 220 strings each (Tests/Fixtures/make_hf_fixtures.py).

private struct StringsFixture: Decodable {
  struct Case: Decodable {
    var text: String
    var ids: [Int32]
    var ids_special: [Int32]
    var decoded: String
  }
  var strings: [Case]
}

private let tokenizerFolder = huggingFaceFixtures.appendingPathComponent("tokenizers")

private func fixtureTokenizer(_ name: String) throws -> Tokenizer {
  let path = tokenizerFolder.appendingPathComponent(name).appendingPathComponent("tokenizer.json")
  return try Tokenizer(tokenizerJSON: Array(Data(contentsOf: path)), path: path.path)
}

@Test(arguments: ["llama3", "qwen2", "smollm", "gpt2", "neox"])
func tokenizerJSONMatchesTheTokenizersLibrary(_ name: String) throws {
  let tokenizer = try fixtureTokenizer(name)
  let fixture = try JSONDecoder().decode(
    StringsFixture.self,
    from: Data(contentsOf: tokenizerFolder.appendingPathComponent(name + ".json")))
  #expect(fixture.strings.count >= 200)
  var mismatches: [String] = []
  for item in fixture.strings {
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
    var withSpecial = ids
    if tokenizer.addsBeginOfSequence, let bos = tokenizer.beginOfSequence {
      withSpecial.insert(bos, at: 0)
    }
    #expect(withSpecial == item.ids_special, "\(item.text.debugDescription) with special tokens")
    // The library's decoding of its own ids: the NFC form for Qwen2, without the whitespace a
    // stripping token took.
    #expect(tokenizer.decode(item.ids) == item.decoded, "decode(\(item.ids))")
  }
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
}

@Test func tokenizerJSONReadsSpecialAndAddedTokens() throws {
  let llama3 = try fixtureTokenizer("llama3")
  #expect(llama3.addsBeginOfSequence && llama3.beginOfSequence == 0)
  #expect(llama3.preTokenizer == "Split+ByteLevel")
  #expect(llama3.encode("<|eot_id|>", parseSpecial: true) == [2])
  #expect(llama3.encode("<|eot_id|>").count > 1)
  let smollm = try fixtureTokenizer("smollm")
  #expect(!smollm.addsBeginOfSequence)
  #expect(smollm.preTokenizer == "Digits(individual)+ByteLevel(regex)")
  // A non-special added token is matched whether or not special tokens are parsed.
  #expect(smollm.encode("<tool>") == [700])
  #expect(smollm.encode("<|im_end|>") != [2])
}

@Test func folderTokenizerReadsTokenizerConfig() throws {
  let folder = try HuggingFaceFolder(
    path: huggingFaceFixtures.appendingPathComponent("tiny-llama").path)
  let tokenizer = try Tokenizer(huggingFace: folder)
  #expect(tokenizer.beginOfSequence == 0 && tokenizer.endOfSequence == 1)
  #expect(tokenizer.tokens[1] == "<|end_of_text|>")
  #expect(tokenizer.tokens.count == 700)
}

/// The llama3 fixture's tokenizer.json with `edit` applied to its text.
private func mutated(_ edit: (String) -> String) throws -> [UInt8] {
  let path = tokenizerFolder.appendingPathComponent("llama3/tokenizer.json")
  return Array(edit(try String(contentsOf: path, encoding: .utf8)).utf8)
}

@Test func unsupportedTokenizerComponentsAreErrorsNamingThem() throws {
  let cases: [(edit: (String) -> String, expected: String)] = [
    (
      { $0.replacingOccurrences(of: "\"type\": \"BPE\"", with: "\"type\": \"Unigram\"") },
      "t.json: model.type 'Unigram' is not supported (lorac reads BPE)"
    ),
    (
      { $0.replacingOccurrences(of: "\"byte_fallback\": false", with: "\"byte_fallback\": true") },
      "t.json: model.byte_fallback true is not supported with a ByteLevel pre-tokenizer"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"normalizer\": null", with: "\"normalizer\": {\"type\": \"NFKC\"}")
      },
      "t.json: normalizer.type 'NFKC' is not supported (supported: NFC, Prepend, Replace, Sequence)"
    ),
    (
      { $0.replacingOccurrences(of: "\"type\": \"Split\"", with: "\"type\": \"Whitespace\"") },
      "t.json: pre_tokenizer.pretokenizers[0].type 'Whitespace' is not supported (supported: ByteLevel, Digits, Metaspace, Split, Sequence)"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"behavior\": \"Isolated\"", with: "\"behavior\": \"Sideways\"")
      },
      "t.json: pre_tokenizer.pretokenizers[0].behavior 'Sideways' is not supported (supported: Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous)"
    ),
    (
      { $0.replacingOccurrences(of: "\"Regex\": \"(?i:", with: "\"Regex\": \"((?i:") },
      "t.json: pre_tokenizer.pretokenizers[0].pattern the regex does not compile"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"type\": \"TemplateProcessing\"", with: "\"type\": \"BertProcessing\"")
      },
      "t.json: post_processor.processors[1].type 'BertProcessing' is not supported"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"decoder\": {\n    \"type\": \"ByteLevel\"",
          with: "\"decoder\": {\n    \"type\": \"Metaspace\"")
      },
      "t.json: decoder.type 'Metaspace' is not supported (supported: ByteLevel)"
    ),
    (
      { $0.replacingOccurrences(of: "\"!\": 3", with: "\"!\": -3") },
      "t.json: model.vocab['!'] must be an id in 0..<4194304"
    ),
    (
      { $0.replacingOccurrences(of: "\"merges\": [", with: "\"merges\": [7, ") },
      "t.json: model.merges[0] is not \"a b\" or [\"a\", \"b\"]"
    ),
    ({ String($0.dropLast(10)) }, "t.json: "),
  ]
  for (edit, expected) in cases {
    let bytes = try mutated(edit)
    #expect(bytes != (try mutated { $0 }), "the edit for \(expected) changed nothing")
    do {
      _ = try Tokenizer(tokenizerJSON: bytes, path: "t.json")
      Issue.record("no error, expected \(expected)")
    } catch {
      #expect(error.message.hasPrefix(expected), "\(error.message)")
      #expect(!error.message.contains("\n"))
    }
  }
}

/// The GGUF form of Pythia's tokenizer (`tokenizer.ggml.model` gpt2, as llama.cpp's converter
/// writes it: its runs of spaces as USER_DEFINED tokens in raw text) tokenizes as the tokenizers
/// library does on every string that NFC leaves alone (llama.cpp applies no normalizer; the
/// tokenizer.json's NFC is not in the GGUF), and decodes the library's ids to its text.
@Test func ggufNeoXTokenizerMatchesTheTokenizersLibrary() throws {
  let tokenizer = try Tokenizer(
    gguf: GGUFFile(
      path: fixtureGGUF(huggingFaceFixtures, "tiny-neox-sequential.gguf")))
  let fixture = try JSONDecoder().decode(
    StringsFixture.self, from: Data(contentsOf: tokenizerFolder.appendingPathComponent("neox.json"))
  )
  var mismatches: [String] = []
  var compared = 0
  var withSpaceRuns = 0
  // Compared scalar by scalar: String's == holds for canonically equivalent texts.
  for item in fixture.strings
  where item.text.precomposedStringWithCanonicalMapping.unicodeScalars.elementsEqual(
    item.text.unicodeScalars)
  {
    compared += 1
    if item.text.contains("  ") { withSpaceRuns += 1 }
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
    #expect(tokenizer.decode(item.ids) == item.decoded, "decode(\(item.ids))")
  }
  #expect(
    compared >= 200 && withSpaceRuns >= 10, "\(compared) strings, \(withSpaceRuns) with spaces")
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
}
