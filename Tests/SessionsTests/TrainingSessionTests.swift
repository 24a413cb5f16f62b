import Foundation
import Models
import Sessions
import TestSupport
import Testing

/// A small run: rank 2 on two projections of two layers, 16 generated examples, 6 steps.
private func request(out: URL, steps: Int = 6, resume: Bool = false) throws -> TrainingRequest {
  TrainingRequest(
    model: try modelPath(), data: .mysteryFunction, out: out.path, examples: 16, rank: 2,
    targets: "layers.{0,1}.attn.{q,v}", learningRate: 0.01, warmup: 2, steps: steps, batch: 2,
    sequence: 12, resume: resume)
}

@Test func aCancelledRunSavesItsStepAndResumesToTheUninterruptedRunBitForBit() throws {
  let whole = try temporaryFolder()
  let job = try #require(try TrainingJob.prepare(try request(out: whole)) { _ in })
  var reports: [StepReport] = []
  #expect(try job.run { reports.append($0) } == .finished)
  #expect(reports.map(\.step) == Array(1...6))
  #expect(reports.first?.isFirst == true && reports.dropFirst().allSatisfy { !$0.isFirst })

  // Cancellation asked for during step 3 stops after it, with a checkpoint, as Ctrl-C does.
  let parts = try temporaryFolder()
  let cancellation = Cancellation()
  let first = try #require(try TrainingJob.prepare(try request(out: parts)) { _ in })
  let outcome = try first.run(cancellation: cancellation) { report in
    if report.step == 3 { cancellation.cancel() }
  }
  #expect(outcome == .cancelled(step: 3))
  let saved = try #require(try TrainingState.read(from: parts))
  #expect(saved.step == 3)
  #expect(try trainingMetricFields(parts) == Array(try trainingMetricFields(whole).prefix(3)))

  var notes: [String] = []
  let rest = try #require(
    try TrainingJob.prepare(try request(out: parts, resume: true)) { notes.append($0) })
  #expect(try rest.run() == .finished)
  #expect(notes.isEmpty, "\(notes)")
  #expect(try trainingMetricFields(parts) == trainingMetricFields(whole))
  let adapter = "adapter_model.safetensors"
  #expect(
    try Data(contentsOf: parts.appendingPathComponent(adapter))
      == Data(contentsOf: whole.appendingPathComponent(adapter)))
  // Asking again for the same steps has nothing to do, and says so.
  notes = []
  #expect(
    try TrainingJob.prepare(try request(out: parts, resume: true)) { notes.append($0) } == nil)
  #expect(
    notes == ["\(parts.path): already trained 6 steps; nothing to do (raise --steps to continue)"])
}

@Test func stopAfterEndsTheRunWithACheckpointAndTheScheduleIntact() throws {
  let folder = try temporaryFolder()
  var stopping = try request(out: folder)
  stopping.stopAfter = 2
  let job = try #require(try TrainingJob.prepare(stopping) { _ in })
  #expect(try job.run() == .stopped(step: 2))
  let state = try #require(try TrainingState.read(from: folder))
  #expect(state.step == 2 && state.settings["steps"] == "6")
}

@Test func sessionErrorsCarryTheCommandLineMessages() throws {
  let folder = try temporaryFolder()
  let file = folder.appendingPathComponent("file.txt")
  try Data("x".utf8).write(to: file)
  func message(_ body: () throws -> Void) -> String? {
    do {
      try body()
      return nil
    } catch let error as SessionError {
      return error.message
    } catch {
      return "not a SessionError: \(error)"
    }
  }
  #expect(
    message { _ = try TrainingJob.prepare(try request(out: file)) { _ in } }
      == "\(file.path): is a file; --out names a folder (made if missing)")
  let empty = folder.appendingPathComponent("empty")
  #expect(
    message { _ = try TrainingJob.prepare(try request(out: empty, resume: true)) { _ in } }
      == "\(empty.path): no training state to resume (training_state.safetensors is missing); "
      + "run without --resume to start")
  let missing = folder.appendingPathComponent("missing.gguf").path
  #expect(
    message { _ = try LlamaModel.open(missing) }
      == "\(missing): cannot open: No such file or directory")
  var badData = try request(out: folder.appendingPathComponent("run"))
  badData.data = .jsonl(file.path)
  #expect(
    message { _ = try TrainingJob.prepare(badData) { _ in } }
      == "\(file.path):1: not valid JSON (offset 0: invalid value)")
  let model = try LlamaModel.open(try modelPath())
  #expect(
    message { try model.check([1, 49_152], option: "--ids") }
      == "--ids: token 49152 is out of range 0..<49152")
}

