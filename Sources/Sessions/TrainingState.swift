import Foundation
import IR
import Models

/// Everything `lorac train --resume` needs to continue a run exactly where a checkpoint left it:
/// the adapter tensors, AdamW's moments and step count, the data order, the hyper-parameters and
/// fingerprints of the data and the model (so a resume on other inputs is refused).
///
/// Stored as one safetensors file: the tensors `param.NAME`, `adam_m.NAME`, `adam_v.NAME` (F32,
/// lorac's names and layouts) and `data_order` (I32), the scalars as string metadata.
public struct TrainingState: Sendable {
  public static let fileName = "training_state.safetensors"
  public static let format = "lorac-training-state-1"

  /// Optimizer steps completed.
  public var step: Int
  /// AdamW's own step count (its bias corrections).
  public var optimizerStep: Int
  /// Seconds spent training before this checkpoint, over every run.
  public var elapsed: Double
  /// The data-order generator's state, the shuffled order of the examples and the next position.
  public var generator: UInt64
  public var order: [Int]
  public var cursor: Int
  /// The thread count the steps ran with (bit-identical continuation needs the same).
  public var threads: Int
  /// The hyper-parameters of the run by flag name (without dashes), as decimal text.
  public var settings: [String: String]
  public var dataFingerprint: String
  public var modelFingerprint: String
  /// Adapter tensors and their AdamW moments by lorac's parameter names.
  public var parameters: [String: HostTensor]
  public var firstMoments: [String: [Float]]
  public var secondMoments: [String: [Float]]

  public init(
    step: Int, optimizerStep: Int, elapsed: Double, generator: UInt64, order: [Int], cursor: Int,
    threads: Int, settings: [String: String], dataFingerprint: String, modelFingerprint: String,
    parameters: [String: HostTensor], firstMoments: [String: [Float]],
    secondMoments: [String: [Float]]
  ) {
    self.step = step
    self.optimizerStep = optimizerStep
    self.elapsed = elapsed
    self.generator = generator
    self.order = order
    self.cursor = cursor
    self.threads = threads
    self.settings = settings
    self.dataFingerprint = dataFingerprint
    self.modelFingerprint = modelFingerprint
    self.parameters = parameters
    self.firstMoments = firstMoments
    self.secondMoments = secondMoments
  }

  /// Writes the state into `folder` crash-safely (temporary file, flush, rename).
  public func write(to folder: URL) throws(SafetensorsError) {
    var tensors = StateFile.optimizerTensors(
      parameters, first: firstMoments, second: secondMoments)
    tensors.append(("data_order", HostTensor(shape: [order.count], ints: order.map { Int32($0) })))
    var metadata = [
      "format": TrainingState.format, "step": String(step),
      "optimizer_step": String(optimizerStep), "elapsed_s": String(elapsed),
      "rng_state": String(generator), "cursor": String(cursor), "threads": String(threads),
      "data_fingerprint": dataFingerprint, "model_fingerprint": modelFingerprint,
    ]
    for (key, value) in settings { metadata["hp.\(key)"] = value }
    try SafetensorsFile.write(
      tensors, metadata: metadata, to: folder.appendingPathComponent(TrainingState.fileName))
  }

  /// Reads the state in `folder`, or nil when there is none; a damaged file is an error.
  public static func read(from folder: URL) throws(SafetensorsError) -> TrainingState? {
    guard
      let state = try StateFile(
        folder: folder, fileName: fileName, format: format, kind: "training state")
    else { return nil }
    let (file, metadata, fail, integer) = (state.file, state.metadata, state.fail, state.integer)
    guard let generatorText = metadata["rng_state"], let generator = UInt64(generatorText),
      let elapsedText = metadata["elapsed_s"], let elapsed = Double(elapsedText)
    else { throw fail("'rng_state' or 'elapsed_s' is missing or malformed") }
    let settings = state.settings
    let order = try file.tensor(named: "data_order").ints().map(Int.init)
    let cursor = try integer("cursor")
    guard cursor <= order.count else { throw fail("the data cursor is past the data order") }
    let (parameters, first, second) = try state.optimizerTensors()
    return TrainingState(
      step: try integer("step"), optimizerStep: try integer("optimizer_step"), elapsed: elapsed,
      generator: generator, order: order, cursor: cursor, threads: try integer("threads"),
      settings: settings, dataFingerprint: metadata["data_fingerprint"] ?? "",
      modelFingerprint: metadata["model_fingerprint"] ?? "", parameters: parameters,
      firstMoments: first, secondMoments: second)
  }
}

