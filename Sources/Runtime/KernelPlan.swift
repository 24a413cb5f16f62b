import CKernels
import IR

/// Which kernel runs each instruction of a graph on a target: the one place that decides.
///
/// A pure function of (graph, target) (and whether the executable shares packed forms with
/// others): per instruction the kernel variant, the form of the weight it reads, the ISA path,
/// the scratch bytes and whether it runs once, at load. `Executable` binds addresses to a plan
/// and builds its steps from it; the arena plan takes its scratch from it.
///
/// Printed one line per instruction (`description`), aligned at fixed columns:
/// ```
/// # target isa=avx512-bf16 threads=in-force int8-activations=off bf16-products=on shared-forms=no
///     0  matmul          interleaved3     interleaved   avx512-vnni    65536
///     4  matmul          bf16_packed      bf16_panels_t avx512-bf16     9280
///     9  iota            op               -             -                  0  once
/// ```
public struct KernelPlan: Hashable, Sendable, CustomStringConvertible {
  /// The kernel variant of an instruction.
  public enum Kernel: String, CaseIterable, Sendable {
    /// The op's one kernel (elementwise, reductions, attention, ...).
    case op
    /// No kernel: the result aliases its operand (`reshape`).
    case alias
    /// f32 product through OpenBLAS (`lc_matmul_f32`: sgemm, or sgemv at one row).
    case sgemm
    /// f32 weight [N, K] times at most 8 rows: the hand-written row kernel of the ISA path.
    case f32Rows = "f32_rows"
    /// A storage-typed weight times at most 8 rows, read as stored (`lc_matmul_quantized_path`).
    case quantizedRows = "quant_rows"
    /// A storage-typed weight decoded 2,048 rows at a time into scratch, then sgemm.
    case dequantizeSgemm = "dequant_sgemm"
    /// The same for a weight used as stored (`x W`, an input gradient).
    case dequantizeSgemmNT = "dequant_sgemm_nt"
    /// An interleaved q4_1/q8_0 weight, activations as three int8 digits (f32-accurate).
    case interleaved3
    /// An interleaved q4_1/q8_0 weight, activations rounded to int8 (llama.cpp's rounding).
    case interleaved1
    /// A packed bf16 weight, activations rounded to bf16 (`lc_matmul_bf16_packed`).
    case bf16Packed = "bf16_packed"
  }

  /// The form in which an instruction reads its weight (operand 1 of a product).
  public enum WeightForm: String, CaseIterable, Sendable {
    /// Not a product on a weight.
    case none = "-"
    /// The bytes as bound (a constant in place, a parameter, or a computed value).
    case stored
    /// Packed bf16 panels for `x W^T` (weight [N, K]).
    case bf16PanelsTransposed = "bf16_panels_t"
    /// Packed bf16 panels for `x W` (weight [K, N]).
    case bf16Panels = "bf16_panels"
    /// q4_1/q8_0 interleaved by 16 rows.
    case interleaved
    /// A copy of the bytes on transparent huge pages.
    case hugePages = "huge_pages"

    /// The packed form the executable makes at load for this weight form, if any.
    var packedKind: PackedForms.Kind? {
      switch self {
      case .none, .stored: nil
      case .bf16PanelsTransposed: .bf16(transposeB: true)
      case .bf16Panels: .bf16(transposeB: false)
      case .interleaved: .interleaved
      case .hugePages: .hugePages
      }
    }
  }

  /// What runs one instruction.
  public struct Entry: Hashable, Sendable {
    public var kernel: Kernel
    public var weight: WeightForm
    /// The ISA path of an ISA-specific kernel (nil: the same code on every tier).
    public var isa: Target.ISA?
    /// Bytes of arena scratch the kernel needs while it runs.
    public var scratchBytes: Int
    /// Whether it runs once, at load: its operands are all constants or literals.
    public var runsOnce: Bool

    /// The `lc_quant_path` code the kernel is called with (portable when it has no ISA path).
    var pathCode: Int32 { isa?.quantPathCode ?? Int32(LC_QUANT_PORTABLE.rawValue) }

    public init(
      kernel: Kernel, weight: WeightForm = .none, isa: Target.ISA? = nil, scratchBytes: Int = 0,
      runsOnce: Bool = false
    ) {
      self.kernel = kernel
      self.weight = weight
      self.isa = isa
      self.scratchBytes = scratchBytes
      self.runsOnce = runsOnce
    }
  }

