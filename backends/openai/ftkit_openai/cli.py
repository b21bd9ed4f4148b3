"""``ftkit openai ...``: what the OpenAI account holds and how long each fine-tune lives.

The core CLI mounts ``app`` through the ``ftkit.cli`` entry-point group, so its errors reach the one
top-level handler (one line, exit code by kind: see ``ftkit.cli_errors``)::

    ftkit openai inventory [--json] [--today 2026-12-07]
    ftkit openai record ftjob-... --test test.jsonl [--json]
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ftkit.errors import ConfigError
from ftkit.migrate.inventory import InventoryEntry
from ftkit_openai import sunset

app = typer.Typer(help="OpenAI fine-tunes: the inventory of jobs and models, with shutdown dates.",
                  no_args_is_help=True)
_out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


@app.callback()
def _group() -> None:
    """OpenAI fine-tunes: the inventory of jobs and models, with shutdown dates."""


def _days(e: InventoryEntry) -> str:
    if not e.available:
        return "gone"
    return "?" if e.days_left is None else str(e.days_left)


def _source(e: InventoryEntry) -> str:
    if e.shutdown_source is None:
        return "-"
    return "API" if e.shutdown_source.startswith("models API") else "catalogue"


def table(entries: list[InventoryEntry], today: dt.date) -> Table:
    """The inventory as a terminal table, most urgent first."""
    t = Table("job", "fine-tuned model", "base", "method", "task", "status", "tokens", "cost $", "shutdown",
              "days left", "date from", title=f"OpenAI fine-tunes on this account ({today.isoformat()})")
    for e in entries:
        t.add_row(e.job_id or "-", e.fine_tuned_model or "-", e.base_model, e.method, e.task, e.status,
                  "-" if e.trained_tokens is None else f"{e.trained_tokens:,}",
                  "-" if e.cost_usd is None else f"{e.cost_usd:.2f}",
                  e.shutdown_date.isoformat() if e.shutdown_date else "?", _days(e), _source(e))
    return t


@app.command("inventory")
def inventory_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    today: Annotated[str | None, typer.Option(help="Count days from this date (YYYY-MM-DD).")] = None,
) -> None:
    """Every fine-tuning job and fine-tuned model, with task, cost and shutdown date, most urgent first."""
    from ftkit_openai.config import OpenAIConfig
    from ftkit_openai.inventory import inventory

    try:
        day = dt.date.fromisoformat(today) if today else None
    except ValueError as e:
        raise ConfigError(f"--today: {e}") from None
    on = sunset.today(day)
    entries = inventory(OpenAIConfig(), today=on)
    if as_json:
        from ftkit.cli import print_json  # not at module level: ftkit.cli mounts this module

        print_json([e.model_dump(mode="json") for e in entries])
        return
    _out.print(table(entries, on))
    sources = sorted({e.shutdown_source for e in entries if e.shutdown_source and _source(e) == "catalogue"})
    for s in sources:
        _out.print(f"catalogue dates: {s}", highlight=False)
    if not sunset.creation_closed(on):
        _out.print(f"New OpenAI fine-tuning jobs close on {sunset.FINE_TUNING_CUTOFF.isoformat()}. "
                   "Move a job with: ftkit migrate <ftjob-id> --test test.jsonl --backend hf", highlight=False)


@app.command("record")
def record_command(
    job_id: Annotated[str, typer.Argument(help="The fine-tuning job id (ftjob-...).")],
    test: Annotated[Path, typer.Option("--test", "-t", help="Labelled test file to record the model's answers on.")],
    force: Annotated[bool, typer.Option(help="Record again even if this test file was recorded.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ask the fine-tuned model once per test example and keep its answers for good (a recorded model)."""
    from ftkit.migrate.record import attach_once, record_model

    job = attach_once(job_id, "openai")
    rec = record_model(job, test, force=force)
    if as_json:
        from ftkit.cli import print_json  # not at module level: ftkit.cli mounts this module

        print_json(rec.model_dump(mode="json"))
        return
    usd = rec.usage.get("usd")
    _out.print(f"recorded {rec.model} on {rec.n} examples of {rec.test_file} ({rec.recorded_at}) as job {job.id}; "
               f"{rec.usage.get('requests', 0)} requests" + (f", ${usd:.4f}" if usd is not None else ""),
               highlight=False)
    _out.print(f"answers: {rec.predictions}", highlight=False)
    _out.print(f"compare with: ftkit compare {job.id} OTHER_JOB --data {rec.test_file}", highlight=False)


if __name__ == "__main__":
    app()
