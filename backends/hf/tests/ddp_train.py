"""Run by test_distributed.py under ``python -m torch.distributed.run``: the engine on a tiny LoRA Llama.

``ddp_train.py OUT CHECKPOINTS [--stop-after K]`` trains on synthetic data with the settings of
:func:`settings`; rank 0 writes ``OUT/weights.safetensors`` (the trainable weights at the end),
``OUT/events.json`` and ``OUT/result.json``. With ``--stop-after K`` only rank 0 asks to stop, after
K steps: the other rank must stop at the same step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ftkit_hf.engine import EngineSettings, train
from ftkit_hf.engine.checkpoint import trainable_state
from ftkit_hf.engine.distributed import current, init_from_env, shutdown
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model


def data() -> tuple[list, list]:
    """Lengths from 6 to 140 tokens against a 160-token step: steps of one long example (one rank gets
    nothing) next to steps of several short ones (uneven shards)."""
    return synthetic_examples(30, min_len=6, max_len=140, seed=3), synthetic_examples(9, max_len=80, seed=4)


def settings() -> EngineSettings:
    """Two epochs, evaluation every 3 steps, a checkpoint every 4, on CPU in fp32; each rank's share of a
    step in passes of about 60 tokens (gradients kept local by DDP until the last)."""
    return EngineSettings(epochs=2, learning_rate=5e-3, batch_tokens=160, max_batch_examples=8, pass_tokens=60, seed=7,
                          precision="fp32", device="cpu", warmup_ratio=0.1, eval_every=3, checkpoint_every=4,
                          threads=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("checkpoints")
    parser.add_argument("--stop-after", type=int)
    args = parser.parse_args(argv)
    group = init_from_env("cpu")
    events: list[dict[str, Any]] = []
    steps = [0]

    def on_event(ev: dict[str, Any]) -> None:
        events.append(ev)
        if ev["kind"] == "metrics":
            steps[0] = ev["step"]

    def should_stop() -> bool:
        # Rank 0 alone sees the request (it alone receives events): the engine must share it.
        return args.stop_after is not None and current().is_main and steps[0] >= args.stop_after

    train_set, valid_set = data()
    model = tiny_lora_model("llama")
    result = train(model, train_set, valid_set, settings(), checkpoint_dir=Path(args.checkpoints),
                   on_event=on_event, should_stop=should_stop)
    if group.is_main:
        from safetensors.torch import save_file

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(trainable_state(model), str(out / "weights.safetensors"))
        (out / "events.json").write_text(json.dumps(events))
        (out / "result.json").write_text(json.dumps(dataclasses.asdict(result) | {"world": group.world_size}))
    shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
