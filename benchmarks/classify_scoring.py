"""Label scoring vs generate-then-parse for classification, same model, same examples, same batch budget.

    python benchmarks/classify_scoring.py [--n 64] [--model smollm2-135m] [--repeats 2]

Recipes (each timed ``--repeats`` times, interleaved; the best time is reported):

- ``score``: ``classify(method="score")``: one forward pass over prompt + every label's answer tokens,
  the shared system prompt's keys/values computed once, logits only at label positions. Exact
  probabilities for every label.
- ``score_no_prefix``: the same without reusing the shared prefix (shows what that reuse saves).
- ``generate_min``: greedy generation of at most as many tokens as the longest label answer (the
  cheapest generation that can produce a label), then parsing. The fastest generate-then-parse can be.
- ``generate_8``: the same with ``max_new_tokens=8`` (room for "Spam." and similar; still one label
  with probability 1, no distribution over labels).

Prints a table and writes ``benchmarks/results/classify_scoring.json``. Speed is a ratio between
recipes of the same run, on the same machine, at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "classify_scoring.json")
    args = ap.parse_args()

    from ftkit_hf.datasets import load_sms_spam, stratified_split
    from ftkit_hf.models import resolve_model
    from ftkit_hf.predictor import HFPredictor

    labels = ["ham", "spam"]
    rows = stratified_split(load_sms_spam(), {"test": args.n}, seed=0)["test"]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    pred = HFPredictor.load(resolve_model(args.model).path, device="cpu", precision=args.precision)
    longest = max(len(v) for v in pred._prompter(labels).label_ids.values())

    def score(reuse: bool):
        pred.reuse_prefix = reuse
        return pred.classify(texts, labels=labels)

    recipes = {
        "score": lambda: score(True),
        "score_no_prefix": lambda: score(False),
        "generate_min": lambda: pred.classify(texts, labels=labels, method="generate", max_new_tokens=longest),
        "generate_8": lambda: pred.classify(texts, labels=labels, method="generate", max_new_tokens=8),
    }
    pred.classify(texts[:4], labels=labels)  # warm-up
    best: dict[str, float] = {}
    outputs: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, fn in recipes.items():
            t = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    result = {
        "model": args.model, "examples": len(texts), "precision": pred.precision, "repeats": args.repeats,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "recipes": {},
    }
    print(f"{'recipe':18}{'seconds':>9}{'ex/s':>8}{'vs score':>10}{'accuracy':>10}{'unparseable':>13}")
    for name in recipes:
        res = outputs[name]
        acc = sum(r.label == g for r, g in zip(res, gold, strict=True)) / len(gold)
        unp = sum(r.label == "UNPARSEABLE" for r in res) / len(res)
        ratio = best[name] / best["score"]
        result["recipes"][name] = {
            "seconds": round(best[name], 3), "examples_per_second": round(len(texts) / best[name], 2),
            "time_vs_score": round(ratio, 2), "accuracy": acc, "unparseable_rate": unp,
        }
        print(f"{name:18}{best[name]:>9.2f}{len(texts) / best[name]:>8.1f}{ratio:>9.2f}x{acc:>10.3f}{unp:>13.3f}")
    agree = sum(a.label == b.label for a, b in zip(outputs["score"], outputs["score_no_prefix"], strict=True))
    result["score_prefix_agreement"] = agree / len(texts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
