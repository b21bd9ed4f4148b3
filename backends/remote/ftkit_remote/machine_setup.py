"""Runs ON the rented machine (shipped as ``ftkit_setup.py``): installs the client's ftkit before the worker starts.

Standard library only, and careful to run on older Pythons far enough to say clearly that they are
too old. ``ftkit_run.sh`` calls it in the job folder with the machine's own ``python``:

1. the shipped wheels go into ``.ftkit-site`` (``pip install --no-deps --no-index --target``): the
   image's Python, its torch and everything else it owns are left as they are;
2. ``remote_pip`` (when given) and, in automatic mode, the client's versions of the requirements the
   machine lacks go into ``.ftkit-deps`` (``pip install --prefix``: pip sees what the image already
   has, so torch is never reinstalled, and the image's environment is never written to);
3. ``import ftkit_hf.worker`` (or the shipped packages) must work with those folders on ``PYTHONPATH``.

It writes the ``PYTHONPATH`` to use into ``.ftkit-pythonpath``. On failure it writes ``status.json``
(``failed`` with an error naming what is missing and the fix) and an error event, as the worker would.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PLAN = "wheels/ftkit-wheels.json"


class SetupFailed(Exception):
    """The machine cannot run the worker; the message says why and what fixes it."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging() -> Any:
    """``packaging`` from the image, or the copy pip vendors; None when neither exists (presence checks only)."""
    for mod in ("packaging", "pip._vendor.packaging"):
        try:
            specifiers = __import__(mod + ".specifiers", fromlist=["SpecifierSet"])
            markers = __import__(mod + ".markers", fromlist=["Marker"])
            return specifiers.SpecifierSet, markers.Marker
        except Exception:  # any failure just means "not usable"
            continue
    return None


