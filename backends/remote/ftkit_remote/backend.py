"""RemoteBackend: the hf LoRA trainer on a rented GPU that ftkit finds, starts, watches and always gives back.

``submit`` rents and sets up the machine and starts the worker there (blocking until it runs, so a
Ctrl-C or SIGTERM in that window destroys the machine); from then on the job trains on its own and
``poll`` — from this process or any later one, e.g. ``ftkit status ID`` after the laptop slept —
follows it over SSH, fetches the adapter, destroys the machine and records the cost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError

from ftkit.backend import Backend, BackendConfig, Capabilities, CostEstimate, JobContext, PollResult
from ftkit.costs.rows import CostRow, EstimateWork
from ftkit.errors import ConfigError, JobError
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec
from ftkit_remote.config import RemoteConfig
from ftkit_remote.interrupts import signals_held, sigterm_as_interrupt
from ftkit_remote.providers import provider_config
from ftkit_remote.run import RemoteRun
from ftkit_remote.trainer import DEFAULT_CAUSAL, HFConfig, check_preference, predictor_class, resolve_model

__all__ = ["RemoteBackend", "RemoteConfig"]
T = TypeVar("T")


class RemoteBackend(Backend):
    """Fine-tune on a GPU rented from vast.ai, RunPod or Lambda (or on your own SSH host)."""

    name: ClassVar[str] = "remote"
    config_model: ClassVar[type[BackendConfig]] = RemoteConfig
    capabilities: ClassVar[Capabilities] = Capabilities(
        tasks=frozenset({"chat", "classification", "completion", "preference", "text"}),
        needs_network=True,
        spends_money=True,
        poll_interval=5.0,
    )

    def default_model(self, task: str) -> str:
        """The hf backend's default (SmolLM2-135M-Instruct), trained on the rented machine."""
        return str(DEFAULT_CAUSAL)

    def parse_config(self, options: dict[str, Any]) -> BackendConfig:
        """The remote options, and the chosen provider's own options, validated (limits included) at parse time."""
        config = super().parse_config(options)
        assert isinstance(config, RemoteConfig)
        provider_config(config.provider, config.provider_options, need_key=False)  # the key is checked at use
        return config

    def validation_target(self, spec: JobSpec, config: BackendConfig) -> str | None:
        """The same rules as the hf backend (the same trainer runs remotely); none for a custom worker."""
        assert isinstance(config, RemoteConfig)
        if config.worker_command is not None or not spec.model:
            return None
        return f"hf:{resolve_model(spec.model).path}"

    def model_target(self, model: str) -> str | None:
        """The hf rules of the model (the hf trainer runs on the machine), resolved as the hf backend does."""
        return f"hf:{resolve_model(model).path}"

    def describe(self) -> str:
        """Providers and the trainer."""
        return "vast, runpod, lambda, ssh; trainer ftkit-hf"

    def check(self, spec: JobSpec, config: BackendConfig) -> None:
        """Refuse at create time what would fail on the machine: no trainer installed, bad trainer options."""
        assert isinstance(config, RemoteConfig)
        if config.worker_command is not None:
            return
        try:
            hf = HFConfig.model_validate(config.hf)
        except ValidationError as e:
            err = e.errors()[0]
            raise ConfigError(f"[remote.hf] {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if spec.task == "preference":
            check_preference(hf, "[remote.hf]")
        if hf.start_from is not None:
            # The job folder shipped to the machine does not carry the start adapter yet.
            raise ConfigError("[remote.hf] start_from is not supported on rented machines yet: train the supervised "
                              "job from an adapter with the hf backend")

    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        """Cheapest matching offer × (setup + training hours); the core refuses it above ``max_cost``."""
        return _drive(ctx, lambda run: run.estimate())

    def estimate_rows(self, ctx: JobContext, work: EstimateWork) -> list[CostRow]:
        """The work on every catalogued GPU at every provider (``[costs] gpus``, ``providers``), and first, when
        the ``[remote]`` section can list offers, the cheapest matching offer as this backend's own row."""
        from ftkit.costs.catalogue import model_parameters
        from ftkit.costs.rows import rented_gpu_rows, row_from_estimate

        model = str(ctx.spec.model)
        rows: list[CostRow] = []
        note = None
        try:
            own = self.estimate(ctx)
            if own is not None:
                # Its hours are the [remote] estimated_train_hours, not the compared work: marked as such.
                rows.append(row_from_estimate(self.name, f"{model}, cheapest {ctx.config.provider} offer", own))  # type: ignore[attr-defined]
        except Exception as e:  # no provider configured, no network, no offer: the catalogue still prices the work
            note = f"no offer priced ({type(e).__name__ if not str(e) else e}): the rows below use the catalogue"
        params = work.settings.model_parameters or model_parameters(model)
        for row in rented_gpu_rows(self.name, model, params, work, gpu_notes=lambda gpu: _gpu_memory_line(ctx, gpu)):
            if note:
                row.assumptions.append(note)
            rows.append(row)
        return rows

    def submit(self, ctx: JobContext) -> str:
        """Rent, set up and start; any failure or interruption in here destroys the machine."""
        try:
            with sigterm_as_interrupt():
                return _drive(ctx, lambda run: run.submit())
        except BaseException:
            # Set-up finished, but the interruption came before start() could record the job: nobody would
            # follow it, so stop the worker and destroy the machine here, holding further signals meanwhile.
            if ctx.state.get("remote", {}).get("phase") == "running":
                with signals_held("destroying the machine before stopping"):
                    _drive(ctx, lambda run: run.cancel("setup failed: interrupted after the worker started"))
            raise

    def find_submitted(self, ctx: JobContext) -> str | None:
        """A start killed mid-way (kill -9): destroy any machine it rented, so the next start rents afresh.

        The killed client's run state (endpoint, instance id, set-up phase) died with it, so its machine
        cannot be followed; it is found by the job's label, destroyed and verified gone, and its lease
        closed. Nothing is reported as submitted: ``start()`` then submits again and pays for one machine.
        """
        orphan = JobContext(id=ctx.id, spec=ctx.spec, config=ctx.config, workdir=ctx.workdir, state={})
        _drive(orphan, lambda run: run.destroy_orphan("the client that was starting it was killed"))
        return None

    def poll(self, ctx: JobContext) -> PollResult:
        """Follow the worker over SSH; at its end fetch the adapter and destroy the machine."""
        return _drive(ctx, lambda run: run.poll())

    def cancel(self, ctx: JobContext) -> None:
        """Stop the worker and destroy the machine."""
        _drive(ctx, lambda run: run.cancel())

    def load_model(self, ctx: JobContext) -> Predictor:
        """An HFPredictor over the local base model with the fetched adapter."""
        import json

        adapter = ctx.workdir / "model"
        meta_path = adapter / "ftkit-hf.json"
        if not meta_path.is_file():
            raise JobError(f"job {ctx.id} has no fetched adapter ({adapter} is missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        base = Path(meta.get("base_model", ""))
        if not base.is_absolute() or not base.is_dir():  # the machine's path ("base_model"): resolve it here
            base = resolve_model(ctx.spec.model or self.default_model(ctx.spec.task)).path
        return predictor_class().load(base, adapter, kind=meta["kind"], labels=meta.get("labels"),
                                preamble=meta.get("preamble"), device="cpu")  # fmt: skip


def _drive(ctx: JobContext, step: Any) -> Any:
    """Run one async step of the run with a fresh provider client, in its own event loop."""
    assert isinstance(ctx.config, RemoteConfig)

    async def main() -> Any:
        run = RemoteRun(ctx, ctx.config)  # type: ignore[arg-type]
        try:
            return await step(run)
        finally:
            run.save()  # whatever happened, the registry stores what the run knows now
            await run.aclose()

    return _run_sync(main())


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (a notebook): run in a worker thread with its own loop.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def _gpu_memory_line(ctx: JobContext, gpu: str) -> list[str]:
    """ftkit-hf's memory plan for the job's model on ``gpu``: fits, with what, or not."""
    from ftkit_remote.trainer import gpu_fit_line

    line = gpu_fit_line(str(ctx.spec.model), gpu, options=getattr(ctx.config, "hf", None) or None)
    return [line] if line else []
