import CKernels
import Foundation
import IR
import Runtime
import TestSupport
import Testing

/// A graph with one product of each kind a plan tells apart: a q4_1 weight times 1 row (decoding),
/// a q8_0 weight times 3 rows, the same q4_1 weight used as stored (`x W`, 16 rows), a q4_k weight
/// times 1 row, a bf16 weight times 16 rows, a 256 KB f32 weight times 1 row, f32 weights times 2
/// and 16 rows, a mask made from constants only (runs once), a reshape (an alias).
private func planGraph() throws -> Graph {
  let b = GraphBuilder(name: "plan")
  let (k, n) = (256, 64)
  let token = try b.input(name: "token", shape: [1, k])
  let rows = try b.input(name: "rows", shape: [3, k])
  let many = try b.input(name: "many", shape: [16, k])
  let back = try b.input(name: "back", shape: [16, n])
  let q4 = try b.constant(name: "q4", shape: [n, k], dtype: .q4_1)
  let q8 = try b.constant(name: "q8", shape: [n, k], dtype: .q8_0)
  let qk = try b.constant(name: "qk", shape: [n, k], dtype: .q4_k)
  let bf = try b.constant(name: "bf", shape: [n, k], dtype: .bf16)
  let big = try b.constant(name: "big", shape: [256, k])
  let small = try b.constant(name: "small", shape: [n, k])
  return try b.finish(outputs: [
    try matmul(token, q4, transposeB: true), try matmul(rows, q8, transposeB: true),
    try matmul(back, q4), try matmul(token, qk, transposeB: true),
    try matmul(many, bf, transposeB: true), try matmul(token, big, transposeB: true),
    try matmul(rows.reshaped([1, 3, k]), small, transposeB: true),
    try matmul(many, small, transposeB: true),
    try b.iota(shape: [4, 4], axis: 1).compare(.le, b.iota(shape: [4, 4], axis: 0)),
  ])
}

/// Random bytes of the right size for each constant of `graph` (scales kept finite).
private func planConstants(_ graph: Graph) throws -> [String: HostTensor] {
  var result: [String: HostTensor] = [:]
  for (offset, declaration) in graph.declarations.enumerated() where declaration.kind == .constant {
    result[declaration.name] = try randomStorage(
      graph.type(of: declaration.value), seed: UInt64(offset + 40))
  }
  return result
}

