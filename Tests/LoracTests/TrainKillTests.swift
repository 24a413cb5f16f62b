import Foundation
import IR
import TestSupport
import Testing

/// A tiny `lorac train` run on the mystery_function task that checkpoints after every step, so
/// that a kill at any moment has a good chance to land inside a checkpoint write.
private func killableRun(_ model: String, out: URL) -> [String] {
  [
    "train", model, "--task", "mystery_function", "--examples", "8", "--out", out.path,
    "--steps", "10", "--batch", "1", "--seq", "16", "--rank", "2",
    "--targets", "layers.{0,1}.attn.{q,v}", "--warmup", "2", "--lr", "0.01",
    "--save-every", "1", "--seed", "5", "--threads", "2",
  ]
}

/// Starts `lorac` without waiting for it; its output is discarded.
private func startLorac(_ arguments: [String]) throws -> Process {
  let process = Process()
  process.executableURL = loracExecutable()
  process.arguments = arguments
  process.standardInput = FileHandle.nullDevice
  process.standardOutput = FileHandle.nullDevice
  process.standardError = FileHandle.nullDevice
  try process.run()
  return process
}

/// The names in `folder` (none when it does not exist yet).
private func entries(_ folder: URL) -> [String] {
  (try? FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()) ?? []
}

/// Checks that a file is a whole safetensors file (header in range, valid JSON, every tensor's
/// bytes inside the file, nothing after the last) and returns its string metadata.
private func checkSafetensors(_ url: URL) throws -> [String: String] {
  let data = try Data(contentsOf: url)
  try #require(data.count >= 8, "\(url.lastPathComponent): \(data.count) bytes")
  let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
  try #require(length > 0 && 8 + length <= data.count, "\(url.lastPathComponent): header length")
  let header = try #require(
    try JSONSerialization.jsonObject(with: data[8..<(8 + length)]) as? [String: Any])
  var end = 0
  for (name, value) in header where name != "__metadata__" {
    let offsets = try #require((value as? [String: Any])?["data_offsets"] as? [Int], "\(name)")
    try #require(offsets.count == 2 && 0 <= offsets[0] && offsets[0] <= offsets[1], "\(name)")
    end = max(end, offsets[1])
  }
  #expect(8 + length + end == data.count, "\(url.lastPathComponent): \(data.count) bytes")
  return header["__metadata__"] as? [String: String] ?? [:]
}

/// Checks the checkpoint a killed run left in `folder` and returns the step its training state
/// records (nil when there is none): each file present is whole (metrics.jsonl ends with a
/// newline, every line is JSON), and the adapter and metrics hold at least the state's steps.
private func checkCheckpoint(_ folder: URL) throws -> Int? {
  let names = Set(entries(folder))
  if names.contains("metrics.jsonl") {
    let text = try String(
      contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    #expect(text.hasSuffix("\n"), "metrics.jsonl ends mid-line")
    for line in text.split(separator: "\n") {
      #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line)")
    }
  }
  if names.contains("adapter_model.safetensors") {
    let metadata = try checkSafetensors(folder.appendingPathComponent("adapter_model.safetensors"))
    #expect(metadata["format"] == "pt")
  }
  if names.contains("adapter_config.json") {
    let config = try JSONSerialization.jsonObject(
      with: Data(contentsOf: folder.appendingPathComponent("adapter_config.json")))
    #expect((config as? [String: Any])?["peft_type"] as? String == "LORA")
  }
  guard names.contains("training_state.safetensors") else { return nil }
  // The state is written last: the other files of its checkpoint are all there.
  #expect(
    names.isSuperset(of: [
      "metrics.jsonl", "loss.svg", "adapter_model.safetensors", "adapter_config.json",
    ]))
  let metadata = try checkSafetensors(folder.appendingPathComponent("training_state.safetensors"))
  #expect(metadata["format"] == "lorac-training-state-1")
  let step = try #require(metadata["step"].flatMap { Int($0) })
  #expect(try trainingMetricFields(folder).count >= step)
  return step
}

/// How one trial picks its moment to kill.
private enum KillMoment: CustomStringConvertible {
  /// After this many seconds from the start (the first trial: before the first checkpoint).
  case after(Double)
  /// This many seconds after the n-th temporary file of a checkpoint write is seen: with 0,
  /// inside that write or just after it; with up to a step's time, anywhere in the next step.
  /// Anchoring to the run's progress keeps the kill inside the run however fast the machine is.
  case temporaryFile(Int, then: Double)

  var description: String {
    switch self {
    case .after(let seconds): "after \(String(format: "%.2f", seconds)) s"
    case .temporaryFile(let n, 0): "at temporary file \(n)"
    case .temporaryFile(let n, let seconds):
      "\(String(format: "%.2f", seconds)) s after temporary file \(n)"
    }
  }
}

