"""The Backend ABC every backend implements, and the lazy entry-point registry that finds them.

A backend is a distribution (``ftkit-hf``, ``ftkit-openai``...) that registers a class under
the entry-point group ``ftkit.backends``::

    [project.entry-points."ftkit.backends"]
    hf = "ftkit_hf.backend:HFBackend"

Listing backends reads entry-point metadata only: torch or openai are imported when a
backend is first used. ``FTKIT_BACKENDS=hf,openai`` limits which ones load (tests use it).
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ftkit.errors import BackendNotFoundError, ConfigError
from ftkit.events import Event, JobStatus
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ftkit.costs.rows import CostRow, EstimateWork
    from ftkit.data.targets import Target

ENTRY_POINT_GROUP = "ftkit.backends"


class BackendConfig(BaseModel):
    """Base of every backend's options model. Unknown keys are errors, naming the backend.

    Numbers must be finite: ``inf`` and ``nan`` are refused for every option of every backend
    (``inf`` hours would never stop a rented machine, and ``nan`` compares false with every limit).
    A numeric option is a limit, so it must also be above zero (``Field(gt=0)`` or ``ge=1``), unless
    it is named in :attr:`zero_allowed` with the reason 0 means something there. A test walks every
    installed backend's model and holds each one to this.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    zero_allowed: ClassVar[dict[str, str]] = {}
    """Numeric options for which 0 is a meaningful setting rather than a broken limit, each with why."""


class Capabilities(BaseModel):
    """What a backend can do, declared instead of raising NotImplementedError."""

    model_config = ConfigDict(frozen=True)

    tasks: frozenset[str] = frozenset({"chat", "classification", "completion"})
    supports_pause: bool = False
    supports_attach: bool = False
    supports_resume_from_checkpoint: bool = False
    supports_classification_head: bool = False
    needs_network: bool = False
    spends_money: bool = False
    poll_interval: float = 2.0

    def operations(self) -> list[str]:
        """The optional operations this backend supports, in words (``ftkit backends`` shows them)."""
        names = {
            "supports_pause": "pause/resume",
            "supports_resume_from_checkpoint": "resume from checkpoint",
            "supports_attach": "attach",
            "supports_classification_head": "classification head",
        }
        return [words for flag, words in names.items() if getattr(self, flag)]


class CostEstimate(BaseModel):
    """A backend's estimate of what a job will cost before it starts.

    ``usd_low``/``usd_high`` and ``hours_low``/``hours_high`` give a range when the speed behind the
    estimate is uncertain (noisy measurements, or none); None when the estimate is one number.
    ``epochs`` is how many passes over the data were priced, so rows of one comparison can be checked
    to price the same work.
    """

    usd: float
    hours: float | None = None
    billed_tokens: int | None = None
    assumptions: list[str] = []
    usd_low: float | None = None
    usd_high: float | None = None
    hours_low: float | None = None
    hours_high: float | None = None
    epochs: int | None = None


class ActualCost(BaseModel):
    """What a finished job really cost, and from what it was computed."""

    usd: float
    hours: float | None = None
    billed_tokens: int | None = None
    source: str = ""


class PollResult(BaseModel):
    """What one look at a running job found.

    ``events`` are the events new since the last poll (the backend keeps its cursor in
    ``JobContext.state``); the registry deduplicates by ``Event.key`` anyway.
    """

    status: JobStatus
    backend_status: str | None = None
    events: list[Event] = []
    model: str | None = None
    actual_cost: ActualCost | None = None
    error: str | None = None


