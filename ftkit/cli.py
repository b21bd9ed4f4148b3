"""The ``ftkit`` command: data checks, jobs, backends, evaluation and costs.

Every command turns an ``FtkitError`` into one clear line on stderr and exit code 2;
``validate`` exits 1 when the file has errors. No command prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ftkit.errors import FtkitError

app = typer.Typer(
    help="Fine-tune on OpenAI, a laptop or a rented GPU; validate, estimate, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (scripts, CI logs) gets wide tables instead of ids wrapped across lines.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

TargetOpt = Annotated[str | None, typer.Option("--target", help="openai:<model> or hf:<path>")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def clean_errors(fn: F) -> F:
    """Turn ftkit errors into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FtkitError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------ data


@app.command()
@clean_errors
def validate(
    path: Path,
    target: TargetOpt = None,
    labels: Annotated[str | None, typer.Option(help="Comma-separated allowed labels.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Report every problem in a JSONL file, with line numbers and stable codes."""
    from ftkit.data import Dataset

    report = Dataset.load(path).validate(target=target, labels=labels.split(",") if labels else None)
    if as_json:
        _print_json(report.to_json())
    else:
        for issue in [*report.errors, *report.warnings]:
            colour = "red" if issue.level == "error" else "yellow"
            out.print(
                f"{path}:{issue.line or '-'}: [{colour}]{issue.level}[/{colour}] {issue.code}: {issue.message}",
                highlight=False,
            )
        shown = len(report.errors) + len(report.warnings)
        total = sum(report.error_counts.values()) + sum(report.warning_counts.values())
        if total > shown:
            out.print(f"... {total - shown} more (counts: {report.error_counts | report.warning_counts})")
        verdict = "[green]ok[/green]" if report.ok else f"[red]{sum(report.error_counts.values())} error(s)[/red]"
        out.print(
            f"{path}: {report.format or 'unknown'} format, {report.examples} examples, {verdict}, "
            f"{sum(report.warning_counts.values())} warning(s)"
        )
    raise typer.Exit(0 if report.ok else 1)


@app.command()
@clean_errors
def stats(
    path: Path,
    target: TargetOpt = None,
    test: Annotated[Path | None, typer.Option(help="A test file to check for overlap with PATH.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Examples, token lengths, billed tokens per epoch, labels, duplicates, train/test overlap."""
    from ftkit.data import Dataset

    s = Dataset.load(path).stats(target=target, test=test)
    if as_json:
        _print_json(s.model_dump(mode="json"))
        return
    t = Table(title=f"{path} ({s.format}, tokens by {s.tokenizer})", show_header=False)
    t.add_row("examples", str(s.examples))
    if s.tokens:
        t.add_row(
            "tokens / example",
            f"min {s.tokens.min}  median {s.tokens.median:g}  mean {s.tokens.mean:g}  "
            f"p95 {s.tokens.p95:g}  max {s.tokens.max}",
        )
    t.add_row("billed tokens / epoch", f"{s.billed_tokens_per_epoch:,}")
    t.add_row("over the limit", f"{s.over_limit} (limit {s.limit})" if s.limit else "no limit known")
    if s.label_counts:
        t.add_row("labels", ", ".join(f"{k}: {v} ({v / s.examples:.1%})" for k, v in s.label_counts.items()))
    t.add_row("duplicates", str(s.duplicates))
    if s.overlap:
        t.add_row("overlap with test", f"{s.overlap['overlapping']} of {s.overlap['test_examples']} test examples")
    out.print(t)


@app.command()
@clean_errors
def convert(
    path: Path,
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write the chat JSONL.")],
    labels: Annotated[str | None, typer.Option(help="Comma-separated label vocabulary.")] = None,
    preamble: Annotated[str | None, typer.Option(help="System prompt; {labels} is filled in.")] = None,
) -> None:
    """Turn a classification file (text + label) into chat examples. PATH is never modified."""
    from ftkit.data import convert_file

    n = convert_file(path, output, labels=labels.split(",") if labels else None, preamble=preamble)
    out.print(f"wrote {n} chat examples to {output}")


@app.command()
@clean_errors
def split(
    path: Path,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/test.jsonl.")],
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
) -> None:
    """Deterministic stratified train/validation/test split by seed. PATH is never modified."""
    from ftkit.data import split_file

    for name, p in split_file(path, out_dir, validation=validation, test=test, seed=seed).items():
        out.print(f"{name}: {p}")


# ------------------------------------------------------------------------------ backends and jobs


@app.command()
@clean_errors
def backends(as_json: JsonOpt = False) -> None:
    """Installed backends, their versions, and whether they are usable here."""
    from ftkit.backend import get_backend, installed_backends

    rows = []
    for name, info in installed_backends().items():
        try:
            usable = get_backend(name).describe()
        except FtkitError as e:
            usable = f"unusable: {e}"
        rows.append({"name": name, "version": info.version, "distribution": info.distribution, "status": usable})
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no backends installed; e.g. pip install ftkit-hf")
    for r in rows:
        out.print(f"{r['name']}: {r['status']}  [dim]({r['distribution'] or 'in-process'} {r['version'] or ''})[/dim]")


@app.command()
@clean_errors
def train(
    config: Path,
    backend: Annotated[str | None, typer.Option(help="Backend section of the config to use.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    placebo: Annotated[bool, typer.Option("--placebo", help="Then train its placebo twin (labels permuted).")] = False,
) -> None:
    """Create and start a job from a TOML/YAML config."""
    from ftkit.job import FineTuneJob
    from ftkit.spec import JobSpec

    job = FineTuneJob.create(JobSpec.from_file(config, backend=backend))
    twin = job.placebo() if placebo else None  # created up front: a data problem stops both before any spend
    est = job.record.estimated_cost
    out.print(f"created {job.id} on {job.backend_name}" + (f" (estimate ${est['usd']:.4f})" if est else ""))
    job.start()
    out.print(f"started: {job.backend_job_id}")
    if wait:
        status = job.wait(progress=True)
        out.print(f"{job.id}: {status.value}")
    if twin is not None:
        from ftkit.cli_evidence import follow_placebo

        follow_placebo(twin, wait)


@app.command()
@clean_errors
def jobs(
    costs: Annotated[bool, typer.Option("--costs", help="Show estimated against actual cost.")] = False,
    limit: int = 50,
    as_json: JsonOpt = False,
) -> None:
    """Jobs in the registry, newest first."""
    from ftkit.store import JobStore

    records = JobStore().list(limit=limit)
    if as_json:
        _print_json([r.model_dump(mode="json", exclude={"state"}) for r in records])
        return
    t = Table("id", "backend", "status", "model", "created")
    if costs:
        t.add_column("estimate $")
        t.add_column("actual $")
    for r in records:
        row = [
            r.id,
            r.backend,
            r.status.value,
            r.model or r.spec.get("model") or "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
        ]
        if costs:
            row += [
                f"{r.estimated_cost['usd']:.4f}" if r.estimated_cost else "-",
                f"{r.actual_cost['usd']:.4f}" if r.actual_cost else "-",
            ]
        t.add_row(*row)
    out.print(t)


@app.command()
@clean_errors
def status(job_id: str, as_json: JsonOpt = False) -> None:
    """Look at a job once (asks its backend when the job is still active)."""
    from ftkit.job import FineTuneJob

    job = FineTuneJob.get(job_id)
    if not job.status.is_terminal:
        job.refresh()
    r = job.record
    if as_json:
        _print_json(r.model_dump(mode="json", exclude={"state"}))
        return
    out.print(f"{r.id}  {r.backend}  {r.status.value}  ({r.backend_status or '-'})")
    for key in ("backend_job_id", "model", "error"):
        if getattr(r, key):
            out.print(f"  {key}: {getattr(r, key)}")
    last = next((m for m in reversed(job.metrics()) if m.get("train_loss") is not None), None)
    if last:
        out.print(f"  step {last.get('step')}/{last.get('total_steps', '?')}  train_loss {last['train_loss']}")


@app.command()
@clean_errors
def events(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """A job's events, oldest first."""
    from ftkit.job import FineTuneJob
    from ftkit.store import JobStore

    store = JobStore()
    job = FineTuneJob.get(job_id, store=store)
    seen = 0
    while True:
        for seq, ev in store.events(job.id, after=seen):
            seen = seq
            if as_json:
                sys.stdout.write(ev.model_dump_json() + "\n")
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(ev.time))
                detail = "" if ev.kind == "message" else " " + json.dumps(ev.data, default=str)
                out.print(f"{stamp} {ev.level:7} {ev.kind:10} {ev.message}{detail}", highlight=False)
        sys.stdout.flush()
        if not follow or job.status.is_terminal:
            break
        job.refresh()
        time.sleep(job._backend().capabilities.poll_interval)


@app.command()
@clean_errors
def cancel(job_id: str) -> None:
    """Cancel a job (from any process)."""
    from ftkit.job import FineTuneJob

    job = FineTuneJob.get(job_id)
    out.print(f"{job.id}: {job.cancel().value}")


def _mount_plugins() -> None:
    """Commands from other modules and distributions (entry-point group ``ftkit.cli``)."""
    try:
        from ftkit.cli_eval import register
    except ImportError:
        pass
    else:
        register(app)
    from ftkit.cli_evidence import register as register_evidence

    register_evidence(app)
    for ep in entry_points(group="ftkit.cli"):
        try:
            sub = ep.load()
        except ImportError:
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)


_mount_plugins()


def main() -> None:
    """Entry point of the ``ftkit`` console script."""
    app()


if __name__ == "__main__":
    main()
