/// The Hugging Face row that GGUF row `row` of a q or k projection weight holds (written from
/// formats.md §3f, not from lorac's loop): llama.cpp's converter permutes the rows of each head,
/// so within a head GGUF row 2i + j holds Hugging Face row j·hd/2 + i.
public func huggingFaceRow(ofGGUFRow row: Int, headDimension: Int) -> Int {
  let (head, within) = row.quotientAndRemainder(dividingBy: headDimension)
  return head * headDimension + (within % 2) * (headDimension / 2) + within / 2
}
