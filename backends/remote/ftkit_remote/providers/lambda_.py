"""Lambda Cloud: whole VMs, REST under ``/api/v1``, ``{"data": ...}`` / ``{"error": {code, message}}``.

What the fact sheet says matters, and where it is handled here:

- offers come from ``GET /instance-types``, a dict keyed by type name; price is per instance, in cents;
  ``regions_with_capacity_available`` can disagree with launch, so ``insufficient-capacity`` at launch
  is a :class:`CapacityError` (try the next offer);
- launch is ``POST /instance-operations/launch`` with quantity 1 and exactly one SSH key **name**;
  at most one launch per 12 s (kept client-side, and 429 retried);
- statuses ``booting → active`` (``unhealthy`` = failed); terminate only (no stop, no spot);
- user ``ubuntu`` on port 22 of ``ip``; no instance-scoped key, so **no dead-man switch**: max_duration is
  enforced by the client and ``ftkit remote gc``.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import httpx
from pydantic import Field

from ftkit.backend import BackendConfig
from ftkit.errors import AuthenticationError, QuotaExceededError
from ftkit_remote.providers.base import (
    LABEL_PREFIX,
    CapacityError,
    Instance,
    InstanceState,
    LaunchSpec,
    Offer,
    OfferQuery,
    Provider,
    ProviderCaps,
    ProviderError,
    SshEndpoint,
)
from ftkit_remote.providers.http import HttpApi, MinInterval, RetryPolicy, json_or_text

S = InstanceState


class LambdaConfig(BackendConfig):
    """Options of the Lambda provider."""

    zero_allowed: ClassVar[dict[str, str]] = {
        "seconds_between_launches": "0 for a local emulator; Lambda itself allows one launch per 12 s",
    }

    api_key: str = Field(description="Lambda API key (env LAMBDA_API_KEY when empty).", repr=False)
    base_url: str = Field(default="https://cloud.lambda.ai/api/v1", description="API root.")
    ssh_port: int = Field(default=22, ge=1, le=65535, description="SSH port on the VM (22 on Lambda).")
    seconds_between_launches: float = Field(default=12.0, ge=0, description="Lambda allows one launch per 12 s.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of API calls.")


class LambdaProvider(Provider):
    """Lambda Cloud instances."""

    name: ClassVar[str] = "lambda"
    caps: ClassVar[ProviderCaps] = ProviderCaps(
        can_stop=False,
        interruptible=False,
        self_destroy=False,
        min_seconds_between_creates=12.0,
        ready_deadline_s=900.0,
    )
    vendor_statuses: ClassVar[tuple[str | None, ...]] = ("booting", "active", "unhealthy", "terminating", "terminated")
    state_table: ClassVar[dict[str | None, InstanceState]] = {
        "booting": S.STARTING,
        "active": S.RUNNING,
        "unhealthy": S.FAILED,
        "terminating": S.TERMINATING,
        "terminated": S.TERMINATED,
    }

    def __init__(self, config: LambdaConfig) -> None:
        self.config = config
        self._api = HttpApi("lambda", config.base_url, config.api_key, config.retry, _map_error)
        self._launch_gate = MinInterval(config.seconds_between_launches)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        data = (await self._api.request("GET", "/instance-types")).json()["data"]
        offers = []
        for type_name, entry in data.items():
            it = entry["instance_type"]
            specs = it.get("specs", {})
            gpus = int(specs.get("gpus", 0))
            price = it["price_cents_per_hour"] / 100
            gpu_name = it.get("gpu_description") or it.get("description", type_name)
            ram = _gpu_ram_gb(gpu_name)
            if gpus != query.num_gpus:
                continue
            if query.gpu_names and not any(n.lower() in (gpu_name + " " + type_name).lower() for n in query.gpu_names):
                continue
            if query.min_gpu_ram_gb is not None and ram is not None and ram < query.min_gpu_ram_gb:
                continue
            if query.max_price_per_hour is not None and price > query.max_price_per_hour:
                continue
            if specs.get("storage_gib") is not None and specs["storage_gib"] < query.disk_gb:
                continue
            for region in entry.get("regions_with_capacity_available", []):
                if query.regions and region["name"] not in query.regions:
                    continue
                offers.append(
                    Offer(
                        provider=self.name,
                        offer_id=f"{type_name}@{region['name']}",
                        gpu_name=gpu_name,
                        num_gpus=gpus,
                        gpu_ram_gb=ram or 0.0,
                        price_per_hour=price,
                        disk_gb=specs.get("storage_gib"),
                        region=region["name"],
                        availability="capacity",
                        raw=entry,
                    )
                )
        return sorted(offers, key=lambda o: o.price_per_hour)[: query.limit]

    async def create(self, offer: Offer, spec: LaunchSpec) -> str:
        key_name = await self._ensure_key(spec.ssh_public_key)
        type_name, _, region = offer.offer_id.partition("@")
        await self._launch_gate.wait()
        body = {
            "region_name": region,
            "instance_type_name": type_name,
            "ssh_key_names": [key_name],
            "file_system_names": [],
            "quantity": 1,
            "name": spec.label[:64],
        }
        try:
            resp = await self._api.request("POST", "/instance-operations/launch", json=body, idempotent=False)
        finally:
            self._launch_gate.mark()
        ids = resp.json()["data"]["instance_ids"]
        return str(ids[0])

    async def get(self, instance_id: str) -> Instance | None:
        resp = await self._api.request("GET", f"/instances/{instance_id}", ok=(404,))
        if resp.status_code == 404:
            return None
        return self._instance(resp.json()["data"])

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        data = (await self._api.request("GET", "/instances")).json()["data"]
        return [self._instance(r) for r in data if (r.get("name") or "").startswith(label_prefix)]

    async def destroy(self, instance_id: str) -> None:
        await self._api.request(
            "POST", "/instance-operations/terminate", json={"instance_ids": [instance_id]}, ok=(404,)
        )

    async def _ensure_key(self, public_key: str) -> str:
        """The name of a registered key with this public key, registering it under a hash name if needed."""
        keys = (await self._api.request("GET", "/ssh-keys")).json()["data"]
        for k in keys:
            if k.get("public_key", "").split()[:2] == public_key.split()[:2]:
                return str(k["name"])
        name = "ftkit-" + hashlib.sha1(public_key.encode()).hexdigest()[:12]
        await self._api.request("POST", "/ssh-keys", json={"name": name, "public_key": public_key})
        return name

    def _instance(self, r: dict[str, Any]) -> Instance:
        status = r.get("status")
        state = self.map_state(status)
        ssh = SshEndpoint(r["ip"], self.config.ssh_port, "ubuntu") if state is S.RUNNING and r.get("ip") else None
        it = r.get("instance_type") or {}
        return Instance(
            provider=self.name,
            instance_id=str(r["id"]),
            label=r.get("name"),
            state=state,
            raw_status=status,
            ssh=ssh,
            price_per_hour=it["price_cents_per_hour"] / 100 if "price_cents_per_hour" in it else None,
            raw=r,
        )


def _gpu_ram_gb(description: str) -> float | None:
    """GPU memory from a description like ``1x A10 (24 GB PCIe)``."""
    import re

    m = re.search(r"(\d+)\s*GB", description)
    return float(m.group(1)) if m else None


def _map_error(resp: httpx.Response) -> Exception:
    body = json_or_text(resp)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code, msg = err.get("code"), err.get("message") or str(body)
    if code == "instance-operations/launch/insufficient-capacity":
        return CapacityError(f"lambda: {msg}", resp.status_code, code)
    if code == "global/invalid-api-key" or (resp.status_code == 403 and code and "api-key" in code):
        return AuthenticationError(f"lambda: {msg}")
    if code == "global/quota-exceeded":
        return QuotaExceededError(f"lambda: {msg}")
    if code == "global/object-does-not-exist":
        return ProviderError(f"lambda: {msg}", resp.status_code, code)
    return ProviderError(f"lambda: HTTP {resp.status_code} {code}: {msg}", resp.status_code, code)
