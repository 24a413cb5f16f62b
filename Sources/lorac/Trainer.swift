import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// The train step compiled for one batch shape, with AdamW: what `lorac train` loops over.
final class Trainer {
  let model: LlamaModel
  let executable: Executable
  let parameters: [String]
  let sequence: Int
  let batch: Int

  init(
    model: LlamaModel, sequence: Int, batch: Int, rank: Int, alpha: Double, targets: String,
    seed: UInt64, precision: WeightPrecision = .stored
  ) {
    self.model = model
    self.sequence = sequence
    self.batch = batch
    do {
      let pipeline = try Pipeline(
        parsing:
          "lora{rank=\(rank),alpha=\(alpha),targets=\(targets),seed=\(seed)},freeze,fuse,autodiff{loss=loss},fuse{elementwise=true},dce"
      )
      let graph = try pipeline.run(
        try model.trace(batch: batch, sequence: sequence, loss: true, precision: precision))
      executable = try Executable(graph, constants: try model.weights(for: graph))
      parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
    } catch {
      fail("\(error)")
    }
    // bf16 weights: the rounded copies only the packed forms needed are gone by now.
    if precision == .bf16 { Executable.trimHeap() }
  }

  /// Runs optimizer steps `resume.step + 1 ... steps` over `examples` (shuffled, cycled), each
  /// on the mean gradient of `accumulate` micro-batches of `batch` sequences; logs progress to
  /// stderr and one JSON line per step to `folder/metrics.jsonl`, and writes a checkpoint (adapter,
  /// training state, metrics, loss curve) every `saveEvery` steps, at the end, and on SIGINT or
  /// SIGTERM (then exits with status 130).
  func train(
    examples: [TrainingExample], schedule: Schedule, folder: URL, resume: TrainingState?,
    record: CheckpointRecord
  ) {
    let optimizer: AdamW
    do {
      optimizer = try AdamW(
        executable, parameters: parameters, gradientOutputs: Array(1...parameters.count),
        learningRate: schedule.learningRate, weightDecay: schedule.weightDecay,
        maxGradientNorm: schedule.maxGradientNorm)
    } catch {
      fail("\(error)")
    }
    var generator = SplitMix64(seed: record.seed &+ 2)
    var order = Array(examples.indices)
    var cursor = order.count
    var metrics = Metrics()
    var firstStep = 0
    var elapsedBefore = 0.0
    if let state = resume {
      do {
        for name in parameters {
          guard let tensor = state.parameters[name], let first = state.firstMoments[name],
            let second = state.secondMoments[name]
          else { fail("\(folder.path): the training state has no tensor '\(name)'") }
          try executable.set(name, tensor)
          try optimizer.setMoments(of: name, first: first, second: second)
        }
      } catch {
        fail("\(folder.path)/\(TrainingState.fileName): \(error.message)")
      }
      guard state.order.count == examples.count else {
        fail(
          "\(folder.path): the training state orders \(state.order.count) examples, not \(examples.count)"
        )
      }
      optimizer.step = state.optimizerStep
      generator.state = state.generator
      order = state.order
      cursor = state.cursor
      firstStep = state.step
      elapsedBefore = state.elapsed
      metrics = Metrics(reading: folder.appendingPathComponent("metrics.jsonl"), upTo: state.step)
    }
    var progress = TrainingProgress()
    Interruption.install()
    let start = DispatchTime.now().uptimeNanoseconds
    var tokensSeen = 0
    let positions = (0..<(batch * sequence)).map { Int32($0 % sequence) }
    for step in firstStep..<schedule.steps {
      // Linear warm-up, then cosine decay to 10% of the peak.
      let warmup = schedule.warmup
      let progressed = Double(max(0, step - warmup)) / Double(max(1, schedule.steps - warmup))
      let cosine = 0.1 + 0.9 * 0.5 * (1 + cos(Double.pi * progressed))
      optimizer.learningRate =
        schedule.learningRate * (step < warmup ? Double(step + 1) / Double(warmup) : cosine)
      var losses: [Float] = []
      for _ in 0..<schedule.accumulate {
        var rows: [TrainingExample] = []
        for _ in 0..<batch {
          if cursor == order.count {
            order.shuffle(using: &generator)
            cursor = 0
          }
          rows.append(examples[order[cursor]])
          cursor += 1
        }
        let packed = packBatch(rows, sequence: sequence)
        do {
          let outputs = try executable.run(inputs: [
            "tokens": HostTensor(shape: [batch, sequence], ints: packed.tokens),
            "positions": HostTensor(shape: [batch, sequence], ints: positions),
            "targets": HostTensor(shape: [batch, sequence], ints: packed.targets),
            "weights": HostTensor(shape: [batch, sequence], floats: packed.weights),
          ])
          losses.append(outputs[0].floats()[0])
        } catch {
          progress.finishLine()
          fail("\(error)")
        }
        if schedule.accumulate > 1 { optimizer.accumulate() }
        tokensSeen += batch * sequence
      }
      // The mean of the micro-batch losses, the loss whose gradient the update follows.
      let loss =
        losses.count == 1
        ? losses[0] : Float(losses.map(Double.init).reduce(0, +) / Double(losses.count))
      let norm = optimizer.update()
      let session = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      let rate = Double(tokensSeen) / session
      let remaining = session / Double(step + 1 - firstStep) * Double(schedule.steps - step - 1)
      metrics.append(
        step: step + 1, loss: loss,
        line:
          "{\"step\": \(step + 1), \"loss\": \(loss), \"lr\": \(optimizer.learningRate), \"grad_norm\": \(norm), \"tokens_per_s\": \(rate), \"elapsed_s\": \(elapsedBefore + session), \"rss_bytes\": \(residentBytes()), \"peak_rss_bytes\": \(peakResidentBytes())}"
      )
      progress.report(
        step: step + 1, total: schedule.steps, first: step == firstStep, loss: loss,
        learningRate: optimizer.learningRate, gradientNorm: norm, tokensPerSecond: rate,
        remaining: remaining)
      if !loss.isFinite {
        progress.finishLine()
        fail("the loss is \(loss) at step \(step + 1); lower --lr")
      }
      let interrupted = Interruption.requested
      let stopping = interrupted || step + 1 == schedule.stopAfter
      if (step + 1) % schedule.saveEvery == 0 || step + 1 == schedule.steps || stopping {
        var state = TrainingState(
          step: step + 1, optimizerStep: optimizer.step, elapsed: elapsedBefore + session,
          generator: generator.state, order: order, cursor: cursor, threads: Threads.count,
          settings: record.settings, dataFingerprint: record.dataFingerprint,
          modelFingerprint: record.modelFingerprint, parameters: [:], firstMoments: [:],
          secondMoments: [:])
        for name in parameters {
          guard let moments = optimizer.moments(of: name) else { continue }
          state.firstMoments[name] = moments.first
          state.secondMoments[name] = moments.second
        }
        checkpoint(folder: folder, state: state, metrics: metrics, record: record)
      }
      if stopping && step + 1 < schedule.steps {
        progress.message(
          "\(interrupted ? "interrupted" : "stopped"): saved step \(step + 1)/\(schedule.steps) in "
            + "\(folder.path); resume with: \(record.resumeCommand)")
        if interrupted { exit(130) }
        return
      }
    }
    progress.finishLine()
  }

