"""Wheels of the client's own ftkit code, so the rented machine runs exactly what the client runs.

Each distribution is taken *as installed here*, never from PyPI:

- **editable installs** (``direct_url.json`` says ``editable``, the usual development setup) are built
  from their source folder with the project's own PEP 517 backend (no build isolation, so nothing is
  downloaded);
- **regular installs** are repacked from the files their ``RECORD`` lists (``.pyc`` and
  ``__pycache__`` left out, console scripts outside site-packages skipped) into a valid wheel whose
  RECORD ``wheel.wheelfile.WheelFile`` writes.

Wheels are cached under ``$FTKIT_CACHE/remote-wheels/<name>-<version>-<content hash>/``. For a regular
install the hash is that of its RECORD (which holds every file's sha256); for an editable one it is
the hash of the project file and of every source file the last build packed (plus the listing of
their folders, so an added or removed module is seen). Unchanged code is never rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name

from ftkit.atomic import atomic_write_bytes, atomic_write_text
from ftkit.errors import BackendError, ConfigError
from ftkit.paths import cache_dir

__all__ = ["WORKER_DISTRIBUTIONS", "Wheel", "build_wheels", "requirements_of", "wheel_cache"]

# What `python -m ftkit_hf.worker` imports from ftkit itself.
WORKER_DISTRIBUTIONS = ("ftkit", "ftkit-hf")
# Dist-info files that describe one installation, not the distribution: a wheel must not carry them.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD", "RECORD.jws", "RECORD.p7s"}


@dataclass(frozen=True)
class Wheel:
    """A wheel of one distribution installed on the client.

    Attributes:
        name: the distribution's name as installed (``ftkit-hf``).
        version: its version.
        path: the wheel file in the cache.
        editable: built from an editable install's source folder (else repacked from RECORD).
        cached: found in the cache (nothing was built this time).
    """

    name: str
    version: str
    path: Path
    editable: bool
    cached: bool


def wheel_cache() -> Path:
    """``$FTKIT_CACHE/remote-wheels``: where the wheels shipped to rented machines are kept."""
    return cache_dir() / "remote-wheels"


def build_wheels(names: list[str] | tuple[str, ...], cache: Path | None = None) -> list[Wheel]:
    """Wheels of the installed distributions ``names`` (built or repacked once, then cached).

    Raises:
        ConfigError: a name is not installed here.
        BackendError: a wheel could not be built (the build's own error is in the message).
    """
    cache = cache or wheel_cache()
    seen: dict[str, Wheel] = {}
    for name in names:
        if canonicalize_name(name) not in seen:
            seen[canonicalize_name(name)] = _wheel_for(_distribution(name), cache)
    return list(seen.values())


def requirements_of(wheels: list[Wheel]) -> list[dict[str, Any]]:
    """What the shipped distributions need from the machine's Python (their own names left out).

    Each entry: ``name``, ``specifier`` (``>=4.56`` or ""), ``marker`` (a PEP 508 marker or ""),
    ``client_version`` (the version installed here, or None): the machine checks them and, when
    asked to, installs ``name==client_version``.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    shipped = {canonicalize_name(w.name) for w in wheels}
    out: dict[str, dict[str, Any]] = {}
    for w in wheels:
        for line in _distribution(w.name).requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            marker = str(req.marker) if req.marker else ""
            if "extra" in marker or canonicalize_name(req.name) in shipped:
                continue  # optional extras are the user's business; shipped ones come as wheels
            try:
                have: str | None = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                have = None
            entry = out.setdefault(canonicalize_name(req.name), {"name": req.name, "specifier": "", "marker": marker,
                                                         "client_version": have})  # fmt: skip
            specs = [s for s in entry["specifier"].split(",") + str(req.specifier).split(",") if s]
            entry["specifier"] = ",".join(dict.fromkeys(specs))
    return sorted(out.values(), key=lambda r: r["name"])


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"[remote] cannot ship {name!r}: it is not installed here (ship_distributions names distributions "
            "installed on this machine, e.g. 'ftkit-hf'; pip install it first)"
        ) from None


