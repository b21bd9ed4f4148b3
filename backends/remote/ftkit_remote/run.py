"""One remote run as a state machine whose state lives in ``ctx.state["remote"]`` (so any process resumes it).

::

    submit():  search offers ─ max_cost guard ─ lease written ─ create ─ wait until usable ─ ship ─ start
               (any exception, Ctrl-C or SIGTERM in here destroys the instance before re-raising)
    poll():    running ── follow events over SSH (reconnecting after a drop, from the saved offset)
                      ├─ worker ended ─ fetch adapter + log ─ destroy ─ verify gone ─ cost ─ done
                      ├─ max_duration passed ─ destroy ─ failed
                      └─ instance gone (dead-man switch, preemption) ─ failed
    cancel():  stop the worker ─ destroy ─ verify ─ cancelled

Phases: ``creating → provisioning → running → destroying → done``. The lease ledger is written before
create and closed only after the instance is verified gone, so a run killed at any point is found
again by ``ftkit remote gc``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ftkit.backend import ActualCost, CostEstimate, JobContext, PollResult
from ftkit.errors import APIError, AuthenticationError, BackendError, ConfigError, FtkitError, QuotaExceededError
from ftkit.events import Event, JobStatus
from ftkit_remote.config import RemoteConfig
from ftkit_remote.jobfolder import deadman_script, run_script, stage_job_folder
from ftkit_remote.leases import Lease, LeaseLedger, public_options
from ftkit_remote.providers import (
    LABEL_PREFIX,
    CapacityError,
    InstanceState,
    Offer,
    Provider,
    ProvisioningFailed,
    SshEndpoint,
    make_provider,
)
from ftkit_remote.ssh import HostKeyChanged, SshError, SshSession, connect, forget_host, load_or_create_key

_WORKER_STATUS = {
    "starting": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
_DEAD_STATES = (InstanceState.FAILED, InstanceState.STOPPED, InstanceState.TERMINATING, InstanceState.TERMINATED)
DEFAULT_WORKER = ["python", "-m", "ftkit_hf.worker", "run", "."]


class Unusable(ProvisioningFailed):
    """The machine answers but cannot run the job (no GPU, disk full): waiting will not help."""


class RemoteRun:
    """Drives one job on one rented machine. Build one per backend call; all state is in ``ctx.state``."""

    def __init__(self, ctx: JobContext, config: RemoteConfig, ledger: LeaseLedger | None = None) -> None:
        self.ctx = ctx
        self.config = config
        self.provider: Provider = make_provider(config.provider, config.provider_options)
        self.ledger = ledger or LeaseLedger()
        self.st: dict[str, Any] = ctx.state.setdefault("remote", {})
        self.label = LABEL_PREFIX + ctx.id
        self._key = load_or_create_key(Path(config.ssh_key_path).expanduser() if config.ssh_key_path else None)
        self.events: list[Event] = []

    async def aclose(self) -> None:
        """Release the provider's connections."""
        await self.provider.aclose()

    # ------------------------------------------------------------------ events

    def note(self, message: str, level: str = "info", kind: str = "message", **data: Any) -> None:
        """Record an event of the run itself (not of the worker)."""
        n = self.st["event_seq"] = int(self.st.get("event_seq", 0)) + 1
        self.events.append(Event(level=level, kind=kind, message=message, data=data, key=f"remote-{n}"))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ estimate

    def _hours(self) -> float:
        return self.config.setup_hours + self.config.estimated_train_hours

    async def _offers(self) -> list[Offer]:
        offers = await self.provider.search_offers(self.config.offer_query())
        if not offers:
            raise ConfigError(
                f"[remote] no {self.config.provider} offer matches gpu_names={self.config.gpu_names or 'any'}, "
                f"num_gpus={self.config.num_gpus}, max_price_per_hour={self.config.max_price_per_hour}, "
                f"disk_gb={self.config.disk_gb}"
            )
        return offers

    async def estimate(self) -> CostEstimate:
        """The cheapest matching offer × (setup + training hours)."""
        offer = (await self._offers())[0]
        hours = self._hours()
        self.st["estimate_offer"] = offer.to_json()
        return CostEstimate(
            usd=round(offer.price_per_hour * hours, 4),
            hours=hours,
            assumptions=[
                f"{self.config.provider} offer {offer.offer_id}: {offer.num_gpus}× {offer.gpu_name} "
                f"at ${offer.price_per_hour:.4f}/h (disk {self.config.disk_gb} GB included)",
                f"{self.config.setup_hours} h boot/upload/download + {self.config.estimated_train_hours} h training "
                "(set estimated_train_hours)",
                f"the machine is destroyed after {self._max_duration_s() / 3600:.2f} h whatever happens",
            ],
        )

    def _max_duration_s(self, price: float | None = None) -> float:
        limit = self.config.max_duration_hours * 3600
        if self.ctx.spec.max_cost is not None and price:
            limit = min(limit, self.ctx.spec.max_cost / price * 3600)  # never bill past max_cost
        return limit

    # ------------------------------------------------------------------ submit

    async def submit(self) -> str:
        """Rent, wait until usable, ship, start. Destroys the machine if anything in here fails."""
        custom = self.config.worker_command is not None
        stage, model_dir = stage_job_folder(self.ctx, self.config.hf, custom)  # bad data fails before renting
        offers = await self._offers()
        best = offers[0]
        if self.ctx.spec.max_cost is not None and best.price_per_hour * self._hours() > self.ctx.spec.max_cost:
            raise ConfigError(
                f"[remote] cheapest offer now ${best.price_per_hour:.4f}/h × {self._hours():.2f} h exceeds "
                f"max_cost ${self.ctx.spec.max_cost:.2f}"
            )
        deadline = time.time() + self._max_duration_s(best.price_per_hour)
        self.ledger.open(
            Lease(label=self.label, job_id=self.ctx.id, provider=self.provider.name, deadline=deadline,
                  provider_options=public_options(self.config.provider_options), offer=best.to_json())
        )  # fmt: skip
        self.st.update(label=self.label, deadline=deadline, phase="creating", events_offset=0, events_line=0)
        try:
            instance_id, offer = await self._create(offers)
            self.st.update(instance_id=instance_id, created_at=time.time(), price_per_hour=offer.price_per_hour,
                           offer=offer.to_json(), phase="provisioning")  # fmt: skip
            self.ledger.update(self.label, instance_id=instance_id, status="active",
                               price_per_hour=offer.price_per_hour, offer=offer.to_json())  # fmt: skip
            self.note(f"rented {offer.num_gpus}× {offer.gpu_name} ({self.provider.name} {instance_id}) "
                      f"at ${offer.price_per_hour:.4f}/h", offer=offer.to_json())  # fmt: skip
            endpoint, gpus = await self._wait_ready(instance_id)
            await self._ship_and_start(endpoint, gpus, stage, model_dir)
            self.ledger.update(self.label, started=True)
            self.st["phase"] = "running"
            return f"{self.provider.name}:{instance_id}"
        except BaseException as e:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt), errors: never leave it running
            why = "interrupted" if isinstance(e, KeyboardInterrupt | asyncio.CancelledError) else str(e)
            await asyncio.shield(self._teardown(f"setup failed: {why}"))
            if isinstance(e, FtkitError | KeyboardInterrupt | asyncio.CancelledError):
                raise
            raise BackendError(f"[remote] setup failed: {type(e).__name__}: {e}") from e

    async def _create(self, offers: list[Offer]) -> tuple[str, Offer]:
        tried: list[str] = []
        for offer in offers[: self.config.max_offers_tried]:
            spec = self._launch_spec()
            try:
                return await self.provider.create(offer, spec), offer
            except ProvisioningFailed as e:  # something exists: destroy it before trying the next offer
                tried.append(f"{offer.offer_id}: {e}")
                self.note(f"offer {offer.offer_id} failed after create: {e}; destroying it", level="warning")
                if e.instance_id:
                    await self._destroy_verified(e.instance_id)
            except CapacityError as e:
                tried.append(f"{offer.offer_id}: {e}")
                self.note(f"offer {offer.offer_id} unavailable: {e}", level="warning")
            except (AuthenticationError, QuotaExceededError):
                raise
            except APIError as e:
                # Create is not idempotent: an error may still have created something. Reconcile by label.
                found = [i for i in await self.provider.list(self.label) if i.label == self.label]
                if found:
                    self.note(f"create answered {e} but instance {found[0].instance_id} exists; using it",
                              level="warning")  # fmt: skip
                    for extra in found[1:]:
                        await self._destroy_verified(extra.instance_id)
                    return found[0].instance_id, offer
                raise
        raise CapacityError(f"[remote] no offer could be rented: {'; '.join(tried)}")

    def _launch_spec(self) -> Any:
        from ftkit_remote.providers import LaunchSpec
        from ftkit_remote.ssh import public_key_line

        return LaunchSpec(label=self.label, ssh_public_key=public_key_line(self._key), disk_gb=self.config.disk_gb,
                          env={"FTKIT_JOB_ID": self.ctx.id})  # fmt: skip

    async def _wait_ready(self, instance_id: str) -> tuple[SshEndpoint, int]:
        """Provider says running, SSH answers, GPU visible, disk free — or ProvisioningFailed at the deadline."""
        limit = self.config.ready_timeout_s or self.provider.caps.ready_deadline_s
        deadline = time.monotonic() + limit
        last = "no answer yet"
        delay = min(1.0, self.config.poll_interval)
        while True:
            inst = await self.provider.get(instance_id)
            if inst is None:
                raise ProvisioningFailed(f"instance {instance_id} disappeared while booting", instance_id)
            if inst.state in _DEAD_STATES:
                raise ProvisioningFailed(
                    f"instance {instance_id} is {inst.state.value} while booting ({inst.raw_status}: {inst.message})",
                    instance_id,
                )
            if inst.state is InstanceState.UNKNOWN:
                self.note(f"unknown {self.provider.name} status {inst.raw_status!r}; still waiting", level="warning")
            if inst.state is InstanceState.RUNNING and inst.ssh is not None:
                try:
                    gpus = await self._probe(inst.ssh, instance_id)
                    self.st["endpoint"] = {"host": inst.ssh.host, "port": inst.ssh.port, "user": inst.ssh.user}
                    return inst.ssh, gpus
                except HostKeyChanged:
                    raise
                except Unusable:
                    raise
                except SshError as e:
                    last = f"ssh: {e}"
            else:
                last = f"{inst.state.value} ({inst.raw_status})"
            if time.monotonic() > deadline:
                raise ProvisioningFailed(
                    f"instance {instance_id} not usable after {limit:.0f} s (last: {last})", instance_id
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max(self.config.poll_interval, 1.0))

    async def _probe(self, endpoint: SshEndpoint, instance_id: str) -> int:
        """SSH works, the GPUs show, the disk has room. Returns the GPU count."""
        async with connect(endpoint, self._key, timeout=15) as s:
            r = await s.run(
                "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; echo '--ftkit--'; "
                "mkdir -p " + self.config.remote_dir + " && df -Pk " + self.config.remote_dir + " | tail -1",
                timeout=60,
            )
        gpu_part, _, df_part = r.stdout.partition("--ftkit--")
        gpus = [ln for ln in gpu_part.splitlines() if ln.strip()]
        if self.config.require_gpu and not gpus:
            raise Unusable(f"instance {instance_id}: nvidia-smi shows no GPU", instance_id)
        try:
            free_gb = int(df_part.split()[3]) / 1024 / 1024
        except (IndexError, ValueError):
            free_gb = float("inf")  # no df: do not refuse the machine for that
        if free_gb < self.config.min_free_disk_gb:
            raise Unusable(
                f"instance {instance_id}: only {free_gb:.2f} GB free, {self.config.min_free_disk_gb} GB needed",
                instance_id,
            )
        if gpus:
            self.note(f"machine ready: {len(gpus)} GPU(s): {gpus[0].strip()}", gpus=[g.strip() for g in gpus])
        return len(gpus)

    async def _ship_and_start(self, endpoint: SshEndpoint, gpus: int, stage: Path, model_dir: Path | None) -> None:
        job = f"{self.config.remote_dir}/{self.ctx.id}"
        worker = list(self.config.worker_command or DEFAULT_WORKER)
        (stage / "ftkit_run.sh").write_text(run_script(worker, max(gpus, 1), self.config.launcher))
        destroy = self.provider.self_destroy_command() if self.config.deadman else None
        (stage / "ftkit_deadman.sh").write_text(
            deadman_script(destroy, self.st["deadline"], self.config.finished_grace_s, self.config.deadman_check_s)
        )
        if model_dir is not None and not self.config.ship_model:  # the same path must exist on the machine
            spec = json.loads((stage / "spec.json").read_text())
            (stage / "spec.json").write_text(json.dumps(spec | {"model_path": str(model_dir)}, indent=1))
        async with connect(endpoint, self._key) as s:
            await s.run(f"rm -rf {job}", check=True)
            await s.put(stage, job)
            if model_dir is not None and self.config.ship_model:
                await s.put(model_dir, f"{job}/base_model")
            if self.config.deadman:
                await s.run(_detached(f"{job}/ftkit_deadman.sh", f"{job}/deadman.log"), check=True)
            await s.run(_detached(f"{job}/ftkit_run.sh", f"{job}/worker.log"), check=True)
        self.st["remote_job"] = job
        self.note(f"worker started on the machine in ~/{job}" + (" with a dead-man switch" if destroy else ""))

    # ------------------------------------------------------------------ poll

    async def poll(self) -> PollResult:
        """Follow the worker; at its end fetch, destroy, verify, cost."""
        phase = self.st.get("phase")
        if phase == "done":
            return self._final()
        if phase in ("creating", "provisioning", None):
            return PollResult(status=JobStatus.QUEUED, backend_status=phase or "creating", events=self._take())
        if phase == "destroying":
            await self._teardown(self.st.get("final_reason", "finishing teardown"))
            return self._final()
        if time.time() > float(self.st["deadline"]):
            self.st["final"] = {"status": "failed", "error": "max_duration reached: the machine was destroyed"}
            self.note("max_duration reached: destroying the machine", level="error")
            await self._teardown("max_duration reached")
            return self._final()
        try:
            async with connect(self._endpoint(), self._key) as s:
                worker_events = await self._read_events(s)
                status = await self._read_json(s, "status.json") or {"status": "starting"}
                exit_code = (await s.read_from(f"{self.st['remote_job']}/exit_code", 0)).strip()
                vendor = status.get("status", "starting")
                if vendor in ("succeeded", "failed", "cancelled") or exit_code:
                    await self._finish(s, vendor, status, exit_code)
        except SshError as e:
            inst = await self.provider.get(str(self.st["instance_id"]))
            if inst is None or inst.state in _DEAD_STATES:
                self.st["final"] = {"status": "failed", "error": f"the machine is gone ({inst.state.value if inst else 'not found'}): "
                                    "preempted, destroyed by the dead-man switch, or by hand"}  # fmt: skip
                await self._teardown("machine gone")
                return self._final()
            self.note(f"lost the SSH connection ({e}); the job keeps running there, reconnecting next time",
                      level="warning")  # fmt: skip
            return PollResult(status=JobStatus.RUNNING, backend_status="disconnected", events=self._take())
        if self.st.get("phase") == "done":
            result = self._final()
            return result.model_copy(update={"events": worker_events + result.events})
        mapped = _WORKER_STATUS.get(vendor)
        if mapped is None:
            self.note(f"unknown worker status {vendor!r}", level="error")
            mapped = JobStatus.RUNNING
        return PollResult(status=mapped, backend_status=vendor, events=worker_events + self._take())

    async def _finish(self, s: SshSession, vendor: str, status: dict[str, Any], exit_code: bytes) -> None:
        job = self.st["remote_job"]
        workdir = self.ctx.workdir
        if vendor not in ("succeeded", "failed", "cancelled"):
            log = (await s.read_from(f"{job}/worker.log", 0))[-2000:].decode("utf-8", "replace")
            vendor, status = "failed", {"error": f"the worker exited ({exit_code.decode()}) without a status. Log tail:\n{log}"}
        if vendor == "succeeded":
            await s.get(f"{job}/model", workdir / "model")
            await s.get(f"{job}/spec.json", workdir / "remote_spec.json")
            self.note(f"adapter fetched to {workdir / 'model'}")
        try:
            await s.get(f"{job}/worker.log", workdir / "worker.log")
        except SshError:
            pass
        self.st["final"] = {"status": vendor, "error": status.get("error")}
        await self._teardown(f"worker {vendor}")

    async def _read_events(self, s: SshSession) -> list[Event]:
        offset, line_no = int(self.st.get("events_offset", 0)), int(self.st.get("events_line", 0))
        chunk = await s.read_from(f"{self.st['remote_job']}/events.jsonl", offset)
        end = chunk.rfind(b"\n") + 1  # complete lines only; a half-written one is read next time
        out = []
        for raw in chunk[:end].splitlines():
            line_no += 1
            try:
                obj = json.loads(raw)
                out.append(Event(time=obj.get("time", time.time()), level=obj.get("level", "info"),
                                 kind=obj.get("kind", "message"), message=obj.get("message", ""),
                                 data=obj.get("data") or {}, key=f"line-{line_no}"))  # fmt: skip
            except (ValueError, TypeError):
                out.append(Event(level="warning", message=f"unreadable event line {line_no}", key=f"line-{line_no}"))
        self.st["events_offset"], self.st["events_line"] = offset + end, line_no
        return out

    async def _read_json(self, s: SshSession, name: str) -> dict[str, Any] | None:
        raw = await s.read_from(f"{self.st['remote_job']}/{name}", 0)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None  # caught mid-write by a non-atomic writer: read again next time

    def _endpoint(self) -> SshEndpoint:
        e = self.st["endpoint"]
        return SshEndpoint(e["host"], int(e["port"]), e["user"])

    def _take(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    def _final(self) -> PollResult:
        final = self.st.get("final") or {"status": "failed", "error": "the run ended without a status"}
        status = _WORKER_STATUS.get(final["status"], JobStatus.FAILED)
        cost = self.st.get("actual_cost")
        actual = ActualCost(**cost) if cost else None
        model = str(self.ctx.workdir / "model") if status is JobStatus.SUCCEEDED else None
        return PollResult(status=status, backend_status=final["status"], events=self._take(), model=model,
                          actual_cost=actual, error=final.get("error"))  # fmt: skip

    # ------------------------------------------------------------------ cancel and teardown

    async def cancel(self) -> None:
        """Stop the worker (it writes ``cancelled``), fetch what it wrote, destroy the machine."""
        if self.st.get("phase") == "done":
            return
        if self.st.get("endpoint") and self.st.get("remote_job"):
            job = self.st["remote_job"]
            try:
                async with connect(self._endpoint(), self._key, timeout=10) as s:
                    await s.run(f'kill -TERM -- -"$(cat {job}/worker.pid)" 2>/dev/null; sleep 1', timeout=30)
                    self.events += await self._read_events(s)
            except SshError as e:
                self.note(f"could not reach the machine to stop the worker ({e}); destroying it anyway",
                          level="warning")  # fmt: skip
        self.st["final"] = {"status": "cancelled", "error": None}
        await self._teardown("cancelled")

    async def _teardown(self, reason: str) -> None:
        """Destroy (by id, or by label when the id was never learned), verify, cost, close the lease."""
        self.st["phase"], self.st["final_reason"] = "destroying", reason
        self.st.setdefault("final", {"status": "failed", "error": reason})
        lease = self.ledger.get(self.label)
        if lease is not None and lease.status != "released":
            self.ledger.update(self.label, status="destroying", note=reason)
        ids: list[str] = []
        if self.provider.caps.rents:
            ids = [str(self.st["instance_id"])] if self.st.get("instance_id") else []
            if not ids:  # killed between create and learning the id: find it by label
                ids = [i.instance_id for i in await self.provider.list(self.label) if i.label == self.label]
        else:
            await self._stop_on_own_host()
        gone = True
        for iid in ids:
            gone = await self._destroy_verified(iid) and gone
        if self.st.get("endpoint"):
            forget_host(self._endpoint())
        if not gone:
            self.note(f"could not verify that {ids} is gone: run `ftkit remote gc`", level="error")
            return  # the lease stays open for gc
        created = self.st.get("created_at")
        price = float(self.st.get("price_per_hour") or 0.0)
        if created is not None:
            hours = (time.time() - float(created)) / 3600
            self.st["actual_cost"] = {"usd": round(price * hours, 6), "hours": hours,
                                      "source": f"${price:.4f}/h × time from create to verified destroy (upper bound)"}  # fmt: skip
            self.note(f"machine destroyed ({reason}); cost ${price * hours:.4f}", kind="cost",
                      usd=price * hours, hours=hours)  # fmt: skip
        if lease is not None:
            self.ledger.release(self.label, (self.st.get("actual_cost") or {}).get("usd"), reason)
        self.st["phase"] = "done"

    async def _stop_on_own_host(self) -> None:
        """On a host the user owns nothing is destroyed: stop our worker and dead-man switch only."""
        if not (self.st.get("endpoint") and self.st.get("remote_job")):
            return
        job = self.st["remote_job"]
        try:
            async with connect(self._endpoint(), self._key, timeout=10) as s:
                await s.run(f'for f in worker.pid deadman.pid; do [ -f {job}/$f ] && kill -TERM -- -"$(cat {job}/$f)"'
                            " 2>/dev/null; done; true", timeout=30)  # fmt: skip
        except SshError:
            pass

    async def _destroy_verified(self, instance_id: str, timeout: float = 120.0) -> bool:
        """Destroy and wait until the provider no longer reports the instance (True) or give up (False)."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                await self.provider.destroy(instance_id)
                inst = await self.provider.get(instance_id)
                if inst is None or inst.state is InstanceState.TERMINATED:
                    return True
            except (APIError, BackendError) as e:
                self.note(f"destroy of {instance_id} failed: {e}; retrying", level="warning")
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _detached(script: str, log: str) -> str:
    """A command line that starts ``script`` in its own session, holding none of the SSH channel's pipes.

    (``cd X && cmd &`` would background a subshell that keeps stdout open, and the exec would never end.)
    """
    return f"setsid nohup bash {script} > {log} 2>&1 < /dev/null &"
