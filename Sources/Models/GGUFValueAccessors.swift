/// Typed views of GGUF array values, as the tokenizer and model configs read them.
extension GGUFValue {
  /// The value as an array of strings, or nil if it is not an array or holds anything else.
  public var stringArray: [String]? {
    guard let elements = array else { return nil }
    var strings: [String] = []
    strings.reserveCapacity(elements.count)
    for element in elements {
      guard let string = element.string else { return nil }
      strings.append(string)
    }
    return strings
  }

  /// The value as an array of integers of any width, or nil if it is not an array or an element
  /// is not an integer that fits in `Int`.
  public var integerArray: [Int]? {
    guard let elements = array else { return nil }
    var integers: [Int] = []
    integers.reserveCapacity(elements.count)
    for element in elements {
      guard let integer = element.integer else { return nil }
      integers.append(integer)
    }
    return integers
  }
}