def _direct_url(dist: metadata.Distribution) -> dict[str, Any]:
    try:
        return dict(json.loads(dist.read_text("direct_url.json") or "{}"))
    except ValueError:
        return {}


def _wheel_for(dist: metadata.Distribution, cache: Path) -> Wheel:
    info = _direct_url(dist)
    if info.get("dir_info", {}).get("editable"):
        url = urlparse(str(info.get("url", "")))
        root = Path(unquote(url.path))
        if url.scheme != "file" or not root.is_dir():
            raise BackendError(f"[remote] {dist.name} is installed editable from {info.get('url')}, "
                               "which is not a folder here: reinstall it to ship it")  # fmt: skip
        return _from_source(dist, root, cache)
    return _repack(dist, cache)


# ---------------------------------------------------------------------- editable installs: build from source


def _manifest_path(dist: metadata.Distribution, root: Path, cache: Path) -> Path:
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return cache / f"{canonicalize_name(dist.name)}-editable-{where}.json"


def _source_key(root: Path, files: list[str]) -> str:
    """Content hash of an editable project: its project files, the packed sources and their folders' listings."""
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py", "setup.cfg"):
        if (root / name).is_file():
            h.update(name.encode() + b"\0" + (root / name).read_bytes())
    for folder in sorted({str(Path(f).parent) for f in files}):
        try:
            names = sorted(n for n in os.listdir(root / folder) if n != "__pycache__" and not n.endswith(".pyc"))
        except OSError:
            names = ["<missing>"]
        h.update(f"dir {folder}: {names}".encode())
    for f in files:
        try:
            h.update(f"file {f}\0".encode() + (root / f).read_bytes())
        except OSError:
            h.update(f"missing {f}".encode())
    return h.hexdigest()[:16]


def _cached_wheel(folder: Path) -> Path | None:
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    return found[0] if found else None


