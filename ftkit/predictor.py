"""What a fine-tuned (or base) model offers once it is trained: the Predictor protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

UNPARSEABLE = "UNPARSEABLE"
"""The label given to an answer that matches none of the labels."""

Messages = list[dict[str, Any]]


class Classification(BaseModel):
    """One classified text.

    Attributes:
        label: the most probable label, or ``UNPARSEABLE``.
        probabilities: a probability for every label, summing to one over the labels.
        unparseable_mass: probability the model put on answers that are not a label
            (before renormalising); 0 where the backend scores labels exactly.
        raw: the model's raw answer where it generated one.
    """

    label: str
    probabilities: dict[str, float] = Field(default_factory=dict)
    unparseable_mass: float = 0.0
    raw: str | None = None


@runtime_checkable
class Predictor(Protocol):
    """A model that answers. Every backend's ``job.model()`` returns one.

    ``labels`` is the label vocabulary a classifier was trained with (None for generation).
    """

    labels: list[str] | None

    def generate(self, inputs: Sequence[str | Messages], *, max_new_tokens: int = 256, **kwargs: Any) -> list[str]:
        """Answer each prompt (a string) or conversation (a list of chat messages)."""
        ...

    def classify(self, texts: Sequence[str], *, labels: Sequence[str] | None = None) -> list[Classification]:
        """A label and a probability for every label, for each text."""
        ...
