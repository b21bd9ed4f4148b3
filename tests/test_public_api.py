"""The public surface is deliberate, and importing ftkit stays light."""

from __future__ import annotations

import subprocess
import sys

import ftkit

EXPECTED = [
    "UNPARSEABLE", "APIError", "ActualCost", "AuthenticationError", "Backend", "BackendConfig", "BackendError",
    "BackendNotFoundError", "BackendUnavailableError", "Calibrator", "Capabilities", "Classification",
    "ComparisonReport", "ConfigError", "CostEstimate", "Dataset", "DatasetError", "DatasetStats", "EvaluationError",
    "EvaluationReport", "Event", "FineTuneJob", "FtkitError", "Hyperparameters", "Issue", "JobContext", "JobError",
    "JobFailedError", "JobNotFoundError", "JobRecord", "JobSpec", "JobStatus", "JobStore", "JobTimeoutError",
    "PollResult", "Predictor", "QuotaExceededError", "RateLimitError", "TextClassifier", "ValidationReport",
    "__version__", "compare", "evaluate", "get_backend", "installed_backends", "register_backend",
]


def test_all_is_sorted_and_unchanged() -> None:
    assert ftkit.__all__ == EXPECTED
    assert ftkit.__all__ == sorted(ftkit.__all__, key=lambda n: (not n.isupper(), n))


def test_every_public_name_has_a_docstring() -> None:
    for name in ftkit.__all__:
        obj = getattr(ftkit, name)
        if callable(obj) and not isinstance(obj, str):
            assert obj.__doc__, name


def test_import_does_not_pull_heavy_libraries() -> None:
    code = ("import sys, ftkit, ftkit.cli; heavy = {'torch', 'openai', 'transformers', 'sklearn', 'matplotlib'}"
            " & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
