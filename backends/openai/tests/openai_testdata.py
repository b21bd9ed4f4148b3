"""Deterministic test data: texts whose words predict their label (so a model can learn them)."""

from __future__ import annotations

import json
import random
from pathlib import Path

TEST_KEY = "sk-test-FTKITSECRET-0123456789abcdef"  # must never appear in stored state, logs or errors
LABELS = ["billing", "outage", "sales"]
_CUES = {
    "billing": ["invoice", "charged", "refund", "payment", "card", "bill", "overcharged", "receipt"],
    "outage": ["down", "error", "crash", "offline", "timeout", "broken", "login", "slow"],
    "sales": ["pricing", "demo", "quote", "upgrade", "enterprise", "discount", "trial", "plan"],
}
_NOISE = ["please", "help", "today", "our", "team", "the", "account", "thanks", "urgent", "hello", "again", "we"]


def texts(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs, classes in turn, each text 3 cue words and 3 noise words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = rng.sample(_CUES[label], 3) + rng.sample(_NOISE, 3)
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


def write_classification(path: Path, n: int, seed: int) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in texts(n, seed)))
    return path


CHAT_SYSTEM_PROMPT = "Route the ticket."


def write_chat(path: Path, n: int, seed: int) -> Path:
    rows = [{"messages": [{"role": "system", "content": CHAT_SYSTEM_PROMPT}, {"role": "user", "content": t},
                          {"role": "assistant", "content": lab}]} for t, lab in texts(n, seed)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_preference(path: Path, n: int, seed: int) -> Path:
    rows = []
    for t, lab in texts(n, seed):
        wrong = LABELS[(LABELS.index(lab) + 1) % len(LABELS)]
        rows.append({"input": {"messages": [{"role": "user", "content": t}]},
                     "preferred_output": [{"role": "assistant", "content": lab}],
                     "non_preferred_output": [{"role": "assistant", "content": wrong}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
