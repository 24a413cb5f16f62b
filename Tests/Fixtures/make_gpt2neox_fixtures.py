#!/usr/bin/env python3
"""Reference data for lorac's GPT-2 and GPT-NeoX (Pythia) families, made by transformers, PEFT and
the tokenizers library (lorac itself never runs Python).

    /work/oracle/bin/python Tests/Fixtures/make_gpt2neox_fixtures.py
        writes into Tests/Fixtures/hf/:
  tokenizers/gpt2/tokenizer.json   byte-level BPE as GPT-2 ships it: ByteLevel pre-tokenizer with
                                   GPT-2's regex, ByteLevel post-processor (no BOS), <|endoftext|>,
                                   empty continuing_subword_prefix / end_of_word_suffix
  tokenizers/neox/tokenizer.json   as Pythia ships it: NFC, the same ByteLevel pre-tokenizer,
                                   <|endoftext|> and <|padding|>, non-special whitespace-run tokens
  tokenizers/{gpt2,neox}.json      ids of the 220 strings of tokenizers/smollm.json (made by
                                   make_hf_fixtures.py), with and without special tokens
  tiny-gpt2/                       GPT2LMHeadModel: n_embd 64, 2 layers, 4 heads, gelu_new, ffn 128, tied
                                   head, every LayerNorm and bias randomised
  tiny-neox/                       GPTNeoXForCausalLM: hidden 64, 2 layers, 4 heads, ffn 128, rotary 25% of
                                   each head, parallel residual, exact GELU, separate head
  tiny-neox-sequential/            one NeoX layer (hidden 32) with use_parallel_residual false,
                                   rotary 50%
  tiny-{gpt2,neox,neox-sequential}.json      {"prompts": [{"text", "ids", "greedy"}]}
  tiny-{...}-logits-K.npy          transformers' float32 logits at every position of prompt K
  tiny-{gpt2,neox}-peft/           PEFT adapter (r 4, alpha 8) on the fused qkv, the attention
                                   output and both MLP linears, A and B random
  tiny-{gpt2,neox}-peft.json       {"ids", "loss", "split_loss"}
  tiny-{gpt2,neox}-peft-grad.safetensors   PEFT's gradients of the fused adapter
  tiny-gpt2-small.gguf.json             a one-layer GPT-2 (hidden 32) as llama.cpp's converter writes it
                                   (tiny-gpt2-small.json, logits of prompts 0, 1, 3)
  tiny-neox-sequential.gguf.json        tiny-neox-sequential as llama.cpp's converter writes it
  tiny-{gpt2,neox}-split-*         the split oracle: separate q, k, v adapters (rank 4 each) are a
                                   PEFT rank-12 adapter on the fused module whose B is zero outside
                                   the q/k/v blocks; lorac-named A and B (split.safetensors) and
                                   their gradients (the blocks of PEFT's, split-grad.safetensors)
"""
from gguf_parts import write_parts  # the GGUFs are committed as text (gguf_parts.py)
import json
import os

import fixture_corpus  # the tokenizers' training corpus, shared by the fixture scripts

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          PreTrainedTokenizerFast)

torch.set_num_threads(2)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")
corpus = fixture_corpus.corpus()




def train(normalizer, special, vocab_size=384):
    tokenizer = Tokenizer(models.BPE())
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer, name):
    folder = os.path.join(out, "tokenizers", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "tokenizer.json")
    tokenizer.save(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    # As GPT-2's and Pythia's tokenizer.json spell them.
    data["model"]["continuing_subword_prefix"] = ""
    data["model"]["end_of_word_suffix"] = ""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    return Tokenizer.from_file(path)


gpt2_tok = save_tokenizer(train(None, ["<|endoftext|>"]), "gpt2")
neox_raw = train(normalizers.NFC(), ["<|endoftext|>", "<|padding|>"])
# Pythia's vocabulary ends with non-special runs of spaces, matched wherever they occur.
neox_raw.add_tokens(["  ", "    ", "        "])
neox_tok = save_tokenizer(neox_raw, "neox")

with open(os.path.join(out, "tokenizers", "smollm.json"), encoding="utf-8") as f:
    strings = [case["text"] for case in json.load(f)["strings"]]
assert len(strings) >= 200
for name, tokenizer in [("gpt2", gpt2_tok), ("neox", neox_tok)]:
    cases = []
    for text in strings:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False),
                      "ids_special": tokenizer.encode(text, add_special_tokens=True).ids})
    with open(os.path.join(out, "tokenizers", name + ".json"), "w", encoding="utf-8") as f:
        json.dump({"strings": cases}, f, ensure_ascii=False, indent=0)
    print(f"tokenizer {name}: {tokenizer.get_vocab_size()} tokens, {len(cases)} strings")

