import Foundation
import Models
import TestSupport
import Testing

// SentencePiece-style tokenizers against their libraries (Tests/Fixtures/make_tokenizer_fixtures.py):
// tokenizer.json in the Llama 2 (legacy normalizers), Mistral (Metaspace first), Gemma (Replace +
// Split) forms and a Metaspace-split form without byte fallback, against the tokenizers library;
// the same vocabulary as a GGUF `llama` tokenizer against sentencepiece, 230 strings each.

private struct StringsFixture: Decodable {
  struct Case: Decodable {
    var text: String
    var ids: [Int32]
    var ids_special: [Int32]?
    var ids_raw: [Int32]?
    var decoded: String
  }
  var strings: [Case]
}

private func strings(_ name: String) throws -> [StringsFixture.Case] {
  try JSONDecoder().decode(
    StringsFixture.self,
    from: Data(contentsOf: tokenizerFixtures.appendingPathComponent(name + ".json"))
  ).strings
}

private func jsonTokenizer(_ name: String) throws -> Tokenizer {
  let path = tokenizerFixtures.appendingPathComponent(name).appendingPathComponent("tokenizer.json")
  return try Tokenizer(tokenizerJSON: Array(Data(contentsOf: path)), path: path.path)
}

private func ggufTokenizer() throws -> Tokenizer {
  try Tokenizer(
    gguf: GGUFFile(path: fixtureGGUF(tokenizerFixtures, "llama-spm.gguf")))
}

@Test(arguments: ["llama2", "mistral", "gemma", "metaspace"])
func sentencePieceTokenizerJSONMatchesTheTokenizersLibrary(_ name: String) throws {
  let tokenizer = try jsonTokenizer(name)
  let cases = try strings(name)
  #expect(cases.count >= 200)
  var mismatches: [String] = []
  var decodes: [String] = []
  for item in cases {
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
    var withSpecial = ids
    if tokenizer.addsBeginOfSequence, let bos = tokenizer.beginOfSequence {
      withSpecial.insert(bos, at: 0)
    }
    #expect(withSpecial == item.ids_special, "\(item.text.debugDescription) with special tokens")
    let decoded = tokenizer.decode(item.ids)
    if decoded != item.decoded {
      decodes.append("\(item.ids): \(decoded.debugDescription) != \(item.decoded.debugDescription)")
    }
  }
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
  #expect(decodes.isEmpty, "\(decodes.count) decodes differ: \(decodes.prefix(5))")
}

@Test func ggufLlamaTokenizerMatchesSentencePiece() throws {
  let tokenizer = try ggufTokenizer()
  #expect(tokenizer.preTokenizer == "llama")
  #expect(tokenizer.addsBeginOfSequence && tokenizer.beginOfSequence == 1)
  #expect(tokenizer.endOfSequence == 2)
  let cases = try strings("llama-spm")
  #expect(cases.count >= 200)
  var mismatches: [String] = []
  for item in cases {
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
    let raw = tokenizer.encode(item.text)
    if raw != item.ids_raw {
      mismatches.append("raw \(item.text.debugDescription): \(raw) != \(item.ids_raw ?? [])")
    }
    #expect(tokenizer.decode(item.ids) == item.decoded, "decode(\(item.ids))")
  }
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
}

@Test func sentencePieceFormsReadTheirComponents() throws {
  let llama2 = try jsonTokenizer("llama2")
  #expect(llama2.addsBeginOfSequence && llama2.beginOfSequence == 1)
  // Byte fallback: a character outside the vocabulary is its UTF-8 bytes, and decodes back.
  let ids = llama2.encode("\u{1F9EA}")
  #expect(ids.count == 5 && llama2.decode(ids) == "\u{1F9EA}")
  #expect(llama2.tokens[Int(ids[1])] == "<0xF0>")
  // Special tokens only when parsed; the prefix comes before every text between them.
  #expect(llama2.encode("[INST]", parseSpecial: true) == [3])
  #expect(llama2.encode("[INST]").count > 1)
  let gemma = try jsonTokenizer("gemma")
  #expect(gemma.beginOfSequence == 2 && gemma.tokens[2] == "<bos>")
  #expect(gemma.encode("<start_of_turn>", parseSpecial: true) == [4])
  // Streaming bytes keep the first space, which decode strips.
  let hello = llama2.encode("Hello")
  #expect(String(decoding: llama2.bytes(hello), as: UTF8.self) == " Hello")
  #expect(llama2.decode(hello) == "Hello")
}

