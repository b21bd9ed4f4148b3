"""The ``eval``, ``compare`` and ``estimate`` commands, mounted on the ``ftkit`` app by :func:`register`.

::

    ftkit eval --predictions preds.jsonl --data test.jsonl [--json] [--html report.html]
    ftkit eval --job ftk-2026... --data test.jsonl --calibrate isotonic
    ftkit eval --base hf:smollm2-135m --data test.jsonl
    ftkit compare JOB_OR_PREDICTIONS... --data test.jsonl [--html compare.html] [--reference A] [--margin 0.05]
    ftkit estimate --data train.jsonl [--config ftkit.toml] [--backend openai --backend hf] [--test test.jsonl]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ftkit.errors import ConfigError

DataOpt = Annotated[Path, typer.Option("--data", "-d", help="The held-out JSONL file (classification or chat).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")]
LabelsOpt = Annotated[str | None, typer.Option("--labels", help="Comma-separated label vocabulary.")]
CalOpt = Annotated[str | None, typer.Option("--calibrate", help="Fit a calibrator: platt or isotonic.")]
BootOpt = Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for intervals (0: none).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace output files that already exist.")]


def _source(ref: str) -> Any:
    """A comparison member: a predictions file when the path exists, else a job id."""
    if Path(ref).is_file():
        return Path(ref)
    from ftkit.job import FineTuneJob

    return FineTuneJob.get(ref)


def _base_predictor(spec: str) -> tuple[Any, str]:
    from ftkit.backend import get_backend
    from ftkit.models import parse_model_ref

    ref = parse_model_ref(spec)  # the same BACKEND:MODEL syntax as --target
    be = get_backend(ref.backend)
    return be.base_model(ref.model, be.parse_config({})), str(ref)


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _show(result: Any, html: Path | None, as_json: bool) -> None:
    """Write the HTML report when asked, then print the result as JSON or as tables."""
    from ftkit.cli import out, print_json  # not at module level: ftkit.cli imports this module

    if html is not None:
        result.to_html(html)
    if as_json:
        print_json(result.to_dict())
    else:
        result.print(out)
        if html is not None:
            out.print(f"HTML report: {html}")


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``compare`` and ``estimate`` to the ``ftkit`` command."""
    from ftkit.cli import out, print_json
    from ftkit.outputs import check_outputs

    @app.command("eval")
    def eval_command(
        data: DataOpt,
        predictions: Annotated[Path | None, typer.Option("--predictions", "-p", help="Predictions JSONL.")] = None,
        job: Annotated[str | None, typer.Option("--job", help="Evaluate this job's model (id or prefix).")] = None,
        base: Annotated[str | None, typer.Option("--base", help="A base model: BACKEND[:MODEL].")] = None,
        labels: LabelsOpt = None,
        as_json: JsonOpt = False,
        html: HtmlOpt = None,
        calibrate: CalOpt = None,
        holdout: Annotated[Path | None, typer.Option(help="Fit the calibrator on this labelled file.")] = None,
        holdout_predictions: Annotated[
            Path | None, typer.Option(help="Predictions on --holdout (with --predictions).")
        ] = None,
        save_calibrator: Annotated[Path | None, typer.Option(help="Write the fitted calibrator (JSON).")] = None,
        save_predictions: Annotated[Path | None, typer.Option(help="Write the model's predictions (JSONL).")] = None,
        bootstrap: BootOpt = 1000,
        name: Annotated[str | None, typer.Option(help="The model's name in the report.")] = None,
        force: ForceOpt = False,
    ) -> None:
        """Judge one model on a held-out file: from saved predictions, a job's model or a base model.

        Every output (--html, --save-calibrator, --save-predictions) is checked before the model runs.
        """
        from ftkit.evaluate import evaluate, write_predictions

        given = [x for x in (predictions, job, base) if x is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of --predictions, --job or --base")
        if save_calibrator is not None and calibrate is None:
            raise ConfigError("--save-calibrator needs --calibrate")
        check_outputs(
            [p for p in (html, save_calibrator, save_predictions) if p is not None],
            inputs=[data, predictions, holdout, holdout_predictions],
            force=force,
        )
        source: Any
        if predictions is not None:
            source = predictions
        elif job is not None:
            from ftkit.job import FineTuneJob

            source = FineTuneJob.get(job)
        else:
            assert base is not None
            source, default_name = _base_predictor(base)
            name = name or default_name
        if calibrate not in (None, "platt", "isotonic"):
            raise ConfigError(f"--calibrate must be platt or isotonic, not {calibrate!r}")
        report = evaluate(
            source,
            data,
            labels.split(",") if labels else None,
            name=name,
            calibrate=calibrate,  # type: ignore[arg-type]
            holdout=holdout,
            holdout_predictions=holdout_predictions,
            bootstrap=bootstrap,
        )
        if save_calibrator is not None:
            if report.calibrator is None:
                raise ConfigError("--save-calibrator needs --calibrate")
            report.calibrator.save(save_calibrator)
        if save_predictions is not None and report._arrays is not None:
            from ftkit.evaluate.predictions import Prediction, load_reference
            from ftkit.predictor import UNPARSEABLE

            lp = report._arrays
            rows = [
                Prediction(
                    label=lp.labels[p] if p >= 0 else UNPARSEABLE,
                    probabilities=dict(zip(lp.labels, map(float, lp.proba[i]), strict=True))
                    if lp.proba is not None
                    else None,
                )
                for i, p in enumerate(lp.y_pred)
            ]
            write_predictions(save_predictions, rows, load_reference(data).ids)
        _show(report, html, as_json)

    @app.command("compare")
    def compare_command(
        models: Annotated[list[str], typer.Argument(help="Job ids or predictions JSONL files (two or more).")],
        data: DataOpt,
        labels: LabelsOpt = None,
        as_json: JsonOpt = False,
        html: HtmlOpt = None,
        calibrate: CalOpt = None,
        bootstrap: BootOpt = 1000,
        force: ForceOpt = False,
        reference: Annotated[
            str | None, typer.Option(help="The model the others must not be worse than (default: the first).")
        ] = None,
        margin: Annotated[
            float, typer.Option(help="Accuracy loss the non-inferiority test allows (0.05: 5 points).")
        ] = 0.05,
    ) -> None:
        """Several models on one test set: metrics side by side, McNemar per pair, non-inferiority vs the reference."""
        from ftkit.evaluate import compare

        if len(models) < 2:
            raise ConfigError("compare needs at least two jobs or predictions files")
        check_outputs([html] if html else [], inputs=[data, *models], force=force)
        if calibrate not in (None, "platt", "isotonic"):
            raise ConfigError(f"--calibrate must be platt or isotonic, not {calibrate!r}")
        result = compare(
            [_source(m) for m in models],
            data,
            labels.split(",") if labels else None,
            calibrate=calibrate,
            bootstrap=bootstrap,
            reference=reference,
            margin=margin,
        )
        _show(result, html, as_json)

    @app.command("estimate")
    def estimate_command(
        data: Annotated[Path | None, typer.Option("--data", "-d", help="Training JSONL.")] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="Job config (TOML/YAML).")] = None,
        backend: Annotated[list[str] | None, typer.Option("--backend", "-b", help="Only these backends.")] = None,
        test: Annotated[Path | None, typer.Option("--test", help="Also price evaluating this test file.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Dollars and hours to train DATA (and evaluate TEST) on every installed backend, with assumptions."""
        from rich.table import Table

        from ftkit.costs.plan import estimate_all, summary_lines

        report = estimate_all(data, config=config, backends=backend or None, test=test)
        if as_json:
            print_json(report.model_dump(mode="json"))
            return
        for line in summary_lines(report):
            out.print(line, highlight=False)
        t = Table("backend", "what", "train $", "train h", "eval $", "total $", "source")
        for r in report.rows:
            t.add_row(
                r.backend + ("" if r.installed else " (not installed)"),
                r.target,
                _money(r.train_usd) + (f" ({_money(r.usd_low)}-{_money(r.usd_high)})" if r.usd_low is not None else ""),
                ("-" if r.train_hours is None else f"{r.train_hours:.3f}")
                + (f" ({r.hours_low:.3f}-{r.hours_high:.3f})" if r.hours_low is not None else ""),
                _money(r.eval_usd),
                _money(r.total_usd),
                r.source,
            )
        out.print(t)
        for r in report.rows:
            out.print(f"[bold]{r.backend}: {r.target}[/bold]", highlight=False)
            for a in r.assumptions:
                out.print(f"  - {a}", highlight=False, markup=False)
            if r.error:
                out.print(f"  ! {r.error}", highlight=False, markup=False)
