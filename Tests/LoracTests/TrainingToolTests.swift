import Foundation
import TestSupport
import Testing

#if canImport(FoundationXML)
  import FoundationXML
#endif
#if canImport(Glibc)
  import Glibc
#endif

/// A pseudo-terminal: the controlling side and the path of the terminal side (the Glibc module
/// does not export posix_openpt and its companions, so they are looked up by name).
private func openPseudoTerminal() throws -> (master: Int32, path: String) {
  typealias Open = @convention(c) (Int32) -> Int32
  typealias Grant = @convention(c) (Int32) -> Int32
  typealias Name = @convention(c) (Int32) -> UnsafeMutablePointer<CChar>?
  let library = dlopen(nil, RTLD_NOW)
  func symbol<T>(_ name: String, as type: T.Type) throws -> T {
    unsafeBitCast(try #require(dlsym(library, name), "no \(name)"), to: type)
  }
  let master = try symbol("posix_openpt", as: Open.self)(O_RDWR | O_NOCTTY)
  #expect(master >= 0)
  #expect(try symbol("grantpt", as: Grant.self)(master) == 0)
  #expect(try symbol("unlockpt", as: Grant.self)(master) == 0)
  let name = try #require(try symbol("ptsname", as: Name.self)(master))
  return (master, String(cString: name))
}

/// The metrics.jsonl lines as objects.
private func metricObjects(_ folder: URL) throws -> [[String: Any]] {
  let text = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
  return try text.split(separator: "\n").map {
    try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
  }
}

/// Collects the polyline points and the text of the text elements of an SVG document.
private final class CurveReader: NSObject, XMLParserDelegate {
  var root: String?
  var points: [(x: Double, y: Double)] = []
  var polylines = 0
  var labels: [(anchor: String, text: String)] = []
  private var text: String?
  private var anchor = ""

  func parser(
    _ parser: XMLParser, didStartElement element: String, namespaceURI: String?,
    qualifiedName: String?, attributes: [String: String] = [:]
  ) {
    if root == nil { root = element }
    if element == "polyline" {
      polylines += 1
      for pair in (attributes["points"] ?? "").split(separator: " ") {
        let numbers = pair.split(separator: ",").compactMap { Double($0) }
        if numbers.count == 2 { points.append((numbers[0], numbers[1])) }
      }
    }
    if element == "text" {
      text = ""
      anchor = attributes["text-anchor"] ?? ""
    }
  }

  func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }

  func parser(
    _ parser: XMLParser, didEndElement element: String, namespaceURI: String?,
    qualifiedName: String?
  ) {
    if element == "text", let text { labels.append((anchor, text)) }
    text = nil
  }
}

