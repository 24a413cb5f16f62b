import Foundation
import IR
import Testing

/// Little-endian bytes of a 16-bit value.
private func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }

private func decode(_ dtype: DType, _ shape: [Int], _ bytes: [UInt8]) throws -> [Float] {
  try HostTensor(type: TensorType(dtype, shape), data: Data(bytes)).floats()
}

@Test func halfAndBFloat16Decode() throws {
  // 1.0, -2.0, the smallest subnormal 2^-24, +inf, 65504 (the largest finite half).
  let halves = try decode(.f16, [5], [0x3C00, 0xC000, 0x0001, 0x7C00, 0x7BFF].flatMap(le16))
  #expect(halves == [1, -2, 5.9604645e-08, .infinity, 65504])
  #expect(try decode(.bf16, [3], [0x3F80, 0xC040, 0x0000].flatMap(le16)) == [1, -3, 0])
  // Round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 and goes to 1;
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6 and goes to 1 + 2^-6.
  #expect(bfloat16FromFloat(1.00390625) == 0x3F80)
  #expect(bfloat16FromFloat(1.01171875) == 0x3F82)
  #expect(halfFromFloat(0.5) == 0x3800)
}

@Test func q8_0BlockDecodes() throws {
  // d = 0.5; qs[j] = j - 16 for j = 0..31.
  let bytes = le16(0x3800) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
  let values = try decode(.q8_0, [32], bytes)
  #expect(values[0] == -8)
  #expect(values[16] == 0)
  #expect(values[31] == 7.5)
}

@Test func q4_1BlockDecodesLowNibblesFirst() throws {
  // d = 0.25, m = -1; qs[j] = j | (15 - j) << 4: x[j] = j/4 - 1, x[j+16] = (15-j)/4 - 1.
  let bytes = le16(0x3400) + le16(0xBC00) + (0..<16).map { UInt8($0 | (15 - $0) << 4) }
  let values = try decode(.q4_1, [32], bytes)
  #expect(values[0] == -1)
  #expect(values[15] == 2.75)
  #expect(values[16] == 2.75)
  #expect(values[31] == -1)
  #expect(values[3] == -0.25)
}

@Test func q4_kBlockDecodesSixBitScales() throws {
  // d = 1, dmin = 0.5. Sub-block scales sc = [1,2,3,4, 17,3,5,7] and mins m = [5,6,7,8, 2,4,6,8]:
  // scales[0] = 1 | 1 << 6 puts a top bit into sc[4] = (scales[8] & 15) | (scales[0] >> 6) << 4.
  let scales: [UInt8] = [1 | 1 << 6, 2, 3, 4, 5, 6, 7, 8, 0x21, 0x43, 0x65, 0x87]
  let bytes = le16(0x3C00) + le16(0x3800) + scales + [UInt8](repeating: 0x53, count: 128)
  let values = try decode(.q4_k, [256], bytes)
  // Low nibble 3, high nibble 5: x = d * sc * q - dmin * m.
  #expect(values[0] == 0.5)  // 1*3 - 0.5*5
  #expect(values[32] == 7)  // 2*5 - 0.5*6
  #expect(values[64] == 5.5)  // 3*3 - 0.5*7
  #expect(values[127] == 16)  // 4*5 - 0.5*8
  #expect(values[128] == 50)  // 17*3 - 0.5*2
  #expect(values[160] == 13)  // 3*5 - 0.5*4
  #expect(values[192] == 12)  // 5*3 - 0.5*6
  #expect(values[255] == 31)  // 7*5 - 0.5*8
}

@Test func q6_kBlockDecodesWithScaleLast() throws {
  // ql = 0x21 (low 1, high 2), qh = 0xE4 (2-bit fields 0,1,2,3), scales[k] = k - 8, d = 0.5:
  // q1 = 1 - 32 = -31, q2 = 17 - 32 = -15, q3 = 34 - 32 = 2, q4 = 50 - 32 = 18.
  let bytes =
    [UInt8](repeating: 0x21, count: 128) + [UInt8](repeating: 0xE4, count: 64)
    + (0..<16).map { UInt8(bitPattern: Int8($0 - 8)) } + le16(0x3800)
  let values = try decode(.q6_k, [256], bytes)
  #expect(values[0] == 124)  // 0.5 * S[0] * q1 = 0.5 * -8 * -31
  #expect(values[32] == 45)  // 0.5 * S[2] * q2 = 0.5 * -6 * -15
  #expect(values[64] == -4)  // 0.5 * S[4] * q3
  #expect(values[96] == -18)  // 0.5 * S[6] * q4
  #expect(values[16] == 108.5)  // l = 16 uses S[1] = -7
  #expect(values[159] == -15.5)  // second half, l = 31: S[8 + 1] = 1
  #expect(values[255] == 63)  // S[8 + 1 + 6] = 7 times q4
}

