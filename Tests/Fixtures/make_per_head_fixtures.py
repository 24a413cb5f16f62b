#!/usr/bin/env python3
"""Per-head LoRA as in the TransformerLens tutorial, on SmolLM2 (same GGUF), for parity tests.

    /work/oracle/bin/python Tests/Fixtures/make_per_head_fixtures.py "$(scripts/fetch-model)"

The tutorial (ARENA "RLHF" chapter, `Lora` and `LoraHooks`) adds to each attention projection one
LoRA instance per head: q and o one per query head, k and v one per key/value head, each
`(x @ A[h]) @ B[h] * lora_alpha / rank` with A `(n_inst, d_in, rank)` and B `(n_inst, rank,
d_out)`; the o instances read the per-head input z `[..., n_heads, d_head]` and their outputs are
summed over heads. TransformerLens hooks (`hook_q`, `hook_z`, `hook_attn_out`) become PyTorch
forward hooks on transformers' `q_proj`/`k_proj`/`v_proj` (the output, viewed per head, plus the
LoRA of the projection's input) and `o_proj` (its output plus the head-summed LoRA of its input
viewed per head). `Lora` below is the tutorial's class with `einops.einsum` spelled as
`torch.einsum` (the same contraction).

Writes into Tests/Fixtures/smollm/:
- per_head_r2/: adapter_config.json and adapter_model.safetensors in lorac's per-head form
  (docs/adapters.md): r=2, lora_alpha=4, q,k,v,o of layers 0 and 15; tensors
  `base_model.model.model.layers.N.self_attn.X_proj.lora_A.weight` `(n_inst, d_in, r)` and
  `.lora_B.weight` `(n_inst, r, d_out)`, Hugging Face row order. A is the tutorial's
  initialisation (kaiming_uniform_(a=sqrt 5) on the 3-D tensor, seeded); B, which the tutorial
  starts at zero, is seeded random so the branches matter.
- per_head_logits.npy: float32 logits at every position for a sample of vocabulary columns.
- per_head_grads.safetensors: the gradient of the mean next-token loss for every adapter tensor
  (same names and shapes).
- per_head.json: ids, columns, loss, how far the adapter moves the logits from the base model's,
  and torch's fan-in, kaiming bound and largest |A| for each projection's A.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


class Lora(nn.Module):
    """The tutorial's LoRA block: (..., [inst], d_in) -> (..., inst, d_out)."""

    def __init__(self, d_in, d_out, rank=4, lora_alpha=32, n_inst=None, dtype=None):
        super().__init__()
        self.rank = rank
        self.d_in = d_in
        self.d_out = d_out
        self.n_inst = 1 if n_inst is None else n_inst
        self.lora_alpha = lora_alpha
        self.dtype = dtype
        self.A = nn.Parameter(torch.empty(self.n_inst, d_in, rank, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(self.n_inst, rank, d_out, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=5**0.5)

    def forward(self, x):
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        assert x.shape[-2] == self.n_inst or x.shape[-2] == 1
        # force order of operations (x A) B
        tmp = torch.einsum("...id,idr->...ir", x, self.A)
        out = torch.einsum("...ir,iro->...io", tmp, self.B)
        return out * self.lora_alpha / self.rank


class LoraHooks(nn.Module):
    """The tutorial's LoraHooks for one layer, as forward hooks on a transformers LlamaAttention."""

    def __init__(self, attention, n_heads, n_kv_heads, d_model, d_head, lora_alpha, rank):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.lora_q = Lora(d_model, d_head, n_inst=n_heads, rank=rank, lora_alpha=lora_alpha, dtype=torch.float32)
        self.lora_k = Lora(d_model, d_head, n_inst=n_kv_heads, rank=rank, lora_alpha=lora_alpha, dtype=torch.float32)
        self.lora_v = Lora(d_model, d_head, n_inst=n_kv_heads, rank=rank, lora_alpha=lora_alpha, dtype=torch.float32)
        self.lora_o = Lora(d_head, d_model, n_inst=n_heads, rank=rank, lora_alpha=lora_alpha, dtype=torch.float32)
        self.enabled = True
        for projection, lora in [("q_proj", self.lora_q), ("k_proj", self.lora_k), ("v_proj", self.lora_v)]:
            getattr(attention, projection).register_forward_hook(self.qkv_hook(lora))
        attention.o_proj.register_forward_hook(self.out_hook)

    def qkv_hook(self, lora):
        def hook(module, inputs, output):
            if not self.enabled:
                return output
            # hook_q/k/v: [batch, pos, n_heads, d_head]; the normalized input repeated once.
            per_head = output.view(*output.shape[:-1], -1, self.d_head)
            qkv_in_repeated = inputs[0].unsqueeze(-2)
            return (per_head + lora(qkv_in_repeated)).view(output.shape)
        return hook

    def out_hook(self, module, inputs, output):
        if not self.enabled:
            return output
        z = inputs[0].view(*inputs[0].shape[:-1], self.n_heads, self.d_head)  # hook_z
        lora_result = self.lora_o(z)
        return output + lora_result.sum(dim=-2)  # "... n_heads d_model -> ... d_model"


model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm")
folder, name = os.path.split(model_path)
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
model.eval()
for parameter in model.parameters():
    parameter.requires_grad_(False)
cfg = model.config
n_heads, n_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
d_model = cfg.hidden_size
d_head = d_model // n_heads
rank, lora_alpha, layers = 2, 4, [0, 15]

torch.manual_seed(2024)  # the tutorial's A initialisation draws from the global generator
hooks = {layer: LoraHooks(model.model.layers[layer].self_attn, n_heads, n_kv_heads, d_model, d_head,
                          lora_alpha, rank) for layer in layers}
generator = torch.Generator().manual_seed(77)
with torch.no_grad():
    for layer in layers:
        for lora in [hooks[layer].lora_q, hooks[layer].lora_k, hooks[layer].lora_v, hooks[layer].lora_o]:
            lora.B.copy_(torch.randn(lora.B.shape, generator=generator) * 0.1)

tensors = {}
for layer in layers:
    for projection in "qkvo":
        lora = getattr(hooks[layer], "lora_" + projection)
        prefix = f"base_model.model.model.layers.{layer}.self_attn.{projection}_proj."
        tensors[prefix + "lora_A.weight"] = lora.A
        tensors[prefix + "lora_B.weight"] = lora.B
adapter_dir = os.path.join(out, "per_head_r2")
os.makedirs(adapter_dir, exist_ok=True)
save_file({k: v.detach().contiguous() for k, v in tensors.items()},
          os.path.join(adapter_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
    json.dump({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none",
               "lora_alpha": lora_alpha, "lora_dropout": 0.0, "peft_type": "LORA", "per_head": True,
               "r": rank, "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"],
               "task_type": "CAUSAL_LM", "use_rslora": False}, f, indent=2, sort_keys=True)

ids = [1, 4093, 198, 1780, 314, 1075, 28, 216, 33, 34, 35, 30, 2, 198, 504, 3575]
output = model(torch.tensor([ids]), labels=torch.tensor([ids]))
output.loss.backward()
logits = output.logits[0].detach().float().numpy()
with torch.no_grad():
    for layer in layers:
        hooks[layer].enabled = False
    base = model(torch.tensor([ids])).logits[0].float().numpy()
gradients = {k: v.grad.detach().contiguous() for k, v in tensors.items()}
save_file(gradients, os.path.join(out, "per_head_grads.safetensors"))
sample = np.random.default_rng(11).choice(logits.shape[1], size=512, replace=False)
top = np.argsort(-logits, axis=1)[:, :16].reshape(-1)
columns = np.unique(np.concatenate([sample, top]))
np.save(os.path.join(out, "per_head_logits.npy"), np.ascontiguousarray(logits[:, columns], dtype=np.float32))
# torch's own fan-in of each 3-D A (d_in * rank), the kaiming_uniform_(a=sqrt 5) bound it gives,
# and the largest |A| the tutorial's initialisation drew (over both layers).
fan_in = {p: torch.nn.init._calculate_fan_in_and_fan_out(getattr(hooks[0], "lora_" + p).A)[0]
          for p in "qkvo"}
bounds = {p: math.sqrt(2 / (1 + 5)) * math.sqrt(3 / fan_in[p]) for p in "qkvo"}
largest = {p: max(getattr(hooks[layer], "lora_" + p).A.abs().max().item() for layer in layers)
           for p in "qkvo"}
with open(os.path.join(out, "per_head.json"), "w") as f:
    json.dump({"ids": ids, "columns": columns.tolist(), "loss": output.loss.item(),
               "max_abs_change_from_base": float(np.abs(logits - base).max()),
               "torch_fan_in": fan_in, "a_bounds": bounds, "a_max_abs": largest}, f)
print("loss", output.loss.item(), "adapter moves logits by up to", float(np.abs(logits - base).max()))
