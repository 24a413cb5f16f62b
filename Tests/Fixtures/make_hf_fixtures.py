#!/usr/bin/env python3
"""Reference data for lorac's Hugging Face folder and tokenizer.json tests, made by transformers and
the tokenizers library (lorac itself never runs Python).

    /work/oracle/bin/python Tests/Fixtures/make_hf_fixtures.py
        writes Tests/Fixtures/hf/ (small enough to commit, about 1 MB):
  tokenizers/NAME/tokenizer.json   three byte-level BPE tokenizers trained on a small corpus with the
                                   tokenizers library, one per pre-tokenizer family:
                                     llama3  Split(Llama 3's regex) + ByteLevel(no regex), BOS added
                                             by TemplateProcessing, ignore_merges, merges as pairs
                                     qwen2   NFC + Split(Qwen2's regex) + ByteLevel(no regex), no BOS
                                     smollm  Digits(individual) + ByteLevel(regex), as SmolLM2 ships,
                                             merges written as "a b" strings
  tokenizers/NAME.json             {"strings": [{"text", "ids", "ids_special"}]}: 220 strings encoded
                                   with add_special_tokens False (ids) and True (ids_special)
  tiny-llama/                      a random Llama checkpoint (hidden 64, 2 layers, 4 heads, 2 key/value
                                   heads, ffn 128, separate head) saved by save_pretrained in float32,
                                   with the llama3 tokenizer (tokenizer.json, tokenizer_config.json)
  tiny-llama-bf16/                 the same weights rounded to bfloat16, sharded (max_shard_size 100KB)
                                   so that model.safetensors.index.json is exercised
  tiny-llama.json                  {"prompts": [{"text", "ids", "greedy", "greedy_bf16"}]}
  tiny-llama-logits-K.npy          float32 [n, vocab]: transformers' float32 logits of prompt K
  tiny-llama-bf16-logits-K.npy     the bf16 checkpoint's weights upcast exactly to float32 and run in
                                   float32 (what lorac computes with bf16-stored weights)

    /work/oracle/bin/python Tests/Fixtures/make_hf_fixtures.py --smollm GGUF OUT [--dtype bf16]
        exports SmolLM2 from its GGUF to a Hugging Face folder OUT (about 540 MB in float32), with
        its tokenizer (SmolLM2's digit split restored, as in make_smollm_fixtures.py). Too large to
        commit: the tests that use it run when LORAC_HF_SMOLLM names OUT.
"""
import json
import os
import random

import fixture_corpus  # the tokenizers' training corpus, shared by the fixture scripts
import sys

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def export_smollm(gguf_path, out, dtype):
    from tokenizers import pre_tokenizers as pt
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.backend_tokenizer.pre_tokenizer = pt.Sequence([
        pt.Digits(individual_digits=True),
        pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers refuses to save a model loaded from GGUF ("not serializable"): copy its
    # (dequantized) weights into a plain model of the same config.
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.to(torch_dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"wrote {out}")


if len(sys.argv) >= 4 and sys.argv[1] == "--smollm":
    export_smollm(sys.argv[2], sys.argv[3], sys.argv[5] if len(sys.argv) >= 6 else "f32")
    sys.exit(0)

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

torch.set_num_threads(2)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")
os.makedirs(os.path.join(out, "tokenizers"), exist_ok=True)

# ---- a small corpus: prose, code, numbers, several scripts ----
corpus = fixture_corpus.corpus()
words = fixture_corpus.WORDS


def train(normalizer, pre_tokenizer, special, vocab_size=700):
    model = models.BPE(ignore_merges=True) if special[0] == "<|begin_of_text|>" else models.BPE()
    tokenizer = Tokenizer(model)
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


llama3 = train(
    None,
    pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ]),
    ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
bos = llama3.token_to_id("<|begin_of_text|>")
llama3.post_processor = processors.Sequence([
    processors.ByteLevel(trim_offsets=False),
    processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
        special_tokens=[("<|begin_of_text|>", bos)]),
])
qwen2 = train(
    normalizers.NFC(),
    pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ]),
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
qwen2.post_processor = processors.ByteLevel(trim_offsets=False)
smollm = train(
    None,
    pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ]),
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
smollm.post_processor = processors.ByteLevel(trim_offsets=False)
# A non-special added token, matched in text whatever the caller asks.
smollm.add_tokens(["<tool>"])
# A special token that takes the whitespace around it (lstrip, rstrip), as RoBERTa's <mask> does.
smollm.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])


