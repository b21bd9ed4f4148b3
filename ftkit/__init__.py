"""ftkit: fine-tune once, on OpenAI, a laptop or a rented GPU, and compare the results fairly.

The public API::

    import ftkit
    spec = ftkit.JobSpec.from_file("ftkit.toml")
    job = ftkit.FineTuneJob.create(spec, backend="hf")
    job.start(); job.wait(progress=True)
    report = ftkit.evaluate(job.model(), "test.jsonl")
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ftkit.backend import (
    ActualCost,
    Backend,
    BackendConfig,
    Capabilities,
    CostEstimate,
    JobContext,
    PollResult,
    get_backend,
    installed_backends,
    register_backend,
)
from ftkit.data import Dataset, DatasetStats, Issue, ValidationReport
from ftkit.errors import (
    APIError,
    AuthenticationError,
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigError,
    DatasetError,
    EvaluationError,
    FtkitError,
    JobError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from ftkit.events import Event, JobStatus
from ftkit.job import FineTuneJob
from ftkit.predictor import UNPARSEABLE, Classification, Predictor
from ftkit.spec import Hyperparameters, JobSpec
from ftkit.store import JobRecord, JobStore

try:
    __version__ = version("ftkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# Evaluation pulls in scikit-learn, scipy and matplotlib: load it on first use, not on `import ftkit`.
_LAZY = {
    "evaluate": "ftkit.evaluate",
    "compare": "ftkit.evaluate",
    "EvaluationReport": "ftkit.evaluate",
    "ComparisonReport": "ftkit.evaluate",
    "Calibrator": "ftkit.evaluate",
    "TextClassifier": "ftkit.sklearn",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        # Importing the ftkit.evaluate package rebinds ftkit.evaluate to the module: pin the function.
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ftkit' has no attribute {name!r}")


__all__ = [
    "UNPARSEABLE",
    "APIError",
    "ActualCost",
    "AuthenticationError",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Calibrator",
    "Capabilities",
    "Classification",
    "ComparisonReport",
    "ConfigError",
    "CostEstimate",
    "Dataset",
    "DatasetError",
    "DatasetStats",
    "EvaluationError",
    "EvaluationReport",
    "Event",
    "FineTuneJob",
    "FtkitError",
    "Hyperparameters",
    "Issue",
    "JobContext",
    "JobError",
    "JobFailedError",
    "JobNotFoundError",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "JobStore",
    "JobTimeoutError",
    "PollResult",
    "Predictor",
    "QuotaExceededError",
    "RateLimitError",
    "TextClassifier",
    "ValidationReport",
    "__version__",
    "compare",
    "evaluate",
    "get_backend",
    "installed_backends",
    "register_backend",
]
