"""vast.ai: a marketplace of single machines, REST under ``/api/v0`` (and ``/api/v1`` for listing).

What the fact sheet says matters, and where it is handled here:

- search is ``POST /api/v0/bundles/`` with ``field: {op: value}`` filters; ``gpu_ram`` is in **MB**;
  ``allocated_storage`` makes ``dph_total`` the real hourly price at our disk size;
- create is ``PUT /api/v0/asks/{id}/`` → ``new_contract``; an offer may be gone (404/410
  ``no_such_ask``); a create can fail *and* carry ``new_contract`` (left stopped): that id is
  returned inside :class:`ProvisioningFailed` so the caller destroys it;
- ``actual_status`` may be null; outbid is ``cur_state == intended_status == next_state == "stopped"``;
  an OCI error shows in ``status_msg``;
- 429s come in plain text without ``Retry-After``: exponential backoff;
- the instance holds ``CONTAINER_ID`` / ``CONTAINER_API_KEY`` (a key that can only manage itself):
  the dead-man switch destroys the instance with it.
"""

from __future__ import annotations

import builtins  # `list` is also a method name of Provider
from typing import Any, ClassVar

import httpx
from pydantic import Field

from ftkit.backend import BackendConfig
from ftkit_remote.providers.base import (
    LABEL_PREFIX,
    CapacityError,
    Instance,
    InstanceState,
    LaunchSpec,
    Offer,
    OfferGoneError,
    OfferQuery,
    Provider,
    ProviderCaps,
    ProviderError,
    ProvisioningFailed,
    SshEndpoint,
    Tier,
    python_http_delete,
)
from ftkit_remote.providers.http import HttpApi, RetryPolicy, json_or_text

S = InstanceState


class VastConfig(BackendConfig):
    """Options of the vast.ai provider."""

    api_key: str = Field(description="vast.ai API key (env VAST_API_KEY when empty).", repr=False)
    base_url: str = Field(default="https://console.vast.ai", description="API root (env VAST_URL).")
    image: str = Field(
        default="pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime", description="Docker image the instance runs."
    )
    verified_only: bool = Field(default=True, description="Only verified hosts.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of API calls.")


