#!/usr/bin/env python3
"""Interop check (a test oracle, not run in CI): the LoRA adapter GGUF `lorac export` writes loads
in llama.cpp (llama-cpp-python) and gives the greedy continuations `lorac generate --adapter`
gives; so does the model `lorac merge` writes, loaded without an adapter.

    python Tests/Interop/llama_cpp_adapter.py MODEL.gguf ADAPTER_DIR [--lorac .build/release/lorac]
        [--tokens 24]

Needs llama-cpp-python and numpy (a venv from PyPI).

llama.cpp quantizes activations to 8 bits in its Q4_1/Q8_0 products, so on the Q4_1 model its
logits drift from lorac's f32 ones by up to ~1 and near-ties flip greedy choices. The script
therefore also writes all-F32 copies (every tensor dequantized, metadata bytes kept) of the base
model and of the `lorac merge` output, on which llama.cpp (with an F32 KV cache) quantizes
nothing. Verdict (exit status) on those: llama.cpp's F32 base plus the exported adapter, and the
F32 merged model, must continue like `lorac generate --adapter` and match `lorac logits
--adapter` within 1e-3 (measured: under 1.5e-4 on SmolLM2).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

args = None  # the command line, parsed by main()

PROMPTS = [
    ">>> mystery_function(12, 30)\n",
    "The capital of France is",
    "def fibonacci(n):",
]


def lorac(*arguments):
    return subprocess.run([args.lorac, *arguments], check=True, capture_output=True, text=True).stdout


def all_f32(source, target):
    """Copies a GGUF with every F16/Q8_0/Q4_1 tensor dequantized to F32 (formats.md 3d); the
    metadata bytes are copied as they are. Benchmarks/peers/bench.py imports this for its F32
    rows."""
    with open(source, "rb") as f:
        data = f.read()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(kind):
        nonlocal pos
        if kind == 8:
            (length,) = struct.unpack_from("<Q", data, pos)
            pos += 8 + length
        elif kind == 9:
            element, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                skip(element)
        else:
            pos += sizes[kind]

    for _ in range(n_kv):
        skip(8)
        (kind,) = struct.unpack_from("<I", data, pos)
        pos += 4
        skip(kind)
    metadata = data[24:pos]
    assert b"general.alignment" not in metadata, "this script assumes the default alignment 32"
    infos = []
    for _ in range(n_tensors):
        (length,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8:pos + 8 + length]
        pos += 8 + length
        (dims,) = struct.unpack_from("<I", data, pos)
        ne = struct.unpack_from(f"<{dims}Q", data, pos + 4)
        kind, offset = struct.unpack_from("<IQ", data, pos + 4 + 8 * dims)
        pos += 4 + 8 * dims + 12
        infos.append((name, ne, kind, offset))
    start = (pos + 31) // 32 * 32
    blocks = {0: (1, 4), 1: (1, 2), 3: (32, 20), 8: (32, 34)}
    header = bytearray(data[:24] + metadata)
    chunks, offset = [], 0
    for name, ne, kind, stored in infos:
        count = int(np.prod(ne))
        block, size = blocks[kind]
        raw = np.frombuffer(data, np.uint8, count // block * size, start + stored)
        if kind == 0:
            values = raw.view("<f4")
        elif kind == 1:
            values = raw.view("<f2").astype(np.float32)
        elif kind == 8:  # f16 d; i8 qs[32]
            b = raw.reshape(-1, 34)
            values = (b[:, 2:].view(np.int8).astype(np.float32) * b[:, :2].copy().view("<f2").astype(np.float32)).ravel()
        else:  # Q4_1: f16 d; f16 m; u8 qs[16], low nibbles first
            b = raw.reshape(-1, 20)
            d = b[:, 0:2].copy().view("<f2").astype(np.float32)
            m = b[:, 2:4].copy().view("<f2").astype(np.float32)
            q = np.concatenate([b[:, 4:] & 0xF, b[:, 4:] >> 4], axis=1).astype(np.float32)
            values = (q * d + m).ravel()
        header += struct.pack("<Q", len(name)) + name + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, 0, offset)
        chunk = values.astype("<f4").tobytes()
        chunk += bytes((32 - len(chunk) % 32) % 32)
        chunks.append(chunk)
        offset += len(chunk)
    header += bytes((32 - len(header) % 32) % 32)
    with open(target, "wb") as f:
        f.write(header)
        for chunk in chunks:
            f.write(chunk)


def lorac_run(ids, adapter, folder, model=None):
    """lorac's greedy continuation (KV-cache decoding) and its prompt logits."""
    model = model or args.model
    extra = ["--adapter", adapter] if adapter else []
    out = lorac("generate", model, *extra, "--prompt-ids", ",".join(map(str, ids)),
                "--max-tokens", str(args.tokens), "--ignore-eos", "--json")
    path = os.path.join(folder, "logits.npy")
    lorac("logits", model, *extra, "--ids", ",".join(map(str, ids)), "--out", path)
    return json.loads(out)["ids"], np.load(path)