def _from_source(dist: metadata.Distribution, root: Path, cache: Path) -> Wheel:
    manifest = _manifest_path(dist, root, cache)
    try:
        files = list(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        files = []
    if files:
        key = _source_key(root, files)
        hit = _cached_wheel(cache / f"{canonicalize_name(dist.name)}-{dist.version}-{key}")
        if hit is not None:
            return Wheel(dist.name, dist.version, hit, editable=True, cached=True)
    with tempfile.TemporaryDirectory(prefix="ftkit-wheel-") as tmp:
        built = _pep517_build(dist.name, root, Path(tmp))
        with zipfile.ZipFile(built) as z:
            packed = [n for n in z.namelist() if not n.endswith("/") and ".dist-info/" not in n]
        # Map each packed file back to its source (flat or src/ layout); generated files have none.
        files = sorted(next((str(Path(p) / n) for p in ("", "src") if (root / p / n).is_file()), "") for n in packed)
        files = [f for f in files if f]
        key = _source_key(root, files)
        path = _store(built, cache / f"{canonicalize_name(dist.name)}-{dist.version}-{key}")
    atomic_write_text(manifest, json.dumps({"root": str(root), "files": files}, indent=1))
    return Wheel(dist.name, dist.version, path, editable=True, cached=False)


def _pep517_build(name: str, root: Path, out: Path) -> Path:
    """Build a wheel with the project's own build backend, installed here (no isolation, no download)."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text()) if (root / "pyproject.toml").exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BackendError(f"[remote] cannot read {root / 'pyproject.toml'} to build {name}: {e}") from None
    system = project.get("build-system", {})
    backend = system.get("build-backend", "setuptools.build_meta:__legacy__")
    module, _, obj = backend.partition(":")
    script = (
        "import importlib, sys\n"
        f"sys.path[:0] = {[str(root / p) for p in system.get('backend-path', [])]!r}\n"
        f"b = importlib.import_module({module!r})\n"
        + (f"b = getattr(b, {obj!r})\n" if obj else "")
        + f"print(b.build_wheel({str(out)!r}))\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackendError(f"[remote] building a wheel of {name} from {root} failed: {e}") from None
    produced = out / (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode != 0 or not produced.name.endswith(".whl") or not produced.is_file():
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-10:])[-1500:]  # the build's own last words
        needs = " ".join(repr(x) for x in system.get("requires", [])) or "setuptools wheel"
        raise BackendError(f"[remote] building a wheel of {name} from {root} with {backend} failed; it builds "
                           f"without isolation, so its build requirements must be installed here "
                           f"(pip install {needs}):\n{tail}")  # fmt: skip
    return produced


def _store(wheel: Path, folder: Path) -> Path:
    """Copy ``wheel`` into ``folder`` atomically."""
    final = folder / wheel.name
    atomic_write_bytes(final, wheel.read_bytes())  # a wheel of ftkit's is well under a megabyte
    return final


# ---------------------------------------------------------------------- regular installs: repack RECORD


def _wheel_tags(wheel_text: str) -> str:
    """``py3-none-any`` from a WHEEL file's Tag lines (several tags are compressed: ``py2.py3-none-any``)."""
    tags = [ln.split(":", 1)[1].strip() for ln in wheel_text.splitlines() if ln.lower().startswith("tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags if t.count("-") == 2]
    if not parts:
        return "py3-none-any"
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def _repack(dist: metadata.Distribution, cache: Path) -> Wheel:
    from wheel.wheelfile import WheelFile

    record = dist.read_text("RECORD")
    if not record:
        raise BackendError(f"[remote] {dist.name} {dist.version} has no RECORD (installed by a tool that does not "
                           "write one): reinstall it with pip to ship it")  # fmt: skip
    key = hashlib.sha256(record.encode()).hexdigest()[:16]
    folder = cache / f"{canonicalize_name(dist.name)}-{dist.version}-{key}"
    hit = _cached_wheel(folder)
    if hit is not None:
        return Wheel(dist.name, dist.version, hit, editable=False, cached=True)
    site = Path(str(dist.locate_file("")))
    wheel_text = dist.read_text("WHEEL") or ""
    if not wheel_text:
        wheel_text = "Wheel-Version: 1.0\nGenerator: ftkit-remote\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    safe_name = re.sub(r"[-_.]+", "_", dist.name)
    filename = f"{safe_name}-{dist.version}-{_wheel_tags(wheel_text)}.whl"
    entries: list[tuple[Path, str]] = []
    for row in record.splitlines():
        rel = row.rsplit(",", 2)[0].strip().strip('"')
        parts = Path(rel).parts
        if not rel or rel.startswith(("..", "/")) or "__pycache__" in parts or rel.endswith((".pyc", ".pyo")):
            continue  # console scripts live outside site-packages and are rebuilt from entry_points.txt
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _INSTALL_ONLY | {"WHEEL"}:
            continue
        src = site / rel
        if not src.is_file():
            raise BackendError(f"[remote] {dist.name} {dist.version}: {src} is listed in its RECORD but missing; "
                               "reinstall it to ship it")  # fmt: skip
        entries.append((src, rel))
    info_dir = f"{safe_name}-{dist.version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    # WheelFile reads name and version from the file name: write it under its real name in a private
    # temporary folder, then move it into place atomically.
    tmp = Path(tempfile.mkdtemp(prefix=".repack-", dir=folder))
    try:
        with WheelFile(tmp / filename, "w") as wf:
            for src, rel in entries:
                wf.write(str(src), _rename_info(rel, info_dir))
            wf.writestr(f"{info_dir}/WHEEL", wheel_text)
        os.replace(tmp / filename, folder / filename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Wheel(dist.name, dist.version, folder / filename, editable=False, cached=False)


def _rename_info(rel: str, info_dir: str) -> str:
    """Put every ``*.dist-info/`` file under the wheel's canonical dist-info folder name."""
    head, sep, rest = rel.partition("/")
    return f"{info_dir}/{rest}" if sep and head.endswith(".dist-info") else rel