prompts = [
    "The quick brown fox",
    "def fibonacci(n):\n    return",
    "Once upon a time, in a small village, there lived",
    "日本語 and café: 2024 🙂",
    ">>> mystery_function(123, 456)\n",
]


def randomise(model):
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # transformers initialises LayerNorms to (1, 0) and biases to 0, which would hide them.
            if parameter.dim() == 1 and ("ln" in name or "layernorm" in name or "norm" in name) and name.endswith("weight"):
                parameter.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                parameter.normal_(0.0, 0.2)


def greedy(m, ids, eos):
    with torch.no_grad():
        result = m.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=16, pad_token_id=eos, eos_token_id=None)[0, len(ids):].tolist()
        logits = m(torch.tensor([ids + result[:-1]])).logits[0, len(ids) - 1:]
    top = torch.topk(logits, 2, dim=-1).values
    return result, float((top[:, 0] - top[:, 1]).min())


def checkpoint(name, model, fast, cls, folder=None, logits_of=range(len(prompts))):
    folder = folder or os.path.join(out, name)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    records = []
    for k, text in enumerate(prompts):
        ids = fast.encode(text)
        if k in logits_of:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].numpy()
            np.save(os.path.join(out, f"{name}-logits-{k}.npy"), np.ascontiguousarray(logits, dtype=np.float32))
        tokens, gap = greedy(model, ids, fast.eos_token_id)
        records.append({"text": text, "ids": ids, "greedy": tokens})
        print(f"{name} prompt {k}: {len(ids)} tokens, smallest top-2 gap {gap:.2e}")
    with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump({"prompts": records}, f, ensure_ascii=False, indent=0)
    return folder, records


gpt2_fast = PreTrainedTokenizerFast(
    tokenizer_object=gpt2_tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
    unk_token="<|endoftext|>")
torch.manual_seed(20)
gpt2 = GPT2LMHeadModel(GPT2Config(
    vocab_size=gpt2_tok.get_vocab_size(), n_positions=128, n_embd=64, n_layer=2, n_head=4, n_inner=128,
    activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=0.1,
    bos_token_id=gpt2_fast.eos_token_id, eos_token_id=gpt2_fast.eos_token_id)).eval()
randomise(gpt2)
gpt2_folder, gpt2_records = checkpoint("tiny-gpt2", gpt2, gpt2_fast, GPT2LMHeadModel)

neox_fast = PreTrainedTokenizerFast(
    tokenizer_object=neox_tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
    pad_token="<|padding|>")
torch.manual_seed(21)
neox = GPTNeoXForCausalLM(GPTNeoXConfig(
    vocab_size=neox_tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, rotary_pct=0.25, rotary_emb_base=10000,
    max_position_embeddings=256, use_parallel_residual=True, hidden_act="gelu",
    layer_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,
    bos_token_id=neox_fast.bos_token_id, eos_token_id=neox_fast.eos_token_id)).eval()
randomise(neox)
neox_folder, neox_records = checkpoint("tiny-neox", neox, neox_fast, GPTNeoXForCausalLM)

torch.manual_seed(22)
sequential = GPTNeoXForCausalLM(GPTNeoXConfig(
    vocab_size=neox_tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
    num_hidden_layers=1, num_attention_heads=4, rotary_pct=0.5, rotary_emb_base=1000,
    max_position_embeddings=256, use_parallel_residual=False, hidden_act="gelu",
    layer_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.1,
    bos_token_id=neox_fast.bos_token_id, eos_token_id=neox_fast.eos_token_id)).eval()
randomise(sequential)
checkpoint("tiny-neox-sequential", sequential, neox_fast, GPTNeoXForCausalLM)

# ---- PEFT adapters: the fused module, and the split q, k, v as blocks of a fused one ----
from peft import LoraConfig, get_peft_model  # noqa: E402


