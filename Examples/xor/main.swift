// The LoRA tutorials' XOR exercise on lorac's library: a frozen random 2-32-32-2 ReLU MLP, a rank-2
// LoRA branch on every linear layer, Adam (learning rate 0.1) for 20 steps on the four XOR points.
//
//   swift run -c release xor

import Foundation
import IR
import Models
import Sessions

do {
  // Trace the MLP, insert LoRA on fc1, fc2 and fc3 (rank 2, scale alpha / rank = 1), freeze the
  // base weights (they keep their random initial values) and differentiate the loss.
  let trainer = try GraphTrainer(
    forward: try MLP.trace(batch: 4),
    pipeline: "lora{rank=2,alpha=2,targets=fc*},freeze,autodiff{loss=loss},dce",
    optimizer: OptimizerSettings(learningRate: 0.1))
  let inputs = [
    "x": HostTensor(shape: [4, 2], floats: MLP.xorInputs),
    "labels": HostTensor(shape: [4, 2], floats: MLP.xorLabels),
  ]
  print("trainable: \(trainer.parameters.joined(separator: ", "))")
  for step in 1...20 {
    let loss = try trainer.step(inputs)
    print("step \(step)  loss \(String(format: "%.3e", loss + 0))")  // + 0: no "-0"
  }
  // The graph's second output is the logits; a point is right when its larger logit is the
  // label's class.
  let logits = try trainer.outputs(inputs)[1].floats()
  let correct = (0..<4).filter { row in
    (logits[2 * row + 1] > logits[2 * row]) == (MLP.xorLabels[2 * row + 1] > 0.5)
  }.count
  print("accuracy \(correct)/4")
} catch {
  FileHandle.standardError.write(Data("error: \(error)\n".utf8))
  exit(1)
}
