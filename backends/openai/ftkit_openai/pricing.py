"""OpenAI fine-tuning prices (USD), dated and sourced, and the cost formulas.

This table is the openai backend's source of truth. Training is billed per token trained:
``training price per 1M × tokens in the training file × epochs`` (OpenAI's formula), and the
actual bill is ``trained_tokens`` (reported by the job when it ends) × the training price.
"""

from __future__ import annotations

from pydantic import BaseModel

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


PRICES: dict[str, ModelPrice] = {
    "gpt-4.1-2025-04-14": ModelPrice(training=25.0, input=3.0, cached_input=0.75, output=12.0, batch_input=1.5,
                                     batch_output=6.0),
    "gpt-4.1-mini-2025-04-14": ModelPrice(training=5.0, input=0.8, cached_input=0.2, output=3.2, batch_input=0.4,
                                          batch_output=1.6),
    "gpt-4.1-nano-2025-04-14": ModelPrice(training=1.5, input=0.2, cached_input=0.05, output=0.8, batch_input=0.1,
                                          batch_output=0.4),
    # The scraped batch row for gpt-4o ($2.225 / $12.50) is not half the standard price: left out (UNCERTAIN).
    "gpt-4o-2024-08-06": ModelPrice(training=25.0, input=3.75, cached_input=1.875, output=15.0),
    "gpt-4o-mini-2024-07-18": ModelPrice(training=3.0, input=0.3, cached_input=0.15, output=1.2, batch_input=0.15,
                                         batch_output=0.6),
    "gpt-3.5-turbo": ModelPrice(training=8.0, input=3.0, output=6.0, batch_input=1.5, batch_output=3.0),
    "davinci-002": ModelPrice(training=6.0, input=12.0, output=12.0),
    "babbage-002": ModelPrice(training=0.4, input=1.6, output=1.6),
    "o4-mini-2025-04-16": ModelPrice(training_per_hour=100.0, input=4.0, cached_input=1.0, output=16.0,
                                     batch_input=2.0, batch_output=8.0),
}
_ALIASES = {
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "o4-mini": "o4-mini-2025-04-16",
}

# The cookbook's default-epoch heuristic (Chat_finetuning_data_prep.ipynb).
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def base_model_of(model: str) -> str:
    """The priced base snapshot of a model name (``ft:gpt-4o-mini-2024-07-18:org::id`` → the snapshot)."""
    name = model.split(":")[1] if model.startswith("ft:") else model
    if name.startswith("gpt-3.5-turbo"):
        return "gpt-3.5-turbo"
    return _ALIASES.get(name, name)


def price_of(model: str) -> ModelPrice | None:
    """The price row of a model (fine-tuned names resolve to their base), or None."""
    return PRICES.get(base_model_of(model))


def default_epochs(n_examples: int) -> int:
    """The number of epochs OpenAI's "auto" is expected to pick (the cookbook's heuristic)."""
    n_epochs = TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // max(n_examples, 1))
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return n_epochs


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
