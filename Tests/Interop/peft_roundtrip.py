#!/usr/bin/env python3
"""Interop check: an adapter lorac wrote loads in PEFT on the transformers model (same GGUF) and
gives the logits `lorac logits --adapter` gives.

    python Tests/Interop/peft_roundtrip.py MODEL.gguf ADAPTER_DIR [--lorac .build/release/lorac]

Needs torch, transformers, gguf and peft (a venv from PyPI). Exits 1 when the largest difference
is above 1e-3.
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
parser.add_argument("model")
parser.add_argument("adapter")
parser.add_argument("--lorac", default=os.path.join(os.path.dirname(__file__), "..", "..", ".build", "release", "lorac"))
args = parser.parse_args()

folder, name = os.path.split(os.path.abspath(args.model))
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
adapted = PeftModel.from_pretrained(model, args.adapter)
ids = [1, 9690, 28, 216, 33, 34, 35, 504, 3575, 282, 36991, 10288, 79, 6607, 24]
with torch.no_grad():
    reference = adapted(torch.tensor([ids])).logits[0].numpy()
with tempfile.TemporaryDirectory() as folder:
    out = os.path.join(folder, "logits.npy")
    subprocess.run([args.lorac, "logits", args.model, "--ids", ",".join(map(str, ids)),
                    "--adapter", args.adapter, "--out", out], check=True)
    ours = np.load(out)
difference = float(np.abs(ours - reference).max())
print(f"max |lorac - PEFT| over {len(ids)} positions: {difference:.3g}")
sys.exit(0 if difference <= 1e-3 else 1)
