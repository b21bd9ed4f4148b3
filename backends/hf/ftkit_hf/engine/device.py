"""Where and in which precision the engine trains: device, precision and thread choice.

The defaults are what a user gets without reading any docs, so they must be right on a laptop:

* CPU with AMX-BF16 or AVX512-BF16 (Sapphire Rapids and later, Zen 4 and later): bf16 autocast. A bf16
  matmul runs ~7x an fp32 one there (shared/facts/performance.md §5.0), while the master weights, the LoRA
  parameters, the optimizer state and the loss stay fp32.
* CPU without them: fp32. bf16 would be emulated and usually slower.
* CUDA with bf16 support (Ampere and later): bf16 autocast; older GPUs (T4, V100) fp16 autocast with loss
  scaling (:class:`ftkit_hf.engine.precision.LossScaler`): their tensor cores run fp16 at 8-16x fp32.
* Threads: one per physical core. SMT siblings share the matmul units and slow GEMMs down.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DEVICES = ("auto", "cpu", "cuda", "mps")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where that file does not exist, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():  # a blank line ends the first processor's block
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where that file does not exist, e.g. macOS)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` knows, e.g. ``arm64``)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_bf16_kind(flags: frozenset[str] | None = None) -> str | None:
    """Which native bf16 matmul unit the CPU has: ``"AMX"``, ``"AVX512-BF16"`` or None."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def physical_cores() -> int:
    """Physical cores this process may use (logical CPUs when psutil cannot tell)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to read the topology
        physical = None
    logical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = logical
    cores = physical or logical
    # Under a CPU quota/affinity (containers, taskset) use at most the CPUs we may run on.
    return max(1, min(cores, allowed))


@dataclass(frozen=True)
class DevicePlan:
    """The resolved device, precision and thread count for one training run.

    Attributes:
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        precision: ``"bf16"`` or ``"fp16"`` (autocast, fp32 master weights; fp16 with loss scaling) or ``"fp32"``.
        threads: intra-op threads on CPU (None on accelerators: left to torch).
        reason: why this precision, e.g. ``"AMX"`` or ``"no native bf16"``.
    """

    device: str
    precision: str
    threads: int | None
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None when training in fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def describe(self) -> str:
        """One line for ``ftkit backends`` and the job log, e.g. ``"CPU, bf16 (AMX), 2 threads"``."""
        if self.device == "cpu":
            return f"CPU, {self.precision} ({self.reason}), {self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.device == "cuda":
            return f"CUDA ({torch.cuda.get_device_name()}), {self.precision} ({self.reason})"
        return f"{self.device.upper()}, {self.precision} ({self.reason})"


def resolve_device(device: str = "auto") -> str:
    """Turn ``auto`` into the best available device; check that an explicit one exists."""
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {', '.join(_DEVICES)}, not {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but torch sees no Apple GPU")
    return device


def plan_device(device: str = "auto", precision: str = "auto", threads: int | None = None,
                processes: int = 1) -> DevicePlan:
    """Choose device, precision and threads; explicit settings win over detection.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        precision: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        threads: CPU threads of this process; None means one per physical core, shared out between
            ``processes``.
        processes: training processes on this machine (data parallel) that share its cores.

    Returns:
        The resolved plan (nothing is changed in torch until :func:`apply_plan`).
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, not {precision!r}")
    dev = resolve_device(device)
    if dev == "cpu":
        kind = cpu_bf16_kind()
        if precision == "auto":
            prec, reason = ("bf16", kind) if kind else ("fp32", "no native bf16")
        else:
            prec = precision
            reason = "chosen, emulated bf16" if prec == "bf16" and not kind else "chosen"
        return DevicePlan("cpu", prec, threads or max(1, physical_cores() // max(1, processes)), reason)
    if dev == "cuda":
        native = torch.cuda.is_bf16_supported()
        if precision == "auto":
            prec, reason = ("bf16", "native") if native else ("fp16", "no native bf16, loss scaling")
        else:
            prec, reason = precision, "chosen"
        return DevicePlan("cuda", prec, threads, reason)
    # MPS: bf16 autocast support varies by macOS/torch version; fp32 is the safe default.
    prec = "fp32" if precision == "auto" else precision
    return DevicePlan(dev, prec, threads, "default" if precision == "auto" else "chosen")


def apply_plan(plan: DevicePlan) -> None:
    """Set torch's thread count for a CPU plan (a process-wide setting, as training owns the process)."""
    if plan.device == "cpu" and plan.threads:
        torch.set_num_threads(plan.threads)


def describe_device(device: str = "auto", precision: str = "auto", threads: int | None = None) -> str:
    """Describe what the engine would choose here, e.g. ``"CPU, bf16 (AMX), 2 threads"``.

    Args:
        device: as in :class:`EngineSettings`.
        precision: as in :class:`EngineSettings`.
        threads: as in :class:`EngineSettings`.
    """
    return plan_device(device, precision, threads).describe()