def save(tokenizer, name, string_merges=False):
    folder = os.path.join(out, "tokenizers", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    tokenizer.save(path)
    if string_merges:
        # The older encoding of merges, "left right" strings, which the library still reads.
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
        tokenizer = Tokenizer.from_file(path)
    return tokenizer


llama3 = save(llama3, "llama3")
qwen2 = save(qwen2, "qwen2")
smollm = save(smollm, "smollm", string_merges=True)

# ---- tokenizer strings: hand-picked cases, then seeded random mixtures ----
strings = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading",
    "multiple   spaces   inside", "tabs\tand\ttabs", "new\nlines\n\nand\r\ncrlf", "\n\n\n", "   ", "",
    "a", "I'm sure it's fine, we'll see; they're here, I've gone, you'd know", "DON'T SHOUT I'LL",
    "mystery_function(123, 456)\n", ">>> mystery_function(123, 123)\n246", "3.14159265358979323846",
    "1234567890123456789012345678901234567890", "-42 +7 1e-5 0x1F", "2024-11-22T15:37:45Z",
    "$1,000,000.00", "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
    "import numpy as np\nnp.zeros((3, 4))", "SELECT * FROM users WHERE id = 7;",
    "<html><body>Hi</body></html>", "https://example.com/a?b=c&d=e", "café naïve résumé",
    "cafe\u0301 composed later", "Ünïcödé ÅÄÖ", "日本語のテキスト", "中文文本测试", "한국어 텍스트",
    "Привет, мир", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "🙂🙃😀 emoji 🎉",
    "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "x²+y³ ½ Ⅻ", "… 🙂 ٣٤", "Ａ１２３ full-width digits",
    "two  9 spaces", "math: ∑ ∫ √ ∞ ≠ ≤", "quotes “curly” ‘single’ «guillemets»",
    "em—dash en–dash … ellipsis", "zero\u200bwidth", "nbsp\u00a0here", "control\x01chars\x7f",
    "ideographic\u3000space", "line\u2028separator", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|im_end|>more", "<|begin_of_text|>Hello<|eot_id|>", "a <|end_of_text|> b",
    "<tool>call</tool> <tool>", "a <mask> b", "a\u3000\u2003<mask>\t\n b", "<mask><mask>  <mask>", "<|im_start|>", "<|im_start", "The quick brown fox jumps over the lazy dog.",
    "A" * 100, "ab" * 50, "!!!???...,,,", "snake_case_name CamelCaseName kebab-case-name",
    "e.g. i.e. etc. Mr. Dr.", "x=1;y=2;z=x+y", "    indented code\n        more indented",
    "ÆØÅ æøå ß ẞ", "ﬁ ligature", "Ａ full-width", "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D",
    "it's", "IT'S", "1 22 333 4444 55555", "word\n\n\nword", " \n \n ", "\t\t\tx", "trailing newline\n",
    "   leading and trailing   ", "a\r\rb", "ends with spaces  ", "x  ", " x", "  x",
    "vertical\x0btab", "next\x85line", "form\x0cfeed", "a \x0b b", "\u2003em space\u2003 x",
]
alphabet = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`")
    + list("éüßçñøå日本中文한국Привет🙂🎉—…“”½²")
    + ["'s", "'t", "'re", "'ve", "'ll", "'d", "'m", "  ", "   ", "\r\n", "<|im_end|>", "<|im_start|>",
       "<|begin_of_text|>", "<tool>", "e\u0301"]
)
rng = random.Random(2026)
while len(strings) < 220:
    kind = rng.random()
    if kind < 0.45:
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
    elif kind < 0.85:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.5:
            text += rng.choice(["\n", ".", "!", "  ", " ", "?\n\n"])
    else:
        a, b = rng.randint(0, 99999), rng.randint(0, 999)
        text = f">>> mystery_function({a}, {b})\n{a + b}"
    strings.append(text)

for name, tokenizer in [("llama3", llama3), ("qwen2", qwen2), ("smollm", smollm)]:
    cases = []
    for text in strings:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False),
                      "ids_special": tokenizer.encode(text, add_special_tokens=True).ids})
    with open(os.path.join(out, "tokenizers", name + ".json"), "w", encoding="utf-8") as f:
        json.dump({"strings": cases}, f, ensure_ascii=False, indent=0)
    print(f"tokenizer {name}: {tokenizer.get_vocab_size()} tokens, {len(cases)} strings")

# ---- the tiny Llama checkpoint ----
fast = PreTrainedTokenizerFast(
    tokenizer_object=llama3, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
torch.manual_seed(19)
config = LlamaConfig(
    vocab_size=llama3.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0,
    rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
    bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
model = LlamaForCausalLM(config).eval()
with torch.no_grad():
    # Norm weights of one would hide a norm bound to the wrong tensor.
    for name, parameter in model.named_parameters():
        if name.endswith("norm.weight"):
            parameter.uniform_(0.5, 1.5)
f32_folder = os.path.join(out, "tiny-llama")
bf16_folder = os.path.join(out, "tiny-llama-bf16")
model.save_pretrained(f32_folder)
fast.save_pretrained(f32_folder)
model.to(torch.bfloat16).save_pretrained(bf16_folder, max_shard_size="100KB")
fast.save_pretrained(bf16_folder)
model = LlamaForCausalLM.from_pretrained(f32_folder, dtype=torch.float32).eval()
upcast = LlamaForCausalLM.from_pretrained(bf16_folder, dtype=torch.bfloat16).float().eval()
assert os.path.exists(os.path.join(bf16_folder, "model.safetensors.index.json"))

prompts = [
    "The quick brown fox",
    "def fibonacci(n):\n    return",
    "Once upon a time, in a small village, there lived",
    "日本語 and café: 2024 🙂",
    ">>> mystery_function(123, 456)\n",
]


def greedy(m, ids):
    with torch.no_grad():
        result = m.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=16, pad_token_id=fast.eos_token_id,
            eos_token_id=None)[0, len(ids):].tolist()
    # The smallest gap between the top two logits along the way: greedy agreement is meaningful
    # only when it is well above the logits' tolerance.
    with torch.no_grad():
        logits = m(torch.tensor([ids + result[:-1]])).logits[0, len(ids) - 1:]
    top = torch.topk(logits, 2, dim=-1).values
    return result, float((top[:, 0] - top[:, 1]).min())


records = []
for k, text in enumerate(prompts):
    ids = fast.encode(text)
    assert ids[0] == fast.bos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()
        logits_bf16 = upcast(torch.tensor([ids])).logits[0].numpy()
    np.save(os.path.join(out, f"tiny-llama-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))
    np.save(os.path.join(out, f"tiny-llama-bf16-logits-{k}.npy"), np.ascontiguousarray(logits_bf16, dtype=np.float32))
    tokens, gap = greedy(model, ids)
    tokens_bf16, gap_bf16 = greedy(upcast, ids)
    records.append({"text": text, "ids": ids, "greedy": tokens, "greedy_bf16": tokens_bf16})
    print(f"prompt {k}: {len(ids)} tokens, smallest top-2 gap {gap:.2e} (bf16 {gap_bf16:.2e})")
with open(os.path.join(out, "tiny-llama.json"), "w", encoding="utf-8") as f:
    json.dump({"prompts": records}, f, ensure_ascii=False, indent=0)

# ---- a PEFT adapter on the tiny checkpoint: logits, loss and gradients ----
# r=4, lora_alpha=8 on all seven linears (q_proj and k_proj included: their rows are in Hugging
# Face order in a folder, unlike in a GGUF), A and B seeded random, so that a wrongly ordered row
# shows in every output.
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

base = LlamaForCausalLM.from_pretrained(f32_folder, dtype=torch.float32)
peft_model = get_peft_model(base, LoraConfig(
    r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
generator = torch.Generator().manual_seed(19)
with torch.no_grad():
    for parameter_name, parameter in peft_model.named_parameters():
        if "lora_" in parameter_name:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
adapter_dir = os.path.join(out, "tiny-llama-peft")
peft_model.save_pretrained(adapter_dir)
if os.path.exists(os.path.join(adapter_dir, "README.md")):
    os.remove(os.path.join(adapter_dir, "README.md"))
# The checkpoint's absolute path would differ by checkout.
with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
    saved = json.load(f)
saved["base_model_name_or_path"] = "Tests/Fixtures/hf/tiny-llama"
saved["target_modules"] = sorted(saved["target_modules"])  # PEFT writes a set's order
with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
    json.dump(saved, f, indent=2, sort_keys=True)
peft_model.eval()
ids = records[2]["ids"]
with torch.no_grad():
    np.save(os.path.join(out, "tiny-llama-peft-logits.npy"),
            np.ascontiguousarray(peft_model(torch.tensor([ids])).logits[0].numpy(), dtype=np.float32))
peft_model.train()
output = peft_model(torch.tensor([ids]), labels=torch.tensor([ids]))
output.loss.backward()
gradients = {name.replace(".default", ""): p.grad.detach().contiguous()
             for name, p in peft_model.named_parameters() if "lora_" in name}
save_file(gradients, os.path.join(out, "tiny-llama-peft-grad.safetensors"))
with open(os.path.join(out, "tiny-llama-peft.json"), "w", encoding="utf-8") as f:
    json.dump({"ids": ids, "loss": output.loss.item()}, f)
print(f"peft: loss {output.loss.item():.6f}, {len(gradients)} gradient tensors")

# ---- the tiny Qwen2 checkpoint: q, k, v biases, a tied head, the qwen2 tokenizer ----
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

qwen_fast = PreTrainedTokenizerFast(
    tokenizer_object=qwen2, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
torch.manual_seed(2)
qwen_config = Qwen2Config(
    vocab_size=qwen2.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
    initializer_range=0.1, eos_token_id=qwen_fast.eos_token_id)
qwen_model = Qwen2ForCausalLM(qwen_config).eval()
with torch.no_grad():
    for name, parameter in qwen_model.named_parameters():
        # transformers initialises biases to zero and norms to one, which would hide them.
        if name.endswith("norm.weight"):
            parameter.uniform_(0.5, 1.5)
        elif name.endswith(".bias"):
            parameter.normal_(0.0, 0.5)
qwen_folder = os.path.join(out, "tiny-qwen2")
qwen_model.save_pretrained(qwen_folder)
qwen_fast.save_pretrained(qwen_folder)
qwen_model = Qwen2ForCausalLM.from_pretrained(qwen_folder, dtype=torch.float32).eval()
qwen_records = []
for k, text in enumerate(prompts):
    ids = qwen_fast.encode(text)
    with torch.no_grad():
        logits = qwen_model(torch.tensor([ids])).logits[0].numpy()
    np.save(os.path.join(out, f"tiny-qwen2-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))
    tokens, gap = greedy(qwen_model, ids)
    qwen_records.append({"text": text, "ids": ids, "greedy": tokens})
    print(f"qwen2 prompt {k}: {len(ids)} tokens, smallest top-2 gap {gap:.2e}")
with open(os.path.join(out, "tiny-qwen2.json"), "w", encoding="utf-8") as f:
    json.dump({"prompts": qwen_records}, f, ensure_ascii=False, indent=0)

# ---- a one-layer Llama whose heads are wider than hidden_size / heads (head_dim 32: q, o 128 wide) ----
torch.manual_seed(3)
wide_config = LlamaConfig(
    vocab_size=llama3.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.1,
    bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
wide_model = LlamaForCausalLM(wide_config).eval()
with torch.no_grad():
    for name, parameter in wide_model.named_parameters():
        if name.endswith("norm.weight"):
            parameter.uniform_(0.5, 1.5)
wide_folder = os.path.join(out, "tiny-llama-head-dim")
wide_model.save_pretrained(wide_folder)
fast.save_pretrained(wide_folder)
wide_model = LlamaForCausalLM.from_pretrained(wide_folder, dtype=torch.float32).eval()
assert wide_model.model.layers[0].self_attn.q_proj.weight.shape == (128, 64)
wide_records = []
for k, text in enumerate(prompts):
    ids = fast.encode(text)
    with torch.no_grad():
        logits = wide_model(torch.tensor([ids])).logits[0].numpy()
    np.save(os.path.join(out, f"tiny-llama-head-dim-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))
    tokens, gap = greedy(wide_model, ids)
    wide_records.append({"text": text, "ids": ids, "greedy": tokens})
    print(f"head_dim prompt {k}: {len(ids)} tokens, smallest top-2 gap {gap:.2e}")
with open(os.path.join(out, "tiny-llama-head-dim.json"), "w", encoding="utf-8") as f:
    json.dump({"prompts": wide_records}, f, ensure_ascii=False, indent=0)

# The same one-layer model in float16 (f16 weights are read as stored), with the logits of the
# f16 weights upcast exactly to float32 and run in float32.
half_folder = os.path.join(out, "tiny-llama-head-dim-f16")
wide_model.to(torch.float16).save_pretrained(half_folder)
fast.save_pretrained(half_folder)
half_upcast = LlamaForCausalLM.from_pretrained(half_folder, dtype=torch.float16).float().eval()
for k, record in enumerate(wide_records):
    with torch.no_grad():
        logits = half_upcast(torch.tensor([record["ids"]])).logits[0].numpy()
    np.save(os.path.join(out, f"tiny-llama-head-dim-f16-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))

# ---- a tiny Mistral: Llama's layers with a sliding window of 64 tokens, longer than every sequence
# here (prompt and 16 greedy tokens), which lorac makes the model's context ----
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402

torch.manual_seed(4)
mistral_config = MistralConfig(
    vocab_size=llama3.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256, sliding_window=64,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
    bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
mistral_model = MistralForCausalLM(mistral_config).eval()
with torch.no_grad():
    for name, parameter in mistral_model.named_parameters():
        if name.endswith("norm.weight"):
            parameter.uniform_(0.5, 1.5)
mistral_folder = os.path.join(out, "tiny-mistral")
mistral_model.to(torch.bfloat16).save_pretrained(mistral_folder)
fast.save_pretrained(mistral_folder)
mistral_model = MistralForCausalLM.from_pretrained(mistral_folder, dtype=torch.bfloat16).float().eval()
mistral_records = []
for k, text in enumerate(prompts):
    ids = fast.encode(text)
    with torch.no_grad():
        logits = mistral_model(torch.tensor([ids])).logits[0].numpy()
    np.save(os.path.join(out, f"tiny-mistral-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))
    tokens, gap = greedy(mistral_model, ids)
    assert len(ids) + len(tokens) <= 64
    mistral_records.append({"text": text, "ids": ids, "greedy": tokens})
    print(f"mistral prompt {k}: {len(ids)} tokens, smallest top-2 gap {gap:.2e}")
with open(os.path.join(out, "tiny-mistral.json"), "w", encoding="utf-8") as f:
    json.dump({"prompts": mistral_records}, f, ensure_ascii=False, indent=0)
