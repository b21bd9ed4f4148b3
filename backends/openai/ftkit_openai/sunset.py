"""OpenAI's fine-tuning wind-down: the dates, "today", and the message ftkit shows.

Source: OpenAI's deprecations page and the legacy SFT/DPO guides (2026): notice sent 2026-05-07;
organisations that had never fine-tuned lost job creation that day, those without recent
fine-tuned inference on 2026-07-02; **nobody can create jobs from 2027-01-06**. Existing
fine-tuned models keep serving until their base model retires, so following, evaluating and
using them keeps working.
"""

from __future__ import annotations

import datetime as dt
import os

NOTICE_DATE = dt.date(2026, 5, 7)
INACTIVE_ORGS_CUTOFF = dt.date(2026, 7, 2)
FINE_TUNING_CUTOFF = dt.date(2027, 1, 6)

ALTERNATIVES = (
    "To train on the same data, use the hf backend (local LoRA: FineTuneJob.create(spec, backend='hf')) "
    "or the remote backend (rented GPUs: backend='remote'). Existing OpenAI fine-tuned models keep working: "
    "follow and evaluate them with FineTuneJob.attach('ftjob-...', backend='openai')."
)


def today(override: dt.date | None = None) -> dt.date:
    """Today's date (UTC), or ``override``, or ``$FTKIT_TODAY`` (``YYYY-MM-DD``) for tests and dry runs."""
    if override is not None:
        return override
    raw = os.environ.get("FTKIT_TODAY")
    if raw:
        return dt.date.fromisoformat(raw.strip())
    return dt.datetime.now(dt.UTC).date()


def creation_closed(on: dt.date) -> bool:
    """True from the day OpenAI stops accepting new fine-tuning jobs."""
    return on >= FINE_TUNING_CUTOFF


def closed_message(on: dt.date) -> str:
    """What ``create`` says once the cut-off has passed."""
    return (
        f"OpenAI stopped accepting new fine-tuning jobs on {FINE_TUNING_CUTOFF.isoformat()} "
        f"(today is {on.isoformat()}). {ALTERNATIVES}"
    )


def refused_message(api_message: str) -> str:
    """What ``start`` says when the API refuses to create a job for this organisation."""
    return (
        f"OpenAI refused to create the fine-tuning job: {api_message} OpenAI is winding down fine-tuning "
        f"(since {NOTICE_DATE.isoformat()} some organisations can no longer create jobs; nobody can from "
        f"{FINE_TUNING_CUTOFF.isoformat()}). {ALTERNATIVES}"
    )


_REFUSAL_WORDS = ("no longer", "not eligible", "no longer eligible", "not available to your organization",
                  "winding down", "deprecated", "sunset")


def is_sunset_refusal(status_code: int | None, code: str | None, message: str) -> bool:
    """Whether a 4xx from job creation means "your organisation may not create jobs any more"."""
    if status_code is None or not 400 <= status_code < 500 or status_code == 429:
        return False
    if code in ("fine_tuning_unavailable", "fine_tuning_not_available", "fine_tuning_deprecated"):
        return True
    low = message.lower()
    return "fine-tun" in low and any(w in low for w in _REFUSAL_WORDS)