  /// The files a checkpoint writes, in order: the training state last.
  static let checkpointFiles = [
    "metrics.jsonl", "loss.svg", "adapter_model.safetensors", "adapter_config.json",
    TrainingState.fileName,
  ]

  /// Whether this process has cleared the folder's stale temporary files yet.
  private var clearedStaleFiles = false

  /// Writes metrics.jsonl, loss.svg, the PEFT adapter and, last, the training state, each
  /// crash-safely: after a crash the state never claims steps the other files lack.
  ///
  /// The first checkpoint of a process also removes the temporary files (`.NAME.UUID.tmp`) that
  /// an earlier, killed run left mid-write for these names.
  func checkpoint(folder: URL, state: TrainingState, metrics: Metrics, record: CheckpointRecord) {
    var state = state
    if !clearedStaleFiles {
      removeStaleTemporaryFiles(in: folder, for: Trainer.checkpointFiles)
      clearedStaleFiles = true
    }
    do {
      for name in parameters { state.parameters[name] = try executable.value(named: name) }
      try writeAtomically(
        Data(metrics.lines.map { $0 + "\n" }.joined().utf8),
        to: folder.appendingPathComponent("metrics.jsonl"))
      try writeAtomically(
        Data(LossCurve.svg(metrics.losses).utf8), to: folder.appendingPathComponent("loss.svg"))
    } catch {
      fail("\(error)")
    }
    save(to: folder, alpha: record.alpha, rank: record.rank)
    do {
      try state.write(to: folder)
    } catch {
      fail(error.message)
    }
  }