  public var target: Target
  /// Whether the executable shares packed forms with others (a decoding session): its f32
  /// constants of 256 KB or more are read from huge-page copies by products of every size.
  public var sharedForms: Bool
  /// One entry per instruction, in the graph's order.
  public var entries: [Entry]

  /// Rows of a quantized weight decoded at a time before a GEMM.
  static let dequantizeChunk = 2048

  /// Plans `graph` for `target`.
  public init(_ graph: Graph, target: Target, sharedForms: Bool = false) {
    self.target = target
    self.sharedForms = sharedForms
    let constants = Set(graph.declarations.filter { $0.kind == .constant }.map(\.value))
    var known = constants
    var entries: [Entry] = []
    entries.reserveCapacity(graph.body.count)
    for instruction in graph.body {
      var entry = KernelPlan.choose(instruction, graph, target, constants, sharedForms)
      if instruction.operands.allSatisfy({ $0.value.map(known.contains) ?? true }) {
        entry.runsOnce = true
        known.formUnion(instruction.results)
      }
      entries.append(entry)
    }
    self.entries = entries
  }

  /// Plans from given parts (a parsed plan).
  public init(target: Target, sharedForms: Bool, entries: [Entry]) {
    self.target = target
    self.sharedForms = sharedForms
    self.entries = entries
  }

  /// The instructions that run once, at load.
  public var runsOnce: Set<Int> {
    Set(entries.indices.filter { entries[$0].runsOnce })
  }

  // MARK: - Choices

  /// The widest `lc_quant_path` with a kernel for `dtype` within the target's tier (f32
  /// activations unless int8 activations are on).
  public static func quantizedPath(_ dtype: DType, _ target: Target) -> Target.ISA {
    let code = dtype.kernelCode
    let top: Target.ISA =
      target.isa >= .avx512VNNI
      ? (target.roundsActivationsToInt8 ? .avx512VNNI : .avx512) : target.isa
    for isa in Target.ISA.allCases.reversed() where isa <= top && isa > .portable {
      if lc_quant_has_kernel(isa.quantPathCode, code) != 0 { return isa }
    }
    return .portable
  }

  /// The path of the products of a few rows by a q4_1 or q8_0 constant's interleaved form within
  /// the target's tier, nil where the stored layout's kernels serve: `avx512-vnni` for both;
  /// below it `avx2` for q4_1, and for q8_0 only with int8 activations (three digits of
  /// `vpmaddubsw` work per q8_0 chunk cost about what the stored layout's f32 kernel does).
  public static func interleavedPath(_ dtype: DType, _ target: Target) -> Target.ISA? {
    guard dtype == .q4_1 || dtype == .q8_0, target.isa >= .avx2 else { return nil }
    if target.isa >= .avx512VNNI { return .avx512VNNI }
    return dtype == .q4_1 || target.roundsActivationsToInt8 ? .avx2 : nil
  }

  private static func choose(
    _ instruction: Instruction, _ graph: Graph, _ target: Target, _ constants: Set<Value>,
    _ sharedForms: Bool
  ) -> Entry {
    switch instruction.op {
    case .reshape:
      return Entry(kernel: .alias)
    case .matmul(let transposeA, let transposeB):
      return product(instruction, graph, target, constants, sharedForms, transposeA, transposeB)
    case .loraLinear(_, let transposeW):
      return product(instruction, graph, target, constants, sharedForms, false, transposeW)
    case .attention, .attentionGrad:
      // Two [S, T] blocks for each thread that may run (and a decoding step's chunk partials).
      var entry = Entry(kernel: .op)
      if let q = instruction.operands[0].value, let k = instruction.operands[1].value {
        let (qs, ks) = (graph.type(of: q).shape.map(Int64.init), graph.type(of: k).shape)
        // One query row (a decoding step) of width 64, at most 4 query heads per key/value
        // head: an AVX-512 loop over each chunk of keys.
        if case .attention = instruction.op, target.isa >= .avx512, qs[2] == 1, qs[3] == 64,
          ks[1] > 0, qs[1] / Int64(ks[1]) <= 4
        {
          entry.isa = .avx512
        }
        let floats = lc_attention_scratch_floats(
          qs[0], qs[1], qs[2], Int64(ks[2]), qs[3], Int64(target.threadSlots))
        entry.scratchBytes = Int(floats) * 4
      }
      return entry
    default:
      return Entry(kernel: .op)
    }
  }

