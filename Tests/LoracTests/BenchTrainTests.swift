import Foundation
import Runtime
import TestSupport
import Testing

@Test func benchTrainReportsAJSONObjectWithItsFigures() throws {
  let result = try lorac([
    "bench", "train", try modelPath(), "--batch", "2", "--seq", "8", "--runs", "1", "--json",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
  let figures = try #require(object)
  #expect((figures["tokens_per_s"] as? Double ?? 0) > 0)
  #expect((figures["compile_s"] as? Double ?? 0) > 0)
  #expect((figures["peak_rss_bytes"] as? Int ?? 0) > 100_000_000)
  #expect(figures["runs"] as? Int == 1)
  #expect(figures["batch"] as? Int == 2 && figures["seq"] as? Int == 8)
}

@Test func benchTrainRejectsBadFlags() throws {
  let path = try modelPath()
  let cases: [([String], String)] = [
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--passes", "fuse,autodif"], "unknown pass 'autodif'"),
    (["--precision", "f16"], "The value 'f16' is invalid for '--precision"),
  ]
  for (flags, message) in cases {
    let result = try lorac(["bench", "train", path, "--runs", "1"] + flags)
    #expect(result.status == 1, "\(flags)")
    #expect(result.stderr.contains(message), "\(flags): \(result.stderr)")
  }
}

@Test func benchTrainInBF16PacksTheBaseWeights() throws {
  let result = try lorac([
    "bench", "train", try modelPath(), "--batch", "2", "--seq", "8", "--runs", "1",
    "--precision", "bf16", "--json",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
  let figures = try #require(object)
  #expect(figures["precision"] as? String == "bf16")
  #expect((figures["tokens_per_s"] as? Double ?? 0) > 0)
  // 16 rows: every base product is packed, both ways (forward, and the input gradient) for the
  // 210 linear weights and the head, 134,479,872 bf16 values, no panel padded (SmolLM2's widths
  // are multiples of 32): 537,919,488 bytes, less the input gradients of layer 0's q, k and v
  // (576 x 576 + 2 x 192 x 576 values), which nothing trained needs.
  // Without avx512_bf16 the bf16 weights go through the decode + sgemm path: nothing packed.
  let packed = Target.host.packsBF16Weights ? 537_919_488 - 2 * (576 * 576 + 2 * 192 * 576) : 0
  #expect(figures["packed_bytes"] as? Int == packed)
}

@Test func bf16PrecisionFallsBackToF32WithoutAVX512BF16() throws {
  // On a target without avx512_bf16, bf16 would decode every weight for every product: f32 runs
  // instead, with a note, so bf16 is never the slower choice.
  let result = try lorac([
    "bench", "train", try modelPath(), "--precision", "bf16", "--isa", "avx2", "--batch", "1",
    "--seq", "8", "--runs", "1", "--targets", "layers.0.attn.q", "--json",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  #expect(result.stderr.contains("note: --precision bf16 needs avx512_bf16 (target avx2)"))
  #expect(result.stdout.contains("\"precision\": \"f32\""), "\(result.stdout)")
}
