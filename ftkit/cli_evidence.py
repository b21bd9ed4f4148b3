"""The ``power`` and ``placebo`` commands, and ``train --placebo``, mounted on ``ftkit`` by :func:`register`.

::

    ftkit power --baseline 0.80 --delta 0.03                    # test examples needed
    ftkit power --baseline 0.80 --n 500                         # smallest difference 500 examples detect
    ftkit power --baseline 0.80 --delta 0.03 --design paired --discordant 0.10
    ftkit placebo JOB_ID [--seed 7] [--no-wait]                 # train JOB's placebo twin
    ftkit train ftkit.toml --placebo                            # the job, then its placebo twin
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ftkit.errors import ConfigError

if TYPE_CHECKING:
    from ftkit.job import FineTuneJob

_DESIGNS = ("one-sample", "two-sample", "paired")


def follow_placebo(twin: FineTuneJob, wait: bool) -> None:
    """Start a created placebo twin, print what it is, and follow it when ``wait``."""
    from ftkit.cli import out

    info = twin.record.manifest.get("placebo", {})
    train = info.get("train", {})
    out.print(
        f"placebo {twin.id} of {info.get('of')}: labels permuted (stratified, seed {info.get('seed')}, "
        f"{train.get('changed')} of {train.get('examples')} training labels changed)",
        highlight=False,
    )
    twin.start()
    out.print(f"started: {twin.backend_job_id}")
    if wait:
        out.print(f"{twin.id}: {twin.wait(progress=True).value}")


def register(app: typer.Typer) -> None:
    """Add ``power`` and ``placebo`` to the ``ftkit`` command."""
    from ftkit.cli import out, print_json

    @app.command("power")
    def power_command(
        baseline: Annotated[
            float, typer.Option(help="The rate to beat, or the other model's accuracy (two-sample, paired).")
        ],
        delta: Annotated[float | None, typer.Option(help="The accuracy difference to detect.")] = None,
        n: Annotated[
            int | None, typer.Option("--n", help="A test set size: the smallest detectable difference.")
        ] = None,
        design: Annotated[
            str, typer.Option(help="one-sample (vs a fixed rate), two-sample (two test sets), paired (one test set).")
        ] = "one-sample",
        alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
        power: Annotated[float, typer.Option(help="Wanted probability of detecting the difference.")] = 0.8,
        two_sided: Annotated[bool, typer.Option("--two-sided", help="A two-sided test (default one-sided).")] = False,
        margin: Annotated[float, typer.Option(help="Non-inferiority margin (one-sample).")] = 0.0,
        discordant: Annotated[
            float | None,
            typer.Option(help="Paired: share of examples the models disagree on (default: independent errors)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Test examples needed to detect an accuracy difference, or what a test set of size N can detect."""
        from ftkit.evaluate.power import binomial_sample_size, plan

        if design not in _DESIGNS:
            raise ConfigError(f"--design must be one of {', '.join(_DESIGNS)}, not {design!r}")
        alternative: Literal["larger", "two-sided"] = "two-sided" if two_sided else "larger"
        result = plan(
            baseline,
            delta,
            n=n,
            design=design,  # type: ignore[arg-type]
            alpha=alpha,
            power=power,
            alternative=alternative,
            margin=margin,
            discordant=discordant,
        )
        exact = None
        if design == "one-sample" and alternative == "larger" and delta is not None:
            exact = binomial_sample_size(baseline, delta, alpha=alpha, power=power, margin=margin)
        if as_json:
            print_json(result.model_dump(mode="json") | {"exact_binomial_n": exact})
            return
        out.print(result.statement, highlight=False)
        if exact is not None:
            out.print(
                f"exact binomial test (what ftkit eval runs against a rate): {exact} test examples", highlight=False
            )
        if design == "paired" and discordant is None:
            out.print(
                "paired: assumed the models' errors are independent; give --discordant (the share of examples "
                "they disagree on, e.g. from ftkit compare) for two similar models, which need fewer",
                highlight=False,
            )

    @app.command("placebo")
    def placebo_command(
        job_id: Annotated[str, typer.Argument(help="The real job (id or prefix).")],
        seed: Annotated[int | None, typer.Option(help="Permutation seed (default: the job's seed).")] = None,
        wait: Annotated[bool, typer.Option(help="Follow the placebo job until it ends.")] = True,
    ) -> None:
        """Train a job's placebo twin: the same spec and backend with the labels permuted (stratified, seeded)."""
        from ftkit.job import FineTuneJob

        follow_placebo(FineTuneJob.get(job_id).placebo(seed), wait)
