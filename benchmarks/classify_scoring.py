"""Label scoring vs generate-then-parse for classification: same model, same prompts, same examples.

    python benchmarks/classify_scoring.py [--n 128] [--model smollm2-135m] [--repeats 2]

Recipes (each timed ``--repeats`` times, interleaved; the best time is reported):

- ``score``: ``classify()`` as a user gets it: exact label scoring (one forward pass over prompt + every
  label's answer tokens, the shared system prompt's keys/values computed once, logits only at label
  positions) in the engine's default precision (bf16 autocast on a CPU with AVX512-BF16 or AMX).
- ``score_no_prefix``: the same without reusing the shared prefix (shows what that reuse saves).
- ``score_fp32``: the same scoring in fp32 (shows what precision is worth, and how far bf16 moves the
  probabilities: ``bf16_vs_fp32``).
- ``generate_min`` / ``generate_8``: ftkit's own generate-then-parse route (``classify(method="generate")``)
  on the same predictor and precision as ``score``: greedy generation of as many new tokens as the
  longest label answer (the cheapest generation that can produce a label) or of 8, then parsing. The
  ratio to ``score`` is what the *method* alone is worth.
- ``hf_generate_min`` / ``hf_generate_8``: the recipe a user writes without ftkit: transformers
  ``model.generate`` on the model as loaded (fp32), batches of 32 with left padding, then the same parser.
  Generous to the peer: prompts are sorted by length (least padding) and the tokens limit is the smallest
  that can hold a label. The ratio to ``score`` is what ftkit's ``classify`` is worth against it.

Prints a table and writes ``benchmarks/results/classify_scoring.json``. Speed is a ratio between recipes of
the same run, on the same machine, at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def hf_generate_then_parse(model: Any, tokenizer: Any, texts: Sequence[str], labels: list[str],
                           max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """The peer recipe: plain transformers generation over the classification prompt, then parsing."""
    import torch
    from ftkit_hf.predictor import parse_label

    from ftkit.data.convert import classification_messages

    prompts = [tokenizer.apply_chat_template(classification_messages(t, labels, None), tokenize=False,
                                             add_generation_prompt=True) for t in texts]
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            for i, text in zip(idx, tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :],
                                                           skip_special_tokens=True), strict=True):
                answers[i] = parse_label(text, labels)
    return [answers[i] for i in range(len(texts))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "classify_scoring.json")
    args = ap.parse_args()

    from ftkit_hf.datasets import load_sms_spam, stratified_split
    from ftkit_hf.models import resolve_model
    from ftkit_hf.predictor import HFPredictor

    labels = ["ham", "spam"]
    rows = stratified_split(load_sms_spam(), {"test": args.n}, seed=0)["test"]
    texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
    path = resolve_model(args.model).path
    pred = HFPredictor.load(path, device="cpu", precision="auto")
    pred32 = HFPredictor.load(path, device="cpu", precision="fp32")
    longest = max(len(v) for v in pred._prompter(labels).label_ids.values())

    def score(predictor: HFPredictor, reuse: bool = True) -> list[str]:
        predictor.reuse_prefix = reuse
        res = predictor.classify(texts, labels=labels)
        if reuse:  # the first run of each precision, for the bf16-vs-fp32 comparison
            probs.setdefault(predictor.precision, [r.probabilities for r in res])
        return [r.label for r in res]

    def ftkit_generate(k: int) -> list[str]:
        return [r.label for r in pred.classify(texts, labels=labels, method="generate", max_new_tokens=k)]

    def hf_generate(k: int) -> list[str]:
        return hf_generate_then_parse(pred32.model, pred32.tokenizer, texts, labels, k)

    probs: dict[str, list[dict[str, float]]] = {}
    recipes: dict[str, Callable[[], list[str]]] = {
        "score": lambda: score(pred),
        "score_no_prefix": lambda: score(pred, reuse=False),
        "score_fp32": lambda: score(pred32),
        "generate_min": lambda: ftkit_generate(longest),
        "generate_8": lambda: ftkit_generate(8),
        "hf_generate_min": lambda: hf_generate(longest),
        "hf_generate_8": lambda: hf_generate(8),
    }
    pred.classify(texts[:4], labels=labels)  # warm-up
    pred32.classify(texts[:4], labels=labels)
    best: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, fn in recipes.items():
            t = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    result: dict[str, Any] = {
        "command": "python benchmarks/classify_scoring.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "model": args.model, "examples": len(texts), "precision": pred.precision, "repeats": args.repeats,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "recipes": {},
    }
    print(f"{'recipe':18}{'seconds':>9}{'ex/s':>8}{'vs score':>10}{'accuracy':>10}{'unparseable':>13}")
    for name in recipes:
        res = outputs[name]
        acc = sum(r == g for r, g in zip(res, gold, strict=True)) / len(gold)
        unp = sum(r == "UNPARSEABLE" for r in res) / len(res)
        ratio = best[name] / best["score"]
        result["recipes"][name] = {
            "seconds": round(best[name], 3), "examples_per_second": round(len(texts) / best[name], 2),
            "time_vs_score": round(ratio, 2), "accuracy": acc, "unparseable_rate": unp,
        }
        print(f"{name:18}{best[name]:>9.2f}{len(texts) / best[name]:>8.1f}{ratio:>9.2f}x{acc:>10.3f}{unp:>13.3f}")
    if pred.precision != "fp32":
        diffs = [abs(a[lab] - b[lab]) for a, b in zip(probs[pred.precision], probs["fp32"], strict=True)
                 for lab in labels]
        same = sum(a == b for a, b in zip(outputs["score"], outputs["score_fp32"], strict=True)) / len(texts)
        result["bf16_vs_fp32"] = {"max_abs_prob_diff": round(max(diffs), 4),
                                  "mean_abs_prob_diff": round(sum(diffs) / len(diffs), 4), "same_label": same}
        print(f"{pred.precision} vs fp32 probabilities: {result['bf16_vs_fp32']}")
    same = sum(a == b for a, b in zip(outputs["score"], outputs["score_no_prefix"], strict=True))
    result["score_prefix_agreement"] = same / len(texts)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
