"""Shipping the client's code: the emulated machine has no ftkit until the run installs the shipped wheels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ftkit_remote import ssh
from ftkit_remote.emulators.common import EmulatorServer, free_port
from ftkit_remote.emulators.sandbox import SshSandbox
from ftkit_remote.providers import SshEndpoint
from remote_testkit import FAKE_WORKER, make_project, pip, remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.errors import JobFailedError
from ftkit.events import JobStatus


def _job(data_file: Path, server: EmulatorServer, require: str, **over: object) -> FineTuneJob:
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    cmd = ["python", FAKE_WORKER, "run", ".", "--steps", "2", "--delay", "0.05", "--require", require]
    return FineTuneJob.create(spec, backend="remote", options=remote_options(server, worker_command=cmd, **over))


def _messages(job: FineTuneJob) -> str:
    return "\n".join(e.message for e in job.events())


def test_a_fresh_machine_has_the_image_but_not_ftkit(tmp_path: Path) -> None:
    async def main() -> None:
        key = ssh.load_or_create_key()
        port = free_port()
        sb = SshSandbox("fresh-" + tmp_path.name, tmp_path / "m", "127.0.0.1", port, ssh.public_key_line(key))
        await sb.start()
        try:
            async with ssh.connect(SshEndpoint("127.0.0.1", port, "root"), key) as s:
                for module in ("ftkit", "ftkit_hf", "ftkit_remote"):
                    r = await s.run(f"python -c 'import {module}'")
                    assert r.exit_status == 1 and f"No module named '{module}'" in r.stderr
                assert (await s.run("python -c 'import pydantic, tenacity'")).exit_status == 0, "the image's packages"
        finally:
            await sb.stop()

    asyncio.run(main())


def test_shipped_wheels_are_what_the_worker_imports(vast: EmulatorServer, data_file: Path) -> None:
    job = _job(data_file, vast, "ftkit.spec", ship_distributions=["ftkit"])
    job.start()
    assert job.wait(poll_interval=0.2, timeout=90) is JobStatus.SUCCEEDED, job.record.error
    messages = _messages(job)
    assert "shipping ftkit 0.1.0" in messages and "installed ftkit 0.1.0 on the machine into .ftkit-site" in messages
    root = next(iter(vast.state.instances.values())).sandbox.root / "ftkit-jobs" / job.id
    assert f"imported ftkit.spec from {root / '.ftkit-site' / 'ftkit' / 'spec.py'}" in messages
    assert (root / "wheels" / "ftkit-0.1.0-py3-none-any.whl").is_file()


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A distribution installed here (regularly) whose requirement the machine lacks, and a wheelhouse with it."""
    from hatchling.builders.wheel import WheelBuilder

    root = tmp_path_factory.mktemp("plugin")
    plug = make_project(root / "plug", "ftkit-shipplug", requires=("ftkit-shipdep>=0.1",))
    (wheel,) = WheelBuilder(str(plug)).build(directory=str(root / "dist"), versions=["standard"])
    pip("install", "--no-deps", "--target", str(root / "site"), wheel)  # a regular install, with its RECORD
    dep = make_project(root / "dep", "ftkit-shipdep", version="0.2.0")
    list(WheelBuilder(str(dep)).build(directory=str(root / "wheelhouse"), versions=["standard"]))
    return root / "site", root / "wheelhouse"


def test_a_missing_requirement_is_named_with_its_fix(
    vast: EmulatorServer, data_file: Path, plugin: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin[0]))
    job = _job(data_file, vast, "ftkit_shipplug", ship_distributions=["ftkit-shipplug"], remote_pip=[])
    job.start()
    with pytest.raises(JobFailedError, match=r"lacks what ftkit needs: ftkit-shipdep \(missing\)"):
        job.wait(poll_interval=0.2, timeout=60)
    assert 'remote_pip = ["ftkit-shipdep>=0.1"]' in str(job.record.error)
    assert not vast.state.live()


def test_missing_requirements_are_installed_by_default(
    vast: EmulatorServer, data_file: Path, plugin: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(plugin[0]))
    # The machine's pip finds packages in a local folder (it has no index here), as an image could set it up.
    vast.state.sandbox_env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(plugin[1])}
    job = _job(data_file, vast, "ftkit_shipdep", ship_distributions=["ftkit-shipplug"])
    job.start()
    assert job.wait(poll_interval=0.2, timeout=90) is JobStatus.SUCCEEDED, job.record.error
    messages = _messages(job)
    assert "the machine lacks ftkit-shipdep (missing); installing the client's versions: ftkit-shipdep>=0.1" in messages
    assert "/.ftkit-deps/" in messages, "the requirement went into the job's private prefix, not the image"
