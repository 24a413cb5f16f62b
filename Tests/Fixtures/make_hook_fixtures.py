#!/usr/bin/env python3
"""Hook-point oracles from transformers on SmolLM2 (the same GGUF, float32): captured residual
streams and a steering vector added by a forward hook.

    /work/oracle/bin/python Tests/Fixtures/make_hook_fixtures.py "$(scripts/fetch-model)"

Writes Tests/Fixtures/smollm/hooks/:
  hooks.json              {"ids", "layers", "steer_layer", "steer_scale", "columns", "greedy",
                           "steered_greedy"}
  residual.safetensors    "embed" and "layers.N.residual.mlp" for N in layers: transformers'
                          hidden_states[0] and hidden_states[N + 1], each [1, n, 576]
  steer.npy               float32 [576]: the steering vector (seeded normal values)
  steered_logits.npy      float32 [n, len(columns)]: the logits with steer_scale * steer added to
                          the output of decoder layer steer_layer by a forward hook (the residual
                          stream after that layer), at a fixed sample of vocabulary columns
  greedy / steered_greedy 12 greedy tokens after the prompt without and with the hook (the hook
                          applies at every position transformers computes, cached or not)
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm", "hooks")
os.makedirs(out, exist_ok=True)
folder, name = os.path.split(model_path)
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
model.eval()

ids = [1, 4093, 198, 1780, 314, 1075, 28, 216, 33, 34, 35, 30]
layers = [0, 7, 15, 28]
steer_layer, steer_scale = 10, 4.0
tokens = torch.tensor([ids])

with torch.no_grad():
    plain = model(tokens, output_hidden_states=True)
hidden = plain.hidden_states
assert len(hidden) == model.config.num_hidden_layers + 1
tensors = {"embed": hidden[0].contiguous()}
for n in layers:
    tensors[f"layers.{n}.residual.mlp"] = hidden[n + 1].contiguous()
save_file(tensors, os.path.join(out, "residual.safetensors"))

generator = torch.Generator().manual_seed(5)
steer = torch.randn(model.config.hidden_size, generator=generator)
np.save(os.path.join(out, "steer.npy"), steer.numpy().astype(np.float32))


def add_steering(module, inputs, output):
    if isinstance(output, tuple):
        return (output[0] + steer_scale * steer,) + tuple(output[1:])
    return output + steer_scale * steer


handle = model.model.layers[steer_layer].register_forward_hook(add_steering)
with torch.no_grad():
    steered = model(tokens).logits[0]
    steered_greedy = model.generate(tokens, attention_mask=torch.ones_like(tokens),
                                    max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
handle.remove()
with torch.no_grad():
    greedy = model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=12,
                            do_sample=False)[0, len(ids):].tolist()
difference = (steered - plain.logits[0]).abs().max().item()
assert difference > 1.0, f"the steering vector barely changes the logits ({difference})"

random_columns = torch.randperm(steered.shape[1], generator=generator)[:512].tolist()
top = torch.topk(steered, 16, dim=1).indices.flatten().tolist()
columns = sorted(set(random_columns) | set(top))
np.save(os.path.join(out, "steered_logits.npy"), steered[:, columns].numpy().astype(np.float32))
with open(os.path.join(out, "hooks.json"), "w") as f:
    json.dump({"ids": ids, "layers": layers, "steer_layer": steer_layer,
               "steer_scale": steer_scale, "columns": columns, "greedy": greedy,
               "steered_greedy": steered_greedy}, f)
print("steering changes the logits by up to", difference, "greedy", greedy, "steered",
      steered_greedy)
