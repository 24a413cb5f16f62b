#!/usr/bin/env python3
"""Reference data for lorac's SentencePiece-style tokenizers and chat templates, made by the
sentencepiece and tokenizers libraries and transformers (lorac itself never runs Python).

    /work/oracle/bin/python Tests/Fixtures/make_tokenizer_fixtures.py
        writes Tests/Fixtures/tokenizers/ (small enough to commit):
  NAME/tokenizer.json   SentencePiece-style BPE tokenizers (byte fallback) in the forms the model
                        families ship, over vocabularies trained by sentencepiece (BPE, ~600 pieces)
                        on a small corpus, with merges ranked by piece score as transformers'
                        converters write them:
                          llama2     legacy Llama 2 / Mistral v0.1: normalizer Prepend("▁") +
                                     Replace(" ", "▁"), no pre-tokenizer, decoder Replace +
                                     ByteFallback + Fuse + Strip, BOS by TemplateProcessing,
                                     [INST] [/INST] special, <tool> a normalized non-special token
                          mistral    transformers 5's LlamaTokenizer (legacy=False): Metaspace
                                     (prepend_scheme first, no split), no normalizer
                          gemma      Gemma's form: normalizer Replace(" ", "▁"), Split(" ",
                                     merged_with_previous), no dummy prefix, <bos> added,
                                     <start_of_turn>/<end_of_turn> special
                          metaspace  Metaspace(prepend_scheme always, split) and a Metaspace
                                     decoder, byte_fallback off: characters outside the vocabulary
                                     are <unk>, fused (fuse_unk)
  NAME.json             {"strings": [{"text", "ids", "ids_special", "decoded"}]}: 230 strings
                        encoded by the tokenizers library with add_special_tokens False (ids) and
                        True (ids_special), and its decoding of ids
  llama-spm.gguf.json   a GGUF (as text, gguf_parts.py) with no tensors and the llama2 vocabulary as tokenizer.ggml.model
                        "llama" (tokens, scores, token types, BOS/EOS/UNK, add_bos_token), the
                        Mistral v0.1 chat template
  llama-spm.json        {"strings": [{"text", "ids", "ids_raw", "decoded"}]}: sentencepiece's ids
                        for each fragment of the text between special tokens (llama.cpp prefixes
                        a space to the first fragment and to each one after a special token, and
                        splits USER_DEFINED tokens always, CONTROL ones only when parsing them):
                        ids with special tokens parsed, ids_raw without; decoded is the mistral
                        tokenizer.json's decoding of ids (the same vocabulary, decoders Replace,
                        ByteFallback, Fuse, Strip)
  chat.json             {"templates": {NAME: template text}, "cases": [{"template", "messages",
                        "add_generation_prompt", "bos", "eos", "text" | "error"}]}: public chat
                        templates of ChatML (Qwen2, SmolLM2, plain), Llama 3, Gemma and Mistral
                        [INST] rendered by transformers' apply_chat_template (or the error it raised)
"""
import io
import json
import os
import random

import fixture_corpus  # the tokenizers' training corpus, shared by the fixture scripts

import gguf
from gguf_parts import write_parts
import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers.tokenization_utils_base import generate_merges

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizers")
os.makedirs(out, exist_ok=True)

# ---- a small corpus: prose, code, numbers, several scripts ----
corpus = fixture_corpus.corpus(fixture_corpus.SCORES)
words = fixture_corpus.WORDS


def train_spm(**options):
    """A sentencepiece BPE model with byte fallback and no normalization (as Llama's)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe", vocab_size=600,
        byte_fallback=True, character_coverage=0.995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        max_sentence_length=4096, num_threads=1, minloglevel=2, **options)
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def bpe_model(sp, skip, user_defined, byte_fallback=True):
    """The tokenizers library's BPE of a sentencepiece model, as transformers' converters make it:
    every piece in the vocabulary, merges of normal pieces ranked by the score of their result."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    normal = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.id_to_piece(i) in user_defined)}
    merges = generate_merges(vocab, normal, skip_tokens=skip)
    return models.BPE(vocab=vocab, merges=merges, unk_token=sp.id_to_piece(sp.unk_id()), fuse_unk=True,
                      byte_fallback=byte_fallback, dropout=None)


