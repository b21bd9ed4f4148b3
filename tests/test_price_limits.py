"""Prices are finite and above zero: the catalogue's own numbers, new entries, and ``[costs]`` overrides."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from ftkit.costs import catalogue
from ftkit.costs.estimate import CostSettings

PRICE_MODELS = [catalogue.OpenAIPrice, catalogue.GpuSpec, catalogue.GpuRate, catalogue.ProviderOverhead,
                catalogue.Electricity]  # fmt: skip
ENTRIES: list[BaseModel] = [
    *catalogue.OPENAI_PRICES.values(),
    *catalogue.GPUS.values(),
    *catalogue.GPU_RATES,
    *catalogue.PROVIDERS.values(),
    catalogue.ELECTRICITY,
]


def _numbers(entry: BaseModel) -> dict[str, float]:
    return {k: v for k, v in entry.model_dump().items() if isinstance(v, int | float) and not isinstance(v, bool)}


def test_every_catalogued_number_is_finite_and_positive() -> None:
    assert {type(e) for e in ENTRIES} == set(PRICE_MODELS), "every price model has entries checked here"
    for entry in ENTRIES:
        for name, value in _numbers(entry).items():
            ok = value > 0 or (name == "storage_usd_per_gb_month" and value == 0)  # 0: disk included in the price
            assert math.isfinite(value) and ok, f"{type(entry).__name__} {entry}: {name}={value}"
    assert all(math.isfinite(w) and w > 0 for w in catalogue.DEVICE_WATTS.values())
    assert 0 < catalogue.DEFAULT_MFU <= 1 and catalogue.CPU_SUSTAINED_FLOPS > 0


@pytest.mark.parametrize("model", PRICE_MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 0.0])
def test_a_new_entry_with_a_broken_number_is_refused(model: type[BaseModel], bad: float) -> None:
    """Each numeric field of each price model, derived from an existing entry, refuses inf/nan/negative/0."""
    good = next(e for e in ENTRIES if type(e) is model).model_dump()
    for name in _numbers(model.model_validate(good)):
        if bad == 0 and name == "storage_usd_per_gb_month":
            continue
        with pytest.raises(ValidationError):
            model.model_validate(good | {name: bad})


def test_rate_range_is_ordered() -> None:
    with pytest.raises(ValidationError, match="above high"):
        catalogue.GpuRate(provider="vast", gpu="H200", low=5.0, high=3.0, as_of="2026", source="test")


@pytest.mark.parametrize("option", ["usd_per_kwh", "device_watts", "remote_tokens_per_second", "mfu",
                                    "startup_minutes", "disk_gb"])  # fmt: skip
@pytest.mark.parametrize("bad", [math.inf, math.nan, "inf"])
def test_costs_overrides_refuse_non_finite(option: str, bad: object) -> None:
    with pytest.raises(ValidationError) as err:
        CostSettings.model_validate({option: bad})
    assert err.value.errors()[0]["loc"] == (option,)
