"""DPO training throughput: ftkit's preference loop against TRL's ``DPOTrainer``, in one process.

Same model shape (random init from SmolLM2-135M's published config, by default), same data, same LoRA
(r=16, alpha=32, all 7 linear projections, dropout 0), same pairs per optimizer step, same beta and loss:

* ``ftkit``: ``ftkit_hf.engine.preference.train_preference`` with the default engine settings (chosen and
  rejected packed as separate segments, label-only logits, reference log-probs computed once, bf16 autocast
  where the CPU has native bf16);
* ``trl``: ``trl.DPOTrainer`` as a user would run it with a PEFT model: padded batches, the reference
  computed by disabling the adapter in every step (TRL's default);
* ``trl_precompute`` (``--precompute``): the same with ``precompute_ref_log_probs=True``.

The data are preference pairs built from the SMS Spam Collection (see ``dpo_quality.py``), repeated
``--repeat`` times with the prompt padded by a second message, so that sequences have realistic lengths; both
trainers tokenize the same conversations with SmolLM2's chat template. Throughput is real (non-pad) tokens
of chosen and rejected sequences per second of the training call (reference pass included), per wall second
and per CPU second of the process (``time.process_time``, all its threads): on a shared machine the wall time
depends on what else runs, the CPU time much less, so ``ftkit_vs_trl_cpu`` is the ratio to read there. Both
trainers get the same number of torch threads (``--threads``; on a loaded machine 1 avoids the thread pool
waiting on a descheduled worker at every operator). Peak resident memory is sampled every 50 ms.

Usage::

    python benchmarks/dpo_throughput.py --pairs 48 --pairs-per-step 8

Writes ``benchmarks/results/dpo-throughput-<date>-cpu.json`` (``--out`` to override).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "backends" / "hf"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dpo_quality import preference_rows  # noqa: E402
from lora_throughput import SHAPES, PeakMemory, lora_config  # noqa: E402

from ftkit.atomic import atomic_write_text  # noqa: E402

BETA = 0.1
LR = 5e-5


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    return "unknown"


def _model(tokenizer: Any, size: str) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, bos_token_id=1, eos_token_id=2,
                      pad_token_id=2, **SHAPES[size])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")


def _rows(n: int) -> list[dict[str, Any]]:
    from ftkit_hf.datasets import load_sms_spam, stratified_split

    sms = stratified_split(load_sms_spam(), {"train": n}, seed=0, balanced=True)["train"]
    rows = preference_rows(sms)
    # A second, longer turn before the question: prompts of a few hundred tokens, as in chat preference data.
    for r, other in zip(rows, reversed(sms), strict=True):
        r["input"]["messages"] = [{"role": "user", "content": "Some context first: " + other["text"] * 3},
                                  {"role": "assistant", "content": "Understood."}, *r["input"]["messages"]]
    return rows


def run_ftkit(tokenizer: Any, rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from ftkit_hf.engine.dpo import DPOSettings
    from ftkit_hf.engine.preference import train_preference
    from ftkit_hf.engine.settings import EngineSettings
    from ftkit_hf.preference_data import encode_pair
    from peft import get_peft_model

    pairs = [encode_pair(tokenizer, r["input"]["messages"], r["preferred_output"][0], r["non_preferred_output"][0])
             for r in rows]
    model = get_peft_model(_model(tokenizer, args.size), lora_config())
    settings = EngineSettings(epochs=1, learning_rate=LR, batch_tokens=1 << 20, max_batch_examples=args.pairs_per_step,
                              device="cpu", warmup_ratio=0.0, precision=args.precision, threads=args.threads)
    losses: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        print(event, flush=True)
        if event["kind"] == "metrics":
            losses.append(event["train_loss"])

    with tempfile.TemporaryDirectory() as ckpt:
        started, cpu = time.perf_counter(), time.process_time()
        result = train_preference(model, pairs, None, settings, DPOSettings(beta=BETA), checkpoint_dir=Path(ckpt),
                                  on_event=on_event)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "real_tokens": sum(p.tokens for p in pairs), "steps": result.steps,
            "first_loss": losses[0], "final_loss": losses[-1]}


def run_trl(tokenizer: Any, rows: list[dict[str, Any]], args: argparse.Namespace,
            precompute: bool = False) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = Dataset.from_list([{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                               "rejected": r["non_preferred_output"]} for r in rows])
    losses: list[float] = []
    from transformers import TrainerCallback

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(output_dir=out, beta=BETA, learning_rate=LR, per_device_train_batch_size=args.pairs_per_step,
                        num_train_epochs=1, use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
                        report_to=[], max_length=None, dataloader_num_workers=0, dataset_num_proc=1,
                        precompute_ref_log_probs=precompute, lr_scheduler_type="linear", warmup_steps=0)
        trainer = DPOTrainer(model=_model(tokenizer, args.size), args=cfg, train_dataset=data,
                             processing_class=tokenizer, peft_config=lora_config(), callbacks=[Losses()])
        prepared: Any = trainer.train_dataset  # tokenized by TRL: prompt_ids, chosen_ids, rejected_ids
        real = sum(2 * len(x["prompt_ids"]) + len(x["chosen_ids"]) + len(x["rejected_ids"]) for x in prepared)
        if args.threads:
            torch.set_num_threads(args.threads)
        started, cpu = time.perf_counter(), time.process_time()
        trainer.train()  # with precompute, the reference pass runs here (in get_train_dataloader)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "real_tokens": real, "threads": torch.get_num_threads(),
            "steps": trainer.state.global_step, "first_loss": losses[0],
            "final_loss": losses[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--size", default="smollm2-135m", choices=sorted(SHAPES))
    parser.add_argument("--precompute", action="store_true", help="also TRL with precompute_ref_log_probs=True")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="ftkit's precision")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both (default: ftkit's plan)")
    parser.add_argument("--note", default="", help="free text stored in the results (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from ftkit_hf.engine.device import plan_device
    from ftkit_hf.models import resolve_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m").path))
    rows = _rows(args.pairs)
    load_start = list(os.getloadavg())
    recipes: dict[str, Callable[[Any, list[dict[str, Any]], argparse.Namespace], dict[str, Any]]] = {
        "ftkit": run_ftkit, "trl": run_trl}
    if args.precompute:
        recipes["trl_precompute"] = lambda t, r, a: run_trl(t, r, a, precompute=True)
    results = []
    for name, fn in recipes.items():
        gc.collect()
        with PeakMemory("cpu") as mem:
            out = fn(tokenizer, rows, args)
        out |= {"recipe": name, "tokens_per_s": round(out["real_tokens"] / out["seconds"], 1),
                "tokens_per_cpu_s": round(out["real_tokens"] / out["cpu_seconds"], 1),
                "peak_rss_gib": mem.gib, "seconds": round(out["seconds"], 1),
                "cpu_seconds": round(out["cpu_seconds"], 1)}
        print(json.dumps(out), flush=True)
        results.append(out)
    speed = {r["recipe"]: r["tokens_per_s"] for r in results}
    cpu_speed = {r["recipe"]: r["tokens_per_cpu_s"] for r in results}
    report = {
        "date": dt.date.today().isoformat(), "device": plan_device("cpu").describe(), "args": vars(args) | {
            "out": str(args.out) if args.out else None},
        "setup": f"LoRA r=16 alpha=32 on 7 projections, {args.size} shape (random init), beta {BETA}, sigmoid loss, "
                 f"{args.pairs_per_step} pairs per step, 1 epoch over {args.pairs} pairs",
        "results": results,
        "ftkit_vs_trl": round(speed["ftkit"] / speed["trl"], 2),
        "ftkit_vs_trl_cpu": round(cpu_speed["ftkit"] / cpu_speed["trl"], 2),
        "cpu_model": _cpu_model(), "load_average_start_end": [load_start, list(os.getloadavg())],
        "note": args.note,
    }
    out_path = args.out or ROOT / "benchmarks" / "results" / f"dpo-throughput-{report['date']}-cpu.json"
    atomic_write_text(out_path, json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("device", "ftkit_vs_trl", "ftkit_vs_trl_cpu")}))


if __name__ == "__main__":
    main()
