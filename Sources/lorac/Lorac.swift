import ArgumentParser
import Foundation
import Sessions

/// The `lorac` command: compile, inspect, train and run LoRA adapters on CPUs.
@main
struct Lorac: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lorac",
    abstract: "An ahead-of-time compiler for LoRA fine-tuning and inference on CPUs.",
    version: "lorac 0.1.0",
    subcommands: [
      Inspect.self, Names.self, Tokenize.self, Logits.self, Generate.self, Train.self, Eval.self,
      Grad.self,
      Bench.self, DumpIR.self,
      CheckIR.self, Interpret.self,
      Merge.self, Export.self, Compile.self, Run.self,
      RLHF.self, DPO.self,
    ]
  )

  /// Parses and runs a command; every error is one `error: ...` line on stderr and exit status 1.
  ///
  /// swift-argument-parser's own reports (a bad flag, a failed `validate()`) would print a usage
  /// block and exit 64; they are folded into the one-line form, with a pointer to the command's
  /// `--help`, so that a script sees one rule: 0 is success, 1 is any error, 130 an interrupt.
  static func main() {
    let command: ParsableCommand
    do {
      command = try parseAsRoot()
    } catch {
      // --help and --version end parsing with a clean exit; print them as the parser would.
      if exitCode(for: error) == .success { exit(withError: error) }
      let line = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
      fail("\(line) (see '\(helpCommand(for: error))')")
    }
    do {
      var command = command
      try command.run()
    } catch let code as ExitCode {
      exit(withError: code)
    } catch let error as SessionError {
      fail(error.message)
    } catch {
      if exitCode(for: error) == .success { exit(withError: error) }
      fail(message(for: error).split(separator: "\n").joined(separator: "; "))
    }
  }

  /// `lorac SUBCOMMAND --help` for the command a parse error is about.
  private static func helpCommand(for error: Error) -> String {
    let full = fullMessage(for: error)
    if let start = full.range(of: "See '"), let end = full[start.upperBound...].range(of: "'") {
      return String(full[start.upperBound..<end.lowerBound])
    }
    return "lorac --help"
  }
}
