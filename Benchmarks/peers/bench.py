#!/usr/bin/env python3
"""lorac against its peers, side by side, on the same machine in the same run (issue 7).

Run through Benchmarks/peers/run, which makes the peers' virtual environment and builds lorac:

    Benchmarks/peers/run [--quick] [--threads 1,2] [--runs 5] [--rounds 2] [--only train,prefill,decode]

Every measurement runs in a subprocess of its own (a worker: this file with --worker, or lorac
itself), so each peak RSS is that system's alone (os.wait4's ru_maxrss of the child, started from a
spawner forked while the harness was small: see Spawner; --check-rss tests it). Each figure
is a median of --runs runs after one warm-up run. Systems are run one after another within each
workload and thread count, --rounds times (default 2) with the order reversed every round; a
system's figure is the median of its rounds, and a ratio lorac / peer is the median of the
per-round ratios, each between figures taken minutes apart on a shared machine whose speed drifts
by up to 1.5x over tens of minutes.

Workloads (all on SmolLM2-135M-Instruct from the same GGUF):
  train    LoRA rank 8, alpha 16, dropout 0: q,k,v,o at batch 16 x seq 32 and 4 x 128; all seven
           linears at 16 x 32. A step is forward, cross-entropy on every position, backward,
           gradient clipping to norm 1, AdamW (lr 1e-4). Random tokens.
           lorac (bench train: strict f32, and --precision bf16); PyTorch + transformers + PEFT eager (f32, weights dequantised from
           the GGUF by transformers) and torch.compile (inductor) of the same model; JAX + Penzai
           (Penzai's Llama of the same shape, random weights, the LoRA tutorial's LowRankAdapter,
           basic_training.StatefulTrainer with optax adamw, jitted).
  prefill  a 128-token random prompt at batch 1: the prompt's KV cache and the last position's
           logits (what generation needs). lorac (bench prefill: generate's prefill graph, a
           cache of 128 slots), PyTorch f32 (logits_to_keep=1), llama.cpp on the Q4_1 file and on
           an all-F32 copy.
  decode   after that prompt, greedy decoding of 128 tokens at batch 1; the rate is 127 one-token
           steps (the first token comes from the prefill's logits) over their time. lorac
           (generate, Q4_1 as stored with f32 activations and with --int8-activations, and the F32
           copy), llama.cpp (Q4_1 and F32 copy, its default F16 KV cache), PyTorch f32 (HF generate
           with its KV cache, min_new_tokens = max_new_tokens = 128).
  compile  lorac's compile time (trace + passes + plan) of the train step and the decode step.
  rlhf     one RLHF phase of the tutorial's trainer with its LoRA (rank 4, alpha 32, q,k,v,o):
           "This is" then 24 sampled tokens (top-k 10) for 16 rows, reward = count of ".", the
           rollout evaluated by the policy and the reference, 2 passes x 2 minibatches of PPO
           (kl_coef 0.05); tokens/s counts the sampled tokens per second of a whole phase. lorac
           (bench rlhf: the reference is the same executables at adapter scale 0); PyTorch +
           transformers + PEFT (Benchmarks/peers/rlhf_peer.py) with the reference as PEFT's
           disable_adapter() and as the tutorial's frozen copy of the model; TRL's PPO trainer
           when the installed TRL has one. The row "lorac train 16x26" is `lorac bench train` at
           the same batch and row length: the RSS lorac's RLHF phase is compared with.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ATTN = "attn"
ALL = "all"
LORAC_TARGETS = {ATTN: "layers.*.attn.{q,k,v,o}",
                 ALL: "layers.*.{attn.q,attn.k,attn.v,attn.o,mlp.gate,mlp.up,mlp.down}"}
PEFT_TARGETS = {ATTN: ["q_proj", "k_proj", "v_proj", "o_proj"],
                ALL: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
PROMPT_TOKENS = 128  # both set by --tokens (workers: from their spec)
DECODE_TOKENS = 128


def set_tokens(count):
    global PROMPT_TOKENS, DECODE_TOKENS
    PROMPT_TOKENS = DECODE_TOKENS = count


def prompt_ids(n=None):
    """The same random prompt for every system (ids 17..49016, no BOS: the file adds none)."""
    n = n or PROMPT_TOKENS
    state = 1
    ids = []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        ids.append(17 + (state >> 33) % 49000)
    return ids


def median(values):
    return statistics.median(values) if values else None


def set_threads_env(threads):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def peak_rss_now():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux clear_refs 5), to measure a phase's own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(runs, body):
    """Calls body() once to warm up, then `runs` times: (the warm-up's result, the runs' results)."""
    first = body()
    return first, [body() for _ in range(runs)]


def timed(step, before=None):
    """A body for measure: the seconds of one step() call, after an untimed before()."""
    def body():
        if before:
            before()
        start = time.perf_counter()
        step()
        return time.perf_counter() - start
    return body


def train_result(step, runs, tokens, **extra):
    """Times a train step (warm-up, then `runs` steps) from a reset peak RSS, as every train
    worker reports it: rate, median step, each step, the first step and the peak RSS."""
    reset_peak_rss()
    first, times = measure(runs, timed(step))
    step_s = median(times)
    return {"tokens_per_s": tokens / step_s, "step_s": step_s, "step_times_s": times,
            "first_step_s": first, "peak_rss_after_load_bytes": peak_rss_now(), **extra}


def prefill_result(times, **extra):
    return {"tokens_per_s": PROMPT_TOKENS / median(times), "prefill_s": median(times),
            "times_s": times, **extra}


# ---------------------------------------------------------------- workers (one per subprocess)

def worker_torch_train(spec):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    folder, name = os.path.split(spec["model"])
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                             target_modules=PEFT_TARGETS[spec["targets"]]))
    model.train()
    load_s = time.perf_counter() - start
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch, seq = spec["batch"], spec["seq"]
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=torch.Generator().manual_seed(1))
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    forward = torch.compile(model) if spec.get("compile") else model

    def step():
        logits = forward(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    import gc
    gc.collect()
    return train_result(step, spec["runs"], batch * seq, load_s=load_s,
                        trainable_parameters=sum(p.numel() for p in params))


def worker_penzai_train(spec):
    threads = spec["threads"]
    if threads < os.cpu_count():
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from penzai import pz
    from penzai.models.transformer.variants import llamalike_common
    from penzai.toolshed import basic_training

    config = spec["config"]
    start = time.perf_counter()
    model = llamalike_common.build_llamalike_transformer(
        llamalike_common.LlamalikeTransformerConfig(
            num_kv_heads=config["num_key_value_heads"],
            query_head_multiplier=config["num_attention_heads"] // config["num_key_value_heads"],
            embedding_dim=config["hidden_size"], projection_dim=config["head_dim"],
            mlp_hidden_dim=config["intermediate_size"], num_decoder_blocks=config["num_hidden_layers"],
            vocab_size=config["vocab_size"], mlp_variant="swiglu",
            tie_embedder_and_logits=bool(config.get("tie_word_embeddings", True)),
            rope_wavelength=config.get("rope_theta") or config["rope_parameters"]["rope_theta"], rms_norm_eps=config["rms_norm_eps"],
            parameter_dtype=jnp.float32, activation_dtype=jnp.float32),
        init_base_rng=jax.random.key(0))
    model = pz.freeze_params(model)

    @pz.pytree_dataclass(has_implicitly_inherited_fields=True)
    class LowRankAdapter(pz.nn.Sequential):
        """The LoRA block of Penzai's 'LoRA From Scratch' tutorial, with alpha / rank scaling."""

        @classmethod
        def from_linear(cls, linear, name, init_base_rng, rank, lowrank_axis="lowrank"):
            return cls([pz.nn.BranchAndAddTogether([
                pz.nn.NamedGroup("Pretrained", [linear]),
                pz.nn.NamedGroup("Update", [
                    pz.nn.Linear.from_config(name=f"{name}/LoRA_A", init_base_rng=init_base_rng,
                                             input_axes=linear.input_axes,
                                             output_axes={lowrank_axis: rank},
                                             parallel_axes=linear.parallel_axes),
                    pz.nn.Linear.from_config(name=f"{name}/LoRA_B", init_base_rng=init_base_rng,
                                             input_axes={lowrank_axis: rank},
                                             output_axes=linear.output_axes,
                                             parallel_axes=linear.parallel_axes,
                                             initializer=pz.nn.zero_initializer),
                    pz.nn.ConstantRescale(by=2.0),  # alpha 16 / rank 8
                ]),
            ])])

    selection = pz.select(model)
    if spec["targets"] == ATTN:
        selection = selection.at_instances_of(pz.nn.Attention)
    rng = jax.random.key(123)
    # Not the RMS norms' scales: Penzai makes them Linears with no input axes.
    model = selection.at_instances_of(pz.nn.Linear).where(lambda lin: bool(lin.input_axes)).apply(
        lambda keypath, lin: LowRankAdapter.from_linear(
            lin, name="LoRA:" + pz.pretty_keystr(keypath, model), init_base_rng=rng, rank=8),
        with_keypath=True)
    trainable = sum(int(np.prod(list(p.value.named_shape.values()) + list(p.value.positional_shape))) for p in
                    pz.select(model).at_instances_of(pz.Parameter).get_sequence())
    load_s = time.perf_counter() - start
    batch, seq = spec["batch"], spec["seq"]
    vocab = config["vocab_size"]
    tokens = pz.nx.wrap(jnp.asarray(
        np.random.default_rng(1).integers(0, vocab, (batch, seq + 1)), dtype=jnp.int32)).tag("batch", "seq")

    def loss_fn(model, rng, state, tokens):
        del rng, state
        inputs = tokens[{"seq": pz.slice[:-1]}]
        outputs = model(inputs)
        log_probs = pz.nx.nmap(jax.nn.log_softmax)(outputs.untag("vocabulary")).tag("vocabulary")
        correct = log_probs[{"vocabulary": tokens[{"seq": pz.slice[1:]}]}]
        loss = -correct.untag("batch", "seq").unwrap().mean()
        return loss, None, {"loss": loss}

    trainer = basic_training.StatefulTrainer.build(
        model=model, optimizer_def=optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4)),
        root_rng=jax.random.key(42), loss_fn=loss_fn)

    def step():
        out = trainer.step(tokens=tokens)
        return float(jax.block_until_ready(out["loss"]))

    return train_result(step, spec["runs"], batch * seq, load_s=load_s,
                        trainable_parameters=trainable, jax_version=jax.__version__,
                        jax_devices=str(jax.devices()))


