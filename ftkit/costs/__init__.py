"""Costs: a dated, sourced price catalogue and the formulas every backend and ``ftkit estimate`` share.

::

    from ftkit.costs import estimate_openai, estimate_local, estimate_remote, estimate_all
    estimate_openai(billed_tokens_per_epoch=120_000, n_examples=2_000, model="gpt-4.1-mini")
    estimate_all("train.jsonl", test="test.jsonl").rows

Modules: ``catalogue`` (prices with ``as_of`` and ``source``), ``estimate`` (formulas and the
``[costs]`` settings), ``flops`` (the one FLOPs model of speed), ``rows`` (the work a comparison prices and
its rows, which backends contribute), ``plan`` (every backend on one data set).
"""

from ftkit.costs.catalogue import (
    DEVICE_WATTS,
    ELECTRICITY,
    GPU_RATES,
    GPUS,
    OPENAI_PRICES,
    PROVIDERS,
    GpuRate,
    GpuSpec,
    OpenAIPrice,
    gpu_rates,
    gpu_spec,
    model_parameters,
    openai_price,
)
from ftkit.costs.estimate import (
    CostSettings,
    estimate_local,
    estimate_openai,
    estimate_openai_inference,
    estimate_remote,
    openai_epochs,
    tokens_per_second,
)
from ftkit.costs.flops import flops_per_token, sustained_flops
from ftkit.costs.plan import CostReport, estimate_all
from ftkit.costs.rows import CostRow, EstimateWork

__all__ = [
    "DEVICE_WATTS",
    "ELECTRICITY",
    "GPUS",
    "GPU_RATES",
    "OPENAI_PRICES",
    "PROVIDERS",
    "CostReport",
    "CostRow",
    "CostSettings",
    "EstimateWork",
    "GpuRate",
    "GpuSpec",
    "OpenAIPrice",
    "estimate_all",
    "estimate_local",
    "estimate_openai",
    "estimate_openai_inference",
    "estimate_remote",
    "flops_per_token",
    "gpu_rates",
    "gpu_spec",
    "model_parameters",
    "openai_epochs",
    "openai_price",
    "sustained_flops",
    "tokens_per_second",
]
