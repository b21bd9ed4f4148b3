"""OpenAI fine-tuning prices (USD), dated and sourced, and the cost formulas.

This table is the openai backend's source of truth. Training is billed per token trained:
``training price per 1M × tokens in the training file × epochs`` (OpenAI's formula), and the
actual bill is ``trained_tokens`` (reported by the job when it ends) × the training price.
"""

from __future__ import annotations

from pydantic import BaseModel

from ftkit.costs.catalogue import OPENAI_PRICES
from ftkit.costs.estimate import openai_epochs
from ftkit.data.targets import OPENAI_ALIASES

PRICES_AS_OF = "2026-05-07"
PRICES_SOURCE = (
    "https://openai.com/api/pricing/ (fine-tuning table), two independent copies of the page taken after the "
    "2026-05-07 wind-down notice; the same numbers appear in 2025 copies"
)


class ModelPrice(BaseModel):
    """Prices of one base model, USD per 1M tokens (``training_per_hour`` for RFT)."""

    training: float | None = None
    training_per_hour: float | None = None
    input: float
    cached_input: float | None = None
    output: float
    batch_input: float | None = None
    batch_output: float | None = None


# One price table for all of ftkit: the core catalogue (ftkit.costs), seen through this backend's names.
PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(
        training=p.training_per_mtok,
        training_per_hour=p.training_per_hour,
        input=p.input_per_mtok,
        cached_input=p.cached_input_per_mtok,
        output=p.output_per_mtok,
        batch_input=p.batch_input_per_mtok,
        batch_output=p.batch_output_per_mtok,
    )
    for name, p in OPENAI_PRICES.items()
}


def base_model_of(model: str) -> str:
    """The priced base snapshot of a model name (``ft:gpt-4o-mini-2024-07-18:org::id`` → the snapshot)."""
    name = model.split(":")[1] if model.startswith("ft:") else model
    if name.startswith("gpt-3.5-turbo"):
        return "gpt-3.5-turbo"
    return OPENAI_ALIASES.get(name, name)


def price_of(model: str) -> ModelPrice | None:
    """The price row of a model (fine-tuned names resolve to their base), or None."""
    return PRICES.get(base_model_of(model))


def default_epochs(n_examples: int) -> int:
    """The number of epochs OpenAI's "auto" is expected to pick (the cookbook's heuristic)."""
    return openai_epochs(max(n_examples, 1))


def training_cost(model: str, trained_tokens: int) -> float | None:
    """USD for ``trained_tokens`` trained tokens of ``model``; None when the model is not priced per token."""
    price = price_of(model)
    if price is None or price.training is None:
        return None
    return price.training * trained_tokens / 1_000_000


def inference_cost(model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
    """USD for a number of prompt and completion tokens on a fine-tuned model (Batch prices with ``batch``)."""
    price = price_of(model)
    if price is None:
        return None
    inp = price.batch_input if batch and price.batch_input is not None else price.input
    out = price.batch_output if batch and price.batch_output is not None else price.output
    if batch and price.batch_input is None:
        inp, out = price.input / 2, price.output / 2  # Batch is documented as 50% of the synchronous price
    return (inp * prompt_tokens + out * completion_tokens) / 1_000_000
