import Foundation
import Testing

/// The inputs the fuzz targets (Fuzz/, scripts/fuzz) ever failed on, under
/// `Tests/Fixtures/fuzz/<target>/`, each with the error it must give now.
public enum FuzzInputs {
  /// `Tests/Fixtures/fuzz`.
  public static let folder = fixturesFolder.appendingPathComponent("fuzz")

  /// The committed input names of a target, sorted (none when the folder does not exist).
  public static func names(_ target: String) -> [String] {
    let path = folder.appendingPathComponent(target).path
    return ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
  }

  /// The bytes of one input.
  public static func data(_ target: String, _ name: String) throws -> Data {
    try Data(contentsOf: folder.appendingPathComponent(target).appendingPathComponent(name))
  }
}

/// Expects every committed input of `target` to have an entry in `expected` and every entry an
/// input, so a new regression input cannot be committed without saying what it must do.
public func expectEveryInputListed(
  _ target: String, _ expected: [String: String], sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(
    Set(FuzzInputs.names(target)) == Set(expected.keys),
    "Tests/Fixtures/fuzz/\(target) vs the expected table", sourceLocation: sourceLocation)
}
