#!/usr/bin/env python3
"""A PEFT adapter made by PEFT on SmolLM2 (from the same GGUF), and the logits it gives.

    /tmp/oracle/bin/pip install torch transformers gguf numpy peft
    /tmp/oracle/bin/python Tests/Fixtures/make_peft_fixtures.py "$(scripts/fetch-model)"

Writes Tests/Fixtures/smollm/peft_qv_r4/ (adapter_config.json + adapter_model.safetensors:
r=4, lora_alpha=8, q_proj and v_proj of layers 0, 1 and 29, A and B set to seeded random values)
and peft_logits.npy / peft.json (float32 logits of the adapted model at every position of a
prompt, for a sample of vocabulary columns, as in make_smollm_fixtures.py).
"""
import json
import os
import sys

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm")
folder, name = os.path.split(model_path)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                    layers_to_transform=[0, 1, 29], lora_dropout=0.0, task_type="CAUSAL_LM")
peft_model = get_peft_model(model, config)
generator = torch.Generator().manual_seed(1234)
with torch.no_grad():
    for parameter_name, parameter in peft_model.named_parameters():
        if "lora_" in parameter_name:
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
peft_model.eval()
adapter_dir = os.path.join(out, "peft_qv_r4")
peft_model.save_pretrained(adapter_dir)
# A stable base model name for the config (the GGUF path differs per machine).
config_path = os.path.join(adapter_dir, "adapter_config.json")
with open(config_path) as f:
    saved = json.load(f)
saved["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
with open(config_path, "w") as f:
    json.dump(saved, f, indent=2, sort_keys=True)
readme = os.path.join(adapter_dir, "README.md")
if os.path.exists(readme):
    os.remove(readme)

ids = [504, 3575, 282, 4649, 314, 7290, 30, 378, 3575, 282]
with torch.no_grad():
    logits = peft_model(torch.tensor([ids])).logits[0].float().numpy()
    with peft_model.disable_adapter():
        base = peft_model(torch.tensor([ids])).logits[0].float().numpy()
sample = np.random.default_rng(7).choice(logits.shape[1], size=1024, replace=False)
top = np.argsort(-logits, axis=1)[:, :32].reshape(-1)
columns = np.unique(np.concatenate([sample, top]))
np.save(os.path.join(out, "peft_logits.npy"), np.ascontiguousarray(logits[:, columns], dtype=np.float32))
with open(os.path.join(out, "peft.json"), "w") as f:
    json.dump({"ids": ids, "columns": columns.tolist(),
               "max_abs_change_from_base": float(np.abs(logits - base).max())}, f)
print("adapter changes logits by up to", float(np.abs(logits - base).max()))