class Setup:
    """One installation in ``root`` (the job folder), following the plan the client wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.plan: dict[str, Any] = json.loads((root / PLAN).read_text())
        self.site = root / ".ftkit-site"
        self.deps = root / ".ftkit-deps"
        self.pack = _packaging()

    # ------------------------------------------------------------------ protocol files

    def event(self, message: str, level: str = "info", **data: Any) -> None:
        line = {"time": time.time(), "level": level, "kind": "message", "message": _redact(message), "data": data}
        with (self.root / "events.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    def fail(self, error: str) -> None:
        self.event(error, level="error")
        tmp = self.root / ".status.setup.tmp"
        tmp.write_text(json.dumps({"status": "failed", "error": _redact(error), "updated": time.time()}))
        os.replace(str(tmp), str(self.root / "status.json"))

    # ------------------------------------------------------------------ steps

    def pip(self, args: list[str], what: str) -> None:
        cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input", "-q"]
        r = subprocess.run(cmd, cwd=str(self.root), capture_output=True, text=True)
        if r.returncode != 0:
            out = (r.stderr or r.stdout).strip()
            if "No module named pip" in out:
                raise SetupFailed(f"the machine's Python ({sys.executable}) has no pip, needed to install {what}: "
                                  "use an image with pip, or set ship_wheels = false and bring ftkit in the image")
            raise SetupFailed(f"pip could not install {what} on the machine:\n{out[-1500:]}")

    def dep_dirs(self) -> list[str]:
        """The site folders pip created under ``.ftkit-deps`` (the layout differs between distributions)."""
        if not self.deps.is_dir():
            return []
        found = [p for p in self.deps.glob("**/*-packages") if p.name in ("site-packages", "dist-packages")]
        return sorted(str(p) for p in found if p.is_dir())

    def unmet(self) -> list[tuple[dict[str, Any], str]]:
        """Requirements of the shipped code the machine's Python (plus ``.ftkit-deps``) does not satisfy."""
        have: dict[str, str] = {}
        for dist in metadata.distributions(path=self.dep_dirs() + sys.path):
            name = dist.metadata["Name"]
            if name:
                have.setdefault(_normalize(name), dist.version)
        out = []
        for req in self.plan["requirements"]:
            if req.get("marker") and self.pack is not None:
                try:
                    if not self.pack[1](req["marker"]).evaluate():
                        continue
                except Exception:  # an unreadable marker: check the requirement anyway
                    pass
            version = have.get(_normalize(req["name"]))
            if version is None:
                out.append((req, "missing"))
            elif req.get("specifier") and self.pack is not None:
                try:
                    ok = self.pack[0](req["specifier"]).contains(version, prereleases=True)
                except Exception:
                    ok = True  # a version pip itself could not parse: let the import check decide
                if not ok:
                    out.append((req, f"{version} installed, {req['specifier']} needed"))
        return out

    def run(self) -> None:
        t0 = time.time()
        needs = self.plan.get("requires_python") or ""
        if needs and self.pack is not None and not self.pack[0](needs).contains(platform.python_version(), True):
            raise SetupFailed(f"the machine's Python is {platform.python_version()} ({sys.executable}); ftkit needs "
                              f"Python {needs}: use an image with a newer Python (provider_options.image)")
        wheels = [str(self.root / "wheels" / w) for w in self.plan["wheels"]]
        if wheels:
            self.pip(["install", "--no-deps", "--no-index", "--no-compile", "--target", str(self.site), *wheels],
                     "the shipped wheels (" + ", ".join(self.plan["shipped"]) + ")")
        remote_pip = self.plan.get("remote_pip")
        if remote_pip:
            self.event("pip install on the machine: " + " ".join(remote_pip))
            self.pip(["install", "--prefix", str(self.deps), "--no-warn-script-location", *remote_pip], "remote_pip")
        unmet = self.unmet()
        never = {_normalize(n) for n in self.plan.get("never_auto", [])}
        if unmet and remote_pip is None and not any(_normalize(r["name"]) in never for r, _ in unmet):
            pins = [_pin(r) for r, _ in unmet]
            self.event("the machine lacks " + ", ".join(f"{r['name']} ({why})" for r, why in unmet)
                       + "; installing the client's versions: " + " ".join(pins), pins=pins)  # fmt: skip
            self.pip(["install", "--prefix", str(self.deps), "--no-warn-script-location", *pins],
                     "the missing requirements " + " ".join(pins))
            unmet = self.unmet()
        if unmet:
            raise SetupFailed(self._missing_message(unmet, remote_pip))
        path = [str(self.site), *self.dep_dirs()]
        (self.root / ".ftkit-pythonpath").write_text(os.pathsep.join(path))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, *filter(None, [os.environ.get("PYTHONPATH")])]))
        for module in self.plan.get("check_imports", []):
            r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=str(self.root), env=env,
                               capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise SetupFailed(
                    f"the machine's Python ({sys.executable}, {platform.python_version()}) cannot import {module} "
                    f"after installing ftkit's wheels: {last}. Fix: name what is missing in remote_pip "
                    '(e.g. remote_pip = ["transformers==X", "peft==Y"]) or use an image that has it '
                    "(provider_options.image)"
                )
        self.event(f"installed {', '.join(self.plan['shipped']) or 'nothing'} on the machine into .ftkit-site "
                   f"in {time.time() - t0:.1f} s", setup_s=round(time.time() - t0, 3),
                   shipped=self.plan["shipped"])  # fmt: skip

    def _missing_message(self, unmet: list[tuple[dict[str, Any], str]], remote_pip: list[str] | None) -> str:
        what = ", ".join(f"{r['name']} ({why})" for r, why in unmet)
        pins = json.dumps([_pin(r) for r, _ in unmet])
        never = {_normalize(n) for n in self.plan.get("never_auto", [])}
        blocked = [r["name"] for r, _ in unmet if _normalize(r["name"]) in never]
        head = f"the machine's Python ({sys.executable}, {platform.python_version()}) lacks what ftkit needs: {what}."
        if blocked and remote_pip is None:
            return (f"{head} ftkit never installs {', '.join(blocked)} by itself (it must match the machine's "
                    "CUDA): use an image that has it (provider_options.image), or name the build you want in "
                    f"remote_pip, e.g. remote_pip = {pins}")  # fmt: skip
        if remote_pip:
            return f"{head} remote_pip = {json.dumps(remote_pip)} did not provide it. Fix: remote_pip = {pins}"
        return f"{head} Fix: set remote_pip = {pins} (or leave remote_pip unset to install the client's versions)"


def _redact(text: str) -> str:
    """Hide URL credentials (``https://user:token@host/simple`` in remote_pip, echoed by pip's errors)."""
    return re.sub(r"(\w+://)[^/@\s'\"]+@", r"\1***@", text)


def _pin(req: dict[str, Any]) -> str:
    """``name==client version`` (local build tags such as ``+cpu`` dropped), else the requirement itself."""
    version = req.get("client_version")
    return f"{req['name']}=={version.split('+')[0]}" if version else f"{req['name']}{req.get('specifier', '')}"


def main() -> int:
    """Install, check, record; exit 1 (with ``status.json`` failed) when the machine cannot run the worker."""
    setup = Setup(Path(__file__).resolve().parent)
    try:
        setup.run()
    except SetupFailed as e:
        setup.fail(str(e))
        return 1
    except Exception as e:  # the worker must never start half set up, and the client must learn why
        setup.fail(f"setting up the machine failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
