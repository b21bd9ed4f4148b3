"""``python -m ftkit_openai.emulator --port 8765``: the OpenAI fine-tuning API on loopback."""

from __future__ import annotations

import argparse
import json
import sys

from ftkit_openai.emulator import EmulatorServer
from ftkit_openai.emulator.faults import FaultRule
from ftkit_openai.emulator.settings import EmulatorSettings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ftkit_openai.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (default loopback only).")
    p.add_argument("--port", type=int, default=8765, help="Port (0 picks a free one).")
    p.add_argument("--status-seconds", type=float, help="Seconds in validating_files and in queued.")
    p.add_argument("--step-seconds", type=float, help="Seconds per training step.")
    p.add_argument("--steps-per-epoch", type=int, help="Steps per epoch (default: ceil(examples / batch_size)).")
    p.add_argument("--queue-seconds", type=float, help="Extra seconds in queued (a slow queue).")
    p.add_argument("--batch-seconds", type=float, help="Seconds per batch status.")
    p.add_argument("--plain-results", action="store_true", help="Serve the results CSV plain, not base64.")
    p.add_argument("--api-key", help="Accept only this key (default: any non-empty key).")
    p.add_argument("--validate", action="store_true", help="Check answers against the OpenAPI excerpt.")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='Fault rule, e.g. \'{"kind":"rate_limit","path":"/v1/chat/completions","count":2}\'.',
    )
    a = p.parse_args(argv)
    settings = EmulatorSettings.from_env(
        status_seconds=a.status_seconds,
        step_seconds=a.step_seconds,
        steps_per_epoch=a.steps_per_epoch,
        queue_seconds=a.queue_seconds,
        batch_seconds=a.batch_seconds,
        api_key=a.api_key,
        results_base64=False if a.plain_results else None,
        validate_responses=True if a.validate else None,
    )
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {a.host}; the emulator has no real security", file=sys.stderr)
    server = EmulatorServer(settings, port=a.port, host=a.host)
    for raw in a.fault:
        server.emulator.faults.add(FaultRule.model_validate(json.loads(raw)))
    print(f"OpenAI fine-tuning emulator on {server.base_url}", flush=True)
    try:
        server.server.serve()  # in the main thread: uvicorn stops cleanly on Ctrl-C and SIGTERM
    finally:
        server.server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
