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
    seed: UInt64
  ) {
    self.model = model
    self.sequence = sequence
    self.batch = batch
    do {
      let pipeline = try Pipeline(
        parsing:
          "lora{rank=\(rank),alpha=\(alpha),targets=\(targets),seed=\(seed)},freeze,fuse,autodiff{loss=loss},dce"
      )
      let graph = try pipeline.run(try model.trace(batch: batch, sequence: sequence, loss: true))
      executable = try Executable(graph, constants: try model.weights(for: graph))
      parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
    } catch {
      fail("\(error)")
    }
  }

  /// Runs `steps` AdamW steps over `examples` (shuffled, cycled), logging progress to stderr and
  /// one JSON line per step to `metrics`.
  func train(
    examples: [TrainingExample], steps: Int, learningRate: Double, warmup: Int, weightDecay: Double,
    maxGradientNorm: Double, seed: UInt64, metrics: URL
  ) {
    let optimizer: AdamW
    do {
      optimizer = try AdamW(
        executable, parameters: parameters, gradientOutputs: Array(1...parameters.count),
        learningRate: learningRate, weightDecay: weightDecay, maxGradientNorm: maxGradientNorm)
    } catch {
      fail("\(error)")
    }
    var generator = SplitMix64(seed: seed &+ 2)
    var order = Array(examples.indices)
    var cursor = order.count
    var lines: [String] = []
    let start = DispatchTime.now().uptimeNanoseconds
    var tokensSeen = 0
    for step in 0..<steps {
      var tokens: [Int32] = []
      var targets: [Int32] = []
      var weights: [Float] = []
      for _ in 0..<batch {
        if cursor == order.count {
          order.shuffle(using: &generator)
          cursor = 0
        }
        let example = examples[order[cursor]]
        cursor += 1
        let pad = Int32(0)
        let ids = Array(example.ids.prefix(sequence + 1))
        let padded = ids + [Int32](repeating: pad, count: sequence + 1 - ids.count)
        tokens += padded.prefix(sequence)
        targets += padded.dropFirst()
        let w = Array(example.weights.prefix(ids.count - 1))
        weights += w + [Float](repeating: 0, count: sequence - w.count)
      }
      tokensSeen += batch * sequence
      // Linear warm-up, then cosine decay to 10% of the peak.
      let progress = Double(max(0, step - warmup)) / Double(max(1, steps - warmup))
      let cosine = 0.1 + 0.9 * 0.5 * (1 + cos(Double.pi * progress))
      optimizer.learningRate =
        learningRate * (step < warmup ? Double(step + 1) / Double(warmup) : cosine)
      let loss: Float
      do {
        let outputs = try executable.run(inputs: [
          "tokens": HostTensor(shape: [batch, sequence], ints: tokens),
          "positions": HostTensor(
            shape: [batch, sequence], ints: (0..<(batch * sequence)).map { Int32($0 % sequence) }),
          "targets": HostTensor(shape: [batch, sequence], ints: targets),
          "weights": HostTensor(shape: [batch, sequence], floats: weights),
        ])
        loss = outputs[0].floats()[0]
      } catch {
        fail("\(error)")
      }
      let norm = optimizer.update()
      let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      let rate = Double(tokensSeen) / elapsed
      let eta = elapsed / Double(step + 1) * Double(steps - step - 1)
      lines.append(
        "{\"step\": \(step + 1), \"loss\": \(loss), \"lr\": \(optimizer.learningRate), \"grad_norm\": \(norm), \"tokens_per_s\": \(rate), \"elapsed_s\": \(elapsed)}"
      )
      if step == 0 || (step + 1) % 5 == 0 || step == steps - 1 {
        let message = String(
          format: "step %d/%d  loss %.4f  lr %.2e  grad-norm %.3f  %.0f tokens/s  eta %.0fs\n",
          step + 1, steps,
          loss, optimizer.learningRate, norm, rate, eta)
        FileHandle.standardError.write(Data(message.utf8))
      }
      if !loss.isFinite { fail("the loss is \(loss) at step \(step + 1); lower --lr") }
    }
    do {
      try writeAtomically(Data((lines.joined(separator: "\n") + "\n").utf8), to: metrics)
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
