#!/usr/bin/env python3
"""Model-ready time and 128-token prefill: lorac against transformers, same GGUF, same run.

    python Benchmarks/prefill_vs_transformers.py MODEL.gguf [--threads 1,2] [--runs 5]

Needs torch, transformers and gguf (a venv from PyPI: see Tests/Fixtures/make_smollm_fixtures.py).
Each figure is a median of --runs runs after a warm-up; ratios are lorac / transformers for rates
and transformers / lorac for times, so above 1 means lorac is faster.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--threads", default="1,2")
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--tokens", type=int, default=128)
parser.add_argument("--lorac", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "lorac"))
args = parser.parse_args()

import torch  # noqa: E402  (imported after argument parsing so --help is fast)
from transformers import AutoModelForCausalLM  # noqa: E402

folder, name = os.path.split(os.path.abspath(args.model))
rows = []
for threads in [int(t) for t in args.threads.split(",")]:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    ready = time.perf_counter() - start
    ids = torch.randint(17, 49000, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        for run in range(args.runs + 1):
            start = time.perf_counter()
            model(ids)
            if run > 0:
                times.append(time.perf_counter() - start)
    hf = {"model_ready_s": ready, "tokens_per_s": args.tokens / statistics.median(times)}
    # --all-logits: transformers computes the logits of every position here too.
    out = subprocess.run([args.lorac, "bench", "prefill", args.model, "--all-logits", "--tokens", str(args.tokens),
                          "--runs", str(args.runs), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)
    rows.append((threads, ours, hf))
    del model

print(f"| threads | lorac ready | transformers ready | ratio | lorac prefill tok/s | transformers tok/s | ratio |")
print(f"|---|---|---|---|---|---|---|")
for threads, ours, hf in rows:
    print(f"| {threads} | {ours['model_ready_s'] * 1e3:.0f} ms | {hf['model_ready_s'] * 1e3:.0f} ms | "
          f"{hf['model_ready_s'] / ours['model_ready_s']:.1f}x | {ours['tokens_per_s']:.0f} | "
          f"{hf['tokens_per_s']:.0f} | {ours['tokens_per_s'] / hf['tokens_per_s']:.2f} |")