/// The llama2 fixture's tokenizer.json with `edit` applied to its text.
private func mutated(_ edit: (String) -> String) throws -> [UInt8] {
  let path = tokenizerFixtures.appendingPathComponent("llama2/tokenizer.json")
  return Array(edit(try String(contentsOf: path, encoding: .utf8)).utf8)
}

@Test func unsupportedSentencePieceComponentsAreErrorsNamingThem() throws {
  let cases: [(edit: (String) -> String, expected: String)] = [
    (
      { $0.replacingOccurrences(of: "\"type\": \"Prepend\"", with: "\"type\": \"NFKC\"") },
      "t.json: normalizer.normalizers[0].type 'NFKC' is not supported (supported: NFC, Prepend, Replace, Sequence)"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"pattern\": {\n          \"String\": \" \"\n        },\n        \"content\": \"▁\"",
          with: "\"pattern\": {\n          \"Regex\": \" \"\n        },\n        \"content\": \"▁\""
        )
      },
      "t.json: normalizer.normalizers[1].pattern {\"Regex\": ...} is not supported"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"pre_tokenizer\": null",
          with:
            "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"▁\", \"prepend_scheme\": \"sometimes\"}"
        )
      },
      "t.json: pre_tokenizer.prepend_scheme 'sometimes' is not always, first or never"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"pre_tokenizer\": null",
          with:
            "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Sideways\"}"
        )
      },
      "t.json: pre_tokenizer.behavior 'Sideways' is not supported"
    ),
    (
      {
        $0.replacingOccurrences(
          of: "\"pre_tokenizer\": null",
          with: "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}")
      },
      "t.json: pre_tokenizer.type 'WhitespaceSplit' is not supported (supported: ByteLevel, Digits, Metaspace, Split, Sequence)"
    ),
    (
      { $0.replacingOccurrences(of: "\"type\": \"Fuse\"", with: "\"type\": \"CTC\"") },
      "t.json: decoder.decoders[2].type 'CTC' is not supported without a ByteLevel pre-tokenizer"
    ),
    (
      { $0.replacingOccurrences(of: "\"type\": \"Fuse\"", with: "\"type\": \"ByteLevel\"") },
      "t.json: decoder.decoders[2].type 'ByteLevel' is not supported without a ByteLevel pre-tokenizer"
    ),
    (
      {
        $0.replacingOccurrences(of: "\"unk_token\": \"<unk>\"", with: "\"unk_token\": \"<nope>\"")
      },
      "t.json: model.unk_token '<nope>' is not in model.vocab"
    ),
    (
      { $0.replacingOccurrences(of: "\"fuse_unk\": true", with: "\"fuse_unk\": 1") },
      "t.json: model.fuse_unk must be true or false"
    ),
    (
      { $0.replacingOccurrences(of: "\"merges\": [", with: "\"merges\": [[\"zz\", \"qq\"], ") },
      "t.json: model.merges[0] 'zz qq' names a token not in model.vocab"
    ),
    (
      { $0.replacingOccurrences(of: "\"start\": 1", with: "\"start\": -1") },
      "t.json: decoder.decoders[3].start must be a count of characters"
    ),
    (
      { $0.replacingOccurrences(of: "\"single_word\": false", with: "\"single_word\": true") },
      "t.json: added_tokens[0].single_word true is not supported"
    ),
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

@Test func ggufLlamaTokenizerErrorsNameTheKey() throws {
  let path = try fixtureGGUF(tokenizerFixtures, "llama-spm.gguf")
  let file = try GGUFFile(path: path)
  // A GGUF without scores: rebuilt from the fixture's metadata minus one key.
  let metadata = file.metadata.filter { $0.key != "tokenizer.ggml.scores" }
  let rewritten = temporaryURL(".gguf")
  defer { try? FileManager.default.removeItem(at: rewritten) }
  try GGUFFileWriter(metadata: metadata).write(to: rewritten.path)
  #expect(
    throws: GGUFError(
      message:
        "\(rewritten.path): tokenizer.ggml.scores is missing (the llama tokenizer merges by score)")
  ) {
    try Tokenizer(gguf: GGUFFile(path: rewritten.path))
  }
}
