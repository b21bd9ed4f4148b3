"""Validation + token counting speed and memory on a large generated chat file.

Compares ftkit's streaming validator (``Dataset.validate`` with an OpenAI target: every check,
exact o200k token counts, duplicate detection) against a faithful re-implementation of the
OpenAI cookbook's data-prep recipe (``Chat_finetuning_data_prep.ipynb``: load the file, the
format-error counters, then ``num_tokens_from_messages`` per example), run in the same process on
the same file. The cookbook's encoding is switched to o200k_base so both count the same tokens.

    python benchmarks/validate.py --lines 1000000        # writes benchmarks/results/<date>-validate.json

Each side runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from ftkit.atomic import atomic_write_text

_VOCABULARY = (
    "the model should answer in json with fields name date amount currency status reason invoice "
    "customer order shipped pending refund please thanks hello price total tax discount support "
    "ticket urgent schedule meeting tomorrow report summary quarter revenue growth risk policy "
    "contract"
)
WORDS = tuple(_VOCABULARY.split())


def generate(path: Path, lines: int, seed: int = 0) -> None:
    """Write ``lines`` varied chat examples (system/user/assistant, lognormal lengths)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):

            def text(mean: float) -> str:
                n = max(1, int(rng.lognormvariate(mean, 0.6)))
                return " ".join(rng.choice(WORDS) for _ in range(n))

            ex = {
                "messages": [
                    {"role": "system", "content": f"You turn requests into JSON. Ticket {i}."},
                    {"role": "user", "content": text(3.0)},
                    {"role": "assistant", "content": text(2.5)},
                ]
            }
            f.write(json.dumps(ex) + "\n")


def cookbook(path: str) -> dict:
    """The cookbook recipe, as a user would run it (its checks and token counter, o200k_base)."""
    import tiktoken

    from ftkit.data.tokens import seed_tiktoken_cache

    seed_tiktoken_cache()
    encoding = tiktoken.get_encoding("o200k_base")
    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]
    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        n_missing_system += not any(m["role"] == "system" for m in messages)
        n_missing_user += not any(m["role"] == "user" for m in messages)
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_lens.append(sum(len(encoding.encode(m["content"])) for m in messages if m["role"] == "assistant"))
    n_too_long = sum(n > 65536 for n in convo_lens)
    return {
        "examples": len(dataset),
        "errors": sum(format_errors.values()),
        "tokens": sum(convo_lens),
        "too_long": n_too_long,
    }


def ftkit_side(path: str) -> dict:
    """ftkit's validator with an OpenAI target: every check, exact token counts, duplicates."""
    from ftkit.data import Dataset

    report = Dataset.load(path).validate(target="openai:gpt-4o-mini-2024-07-18")
    return {"examples": report.examples, "tokens": report.total_tokens, "errors": sum(report.error_counts.values())}


def _child(which: str, path: str) -> None:
    import resource

    t0 = time.perf_counter()
    result = {"ftkit": ftkit_side, "cookbook": cookbook}[which](path)
    seconds = time.perf_counter() - t0
    # ftkit forks one scanner per core on big files: report the larger of this process and its children.
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(json.dumps({"recipe": which, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb, 1), **result}))


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--file", type=Path, default=Path("/tmp/ftkit-bench-chat.jsonl"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not args.file.exists() or _count_lines(args.file) != args.lines:
        generate(args.file, args.lines)
    runs = []
    for which in ("ftkit", "cookbook"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", which, str(args.file)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    f, c = runs
    assert f["tokens"] == c["tokens"], "both sides must count the same tokens"
    result = {
        "lines": args.lines,
        "file_mb": round(args.file.stat().st_size / 2**20, 1),
        "runs": runs,
        "speedup_vs_cookbook": round(c["seconds"] / f["seconds"], 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    path = args.out or Path(__file__).parent / "results" / f"{time.strftime('%Y-%m-%d')}-validate.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