def peft_case(name, folder, cls, ids, fused, others, blocks, layers, lorac_names):
    """`blocks(d, heads)`: the fused output rows of q, k and v."""
    generator = torch.Generator().manual_seed(23)

    def run(model):
        # eval: GPT-2's configs keep dropout 0.1, which train() would apply.
        model.eval()
        output = model(torch.tensor([ids]), labels=torch.tensor([ids]))
        output.loss.backward()
        return output.loss.item(), {n.replace(".default", ""): p.grad.detach().contiguous()
                                   for n, p in model.named_parameters() if "lora_" in n}

    base = cls.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=[fused] + others,
        fan_in_fan_out=(cls is GPT2LMHeadModel)))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    adapter = os.path.join(out, f"{name}-peft")
    model.save_pretrained(adapter)
    if os.path.exists(os.path.join(adapter, "README.md")):
        os.remove(os.path.join(adapter, "README.md"))
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        saved = json.load(f)
    saved["base_model_name_or_path"] = f"Tests/Fixtures/hf/{name}"
    saved["target_modules"] = sorted(saved["target_modules"])
    with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
    loss, gradients = run(model)
    save_file(gradients, os.path.join(out, f"{name}-peft-grad.safetensors"))

    # Split: q, k, v adapters of rank 4 each = one rank-12 adapter on the fused module whose
    # A is [A_q; A_k; A_v] and whose B holds B_q, B_k, B_v on the q, k, v rows and zero elsewhere.
    rank, alpha = 4, 8
    base = cls.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(
        r=3 * rank, lora_alpha=3 * alpha, lora_dropout=0.0, target_modules=[fused],
        fan_in_fan_out=(cls is GPT2LMHeadModel)))
    split, split_grad = {}, {}
    with torch.no_grad():
        for layer in range(layers):
            module = model.get_submodule(lorac_names["module"](layer))
            a = module.lora_A["default"].weight  # [3r, in]
            b = module.lora_B["default"].weight  # [out, 3r]
            b.zero_()
            width = b.shape[0] // 3
            for part, rows in enumerate(blocks(width)):
                a_part = torch.randn((rank, a.shape[1]), generator=generator) * 0.1
                b_part = torch.randn((len(rows), rank), generator=generator) * 0.1
                a[part * rank:(part + 1) * rank] = a_part
                b[rows, part * rank:(part + 1) * rank] = b_part
                key = f"layers.{layer}.attn.{'qkv'[part]}"
                # lorac stores A [in, rank] and B [rank, out].
                split[key + ".lora_a"] = a_part.t().contiguous()
                split[key + ".lora_b"] = b_part.t().contiguous()
    split_loss, grads = run(model)
    for layer in range(layers):
        prefix = lorac_names["peft"](layer)
        ga, gb = grads[prefix + ".lora_A.weight"], grads[prefix + ".lora_B.weight"]
        width = gb.shape[0] // 3
        for part, rows in enumerate(blocks(width)):
            key = f"layers.{layer}.attn.{'qkv'[part]}"
            split_grad[key + ".lora_a"] = ga[part * rank:(part + 1) * rank].t().contiguous()
            split_grad[key + ".lora_b"] = gb[rows, part * rank:(part + 1) * rank].t().contiguous()
    save_file(split, os.path.join(out, f"{name}-split.safetensors"))
    save_file(split_grad, os.path.join(out, f"{name}-split-grad.safetensors"))
    with open(os.path.join(out, f"{name}-peft.json"), "w", encoding="utf-8") as f:
        json.dump({"ids": ids, "loss": loss, "split_loss": split_loss, "split_rank": rank,
                   "split_alpha": alpha}, f)
    print(f"{name} peft: loss {loss:.6f}, split loss {split_loss:.6f}, {len(gradients)} gradient tensors")


peft_case(
    "tiny-gpt2", gpt2_folder, GPT2LMHeadModel, gpt2_records[2]["ids"], "c_attn", ["c_proj", "c_fc"],
    lambda d: [list(range(0, d)), list(range(d, 2 * d)), list(range(2 * d, 3 * d))], 2,
    {"module": lambda n: f"base_model.model.transformer.h.{n}.attn.c_attn",
     "peft": lambda n: f"base_model.model.transformer.h.{n}.attn.c_attn"})
heads, head_dim = 4, 16
peft_case(
    "tiny-neox", neox_folder, GPTNeoXForCausalLM, neox_records[2]["ids"], "query_key_value",
    ["dense", "dense_h_to_4h", "dense_4h_to_h"],
    lambda d: [[h * 3 * head_dim + part * head_dim + j for h in range(heads) for j in range(head_dim)]
               for part in range(3)], 2,
    {"module": lambda n: f"base_model.model.gpt_neox.layers.{n}.attention.query_key_value",
     "peft": lambda n: f"base_model.model.gpt_neox.layers.{n}.attention.query_key_value"})

# ---- GGUF files as llama.cpp's convert_hf_to_gguf.py writes them (gguf package) ----
# GPT-2: Conv1D weights transposed to [out, in], output.weight a copy of token_embd.weight.
# GPT-NeoX: query_key_value's per-head rows reordered to all q, then k, then v;
# rope.dimension_count the rotary share. Both f32, with the byte-level BPE as tokenizer.ggml.*.
import tempfile  # noqa: E402