def add_tokens(tokenizer, sp, user_defined):
    """Control pieces become special added tokens, user-defined ones plain added tokens, as the
    converters do (unk, bos, eos special too)."""
    specials = [AddedToken(sp.id_to_piece(i), normalized=False, special=True)
                for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    tokenizer.add_special_tokens(specials)
    for text in user_defined:
        tokenizer.add_tokens([AddedToken(text, normalized=True, special=False)])


def bos_template(tokenizer, bos):
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.token_to_id(bos))])


# Llama 2 / Mistral vocabulary: <unk> 0, <s> 1, </s> 2, then [INST] [/INST] control, <tool> user-defined.
llama_user = ["<tool>"]
llama_sp = train_spm(unk_id=0, bos_id=1, eos_id=2, pad_id=-1, control_symbols=["[INST]", "[/INST]"],
                     user_defined_symbols=llama_user, add_dummy_prefix=True)
llama_skip = {"<unk>", "<s>", "</s>", "[INST]", "[/INST]"} | set(llama_user)
# Gemma vocabulary: <pad> 0, <eos> 1, <bos> 2, <unk> 3, then its turn markers; no dummy prefix.
gemma_sp = train_spm(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                     bos_piece="<bos>", control_symbols=["<start_of_turn>", "<end_of_turn>"],
                     add_dummy_prefix=False)
gemma_skip = {"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"}

spm_decoder = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]

llama2 = Tokenizer(bpe_model(llama_sp, llama_skip, llama_user))
llama2.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
llama2.decoder = decoders.Sequence(spm_decoder + [decoders.Strip(" ", 1, 0)])
add_tokens(llama2, llama_sp, llama_user)
bos_template(llama2, "<s>")

mistral = Tokenizer(bpe_model(llama_sp, llama_skip, llama_user))
mistral.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
mistral.decoder = decoders.Sequence(spm_decoder + [decoders.Strip(" ", 1, 0)])
add_tokens(mistral, llama_sp, [])
bos_template(mistral, "<s>")

gemma = Tokenizer(bpe_model(gemma_sp, gemma_skip, []))
gemma.normalizer = normalizers.Replace(" ", "▁")
gemma.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
gemma.decoder = decoders.Sequence(spm_decoder)
add_tokens(gemma, gemma_sp, [])
bos_template(gemma, "<bos>")

metaspace = Tokenizer(bpe_model(llama_sp, llama_skip, llama_user, byte_fallback=False))
metaspace.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
metaspace.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
add_tokens(metaspace, llama_sp, [])

tokenizers = {"llama2": llama2, "mistral": mistral, "gemma": gemma, "metaspace": metaspace}
for name, tokenizer in tokenizers.items():
    os.makedirs(os.path.join(out, name), exist_ok=True)
    tokenizer.save(os.path.join(out, name, "tokenizer.json"))
    tokenizers[name] = Tokenizer.from_file(os.path.join(out, name, "tokenizer.json"))