extension RuntimeSuite {
  /// The plan of a small graph on every tier: bf16 panels only with avx512-bf16, interleaved
  /// q4_1/q8_0 from avx512-vnni, interleaved q4_1 (and q8_0 with int8 activations) on the AVX2
  /// kernels from avx2, ISA paths capped by the tier, f32 row kernels from avx512.
  @Test func planOfEachTarget() throws {
    let graph = try planGraph()
    func kernels(_ target: Target) -> [String] {
      KernelPlan(graph, target: target).entries.map {
        "\($0.kernel.rawValue)/\($0.weight.rawValue)/\($0.isa?.rawValue ?? "-")"
      }
    }
    // Instructions: the q4_1 product, q8_0, x W on q4_1, q4_k, bf16, the 256 KB f32 weight,
    // reshape, f32 x 3 rows, f32 x 16 rows, iota, iota, le.
    let common = [
      "dequant_sgemm_nt/stored/-"
    ]
    let tail = ["op/-/-", "op/-/-", "op/-/-"]
    #expect(
      kernels(Target(isa: .portable)) == [
        "quant_rows/stored/portable", "quant_rows/stored/portable",
      ] + common + [
        "quant_rows/stored/portable", "dequant_sgemm/stored/-", "sgemm/huge_pages/-", "alias/-/-",
        "sgemm/stored/-", "sgemm/stored/-",
      ] + tail)
    #expect(
      kernels(Target(isa: .avx2)) == [
        "interleaved3/interleaved/avx2", "quant_rows/stored/avx2",
      ] + common + [
        "quant_rows/stored/portable", "dequant_sgemm/stored/-", "f32_rows/huge_pages/avx2",
        "alias/-/-", "f32_rows/stored/avx2", "sgemm/stored/-",
      ] + tail)
    #expect(
      kernels(Target(isa: .avx512)) == [
        "interleaved3/interleaved/avx2", "quant_rows/stored/avx512",
      ] + common + [
        "quant_rows/stored/avx512", "dequant_sgemm/stored/-", "f32_rows/huge_pages/avx512",
        "alias/-/-", "f32_rows/stored/avx512", "sgemm/stored/-",
      ] + tail)
    let vnni = [
      "interleaved3/interleaved/avx512-vnni", "interleaved3/interleaved/avx512-vnni",
    ]
    let rest = [
      "quant_rows/stored/avx512", "dequant_sgemm/stored/-", "f32_rows/huge_pages/avx512",
      "alias/-/-", "f32_rows/stored/avx512", "sgemm/stored/-",
    ]
    #expect(kernels(Target(isa: .avx512VNNI)) == vnni + common + rest + tail)
    var bf16 = rest
    bf16[1] = "bf16_packed/bf16_panels_t/avx512-bf16"
    #expect(kernels(Target(isa: .avx512BF16)) == vnni + common + bf16 + tail)
    #expect(
      kernels(Target(isa: .avx512BF16, bf16Products: false)) == vnni + common + rest + tail)
    // int8 activations: one digit on the interleaved forms, q8_0's too below VNNI; nothing
    // changes on the portable tier.
    let int8 = ["interleaved1/interleaved/avx512-vnni", "interleaved1/interleaved/avx512-vnni"]
    #expect(
      kernels(Target(isa: .avx512BF16, int8Activations: true)) == int8 + common + bf16 + tail)
    var avx2Int8 = kernels(Target(isa: .avx2))
    avx2Int8[0...1] = ["interleaved1/interleaved/avx2", "interleaved1/interleaved/avx2"]
    #expect(kernels(Target(isa: .avx2, int8Activations: true)) == avx2Int8)
    #expect(
      kernels(Target(isa: .portable, int8Activations: true)) == kernels(Target(isa: .portable)))
    // Runs once: the mask (iota, iota, le) and nothing else; scratch: the decoded rows of
    // stored-layout weights, the bf16 product's rounded activations.
    let plan = KernelPlan(graph, target: Target(isa: .avx512BF16))
    #expect(plan.runsOnce == Set(9..<12))
    #expect(plan.entries[0].scratchBytes == 64 * 256 * 4)
    #expect(plan.entries[4].scratchBytes == Int(lc_bf16_scratch_bytes(16, 256)))
    #expect(plan.entries[5].scratchBytes == 0)
  }

  /// The plan's text is stable (golden) and reads back to the same plan, with or without op
  /// names.
  @Test func planTextIsStableAndReadsBack() throws {
    let graph = try planGraph()
    let plan = KernelPlan(graph, target: Target(isa: .avx512BF16, threads: 2))
    let golden = """
      # target isa=avx512-bf16 threads=2 int8-activations=off bf16-products=on shared-forms=no
          0  matmul          interleaved3     interleaved   avx512-vnni    65536
          1  matmul          interleaved3     interleaved   avx512-vnni    65536
          2  matmul          dequant_sgemm_nt stored        -              65536
          3  matmul          quant_rows       stored        avx512         65536
          4  matmul          bf16_packed      bf16_panels_t avx512-bf16     9280
          5  matmul          f32_rows         huge_pages    avx512             0
          6  reshape         alias            -             -                  0
          7  matmul          f32_rows         stored        avx512             0
          8  matmul          sgemm            stored        -                  0
          9  iota            op               -             -                  0  once
         10  iota            op               -             -                  0  once
         11  le              op               -             -                  0  once

      """
    #expect(plan.text(for: graph) == golden)
    #expect(try KernelPlan(parsing: plan.text(for: graph)) == plan)
    #expect(try KernelPlan(parsing: plan.description) == plan)
    let shared = KernelPlan(
      graph, target: Target(isa: .portable, int8Activations: true, bf16Products: false),
      sharedForms: true)
    #expect(try KernelPlan(parsing: shared.text(for: graph)) == shared)
    #expect(throws: RuntimeError.self) { try KernelPlan(parsing: "    0  matmul  bogus") }
    // The IR with the plan beside it still parses, to the same graph.
    #expect(try Parser.parse(plan.annotatedText(for: graph)) == graph)
  }

  /// Every tier this CPU runs gives results matching the reference interpreter, and executables
  /// of different targets run side by side in one process.
  @Test func everyTierTheHostRunsMatchesTheInterpreter() throws {
    let graph = try planGraph()
    let constants = try planConstants(graph)
    for isa in Target.ISA.allCases where isa <= .host {
      // The bf16 products round the activations to bf16: give them bf16 values.
      for bf16Inputs in [false, true] where bf16Inputs || isa < .avx512BF16 {
        let difference = try compareWithInterpreter(
          graph, constants: constants, scale: .tensor, bf16Inputs: bf16Inputs,
          target: Target(isa: isa))
        #expect(difference <= accumulationBound, "\(isa) bf16 inputs \(bf16Inputs)")
      }
    }
    let inputs = Dictionary(
      uniqueKeysWithValues: graph.inputs.enumerated().map { offset, input in
        (input.name, randomTensor(graph.type(of: input.value), seed: UInt64(offset)).host)
      })
    let executables = try [Target(isa: .portable), Target.host].map {
      try Executable(graph, constants: constants, target: $0)
    }
    let first = try executables.map { try $0.run(inputs: inputs).map(\.data) }
    let again = try executables.reversed().map { try $0.run(inputs: inputs).map(\.data) }
    #expect(first == again.reversed())
  }

  /// Asking for a tier this CPU cannot run fails in one line naming what it lacks.
  @Test func aTierTheHostLacksIsAClearError() throws {
    let graph = try planGraph()
    for isa in Target.ISA.allCases where isa > .host {
      #expect {
        try Executable(graph, constants: try planConstants(graph), target: Target(isa: isa))
      } throws: { error in
        let message = (error as? RuntimeError)?.message ?? ""
        return message.hasPrefix("--isa \(isa.rawValue): this CPU lacks ")
          && !message.contains("\n")
      }
    }
    // The message on the other tier's hosts, hand-written: a Zen 3 (AVX2, FMA: bit 1) asked for
    // AVX-512, and an AVX-512 host without VNNI or BF16 (bits 1 and 2) asked for BF16.
    #expect(
      throws: RuntimeError(message: "--isa avx512: this CPU lacks avx512f+avx512bw (it runs avx2)")
    ) {
      try Target(isa: .avx512).check(features: 1)
    }
    #expect(
      throws: RuntimeError(
        message: "--isa avx512-bf16: this CPU lacks avx512_vnni, avx512_bf16 (it runs avx512)")
    ) {
      try Target(isa: .avx512BF16).check(features: 1 | 2)
    }
    #expect(throws: Never.self) { try Target(isa: .avx2).check(features: 1) }
    // Planning and printing need no such CPU.
    #expect(KernelPlan(graph, target: Target(isa: .avx512BF16)).entries.count == graph.body.count)
  }
}
