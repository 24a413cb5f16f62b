import Foundation
import Sessions
import Testing

@Test func rewardsCountCharactersOverTheWholeRowOrMeasureTheCompletion() throws {
  let count = try RewardFunction(parsing: "char-count:.")
  #expect(count == .characterCount("."))
  // The tutorial decodes whole rows: the prefix's own periods count too.
  #expect(try count.rewards(prompt: "A. B", completions: ["c. d.", "", "..."]) == [3, 1, 4])
  // Python's str.count: non-overlapping, and a line feed inside "\r\n" counts.
  #expect(
    try RewardFunction.characterCount("aa").rewards(prompt: "", completions: ["aaa", "aaaa"])
      == [1, 2])
  #expect(
    try RewardFunction.characterCount("\n").rewards(prompt: "x\r\n", completions: ["\n"]) == [2])
  #expect(
    try RewardFunction(parsing: "length").rewards(prompt: "ignored", completions: ["abc", "é"])
      == [3, 1])
  #expect(
    throws: SessionError(
      "--reward char-count:C needs a character after the colon, got 'char-count:'")
  ) {
    try RewardFunction(parsing: "char-count:")
  }
}

@Test func aRewardProgramReadsJSONLinesAndAnswersOneNumberPerLine() throws {
  // Scores each sample by the length of its JSON line; CRLF endings and a trailing blank line
  // are accepted.
  let program = RewardFunction.command(
    "while IFS= read -r line; do printf '%s\\r\\n' \"${#line}\"; done; echo")
  let rewards = try program.rewards(prompt: "P\"q", completions: ["a", "bb\n"])
  let expected = [
    "{\"prompt\": \"P\\\"q\", \"completion\": \"a\"}",
    "{\"prompt\": \"P\\\"q\", \"completion\": \"bb\\n\"}",
  ].map { Double($0.utf8.count) }
  #expect(rewards == expected)
  #expect(
    throws: SessionError(
      "--reward-cmd 'echo 1; echo 2; echo 3': answered 3 lines for 2 samples (one number per line expected)"
    )
  ) {
    try RewardFunction.command("echo 1; echo 2; echo 3").rewards(
      prompt: "", completions: ["a", "b"])
  }
}