  /// Writes the adapter in PEFT's layout to `folder`.
  func save(to folder: URL, alpha: Double, rank: Int) {
    var tensors: [String: HostTensor] = [:]
    do {
      for name in parameters { tensors[name] = try executable.value(named: name) }
      let peft = try PEFTAdapter.peftTensors(tensors, config: model.config)
      let modules = Set(
        peft.map { name -> String in
          let parts = name.name.split(separator: ".")
          return String(parts[parts.count - 3])
        }
      ).sorted()
      let config = """
        {
          "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
          "bias": "none",
          "fan_in_fan_out": false,
          "inference_mode": true,
          "init_lora_weights": true,
          "lora_alpha": \(alpha),
          "lora_dropout": 0.0,
          "peft_type": "LORA",
          "r": \(rank),
          "rank_pattern": {},
          "alpha_pattern": {},
          "target_modules": [\(modules.map { "\"\($0)\"" }.joined(separator: ", "))],
          "task_type": "CAUSAL_LM",
          "use_rslora": false
        }

        """
      try SafetensorsFile.write(
        peft, metadata: ["format": "pt"],
        to: folder.appendingPathComponent("adapter_model.safetensors"))
      try writeAtomically(
        Data(config.utf8), to: folder.appendingPathComponent("adapter_config.json"))
    } catch {
      fail("\(error)")
    }
  }
}

/// The optimization schedule of a run.
struct Schedule {
  var steps: Int
  var learningRate: Double
  var warmup: Int
  var weightDecay: Double
  var maxGradientNorm: Double
  var accumulate: Int
  var saveEvery: Int
  /// A step to stop after with a checkpoint (the schedule still spans `steps`).
  var stopAfter: Int?
}

/// What a checkpoint records besides tensors: the settings and fingerprints a resume is checked
/// against, and the command that resumes.
struct CheckpointRecord {
  var seed: UInt64
  var rank: Int
  var alpha: Double
  var settings: [String: String]
  var dataFingerprint: String
  var modelFingerprint: String
  var resumeCommand: String
}

/// The lines of metrics.jsonl and the losses they hold.
struct Metrics {
  var lines: [String] = []
  var losses: [(step: Int, loss: Double)] = []

  init() {}

  /// The lines of an earlier run's file up to step `last` (a crash may have left later ones).
  init(reading url: URL, upTo last: Int) {
    guard let text = try? String(contentsOf: url, encoding: .utf8) else { return }
    for line in text.split(separator: "\n") {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let step = object["step"] as? Int, let loss = object["loss"] as? Double, step <= last
      else { continue }
      lines.append(String(line))
      losses.append((step, loss))
    }
  }

  mutating func append(step: Int, loss: Float, line: String) {
    lines.append(line)
    losses.append((step, Double(loss)))
  }
}

/// Rows of token ids, next-token targets and loss weights for `rows` examples, each cut or padded
/// (with token 0 and weight 0) to `sequence` positions.
func packBatch(_ rows: [TrainingExample], sequence: Int) -> (
  tokens: [Int32], targets: [Int32], weights: [Float]
) {
  var tokens: [Int32] = []
  var targets: [Int32] = []
  var weights: [Float] = []
  for example in rows {
    let ids = Array(example.ids.prefix(sequence + 1))
    let padded = ids + [Int32](repeating: 0, count: sequence + 1 - ids.count)
    tokens += padded.prefix(sequence)
    targets += padded.dropFirst()
    let w = Array(example.weights.prefix(ids.count - 1))
    weights += w + [Float](repeating: 0, count: sequence - w.count)
  }
  return (tokens, targets, weights)
}