def worker_torch_prefill(spec):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(spec["threads"])
    folder, name = os.path.split(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids()])
    reset_peak_rss()
    with torch.no_grad():
        _, times = measure(spec["runs"], timed(lambda: model(ids, logits_to_keep=1)))
    return prefill_result(times, peak_rss_after_load_bytes=peak_rss_now())


def worker_torch_decode(spec):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer
    torch.set_num_threads(spec["threads"])
    folder, name = os.path.split(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()

    class Clock(BaseStreamer):
        """Records when generate emits: first the prompt, then each new token."""

        def __init__(self):
            self.stamps = []

        def put(self, value):
            self.stamps.append(time.perf_counter())

        def end(self):
            pass

    ids = torch.tensor([prompt_ids()])

    def generate():
        """One generation: (decode rate, prefill seconds)."""
        clock = Clock()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS,
                                 pad_token_id=2, streamer=clock)
        generated = out.shape[1] - ids.shape[1]
        assert generated == DECODE_TOKENS and len(clock.stamps) == DECODE_TOKENS + 1, (generated, len(clock.stamps))
        # stamps[1] is the first new token (after prefill), stamps[-1] the last.
        return (DECODE_TOKENS - 1) / (clock.stamps[-1] - clock.stamps[1]), clock.stamps[1] - start

    reset_peak_rss()
    _, runs = measure(spec["runs"], generate)
    rates = [rate for rate, _ in runs]
    return {"tokens_per_s": median(rates), "rates": rates, "prefill_s": median([p for _, p in runs]),
            "peak_rss_after_load_bytes": peak_rss_now()}


