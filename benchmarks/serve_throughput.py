"""ftkit serve on CPU: requests/s and latency for 1, 4 and 16 concurrent clients on a classification workload.

    python benchmarks/serve_throughput.py [--requests 96] [--model smollm2-135m] [--clients 1 4 16]

Workload: SMS spam texts, each asked as ftkit's classification prompt (the preamble with the labels
ham/spam as system message, the text as user message) with ``logprobs`` and ``top_logprobs=2``, so each
answer carries both labels' probabilities. The served model is the base model set up as a ham/spam
classifier (zero-shot: the speed of a fine-tuned model of the same size is the same).

Recipes, in one process, on the same texts, fp32 on the CPU:

- ``serve_cN``: ``ftkit serve`` on loopback driven by N threads, each with the real ``openai`` client
  sending one request after another (``--requests`` in all). Requests that wait together are scored in
  one batch by ftkit's label scorer; the batch sizes the engine ran are reported.
- ``pipeline_loop``: the peer a user writes without ftkit: a transformers ``pipeline("text-generation")``
  called once per text in a loop (greedy, as many new tokens as the longest label answer), then the
  answer parsed to a label. It gives a label but no probabilities.

Reports requests/s, p50 and p95 latency per request, and writes ``benchmarks/results/serve_throughput.json``.
Wall times on a shared machine are noisy; the ratios between recipes of one run are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LABELS = ["ham", "spam"]


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def _run_clients(n_clients: int, texts: list[str], ask: Callable[[str], str]) -> tuple[float, list[float], list[str]]:
    """Send every text once from ``n_clients`` threads; returns wall seconds, latencies and labels."""
    latencies: list[float] = [0.0] * len(texts)
    labels: list[str] = [""] * len(texts)
    next_index = iter(range(len(texts)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            t = time.perf_counter()
            labels[i] = ask(texts[i])
            latencies[i] = time.perf_counter() - t

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - start, latencies, labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_throughput.json")
    args = ap.parse_args()

    import openai
    import torch
    from ftkit_hf.datasets import load_sms_spam, stratified_split
    from ftkit_hf.engine.device import cpu_model_name
    from ftkit_hf.models import resolve_model
    from ftkit_hf.predictor import HFPredictor, parse_label
    from ftkit_hf.serve import ServedModel, Server
    from transformers import pipeline

    from ftkit.data.convert import classification_messages

    torch.set_num_threads(os.cpu_count() or 1)
    rows = stratified_split(load_sms_spam(), {"test": args.requests}, seed=0)["test"]
    texts = [r["text"] for r in rows]
    path = resolve_model(args.model).path
    predictor = HFPredictor.load(path, labels=LABELS, device="cpu", precision="fp32")
    longest = max(len(v) for v in predictor._prompter(LABELS).label_ids.values())
    result: dict[str, Any] = {
        "command": f"python benchmarks/serve_throughput.py --requests {args.requests} --model {args.model} "
                   f"--clients {' '.join(map(str, args.clients))}",
        "model": args.model, "requests": len(texts), "precision": "fp32", "cpu": cpu_model_name(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_start": os.getloadavg()[0],
        "recipes": {},
        "note": "one run on a 2-core machine shared with other jobs: wall times are noisy, ratios within the run "
                "are what to read",
    }

    def record(name: str, wall: float, latencies: list[float], extra: dict[str, Any] | None = None) -> None:
        row = {"requests_per_second": round(len(latencies) / wall, 2), "p50_ms": round(1000 * _percentile(
            latencies, 50), 1), "p95_ms": round(1000 * _percentile(latencies, 95), 1), "seconds": round(wall, 2)}
        result["recipes"][name] = row | (extra or {})
        print(f"{name:16}{row['requests_per_second']:>10.2f}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}"
              f"  {extra or ''}", flush=True)

    print(f"{'recipe':16}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}", flush=True)
    served_labels: dict[int, list[str]] = {}
    with Server([ServedModel("classifier", predictor)]) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

        def ask(text: str) -> str:
            messages: Any = classification_messages(text, LABELS)  # plain dicts, as an app sends them
            r = client.chat.completions.create(model="classifier", messages=messages, temperature=0, logprobs=True,
                                               top_logprobs=2)
            return r.choices[0].message.content or ""

        _run_clients(1, texts[:4], ask)  # warm-up
        for n in args.clients:
            before = len(server.engine.batches)
            wall, lat, labs = _run_clients(n, texts, ask)
            sizes = server.engine.batches[before:]
            served_labels[n] = labs
            record(f"serve_c{n}", wall, lat, {"clients": n, "mean_batch": round(len(texts) / max(len(sizes), 1), 2),
                                              "max_batch": max(sizes, default=0)})

    pipe = pipeline("text-generation", model=predictor.model, tokenizer=predictor.tokenizer, device="cpu")

    def pipe_ask(text: str) -> str:
        out = pipe(classification_messages(text, LABELS), max_new_tokens=longest, do_sample=False,
                   return_full_text=False)
        return parse_label(str(out[0]["generated_text"]), LABELS)

    _run_clients(1, texts[:4], pipe_ask)  # warm-up
    wall, lat, pipe_labels = _run_clients(1, texts, pipe_ask)
    record("pipeline_loop", wall, lat, {"clients": 1})
    base = result["recipes"]["pipeline_loop"]["requests_per_second"]
    for row in result["recipes"].values():
        row["throughput_vs_pipeline"] = round(row["requests_per_second"] / base, 2)
    agree = sum(a == b for a, b in zip(served_labels[args.clients[0]], pipe_labels, strict=True)) / len(texts)
    result["label_agreement_serve_vs_pipeline"] = round(agree, 3)
    result["load_average_end"] = os.getloadavg()[0]  # other processes' load: above the CPU count, times stretch
    print(f"throughput vs pipeline: { {k: v['throughput_vs_pipeline'] for k, v in result['recipes'].items()} }; "
          f"same label as the pipeline on {agree:.0%} (greedy generation can answer something that is not a label)")
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