import gguf  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def add_tokenizer(writer, tokenizer, fast):
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * tokenizer.get_vocab_size()
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for text, index in vocab.items():
        tokens[index] = text
    for added in data["added_tokens"]:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(pair) if isinstance(pair, list) else pair for pair in data["model"]["merges"]])
    writer.add_bos_token_id(fast.bos_token_id)
    writer.add_eos_token_id(fast.eos_token_id)
    writer.add_add_bos_token(False)


def write_gguf(path, arch, tensors, metadata, tokenizer, fast):
    writer = gguf.GGUFWriter(path, arch)
    metadata(writer)
    add_tokenizer(writer, tokenizer, fast)
    for name, tensor in tensors:
        writer.add_tensor(name, np.ascontiguousarray(tensor.detach().float().numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# A one-layer GPT-2 (hidden 32), its own logits and greedy tokens, then its GGUF.
torch.manual_seed(24)
small = GPT2LMHeadModel(GPT2Config(
    vocab_size=gpt2_tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=1, n_head=4,
    n_inner=64, activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=0.1,
    bos_token_id=gpt2_fast.eos_token_id, eos_token_id=gpt2_fast.eos_token_id)).eval()
randomise(small)
# Only the GGUF is kept (the folder is made in a temporary directory), with the logits of
# prompts 0, 1 and 3 and every prompt's greedy tokens.
small_folder, _ = checkpoint(
    "tiny-gpt2-small", small, gpt2_fast, GPT2LMHeadModel, folder=tempfile.mkdtemp(), logits_of=(0, 1, 3))
state = load_file(os.path.join(small_folder, "model.safetensors"))
names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
         "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
tensors = [("token_embd.weight", state["transformer.wte.weight"]),
           ("position_embd.weight", state["transformer.wpe.weight"]),
           ("output_norm.weight", state["transformer.ln_f.weight"]),
           ("output_norm.bias", state["transformer.ln_f.bias"]),
           ("output.weight", state["transformer.wte.weight"])]
for hf, name in names.items():
    for kind in ["weight", "bias"]:
        tensor = state[f"transformer.h.0.{hf}.{kind}"]
        if kind == "weight" and hf not in ("ln_1", "ln_2"):
            tensor = tensor.t()
        tensors.append((f"blk.0.{name}.{kind}", tensor))


def gpt2_metadata(writer):
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_layer_norm_eps(1e-5)


write_gguf(os.path.join(out, "tiny-gpt2-small.gguf"), "gpt2", tensors, gpt2_metadata, gpt2_tok, gpt2_fast)
write_parts(os.path.join(out, "tiny-gpt2-small.gguf"), remove=True)

# The sequential NeoX (its logits are tiny-neox-sequential-logits-K.npy).
state = load_file(os.path.join(out, "tiny-neox-sequential", "model.safetensors"))
heads, hidden = 4, 32
tensors = [("token_embd.weight", state["gpt_neox.embed_in.weight"]),
           ("output_norm.weight", state["gpt_neox.final_layer_norm.weight"]),
           ("output_norm.bias", state["gpt_neox.final_layer_norm.bias"]),
           ("output.weight", state["embed_out.weight"])]
names = {"input_layernorm": "attn_norm", "attention.query_key_value": "attn_qkv",
         "attention.dense": "attn_output", "post_attention_layernorm": "ffn_norm",
         "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}
for hf, name in names.items():
    for kind in ["weight", "bias"]:
        tensor = state[f"gpt_neox.layers.0.{hf}.{kind}"]
        if hf == "attention.query_key_value":
            shape = (heads, 3, hidden // heads) + tuple(tensor.shape[1:])
            grouped = tensor.reshape(shape)
            tensor = torch.cat([grouped[:, part].reshape((-1,) + tuple(tensor.shape[1:])) for part in range(3)], dim=0)
        tensors.append((f"blk.0.{name}.{kind}", tensor))


def neox_metadata(writer):
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(64)
    writer.add_rope_dimension_count(4)
    writer.add_rope_freq_base(1000.0)
    writer.add_head_count(heads)
    writer.add_parallel_residual(False)
    writer.add_layer_norm_eps(1e-6)


write_gguf(os.path.join(out, "tiny-neox-sequential.gguf"), "gptneox", tensors, neox_metadata, neox_tok, neox_fast)
write_parts(os.path.join(out, "tiny-neox-sequential.gguf"), remove=True)
print("wrote tiny-gpt2-small.gguf, tiny-neox-sequential.gguf")
