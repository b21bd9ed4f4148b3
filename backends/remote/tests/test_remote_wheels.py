"""Wheels of what is installed on the client (editable or not), and the install plan run on the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ftkit_remote import machine_setup
from ftkit_remote.wheels import build_wheels, requirements_of
from remote_testkit import make_project, pip
from wheel.wheelfile import WheelFile

from ftkit.errors import BackendError, ConfigError


def _installs(wheel: Path, tmp_path: Path, module: str) -> str:
    """Install ``wheel`` with pip into a fresh target and import ``module`` from there (a clean interpreter)."""
    target = tmp_path / f"site-{wheel.stem}"
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                        f"import {module} as m; print(m.__file__)"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _verified_names(wheel: Path) -> list[str]:
    """Every member, read through WheelFile, which checks each file against the RECORD hashes."""
    with WheelFile(wheel) as wf:
        names = wf.namelist()
        for n in names:
            if not n.endswith("/"):
                wf.read(n)
    return names


def test_editable_ftkit_is_built_from_its_source_and_cached(tmp_path: Path) -> None:
    (w,) = build_wheels(["ftkit"], cache=tmp_path / "cache")
    assert w.editable and not w.cached and w.path.name == f"ftkit-{w.version}-py3-none-any.whl"
    names = _verified_names(w.path)
    assert "ftkit/__init__.py" in names and not any(n.endswith(".pyc") for n in names)
    assert _installs(w.path, tmp_path, "ftkit.spec").startswith(str(tmp_path)), "imported from the wheel"
    (again,) = build_wheels(["ftkit"], cache=tmp_path / "cache")
    assert again.cached and again.path == w.path


def test_editable_rebuilds_when_the_source_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = make_project(tmp_path / "proj", "ftkit-shipedit")
    pip("install", "--no-deps", "--no-build-isolation", "-e", str(proj), "--target", str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    cache = tmp_path / "cache"
    (first,) = build_wheels(["ftkit-shipedit"], cache=cache)
    assert first.editable and not first.cached
    assert build_wheels(["ftkit-shipedit"], cache=cache)[0].cached
    (proj / "ftkit_shipedit" / "__init__.py").write_text("VALUE = 2\n")
    (second,) = build_wheels(["ftkit-shipedit"], cache=cache)
    assert not second.cached and second.path != first.path
    assert b"VALUE = 2" in zipfile.ZipFile(second.path).read("ftkit_shipedit/__init__.py")
    (proj / "ftkit_shipedit" / "extra.py").write_text("X = 1\n")  # a new module changes the folder listing
    (third,) = build_wheels(["ftkit-shipedit"], cache=cache)
    assert not third.cached and "ftkit_shipedit/extra.py" in zipfile.ZipFile(third.path).namelist()
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob(".repack-*")), "writes are atomic"
    (proj / "pyproject.toml").write_text((proj / "pyproject.toml").read_text().replace("hatchling.build", "nope.build"))
    with pytest.raises(BackendError, match=r"building a wheel of ftkit-shipedit from .* with nope.build failed"):
        build_wheels(["ftkit-shipedit"], cache=cache)


def test_regular_install_is_repacked_from_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = make_project(tmp_path / "proj", "ftkit-shipreg", requires=("tenacity>=8", "ftkit-nope-dep>=0.1"))
    pip("install", "--no-deps", "--no-build-isolation", str(proj), "--target", str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    subprocess.run([sys.executable, "-c", "import ftkit_shipreg"], cwd=tmp_path / "site", check=True)  # makes .pyc
    (w,) = build_wheels(["ftkit-shipreg"], cache=tmp_path / "cache")
    assert not w.editable and not w.cached
    names = _verified_names(w.path)
    assert "ftkit_shipreg/__init__.py" in names and "ftkit_shipreg-0.1.0.dist-info/RECORD" in names
    assert not any("__pycache__" in n or n.endswith((".pyc", "INSTALLER", "direct_url.json")) for n in names)
    _installs(w.path, tmp_path, "ftkit_shipreg")
    assert build_wheels(["ftkit-shipreg"], cache=tmp_path / "cache")[0].cached
    reqs = {r["name"]: r for r in requirements_of([w])}
    assert reqs["tenacity"]["client_version"] and reqs["ftkit-nope-dep"]["client_version"] is None
    # A real third-party distribution installed by pip, with a console script outside site-packages.
    (typer,) = build_wheels(["typer"], cache=tmp_path / "cache")
    names = _verified_names(typer.path)
    assert "typer/main.py" in names and not any(n.startswith("..") or "/bin/" in n for n in names)
    (tmp_path / "site" / "ftkit_shipreg" / "__init__.py").unlink()
    with pytest.raises(BackendError, match="listed in its RECORD but missing"):
        build_wheels(["ftkit-shipreg"], cache=tmp_path / "other-cache")


def test_an_unknown_distribution_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot ship 'no-such-dist': it is not installed here"):
        build_wheels(["no-such-dist"], cache=tmp_path / "cache")


def _run_setup(tmp_path: Path, **plan: object) -> tuple[int, dict[str, object]]:
    """Run the machine-side setup script in a job folder here (this Python plays the machine's)."""
    job = tmp_path / "job"
    (job / "wheels").mkdir(parents=True)
    full = {"wheels": [], "shipped": [], "requirements": [], "requires_python": "", "remote_pip": None,
            "check_imports": [], "never_auto": ["torch"]} | plan  # fmt: skip
    (job / "wheels" / "ftkit-wheels.json").write_text(json.dumps(full))
    (job / "ftkit_setup.py").write_text(Path(machine_setup.__file__).read_text())
    r = subprocess.run([sys.executable, "ftkit_setup.py"], cwd=job, capture_output=True, text=True)
    status = json.loads((job / "status.json").read_text()) if (job / "status.json").exists() else {}
    return r.returncode, status


def test_setup_never_installs_torch_and_names_the_fix(tmp_path: Path) -> None:
    code, status = _run_setup(tmp_path, requirements=[
        {"name": "torch", "specifier": ">=999", "marker": "", "client_version": "2.13.0+cpu"}])  # fmt: skip
    assert code == 1 and status["status"] == "failed"
    error = str(status["error"])
    assert "torch (" in error and "never installs torch" in error and "provider_options.image" in error


def test_setup_with_remote_pip_empty_names_what_is_missing(tmp_path: Path) -> None:
    code, status = _run_setup(tmp_path, remote_pip=[], requirements=[
        {"name": "ftkit-nope-dep", "specifier": ">=0.1", "marker": "", "client_version": "0.3+local"},
        {"name": "tenacity", "specifier": ">=8", "marker": "", "client_version": "9.2.1"}])  # fmt: skip
    assert code == 1
    assert 'lacks what ftkit needs: ftkit-nope-dep (missing). Fix: set remote_pip = ["ftkit-nope-dep==0.3"]' in str(
        status["error"]
    )


def test_setup_python_too_old_and_failed_import(tmp_path: Path) -> None:
    code, status = _run_setup(tmp_path / "a", requires_python=">=3.99")
    assert code == 1 and "ftkit needs Python >=3.99" in str(status["error"])
    code, status = _run_setup(tmp_path / "b", check_imports=["ftkit_no_such_module"])
    assert code == 1 and "cannot import ftkit_no_such_module" in str(status["error"])
    assert "No module named 'ftkit_no_such_module'" in str(status["error"]) and "remote_pip" in str(status["error"])


def test_setup_remote_pip_failure_is_clear_and_hides_tokens(tmp_path: Path) -> None:
    code, status = _run_setup(tmp_path, remote_pip=["--no-index", "--find-links", "file://user:s3cret@/nonexistent",
                                                    "ftkit-nope-dep==1.0"])  # fmt: skip
    assert code == 1 and "pip could not install remote_pip on the machine" in str(status["error"])
    events = (tmp_path / "job" / "events.jsonl").read_text()
    assert "file://***@/nonexistent" in events and "s3cret" not in events
