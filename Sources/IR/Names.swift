/// Dotted names (`layers.3.attn.q`): segments of letters, digits and underscores, joined by dots.
public enum Names {
  /// Whether `name` is a well-formed dotted name.
  public static func isValid(_ name: String) -> Bool {
    var segmentLength = 0
    for byte in name.utf8 {
      if byte == UInt8(ascii: ".") {
        if segmentLength == 0 { return false }
        segmentLength = 0
      } else if isNameByte(byte) {
        segmentLength += 1
      } else {
        return false
      }
    }
    return segmentLength > 0
  }

  /// Whether `name` can name a graph input (`%name`): a dotted name not starting with a digit, so
  /// it cannot be confused with a numbered value.
  public static func isValidInput(_ name: String) -> Bool {
    guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first)
    else { return false }
    return isValid(name)
  }

  static func isNameByte(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
      || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
      || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
  }
}

/// The name of the scalar `f32[]` input that scales unfused (per-head) LoRA branches at run time;
/// the runtime's `Executable.adapterScale` sets it before every run.
public let adapterScaleInputName = "adapter_scale"
