"""How long training takes on this machine: recent measurements per machine and model, and the time model they fit.

Every finished hf job records one :class:`Measurement` (tokens trained, optimizer steps, seconds in the
training loop, seconds to get there) under a :class:`SpeedKey`: the machine (CPU model or GPU name,
precision, threads), the model, the method and the kind of training. The estimate of the next job on the
same key models its wall time as::

    setup (start the worker, tokenize, load the model) + tokens × seconds per token + steps × seconds per step

with the two rates fitted to the recent measurements by non-negative least squares (one rate when the
measurements cannot tell tokens from steps apart). The last :data:`KEEP` measurements are kept, not the
fastest ever: a machine that is busy now trains slowly now. When they disagree by more than
:data:`NOISY`, the estimate is a range: what each measurement alone would predict.

The file lives in :func:`ftkit.paths.measurements_dir` (``$FTKIT_MEASUREMENTS``), which the test suites point
at a folder of their own, so running the tests never changes a user's estimates.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.optimize import nnls

from ftkit.atomic import atomic_write_text
from ftkit.paths import measurements_dir

SPEEDS_FILE = "hf-speeds.json"
KEEP = 8
"""Measurements kept per key: enough to see the spread, few enough to follow a machine that changed."""
NOISY = 0.2
"""Above this relative spread (fastest to slowest measurement) the estimate is given as a range."""
MIN_RATIO_SPREAD = 1.3
"""Tokens per step must differ this much between measurements before a per-step cost can be fitted apart."""


class Measurement(BaseModel):
    """One finished training run on this machine.

    Attributes:
        tokens: real (non-pad) tokens trained, all epochs.
        steps: optimizer steps.
        train_s: wall seconds of the training loop (validation and checkpoints included: the job waits for them).
        setup_s: wall seconds of the worker outside the training loop (imports, tokenizing, model load, and saving
            the trained model after it).
        at: when it finished (Unix time).
    """

    model_config = ConfigDict(allow_inf_nan=False)

    tokens: int = Field(gt=0)
    steps: int = Field(gt=0)
    train_s: float = Field(gt=0)
    setup_s: float = Field(ge=0)
    at: float = Field(default_factory=time.time)


class SpeedKey(BaseModel):
    """What a measurement applies to: the same machine, model, method and kind of training."""

    model_config = ConfigDict(frozen=True)

    machine: str = Field(
        description="CPU model or GPU name, precision, threads, e.g. 'Intel Xeon ..., bf16, 2 threads'."
    )
    model: str
    method: str
    kind: str = Field(description="'generative', 'sequence_classification' or 'preference'.")
    processes: int = 1

    def text(self) -> str:
        """The key in the file."""
        procs = f" x {self.processes} processes" if self.processes > 1 else ""
        return f"{self.model}|{self.method}|{self.kind}|{self.machine}{procs}"


def machine_name(device: str, precision: str, threads: int | None) -> str:
    """The machine part of a key: the CPU's model (or the GPU's name), the precision and the threads."""
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()}, {precision}"
    if device == "cpu":
        from ftkit_hf.engine.device import cpu_model_name

        return f"{cpu_model_name()}, {precision}, {threads} thread{'s' if threads != 1 else ''}"
    return f"{device}, {precision}"


def speeds_file() -> Path:
    """Where the measurements are kept."""
    return measurements_dir() / SPEEDS_FILE


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged file only costs the estimate its calibration; the next job rewrites it
    return data if isinstance(data, dict) and data.get("version") == 1 else {}


def record(key: SpeedKey, measurement: Measurement, path: Path | None = None) -> None:
    """Add ``measurement`` under ``key``, keeping the last :data:`KEEP` (locked: jobs may finish together)."""
    path = path or speeds_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=30):
        data = _load(path) or {"version": 1, "speeds": {}}
        kept = data["speeds"].get(key.text(), [])
        kept.append(measurement.model_dump())
        data["speeds"][key.text()] = kept[-KEEP:]
        atomic_write_text(path, json.dumps(data, indent=1))


def recall(key: SpeedKey, path: Path | None = None) -> list[Measurement]:
    """The recent measurements under ``key``, oldest first (none when the file is missing or damaged)."""
    raw = _load(path or speeds_file()).get("speeds", {}).get(key.text(), [])
    out = []
    for m in raw:
        try:
            out.append(Measurement.model_validate(m))
        except ValidationError:
            continue
    return out


class TimeModel(BaseModel):
    """Wall seconds of a job: ``setup_s + tokens × seconds_per_token + steps × seconds_per_step``.

    ``low`` and ``high`` scale the training part: the fastest and slowest measurement against the fit
    (1.0 and 1.0 for a single measurement or a configured speed).
    """

    seconds_per_token: float = Field(gt=0)
    seconds_per_step: float = Field(ge=0)
    setup_s: float = Field(ge=0)
    setup_low_s: float = Field(ge=0)
    setup_high_s: float = Field(ge=0)
    low: float = Field(default=1.0, gt=0)
    high: float = Field(default=1.0, gt=0)
    measurements: int = 0
    source: str

    @property
    def noisy(self) -> bool:
        """The measurements (or the guess) spread by more than :data:`NOISY`."""
        return self.high / self.low - 1 > NOISY or self.setup_high_s > self.setup_s * (1 + NOISY) + 1

    def seconds(self, tokens: float, steps: float) -> float:
        """The central prediction."""
        return self.setup_s + tokens * self.seconds_per_token + steps * self.seconds_per_step

    def seconds_range(self, tokens: float, steps: float) -> tuple[float, float]:
        """The fastest and slowest prediction the measurements support."""
        train = tokens * self.seconds_per_token + steps * self.seconds_per_step
        return self.setup_low_s + train * self.low, self.setup_high_s + train * self.high

    def tokens_per_second(self, tokens_per_step: float) -> float:
        """Training tokens per second (setup excluded) at ``tokens_per_step``."""
        return tokens_per_step / (tokens_per_step * self.seconds_per_token + self.seconds_per_step)


def fit(measurements: list[Measurement]) -> TimeModel | None:
    """The time model the measurements support; None without any.

    Two rates (per token, per step) by non-negative least squares when the measurements differ enough in
    tokens per step to tell them apart; otherwise one rate per token, the per-step cost folded in.
    """
    if not measurements:
        return None
    tokens = np.array([m.tokens for m in measurements], dtype=float)
    steps = np.array([m.steps for m in measurements], dtype=float)
    train = np.array([m.train_s for m in measurements], dtype=float)
    per_step = tokens / steps
    how = "one rate per token (the measurements cannot separate the per-step cost)"
    spt, sps = float(train.sum() / tokens.sum()), 0.0
    if len(measurements) >= 2 and per_step.max() / per_step.min() >= MIN_RATIO_SPREAD:
        # Scale the columns so the solver sees comparable numbers (tokens run to millions, steps to hundreds).
        scale = np.array([tokens.max(), steps.max()])
        x, _ = nnls(np.column_stack([tokens, steps]) / scale, train)
        x = x / scale
        if x[0] > 0:
            spt, sps = float(x[0]), float(x[1])
            how = "per token and per step, fitted by non-negative least squares"
    predicted = tokens * spt + steps * sps
    ratios = train / predicted
    setups = [m.setup_s for m in measurements]
    n = len(measurements)
    return TimeModel(
        seconds_per_token=spt,
        seconds_per_step=sps,
        setup_s=statistics.median(setups),
        setup_low_s=min(setups),
        setup_high_s=max(setups),
        low=float(ratios.min()),
        high=float(ratios.max()),
        measurements=n,
        source=f"measured by the last {n} job{'s' if n != 1 else ''} on this machine and model; {how}",
    )
