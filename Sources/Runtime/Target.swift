import CKernels

/// The CPU an executable is planned for: an ISA tier, a thread count and the decoding and
/// training precision choices that select kernels.
///
/// A value, never process-wide state: two executables with different targets can live in one
/// process, and every tier the host runs can be planned, printed and measured on one machine.
/// `Target.host` is the widest tier this CPU runs, with f32 activations and bf16 products on.
public struct Target: Hashable, Sendable, CustomStringConvertible {
  /// ISA tiers of the hand-written kernels, each including the ones before it.
  public enum ISA: String, CaseIterable, Comparable, Sendable {
    /// Plain C (decode a block, dot it), OpenBLAS for GEMM.
    case portable
    /// AVX2 with FMA and F16C: q8_0 and q4_1 decoding products (q4_1 weights interleaved by 16
    /// rows, int8-digit activations through `vpmaddubsw`).
    case avx2
    /// AVX-512 F/BW/VL/DQ: every storage type's decoding product and the f32 row kernel.
    case avx512
    /// AVX-512 VNNI: q4_1 and q8_0 weights interleaved by 16 rows, int8-digit activations.
    case avx512VNNI = "avx512-vnni"
    /// AVX-512 BF16: products with more than 8 rows on packed bf16 weights (`vdpbf16ps`).
    case avx512BF16 = "avx512-bf16"

    public static func < (lhs: ISA, rhs: ISA) -> Bool {
      allCases.firstIndex(of: lhs) ?? 0 < allCases.firstIndex(of: rhs) ?? 0
    }

    /// The `lc_cpu_features` bits a tier needs, with their names for error messages.
    fileprivate var requirements: [(bit: Int32, name: String)] {
      switch self {
      case .portable: []
      case .avx2: [(1, "avx2+fma")]
      case .avx512: ISA.avx2.requirements + [(2, "avx512f+avx512bw")]
      case .avx512VNNI: ISA.avx512.requirements + [(4, "avx512_vnni")]
      case .avx512BF16: ISA.avx512VNNI.requirements + [(8, "avx512_bf16")]
      }
    }

    /// The features a CPU with `features` (`lc_cpu_features` bits) lacks for the tier (empty: it
    /// runs it).
    func missing(features: Int32) -> [String] {
      requirements.filter { features & $0.bit == 0 }.map(\.name)
    }

    /// The widest tier a CPU with `features` runs.
    static func widest(features: Int32) -> ISA {
      allCases.last { $0.missing(features: features).isEmpty } ?? .portable
    }

    /// The widest tier this CPU runs.
    public static var host: ISA { widest(features: lc_cpu_features()) }
  }

  /// The widest kernels to use.
  public var isa: ISA
  /// Threads to run with; nil runs with the count in force (`Threads.set`, `--threads`).
  ///
  /// OpenMP's thread count is process-wide: an executable with a count applies it (`Threads.set`)
  /// before each run when another is in force.
  public var threads: Int?
  /// Whether decoding products on q4_1/q8_0 weights round the activations to int8.
  ///
  /// Per block of 32, llama.cpp's rounding: about 1.5-2x faster, logits move by up to ~2 on
  /// SmolLM2. Needs `avx2` (the interleaved products; the stored layout's int8 kernels need
  /// `avx512-vnni`); ignored below it.
  public var int8Activations: Bool
  /// Whether products of more than 8 rows on bf16 constants run on packed bf16 panels.
  ///
  /// Needs `avx512-bf16`; off, such weights are decoded to f32 for sgemm.
  public var bf16Products: Bool
  /// The threads per-thread scratch (attention's blocks) is planned for.
  ///
  /// Every core, or more when `threads` (or the count in force) asks for more; resolved when the
  /// target is made, so that a plan is a function of the graph and the target alone.
  public var threadSlots: Int

  /// A target; `isa` defaults to the widest tier this CPU runs.
  public init(
    isa: ISA = .host, threads: Int? = nil, int8Activations: Bool = false, bf16Products: Bool = true,
    threadSlots: Int? = nil
  ) {
    self.isa = isa
    self.threads = threads
    self.int8Activations = int8Activations
    self.bf16Products = bf16Products
    self.threadSlots = threadSlots ?? max(Threads.cores, threads ?? Threads.count)
  }

  /// The widest tier this CPU runs, f32 activations, bf16 products, the thread count in force.
  public static var host: Target { Target() }

  /// Whether int8 activations take effect (the tier has AVX2).
  public var roundsActivationsToInt8: Bool { int8Activations && isa >= .avx2 }

  /// Whether bf16 products run on packed panels (the tier has avx512_bf16).
  public var packsBF16Weights: Bool { bf16Products && isa >= .avx512BF16 }

  /// Throws unless this CPU runs the target's ISA tier.
  /// - Throws: `RuntimeError` naming what the CPU lacks, e.g. `--isa avx512: this CPU lacks
  ///   avx512f+avx512bw (it runs avx2)`.
  public func checkHost() throws(RuntimeError) { try check(features: lc_cpu_features()) }

  /// `checkHost()` for a CPU with `features` (`lc_cpu_features` bits).
  public func check(features: Int32) throws(RuntimeError) {
    let missing = isa.missing(features: features)
    guard missing.isEmpty else {
      let widest = ISA.widest(features: features).rawValue
      throw RuntimeError(
        message:
          "--isa \(isa.rawValue): this CPU lacks \(missing.joined(separator: ", ")) (it runs \(widest))"
      )
    }
  }

  /// `isa=avx512-bf16 threads=in-force int8-activations=off bf16-products=on`.
  public var description: String {
    "isa=\(isa.rawValue) threads=\(threads.map(String.init) ?? "in-force") "
      + "int8-activations=\(int8Activations ? "on" : "off") "
      + "bf16-products=\(bf16Products ? "on" : "off")"
  }

  /// Reads `description`'s text back.
  public init?(_ description: String) {
    var fields: [String: String] = [:]
    for word in description.split(separator: " ") {
      let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
      guard parts.count == 2 else { return nil }
      fields[parts[0]] = parts[1]
    }
    guard let isaText = fields["isa"], let isa = ISA(rawValue: isaText),
      let threadsText = fields["threads"], let int8 = fields["int8-activations"],
      let bf16 = fields["bf16-products"], ["on", "off"].contains(int8),
      ["on", "off"].contains(bf16)
    else { return nil }
    let threads: Int?
    if threadsText == "in-force" {
      threads = nil
    } else if let count = Int(threadsText), count > 0 {
      threads = count
    } else {
      return nil
    }
    self.init(isa: isa, threads: threads, int8Activations: int8 == "on", bf16Products: bf16 == "on")
  }
}