def worker_torch_rlhf(spec):
    sys.path.insert(0, HERE)
    from rlhf_peer import phase_worker
    return phase_worker(spec, median, peak_rss_now, reset_peak_rss)


def llama_load(spec):
    from llama_cpp import Llama
    return Llama(model_path=spec["model"], n_ctx=512, n_batch=512, n_ubatch=512,
                 n_threads=spec["threads"], n_threads_batch=spec["threads"], verbose=False)


def worker_llama_prefill(spec):
    import llama_cpp
    llm = llama_load(spec)
    ids = prompt_ids()

    def empty_cache():
        llm.reset()
        if hasattr(llm._ctx, "kv_cache_clear"):
            llm._ctx.kv_cache_clear()

    _, times = measure(spec["runs"], timed(lambda: llm.eval(ids), before=empty_cache))
    return prefill_result(times, llama_cpp_python=llama_cpp.__version__)


def worker_llama_decode(spec):
    import numpy as np
    import llama_cpp
    llm = llama_load(spec)
    ids = prompt_ids()
    vocab = llm.n_vocab()

    def argmax():
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))

    first = {}

    def prefill():
        llm.reset()
        llm.eval(ids)
        first["token"] = argmax()

    def decode():
        """The one-token steps of a generation after the (untimed) prefill."""
        token = first["token"]
        for _ in range(DECODE_TOKENS - 1):
            llm.eval([token])
            token = argmax()

    _, times = measure(spec["runs"], timed(decode, before=prefill))
    rates = [(DECODE_TOKENS - 1) / seconds for seconds in times]
    return {"tokens_per_s": median(rates), "rates": rates, "llama_cpp_python": llama_cpp.__version__}


WORKERS = {name[len("worker_"):]: f for name, f in globals().items() if name.startswith("worker_")}


def run_worker(name, spec_json):
    spec = json.loads(spec_json)
    set_threads_env(spec["threads"])
    set_tokens(spec.get("tokens", 128))
    try:
        result = WORKERS[name](spec)
    except Exception as error:  # reported as a row, not dropped
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"[:600]}
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the driver

