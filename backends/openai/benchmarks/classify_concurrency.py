"""How much concurrency buys when classifying through the API (against the emulator, with latency).

Each chat completion gets ``--latency`` seconds of server-side delay (the emulator's ``delay``
fault), standing in for network and model time. Reported as a ratio against the sequential run
in the same process, never as an absolute claim about OpenAI.

    python backends/openai/benchmarks/classify_concurrency.py --n 120 --latency 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import openai
from ftkit_openai import OpenAIConfig, OpenAIPredictor
from ftkit_openai.emulator import EmulatorServer, EmulatorSettings

WORDS = {"billing": "invoice refund charged card", "outage": "crash down error offline",
         "sales": "quote demo pricing upgrade"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--latency", type=float, default=0.05)
    a = p.parse_args()
    os.environ.setdefault("FTKIT_CACHE", tempfile.mkdtemp())
    settings = EmulatorSettings(status_seconds=0.01, step_seconds=0.001, steps_per_epoch=2)
    with EmulatorServer(settings) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-bench")
        rows = [{"messages": [{"role": "user", "content": f"{w} {i}"}, {"role": "assistant", "content": lab}]}
                for i in range(12) for lab, w in WORDS.items()]
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        f = client.files.create(file=("b.jsonl", data), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=f.id)
        while job.status != "succeeded":
            time.sleep(0.02)
            job = client.fine_tuning.jobs.retrieve(job.id)
        texts = [f"{list(WORDS.values())[i % 3]} please {i}" for i in range(a.n)]
        results = {}
        for conc in (1, 4, 8, 16):
            emu.inject("delay", "/v1/chat/completions", count=a.n, delay=a.latency)
            pred = OpenAIPredictor(str(job.fine_tuned_model),
                                   OpenAIConfig(base_url=emu.base_url, api_key="sk-bench", max_concurrency=conc),
                                   labels=list(WORDS))
            t0 = time.perf_counter()
            out = pred.classify(texts)
            results[conc] = time.perf_counter() - t0
            assert len(out) == a.n
            emu.clear_faults()
        base = results[1]
        for conc, t in results.items():
            print(f"concurrency {conc:>2}: {t:6.2f} s  speed-up ×{base / t:4.1f}  ({a.n / t:6.1f} texts/s)")


if __name__ == "__main__":
    main()