@dataclass
class JobContext:
    """Everything a backend needs to act on one job; the registry persists ``state``.

    Attributes:
        id: ftkit's job id; also the idempotency key and the label on remote resources.
        spec: the spec as this backend sees it (``JobSpec.for_backend``).
        config: the backend's validated options.
        workdir: a folder owned by this job (data copies, worker files, artifacts).
        backend_job_id: the backend's own id once submitted.
        state: backend-private JSON state (cursors, file ids, pids, leases).
    """

    id: str
    spec: JobSpec
    config: BackendConfig
    workdir: Path
    backend_job_id: str | None = None
    state: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """A place where fine-tuning runs. Subclasses set the class attributes and five methods.

    Everything shared (validation, recording, status transitions, event storage, waiting,
    cost bookkeeping) lives in :class:`ftkit.FineTuneJob`, once.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[BackendConfig]] = BackendConfig
    capabilities: ClassVar[Capabilities] = Capabilities()

    def parse_config(self, options: dict[str, Any]) -> BackendConfig:
        """Validate this backend's options; an unknown or bad key names the backend."""
        try:
            return self.config_model.model_validate(options)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"[{self.name}] {where}: {err['msg']}") from None

    def default_model(self, task: str) -> str:
        """The model used when the spec names none."""
        raise ConfigError(f"backend {self.name!r} has no default model: set `model` in the spec")

    def validation_target(self, spec: JobSpec, config: BackendConfig) -> str | Target | None:
        """The target whose rules the training data must pass: a ``--target`` string (``openai:gpt-4.1-mini``,
        ``hf:<folder>``) or a :class:`ftkit.data.targets.Target` built by the backend."""
        return None

    def make_target(self, rest: str, labels: Sequence[str] | None, preamble: str | None) -> Target | None:
        """The validation target for ``<name>:<rest>`` (e.g. ``hf:<folder>``: the model's own tokenizer).

        Lets ``ftkit validate --target`` and job validation use this backend's tokenizer and rules while
        the core imports none of its libraries. None: this backend has no targets of its own.
        """
        return None

    def model_target(self, model: str) -> str | None:
        """The validation target of a model named on this backend, its aliases resolved.

        The one place a backend says what a model name means: ``ftkit validate --target
        BACKEND:MODEL`` and ``ftkit stats`` ask it (through :func:`ftkit.models.resolve_target`), so
        a name accepted by ``eval --base`` or a job's ``model`` is accepted there too.

        Returns:
            ``openai:<dated model>`` or ``hf:<local folder>``; None when no data rules are known.

        Raises:
            ConfigError: the backend does not know the model (say what would make it known).
        """
        return None

    def check(self, spec: JobSpec, config: BackendConfig) -> None:  # noqa: B027 - optional hook
        """Refuse, with a ConfigError or BackendUnavailableError, a job this backend cannot run."""

    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        """Estimate the cost before anything is spent; None when the backend cannot tell."""
        return None

    def planned_epochs(self, spec: JobSpec, config: BackendConfig) -> int | None:
        """The epochs this backend would train ``spec`` for when it sets none (None: no plan of its own).

        ``ftkit estimate`` prices every row for the same epochs: the spec's, else the first backend's plan.
        """
        return None

    def estimate_evaluation(self, ctx: JobContext, work: EstimateWork) -> CostEstimate | None:
        """What answering ``work.test`` with the trained model costs; None when the backend cannot tell.

        Name the tokens as evaluation tokens in the assumptions (``ftkit.costs.rows.as_evaluation``).
        """
        return None

    def estimate_rows(self, ctx: JobContext, work: EstimateWork) -> list[CostRow]:
        """This backend's rows in ``ftkit estimate``: its own estimate of the work, and any alternatives it
        prices from the catalogue (a remote backend: every GPU at every provider).

        ``ctx.spec`` already carries ``work.epochs``. The default is one row from :meth:`estimate`, plus
        :meth:`estimate_evaluation` when a test set is priced; none when :meth:`estimate` gives nothing.
        """
        from ftkit.costs.rows import row_from_estimate

        own = self.estimate(ctx)
        if own is None:
            return []
        row = row_from_estimate(self.name, str(ctx.spec.model or self.name), own)
        return [row.add_evaluation(self.estimate_evaluation(ctx, work) if work.test_tokens else None)]

    def describe(self) -> str:
        """One line for ``ftkit backends``: where it runs and whether it is usable here."""
        return "available"

    @abstractmethod
    def submit(self, ctx: JobContext) -> str:
        """Start the job (this is where money or compute is spent). Returns the backend's job id.

        Use ``ctx.id`` as the idempotency key / label, so a crash after submit can be reconciled.
        """

    def find_submitted(self, ctx: JobContext) -> str | None:
        """The backend job that an interrupted :meth:`submit` of this job created, found by ``ctx.id``.

        Called when a job is ``validating`` and the process that was submitting it is gone (killed,
        interrupted): the job is followed if the backend has it, and returns to ``created`` (to be started
        again) if not. Fill ``ctx.state`` as ``submit`` would have. The default finds nothing, so a backend
        without this look must make ``submit`` itself idempotent by ``ctx.id``.

        Returns:
            The backend's job id, or None when the backend has no job for ``ctx.id``.
        """
        return None

    @abstractmethod
    def poll(self, ctx: JobContext) -> PollResult:
        """Look at the job once: status, new events, the model reference once it exists."""

    @abstractmethod
    def cancel(self, ctx: JobContext) -> None:
        """Stop the job and release what it holds."""

    @abstractmethod
    def load_model(self, ctx: JobContext) -> Predictor:
        """A Predictor over the fine-tuned model of a succeeded job."""

    def pause(self, ctx: JobContext) -> None:
        """Pause the job (only where ``capabilities.supports_pause``)."""
        raise ConfigError(f"backend {self.name!r} cannot pause jobs")

    def resume(self, ctx: JobContext) -> None:
        """Resume a paused or interrupted job."""
        raise ConfigError(f"backend {self.name!r} cannot resume jobs")

    def attach(self, backend_job_id: str, config: BackendConfig) -> JobSpec:
        """Describe a job created outside ftkit, so it can be followed and evaluated."""
        raise ConfigError(f"backend {self.name!r} cannot attach to existing jobs")

    def base_model(self, model: str | None, config: BackendConfig) -> Predictor:
        """A Predictor over a base model, for zero-shot baselines."""
        raise ConfigError(f"backend {self.name!r} cannot serve base models")


