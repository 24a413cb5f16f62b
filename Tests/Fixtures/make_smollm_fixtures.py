#!/usr/bin/env python3
"""Reference data for lorac's SmolLM2 tests, from Hugging Face transformers loading the SAME GGUF.

Run once (needs torch, transformers, gguf, numpy from PyPI; lorac itself never runs Python):

    python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch transformers gguf numpy
    /tmp/oracle/bin/python Tests/Fixtures/make_smollm_fixtures.py "$(scripts/fetch-model)"

Writes Tests/Fixtures/smollm/:
  tokenizer.json  {"strings": [{"text", "ids"}]}: ids from the HF tokenizer built from the GGUF
                  with SmolLM2's own pre-tokenizer restored (transformers drops its digit split),
                  special tokens in the text parsed, none added.
  prompts.json    {"prompts": [{"text", "ids", "greedy": [32 ids], "columns": [...]}]}
  logits_K.npy    float32 [n, len(columns)]: transformers' float32 logits at every position of
                  prompt K for a fixed sample of vocabulary columns (1024 seeded random ids plus the
                  top 32 of every position), to keep the files small.
"""
import json
import os
import random
import sys

import numpy as np
import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm")
os.makedirs(out, exist_ok=True)
folder, name = os.path.split(model_path)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
# The tokenizer transformers builds from a GGUF lacks the digit split of SmolLM2's own
# tokenizer.json (and of llama.cpp's smollm pre-tokenizer); restore it, as upstream ships it:
# every numeric code point alone, then GPT-2's byte-level pattern.
tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
])
torch.set_num_threads(2)


# ---- tokenizer strings: hand-picked cases, then seeded random mixtures ----
strings = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading",
    "multiple   spaces   inside", "tabs\tand\ttabs", "new\nlines\n\nand\r\ncrlf", "\n\n\n",
    "   ", "", "a", "I'm sure it's fine, we'll see; they're here, I've gone, you'd know",
    "DON'T SHOUT", "mystery_function(123, 456)\n", ">>> mystery_function(123, 123)\n246",
    "3.14159265358979323846", "1234567890123456789012345678901234567890", "-42 +7 1e-5 0x1F",
    "2024-11-22T15:37:45Z", "$1,000,000.00", "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) { a[i] += b[i]; }", "import numpy as np\nnp.zeros((3, 4))",
    "SELECT * FROM users WHERE id = 7;", "<html><body>Hi</body></html>", "https://example.com/a?b=c&d=e",
    "café naïve résumé", "Ünïcödé ÅÄÖ", "日本語のテキスト", "中文文本测试", "한국어 텍스트",
    "Привет, мир", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "🙂🙃😀 emoji 🎉",
    "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "x²+y³ ½ Ⅻ", "… 🙂 ٣٤", "Ａ１２３ full-width digits", "two  9 spaces", "math: ∑ ∫ √ ∞ ≠ ≤", "quotes “curly” ‘single’ «guillemets»",
    "em—dash en–dash … ellipsis", "zero\u200bwidth", "nbsp\u00a0here", "control\x01chars\x7f",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|im_end|>more", "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>",
    "The quick brown fox jumps over the lazy dog.", "A" * 100, "ab" * 50, "!!!???...,,,",
    "snake_case_name CamelCaseName kebab-case-name", "e.g. i.e. etc. Mr. Dr.", "x=1;y=2;z=x+y",
    "    indented code\n        more indented", "ÆØÅ æøå ß ẞ", "ﬁ ligature", "Ａ full-width",
]
rng = random.Random(1234)
alphabet = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
    + list("éüßçñøå日本中文한국Привет🙂🎉—…“”")
    + ["'s", "'t", "'re", "'ve", "'ll", "'d", "'m", "  ", "   ", "\r\n", "<|im_end|>", "<|im_start|>"]
)
words = ["the", "The", "lorac", "LoRA", "adapter", "compiler", "Swift", "tensor", "matmul", "token",
         "function", "return", "mystery", "value", "42", "1000", "x", "café", "日本", "🙂"]
while len(strings) < 340:
    kind = rng.random()
    if kind < 0.4:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
    elif kind < 0.8:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.5:
            text += rng.choice(["\n", ".", "!", "  ", " ", "?\n\n"])
    else:
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        text = f">>> mystery_function({a}, {b})\n{a + b}"
    strings.append(text)

cases = []
for text in strings:
    ids = tokenizer.encode(text, add_special_tokens=False)
    cases.append({"text": text, "ids": ids})
with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump({"strings": cases}, f, ensure_ascii=False, indent=0)
print(f"tokenizer: {len(cases)} strings")

# ---- logits and greedy continuations ----
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
model.eval()
prompts = [
    "The capital of France is",
    ">>> mystery_function(123, 123)\n",
    "def fibonacci(n):\n",
    "<|im_start|>user\nWhat is the tallest mountain?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village,",
]
vocab = model.config.vocab_size
sample = np.random.default_rng(7).choice(vocab, size=1024, replace=False)
records = []
for k, text in enumerate(prompts):
    ids = tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
        greedy = model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=32, pad_token_id=2)[0, len(ids):].tolist()
    top = np.argsort(-logits, axis=1)[:, :32].reshape(-1)
    columns = np.unique(np.concatenate([sample, top]))
    np.save(os.path.join(out, f"logits_{k}.npy"), np.ascontiguousarray(logits[:, columns], dtype=np.float32))
    records.append({"text": text, "ids": ids, "greedy": greedy, "columns": columns.tolist()})
    print(f"prompt {k}: {len(ids)} tokens, greedy {tokenizer.decode(greedy)!r}")
with open(os.path.join(out, "prompts.json"), "w", encoding="utf-8") as f:
    json.dump({"prompts": records}, f, ensure_ascii=False, indent=0)
