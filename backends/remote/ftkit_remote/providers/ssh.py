"""A machine the user already has, reached over SSH: a provider with one offer and nothing to rent.

``create`` rents nothing (the id names the host), ``get`` always reports RUNNING at the configured
endpoint, ``list`` reports nothing (gc must never touch a host it did not create) and ``destroy``
is a no-op: the run still kills its own worker and may remove its folder on the host.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ftkit.backend import BackendConfig
from ftkit_remote.providers.base import (
    LABEL_PREFIX,
    Instance,
    InstanceState,
    LaunchSpec,
    Offer,
    OfferQuery,
    Provider,
    ProviderCaps,
    SshEndpoint,
)


class SshHostConfig(BackendConfig):
    """Options of the ``ssh`` provider: where the host is and what it has."""

    zero_allowed: ClassVar[dict[str, str]] = {
        "num_gpus": "0 is a CPU-only host",
        "price_per_hour": "0: a host you own costs nothing per hour",
    }

    host: str = Field(description="Host name or IP.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    user: str = Field(default="root", description="Login user.")
    gpu_name: str = Field(default="unknown", description="GPU model, for display and cost reports.")
    num_gpus: int = Field(default=1, ge=0, description="GPUs on the host (0: CPU only).")
    price_per_hour: float = Field(default=0.0, ge=0, description="What an hour of the host costs you, if anything.")


class SshHostProvider(Provider):
    """An existing host. Nothing is created or destroyed."""

    name: ClassVar[str] = "ssh"
    caps: ClassVar[ProviderCaps] = ProviderCaps(
        can_stop=False, interruptible=False, self_destroy=False, ready_deadline_s=300.0, rents=False
    )
    vendor_statuses: ClassVar[tuple[str | None, ...]] = ("configured",)
    state_table: ClassVar[dict[str | None, InstanceState]] = {"configured": InstanceState.RUNNING}

    def __init__(self, config: SshHostConfig) -> None:
        self.config = config

    @property
    def _id(self) -> str:
        return f"{self.config.user}@{self.config.host}:{self.config.port}"

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        c = self.config
        return [Offer(self.name, self._id, c.gpu_name, c.num_gpus, 0.0, c.price_per_hour)]

    async def create(self, offer: Offer, spec: LaunchSpec) -> str:
        return self._id

    async def get(self, instance_id: str) -> Instance | None:
        c = self.config
        return Instance(
            self.name,
            instance_id,
            None,
            InstanceState.RUNNING,
            "configured",
            ssh=SshEndpoint(c.host, c.port, c.user),
            price_per_hour=c.price_per_hour,
        )

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        return []

    async def destroy(self, instance_id: str) -> None:
        return None
