"""The ``migrate`` command, mounted on the ``ftkit`` app by :func:`register`.

::

    ftkit migrate ftjob-abc123 --test test.jsonl --backend hf [--model smollm2-360m] [--dry-run] [--yes]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ftkit.errors import ConfigError


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {p!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def register(app: typer.Typer) -> None:
    """Add ``migrate`` to the ``ftkit`` command."""
    from rich.console import Console

    from ftkit.cli import out, print_json

    err = Console(stderr=True, soft_wrap=True)  # progress goes here when stdout carries --json

    @app.command("migrate")
    def migrate_command(
        hosted_job: Annotated[str, typer.Argument(help="The OpenAI fine-tuning job id (ftjob-...).")],
        test: Annotated[Path, typer.Option("--test", "-t", help="Labelled test file both models are judged on.")],
        backend: Annotated[str, typer.Option("--backend", "-b", help="Where to retrain: hf or remote.")] = "hf",
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="The open model (default: the backend's).")
        ] = None,
        option: Annotated[
            list[str] | None, typer.Option("--option", "-o", help="Retraining backend option KEY=VALUE (repeatable).")
        ] = None,
        margin: Annotated[float, typer.Option(help="Accuracy loss allowed by the non-inferiority test.")] = 0.05,
        learning_rate: Annotated[float | None, typer.Option(help="Absolute learning rate for retraining.")] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show the plan and the estimates; spend nothing.")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Go ahead without asking.")] = False,
        timeout: Annotated[float | None, typer.Option(help="Seconds to wait for training (it goes on after).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
    ) -> None:
        """Move an OpenAI fine-tune to an open model: record it, retrain, evaluate both, report. Resumable."""
        from ftkit.migrate.plan import MigrationPlan
        from ftkit.migrate.workflow import Migration

        def say(line: str) -> None:
            (err if as_json else out).print(line, highlight=False, markup=False)

        m = Migration(hosted_job, test, backend, model, options=_options(option or []), margin=margin,
                      learning_rate=learning_rate, say=say)  # fmt: skip
        if dry_run:
            plan = m.plan()
            if as_json:
                print_json(plan.model_dump(mode="json"))
            else:
                for line in plan.lines():
                    say(line)
                say(f"dry run: nothing spent; the stages to do would spend about ${plan.spend_usd:.4f}")
            return

        def confirm(plan: MigrationPlan) -> bool:
            if yes:
                return True
            prompt = f"Spend about ${plan.spend_usd:.4f} (and the compute shown) on these stages?"
            if not sys.stdin.isatty():
                raise ConfigError(f"{prompt} Pass --yes to go ahead, or --dry-run to only look")
            return typer.confirm(prompt, default=False)

        result = m.run(confirm)
        if as_json:
            print_json(result.model_dump(mode="json"))
        elif not result.finished:
            say(result.message)
        if not result.finished and result.message != "stopped before spending":
            raise typer.Exit(3)