@dataclass(frozen=True)
class BackendInfo:
    """An installed backend as the registry sees it, before it is imported."""

    name: str
    target: str
    distribution: str | None
    version: str | None


INSTALL_HINTS = {
    "hf": "pip install ftkit-hf",
    "openai": "pip install ftkit-openai",
    "remote": "pip install ftkit-remote",
}
_extra_backends: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Register a backend class in this process (tests and notebooks); entry points are the normal way."""
    _extra_backends[cls.name] = cls
    load_backend_class.cache_clear()
    return cls


def installed_backends() -> dict[str, BackendInfo]:
    """Backends installed through entry points (and registered in-process), without importing them."""
    allowed = {x.strip() for x in os.environ.get("FTKIT_BACKENDS", "").split(",") if x.strip()}
    found: dict[str, BackendInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        found[ep.name] = BackendInfo(ep.name, ep.value, dist.name if dist else None, dist.version if dist else None)
    for name, cls in _extra_backends.items():
        found[name] = BackendInfo(name, f"{cls.__module__}:{cls.__qualname__}", None, None)
    if allowed:
        found = {k: v for k, v in found.items() if k in allowed}
    return dict(sorted(found.items()))


@cache
def load_backend_class(name: str) -> type[Backend]:
    """Import and return the backend class registered under ``name``.

    Raises:
        BackendNotFoundError: with the installed names, a "did you mean" and the install line.
    """
    installed = installed_backends()
    if name in _extra_backends and name in installed:
        return _extra_backends[name]
    if name not in installed:
        msg = f"no backend named {name!r}; installed: {', '.join(installed) or 'none'}"
        close = difflib.get_close_matches(name, list(installed) + list(INSTALL_HINTS), n=1)
        if close and close[0] != name:
            msg += f"; did you mean {close[0]!r}?"
        if name in INSTALL_HINTS:
            msg += f"; install it with: {INSTALL_HINTS[name]}"
        raise BackendNotFoundError(msg)
    (ep,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == name][:1]
    try:
        cls = ep.load()
    except ImportError as e:
        hint = INSTALL_HINTS.get(name, f"reinstall {installed[name].distribution}")
        raise BackendNotFoundError(f"backend {name!r} is installed but cannot be imported ({e}); {hint}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendNotFoundError(f"entry point {name!r} ({ep.value}) is not an ftkit Backend")
    return cls


def get_backend(name: str) -> Backend:
    """An instance of the backend registered under ``name``."""
    return load_backend_class(name)()
