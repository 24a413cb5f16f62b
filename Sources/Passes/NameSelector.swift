/// A glob over dotted names: `*` matches any run of characters (dots included), `?` one
/// character, `{a,b,c}` one of the alternatives (which may hold globs); a comma-free list like
/// `layers.*.attn.{q,k,v,o}`.
public struct NameSelector: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral
{
  public let pattern: String
  private let alternatives: [[Character]]

  /// Parses a glob; unbalanced braces are an error.
  public init(parsing pattern: String) throws(PassError) {
    self.pattern = pattern
    let tooMany = PassError(
      message:
        "pattern '\(pattern)' expands to more than \(NameSelector.maximumAlternatives) alternatives"
    )
    let characters = Array(pattern)
    // Counted first, so a pattern that would expand to millions is refused after one scan.
    guard NameSelector.count(characters[...]) <= NameSelector.maximumAlternatives else {
      throw tooMany
    }
    var budget = NameSelector.maximumAlternatives
    do {
      alternatives = try NameSelector.expand(characters, budget: &budget)
    } catch {
      throw budget < 0 ? tooMany : error
    }
  }

  /// The most plain globs a pattern may expand to: `{a,b}` groups multiply, so a short pattern
  /// could otherwise expand to billions.
  public static let maximumAlternatives = 1000

  public init(stringLiteral pattern: String) {
    // Literals in code are written correctly; a bad one matches nothing.
    self.pattern = pattern
    var budget = NameSelector.maximumAlternatives
    alternatives = (try? NameSelector.expand(Array(pattern), budget: &budget)) ?? []
  }

  public var description: String { pattern }

  /// Whether `name` matches.
  public func matches(_ name: String) -> Bool {
    let text = Array(name)
    return alternatives.contains { NameSelector.match(Array($0[...]), text) }
  }

  /// How many plain globs `pattern` expands to, saturating just above `maximumAlternatives`
  /// (an unbalanced brace ends the count; `expand` reports it).
  private static func count(_ pattern: ArraySlice<Character>) -> Int {
    let limit = maximumAlternatives + 1
    var total = 1
    var index = pattern.startIndex
    while let open = pattern[index...].firstIndex(of: "{") {
      var depth = 0
      var choices = 0
      var start = open + 1
      var close: Int?
      for position in open..<pattern.endIndex {
        switch pattern[position] {
        case "{": depth += 1
        case "}":
          depth -= 1
          if depth == 0 { close = position }
        case "," where depth == 1:
          choices = min(choices + count(pattern[start..<position]), limit)
          start = position + 1
        default: break
        }
        if close != nil { break }
      }
      guard let close else { return total }
      choices = min(choices + count(pattern[start..<close]), limit)
      total = min(total * choices, limit)
      index = close + 1
    }
    return total
  }

  /// Expands `{a,b}` groups into plain globs (`*` and `?` only), at most `budget` of them.
  private static func expand(_ pattern: [Character], budget: inout Int) throws(PassError)
    -> [[Character]]
  {
    guard let open = pattern.firstIndex(of: "{") else {
      if pattern.contains("}") {
        throw PassError(message: "unbalanced '}' in pattern '\(String(pattern))'")
      }
      budget -= 1
      if budget < 0 { throw PassError(message: "too many alternatives") }
      return [pattern]
    }
    var depth = 0
    var close: Int?
    var splits: [Int] = []
    for index in open..<pattern.count {
      switch pattern[index] {
      case "{": depth += 1
      case "}":
        depth -= 1
        if depth == 0 { close = index }
      case "," where depth == 1: splits.append(index)
      default: break
      }
      if close != nil { break }
    }
    guard let close else {
      throw PassError(message: "unbalanced '{' in pattern '\(String(pattern))'")
    }
    let prefix = Array(pattern[..<open])
    let suffix = Array(pattern[(close + 1)...])
    var bounds = [open] + splits + [close]
    var result: [[Character]] = []
    for k in 0..<(bounds.count - 1) {
      let choice = Array(pattern[(bounds[k] + 1)..<bounds[k + 1]])
      for expanded in try expand(prefix + choice + suffix, budget: &budget) {
        result.append(expanded)
      }
    }
    bounds.removeAll()
    return result
  }

  private static func match(_ pattern: [Character], _ text: [Character]) -> Bool {
    // Iterative glob matching with backtracking over the last `*`.
    var (p, t) = (0, 0)
    var star: Int?
    var resume = 0
    while t < text.count {
      if p < pattern.count && (pattern[p] == "?" || pattern[p] == text[t]) {
        p += 1
        t += 1
      } else if p < pattern.count && pattern[p] == "*" {
        star = p
        resume = t
        p += 1
      } else if let star {
        p = star + 1
        resume += 1
        t = resume
      } else {
        return false
      }
    }
    while p < pattern.count && pattern[p] == "*" { p += 1 }
    return p == pattern.count
  }
}

extension NameSelector {
  /// Up to `count` of `names` closest to `text` by edit distance (insertions, deletions and
  /// substitutions of characters), closest first, ties in the order given; for "did you mean"
  /// lists in error messages.
  public static func nearest(to text: String, among names: [String], count: Int = 3) -> [String] {
    let target = Array(text)
    var seen = Set<String>()
    let scored = names.filter { seen.insert($0).inserted }.enumerated().map { index, name in
      (distance: editDistance(target, Array(name)), index: index, name: name)
    }
    return scored.sorted { ($0.distance, $0.index) < ($1.distance, $1.index) }.prefix(count).map(
      \.name)
  }

  private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty || b.isEmpty { return a.count + b.count }
    var previous = Array(0...b.count)
    var current = previous
    for i in 1...a.count {
      current[0] = i
      for j in 1...b.count {
        let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
        current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
      }
      swap(&previous, &current)
    }
    return previous[b.count]
  }
}
