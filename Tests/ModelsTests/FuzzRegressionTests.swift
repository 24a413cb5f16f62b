import Foundation
import IR
import Models
import TestSupport
import Testing

/// An input with an expected message must give it at some stage; "" means any outcome is fine
/// (the input once crashed or hung, and must now only finish).
func expectOutcome(_ errors: [String], _ expected: String, _ name: String) {
  if !expected.isEmpty {
    #expect(errors.contains { $0.contains(expected) }, "\(name): \(errors)")
  }
}

/// What the GGUF fuzz target does with `data`, as the error messages of each stage that failed:
/// the file, each small tensor (as stored and dequantized), the Llama config and the tokenizer.
func ggufOutcome(_ data: Data) -> [String] {
  let mapping = FileMapping(copying: data, path: "fuzz.gguf")
  let file: GGUFFile
  do {
    file = try GGUFFile(mapping: mapping)
  } catch {
    return ["\(error)"]
  }
  var errors: [String] = []
  for info in file.tensors where info.byteCount <= 1 << 20 {
    do {
      _ = try file.tensor(named: info.name).floats()
    } catch {
      errors.append("\(error)")
    }
    do {
      _ = try file.dequantized(named: info.name)
    } catch {
      errors.append("\(error)")
    }
  }
  do {
    _ = try LlamaConfig(gguf: file)
  } catch {
    errors.append("\(error)")
  }
  do {
    let tokenizer = try Tokenizer(gguf: file)
    _ = tokenizer.decode(tokenizer.encode("Hi <|im_start|>user 12 x\n", parseSpecial: true))
  } catch {
    errors.append("\(error)")
  }
  return errors
}

/// GGUF inputs and a message one of the stages must give ("" when any outcome but a crash will do).
let ggufExpected: [String: String] = [
  // A bos_token_id beyond Int32 trapped converting it; now any id outside the vocabulary is an error.
  "tokenizer-special-id": "is not a token id"
]

@Test(arguments: FuzzInputs.names("gguf"))
func ggufFuzzInput(name: String) throws {
  let errors = ggufOutcome(try FuzzInputs.data("gguf", name))
  let expected = try #require(ggufExpected[name], "no expected outcome for \(name)")
  expectOutcome(errors, expected, name)
}

@Test func ggufFuzzInputsAreListed() { expectEveryInputListed("gguf", ggufExpected) }

/// Safetensors inputs and the message they must give ("" when parsing is fine too).
let safetensorsExpected: [String: String] = [:]

@Test(arguments: FuzzInputs.names("safetensors"))
func safetensorsFuzzInput(name: String) throws {
  let expected = try #require(safetensorsExpected[name], "no expected outcome for \(name)")
  var errors: [String] = []
  do {
    let file = try SafetensorsFile(data: try FuzzInputs.data("safetensors", name), path: name)
    for entry in file.entries {
      do {
        _ = try file.tensor(named: entry.name).floats()
      } catch {
        errors.append("\(error)")
      }
    }
  } catch {
    errors.append("\(error)")
  }
  expectOutcome(errors, expected, name)
}

@Test func safetensorsFuzzInputsAreListed() {
  expectEveryInputListed("safetensors", safetensorsExpected)
}

/// jsonl inputs and the message they must give ("" when reading examples is fine too).
let jsonlExpected: [String: String] = [:]

@Test(arguments: FuzzInputs.names("jsonl"))
func jsonlFuzzInput(name: String) throws {
  let expected = try #require(jsonlExpected[name], "no expected outcome for \(name)")
  let tokenizer = try Tokenizer(gguf: try GGUFFile(path: try modelPath()))
  let template = tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:))
  let data = try FuzzInputs.data("jsonl", name)
  var errors: [String] = []
  for template in [template, nil] {
    do {
      _ = try Dataset.parse(data, path: name, tokenizer: tokenizer, template: template)
    } catch {
      errors.append("\(error)")
    }
  }
  expectOutcome(errors, expected, name)
}

@Test func jsonlFuzzInputsAreListed() { expectEveryInputListed("jsonl", jsonlExpected) }

/// PEFT inputs (config, a zero byte, weights) and the message they must give ("" when loading is
/// fine too), for the fuzz target's small Llama.
let peftExpected: [String: String] = [
  // `layers.01` read as layer 1 (as did `layers.+1`): a second spelling of a module's name.
  "layer-leading-zero": "unexpected tensor 'base_model.model.model.layers.01."
]

@Test(arguments: FuzzInputs.names("peft"))
func peftFuzzInput(name: String) throws {
  let expected = try #require(peftExpected[name], "no expected outcome for \(name)")
  let input = try FuzzInputs.data("peft", name)
  let split = input.firstIndex(of: 0) ?? input.endIndex
  let config = LlamaConfig(
    vocabularySize: 32, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 16)
  var errors: [String] = []
  do {
    let weights = try SafetensorsFile(
      data: Data(input[min(split + 1, input.endIndex)...]), path: "adapter_model.safetensors")
    do {
      _ = try PEFTAdapter(
        configJSON: Data(input[..<split]), weights: weights, directory: name, config: config)
    } catch {
      errors.append("\(error)")
    }
    do {
      _ = try PEFTAdapter(
        configJSON: Data(input[..<split]), weights: weights, directory: name,
        withoutModelFor: "export")
    } catch {
      errors.append("\(error)")
    }
  } catch {
    errors.append("\(error)")
  }
  expectOutcome(errors, expected, name)
}

@Test func peftFuzzInputsAreListed() { expectEveryInputListed("peft", peftExpected) }
