import CKernels
import IR
import Runtime
import Testing

/// Every op function and dtype Swift passes to C maps to a distinct header constant, and the
/// header's `_COUNT` equals the Swift case count, so no code is shared or left out.
@Test func kernelCodesMatchTheHeader() {
  #expect(kernelCodeCounts.count == 5)
  for family in kernelCodeCounts {
    #expect(family.swiftCases == family.headerCount, "\(family.family) case count")
    #expect(
      family.codes == Set((0..<family.headerCount).map(Int32.init)),
      "\(family.family) codes \(family.codes.sorted())")
  }
}

/// The codes keep the numbering the kernels had when Swift matched them by position, so a
/// reordered Swift enum no longer changes what a kernel computes.
@Test func kernelCodesAreTheHeaderConstants() {
  #expect(UnaryOp.exp.kernelCode == Int32(LC_EXP.rawValue))
  #expect(UnaryOp.cos.kernelCode == Int32(LC_COS.rawValue))
  #expect(BinaryOp.pow.kernelCode == Int32(LC_POW.rawValue))
  #expect(Comparison.ge.kernelCode == Int32(LC_GE.rawValue))
  #expect(ReduceOp.max.kernelCode == Int32(LC_RMAX.rawValue))
  #expect(DType.q6_k.kernelCode == Int32(LC_Q6_K.rawValue))
  #expect(DType.allCases.map(\.kernelCode) == Array(0..<8))
}
