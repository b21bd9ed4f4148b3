"""Model references: ``BACKEND:MODEL`` as written on the command line, and what a model name means.

A model is named the same way everywhere (``validate --target``, ``stats --target``, ``eval
--base``, a job's ``model``): ``hf:smollm2-135m``, ``hf:./my-model``, ``openai:gpt-4.1-mini``,
``remote:smollm2-135m``. Which names a backend accepts (its default models, their aliases, local
folders) is the backend's business, so each name is resolved by the backend it is written for,
through :meth:`ftkit.backend.Backend.model_target`: one resolver per backend, used by every
command. ``openai`` rules live in core (``ftkit.data.targets``) so that data can be checked
against them without the openai backend installed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ftkit.errors import BackendNotFoundError, ConfigError


class ModelRef(BaseModel):
    """A parsed ``BACKEND[:MODEL]``.

    Attributes:
        backend: the backend name (``hf``, ``openai``, ``remote``, a plugin's name).
        model: the model as written, or None for the backend's default.
    """

    model_config = ConfigDict(frozen=True)

    backend: str = Field(description="Backend name before the first colon.")
    model: str | None = Field(default=None, description="The model after the colon; None for the default.")

    def __str__(self) -> str:
        return f"{self.backend}:{self.model or 'default'}"


def parse_model_ref(ref: str) -> ModelRef:
    """Split ``BACKEND[:MODEL]`` (``hf:smollm2-135m``, ``openai``).

    Raises:
        ConfigError: the backend part is empty.
    """
    backend, _, model = ref.strip().partition(":")
    if not backend:
        raise ConfigError(f"model reference {ref!r} names no backend: write BACKEND:MODEL, e.g. hf:smollm2-135m")
    return ModelRef(backend=backend, model=model or None)


def resolve_target(target: str) -> str:
    """The validation target a ``BACKEND:MODEL`` reference stands for, its aliases resolved.

    ``hf:smollm2-135m`` becomes ``hf:<the converted model's folder>``, ``remote:smollm2-135m`` the
    same (the remote backend runs the hf trainer), ``openai:gpt-4o-mini`` the dated model. A
    reference whose backend is not installed is returned as written: the core rules
    (``openai:``, ``hf:<folder>``) still apply to it.

    Raises:
        ConfigError: the backend is installed and does not know the model (its message says why
            and what would fix it), or the backend is unknown and has no core rules.
    """
    from ftkit.backend import get_backend, installed_backends

    ref = parse_model_ref(target)
    if ref.backend == "openai" and ref.model:
        # The core table the openai backend's hook reads too; answered here so that checking data
        # against OpenAI's rules never imports the openai SDK (a second on every `validate`).
        from ftkit.data.targets import OPENAI_ALIASES

        return f"openai:{OPENAI_ALIASES.get(ref.model, ref.model)}"
    if ref.model is None or ref.backend not in installed_backends():
        if ref.backend in ("openai", "hf"):
            return target
        raise ConfigError(f"unknown target {target!r}: expected openai:<model>, hf:<model or folder> or BACKEND:MODEL")
    try:
        backend = get_backend(ref.backend)
    except BackendNotFoundError:
        if ref.backend in ("openai", "hf"):
            return target
        raise
    resolved = backend.model_target(ref.model)
    if resolved is None:
        raise ConfigError(f"backend {ref.backend!r} has no data rules for models; validate without --target")
    return resolved
