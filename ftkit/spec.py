"""JobSpec: what to fine-tune, on which data, with which settings.

A spec is built in Python or read from a TOML/YAML file with one section per backend, so
the same file switches backends with ``--backend NAME``::

    task = "classification"
    train = "data/train.jsonl"
    validation = "data/val.jsonl"
    labels = ["ham", "spam"]
    backend = "hf"

    [hyperparameters]
    epochs = 2
    seed = 0

    [hf]                      # options of the hf backend (its config model validates them)
    model = "smollm2-135m"
    lora_r = 16

    [openai]
    model = "gpt-4.1-mini-2025-04-14"
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftkit.errors import ConfigError

Task = Literal["chat", "classification", "completion", "preference", "text"]

# Keys of a backend section that belong to the spec rather than to the backend's options.
_SPEC_KEYS_IN_SECTIONS = ("model", "hyperparameters")


class Hyperparameters(BaseModel):
    """Training settings every backend understands. ``None`` means "the backend's default"."""

    # inf or nan would train an adapter of NaNs; refuse them with the field's name instead.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int | None = Field(default=None, ge=1, le=100, description="Passes over the training data.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Absolute learning rate for local backends; OpenAI takes it as learning_rate_multiplier.",
    )
    batch_size: int | None = Field(default=None, ge=1, le=4096, description="Examples per optimizer step.")
    seed: int = Field(default=0, ge=0, le=2_147_483_647, description="Seed for data order and initialisation.")


class JobSpec(BaseModel):
    """A fine-tuning job, independent of the backend that runs it.

    Attributes:
        task: chat, classification, completion, preference or text (unlabelled text: domain adaptation).
        model: base model; None lets the backend pick its default.
        train: the training JSONL file.
        validation: an optional validation JSONL file.
        allow_overlap: accept a validation file that shares inputs with the training file; by default
            the job is refused (the leakage guard), and the overlap is recorded in the manifest either way.
        labels: the label vocabulary for classification (inferred from the data when None).
        hyperparameters: epochs, learning rate, batch size, seed.
        backend: the backend a file selects by default.
        backend_options: one dict per backend name, validated by that backend's config model.
    """

    model_config = ConfigDict(extra="forbid")

    task: Task = Field(description="chat | classification | completion | preference | text.")
    model: str | None = Field(default=None, description="Base model; None means the backend's default.")
    train: Path = Field(description="Training data, JSONL.")
    validation: Path | None = Field(default=None, description="Validation data, JSONL.")
    allow_overlap: bool = Field(
        default=False,
        description="Accept validation examples whose input is also in the training data (recorded in the manifest).",
    )
    labels: list[str] | None = Field(default=None, description="Label vocabulary for classification.")
    preamble: str | None = Field(
        default=None, description="System prompt used when classification data is turned into chat."
    )
    suffix: str | None = Field(default=None, max_length=64, description="Name suffix for the fine-tuned model.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    max_cost: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Refuse to start above this estimate (USD)."
    )
    backend: str | None = Field(default=None, description="Backend used when none is named.")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-backend options, keyed by backend name."
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) < 2:
                raise ValueError("labels needs at least two classes")
            if len(set(v)) != len(v):
                raise ValueError("labels contains duplicates")
        return v

    @classmethod
    def from_file(cls, path: str | Path, backend: str | None = None) -> JobSpec:
        """Read a spec from a TOML or YAML file.

        Relative data paths are resolved against the file's folder. Every top-level table
        other than ``hyperparameters`` and ``backend_options`` is a backend section.

        Args:
            path: ``ftkit.toml``, ``ftkit.yaml`` or ``ftkit.yml``.
            backend: select this backend (overrides the file's ``backend`` key).

        Raises:
            ConfigError: the file is missing, not UTF-8, unparsable, holds an unknown key, or a
                section that names no installed backend and no known table (with a "did you mean").
        """
        p = Path(path)
        raw = _read_config(p)
        known = set(cls.model_fields)
        top: dict[str, Any] = {}
        given = raw.pop("backend_options", {}) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{p}: backend_options must be a table of backend sections")
        options: dict[str, dict[str, Any]] = dict(given)
        for key, value in raw.items():
            if key in known:
                top[key] = value
            elif isinstance(value, dict):
                options[key] = value
            else:
                raise ConfigError(f"{p}: unknown key {key!r} (expected one of {sorted(known)} or a backend section)")
        _check_sections(p, options)
        top["backend_options"] = options
        for field in ("train", "validation"):
            if isinstance(top.get(field), str):
                f = Path(top[field]).expanduser()
                top[field] = f if f.is_absolute() else (p.parent / f)
        if backend is not None:
            top["backend"] = backend
        try:
            return cls.model_validate(top)
        except ValidationError as e:
            raise ConfigError(f"{p}: {_first_error(e)}") from None

    def for_backend(self, name: str) -> tuple[JobSpec, dict[str, Any]]:
        """The spec as one backend sees it, and that backend's raw options.

        A backend section may override ``model`` and individual ``hyperparameters``; the rest
        of the section is returned as options for the backend's config model to validate.

        Raises:
            ConfigError: a section names no installed or known backend and no known table (with a
                "did you mean"), or its hyperparameters are invalid.
        """
        _check_sections(None, self.backend_options)  # a spec built in Python, at create/estimate time
        section = dict(self.backend_options.get(name, {}))
        updates: dict[str, Any] = {"backend": name}
        if "model" in section:
            updates["model"] = section.pop("model")
        if "hyperparameters" in section:
            merged = self.hyperparameters.model_dump() | dict(section.pop("hyperparameters"))
            try:
                updates["hyperparameters"] = Hyperparameters.model_validate(merged)
            except ValidationError as e:
                raise ConfigError(f"[{name}.hyperparameters]: {_first_error(e)}") from None
        return self.model_copy(update=updates), section


# Tables of a config file that are neither spec fields nor backend sections.
KNOWN_TABLES = ("costs",)


def _read_config(p: Path) -> dict[str, Any]:
    from ftkit.data.reader import require_file

    require_file(p, ConfigError, missing="config file not found")
    if p.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{p}: expected a .toml, .yaml or .yml file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else (yaml.safe_load(text) or {})
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot parse: {_one_line(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{p}: cannot parse: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a table of keys")
    return data


def _check_sections(p: Path | None, sections: dict[str, dict[str, Any]]) -> None:
    """Every backend section names an installed or known backend, or a known table; else "did you mean"."""
    from ftkit.backend import INSTALL_HINTS, installed_backends

    if all(name in INSTALL_HINTS or name in KNOWN_TABLES for name in sections):
        return  # the usual case, without reading the entry points
    backends = sorted(set(installed_backends()) | set(INSTALL_HINTS))
    valid = [*backends, *KNOWN_TABLES]
    for name in sections:
        if name in valid:
            continue
        msg = f"{p}: " if p is not None else ""
        msg += f"[{name}] names no installed backend and no known table"
        close = difflib.get_close_matches(name, [*valid, "hyperparameters"], n=1)
        if close:
            msg += f"; did you mean [{close[0]}]?"
        raise ConfigError(f"{msg} (backends: {', '.join(backends)}; tables: {', '.join(KNOWN_TABLES)})")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "spec"
    return f"{where}: {err['msg']}"