/// A 64-bit fingerprint of bytes and numbers (not cryptographic: it tells inputs apart, it does
/// not resist forgery).
public struct Fingerprint: Sendable {
  private var state: UInt64 = 0xCBF2_9CE4_8422_2325

  public init() {}

  public mutating func add(_ word: UInt64) {
    state = ((state ^ word) &* 0x0000_0100_0000_01B3)
    state = (state << 29) | (state >> 35)
  }

  public mutating func add(bytes: UnsafeRawBufferPointer) {
    add(UInt64(bytes.count))
    let words = bytes.count / 8
    for index in 0..<words {
      add(bytes.loadUnaligned(fromByteOffset: 8 * index, as: UInt64.self))
    }
    for index in (8 * words)..<bytes.count { add(UInt64(bytes[index])) }
  }

  /// The fingerprint as 16 hexadecimal digits.
  public var hex: String {
    var value = state
    value = (value ^ (value >> 33)) &* 0xFF51_AFD7_ED55_8CCD
    value = (value ^ (value >> 33)) &* 0xC4CE_B9FE_1A85_EC53
    value ^= value >> 33
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
  }

  /// The fingerprint of a file's bytes (memory-mapped), or of a folder's (a Hugging Face
  /// checkpoint): the name and bytes of each file in it, in name order.
  public static func file(_ path: String) throws(FileError) -> String {
    var fingerprint = Fingerprint()
    // The mapping must outlive the read of its bytes (munmap on release).
    func add(_ file: String) throws(FileError) {
      let mapping = try FileMapping(path: file)
      withExtendedLifetime(mapping) { fingerprint.add(bytes: mapping.bytes) }
    }
    guard HuggingFaceFolder.isFolder(path) else {
      try add(path)
      return fingerprint.hex
    }
    for name in try folderFiles(path) {
      Array(name.utf8).withUnsafeBytes { fingerprint.add(bytes: $0) }
      try add(path + "/" + name)
    }
    return fingerprint.hex
  }

  /// The bytes of a model: a file's size, or the sum of a folder's files' sizes.
  public static func byteCount(ofModel path: String) throws(FileError) -> Int {
    func size(_ file: String) throws(FileError) -> Int {
      guard let size = try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int else {
        throw FileError(message: "\(file): no such file")
      }
      return size
    }
    guard HuggingFaceFolder.isFolder(path) else { return try size(path) }
    var total = 0
    for name in try folderFiles(path) { total += try size(path + "/" + name) }
    return total
  }

  /// The regular, non-empty files of a folder, sorted by name.
  private static func folderFiles(_ path: String) throws(FileError) -> [String] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else {
      throw FileError(message: "\(path): cannot list the folder")
    }
    return names.sorted().filter { name in
      var isDirectory: ObjCBool = false
      let attributes = try? FileManager.default.attributesOfItem(atPath: path + "/" + name)
      return FileManager.default.fileExists(atPath: path + "/" + name, isDirectory: &isDirectory)
        && !isDirectory.boolValue && (attributes?[.size] as? Int ?? 0) > 0
    }
  }

  /// The fingerprint of tokenized training examples: their ids and loss weights.
  public static func examples(_ examples: [TrainingExample]) -> String {
    var fingerprint = Fingerprint()
    fingerprint.add(UInt64(examples.count))
    for example in examples {
      fingerprint.add(UInt64(example.ids.count))
      for id in example.ids { fingerprint.add(UInt64(UInt32(bitPattern: id))) }
      for weight in example.weights { fingerprint.add(UInt64(weight.bitPattern)) }
    }
    return fingerprint.hex
  }
}

