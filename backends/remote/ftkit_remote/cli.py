"""``ftkit remote ...``: look at offers and instances, and reap leaked machines.

The core CLI mounts ``app`` through the ``ftkit.cli`` entry-point group, so its errors reach the one
top-level handler (one line, exit code by kind: see ``ftkit.cli_errors``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ftkit_remote.gc import collect, providers_for_gc
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.providers import PROVIDERS, OfferQuery, Tier, make_provider

app = typer.Typer(help="Rented GPUs: offers, instances, and the reaper for leaked machines.", no_args_is_help=True)
_console = Console()


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise typer.BadParameter(f"--option takes KEY=VALUE, got {p!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _print_problems(ledger: LeaseLedger) -> None:
    """Say which ledger lines were skipped: their instances count as unowned (gc destroys them)."""
    for p in ledger.problems:
        _console.print(f"[yellow]lease ledger:[/yellow] {p}", highlight=False, soft_wrap=True)
    if ledger.problems:
        _console.print("[yellow]lease ledger:[/yellow] an instance whose lease was skipped counts as unowned; "
                       "name its provider with -p if no other lease does", highlight=False, soft_wrap=True)  # fmt: skip


@app.command()
def offers(
    provider: str = typer.Option(..., "--provider", "-p", help=f"One of {', '.join(PROVIDERS)}."),
    gpu: list[str] = typer.Option([], "--gpu", help="Acceptable GPU model (repeatable)."),
    num_gpus: int = typer.Option(1, "--num-gpus"),
    max_price: float | None = typer.Option(None, "--max-price", help="USD per hour, all included."),
    disk_gb: int = typer.Option(50, "--disk-gb"),
    interruptible: bool = typer.Option(False, "--interruptible", help="Spot / bid offers."),
    option: list[str] = typer.Option([], "--option", "-o", help="Provider option KEY=VALUE (e.g. base_url=...)."),
) -> None:
    """Offers matching the requirements, cheapest first."""
    query = OfferQuery(gpu_names=tuple(gpu), num_gpus=num_gpus, max_price_per_hour=max_price, disk_gb=disk_gb,
                       tier=Tier.INTERRUPTIBLE if interruptible else Tier.ON_DEMAND)  # fmt: skip

    async def main() -> list[Any]:
        p = make_provider(provider, _options(option))
        try:
            return await p.search_offers(query)
        finally:
            await p.aclose()

    found = asyncio.run(main())
    table = Table("offer", "GPU", "count", "GB/GPU", "$/h", "region", "reliability")
    for o in found:
        table.add_row(o.offer_id, o.gpu_name, str(o.num_gpus), f"{o.gpu_ram_gb:.0f}", f"{o.price_per_hour:.4f}",
                      o.region or "", f"{o.reliability:.3f}" if o.reliability is not None else "")  # fmt: skip
    _console.print(table if found else "no offer matches")


@app.command()
def instances(
    provider: list[str] = typer.Option([], "--provider", "-p", help="Providers to list (default: from leases)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Provider option KEY=VALUE (one provider only)."),
) -> None:
    """Instances carrying ftkit's label, with the lease that owns each."""
    extra = {name: _options(option) for name in provider}
    ledger = LeaseLedger()
    built, skipped = providers_for_gc(extra, ledger)
    leases = {x.label: x for x in ledger.all()}

    async def main() -> list[Any]:
        rows = []
        for name, p in built.items():
            try:
                for inst in await p.list():
                    rows.append((name, inst))
            finally:
                await p.aclose()
        return rows

    rows = asyncio.run(main())
    _print_problems(ledger)
    table = Table("provider", "instance", "label", "state", "$/h", "lease")
    for name, inst in rows:
        lease = leases.get(inst.label or "")
        table.add_row(name, inst.instance_id, inst.label or "", inst.state.value,
                      f"{inst.price_per_hour or 0:.4f}", lease.status if lease else "none")  # fmt: skip
    _console.print(table if rows else "no instance carries ftkit's label")
    for s in skipped:
        _console.print(f"[yellow]skipped[/yellow] {s}")


@app.command()
def gc(
    provider: list[str] = typer.Option([], "--provider", "-p", help="Also scan these (default: from leases)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Provider option KEY=VALUE (e.g. base_url=...)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be destroyed."),
) -> None:
    """Destroy instances with ftkit's label that no running job owns, and close stale leases."""
    extra = {name: _options(option) for name in provider}
    ledger = LeaseLedger()
    built, skipped = providers_for_gc(extra, ledger)
    _print_problems(ledger)

    async def main() -> list[Any]:
        try:
            return await collect(built, ledger, dry_run=dry_run)
        finally:
            for p in built.values():
                await p.aclose()

    findings = asyncio.run(main())
    for f in findings:
        colour = {"destroyed": "green", "failed": "red", "would destroy": "yellow"}.get(f.action, "white")
        _console.print(f"[{colour}]{f.action}[/{colour}] {f.provider} {f.instance_id} {f.label}: {f.reason}")
    if not findings:
        _console.print("nothing to collect")
    for s in skipped:
        _console.print(f"[yellow]skipped[/yellow] {s}")
    if any(f.action == "failed" for f in findings):
        raise typer.Exit(1)
