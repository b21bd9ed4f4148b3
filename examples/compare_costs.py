"""Where should I train this data set? Price it on OpenAI, this machine and rented GPUs, then rank.

Run it on your own files::

    python examples/compare_costs.py train.jsonl --test test.jsonl
    python examples/compare_costs.py train.jsonl --config ftkit.toml --max-hours 2
    python examples/compare_costs.py --demo          # a made-up set of 2,000 labelled job postings

Every figure comes from ``ftkit.costs`` (a dated, sourced price catalogue, or each installed
backend's own estimate); the assumptions behind the cheapest options are printed under the table.
Override electricity price, device power, GPU types or the model size in the ``[costs]`` section
of the config (see docs/costs.md).
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from ftkit.costs import CostSettings, estimate_all
from ftkit.costs.plan import CostRow


def demo_data(folder: Path, n: int = 2_000, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic classification set shaped like hand-labelled job postings (train + test)."""
    rng = random.Random(seed)
    kinds = {
        "engineering": ["python", "backend", "kubernetes", "api", "data pipelines", "on-call"],
        "sales": ["quota", "pipeline", "crm", "territory", "enterprise accounts", "commission"],
        "care": ["patients", "shifts", "nursing", "elderly care", "certification", "ward"],
    }
    rows = []
    for i in range(n):
        label = rng.choice(list(kinds))
        words = rng.sample(kinds[label], 3) + rng.sample([w for k in kinds.values() for w in k], 2)
        rows.append({"id": str(i), "text": f"We are hiring: {', '.join(words)}. Full time, posting {i}.",
                     "label": label})
    train, test = folder / "postings-train.jsonl", folder / "postings-test.jsonl"
    cut = int(n * 0.8)
    train.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows[:cut]))
    test.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows[cut:]))
    return train, test


def rank(rows: list[CostRow], max_hours: float | None) -> list[CostRow]:
    """Priced rows, cheapest first; those over the time limit go last."""
    priced = [r for r in rows if r.total_usd is not None]

    def key(r: CostRow) -> tuple[bool, float]:
        too_slow = max_hours is not None and r.train_hours is not None and r.train_hours > max_hours
        return (too_slow, r.total_usd or 0.0)

    return sorted(priced, key=key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", nargs="?", type=Path, help="training JSONL")
    parser.add_argument("--test", type=Path, help="test JSONL, to price evaluation too")
    parser.add_argument("--config", type=Path, help="ftkit.toml / .yaml with backend sections and [costs]")
    parser.add_argument("--backend", action="append", help="only these backends (repeatable)")
    parser.add_argument("--max-hours", type=float, help="rank options slower than this last")
    parser.add_argument("--gpu", action="append", help="GPU types to price for remote training (repeatable)")
    parser.add_argument("--demo", action="store_true", help="price a synthetic set of 2,000 job postings")
    args = parser.parse_args()

    console = Console()
    tmp = None
    if args.demo:
        tmp = tempfile.TemporaryDirectory(prefix="ftkit-demo-")
        args.train, args.test = demo_data(Path(tmp.name))
    if args.train is None and args.config is None:
        parser.error("give a training file, --config or --demo")
    settings = CostSettings(gpus=args.gpu) if args.gpu else None
    report = estimate_all(args.train, config=args.config, test=args.test, backends=args.backend or None,
                          settings=settings)

    console.print(f"[bold]{report.data}[/bold]: {report.examples:,} examples, "
                  f"{report.billed_tokens_per_epoch:,} billed tokens per epoch; every row prices {report.epochs} "
                  f"epochs ({report.epochs_source})", highlight=False)
    if report.test:
        console.print(f"test set: {report.test_examples:,} examples, {report.test_tokens or 0:,} tokens",
                      highlight=False)
    table = Table("#", "backend", "where", "train $", "train hours", "eval $", "total $")
    ranked = rank(report.rows, args.max_hours)
    for i, r in enumerate(ranked, 1):
        slow = args.max_hours is not None and r.train_hours is not None and r.train_hours > args.max_hours
        table.add_row(str(i), r.backend, r.target + (" (too slow)" if slow else ""),
                      f"{r.train_usd:.4f}", "-" if r.train_hours is None else f"{r.train_hours:.2f}",
                      "-" if r.eval_usd is None else f"{r.eval_usd:.4f}", f"{r.total_usd:.4f}")
    console.print(table)
    for r in [r for r in report.rows if r.total_usd is None]:
        console.print(f"[yellow]not priced[/yellow] {r.backend} {r.target}: {r.error}", highlight=False)
    if ranked:
        best = ranked[0]
        console.print(f"\n[bold green]Cheapest:[/bold green] {best.target} ({best.backend}), "
                      f"${best.total_usd:.4f}", highlight=False)
        console.print("How that was computed:")
        for a in best.assumptions:
            console.print(f"  - {a}", highlight=False, markup=False)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
