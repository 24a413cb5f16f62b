"""One RLHF phase written with PyTorch + transformers + PEFT, following the tutorial's trainer
(../shared/reference/rlhf.md; ARENA chapter 2 part 4) with its LoRA: the peer of `lorac bench rlhf`.

A phase: rollout (HF generate with its KV cache, batched, top-k sampling, min_new_tokens =
max_new_tokens so no row stops early), reward (char count of "." in prefix + completion), the
rollout's evaluation without gradients (policy logits and values, reference logits), normalised
rewards, one-step advantages and returns, then batches_per_phase x minibatches AdamW steps on the
PPO objective (clipped surrogate with minibatch-normalised advantages, value loss, entropy bonus,
full-distribution KL to the reference), gradients clipped to norm 1. The value head is the
tutorial's Linear(d, 4d), ReLU, Linear(4d, 1) on the final residual stream normalised without the
norm's weight (x / sqrt(mean(x^2) + eps), TransformerLens's ln_final.hook_normalized).

The reference policy is either the same PEFT model with the adapter disabled (`reference:
"disable"`, PEFT's `disable_adapter()`: no second copy, as lorac does) or a frozen deep copy of
the base model (`reference: "copy"`, the tutorial's full-model trainer's `ref_model`)."""
import copy
import os
import time


def phase_worker(spec, median, peak_rss_now, reset_peak_rss):
    import torch
    import torch.nn as nn
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(spec.get("seed", 1))
    torch.set_num_threads(spec["threads"])
    folder, name = os.path.split(spec["model"])
    start = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    reference_copy = None
    if spec["reference"] == "copy":
        reference_copy = copy.deepcopy(base).eval()
        for p in reference_copy.parameters():
            p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(
        r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    d = base.config.hidden_size
    eps = base.config.rms_norm_eps
    value_head = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, 1))
    residual = {}
    norm = base.model.norm
    norm.register_forward_hook(lambda module, inputs, output: residual.__setitem__("x", inputs[0]))
    load_s = time.perf_counter() - start

    adapter = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": adapter, "lr": spec["lr"]},
                                   {"params": value_head.parameters(), "lr": spec["head_lr"]}],
                                  weight_decay=0.01)
    batch, gen_len = spec["batch"], spec["gen_len"]
    minibatches, passes = spec["minibatches"], spec["batches_per_phase"]
    clip, vf, ent, kl_coef = 0.2, 0.15, 0.001, spec["kl_coef"]
    prefix_ids = tokenizer(spec["prefix"], return_tensors="pt").input_ids
    if tokenizer.bos_token_id is not None and prefix_ids[0, 0] != tokenizer.bos_token_id and spec.get("bos"):
        prefix_ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), prefix_ids], dim=1)
    prefix_len = prefix_ids.shape[1]

    def values_of(x):
        normalized = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return value_head(normalized).squeeze(-1)

    def forward(ids):
        logits = model(input_ids=ids).logits
        return logits, values_of(residual["x"])

    def reference_logits(ids):
        if reference_copy is not None:
            return reference_copy(input_ids=ids).logits
        with model.disable_adapter():
            return model(input_ids=ids).logits

    def one_phase():
        times = {}
        t = time.perf_counter()
        with torch.no_grad():
            prompts = prefix_ids.repeat(batch, 1)
            rows = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=10, temperature=1.0,
                                  max_new_tokens=gen_len, min_new_tokens=gen_len,
                                  pad_token_id=tokenizer.eos_token_id)
        times["rollout_s"] = time.perf_counter() - t
        t = time.perf_counter()
        texts = tokenizer.batch_decode(rows)
        rewards = torch.tensor([float(text.count(".")) for text in texts])
        times["reward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        predicting = slice(prefix_len - 1, -1)
        with torch.no_grad():
            logits, values = forward(rows)
            logprobs_all = logits[:, predicting].log_softmax(-1)
            logprobs = logprobs_all.gather(-1, rows[:, prefix_len:, None]).squeeze(-1)
            ref_logprobs = reference_logits(rows)[:, predicting].log_softmax(-1)
            normalized = (rewards - rewards.mean()) / (rewards.std() + 1e-5)
            v = values[:, predicting]
            advantages = torch.cat([v[:, 1:] - v[:, :-1], normalized[:, None] - v[:, -1:]], dim=1)
            returns = advantages + v
        times["evaluate_s"] = time.perf_counter() - t
        t = time.perf_counter()
        size = batch // minibatches
        for _ in range(passes):
            order = torch.randperm(batch)
            for m in range(minibatches):
                index = order[m * size:(m + 1) * size]
                logits, values = forward(rows[index])
                new_all = logits[:, predicting].log_softmax(-1)
                new = new_all.gather(-1, rows[index, prefix_len:, None]).squeeze(-1)
                a = advantages[index]
                a = (a - a.mean()) / (a.std() + 1e-8)
                ratio = torch.exp(new - logprobs[index])
                surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a).mean()
                value_loss = 0.5 * vf * (values[:, predicting] - returns[index]).pow(2).mean()
                p = new_all.exp()
                entropy = -(p * new_all).sum(-1).mean()
                kl = (p * (new_all - ref_logprobs[index])).sum(-1).mean()
                objective = surrogate - value_loss + ent * entropy - kl_coef * kl
                optimizer.zero_grad(set_to_none=True)
                (-objective).backward()
                torch.nn.utils.clip_grad_norm_(adapter + list(value_head.parameters()), 1.0)
                optimizer.step()
        times["learn_s"] = time.perf_counter() - t
        times["reward_mean"] = float(rewards.mean())
        return times

    import gc
    gc.collect()
    reset_peak_rss()
    first = one_phase()
    phases = []
    for _ in range(spec["runs"]):
        t = time.perf_counter()
        parts = one_phase()
        parts["phase_s"] = time.perf_counter() - t
        phases.append(parts)
    phase_s = median([p["phase_s"] for p in phases])
    result = {"tokens_per_s": batch * gen_len / phase_s, "samples_per_s": batch / phase_s,
              "phase_s": phase_s, "phase_times_s": [p["phase_s"] for p in phases],
              "first_phase_s": first["rollout_s"] + first["evaluate_s"] + first["learn_s"],
              "load_s": load_s, "peak_rss_after_load_bytes": peak_rss_now(),
              "reference": spec["reference"], "prefix_tokens": prefix_len}
    for key in ("rollout_s", "reward_s", "evaluate_s", "learn_s"):
        result[key] = median([p[key] for p in phases])
    return result
