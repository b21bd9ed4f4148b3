"""Helpers of the remote backend's tests, in a uniquely named module (suites of all backends run together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit_remote.emulators.common import EmulatorServer

FAKE_WORKER = str(Path(__file__).with_name("fake_worker.py"))
STARTED: list[EmulatorServer] = []


def start_emulator(state: Any, app: Any) -> EmulatorServer:
    """Start an emulator; the leak guard checks it when the test ends."""
    server = EmulatorServer(app, state).start()
    STARTED.append(server)
    return server


def provider_options(server: EmulatorServer) -> dict[str, Any]:
    """Options pointing a provider at its emulator (fast retries for tests)."""
    name = server.state.provider
    retry = {"initial_wait_s": 0.05, "max_wait_s": 1.5, "attempts": 5}
    if name == "vast":
        return {"base_url": server.url, "retry": retry}
    if name == "runpod":
        return {"base_url": server.url, "rest_url": server.url + "/v1", "retry": retry}
    return {"base_url": server.url, "ssh_port": server.state.ssh_port, "seconds_between_launches": 0.0,
            "retry": retry}  # fmt: skip


def remote_options(server: EmulatorServer, **over: Any) -> dict[str, Any]:
    """RemoteBackend options for a run on ``server`` with the fake worker."""
    opts: dict[str, Any] = {
        "provider": server.state.provider,
        "provider_options": provider_options(server),
        "worker_command": ["python", FAKE_WORKER, "run", ".", "--steps", "4", "--delay", "0.05"],
        "poll_interval": 0.2,
        "deadman_check_s": 0.5,
        "disk_gb": 20,
    }
    return opts | over


def make_project(root: Path, name: str, version: str = "0.1.0", requires: tuple[str, ...] = (), value: int = 1) -> Path:
    """A tiny hatchling project ``name`` (package ``name`` with ``-`` → ``_``) for the shipping tests."""
    package = name.replace("-", "_")
    (root / package).mkdir(parents=True, exist_ok=True)
    (root / package / "__init__.py").write_text(f"VALUE = {value}\n")
    deps = ", ".join(f'"{r}"' for r in requires)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{deps}]\n\n'
        f'[tool.hatch.build.targets.wheel]\npackages = ["{package}"]\ndev-mode-dirs = ["."]\n'
    )
    return root


def pip(*args: str) -> None:
    """Run this interpreter's pip offline (the tests never reach an index)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check", "-q"],
                   check=True, capture_output=True)  # fmt: skip
