import Foundation
import TestSupport
import Testing

// The peers harness (Benchmarks/peers/bench.py) measures each system's peak RSS from wait4. A
// child forked after the harness grew reports the harness's high-water mark instead of its own;
// its --check-rss grows the harness to ~400 MiB and checks that a tiny child measures small.

private let python: URL? = ["/usr/bin/python3", "/usr/local/bin/python3"].map(
  URL.init(fileURLWithPath:)
)
.first { FileManager.default.isExecutableFile(atPath: $0.path) }

@Test(.enabled(if: python != nil)) func peersHarnessMeasuresEachChildsOwnPeakRSS() throws {
  let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../Benchmarks/peers/bench.py").standardized
  let result = try run(try #require(python), [script.path, "--check-rss"])
  #expect(result.status == 0, "\(result.stderr)")
  let figures =
    try JSONSerialization.jsonObject(
      with: Data(result.stdout.split(separator: "\n").last.map { Data($0.utf8) } ?? Data()))
    as? [String: Double]
  let spawned = try #require(figures?["spawner_rss_mib"])
  let forked = try #require(figures?["forked_rss_mib"])
  // The tiny child's own peak, against the grown harness's that a plain fork reports.
  #expect(spawned < 100, "\(spawned) MiB")
  #expect(forked > 350, "the check no longer shows the fork effect: \(forked) MiB")
}
