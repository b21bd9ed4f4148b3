"""Per-step wall, CPU, system time, page faults and peak memory of one ftkit ``train()`` call on CPU.

The data and model are those of ``lora_throughput.py`` (64 lognormal examples, SmolLM2-135M shape, LoRA r16).
Run it in fresh processes, alternating the variants to compare (the VM's speed drifts within the hour):

    python benchmarks/train_steps.py                      # the defaults
    python benchmarks/train_steps.py --pass-tokens 100000 # each step in one pass
    python benchmarks/train_steps.py --max-len 1024       # longer examples
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lora_throughput as lt


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-ex", type=int, default=64)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--pass-tokens", type=int, default=None)
    a = p.parse_args()
    from ftkit_hf.engine import EngineSettings, TokenizedExample, train
    from peft import get_peft_model

    b = lt.Bench(argparse.Namespace(device="cpu", size=None, n_ex=a.n_ex, max_len=a.max_len, bs=8))
    rows, real = b.data()
    model = get_peft_model(b.model(), lt.lora_config())
    examples = [TokenizedExample(r["input_ids"], r["labels"]) for r in rows]

    def sample() -> tuple[float, ...]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_maxrss / 2**20

    marks = [sample()]
    with tempfile.TemporaryDirectory() as ckpt:
        train(model, examples, None, EngineSettings(device="cpu", pass_tokens=a.pass_tokens),
              checkpoint_dir=Path(ckpt), on_event=lambda e: marks.append(sample()) if e["kind"] == "metrics" else None)
    end = sample()
    for i in range(1, len(marks)):
        d = [x - y for x, y in zip(marks[i], marks[i - 1], strict=True)]
        print(f"step {i}: wall {d[0]:.2f} s, user {d[1]:.2f}, system {d[2]:.2f}, page faults {d[3]:.0f}, "
              f"peak RSS {marks[i][4]:.2f} GiB")
    d = [x - y for x, y in zip(end, marks[0], strict=True)]
    print(f"call: wall {d[0]:.2f} s, user {d[1]:.2f}, system {d[2]:.2f}, page faults {d[3]:.0f}, "
          f"peak RSS {end[4]:.2f} GiB, {real / d[0]:.1f} real tokens/s")


if __name__ == "__main__":
    main()
