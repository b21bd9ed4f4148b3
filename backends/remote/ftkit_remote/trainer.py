"""The trainer ftkit-remote runs on the machine: ftkit-hf, imported here and only here.

ftkit-hf is a declared dependency: its worker runs on the rented machine, and its job-folder protocol
(:mod:`ftkit_hf.protocol`) is how this client reads that worker over SFTP. Only public names of
ftkit-hf are used. A broken install (ftkit-hf missing) fails the import of the remote backend with
the line that fixes it, which ftkit's backend registry shows as a one-line error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftkit_hf.predictor import HFPredictor

try:
    from ftkit_hf.backend import check_preference, job_memory_need, stage_job
    from ftkit_hf.config import HFConfig
    from ftkit_hf.memory_plan import gpu_fit_line, gpu_precision, job_memory_decision
    from ftkit_hf.models import DEFAULT_CAUSAL, resolve_model
    from ftkit_hf.protocol import (
        BASE_MODEL,
        CANCEL,
        EVENTS,
        LOG,
        MODEL,
        SPEC,
        STATUS,
        TERMINAL,
        EventCursor,
        JobFiles,
        WorkerStatus,
        parse_events,
        parse_status,
    )
except ImportError as e:  # pragma: no cover - exercised in a subprocess by test_remote_trainer_missing
    raise ImportError(
        f"ftkit-remote runs ftkit-hf's worker and reads its job folder, but ftkit-hf cannot be imported ({e}): "
        "pip install ftkit-hf"
    ) from None

WORKER_COMMAND = ["python", "-m", "ftkit_hf.worker", "run", "."]  # run in the job folder: its paths are relative


def predictor_class() -> type[HFPredictor]:
    """ftkit-hf's predictor, imported on first use (it imports torch; listing backends must not)."""
    from ftkit_hf.predictor import HFPredictor

    return HFPredictor

__all__ = [
    "BASE_MODEL",
    "CANCEL",
    "DEFAULT_CAUSAL",
    "EVENTS",
    "LOG",
    "MODEL",
    "SPEC",
    "STATUS",
    "TERMINAL",
    "WORKER_COMMAND",
    "EventCursor",
    "HFConfig",
    "JobFiles",
    "WorkerStatus",
    "check_preference",
    "gpu_fit_line",
    "gpu_precision",
    "job_memory_decision",
    "job_memory_need",
    "parse_events",
    "parse_status",
    "predictor_class",
    "resolve_model",
    "stage_job",
]
