#!/usr/bin/env python3
"""Interop check on a Hugging Face folder: an adapter lorac wrote loads in PEFT on the folder's
transformers model and gives the logits `lorac logits --adapter` gives (GPT-2's and GPT-NeoX's
split q/k/v adapters are the fused module at rank 3r, `rank_pattern`).

    python Tests/Interop/peft_folder_roundtrip.py FOLDER ADAPTER_DIR [--lorac .build/release/lorac]

Needs torch, transformers and peft. Exits 1 when the largest difference is above 1e-4.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("adapter")
parser.add_argument("--lorac", default=os.path.join(os.path.dirname(__file__), "..", "..", ".build", "release", "lorac"))
args = parser.parse_args()

model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32).eval()
adapted = PeftModel.from_pretrained(model, args.adapter).eval()
ids = [5, 9, 17, 33, 2, 101, 64, 7, 250, 11, 42, 3]
with torch.no_grad():
    theirs = adapted(torch.tensor([ids])).logits[0].numpy()
    base = adapted.get_base_model()
    with adapted.disable_adapter():
        plain = adapted(torch.tensor([ids])).logits[0].numpy()
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "logits.npy")
    subprocess.run([args.lorac, "logits", args.folder, "--ids", ",".join(map(str, ids)), "--out", out,
                    "--adapter", args.adapter], check=True)
    ours = np.load(out)
worst = float(np.abs(ours - theirs).max())
print(f"max |lorac - PEFT| {worst:.3g} (the adapter moves the logits by {float(np.abs(theirs - plain).max()):.3g})")
sys.exit(0 if worst <= 1e-4 else 1)