  /// A `matmul` or the base product of a `lora_linear`: `x op(W)` with W operand 1.
  private static func product(
    _ instruction: Instruction, _ graph: Graph, _ target: Target, _ constants: Set<Value>,
    _ sharedForms: Bool, _ transposeA: Bool, _ transposeB: Bool
  ) -> Entry {
    guard let x = instruction.operands[0].value, let w = instruction.operands[1].value else {
      return Entry(kernel: .sgemm)
    }
    let (lhs, rhs) = (graph.type(of: x), graph.type(of: w))
    let isConstant = constants.contains(w)
    let k = transposeA ? lhs.shape[max(lhs.rank - 2, 0)] : lhs.shape[max(lhs.rank - 1, 0)]
    // Batch dimensions of the left operand fold into the rows.
    let rows = k > 0 ? lhs.elementCount / k : 0
    // Products of more than 8 rows by a bf16 constant: packed panels (fewer rows read the
    // weight once with the decoding kernels).
    if target.packsBF16Weights, !transposeA, isConstant, rhs.dtype == .bf16, rhs.rank == 2,
      rows > 8
    {
      return Entry(
        kernel: .bf16Packed, weight: transposeB ? .bf16PanelsTransposed : .bf16Panels,
        isa: .avx512BF16,
        scratchBytes: Int(lc_bf16_scratch_bytes(Int64(rows), Int64(rhs.shape[transposeB ? 1 : 0])))
      )
    }
    if !rhs.dtype.isCompute {
      var scratch = 0
      if let width = rhs.shape.last, rhs.rank >= 2 {
        scratch = min(dequantizeChunk, rhs.shape[rhs.rank - 2]) * width * 4
      }
      if !transposeB {
        return Entry(kernel: .dequantizeSgemmNT, weight: .stored, scratchBytes: scratch)
      }
      if rows > 8 {
        return Entry(kernel: .dequantizeSgemm, weight: .stored, scratchBytes: scratch)
      }
      // A few rows against a q4_1 or q8_0 constant: its interleaved form where that is faster.
      if isConstant, let isa = interleavedPath(rhs.dtype, target) {
        return Entry(
          kernel: target.roundsActivationsToInt8 ? .interleaved1 : .interleaved3,
          weight: .interleaved, isa: isa, scratchBytes: scratch)
      }
      return Entry(
        kernel: .quantizedRows, weight: .stored, isa: quantizedPath(rhs.dtype, target),
        scratchBytes: scratch)
    }
    // f32 products through OpenBLAS, or the row kernel for a few rows by W [N, K]. A
    // lora_linear's base product folds its batch dimensions into the rows.
    var resultRows = rows
    var batches = 1
    if case .matmul = instruction.op {
      let shape = graph.type(of: instruction.results[0]).shape
      resultRows = shape.count >= 2 ? shape[shape.count - 2] : 1
      batches = shape.dropLast(2).reduce(1, *)
    }
    // An f32 constant (>= 256 KB) multiplied by a few rows (decoding) streams from DRAM each
    // call: read it from a copy on huge pages. With a shared store (a decoding session) products
    // of every size read the copy, so the file's pages, paged out once copied, are not read back
    // in by the prefill.
    var weight = WeightForm.stored
    if isConstant, batches == 1, resultRows <= 8 || sharedForms, rhs.byteCount >= 256 << 10 {
      weight = .hugePages
    }
    let path = quantizedPath(.f32, target)
    if resultRows <= 8, !transposeA, transposeB, path > .portable {
      return Entry(kernel: .f32Rows, weight: weight, isa: path)
    }
    return Entry(kernel: .sgemm, weight: weight)
  }

  // MARK: - Text

