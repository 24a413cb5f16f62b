#!/usr/bin/env python3
"""One PPO phase of the TransformerLens tutorial's RLHF trainer (../shared/reference/rlhf.md) on
SmolLM2 with PyTorch + PEFT, for the parity test of `lorac rlhf`.

    /work/oracle/bin/python Tests/Fixtures/make_rlhf_fixtures.py "$(scripts/fetch-model)"

The policy is SmolLM2 (the same GGUF, dequantised to f32 by transformers) with the committed
adapter peft_qv_r4 (r=4, alpha=8, q_proj and v_proj of layers 0, 1 and 29); the reference is the
same model with the adapter disabled. The value head, Linear(576, 2304) -> ReLU -> Linear(2304, 1)
on the final normalised residual stream (x / sqrt(mean(x^2) + eps), TransformerLens's
`ln_final.hook_normalized`), gets lorac's seeded initial values (SplitMix64, reproduced below), so
no 5 MB of head weights need committing.

Fixed: 4 rows ("This is" + 6 tokens sampled here once with a seeded generator), rewards, and the
minibatches [[2, 0], [3, 1]]. Recorded: the rollout's log-probabilities, values, advantages,
returns, KL and entropy; for each minibatch the objective's terms, the gradients of J (adapter in
PEFT names and layout; value head in PyTorch layout, the first layer's weight every 64th row) and
the gradient norm; between them one AdamW step (maximize, two learning rates, clipping).

Writes Tests/Fixtures/smollm/rlhf.json and rlhf_gradients.safetensors.
"""
import json
import os
import sys

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

model_path = sys.argv[1]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm")
folder, name = os.path.split(model_path)
torch.set_num_threads(2)
base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = PeftModel.from_pretrained(base, os.path.join(out, "peft_qv_r4"), is_trainable=True)
for parameter_name, parameter in model.named_parameters():
    parameter.requires_grad = "lora_" in parameter_name
eps = base.config.rms_norm_eps
d = base.config.hidden_size

# --- settings (RLHFConfiguration in the Swift test) ---
seed = 7
prefix = "This is"
batch, gen_len, minibatch_rows = 4, 6, [[2, 0], [3, 1]]
clip_coef, vf_coef, ent_coef, kl_coef = 0.2, 0.15, 0.001, 0.5
base_lr, head_lr, max_grad_norm = 1e-2, 5e-3, 1.0
rewards_raw = [1.0, 0.0, 3.0, 2.0]


# --- lorac's initial values: SplitMix64, uniform draws low + (high - low) * u, rounded to f32 ---
def splitmix_uniform(seed, count, low, high):
    mask = (1 << 64) - 1
    values = np.empty(count, dtype=np.float64)
    state = seed
    for index in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z = z ^ (z >> 31)
        values[index] = low + (high - low) * ((z >> 11) * (1.0 / 9007199254740992.0))
    return values.astype(np.float32)


head_seed = seed + 1000
bound1, bound2 = 1 / np.sqrt(d), 1 / np.sqrt(4 * d)
value_head = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.ReLU(), torch.nn.Linear(4 * d, 1))
with torch.no_grad():
    # lorac stores weights [in, out]; torch [out, in].
    value_head[0].weight.copy_(torch.from_numpy(
        splitmix_uniform(head_seed, d * 4 * d, -bound1, bound1).reshape(d, 4 * d).T.copy()))
    value_head[0].bias.copy_(torch.from_numpy(splitmix_uniform(head_seed + 1, 4 * d, -bound1, bound1)))
    value_head[2].weight.copy_(torch.from_numpy(
        splitmix_uniform(head_seed + 2, 4 * d, -bound2, bound2).reshape(4 * d, 1).T.copy()))
    value_head[2].bias.copy_(torch.from_numpy(splitmix_uniform(head_seed + 3, 1, -bound2, bound2)))

captured = {}
base.model.norm.register_forward_pre_hook(lambda module, args: captured.__setitem__("resid", args[0]))


def forward_with_value_head(ids):
    logits = model(ids).logits
    resid = captured["resid"]
    normalized = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + eps)
    return logits, value_head(normalized).squeeze(-1)


# --- the rollout: fixed samples ---
prefix_ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
prefix_len = len(prefix_ids)
generator = torch.Generator().manual_seed(seed)
with torch.no_grad():
    ids = torch.tensor([prefix_ids] * batch)
    for _ in range(gen_len):
        logits = model(ids).logits[:, -1]
        top = logits.topk(10)
        choice = torch.multinomial(top.values.softmax(-1), 1, generator=generator)
        ids = torch.cat([ids, top.indices.gather(-1, choice)], dim=1)
sample_ids = ids


def get_logprobs(logits, tokens, prefix_len):
    logprobs = logits.log_softmax(-1)[:, prefix_len - 1:-1]
    return logprobs.gather(-1, tokens[:, prefix_len:, None]).squeeze(-1)


with torch.no_grad():
    logits, values = forward_with_value_head(sample_ids)
    with model.disable_adapter():
        ref_logits = model(sample_ids).logits