@Test func theTrainingPipelineIsWrittenOnce() {
  // The text lorac train, lorac grad and lorac bench train compiled before it was shared.
  #expect(
    Pipelines.training(rank: 8, alpha: 16, targets: "layers.*.attn.{q,k,v,o}", seed: 0)
      == "lora{rank=8,alpha=16.0,targets=layers.*.attn.{q,k,v,o},seed=0},freeze,fuse,"
      + "autodiff{loss=loss},fuse{elementwise=true},dce")
  #expect(
    Pipelines.training(rank: 4, alpha: 8, targets: "{layers.0.attn.q}", rsLoRA: false)
      == "lora{rank=4,alpha=8.0,rslora=false,targets={layers.0.attn.q}},freeze,fuse,"
      + "autodiff{loss=loss},fuse{elementwise=true},dce")
}

@Test func aTrainingSessionChecksItsScheduleAndTrainsOnce() throws {
  let model = try LlamaModel.open(try modelPath())
  let session = try TrainingSession(
    model: model,
    configuration: TrainingConfiguration(
      rank: 2, targets: "layers.0.attn.q", batch: 1, sequence: 8))
  let example = TrainingExample(
    ids: (1...9).map { Int32($0) }, weights: [Float](repeating: 1, count: 8))
  // The checkpoint folder is made when missing.
  let folder = try temporaryFolder().appendingPathComponent("made/by/checkpoint")
  func train(_ schedule: Schedule, _ examples: [TrainingExample]) throws -> TrainingOutcome {
    try session.train(
      examples: examples, schedule: schedule, folder: folder, resume: nil,
      record: CheckpointRecord())
  }
  #expect(throws: SessionError("--save-every must be at least 1, got 0")) {
    try train(Schedule(steps: 2, learningRate: 1e-3, saveEvery: 0), [example])
  }
  #expect(throws: SessionError("--accumulate must be at least 1, got 0")) {
    try train(Schedule(steps: 2, learningRate: 1e-3, accumulate: 0), [example])
  }
  #expect(throws: SessionError("no training examples")) {
    try train(Schedule(steps: 2, learningRate: 1e-3), [])
  }
  #expect(try train(Schedule(steps: 2, learningRate: 1e-3), [example]) == .finished)
  let config = try String(
    contentsOf: folder.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  #expect(config.contains("\"r\": 2") && config.contains("\"lora_alpha\": 16.0"))
  #expect(
    throws: SessionError(
      "this training session has trained already; make a new one (a resume reads the checkpoint)")
  ) {
    try train(Schedule(steps: 2, learningRate: 1e-3), [example])
  }
}

@Test func aTargetNoPEFTAdapterCanHoldIsRefusedBeforeAnyStep() throws {
  let model = try LlamaModel.open(try modelPath())
  let adaptable = "layers.N.{attn.q,attn.k,attn.v,attn.o,mlp.gate,mlp.up,mlp.down,attn.qkv}"
  #expect(
    throws: SessionError(
      "--targets 'head' selects 'head', which a PEFT adapter cannot hold; adaptable: \(adaptable)")
  ) {
    _ = try TrainingSession(
      model: model,
      configuration: TrainingConfiguration(rank: 2, targets: "head", batch: 1, sequence: 4))
  }
  // What PEFT can hold is accepted, whatever the layer.
  #expect(PEFTAdapter.canAdapt("layers.29.mlp.down") && !PEFTAdapter.canAdapt("layers.0.attn"))
}

@Test func rsLoRAScalesByTheSquareRootOfTheRankAndIsRecordedAndChecked() throws {
  let folder = try temporaryFolder()
  var rs = try request(out: folder, steps: 2)
  rs.rank = 4
  rs.rsLoRA = true
  rs.baseModel = "HuggingFaceTB/SmolLM2-135M-Instruct"
  let job = try #require(try TrainingJob.prepare(rs) { _ in })
  // alpha / sqrt(rank) = 16 / 2, against alpha / rank = 4 without rsLoRA.
  let scales = job.session.executable.graph.body.compactMap { instruction -> Double? in
    if case .loraLinear(let scale, _) = instruction.op { scale } else { nil }
  }
  #expect(!scales.isEmpty && scales.allSatisfy { $0 == 8 })
  #expect(try job.run() == .finished)
  let config = try String(
    contentsOf: folder.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  #expect(config.contains("\"use_rslora\": true"))
  #expect(config.contains("\"base_model_name_or_path\": \"HuggingFaceTB/SmolLM2-135M-Instruct\""))
  let model = try LlamaModel.open(try modelPath())
  #expect(try PEFTAdapter.load(folder.path, for: model).scale == 8)
  // A resume without --rslora trains something else: refused.
  var plain = try request(out: folder, steps: 3, resume: true)
  plain.rank = 4
  plain.rsLoRA = false
  #expect(
    throws: SessionError(
      "\(folder.path): the training state was made with --rslora true, not false; "
        + "resume with the same value or train into a new --out")
  ) { _ = try TrainingJob.prepare(plain) { _ in } }
}
