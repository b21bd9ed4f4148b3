"""The ``ftkit`` command: data checks, jobs, backends, evaluation and costs.

Every failure reaches the terminal as one line on stderr with a documented exit code (the
table is in :mod:`ftkit.cli_errors`): 1 the data is wrong (``validate`` found errors), 2 the
command cannot run as given, 3 a backend failed, 4 the machine stopped it (a full disk), 130
interrupted. ``FTKIT_DEBUG=1`` or ``ftkit --debug`` adds the traceback. Commands that write files
check every output first and never replace an existing file without ``--force``.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ftkit.cli_errors import FtkitGroup, debug_requested, report, set_debug
from ftkit.errors import FtkitError
from ftkit.redact import redact
from ftkit.verbosity import set_verbose

HELP = "Fine-tune on OpenAI, a laptop or a rented GPU; validate, estimate, evaluate."
app = typer.Typer(
    cls=FtkitGroup,
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (scripts, CI logs) gets wide tables instead of ids wrapped across lines.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)

TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="The model the data is for: openai:<model>, hf:<name or folder>, remote:<name>."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that already exist.")]


def _print_version(value: bool) -> None:
    """``ftkit --version``: ftkit's version and each installed backend's (read without importing them)."""
    if not value:
        return
    from ftkit import __version__
    from ftkit.backend import installed_backends

    out.print(f"ftkit {__version__}", highlight=False)
    for name, info in installed_backends().items():
        where = f"{info.distribution} {info.version}" if info.distribution else "registered in-process"
        out.print(f"  {name}: {where}", highlight=False)
    raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print ftkit's and the backends' versions."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (or FTKIT_DEBUG=1).")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Let transformers print its warnings and bars (or FTKIT_VERBOSE=1); else in the log.",
        ),
    ] = False,
) -> None:
    """Fine-tune on OpenAI, a laptop or a rented GPU; validate, estimate, evaluate.

    transformers' warnings and loading bars go to $FTKIT_HOME/logs/libraries.log unless --verbose.
    """
    set_debug(ctx, debug)
    set_verbose(verbose)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout, secrets masked (``--json`` output)."""
    sys.stdout.write(json.dumps(redact(json.loads(json.dumps(obj, default=str))), indent=2) + "\n")


# ------------------------------------------------------------------------------ data


@app.command()
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
        print_json(report.to_json())
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
        print_json(s.model_dump(mode="json"))
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
def convert(
    path: Path,
    output: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSONL.")],
    labels: Annotated[str | None, typer.Option(help="Comma-separated label vocabulary.")] = None,
    preamble: Annotated[str | None, typer.Option(help="System prompt; {labels} is filled in.")] = None,
    text_col: Annotated[str, typer.Option("--text-col", help="The column (or JSON key) holding the text.")] = "text",
    label_col: Annotated[
        str, typer.Option("--label-col", help="The column (or JSON key) holding the label.")
    ] = "label",
    to: Annotated[
        str, typer.Option("--to", help="chat (prompt + answer) or classification (text/label lines).")
    ] = "chat",
    force: ForceOpt = False,
) -> None:
    """Turn classification data (JSONL, or CSV/TSV with a header) into chat examples. PATH is never modified.

    Nothing is written when a row of PATH is not a valid example (exit 1, naming file:line) or OUT exists
    (exit 2, unless --force).
    """
    from ftkit.data import convert_file
    from ftkit.errors import ConfigError

    if to not in ("chat", "classification"):
        raise ConfigError(f"--to {to!r}: expected chat or classification")
    n = convert_file(
        path,
        output,
        labels=labels.split(",") if labels else None,
        preamble=preamble,
        force=force,
        text_col=text_col,
        label_col=label_col,
        to="chat" if to == "chat" else "classification",
    )
    out.print(f"wrote {n} {'chat' if to == 'chat' else 'classification'} examples to {output}")