@Test func hostTensorRejectsWrongByteCounts() {
  #expect(throws: HostTensorError(message: "f32[2,3] needs 24 bytes, got 20")) {
    try HostTensor(type: TensorType(.f32, [2, 3]), data: Data(count: 20))
  }
  #expect(
    throws: HostTensorError(
      message: "q4_1[2,31]: innermost dimension 31 is not a multiple of the q4_1 block size 32")
  ) {
    try HostTensor(type: TensorType(.q4_1, [2, 31]), data: Data(count: 40))
  }
}

@Test func initializersAreDeterministicAndBounded() {
  let type = TensorType(.f32, [576, 8])
  let a = Initializer.kaimingUniformDefault.values(for: type, seed: 7)
  let b = Initializer.kaimingUniformDefault.values(for: type, seed: 7)
  let c = Initializer.kaimingUniformDefault.values(for: type, seed: 8)
  #expect(a == b)
  #expect(a != c)
  // kaiming_uniform(a = sqrt 5) over fan_in = 576 is U(-1/24, 1/24).
  let bound = 1.0 / 24.0
  #expect(a.scalars.allSatisfy { abs($0) <= bound })
  #expect(a.scalars.max()! > 0.9 * bound && a.scalars.min()! < -0.9 * bound)
  let normal = Initializer.normal(mean: 1, std: 0.5).values(for: TensorType(.f32, [20000]), seed: 1)
  let mean = normal.scalars.reduce(0, +) / 20000
  let variance = normal.scalars.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20000
  #expect(abs(mean - 1) < 0.02 && abs(variance.squareRoot() - 0.5) < 0.02)
  #expect(Initializer.zeros.values(for: TensorType(.f32, [3]), seed: 0).scalars == [0, 0, 0])
}

@Test func kaimingUniformWithTorchFanInMatchesTheTutorialsPerHeadInit() {
  // PyTorch's fan-in for the tutorial's 3-D A (n_inst, d_in, r) is d_in * r
  // (torch.nn.init._calculate_fan_in_and_fan_out: size(1) * prod(size[2:])), not n_inst * d_in.
  #expect(Initializer.fanIn(of: [9, 576, 2], rule: .torch) == 1152)
  #expect(Initializer.fanIn(of: [9, 576, 2], rule: .leading) == 5184)
  #expect(Initializer.fanIn(of: [3, 64, 8], rule: .torch) == 512)
  #expect(Initializer.fanIn(of: [576, 8], rule: .torch) == 8)
  #expect(Initializer.fanIn(of: [576, 8], rule: .leading) == 576)
  #expect(Initializer.fanIn(of: [2, 3, 4, 5], rule: .torch) == 60)
  #expect(Initializer.fanIn(of: [7], rule: .torch) == 7)
  // kaiming_uniform_(a = sqrt 5): gain sqrt(2 / 6), bound gain * sqrt(3 / fan_in) = 1/sqrt(1152).
  let type = TensorType(.f32, [9, 576, 2])
  let initializer = Initializer.kaimingUniform(a: 5.0.squareRoot(), fanIn: .torch)
  let values = initializer.values(for: type, seed: 3).scalars
  let bound = 1 / 1152.0.squareRoot()
  #expect(values.count == 10368)
  #expect(values.allSatisfy { abs($0) <= Double(Float(bound)) })
  #expect(values.max()! > 0.999 * bound && values.min()! < -0.999 * bound)
  // U(-b, b) has mean 0 (the estimate's sd is b / sqrt(3 n)) and mean square b^2 / 3 (the
  // estimate's sd is 3 sqrt(4 / (45 n)) = 0.9% of it for n = 10368): both checked at ~3.4 sd.
  let count = Double(values.count)
  let mean = values.reduce(0, +) / count
  let meanSquare = values.map { $0 * $0 }.reduce(0, +) / count
  #expect(abs(mean) < 3.4 * bound / (3 * count).squareRoot())
  #expect(abs(meanSquare / (bound * bound / 3) - 1) < 0.03)
  // Another seed draws other values from the same distribution.
  #expect(initializer.values(for: type, seed: 4).scalars != values)
}
