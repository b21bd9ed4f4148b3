"""What goes to the machine besides the data: the client's ftkit as wheels, and the plan to install them.

``stage_wheels`` runs before anything is rented (a build failure costs nothing). It puts into the
staged job folder ``wheels/*.whl``, ``wheels/ftkit-wheels.json`` (what to install, the requirements
to check, ``remote_pip``) and ``ftkit_setup.py`` (:mod:`ftkit_remote.machine_setup`), which
``ftkit_run.sh`` runs on the machine before the worker.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from ftkit.atomic import atomic_write_text
from ftkit_remote import machine_setup
from ftkit_remote.config import RemoteConfig
from ftkit_remote.wheels import WORKER_DISTRIBUTIONS, Wheel, build_wheels, requirements_of

__all__ = ["ShipPlan", "stage_wheels"]

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