def llama_run(llm, ids):
    """Greedy decoding on llama.cpp's logits (no sampler): argmax, feed back, repeat."""
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    out = []
    for _ in range(args.tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out, logits


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def load(path, lora=None):
    from llama_cpp import Llama
    return Llama(model_path=path, lora_path=lora, n_ctx=256, n_threads=2, n_batch=256,
                 logits_all=True, verbose=False, seed=0, type_k=0, type_v=0)  # F32 KV cache


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("adapter")
    parser.add_argument("--lorac", default=os.path.join(os.path.dirname(__file__), "..", "..", ".build", "release", "lorac"))
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = {name: os.path.join(folder, name + ".gguf") for name in ("adapter", "merged", "base_f32", "merged_f32")}
        lorac("export", args.adapter, "--gguf-adapter", files["adapter"], "--model", args.model)
        lorac("merge", args.model, "--adapter", args.adapter, "-o", files["merged"])
        all_f32(args.model, files["base_f32"])
        all_f32(files["merged"], files["merged_f32"])
        # (name, model, adapter GGUF, compared with lorac with the adapter?, decides the verdict?)
        runs = [
            ("Q4_1 base", args.model, None, False, False),
            ("Q4_1 base + adapter.gguf", args.model, files["adapter"], True, False),
            ("lorac merge (Q4_1 + f32 merged)", files["merged"], None, True, False),
            ("F32 base", files["base_f32"], None, False, False),
            ("F32 base + adapter.gguf", files["base_f32"], files["adapter"], True, True),
            ("lorac merge, all F32", files["merged_f32"], None, True, True),
        ]
        failed = False
        for text in PROMPTS:
            ids = json.loads(lorac("tokenize", args.model, "--text", text))["ids"]
            reference = {False: lorac_run(ids, None, folder), True: lorac_run(ids, args.adapter, folder)}
            changed = common_prefix(reference[False][0], reference[True][0])
            print(f"prompt {text!r} ({len(ids)} tokens); lorac's continuation with and without the "
                  f"adapter agree on {changed}/{args.tokens} tokens; adapter's effect on lorac's logits "
                  f"up to {float(np.abs(reference[True][1] - reference[False][1]).max()):.3g}")
            # The F32 copy is the same model: lorac gives the same logits on it.
            copy = float(np.abs(lorac_run(ids, None, folder, files["base_f32"])[1] - reference[False][1]).max())
            print(f"  (lorac on the F32 copy of the base: logits within {copy:.3g} of the Q4_1 file)")
            base_logits = {}
            for name, path, lora, adapted, decisive in runs:
                ours, logits = llama_run(load(path, lora), ids)
                expected, expected_logits = reference[adapted]
                same = common_prefix(expected, ours)
                difference = float(np.abs(logits - expected_logits).max())
                line = (f"  {name:32s} greedy {same:2d}/{args.tokens} equal to lorac{' --adapter' if adapted else ''}, "
                        f"max |llama.cpp - lorac| logits {difference:.3g}")
                kind = "F32" if "F32" in name else "Q4_1"
                if not adapted:
                    base_logits[kind] = logits
                elif "base +" in name:
                    effect = logits - base_logits[kind]
                    lorac_effect = reference[True][1] - reference[False][1]
                    line += f", adapter effect differs by {float(np.abs(effect - lorac_effect).max()):.3g}"
                print(line + ("  <- decides" if decisive else ""))
                if same < args.tokens:
                    print(f"    lorac     {expected}\n    llama.cpp {ours}")
                if decisive and (same < args.tokens or difference > 1e-3):
                    failed = True
        print("FAIL" if failed else "OK")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