logprobs = get_logprobs(logits, sample_ids, prefix_len)
rewards = torch.tensor(rewards_raw, dtype=torch.float32)
rewards_normed = (rewards - rewards.mean()) / (rewards.std() + 1e-5)
one_step_q_est = torch.cat([values[:, prefix_len:-1], rewards_normed[:, None]], dim=-1)
zero_step_value_est = values[:, prefix_len - 1:-1]
advantages = one_step_q_est - zero_step_value_est
returns = advantages + values[:, prefix_len - 1:-1]


def kl_and_entropy(logits, ref_logits):
    logprobs_all = logits.log_softmax(-1)[:, prefix_len - 1:-1]
    ref_logprobs_all = ref_logits.log_softmax(-1)[:, prefix_len - 1:-1]
    probs = logprobs_all.exp()
    kl = (probs * (logprobs_all - ref_logprobs_all)).sum(-1).mean()
    entropy = (-(probs * logprobs_all).sum(-1)).mean()
    return kl, entropy


rollout_kl, rollout_entropy = kl_and_entropy(logits, ref_logits)

# --- the learning phase ---
lora_parameters = [p for n, p in model.named_parameters() if "lora_" in n]
optimizer = torch.optim.AdamW(
    [{"params": lora_parameters, "lr": base_lr}, {"params": value_head.parameters(), "lr": head_lr}],
    maximize=True)
minibatches = []
gradients = {}
for index, rows in enumerate(minibatch_rows):
    rows = torch.tensor(rows)
    optimizer.zero_grad()
    mb_ids = sample_ids[rows]
    mb_logits, mb_values = forward_with_value_head(mb_ids)
    mb_values = mb_values[:, prefix_len - 1:-1]
    new_logprobs = get_logprobs(mb_logits, mb_ids, prefix_len)
    ratio = torch.exp(new_logprobs - logprobs[rows])
    mb_advantages = advantages[rows]
    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
    surrogate = torch.minimum(ratio * mb_advantages,
                              torch.clip(ratio, 1 - clip_coef, 1 + clip_coef) * mb_advantages).mean()
    value_loss = 0.5 * vf_coef * (mb_values - returns[rows]).pow(2).mean()
    kl, entropy = kl_and_entropy(mb_logits, ref_logits[rows])
    entropy_bonus = ent_coef * entropy
    kl_penalty = kl_coef * kl
    objective = surrogate - value_loss + entropy_bonus - kl_penalty
    objective.backward()
    norm = torch.nn.utils.clip_grad_norm_(lora_parameters + list(value_head.parameters()),
                                          max_norm=max_grad_norm)
    clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    minibatches.append({
        "rows": rows.tolist(), "objective": objective.item(), "surrogate": surrogate.item(),
        "value_loss": value_loss.item(), "entropy_bonus": entropy_bonus.item(),
        "kl_penalty": kl_penalty.item(), "entropy": entropy.item(), "kl": kl.item(),
        "clipfrac": clipfrac.item(), "grad_norm": norm.item(),
    })
    # Gradients of J as backward left them (clip_grad_norm_ scaled them in place: undo it).
    scale = min(1.0, max_grad_norm / (norm.item() + 1e-6))
    for parameter_name, parameter in model.named_parameters():
        if "lora_" in parameter_name:
            key = parameter_name.replace(".default", "")
            gradients[f"mb{index}.{key}"] = (parameter.grad / scale).detach().contiguous()
    head = {n: p.grad / scale for n, p in value_head.named_parameters()}
    gradients[f"mb{index}.value_head.0.weight.rows64"] = head["0.weight"][::64].detach().contiguous()
    gradients[f"mb{index}.value_head.0.bias"] = head["0.bias"].detach().contiguous()
    gradients[f"mb{index}.value_head.2.weight"] = head["2.weight"].detach().contiguous()
    gradients[f"mb{index}.value_head.2.bias"] = head["2.bias"].detach().contiguous()
    optimizer.step()

save_file(gradients, os.path.join(out, "rlhf_gradients.safetensors"))
fixture = {
    "seed": seed, "prefix": prefix, "prefix_ids": prefix_ids, "batch": batch, "gen_len": gen_len,
    "clip_coef": clip_coef, "vf_coef": vf_coef, "ent_coef": ent_coef, "kl_coef": kl_coef,
    "base_lr": base_lr, "head_lr": head_lr, "max_grad_norm": max_grad_norm,
    "rows": sample_ids.tolist(), "rewards": rewards_raw,
    "rewards_normed": rewards_normed.tolist(), "logprobs": logprobs.flatten().tolist(),
    "values": zero_step_value_est.flatten().tolist(), "advantages": advantages.flatten().tolist(),
    "returns": returns.flatten().tolist(), "rollout_kl": rollout_kl.item(),
    "rollout_entropy": rollout_entropy.item(), "minibatches": minibatches,
}
with open(os.path.join(out, "rlhf.json"), "w") as f:
    json.dump(fixture, f, indent=1)
print(json.dumps(minibatches, indent=1))