@app.command()
def split(
    path: Path,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for train/validation/test.jsonl.")],
    validation: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Deterministic stratified train/validation/test split by seed; prints each part's examples and labels.

    PATH is never modified.

    Examples are copied byte for byte. Nothing is written when a line of PATH is not a JSON object
    (exit 1) or a part exists in the folder (exit 2, unless --force).
    """
    from ftkit.data.split import count_parts, split_file

    parts = count_parts(split_file(path, out_dir, validation=validation, test=test, seed=seed, force=force))
    if as_json:
        print_json({name: part.model_dump(mode="json") for name, part in parts.items()})
        return
    labels = sorted({label for part in parts.values() for label in part.labels})
    t = Table("part", "examples", *labels, "file", title=f"{path} split with seed {seed}")
    for col in t.columns[1 : 2 + len(labels)]:
        col.justify = "right"
    for name, part in parts.items():
        shares = [f"{part.labels.get(lab, 0)} ({part.labels.get(lab, 0) / part.examples:.0%})" for lab in labels]
        t.add_row(name, str(part.examples), *shares, str(part.path))
    out.print(t)


# ------------------------------------------------------------------------------ backends and jobs


@app.command()
def backends(as_json: JsonOpt = False) -> None:
    """Installed backends, their versions, and whether they are usable here."""
    from ftkit.backend import get_backend, installed_backends

    rows: list[dict[str, Any]] = []
    for name, info in installed_backends().items():
        caps = None
        try:
            be = get_backend(name)
            usable, caps = be.describe(), be.capabilities
        except FtkitError as e:
            usable = f"unusable: {e}"
        rows.append({"name": name, "version": info.version, "distribution": info.distribution, "status": usable,
                     "capabilities": caps.model_dump(mode="json") if caps else None})  # fmt: skip
        if caps:
            rows[-1]["capabilities"]["tasks"] = sorted(caps.tasks)
            rows[-1]["can"] = ", ".join([*sorted(caps.tasks), *caps.operations()])
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no backends installed; e.g. pip install ftkit-hf")
    for r in rows:
        out.print(f"{r['name']}: {r['status']}  [dim]({r['distribution'] or 'in-process'} {r['version'] or ''})[/dim]")
        if r.get("can"):
            out.print(f"  can: {r['can']}", highlight=False)


@app.command()
def train(
    config: Path,
    backend: Annotated[str | None, typer.Option(help="Backend section of the config to use.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    placebo: Annotated[bool, typer.Option("--placebo", help="Then train its placebo twin (labels permuted).")] = False,
    log_every: Annotated[
        int | None,
        typer.Option(
            "--log-every", min=1, help="Output not a terminal: a progress line every N steps (default ~20 a job)."
        ),
    ] = None,
) -> None:
    """Create and start a job from a TOML/YAML config.

    On a terminal a progress bar follows the job; otherwise (``nohup``, CI logs) timestamped lines do.
    """
    from ftkit.job import FineTuneJob
    from ftkit.spec import JobSpec

    # Said before anything slow (reading the data, loading a tokenizer): the first word comes at once.
    out.print(f"{time.strftime('%H:%M:%S')} checking {config} and its data...", highlight=False)
    sys.stdout.flush()
    job = FineTuneJob.create(JobSpec.from_file(config, backend=backend))
    twin = job.placebo() if placebo else None  # created up front: a data problem stops both before any spend
    est = job.record.estimated_cost
    out.print(f"created {job.id} on {job.backend_name}" + (f" (estimate ${est['usd']:.4f})" if est else ""))
    sys.stdout.flush()
    job.start()
    out.print(f"started: {job.backend_job_id}")
    sys.stdout.flush()
    if wait:
        status = job.wait(progress=True, log_every=log_every)
        out.print(f"{job.id}: {status.value}")
    if twin is not None:
        from ftkit.cli_evidence import follow_placebo

        follow_placebo(twin, wait)


@app.command()
def jobs(
    costs: Annotated[bool, typer.Option("--costs", help="Show estimated against actual cost.")] = False,
    limit: int = 50,
    as_json: JsonOpt = False,
) -> None:
    """Jobs in the registry, newest first."""
    from ftkit.store import JobStore

    records = JobStore().list(limit=limit)
    if as_json:
        print_json([r.model_dump(mode="json", exclude={"state"}) for r in records])
        return
    t = Table("id", "backend", "status", "model", "created")
    if costs:
        for column in ("estimate $", "actual $", "estimate h", "actual h", "actual/estimate"):
            t.add_column(column)
    for r in records:
        row = [
            r.id,
            r.backend,
            r.status.value,
            r.model or r.spec.get("model") or "",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
        ]
        if costs:
            row += _cost_cells(r.estimated_cost, r.actual_cost)
        t.add_row(*row)
    out.print(t)


def _cost_cells(est: dict[str, Any] | None, act: dict[str, Any] | None) -> list[str]:
    """Estimated and actual dollars and hours of a job, and how far off the estimate was.

    The ratio compares hours where both have them (a local job's dollars are its hours × power), else dollars.
    """
    est, act = est or {}, act or {}

    def cell(v: Any, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    ratio = "-"
    for key in ("hours", "usd"):
        if est.get(key) and act.get(key) is not None:
            ratio = f"{act[key] / est[key]:.2f}x"
            if est.get(f"{key}_low") is not None and est.get(f"{key}_high") is not None:
                inside = est[f"{key}_low"] <= act[key] <= est[f"{key}_high"]
                ratio += " (in range)" if inside else " (outside range)"
            break
    return [
        cell(est.get("usd"), "{:.4f}"),
        cell(act.get("usd"), "{:.4f}"),
        cell(est.get("hours"), "{:.3f}"),
        cell(act.get("hours"), "{:.3f}"),
        ratio,
    ]


@app.command()
def status(job_id: str, as_json: JsonOpt = False) -> None:
    """Look at a job once (asks its backend when the job is still active)."""
    from ftkit.job import FineTuneJob

    job = FineTuneJob.get(job_id)
    if not job.status.is_terminal:
        job.refresh()
    r = job.record
    if as_json:
        print_json(r.model_dump(mode="json", exclude={"state"}))
        return
    out.print(f"{r.id}  {r.backend}  {r.status.value}  ({r.backend_status or '-'})")
    for key in ("backend_job_id", "model", "error"):
        if getattr(r, key):
            out.print(f"  {key}: {getattr(r, key)}")
    last = next((m for m in reversed(job.metrics()) if m.get("train_loss") is not None), None)
    if last:
        losses = "  ".join(f"{k} {_number(last[k])}" for k in ("train_loss", "valid_loss") if last.get(k) is not None)
        out.print(f"  step {last.get('step')}/{last.get('total_steps', '?')}  {losses}", highlight=False)
    for key, label in (("estimated_cost", "estimate"), ("actual_cost", "actual cost")):
        cost = getattr(r, key)
        if cost and cost.get("usd") is not None:
            out.print(f"  {label}: {_usd(cost['usd'])}", highlight=False)


def _number(value: Any) -> str:
    """A loss or a price for people: 4 significant digits (0.3679, 1.235e-05), nan and inf as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def _usd(value: float) -> str:
    """Cents for a dollar or more ($12.35), 2 significant digits below ($0.0031): a tiny job's cost is not $0.00."""
    return f"${value:,.2f}" if abs(value) >= 1 or value == 0 else f"${value:.2g}"


@app.command()
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
                sys.stdout.write(json.dumps(redact(ev.model_dump(mode="json"))) + "\n")
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
    from ftkit.cli_migrate import register as register_migrate

    register_migrate(app)
    register_evidence(app)
    for ep in entry_points(group="ftkit.cli"):
        try:
            sub = ep.load()
        except ImportError:
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        elif callable(sub):  # a single command (``ftkit serve``), not a group
            app.command(name=ep.name)(sub)


_mount_plugins()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ftkit`` console script (``argv`` defaults to ``sys.argv[1:]``).

    Errors inside a command are handled by the app's group (:class:`ftkit.cli_errors.FtkitGroup`);
    this catches the rest the same way (an interrupt or a failure while typer starts).
    """
    try:
        app(args=argv)
    except SystemExit:
        raise
    except BaseException as e:  # the last place an error can become one line
        sys.exit(int(report(e, debug=debug_requested())))


if __name__ == "__main__":
    main()