/// What the training and RLHF state files share: an optimizer's tensors (`param.NAME`,
/// `adam_m.NAME`, `adam_v.NAME`), the run's settings as `hp.KEY` metadata, and checks that name the
/// file.
struct StateFile {
  let url: URL
  let file: SafetensorsFile
  var metadata: [String: String] { file.metadata }

  /// Opens `folder/fileName`, or nil when there is none; a file of another `format` is an error
  /// saying it is not a lorac `kind`.
  init?(folder: URL, fileName: String, format: String, kind: String) throws(SafetensorsError) {
    url = folder.appendingPathComponent(fileName)
    guard FileManager.default.fileExists(atPath: url.path) else { return nil }
    file = try SafetensorsFile(path: url.path)
    guard file.metadata["format"] == format else {
      throw SafetensorsError(
        message:
          "\(url.path): not a lorac \(kind) (format \(file.metadata["format"] ?? "missing"))")
    }
  }

  func fail(_ message: String) -> SafetensorsError {
    SafetensorsError(message: "\(url.path): \(message)")
  }

  /// A count in the metadata.
  func integer(_ key: String) throws(SafetensorsError) -> Int {
    guard let text = metadata[key], let value = Int(text), value >= 0 else {
      throw fail("'\(key)' is missing or not a count")
    }
    return value
  }

  /// The run's settings (`hp.KEY` metadata, without the prefix).
  var settings: [String: String] {
    var settings: [String: String] = [:]
    for (key, value) in metadata where key.hasPrefix("hp.") {
      settings[String(key.dropFirst(3))] = value
    }
    return settings
  }

  /// Each parameter with its AdamW moments.
  func optimizerTensors() throws(SafetensorsError) -> (
    parameters: [String: HostTensor], first: [String: [Float]], second: [String: [Float]]
  ) {
    var parameters: [String: HostTensor] = [:]
    var first: [String: [Float]] = [:]
    var second: [String: [Float]] = [:]
    for entry in file.entries where entry.name.hasPrefix("param.") {
      let name = String(entry.name.dropFirst("param.".count))
      parameters[name] = try file.tensor(named: entry.name)
      first[name] = try file.tensor(named: "adam_m.\(name)").floats()
      second[name] = try file.tensor(named: "adam_v.\(name)").floats()
    }
    return (parameters, first, second)
  }

  /// The tensors a state file holds for `parameters` and their moments, by name.
  static func optimizerTensors(
    _ parameters: [String: HostTensor], first: [String: [Float]], second: [String: [Float]]
  ) -> [(name: String, tensor: HostTensor)] {
    var tensors: [(name: String, tensor: HostTensor)] = []
    for name in parameters.keys.sorted() {
      guard let tensor = parameters[name], let m = first[name], let v = second[name] else {
        continue
      }
      tensors.append(("param.\(name)", tensor))
      tensors.append(("adam_m.\(name)", HostTensor(shape: tensor.type.shape, floats: m)))
      tensors.append(("adam_v.\(name)", HostTensor(shape: tensor.type.shape, floats: v)))
    }
    return tensors
  }
}

extension TrainingState {
  /// The state a run into the folder `out` continues from.
  ///
  /// The saved one with `resume`, none without (a note says an old one is started over). `out`
  /// naming a file, or `resume` with no state, is an error.
  static func continued(in out: String, resume: Bool, note: (String) -> Void)
    throws(SessionError) -> TrainingState?
  {
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: out, isDirectory: &isFolder), !isFolder.boolValue {
      throw SessionError("\(out): is a file; --out names a folder (made if missing)")
    }
    let saved: TrainingState?
    do {
      saved = try TrainingState.read(from: URL(fileURLWithPath: out))
    } catch {
      throw SessionError(error.message)
    }
    if resume && saved == nil {
      throw SessionError(
        "\(out): no training state to resume (\(TrainingState.fileName) is missing); "
          + "run without --resume to start")
    }
    if !resume, let old = saved {
      note(
        "note: \(out) holds a training state at step \(old.step); starting over (--resume continues it)"
      )
      return nil
    }
    return saved
  }
}