class VastProvider(Provider):
    """vast.ai through its REST API."""

    name: ClassVar[str] = "vast"
    caps: ClassVar[ProviderCaps] = ProviderCaps(
        can_stop=True, interruptible=True, self_destroy=True, ready_deadline_s=1800.0
    )
    # actual_status values (fact sheet §1.4); None is "not yet known", a documented value.
    vendor_statuses: ClassVar[tuple[str | None, ...]] = (
        None, "created", "loading", "running", "restarting", "rebooting",
        "exited", "stopped", "frozen", "offline", "unknown",
    )  # fmt: skip
    state_table: ClassVar[dict[str | None, InstanceState]] = {
        None: S.PENDING,
        "created": S.PENDING,
        "loading": S.STARTING,
        "running": S.RUNNING,
        "restarting": S.STARTING,
        "rebooting": S.STARTING,
        "exited": S.STOPPED,
        "stopped": S.STOPPED,
        "frozen": S.STOPPED,
        "offline": S.FAILED,
        "unknown": S.UNKNOWN,
    }

    def __init__(self, config: VastConfig) -> None:
        self.config = config
        self._api = HttpApi("vast", config.base_url, config.api_key, config.retry, _map_error)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        body: dict[str, Any] = {
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "num_gpus": {"eq": query.num_gpus},
            "disk_space": {"gte": query.disk_gb},
            "direct_port_count": {"gte": 1},
            "order": [["dph_total", "asc"]],
            "type": "bid" if query.tier is Tier.INTERRUPTIBLE else "on-demand",
            "allocated_storage": query.disk_gb,
            "limit": query.limit,
        }
        if self.config.verified_only:
            body["verified"] = {"eq": True}
        if query.gpu_names:
            body["gpu_name"] = {"in": list(query.gpu_names)}
        if query.min_gpu_ram_gb is not None:
            body["gpu_ram"] = {"gte": query.min_gpu_ram_gb * 1000}  # the raw API counts MB
        if query.max_price_per_hour is not None:
            body["dph_total"] = {"lte": query.max_price_per_hour}
        if query.min_reliability is not None:
            body["reliability"] = {"gte": query.min_reliability}
        resp = await self._api.request("POST", "/api/v0/bundles/", json=body)
        offers = []
        for o in resp.json().get("offers", []):
            offers.append(
                Offer(
                    provider=self.name,
                    offer_id=str(o["id"]),
                    gpu_name=o.get("gpu_name", "?"),
                    num_gpus=int(o.get("num_gpus", 1)),
                    gpu_ram_gb=float(o.get("gpu_ram", 0)) / 1000,
                    price_per_hour=float(o["dph_total"]),
                    disk_gb=o.get("disk_space"),
                    reliability=o.get("reliability", o.get("reliability2")),
                    region=o.get("geolocation"),
                    tier=query.tier,
                    raw=o,
                )
            )
        return sorted(offers, key=lambda x: x.price_per_hour)

    async def create(self, offer: Offer, spec: LaunchSpec) -> str:
        await self._ensure_account_key(spec.ssh_public_key)
        body: dict[str, Any] = {
            "client_id": "me",
            "image": spec.image or self.config.image,
            "disk": spec.disk_gb,
            "label": spec.label,
            "runtype": "ssh_direct",
            "env": dict(spec.env),
            # Vast's ssh runtype puts logins in tmux and keeps env out of SSH sessions: undo both.
            "onstart": spec.onstart or "touch ~/.no_auto_tmux; env >> /etc/environment",
            "cancel_unavail": True,
            "target_state": "running",
        }
        if offer.tier is Tier.INTERRUPTIBLE:
            # Without a price a "bid" search silently rents on-demand (vast-cli PR #403).
            body["price"] = spec.bid_per_hour or offer.price_per_hour
        resp = await self._api.request(
            "PUT", f"/api/v0/asks/{offer.offer_id}/", json=body, idempotent=False, ok=(400, 404, 410)
        )
        data = json_or_text(resp)
        data = data if isinstance(data, dict) else {"msg": data}
        contract = data.get("new_contract")
        if resp.is_success and data.get("success", True) and contract:
            instance_id = str(contract)
            await self._attach_key(instance_id, spec.ssh_public_key)
            return instance_id
        msg = str(data.get("msg") or data.get("message") or data.get("error") or resp.text)
        if contract:  # created but failed (e.g. stopped on a low bid): the caller must destroy it
            raise ProvisioningFailed(f"vast: instance {contract} created but unusable: {msg}", str(contract))
        if data.get("error") == "no_such_ask" or resp.status_code in (404, 410):
            raise OfferGoneError(f"vast: offer {offer.offer_id} is no longer available: {msg}", resp.status_code)
        raise ProviderError(f"vast: create failed: {msg}", resp.status_code, data.get("error"))

    async def get(self, instance_id: str) -> Instance | None:
        resp = await self._api.request("GET", f"/api/v0/instances/{instance_id}/", params={"owner": "me"}, ok=(404,))
        if resp.status_code == 404:
            return None
        raw = resp.json().get("instances")
        return self._instance(raw) if raw else None

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        found: list[Instance] = []
        params: dict[str, Any] = {"limit": 25}
        while True:  # v1 pages hold at most 25
            data = (await self._api.request("GET", "/api/v1/instances/", params=params)).json()
            found += [self._instance(r) for r in data.get("instances", [])]
            if not data.get("next_token"):
                break
            params["after_token"] = data["next_token"]
        return [i for i in found if (i.label or "").startswith(label_prefix)]

    async def destroy(self, instance_id: str) -> None:
        resp = await self._api.request("DELETE", f"/api/v0/instances/{instance_id}/", json={}, ok=(404,))
        if resp.status_code == 404:
            return  # not_found / no_such_instance: already gone

    def self_destroy_command(self) -> builtins.list[str]:
        url = self.config.base_url.rstrip("/") + "/api/v0/instances/{CONTAINER_ID}/"
        return python_http_delete(url, "CONTAINER_API_KEY", ("CONTAINER_ID",))

    async def _ensure_account_key(self, public_key: str) -> None:
        # Duplicates are answered as errors by some versions: they are success for us.
        await self._api.request("POST", "/api/v0/ssh/", json={"ssh_key": public_key}, ok=(400, 409))

    async def _attach_key(self, instance_id: str, public_key: str) -> None:
        # The docs disagree on whether account keys reach new instances: attach it too.
        await self._api.request(
            "POST", f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": public_key}, ok=(400, 409)
        )

    def _instance(self, r: dict[str, Any]) -> Instance:
        status = r.get("actual_status")
        state = self.map_state(status)
        msg = r.get("status_msg")
        if msg and "OCI runtime create failed" in msg:
            state = S.FAILED
        elif r.get("cur_state") == r.get("intended_status") == r.get("next_state") == "stopped":
            state = S.STOPPED  # outbid / interrupted
        return Instance(
            provider=self.name,
            instance_id=str(r["id"]),
            label=r.get("label"),
            state=state,
            raw_status=status,
            message=msg,
            ssh=_ssh_endpoint(r) if state is S.RUNNING else None,
            price_per_hour=r.get("dph_total"),
            raw=r,
        )


def _ssh_endpoint(r: dict[str, Any]) -> SshEndpoint | None:
    """Direct SSH (public IP + mapped 22/tcp) when offered, else vast's proxy (``ssh_host:ssh_port``)."""
    ports = r.get("ports")
    if isinstance(ports, dict) and ports.get("22/tcp") and r.get("public_ipaddr"):
        return SshEndpoint(str(r["public_ipaddr"]).strip(), int(ports["22/tcp"][0]["HostPort"]), "root")
    if r.get("ssh_host") and r.get("ssh_port"):
        return SshEndpoint(str(r["ssh_host"]), int(r["ssh_port"]), "root")
    return None


def _map_error(resp: httpx.Response) -> Exception:
    data = json_or_text(resp)
    if isinstance(data, dict):
        msg = data.get("msg") or data.get("message") or data.get("error") or resp.text
        code = data.get("error")
    else:
        msg, code = data, None
    if resp.status_code == 400 and "capacity" in str(msg).lower():
        return CapacityError(f"vast: {msg}", 400, code)
    return ProviderError(f"vast: HTTP {resp.status_code}: {msg}", resp.status_code, code)
