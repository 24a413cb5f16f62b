#!/usr/bin/env python3
"""Loss and adapter gradients from PyTorch + PEFT on SmolLM2 (same GGUF), for gradient parity.

    /tmp/oracle/bin/python Tests/Fixtures/make_gradient_fixtures.py "$(scripts/fetch-model)"

Writes Tests/Fixtures/smollm/grad_qv_r4/ (a PEFT adapter: r=4, lora_alpha=8, q_proj and v_proj of
every layer, A and B set to seeded random values), grad_qv_r4.safetensors (the gradient of the
mean next-token loss for every adapter tensor, PEFT names and shapes) and grad_qv_r4.json (the
token ids and the loss).
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm")
folder, name = os.path.split(model_path)
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                    task_type="CAUSAL_LM")
peft_model = get_peft_model(model, config)
generator = torch.Generator().manual_seed(99)
with torch.no_grad():
    for parameter_name, parameter in peft_model.named_parameters():
        if "lora_" in parameter_name:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
peft_model.train()
adapter_dir = os.path.join(out, "grad_qv_r4")
peft_model.save_pretrained(adapter_dir)
config_path = os.path.join(adapter_dir, "adapter_config.json")
with open(config_path) as f:
    saved = json.load(f)
saved["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
with open(config_path, "w") as f:
    json.dump(saved, f, indent=2, sort_keys=True)
if os.path.exists(os.path.join(adapter_dir, "README.md")):
    os.remove(os.path.join(adapter_dir, "README.md"))

ids = [1, 4093, 198, 1780, 314, 1075, 28, 216, 33, 34, 35, 30, 2, 198, 1, 520, 9531, 198,
       504, 3575, 282, 4649, 314, 7290]
output = peft_model(torch.tensor([ids]), labels=torch.tensor([ids]))
output.loss.backward()
gradients = {}
for parameter_name, parameter in peft_model.named_parameters():
    if "lora_" in parameter_name:
        gradients[parameter_name.replace(".default", "")] = parameter.grad.detach().contiguous()
save_file(gradients, os.path.join(out, "grad_qv_r4.safetensors"))
with open(os.path.join(out, "grad_qv_r4.json"), "w") as f:
    json.dump({"ids": ids, "loss": output.loss.item()}, f)
print("loss", output.loss.item(), "tensors", len(gradients))
