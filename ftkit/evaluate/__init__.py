"""Evaluation: one judge for base models, OpenAI fine-tunes and local or remote LoRAs.

::

    report = ftkit.evaluate(job.model(), "test.jsonl", calibrate="platt")
    report.metrics["accuracy"], report.metrics["p_value_vs_majority"]
    report.print(); report.to_html("report.html"); report.to_json()
    ftkit.compare({"base": base, "lora": lora, "openai": "openai_preds.jsonl"}, "test.jsonl").print()

Modules: ``predictions`` (reading and aligning files), ``metrics``, ``calibration``,
``significance`` (McNemar), ``paired`` (non-inferiority and equivalence), ``baseline`` (the bag-of-words
floor), ``report`` (tables and JSON), ``plots`` and ``html``.
"""

import sys
import types
from typing import Any

from ftkit.evaluate.api import compare, evaluate
from ftkit.evaluate.baseline import BaselineResult, fit_bow
from ftkit.evaluate.calibration import Calibrator, cross_fit
from ftkit.evaluate.paired import PairedTest, equivalence, noninferiority, noninferiority_sample_size
from ftkit.evaluate.predictions import Prediction, Reference, load_predictions, load_reference, write_predictions
from ftkit.evaluate.report import ComparisonReport, EvaluationReport
from ftkit.evaluate.significance import binomial_p_value, mcnemar_exact

__all__ = [
    "BaselineResult",
    "Calibrator",
    "ComparisonReport",
    "EvaluationReport",
    "PairedTest",
    "Prediction",
    "Reference",
    "binomial_p_value",
    "compare",
    "cross_fit",
    "equivalence",
    "evaluate",
    "fit_bow",
    "load_predictions",
    "load_reference",
    "mcnemar_exact",
    "noninferiority",
    "noninferiority_sample_size",
    "write_predictions",
]


class _CallableModule(types.ModuleType):
    """``ftkit.evaluate`` is both this package and the function: importing the package binds the name
    ``evaluate`` on ``ftkit`` to the module, so the module itself answers calls."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvaluationReport:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
