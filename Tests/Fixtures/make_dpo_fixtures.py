#!/usr/bin/env python3
"""One DPO step with TRL's sigmoid loss formula on SmolLM2, for the parity test of `lorac dpo`.

    /work/oracle/bin/python Tests/Fixtures/make_dpo_fixtures.py "$(scripts/fetch-model)"

The policy is SmolLM2 (the same GGUF, dequantised to f32 by transformers) with the committed
adapter peft_qv_r4 (r=4, alpha=8, q_proj and v_proj of layers 0, 1 and 29); the reference is the
same model with the adapter disabled. Each sequence is prompt + completion + end-of-sequence, the
prompt and the completion tokenized separately; its log-probability is the sum over the
completion's tokens (TRL's concatenated_forward with the prompt labels masked). The loss is TRL's
`dpo_loss` for loss_type "sigmoid":

    logits = (logp(chosen) - logp(rejected)) - (ref(chosen) - ref(rejected))
    loss   = mean(-logsigmoid(beta * logits))

Writes Tests/Fixtures/smollm/dpo.json (texts, ids, log-probabilities, loss, margin, accuracy) and
dpo_gradients.safetensors (the gradient of the loss for every adapter tensor, PEFT names).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
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
beta = 0.1
pairs = [
    {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " a large cheese."},
    {"prompt": "Two plus two is", "chosen": " four.", "rejected": " seven, said the owl."},
]


def encode(text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def sequence(prompt, completion):
    prompt_ids = encode(prompt)
    ids = prompt_ids + encode(completion) + [tokenizer.eos_token_id]
    return ids, len(prompt_ids)


def logp(ids, prompt_len):
    logits = model(torch.tensor([ids])).logits[0, :-1]
    picked = logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    return picked[prompt_len - 1:].sum()


rows = [sequence(p["prompt"], p[k]) for k in ["chosen", "rejected"] for p in pairs]
with torch.no_grad():
    with model.disable_adapter():
        reference = torch.stack([logp(ids, n) for ids, n in rows])
policy = torch.stack([logp(ids, n) for ids, n in rows])
count = len(pairs)
pc, pr, rc, rr = policy[:count], policy[count:], reference[:count], reference[count:]
logits = (pc - pr) - (rc - rr)
losses = -F.logsigmoid(beta * logits)
loss = losses.mean()
chosen_rewards, rejected_rewards = beta * (pc - rc).detach(), beta * (pr - rr).detach()
loss.backward()
gradients = {
    n.replace(".default", ""): p.grad.detach().contiguous()
    for n, p in model.named_parameters() if "lora_" in n
}
save_file(gradients, os.path.join(out, "dpo_gradients.safetensors"))
fixture = {
    "beta": beta, "pairs": pairs, "ids": [ids for ids, _ in rows],
    "policy_logps": policy.tolist(), "reference_logps": reference.tolist(), "loss": loss.item(),
    "reward_margin": (chosen_rewards - rejected_rewards).mean().item(),
    "accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
    "chosen_reward": chosen_rewards.mean().item(), "rejected_reward": rejected_rewards.mean().item(),
}
with open(os.path.join(out, "dpo.json"), "w") as f:
    json.dump(fixture, f, indent=1)
print(json.dumps({k: v for k, v in fixture.items() if k not in ("ids", "pairs")}, indent=1))
