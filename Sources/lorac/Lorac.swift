import ArgumentParser

/// The `lorac` command: compile, inspect, train and run LoRA adapters on CPUs.
@main
struct Lorac: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lorac",
    abstract: "An ahead-of-time compiler for LoRA fine-tuning and inference on CPUs.",
    version: "lorac 0.1.0",
    subcommands: [
      Inspect.self, Tokenize.self, Logits.self, Generate.self, Train.self, Eval.self, Grad.self,
      Bench.self, DumpIR.self,
      CheckIR.self, Interpret.self,
      Merge.self, Export.self, Compile.self, Run.self,
    ]
  )
}
