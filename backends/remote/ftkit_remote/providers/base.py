"""The one interface every GPU provider sits behind, and the shapes it speaks in.

A provider can search offers, create an instance from one, report the instance's state in
ftkit's own :class:`InstanceState` (each provider maps its vendor strings through an explicit
table, checked for exhaustiveness by the tests), list the instances that carry ftkit's label,
and destroy one. Destroy is idempotent: "not found" is success.

Errors (all :class:`ftkit.errors.FtkitError`)::

    APIError
    ├── ProviderError                 the provider refused or failed a call
    │   ├── CapacityError             no machine for this offer now: try the next offer
    │   │   └── OfferGoneError        the offer vanished between search and create (vast)
    │   └── ProvisioningFailed        an instance exists but cannot be used: carries its id, destroy it
    └── RateLimitError                429 after the retries (ftkit's)
    AuthenticationError / QuotaExceededError (ftkit's): never retried
"""

from __future__ import annotations

import builtins  # `list` is also a method name of Provider
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ftkit.errors import APIError

LABEL_PREFIX = "ftkit-"
"""Every instance ftkit creates carries a label (vast ``label``, RunPod/Lambda ``name``) starting with this."""


class InstanceState(enum.StrEnum):
    """Where an instance is in its life, the same for every provider."""

    PENDING = "pending"  # accepted, not yet placed or booting
    STARTING = "starting"  # image pulling / booting / container not yet running
    RUNNING = "running"  # the provider says running (SSH may still be coming up)
    STOPPED = "stopped"  # exists but not running (outbid, exited, stopped): still bills storage
    FAILED = "failed"  # the provider gave up on it (offline, OCI error, unhealthy)
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"  # a vendor status the table does not know: never treated as running

    @property
    def is_gone(self) -> bool:
        """True once the instance no longer exists (nor bills)."""
        return self is InstanceState.TERMINATED


class Tier(enum.StrEnum):
    """On-demand machines keep running; interruptible (spot/bid) ones may be taken away."""

    ON_DEMAND = "on_demand"
    INTERRUPTIBLE = "interruptible"


@dataclass(frozen=True)
class OfferQuery:
    """What the job needs from a machine. Providers ignore what they cannot filter on."""

    gpu_names: tuple[str, ...] = ()
    num_gpus: int = 1
    min_gpu_ram_gb: float | None = None
    max_price_per_hour: float | None = None
    min_reliability: float | None = None
    disk_gb: int = 50
    regions: tuple[str, ...] = ()
    tier: Tier = Tier.ON_DEMAND
    limit: int = 20


@dataclass(frozen=True)
class Offer:
    """One machine (vast) or machine type (RunPod, Lambda) that could be rented now.

    ``price_per_hour`` is the total for the whole instance at the requested disk size, in USD.
    """

    provider: str
    offer_id: str
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float
    price_per_hour: float
    disk_gb: float | None = None
    reliability: float | None = None
    region: str | None = None
    availability: str | None = None
    tier: Tier = Tier.ON_DEMAND
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (without the raw vendor record)."""
        return {
            "provider": self.provider,
            "offer_id": self.offer_id,
            "gpu_name": self.gpu_name,
            "num_gpus": self.num_gpus,
            "gpu_ram_gb": self.gpu_ram_gb,
            "price_per_hour": self.price_per_hour,
            "disk_gb": self.disk_gb,
            "reliability": self.reliability,
            "region": self.region,
            "tier": self.tier.value,
        }


@dataclass(frozen=True)
class SshEndpoint:
    """Where to SSH into an instance."""

    host: str
    port: int
    user: str


@dataclass(frozen=True)
class Instance:
    """An instance as the provider reports it, normalised."""

    provider: str
    instance_id: str
    label: str | None
    state: InstanceState
    raw_status: str | None = None
    message: str | None = None
    ssh: SshEndpoint | None = None
    price_per_hour: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LaunchSpec:
    """How to start the instance: the image, disk, label, SSH key and environment."""

    label: str
    ssh_public_key: str
    disk_gb: int = 50
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    onstart: str | None = None
    bid_per_hour: float | None = None


@dataclass(frozen=True)
class ProviderCaps:
    """What a provider can do, declared instead of discovered by failure."""

    can_stop: bool
    interruptible: bool
    self_destroy: bool  # an instance-scoped key lets the machine destroy itself (the dead-man switch)
    min_seconds_between_creates: float = 0.0
    ready_deadline_s: float = 1800.0
    rents: bool = True  # False for a host the user owns: nothing to destroy, nothing for gc


class ProviderError(APIError):
    """The provider refused or failed a call."""


class CapacityError(ProviderError):
    """No machine is available for this offer right now; another offer may work."""


class OfferGoneError(CapacityError):
    """The offer was taken between search and create."""


class ProvisioningFailed(ProviderError):
    """An instance was created but cannot be used; ``instance_id`` must be destroyed.

    Raised for "created but stopped" on vast, failures that still carry the new id, and
    instances that fail while booting.
    """

    def __init__(self, message: str, instance_id: str | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.instance_id = instance_id


class Provider(ABC):
    """A GPU provider: offers, create, state, list by label, destroy.

    Subclasses set ``name``, ``caps`` and ``state_table`` (vendor status → InstanceState) and
    implement the async methods. They never log or return the API key.
    """

    name: ClassVar[str]
    caps: ClassVar[ProviderCaps]
    state_table: ClassVar[Mapping[str | None, InstanceState]]
    vendor_statuses: ClassVar[tuple[str | None, ...]]
    """Every status the vendor documents; the exhaustiveness test checks ``state_table`` covers them."""

    @classmethod
    def map_state(cls, vendor_status: str | None) -> InstanceState:
        """The vendor status through the table; UNKNOWN (never RUNNING) for one the table lacks."""
        return cls.state_table.get(vendor_status, InstanceState.UNKNOWN)

    @abstractmethod
    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Offers matching the query, cheapest first."""

    @abstractmethod
    async def create(self, offer: Offer, spec: LaunchSpec) -> str:
        """Rent ``offer``; returns the instance id. Never retried blindly: reconcile by label instead.

        Raises:
            CapacityError: no capacity (OfferGoneError when the offer vanished); nothing was created.
            ProvisioningFailed: something was created but is unusable; destroy ``err.instance_id``.
        """

    @abstractmethod
    async def get(self, instance_id: str) -> Instance | None:
        """The instance, or None when the provider no longer knows it."""

    @abstractmethod
    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        """Live instances whose label starts with ``label_prefix``."""

    @abstractmethod
    async def destroy(self, instance_id: str) -> None:
        """Destroy the instance and stop all billing for it. Idempotent."""

    def self_destroy_command(self) -> builtins.list[str] | None:
        """argv that, run on the instance, destroys it with the instance-scoped key (None: not possible).

        The command reads the instance's own id and key from environment variables the provider
        injects, so no account key ever reaches the machine.
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release HTTP connections."""


def python_http_delete(url_template: str, key_env: str, id_envs: tuple[str, ...]) -> list[str]:
    """argv for a stdlib-only HTTP DELETE whose URL ids and Bearer key come from the machine's env.

    Used by the dead-man switch: the instance destroys itself with its own scoped key.
    """
    code = (
        "import os,urllib.request as u;"
        f"url={url_template!r}.format(**{{k: os.environ[k] for k in {list(id_envs)!r}}});"
        f"r=u.Request(url,method='DELETE',data=b'{{}}',headers={{'Authorization':'Bearer '+os.environ[{key_env!r}],"
        "'Content-Type':'application/json'});"
        "u.urlopen(r,timeout=30).read()"
    )
    return ["python3", "-c", code]