# ---- test strings: hand-picked cases, then seeded random mixtures ----
strings = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading",
    "multiple   spaces   inside", "tabs\tand\ttabs", "new\nlines\n\nand\r\ncrlf", "\n\n\n", "   ", "", " ",
    "a", "I'm sure it's fine, we'll see; they're here, I've gone, you'd know", "DON'T SHOUT I'LL",
    "mystery_function(123, 456)\n", ">>> mystery_function(123, 123)\n246", "3.14159265358979323846",
    "1234567890123456789012345678901234567890", "-42 +7 1e-5 0x1F", "2024-11-22T15:37:45Z",
    "$1,000,000.00", "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
    "import numpy as np\nnp.zeros((3, 4))", "SELECT * FROM users WHERE id = 7;",
    "<html><body>Hi</body></html>", "https://example.com/a?b=c&d=e", "café naïve résumé",
    "cafe\u0301 composed later", "Ünïcödé ÅÄÖ", "日本語のテキスト", "中文文本测试", "한국어 텍스트",
    "Привет, мир", "Γειά σου Κόσμε", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "🙂🙃😀 emoji 🎉",
    "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "x²+y³ ½ Ⅻ", "… 🙂 ٣٤", "Ａ１２３ full-width digits",
    "math: ∑ ∫ √ ∞ ≠ ≤", "quotes “curly” ‘single’ «guillemets»", "em—dash en–dash … ellipsis",
    "zero\u200bwidth", "nbsp\u00a0here", "control\x01chars\x7f", "ideographic\u3000space",
    "line\u2028separator", "e\u0301\u0302\u0303 stacked marks", "\u0301 leading mark",
    "▁already▁escaped ▁", "<0x41> looks like a byte token", "<unk> <s> </s>", "<s>Hello</s>",
    "[INST] What is 2+2? [/INST] 4</s>", "<s>[INST] Hi [/INST]", "text[INST]more", "a [/INST]b",
    "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "<start_of_turn>", "x<end_of_turn>y",
    "<tool>call</tool> <tool>", "a <tool> b", "<tool>", "x<tool>y", "  <tool>  ", "<pad><eos>",
    "The quick brown fox jumps over the lazy dog.", "A" * 100, "ab" * 50, "!!!???...,,,",
    "snake_case_name CamelCaseName kebab-case-name", "e.g. i.e. etc. Mr. Dr.", "x=1;y=2;z=x+y",
    "    indented code\n        more indented", "ÆØÅ æøå ß ẞ", "ﬁ ligature", "'s 't 're 've 'm 'll 'd",
    "1 22 333 4444 55555", "word\n\n\nword", " \n \n ", "\t\t\tx", "trailing newline\n",
    "   leading and trailing   ", "a\r\rb", "ends with spaces  ", "x  ", " x", "  x",
    "vertical\x0btab", "next\x85line", "form\x0cfeed", "\u2003em space\u2003 x", "\U0001F9EA\U0001FAE0 new emoji",
    "\U00010348 gothic", "tensor tensors tensorial", "the the the the the", "compiler-compiler",
]
alphabet = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n.,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`▁")
    + list("éüßçñøå日本中文한국Привет🙂🎉—…“”½²\u0301")
    + ["  ", "   ", "\r\n", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<tool>", "<bos>",
       "<start_of_turn>", "<end_of_turn>", "e\u0301", "<0x0A>"]
)
rng = random.Random(2026)
while len(strings) < 230:
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

for name, tokenizer in tokenizers.items():
    cases = []
    for text in strings:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False),
                      "ids_special": tokenizer.encode(text, add_special_tokens=True).ids})
    with open(os.path.join(out, name + ".json"), "w", encoding="utf-8") as f:
        json.dump({"strings": cases}, f, ensure_ascii=False, indent=0)
    unk = sum(tokenizer.token_to_id("<unk>") in case["ids"] for case in cases) if name == "metaspace" else 0
    print(f"tokenizer {name}: {tokenizer.get_vocab_size()} tokens, {len(cases)} strings"
          + (f", {unk} with <unk>" if unk else ""))

# ---- the same Llama vocabulary as a GGUF `llama` tokenizer ----
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
writer = gguf.GGUFWriter(os.path.join(out, "llama-spm.gguf"), "llama")
writer.add_tokenizer_model("llama")
pieces, scores, types = [], [], []
for i in range(llama_sp.get_piece_size()):
    piece = llama_sp.id_to_piece(i)
    pieces.append(piece)
    scores.append(llama_sp.get_score(i))
    if llama_sp.is_unknown(i):
        types.append(gguf.TokenType.UNKNOWN)
    elif llama_sp.is_control(i):
        types.append(gguf.TokenType.CONTROL)
    elif llama_sp.is_byte(i):
        types.append(gguf.TokenType.BYTE)
    elif piece in llama_user:
        types.append(gguf.TokenType.USER_DEFINED)
    else:
        types.append(gguf.TokenType.NORMAL)
writer.add_token_list(pieces)
writer.add_token_scores(scores)
writer.add_token_types(types)
writer.add_bos_token_id(1)
writer.add_eos_token_id(2)
writer.add_unk_token_id(0)
writer.add_add_bos_token(True)
writer.add_add_space_prefix(True)
writer.add_chat_template(MISTRAL_TEMPLATE)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
write_parts(os.path.join(out, "llama-spm.gguf"), remove=True)  # committed as text, gguf_parts.py


def fragments(text, specials):
    """The text split at every occurrence of the special texts (longest first), as llama.cpp's
    tokenizer_st_partition does: ("text", str) and ("token", id) pieces."""
    parts = [("text", text)]
    for special in sorted(specials, key=len, reverse=True):
        split = []
        for kind, value in parts:
            if kind != "text":
                split.append((kind, value))
                continue
            pieces = value.split(special)
            for k, piece in enumerate(pieces):
                if piece:
                    split.append(("text", piece))
                if k + 1 < len(pieces):
                    split.append(("token", llama_sp.piece_to_id(special)))
        parts = split
    return parts


control = [p for i, p in enumerate(pieces) if types[i] in (gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN)]
spm_cases = []
for text in strings:
    record = {"text": text}
    for key, specials in [("ids", control + llama_user), ("ids_raw", llama_user)]:
        ids = []
        for kind, value in fragments(text, specials):
            # sentencepiece adds the dummy prefix to each fragment, as llama.cpp does after a special token.
            ids += [value] if kind == "token" else llama_sp.encode(value)
        record[key] = ids
    # The mistral form decodes the same vocabulary as llama.cpp does (<tool> is a plain token there).
    record["decoded"] = tokenizers["mistral"].decode(record["ids"], skip_special_tokens=False)
    spm_cases.append(record)
with open(os.path.join(out, "llama-spm.json"), "w", encoding="utf-8") as f:
    json.dump({"strings": spm_cases}, f, ensure_ascii=False, indent=0)
print(f"llama-spm.gguf: {len(pieces)} tokens, {len(spm_cases)} strings")

# ---- chat templates, rendered by transformers ----
from transformers import PreTrainedTokenizerFast  # noqa: E402

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
templates = {"chatml": CHATML, "qwen2": QWEN2, "smollm2": SMOLLM2, "llama3": LLAMA3, "gemma": GEMMA,
             "mistral": MISTRAL_TEMPLATE}
specials = {"chatml": ("<|im_start|>", "<|im_end|>"), "qwen2": ("<|endoftext|>", "<|im_end|>"),
            "smollm2": ("<|im_start|>", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
            "gemma": ("<bos>", "<eos>"), "mistral": ("<s>", "</s>")}


def m(role, content):
    return {"role": role, "content": content}


conversations = [
    [m("user", "Hi!")],
    [m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")],
    [m("user", "  padded question \n"), m("assistant", "\n\tpadded answer  ")],
    [m("system", "Be brief."), m("user", "日本語で答えて 🙂"), m("assistant", "はい。")],
    [m("user", "Write code:\n```\nfor i in range(3):\n    print(i)\n```"), m("assistant", "Done.\n")],
    [m("user", "a"), m("user", "b")],
    [m("assistant", "I start.")],
    [m("user", "x"), m("tool", "y")],
    [m("user", "\u3000ideographic and nbsp\u00a0"), m("assistant", "\x1ffile separator\x1c")],
    [m("user", "")],
]
chat_cases = []
for name, template in templates.items():
    bos, eos = specials[name]
    wrapper = PreTrainedTokenizerFast(tokenizer_object=tokenizers["mistral"], bos_token=bos, eos_token=eos)
    for messages in conversations:
        for generation in [False, True]:
            case = {"template": name, "messages": messages, "add_generation_prompt": generation,
                    "bos": bos, "eos": eos}
            try:
                case["text"] = wrapper.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=generation)
            except Exception as error:  # the template's raise_exception
                case["error"] = str(error)
            chat_cases.append(case)
with open(os.path.join(out, "chat.json"), "w", encoding="utf-8") as f:
    json.dump({"templates": templates, "cases": chat_cases}, f, ensure_ascii=False, indent=0)
print(f"chat: {len(templates)} templates, {len(chat_cases)} cases, {sum('error' in c for c in chat_cases)} errors")