/// Checks `folder/loss.svg` against `folder/metrics.jsonl`: well-formed XML, one point per step,
/// steps left to right, higher losses higher up, and y tick labels spanning the losses.
private func checkLossCurve(_ folder: URL) throws {
  let losses = try metricObjects(folder).map { try #require($0["loss"] as? Double) }
  let parser = try #require(XMLParser(contentsOf: folder.appendingPathComponent("loss.svg")))
  let reader = CurveReader()
  parser.delegate = reader
  #expect(parser.parse(), "loss.svg is not well-formed: \(String(describing: parser.parserError))")
  #expect(reader.root == "svg")
  #expect(reader.polylines == 1)
  #expect(reader.points.count == losses.count)
  for (a, b) in zip(reader.points, reader.points.dropFirst()) { #expect(a.x < b.x) }
  for i in losses.indices {
    for j in losses.indices where losses[i] < losses[j] {
      #expect(reader.points[i].y > reader.points[j].y)
    }
  }
  let texts = reader.labels.map(\.text)
  #expect(texts.contains("step") && texts.contains("loss"))
  // Tick labels: steps centred under the x axis, losses right-aligned left of the y axis; each
  // set spans its data.
  let steps = reader.labels.filter { $0.anchor == "middle" }.compactMap { Double($0.text) }
  let levels = reader.labels.filter { $0.anchor == "end" }.compactMap { Double($0.text) }
  #expect(steps.count >= 2 && levels.count >= 2)
  #expect(steps.contains { $0 <= 1 } && steps.contains { $0 >= Double(losses.count) })
  #expect(levels.contains { $0 <= (losses.min() ?? 0) })
  #expect(levels.contains { $0 >= (losses.max() ?? 0) })
}

@Test func interruptWritesACheckpointThatResumesBitForBit() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("data.jsonl")
  try writeTrainingData(data)
  let out = folder.appendingPathComponent("out")
  let common = [
    "train", try modelPath(), "--data", data.path, "--steps", "12", "--batch", "1", "--seq",
    "10", "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}", "--lr", "0.01", "--threads", "1",
  ]
  let process = Process()
  process.executableURL = loracExecutable()
  process.arguments = common + ["--out", out.path]
  let errors = Pipe()
  process.standardError = errors
  process.standardOutput = FileHandle.nullDevice
  try process.run()
  // Interrupt as soon as the first step is reported.
  var seen = Data()
  while !String(decoding: seen, as: UTF8.self).contains("step 1/12") {
    let chunk = errors.fileHandleForReading.availableData
    if chunk.isEmpty { break }
    seen += chunk
  }
  process.interrupt()  // SIGINT
  seen += errors.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  let stderr = String(decoding: seen, as: UTF8.self)
  #expect(process.terminationReason == .exit)
  #expect(process.terminationStatus == 130, "\(stderr)")
  let last = try #require(stderr.split(separator: "\n").last.map(String.init))
  let prefix = "interrupted: saved step "
  #expect(last.hasPrefix(prefix), "\(stderr)")
  let saved = try #require(Int(last.dropFirst(prefix.count).prefix { $0 != "/" }))
  let command = (["lorac"] + common + ["--out", out.path, "--resume"]).map {
    $0.contains("{") ? "'\($0)'" : $0
  }.joined(separator: " ")
  #expect(last == "\(prefix)\(saved)/12 in \(out.path); resume with: \(command)")
  #expect(saved >= 1 && saved < 12)
  #expect(try metricObjects(out).count == saved)
  #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("loss.svg").path))

  // The printed command, run by a shell, resumes.
  let shell = Process()
  shell.executableURL = URL(fileURLWithPath: "/bin/sh")
  shell.arguments = ["-c", command]
  var environment = ProcessInfo.processInfo.environment
  environment["PATH"] =
    loracExecutable().deletingLastPathComponent().path + ":" + (environment["PATH"] ?? "")
  shell.environment = environment
  shell.standardError = FileHandle.nullDevice
  try shell.run()
  shell.waitUntilExit()
  #expect(shell.terminationStatus == 0)
  let straight = folder.appendingPathComponent("straight")
  let whole = try lorac(common + ["--out", straight.path])
  #expect(whole.status == 0, "\(whole.stderr)")
  #expect(try trainingMetricFields(out) == trainingMetricFields(straight))
  #expect(try trainingMetricFields(out).count == 12)
  try checkLossCurve(out)
}

@Test func accumulatedMicroBatchesMatchOneBatchOfTheirUnion() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let model = try modelPath()
  // Two examples with the same number of weighted (completion) tokens: the mean loss of a batch
  // of both equals the mean of their two losses, so the gradients agree too.
  let pair = folder.appendingPathComponent("pair.jsonl")
  try """
  {"prompt": ">>> mystery_function(1, 2)\\n", "completion": "3"}
  {"prompt": "Q: what is 4 + 4?\\nA: ", "completion": "8"}
  """.write(to: pair, atomically: true, encoding: .utf8)
  let single = folder.appendingPathComponent("single.jsonl")
  try "{\"prompt\": \">>> mystery_function(1, 2)\\n\", \"completion\": \"3\"}\n".write(
    to: single, atomically: true, encoding: .utf8)
  func train(_ data: URL, batch: Int, accumulate: Int) throws -> URL {
    let out = folder.appendingPathComponent("\(data.lastPathComponent)-\(batch)x\(accumulate)")
    let result = try lorac([
      "train", model, "--data", data.path, "--out", out.path, "--steps", "3", "--batch",
      String(batch), "--accumulate", String(accumulate), "--seq", "16", "--rank", "2",
      "--targets", "layers.{0,1}.attn.{q,v}", "--lr", "0.01", "--warmup", "0", "--threads", "2",
    ])
    #expect(result.status == 0, "\(result.stderr)")
    return out
  }
  // Identical micro-batches: 2 x batch 1 is 1 x batch 1 (the mean of two equal gradients is
  // exact, so the update is the same bit for bit).
  let once = try train(single, batch: 1, accumulate: 1)
  let twice = try train(single, batch: 1, accumulate: 2)
  #expect(try trainingMetricFields(twice) == trainingMetricFields(once))
  // Different micro-batches: 2 x batch 1 against 1 x batch 2 of the same two examples.
  let union = try metricObjects(try train(pair, batch: 2, accumulate: 1))
  let accumulated = try train(pair, batch: 1, accumulate: 2)
  let parts = try metricObjects(accumulated)
  #expect(union.count == 3 && parts.count == 3)  // one line per optimizer step
  for (a, b) in zip(union, parts) {
    #expect(a["step"] as? Int == b["step"] as? Int)
    for key in ["loss", "grad_norm"] {
      let (x, y) = (try #require(a[key] as? Double), try #require(b[key] as? Double))
      #expect(abs(x - y) <= 1e-4 * abs(x), "step \(a["step"] ?? 0) \(key): \(x) vs \(y)")
    }
  }
  // The loss moved: the steps were real updates, not no-ops.
  #expect((union.last?["loss"] as? Double ?? 0) < (union.first?["loss"] as? Double ?? 0))
  try checkLossCurve(accumulated)
}

@Test func progressOnATerminalIsOneLiveLine() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("data.jsonl")
  try writeTrainingData(data)
  // A pseudo-terminal as the child's stderr.
  let (master, name) = try openPseudoTerminal()
  defer { close(master) }
  let terminal = open(name, O_RDWR | O_NOCTTY)
  #expect(terminal >= 0)
  let process = Process()
  process.executableURL = loracExecutable()
  process.arguments =
    [
      "train", try modelPath(), "--data", data.path, "--out",
      folder.appendingPathComponent("out").path, "--steps", "3",
    ] + tinyTraining
  process.standardError = FileHandle(fileDescriptor: terminal, closeOnDealloc: false)
  process.standardOutput = FileHandle.nullDevice
  try process.run()
  close(terminal)
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 4096)
  while true {
    let count = read(master, &buffer, buffer.count)  // -1 (EIO) once the child has exited
    if count <= 0 { break }
    bytes += buffer[..<count]
  }
  process.waitUntilExit()
  #expect(process.terminationStatus == 0)
  let text = String(decoding: bytes, as: UTF8.self)
  // Every step rewrites the line (plain output would skip step 2); one newline at the end (the
  // terminal turns it into \r\n).
  for step in 1...3 { #expect(text.contains("\r\u{1B}[Kstep \(step)/3  loss "), "\(text)") }
  #expect(text.contains("tokens/s  eta "))
  #expect(text.hasSuffix("\r\n"))
  #expect(bytes.filter { $0 == UInt8(ascii: "\n") }.count == 1, "\(text.debugDescription)")
}
