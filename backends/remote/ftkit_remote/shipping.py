"""The shipping step of a run: the job folder and the client's ftkit staged here, then uploaded and started.

:meth:`Shipping.stage` runs before anything is rented (bad data or a failed build costs nothing): the
job folder (:mod:`ftkit_remote.jobfolder`) and, from ``stage_wheels``, ``wheels/*.whl``,
``wheels/ftkit-wheels.json`` (what to install, the requirements to check, ``remote_pip``) and
``ftkit_setup.py`` (:mod:`ftkit_remote.machine_setup`), which ``ftkit_run.sh`` runs on the machine
before the worker. :meth:`Shipping.ship_and_start` uploads the folder to a usable machine and starts
the worker and the dead-man switch detached.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from ftkit.atomic import atomic_write_text
from ftkit_remote import machine_setup
from ftkit_remote.config import RemoteConfig
from ftkit_remote.core import RunCore
from ftkit_remote.jobfolder import deadman_script, run_script, stage_job_folder
from ftkit_remote.providers import SshEndpoint
from ftkit_remote.ssh import connect
from ftkit_remote.trainer import BASE_MODEL, LOG, WORKER_COMMAND, JobFiles
from ftkit_remote.wheels import WORKER_DISTRIBUTIONS, Wheel, build_wheels, requirements_of

__all__ = ["ShipPlan", "Shipping", "StagedFolder", "stage_wheels"]

# Never installed automatically: the build must match the machine's CUDA, so the image brings it.
NEVER_AUTO = ["torch"]


@dataclass(frozen=True)
class ShipPlan:
    """What was staged: the wheels (empty when only ``remote_pip`` runs) and the imports checked."""

    wheels: list[Wheel]
    check_imports: list[str]

    def describe(self) -> str:
        """``ftkit 0.1.0 (built from source), ftkit-hf 0.1.0 (cached)`` for the run's events."""
        return ", ".join(f"{w.name} {w.version} ({_how(w)})" for w in self.wheels)


def _how(w: Wheel) -> str:
    return "cached" if w.cached else "built from source" if w.editable else "repacked"


def stage_wheels(stage: Path, config: RemoteConfig, default_worker: bool) -> ShipPlan | None:
    """Build (or take from the cache) the wheels to ship and write the install plan into ``stage``.

    The default worker needs ``ftkit`` and ``ftkit-hf``; a custom ``worker_command`` gets only what
    ``ship_distributions`` names. Returns None when nothing is to be installed on the machine.

    Raises:
        ConfigError: a distribution to ship is not installed here.
        BackendError: a wheel could not be built.
    """
    names: list[str] = []
    if config.ship_wheels:
        names = [*(WORKER_DISTRIBUTIONS if default_worker else ()), *config.ship_distributions]
    if not names and not config.remote_pip:
        return None
    wheels = build_wheels(names) if names else []
    folder = stage / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    for w in wheels:
        shutil.copyfile(w.path, folder / w.path.name)
    # A custom worker's own import error says enough (its log tail); the default worker is checked up front.
    checks = ["ftkit_hf.worker"] if default_worker else []
    requires_python = ""
    if any(canonicalize_name(w.name) == "ftkit" for w in wheels):
        requires_python = metadata.metadata("ftkit")["Requires-Python"] or ""
    plan = {
        "wheels": [w.path.name for w in wheels],
        "shipped": [f"{w.name} {w.version}" for w in wheels],
        "requirements": requirements_of(wheels),
        "requires_python": requires_python,
        "remote_pip": config.remote_pip,
        "check_imports": checks,
        "never_auto": NEVER_AUTO,
    }
    atomic_write_text(folder / "ftkit-wheels.json", json.dumps(plan, indent=1))
    shutil.copyfile(machine_setup.__file__, stage / "ftkit_setup.py")
    return ShipPlan(wheels, checks)


@dataclass(frozen=True)
class StagedFolder:
    """A job folder staged under ``ctx.workdir/stage``, and the base model folder to ship beside it."""

    path: Path
    model_dir: Path | None


class Shipping:
    """Stage the job folder before renting; upload it and start the worker once the machine is usable."""

    def __init__(self, core: RunCore) -> None:
        self.core = core
        self.config = core.config

    @property
    def custom_worker(self) -> bool:
        """True when ``worker_command`` replaces ftkit-hf's worker."""
        return self.config.worker_command is not None

    async def stage(self) -> StagedFolder:
        """Write the job folder and the wheels to ship (bad data and a failed build fail here, before renting)."""
        path, model_dir = stage_job_folder(self.core.ctx, self.config.hf, self.custom_worker)
        t = time.monotonic()
        plan = await asyncio.to_thread(stage_wheels, path, self.config, not self.custom_worker)
        took = time.monotonic() - t
        if plan is not None and plan.wheels:
            self.core.note(f"shipping {plan.describe()} ({took:.1f} s)",
                           wheels=[w.path.name for w in plan.wheels], wheels_s=round(took, 3))  # fmt: skip
        return StagedFolder(path, model_dir)

    async def ship_and_start(self, endpoint: SshEndpoint, gpus: int, staged: StagedFolder) -> None:
        """Upload the folder (and the base model), start the dead-man switch and the worker, detached."""
        core, stage, model_dir = self.core, staged.path, staged.model_dir
        assert core.state.deadline is not None, "the deadline is set before anything is rented"
        job = f"{self.config.remote_dir}/{core.ctx.id}"
        worker = list(self.config.worker_command or WORKER_COMMAND)
        setup = (stage / "ftkit_setup.py").is_file()  # staged by stage_wheels before renting
        (stage / "ftkit_run.sh").write_text(run_script(worker, max(gpus, 1), self.config.launcher, setup))
        destroy = core.provider.self_destroy_command() if self.config.deadman else None
        (stage / "ftkit_deadman.sh").write_text(
            deadman_script(destroy, core.state.deadline, self.config.finished_grace_s, self.config.deadman_check_s)
        )
        if model_dir is not None and not self.config.ship_model:  # the same path must exist on the machine
            files = JobFiles(stage)
            files.write_job(files.read_job().model_copy(update={"model_path": str(model_dir)}))
        async with connect(endpoint, core.key) as s:
            await s.run(f"rm -rf {job}", check=True)
            await s.put(stage, job)
            if model_dir is not None and self.config.ship_model:
                await s.put(model_dir, f"{job}/{BASE_MODEL}")
            if self.config.deadman:
                await s.run(_detached(f"{job}/ftkit_deadman.sh", f"{job}/deadman.log"), check=True)
            await s.run(_detached(f"{job}/ftkit_run.sh", f"{job}/{LOG}"), check=True)
        core.state.remote_job = job
        core.note(f"worker started on the machine in ~/{job}" + (" with a dead-man switch" if destroy else ""))


def _detached(script: str, log: str) -> str:
    """A command line that starts ``script`` in its own session, holding none of the SSH channel's pipes.

    (``cd X && cmd &`` would background a subshell that keeps stdout open, and the exec would never end.)
    """
    return f"setsid nohup bash {script} > {log} 2>&1 < /dev/null &"