/// Runs `process` until `moment`, then sends SIGKILL; returns whether it was still running.
private func killProcess(_ process: Process, at moment: KillMoment, folder: URL) -> Bool {
  var deadline: Date? = nil
  var seen = Set<String>()
  switch moment {
  case .after(let seconds): deadline = Date(timeIntervalSinceNow: seconds)
  case .temporaryFile: break
  }
  while process.isRunning {
    if case .temporaryFile(let count, let delay) = moment, deadline == nil {
      seen.formUnion(entries(folder).filter { $0.hasSuffix(".tmp") })
      if seen.count >= count { deadline = Date(timeIntervalSinceNow: delay) }
    }
    if let deadline, Date() >= deadline {
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
      return process.terminationReason == .uncaughtSignal
    }
    usleep(300)
  }
  process.waitUntilExit()
  return false
}

/// SIGKILL at ten seeded moments of a run, then `--resume`: every time the checkpoint on disk is
/// whole, and the resumed run repeats the uninterrupted run's losses and adapter bit for bit.
@Test func killedTrainingResumesToTheUninterruptedLossesBitForBit() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let straight = folder.appendingPathComponent("straight")
  let started = Date()
  let whole = try lorac(killableRun(model, out: straight))
  let duration = Date().timeIntervalSince(started)
  #expect(whole.status == 0, "\(whole.stderr)")
  let expected = try trainingMetricFields(straight)
  #expect(expected.count == 10)
  let adapter = try Data(contentsOf: straight.appendingPathComponent("adapter_model.safetensors"))
  // Five files per checkpoint, one checkpoint per step; a step's share of the run.
  let temporaryFiles = 5 * expected.count
  let stepSeconds = duration / Double(expected.count)

  var generator = SplitMix64(seed: 2026)
  var report: [String] = []
  var resumedMidRun = 0
  var leftMidWrite = 0
  for trial in 0..<10 {
    // A temporary file of any checkpoint but the last, plus up to a step (a kill after the
    // run's end would test nothing), or of any checkpoint with no delay.
    let file = 1 + Int(generator.next() % UInt64(temporaryFiles - 1))
    let early = 1 + Int(generator.next() % UInt64(temporaryFiles - 5))
    let moment: KillMoment =
      switch trial {
      case 0: .after(0.3 * generator.nextUnit())
      case 1...4: .temporaryFile(file, then: 0)
      default: .temporaryFile(early, then: stepSeconds * generator.nextUnit())
      }
    let out = folder.appendingPathComponent("trial\(trial)")
    let run = killableRun(model, out: out)
    let killed = killProcess(try startLorac(run), at: moment, folder: out)
    let leftovers = entries(out).filter { $0.hasSuffix(".tmp") }
    if !leftovers.isEmpty { leftMidWrite += 1 }
    let step = try checkCheckpoint(out)
    var line = "trial \(trial): kill \(moment): "
    if !killed {
      line += "finished before the kill"
    } else if let step {
      // The state's step may be the last: then the resume has nothing to do.
      let resumed = try lorac(run + ["--resume"])
      #expect(resumed.status == 0, "trial \(trial): \(resumed.stderr)")
      if step < expected.count {
        resumedMidRun += 1
        #expect(
          resumed.stderr.contains("step \(step + 1)/\(expected.count)"), "\(resumed.stderr)")
      }
      line += "resumed from step \(step)"
    } else {
      // Killed before the first checkpoint: --resume refuses clearly, a plain run starts clean.
      let resumed = try lorac(run + ["--resume"])
      #expect(resumed.status == 1)
      #expect(
        resumed.stderr.hasPrefix(
          "error: \(out.path): no training state to resume (training_state.safetensors is "
            + "missing); run without --resume to start\n"), "\(resumed.stderr)")
      let fresh = try lorac(run)
      #expect(fresh.status == 0, "trial \(trial): \(fresh.stderr)")
      line += "no checkpoint yet, started over"
    }
    if !leftovers.isEmpty { line += "; left \(leftovers.joined(separator: ", "))" }
    report.append(line)
    #expect(try trainingMetricFields(out) == expected, "trial \(trial): \(line)")
    #expect(
      try Data(contentsOf: out.appendingPathComponent("adapter_model.safetensors")) == adapter,
      "trial \(trial)")
    // The resumed run's first checkpoint removed what the killed writer left behind.
    #expect(
      entries(out) == [
        "adapter_config.json", "adapter_model.safetensors", "loss.svg", "metrics.jsonl",
        "training_state.safetensors",
      ], "trial \(trial)")
    try? FileManager.default.removeItem(at: out)
  }
  print(
    "kill test (uninterrupted run \(String(format: "%.1f", duration)) s):\n  "
      + report.joined(separator: "\n  "))
  #expect(resumedMidRun >= 3, "\(report)")
  #expect(leftMidWrite >= 1, "no kill landed inside a checkpoint write: \(report)")
}