def run_measured(command, timeout, env=None):
    """Runs one command; returns (stdout, stderr, returncode, peak RSS of the child in bytes)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, text=True)
        deadline = time.monotonic() + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                status = -9
                break
            time.sleep(0.05)
        child.returncode = status
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status) if status != -9 else "timeout"
        return out.read(), err.read(), code, usage.ru_maxrss * 1024


class Spawner:
    """Runs the measured commands from a process forked while the harness was still small.

    A child's ru_maxrss (from wait4) starts from its parent's resident high-water mark at fork time:
    Linux copies the parent's mm, high-water mark included, and exec keeps the larger of the two.
    Forked from the harness after it grew (writing the F32 copy, say), every child would report at
    least the harness's peak. This spawner is forked at start-up and never grows, so the peaks it
    reports are the children's own (to within the spawner's ~10 MiB)."""

    def __init__(self):
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(requests_write)
            os.close(replies_read)
            with os.fdopen(requests_read) as requests, os.fdopen(replies_write, "w") as replies:
                for line in requests:
                    request = json.loads(line)
                    try:
                        reply = list(run_measured(request["command"], request["timeout"], request["env"]))
                    except Exception as error:  # reported to the harness, which records the row's error
                        reply = ["", f"spawner: {error}", "spawn failed", 0]
                    replies.write(json.dumps(reply) + "\n")
                    replies.flush()
            os._exit(0)
        os.close(requests_read)
        os.close(replies_write)
        self.requests = os.fdopen(requests_write, "w")
        self.replies = os.fdopen(replies_read)

    def run(self, command, timeout, env=None):
        self.requests.write(json.dumps({"command": list(command), "timeout": timeout, "env": env}) + "\n")
        self.requests.flush()
        out, err, code, rss = json.loads(self.replies.readline())
        return out, err, code, rss


SPAWNER = None


def spawn(command, timeout, env=None):
    """Runs one measurement through the start-up spawner; returns (stdout, stderr, returncode,
    peak RSS of the child)."""
    global SPAWNER
    if SPAWNER is None:
        SPAWNER = Spawner()
    return SPAWNER.run(command, timeout, env)


def check_rss():
    """The harness grows to ~400 MiB, then measures a tiny child both ways: through the spawner it
    must report the child's own peak; forked from the grown harness it reports the harness's."""
    spawn([sys.executable, "-c", "pass"], 60)  # the spawner forks now, while the harness is small
    ballast = bytearray(400 << 20)
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    _, _, code, spawned = spawn([sys.executable, "-c", "pass"], 60)
    _, _, _, forked = run_measured([sys.executable, "-c", "pass"], 60)
    print(json.dumps({"spawner_rss_mib": spawned / 2**20, "forked_rss_mib": forked / 2**20}))
    if code != 0 or spawned > 100 << 20:
        print(f"check-rss: a tiny child measured {spawned / 2**20:.0f} MiB through the spawner", file=sys.stderr)
        sys.exit(1)


def failure(stderr, code):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"exit {code}: " + (" | ".join(lines[-3:])[-500:] if lines else "no message")


class Driver:
    def __init__(self, args):
        self.args = args
        self.rows = []

    def python_worker(self, python, worker, spec, timeout):
        spec = dict(spec, runs=self.args.runs, tokens=PROMPT_TOKENS)
        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(spec["threads"])
        if self.args.omp_wait_policy:
            env["OMP_WAIT_POLICY"] = self.args.omp_wait_policy
        env.update(HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error",
                   TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
        started = time.time()
        out, err, code, rss = spawn([python, os.path.abspath(__file__), "--worker", worker,
                                     json.dumps(spec)], timeout, env)
        result = None
        for line in out.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        if result is None:
            result = {"error": failure(err, code)}
        result["peak_rss_bytes"] = rss
        result["wall_s"] = time.time() - started
        return result

    def lorac(self, arguments, timeout):
        started = time.time()
        out, err, code, rss = spawn([self.args.lorac, *arguments], timeout)
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": failure(err, code), "peak_rss_bytes": rss}
        result["peak_rss_bytes_wait4"] = rss
        result.setdefault("peak_rss_bytes", rss)
        result["wall_s"] = time.time() - started
        return result

    def lorac_generate(self, model, threads, extra):
        """Greedy decoding by `lorac generate`, one process per run (the first is the warm-up)."""
        rates, rss, last = [], 0, None
        for run in range(self.args.runs + 1):
            result = self.lorac(["generate", model, "--prompt-ids", ",".join(map(str, prompt_ids())),
                                 "--max-tokens", str(DECODE_TOKENS), "--ignore-eos", "--threads",
                                 str(threads), "--json", *extra], 600)
            if "error" in result:
                return result
            count = len(result["ids"])
            if count != DECODE_TOKENS:
                return {"error": f"lorac generate made {count} tokens, not {DECODE_TOKENS}"}
            if run:
                # Steps per second: the first token comes from the prefill.
                rates.append(result["decode_tokens_per_s"])
            rss = max(rss, result["peak_rss_bytes_wait4"])
            last = result
        return {"tokens_per_s": median(rates), "rates": rates, "peak_rss_bytes": rss,
                "prefill_tokens_per_s_in_generate": last["prefill_tokens_per_s"]}

    def record(self, workload, threads, system, result, note=""):
        row = {"workload": workload, "threads": threads, "system": system, "note": note, **result}
        self.rows.append(row)
        shown = (f"{row['tokens_per_s']:.1f} tok/s" if row.get("tokens_per_s") else row.get("error", "?"))
        rss = row.get("peak_rss_bytes")
        print(f"  {workload:34s} {threads}t {system:34s} {shown}"
              + (f", peak RSS {rss / 2**20:.0f} MiB" if rss else ""), flush=True)
        self.save_partial()

    def save_partial(self):
        with open(os.path.join(self.args.out, self.args.stem + ".partial.json"), "w") as f:
            json.dump(self.rows, f, indent=1)

    # ---- workloads

    def train(self, threads, batch, seq, targets):
        workload = f"train LoRA r8 {'q,k,v,o' if targets == ATTN else 'all linear'} {batch}x{seq}"
        spec = {"model": self.args.model, "threads": threads, "batch": batch, "seq": seq,
                "targets": targets}
        arguments = ["bench", "train", self.args.model, "--batch", str(batch), "--seq", str(seq), "--rank",
                     "8", "--targets", LORAC_TARGETS[targets], "--threads", str(threads), "--runs",
                     str(self.args.runs), "--json"]
        systems = [("lorac", lambda: self.lorac(arguments, 1800)),
                   (LORAC_BF16, lambda: self.lorac(arguments + ["--precision", "bf16"], 1800))]
        if "torch" in self.peers:
            systems.append(("PyTorch+PEFT eager", self.peer(self.args.python, "torch_train", spec, 1800)))
        if "penzai" in self.peers:
            systems.append(("JAX+Penzai (jit)", lambda: self.python_worker(
                self.args.python, "penzai_train", dict(spec, config=self.hf_config()), 1800)))
        if "torch.compile" in self.peers and (batch, seq, targets) in self.compile_configs:
            systems.append(("PyTorch+PEFT torch.compile", self.peer(
                self.args.python, "torch_train", dict(spec, compile=True), 3600)))
        self.run_systems(workload, threads, systems)

    def prefill(self, threads):
        workload = f"prefill {PROMPT_TOKENS} tokens"
        spec = {"threads": threads}
        systems = [("lorac (Q4_1 file)", lambda: self.lorac(
            ["bench", "prefill", self.args.model, "--tokens", str(PROMPT_TOKENS), "--threads",
             str(threads), "--runs", str(self.args.runs), "--json"], 600))]
        if "torch" in self.peers:
            systems.append(("PyTorch f32", self.peer(
                self.args.python, "torch_prefill", dict(spec, model=self.args.model), 900)))
        if "llama.cpp" in self.peers:
            systems.append(("llama.cpp Q4_1", self.peer(
                self.args.llama_python, "llama_prefill", dict(spec, model=self.args.model), 600)))
            systems.append(("llama.cpp F32 copy", lambda: self.python_worker(
                self.args.llama_python, "llama_prefill", dict(spec, model=self.f32_copy()), 600)))
        self.run_systems(workload, threads, systems)

    def decode(self, threads):
        workload = f"greedy decode {DECODE_TOKENS} tokens"
        spec = {"threads": threads}
        systems = [
            ("lorac Q4_1", lambda: self.lorac_generate(self.args.model, threads, [])),
            ("lorac Q4_1 --int8-activations", lambda: self.lorac_generate(
                self.args.model, threads, ["--int8-activations"])),
            ("lorac F32 copy", lambda: self.lorac_generate(self.f32_copy(), threads, [])),
        ]
        if "llama.cpp" in self.peers:
            systems.append(("llama.cpp Q4_1", self.peer(
                self.args.llama_python, "llama_decode", dict(spec, model=self.args.model), 900)))
            systems.append(("llama.cpp F32 copy", lambda: self.python_worker(
                self.args.llama_python, "llama_decode", dict(spec, model=self.f32_copy()), 900)))
        if "torch" in self.peers:
            systems.append(("PyTorch f32 (HF generate)", self.peer(
                self.args.python, "torch_decode", dict(spec, model=self.args.model), 1800)))
        self.run_systems(workload, threads, systems)

    def rlhf(self, threads):
        workload = "RLHF phase 16 x 24 tokens"
        spec = {"model": self.args.model, "threads": threads, "batch": 16, "gen_len": 24,
                "minibatches": 2, "batches_per_phase": 2, "rank": 4, "alpha": 32, "lr": 1e-3,
                "head_lr": 5e-4, "kl_coef": 0.05, "prefix": "This is"}
        arguments = ["bench", "rlhf", self.args.model, "--batch", "16", "--gen-len", "24",
                     "--minibatches", "2", "--batches-per-phase", "2", "--rank", "4", "--kl-coef",
                     "0.05", "--threads", str(threads), "--runs", str(self.args.runs), "--json"]
        systems = [("lorac", lambda: self.lorac(arguments, 1800))]
        if "torch" in self.peers:
            systems.append(("PyTorch+PEFT, reference = adapter disabled", self.peer(
                self.args.python, "torch_rlhf", dict(spec, reference="disable"), 1800)))
            systems.append(("PyTorch+PEFT, reference = model copy", self.peer(
                self.args.python, "torch_rlhf", dict(spec, reference="copy"), 1800)))
            systems.append(("TRL PPOTrainer", lambda: self.trl_ppo()))
        self.run_systems(workload, threads, systems)
        # lorac's own train step at the same batch and row length (2 + 24 tokens), for its RSS.
        train = self.lorac(["bench", "train", self.args.model, "--batch", "16", "--seq", "26",
                            "--rank", "4", "--runs", str(self.args.runs), "--threads",
                            str(threads), "--json"], 1800)
        self.record("lorac train 16x26 r4 q,k,v,o (RSS reference)", threads, "lorac", train)

    def trl_ppo(self):
        """TRL's PPO trainer, when the installed TRL has one (it left TRL's main package)."""
        code = ("import trl, importlib.util as u; "
                "print(trl.__version__, any(u.find_spec(m) for m in "
                "('trl.trainer.ppo_trainer', 'trl.experimental.ppo')))")
        found = subprocess.run([self.args.python, "-c", code], capture_output=True, text=True)
        if found.returncode != 0:
            return {"error": "TRL is not installed: " + failure(found.stderr, found.returncode)}
        version, has_ppo = found.stdout.split()
        if has_ppo != "True":
            return {"error": f"TRL {version} has no PPO trainer (removed from TRL; its online RL "
                             "trainers are GRPO and RLOO)"}
        return {"error": f"TRL {version}'s PPOTrainer needs a reward model (an nn.Module), not a "
                         "rule reward; not run"}

    def compile_times(self, threads):
        train = self.lorac(["bench", "train", self.args.model, "--runs", "1", "--threads", str(threads),
                            "--json"], 900)
        decode = self.lorac(["bench", "decode", self.args.model, "--positions", "16", "--runs", "1",
                             "--threads", str(threads), "--json"], 600)
        for name, result in (("train step 16x32 q,k,v,o", train), ("decode step", decode)):
            seconds = result.get("compile_s")
            row = {"compile_s": seconds} if seconds is not None else {
                "error": result.get("error", "no compile_s in lorac's JSON")}
            for key in ("trace_s", "passes_s", "plan_s"):
                if key in result:
                    row[key] = result[key]
            self.rows.append({"workload": f"lorac compile: {name}", "threads": threads,
                              "system": "lorac", "note": "trace + passes + plan", **row})
            print(f"  lorac compile {name}: " + (f"{seconds * 1e3:.0f} ms" if seconds is not None
                                                 else row["error"]), flush=True)

    # ---- helpers

    def run_systems(self, workload, threads, systems):
        """Measures each (name, function) in turn, --rounds times (the order alternating between
        rounds), and records one row per system (an error row for a system whose packages failed
        to install): the median of its rounds, with each round's figure, so that a ratio can be
        taken round by round between systems measured minutes apart rather than a whole round
        apart."""
        rounds = {system: [] for system, _ in systems}
        for number in range(self.args.rounds):
            for system, run in self.ordered(systems):
                result = self.installed(system) or run()
                rounds[system].append(result)
                if self.args.rounds > 1:
                    print(f"    round {number + 1}: {system}: " + (
                        f"{result['tokens_per_s']:.1f} tok/s" if result.get("tokens_per_s")
                        else result.get("error", "?")), flush=True)
        for system, _ in systems:
            self.record(workload, threads, system, combine_rounds(rounds[system]))

    def peer(self, python, worker, spec, timeout):
        """A measurement by a worker of this file in its own process, for run_systems."""
        return lambda: self.python_worker(python, worker, spec, timeout)

    def ordered(self, systems):
        """Alternates the order of systems between workloads so no system always runs first."""
        self.turn = getattr(self, "turn", 0) + 1
        return systems if self.turn % 2 else [systems[0]] + systems[1:][::-1]

    def installed(self, system):
        """An error row for a system whose packages failed to install, else None."""
        needs = {"PyTorch": ["torch", "transformers", "peft"], "JAX": ["penzai"],
                 "llama.cpp": ["llama_cpp"]}
        for prefix, modules in needs.items():
            if system.startswith(prefix):
                for module in modules:
                    if module in self.install_errors:
                        return {"error": f"not installed: {self.install_errors[module]}"}
        return None

    def hf_config(self):
        if not hasattr(self, "_hf_config"):
            code = ("import json, os, sys; from transformers import AutoConfig; "
                    "f, n = os.path.split(sys.argv[1]); "
                    "print(json.dumps(AutoConfig.from_pretrained(f, gguf_file=n).to_dict()))")
            out = subprocess.run([self.args.python, "-c", code, self.args.model], check=True,
                                 capture_output=True, text=True).stdout
            config = json.loads(out.strip().splitlines()[-1])
            config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
            self._hf_config = config
        return self._hf_config

    def f32_copy(self):
        target = os.path.join(os.path.dirname(self.args.model),
                              os.path.basename(self.args.model).replace(".Q4_1.", ".F32."))
        if target == self.args.model:
            target = self.args.model + ".F32.gguf"
        if not os.path.exists(target):
            print(f"  writing the all-F32 copy {target}", flush=True)
            all_f32(self.args.model, target + ".tmp")
            os.rename(target + ".tmp", target)
        return target



def all_f32(source, target):
    """The all-F32 copy of a GGUF that Tests/Interop/llama_cpp_adapter.py writes for its checks
    (every F16/Q8_0/Q4_1 tensor dequantized, metadata bytes kept): one implementation for both."""
    sys.path.insert(0, os.path.join(HERE, "..", "..", "Tests", "Interop"))
    from llama_cpp_adapter import all_f32 as copy
    copy(source, target)


# ---------------------------------------------------------------- report

def combine_rounds(results):
    """One row of a system's rounds: the first failure if any round failed; else the median
    round's fields with the median rate, every round's rate and the largest peak RSS."""
    for result in results:
        if "error" in result or not result.get("tokens_per_s"):
            return result
    rates = [result["tokens_per_s"] for result in results]
    middle = sorted(results, key=lambda result: result["tokens_per_s"])[(len(results) - 1) // 2]
    return dict(middle, tokens_per_s=median(rates), round_tokens_per_s=rates,
                peak_rss_bytes=max(result.get("peak_rss_bytes") or 0 for result in results) or None)


def speed_ratio(ours, theirs):
    """lorac / peer speed: the median of the per-round ratios when both rows have the same number
    of rounds (each round's two figures were taken minutes apart), with their range."""
    mine, peer = ours.get("round_tokens_per_s"), theirs.get("round_tokens_per_s")
    if mine and peer and len(mine) == len(peer) and len(mine) > 1:
        ratios = [a / b for a, b in zip(mine, peer)]
        return median(ratios), (min(ratios), max(ratios))
    return ours["tokens_per_s"] / theirs["tokens_per_s"], None


def machine():
    info = {"platform": platform.platform(), "cpus_online": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and "cpu_model" not in info:
                info["cpu_model"] = line.split(":", 1)[1].strip()
            if line.startswith("cpu family") and "cpu_family" not in info:
                info["cpu_family"] = line.split(":", 1)[1].strip()
            if line.startswith("model") and line.split(":")[0].strip() == "model" and "cpu_model_number" not in info:
                info["cpu_model_number"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and "flags" not in info:
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(f for f in flags if f in {
                    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                    "avx_vnni", "amx_bf16", "amx_int8", "avx512_fp16"})
        with open("/proc/meminfo") as f:
            info["memory"] = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return info


def versions(args):
    code = ("import json, importlib.metadata as m; out = {}\n"
            "for p in ['torch', 'transformers', 'peft', 'gguf', 'jax', 'jaxlib', 'penzai', 'optax', "
            "'numpy', 'matplotlib', 'llama_cpp_python']:\n"
            "    try: out[p] = m.version(p)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))")
    found = {"python": platform.python_version()}
    for python in (args.python, args.llama_python):
        try:
            found.update(json.loads(subprocess.run([python, "-c", code], capture_output=True,
                                                   text=True, check=True).stdout))
        except (subprocess.CalledProcessError, ValueError, OSError):
            pass
    try:
        found["lorac"] = subprocess.run(["git", "-C", os.path.join(HERE, "..", ".."), "describe",
                                         "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    try:
        found["swift"] = subprocess.run(["swift", "--version"], capture_output=True,
                                        text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    return found


LORAC_BF16 = "lorac --precision bf16"


def lorac_row(rows, row):
    """The lorac figure a peer row is compared with."""
    if row["workload"].startswith("greedy decode"):
        name = {"llama.cpp F32 copy": "lorac F32 copy",
                "PyTorch f32 (HF generate)": "lorac F32 copy"}.get(row["system"], "lorac Q4_1")
    elif row["workload"].startswith(("train", "RLHF")):
        name = "lorac"
    else:
        name = None
    for other in rows:
        if (other["workload"] == row["workload"] and other["threads"] == row["threads"]
                and other["system"].startswith("lorac") and (name is None or other["system"] == name)
                and other.get("tokens_per_s")):
            return other
    return None


def report(args, rows, header):
    lines = [f"# lorac against its peers{'' if args.full else ' (QUICK RUN: a check of the harness only; regenerate with a full run)'}",
             "",
             f"Generated by `{' '.join(['Benchmarks/peers/run', *header['argv']])}` on {header['date']}. "
             f"Threads {header['threads']}, medians of {args.runs} runs after one warm-up; each system in its "
             "own process (peak RSS = that process's ru_maxrss), systems run back to back per workload, "
             f"{args.rounds} round{'s' if args.rounds > 1 else ''} with the order reversed each round "
             "(tokens/s: the median of the rounds; speed ratio: the median of the per-round ratios, "
             "with their range).",
             "",
             f"- machine: {header['machine'].get('cpu_model', '?')} (family {header['machine'].get('cpu_family', '?')}, "
             f"model {header['machine'].get('cpu_model_number', '?')}), {header['machine'].get('cpus_online')} CPUs, "
             f"{header['machine'].get('memory', '?')}; flags: {', '.join(header['machine'].get('flags', []))}",
             f"- load average at start {header['load_start']}, at end {header['load_end']} "
             "(the machine is shared: other builds and tests ran meanwhile)",
             f"- OMP_WAIT_POLICY of the Python peers: {header.get('omp_wait_policy') or 'unset (their default)'}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()),
             ]
    if header["install_errors"]:
        lines.append("- install failures: " + "; ".join(f"{k}: {v}" for k, v in header["install_errors"].items()))
    lines += ["", "Ratio = lorac tokens/s / peer tokens/s (above 1: lorac faster); RSS ratio = lorac / peer "
              "(below 1: lorac smaller). Decode peers compare with lorac on the same file (Q4_1 with f32 "
              "activations; the F32 copy, also for PyTorch's f32); `--int8-activations` rounds activations as llama.cpp does. "
              "Training ratios are lorac's strict f32 mode; `--precision bf16` (bf16 frozen weights, avx512_bf16 "
              "products) is in the notes.",
              "", "| workload | threads | system | tokens/s | peak RSS | lorac / peer speed | lorac / peer RSS | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["workload"].startswith("lorac compile"):
            continue
        rate = row.get("tokens_per_s")
        rss = row.get("peak_rss_bytes")
        ours = lorac_row(rows, row)
        speed = rss_ratio = ""
        if not row["system"].startswith("lorac") and ours and rate:
            row["ratio_speed"], spread = speed_ratio(ours, row)
            speed = f"{row['ratio_speed']:.2f}" + (f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else "")
            if rss and ours.get("peak_rss_bytes"):
                rss_ratio = f"{ours['peak_rss_bytes'] / rss:.2f}"
            row["ratio_rss"] = ours["peak_rss_bytes"] / rss if rss and ours.get("peak_rss_bytes") else None
        notes = []
        # lorac's faster, less exact modes against the peers that compute the same way or in f32.
        alternative = None
        if row["system"] == "llama.cpp Q4_1" and row["workload"].startswith("greedy decode"):
            alternative = ("lorac Q4_1 --int8-activations", "ratio_speed_int8", "lorac --int8-activations")
        elif row["workload"].startswith("train") and not row["system"].startswith("lorac"):
            alternative = (LORAC_BF16, "ratio_speed_bf16", "lorac --precision bf16")
        if alternative and rate:
            system, key, label = alternative
            for other in rows:
                if (other["workload"] == row["workload"] and other["threads"] == row["threads"]
                        and other["system"] == system and other.get("tokens_per_s")):
                    row[key] = speed_ratio(other, row)[0]
                    notes.append(f"{label} / this {row[key]:.2f}")
        if "error" in row:
            notes.append("FAILED: " + row["error"].replace("|", "/"))
        if row.get("peak_rss_after_load_bytes"):
            notes.append(f"peak RSS from warm-up on {row['peak_rss_after_load_bytes'] / 2**20:.0f} MiB")
        for key, label in (("first_step_s", "first step"), ("compile_s", "compile")):
            if row.get(key) is not None:
                notes.append(f"{label} {row[key]:.2f} s")
        lines.append(f"| {row['workload']} | {row['threads']} | {row['system']} | "
                     f"{f'{rate:.1f}' if rate else '-'} | {f'{rss / 2**20:.0f} MiB' if rss else '-'} | "
                     f"{speed} | {rss_ratio} | {'; '.join(notes)} |")
    lines += ["", "## lorac compile time (trace + passes + plan)", "", "| pipeline | threads | compile | trace | passes | plan |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        if row["workload"].startswith("lorac compile"):
            def ms(key):
                return f"{row[key] * 1e3:.0f} ms" if row.get(key) is not None else "-"
            lines.append(f"| {row['workload'][len('lorac compile: '):]} | {row['threads']} | "
                         f"{ms('compile_s') if 'error' not in row else 'FAILED: ' + row['error']} | "
                         f"{ms('trace_s')} | {ms('passes_s')} | {ms('plan_s')} |")
    lines += ["", "## How each system runs", "", "```text", __doc__.split("Workloads", 1)[1].split("\n", 1)[1].rstrip(),
              "```", ""]
    return "\n".join(lines)


def chart(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bars = []
    for r in rows:
        if r.get("ratio_speed"):
            bars.append((f"{r['workload']}\nvs {r['system']}, {r['threads']}t", r["ratio_speed"]))
        for key, label in (("ratio_speed_int8", "lorac --int8-activations"),
                           ("ratio_speed_bf16", "lorac --precision bf16")):
            if r.get(key):
                bars.append((f"{r['workload']} ({label})\nvs {r['system']}, {r['threads']}t", r[key]))
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(bars) + 1.5))
    labels, values = zip(*bars)
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax.barh(range(len(bars)), values, color=colors)
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1, color="black", linewidth=0.8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlabel("lorac tokens/s / peer tokens/s (same run)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help="the Q4_1 GGUF (default: scripts/fetch-model)")
    parser.add_argument("--lorac", default=os.path.join(HERE, "..", "..", ".build", "release", "lorac"))
    parser.add_argument("--python", default=sys.executable, help="python of the peers' venv")
    parser.add_argument("--llama-python", default=sys.executable, help="python with llama_cpp")
    parser.add_argument("--install-status", default=None, help="JSON of packages that failed to install")
    parser.add_argument("--out", default=os.path.join(HERE, ".."))
    parser.add_argument("--threads", default=None, help="comma-separated (default 1,2; --quick: 2)")
    parser.add_argument("--runs", type=int, default=None, help="runs after warm-up (default 5; --quick: 2)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measure every system of a workload this many times, alternating the "
                             "order, and take ratios round by round (default 2; --quick: 1)")
    parser.add_argument("--only", default="train,prefill,decode,compile",
                        help="workloads: train, prefill, decode, compile, rlhf (alone: RESULTS-rlhf.md)")
    parser.add_argument("--peers", default="torch,torch.compile,penzai,llama.cpp",
                        help="which peers to run (lorac always runs)")
    parser.add_argument("--shapes", default=None,
                        help="train shapes BxS:attn|all, comma-separated (default 16x32:attn,4x128:attn,"
                             "16x32:all; --quick: 16x32:attn)")
    parser.add_argument("--tokens", type=int, default=128,
                        help="prompt and decode lengths (default 128; smaller only to debug the harness)")
    parser.add_argument("--omp-wait-policy", choices=["ACTIVE", "PASSIVE"], default=None,
                        help="OMP_WAIT_POLICY for the Python peers (default: theirs). On a loaded "
                             "machine PyTorch's spinning OpenMP workers lose 3x (measured: 92 vs 297 "
                             "prefill tok/s at load 6); PASSIVE keeps them from spinning")
    parser.add_argument("--check-rss", action="store_true",
                        help="check that a child's peak RSS is its own, not the grown harness's")
    parser.add_argument("--quick", action="store_true",
                        help="check the harness: 1 thread count, 2 runs, one train shape, no torch.compile")
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.spec)
        return
    if args.check_rss:
        check_rss()
        return
    spawn([sys.executable, "-c", "pass"], 60)  # fork the spawner before the harness grows
    args.threads = [int(t) for t in (args.threads or ("2" if args.quick else "1,2")).split(",")]
    args.runs = args.runs or (2 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.runs < 1 or args.rounds < 1:
        parser.error("--runs and --rounds take a count of at least 1")
    set_tokens(args.tokens)
    args.full = (not args.quick and args.tokens == 128 and args.runs >= 5 and set(args.threads) >= {1, 2}
                 and args.shapes is None and set(args.only.split(",")) >= {"train", "prefill", "decode", "compile"}
                 and set(args.peers.split(",")) >= {"torch", "torch.compile", "penzai", "llama.cpp"})
    args.stem = ("results-rlhf" if set(args.only.split(",")) == {"rlhf"}
                 else "results" if args.full else "results-quick")
    if args.model is None:
        args.model = subprocess.run([os.path.join(HERE, "..", "..", "scripts", "fetch-model")],
                                    check=True, capture_output=True, text=True).stdout.strip()
    args.model = os.path.abspath(args.model)
    driver = Driver(args)
    driver.peers = set(args.peers.split(","))
    if args.quick:
        driver.peers.discard("torch.compile")
    driver.install_errors = {}
    if args.install_status and os.path.exists(args.install_status):
        with open(args.install_status) as f:
            driver.install_errors = json.load(f)
    shapes = []
    for item in (args.shapes or ("16x32:attn" if args.quick else "16x32:attn,4x128:attn,16x32:all")).split(","):
        size, targets = item.split(":")
        batch, seq = size.split("x")
        shapes.append((int(batch), int(seq), {"attn": ATTN, "all": ALL}[targets]))
    driver.compile_configs = {shapes[0]}
    only = set(args.only.split(","))
    header = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "threads": args.threads, "runs": args.runs, "rounds": args.rounds, "full": args.full, "model": args.model,
              "argv": [a for a in sys.argv[1:] if not a.startswith(("--lorac", "--llama-python", "--install-status", "--out", "/"))],
              "machine": machine(), "versions": versions(args), "omp_wait_policy": args.omp_wait_policy, "load_start": load_average(),
              "install_errors": driver.install_errors}
    print(f"peers: load average {header['load_start']}; threads {args.threads}, runs {args.runs}", flush=True)
    for threads in args.threads:
        if "train" in only:
            for batch, seq, targets in shapes:
                driver.train(threads, batch, seq, targets)
        if "prefill" in only:
            driver.prefill(threads)
        if "decode" in only:
            driver.decode(threads)
        if "compile" in only:
            driver.compile_times(threads)
        if "rlhf" in only:
            driver.rlhf(threads)
    header["load_end"] = load_average()
    rows = driver.rows
    markdown = report(args, rows, header)
    suffix = {"results-quick": "-quick", "results-rlhf": "-rlhf"}.get(args.stem, "")
    with open(os.path.join(args.out, f"RESULTS{suffix}.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(args.out, f"{args.stem}.json"), "w") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1)
    try:
        chart(rows, os.path.join(args.out, f"{args.stem}.png"),
              f"lorac / peer, {header['machine'].get('cpu_model', '')}, {header['date']}"
              + ("" if args.full else " (quick run)"))
    except Exception as error:  # the table and JSON are written already
        print(f"peers: no chart: {error}", file=sys.stderr)
    partial = os.path.join(args.out, args.stem + ".partial.json")
    if os.path.exists(partial):
        os.remove(partial)
    print(markdown)


if __name__ == "__main__":
    main()
