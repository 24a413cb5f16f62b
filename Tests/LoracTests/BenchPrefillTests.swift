import Foundation
import TestSupport
import Testing

@Test func benchPrefillMeasuresTheCacheAndLastLogitsUnlessAskedForAll() throws {
  let path = try modelPath()
  var figures: [String: [String: Any]] = [:]
  for (mode, flags) in [("last", [String]()), ("all", ["--all-logits"])] {
    let result = try lorac(
      ["bench", "prefill", path, "--tokens", "8", "--runs", "1", "--json"] + flags)
    #expect(result.status == 0, "\(result.stderr)")
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    figures[mode] = try #require(object)
  }
  let last = try #require(figures["last"])
  let all = try #require(figures["all"])
  #expect(last["logits"] as? String == "last" && all["logits"] as? String == "all")
  #expect(last["context"] as? Int == 8 && all["context"] is NSNull)
  for object in [last, all] {
    #expect((object["tokens_per_s"] as? Double ?? 0) > 0)
    #expect(object["runs"] as? Int == 1 && object["prefill_tokens"] as? Int == 8)
    #expect((object["peak_rss_bytes"] as? Int ?? 0) > 100_000_000)
  }
  // The head runs on one row instead of eight: 7 x 49,152 logits fewer among the intermediates,
  // less what decoding adds (the last row's slice, the cache updates' inputs): over 6 rows' worth.
  let saved = (all["naive_bytes"] as? Int ?? 0) - (last["naive_bytes"] as? Int ?? 0)
  #expect(saved > 6 * 49_152 * 4, "naive bytes: all \(all), last \(last)")
}

@Test func benchPrefillRejectsBadFlags() throws {
  let path = try modelPath()
  let cases: [([String], String)] = [
    (["--tokens", "0"], "--tokens must be at least 1, got 0"),
    (["--context", "4"], "--context must be at least --tokens (8), got 4"),
    (["--context", "16", "--all-logits"], "--context needs the KV cache; drop --all-logits"),
  ]
  for (flags, message) in cases {
    let result = try lorac(["bench", "prefill", path, "--tokens", "8", "--runs", "1"] + flags)
    #expect(result.status == 1, "\(flags)")
    #expect(result.stderr.contains(message), "\(flags): \(result.stderr)")
    #expect(result.stderr.split(separator: "\n").count == 1, "\(flags): \(result.stderr)")
  }
}
