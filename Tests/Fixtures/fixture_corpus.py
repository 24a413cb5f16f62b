"""The small corpus the fixture scripts train their tokenizers on: prose, code, numbers, several
scripts, then 400 seeded random sentences. `tokenizer_sentence` is the one line that differs
(byte-level BPE merges by rank, SentencePiece-style by score)."""
import random

BYTE_PAIRS = "Tokenizers split text into pieces, then merge byte pairs by rank until no merge applies."
SCORES = "Tokenizers split text into pieces, then merge pairs by score until no merge applies."

# The random sentences' words (the fixture scripts' test strings draw from them too).
WORDS = ["the", "model", "tensor", "adapter", "compiler", "token", "weight", "layer", "rank",
         "Swift", "kernel", "value", "graph", "batch", "2024", "42", "café", "日本", "🙂", "don't"]


def corpus(tokenizer_sentence=BYTE_PAIRS):
    lines = [
        "The quick brown fox jumps over the lazy dog. It's a sentence we've all seen; they'll see it again.",
        "Once upon a time, in a small village, there lived a compiler engineer who loved tensors.",
        "LoRA adapters add a low-rank update to each weight: W + (alpha / r) * B A.",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
        "for (int i = 0; i < n; i++) {\n\ta[i] += b[i] * 2;\n}\n",
        "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)\n",
        "SELECT name, age FROM users WHERE id = 42 ORDER BY age DESC;",
        ">>> mystery_function(123, 456)\n579\n>>> mystery_function(7, 8)\n15\n",
        "The year 2024 had 366 days; 3.14159 is pi and 2.71828 is e. Call 555-0100 before 10:30.",
        "café naïve résumé façade jalapeño Ünïcödé ÅÄÖ æøå ß",
        "日本語のテキストです。中文文本测试。한국어 텍스트입니다.",
        "Привет, мир! Как дела? Γειά σου Κόσμε. مرحبا بالعالم. שלום עולם.",
        "Emoji: 🙂 🎉 👍 — and dashes – with “curly quotes” and ‘single’ ones… ok?",
        "<html><body><p>Hello, world!</p></body></html>",
        "https://example.com/path?query=value&other=1#anchor",
        "I'M SURE IT'S FINE. DON'T WORRY, WE'LL SEE. You'd know; I've been there.",
        "snake_case_name CamelCaseName kebab-case-name SCREAMING_CASE",
        "    indented with spaces\n\tindented with a tab\n\n\nthree newlines\r\nwindows line",
        "Mathematics: ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷ x² y³ ½ ¼",
        tokenizer_sentence,
    ]
    rng = random.Random(19)
    for _ in range(400):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + rng.choice([".", "!", "\n", "?", ""]))
    return lines
