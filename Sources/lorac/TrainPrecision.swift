import ArgumentParser
import Models
import Runtime

/// `--precision` of the training commands: what the frozen base weights are computed in.
enum TrainPrecision: String, ExpressibleByArgument, CaseIterable, LosslessStringConvertible {
  /// Weights as stored, decoded exactly; f32 products (OpenBLAS sgemm).
  case f32
  /// Weight matrices rounded to bf16 at load, activations rounded to bf16 for the base products
  /// (avx512_bf16 dot products, f32 sums); adapters, gradients and AdamW stay f32.
  case bf16

  init?(_ description: String) { self.init(rawValue: description) }

  var description: String { rawValue }

  /// The weights the model is traced and loaded with.
  var weights: WeightPrecision { self == .bf16 ? .bf16 : .stored }

  /// The option's help; `fallback` is the default it names, when the option's value is optional.
  static func help(default fallback: TrainPrecision?) -> ArgumentHelp {
    ArgumentHelp(
      stringLiteral:
        "f32 or bf16: bf16 rounds the frozen weight matrices and the activations they multiply to "
        + "bf16 (avx512_bf16 dot products with f32 sums; adapters, gradients and AdamW stay f32). "
        + "On CPUs without avx512_bf16 the bf16 weights are decoded to f32 for the products."
        + (fallback.map { " (default: \($0))" } ?? ""))
  }

  /// A note for stderr when bf16 was asked for and the CPU has no bf16 dot products.
  var fallbackNote: String? {
    self == .bf16 && !Target.host.packsBF16Weights
      ? "note: this CPU has no avx512_bf16; bf16 weights are decoded to f32 for each product\n"
      : nil
  }
}