  /// The text of one entry (no index or op): `quant_rows  stored  avx512  0  once`, aligned.
  public static func format(_ entry: Entry) -> String {
    func pad(_ text: String, _ width: Int) -> String {
      text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
    let scratch = String(entry.scratchBytes)
    let line =
      pad(entry.kernel.rawValue, 17) + pad(entry.weight.rawValue, 14)
      + pad(entry.isa?.rawValue ?? "-", 12)
      + String(repeating: " ", count: max(1, 8 - scratch.count)) + scratch
      + (entry.runsOnce ? "  once" : "")
    return line
  }

  /// The header line: `# target <target> shared-forms=yes|no`.
  public var header: String {
    "# target \(target) shared-forms=\(sharedForms ? "yes" : "no")"
  }

  /// The plan, one line per instruction after the header: index, op, kernel, weight form, ISA
  /// path, scratch bytes, `once` for what runs at load.
  public func text(for graph: Graph) -> String {
    var lines = [header]
    for (index, entry) in entries.enumerated() {
      let mnemonic = index < graph.body.count ? graph.body[index].op.mnemonic : "?"
      let number = String(index)
      let op =
        mnemonic.count >= 16
        ? mnemonic + " " : mnemonic.padding(toLength: 16, withPad: " ", startingAt: 0)
      lines.append(
        String(repeating: " ", count: max(0, 5 - number.count)) + number + "  " + op
          + KernelPlan.format(entry))
    }
    return lines.joined(separator: "\n") + "\n"
  }

  /// The IR text of `graph` (which the plan was made for) with each instruction's entry beside it
  /// as a comment (the parser skips it), after a `# target` comment line:
  /// `%3 = matmul %2, @w {transpose_b} : f32[1,576]   # quant_rows  stored  avx512  0`.
  public func annotatedText(for graph: Graph) -> String {
    var lines = Printer().print(graph).split(separator: "\n", omittingEmptySubsequences: false)
      .map(String.init)
    let first = 1 + graph.declarations.count
    for (index, entry) in entries.enumerated() where first + index < lines.count {
      let line = lines[first + index]
      let gap = max(2, KernelPlan.commentColumn - line.count)
      lines[first + index] =
        line + String(repeating: " ", count: gap) + "# " + KernelPlan.format(entry)
    }
    return header + "\n" + lines.joined(separator: "\n")
  }

  /// The column at which `annotatedText` starts each entry's comment, unless the line is longer.
  static let commentColumn = 90

  /// The plan without op names (`text(for:)` has them).
  public var description: String {
    ([header]
      + entries.enumerated().map { index, entry in
        let number = String(index)
        return String(repeating: " ", count: max(0, 5 - number.count)) + number + "  - "
          + KernelPlan.format(entry)
      }).joined(separator: "\n") + "\n"
  }

  /// Reads `text(for:)` or `description` back.
  /// - Throws: `RuntimeError` naming the line that does not read.
  public init(parsing text: String) throws(RuntimeError) {
    var target: Target?
    var shared = false
    var entries: [Entry] = []
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
    {
      func fail(_ detail: String) -> RuntimeError {
        RuntimeError(message: "plan line \(number + 1): \(detail): '\(line)'")
      }
      let trimmed = line.trimmingPrefix(while: { $0 == " " })
      if trimmed.isEmpty { continue }
      if trimmed.hasPrefix("# target ") {
        var words = trimmed.dropFirst("# target ".count).split(separator: " ").map(String.init)
        guard let last = words.popLast(), last.hasPrefix("shared-forms="),
          let parsed = Target(words.joined(separator: " "))
        else { throw fail("not a target") }
        target = parsed
        shared = last == "shared-forms=yes"
        continue
      }
      let words = trimmed.split(separator: " ").map(String.init)
      guard words.count == 6 || words.count == 7, Int(words[0]) == entries.count,
        let kernel = Kernel(rawValue: words[2]), let weight = WeightForm(rawValue: words[3]),
        words[4] == "-" || Target.ISA(rawValue: words[4]) != nil, let scratch = Int(words[5]),
        words.count == 6 || words[6] == "once"
      else { throw fail("not a plan entry") }
      entries.append(
        Entry(
          kernel: kernel, weight: weight, isa: Target.ISA(rawValue: words[4]),
          scratchBytes: scratch, runsOnce: words.count == 7))
    }
    guard let target else {
      throw RuntimeError(message: "plan: no '# target' line")
    }
    self.init(target: target, sharedForms: shared, entries: entries)
  }
}

extension Target.ISA {
  /// The `lc_quant_path` code of the tier's decoding products (bf16 has none of its own: VNNI),
  /// for calling the kernels directly (tests, benchmarks).
  public var quantPathCode: Int32 {
    switch self {
    case .portable: Int32(LC_QUANT_PORTABLE.rawValue)
    case .avx2: Int32(LC_QUANT_AVX2.rawValue)
    case .avx512: Int32(LC_QUANT_AVX512.rawValue)
    case .avx512VNNI, .avx512BF16: Int32(LC_QUANT_VNNI.rawValue)
    }
  }
}
