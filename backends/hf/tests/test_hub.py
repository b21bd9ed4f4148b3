"""Models by Hugging Face Hub id: the real huggingface_hub resolution, offline, against a cache laid out as the Hub
client writes it (refs/<branch or tag> -> commit, snapshots/<commit>/ -> blobs), and the clear errors without it.

The Hub itself cannot be reached here: the cache is built in the test from a real (tiny) model, and the
"no network" case points the client at a closed port on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import ftkit
from ftkit import JobStatus

REPO = "ftkit-test/tiny-llama"
MAIN = "1" * 40
V1 = "2" * 40


def _hub_cache(root: Path, model_dir: Path, repo: str = REPO) -> Path:
    """A Hugging Face cache holding ``repo`` at two commits: main -> MAIN, tag v1 -> V1 (the same files)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True)
    for commit in (MAIN, V1):
        snap = folder / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in model_dir.iterdir():
            data = f.read_bytes()
            blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
            if not blob.exists():
                blob.write_bytes(data)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(MAIN)
    (folder / "refs" / "v1").write_text(V1)
    return root


@pytest.fixture()
def hub_cache(tmp_path: Path, tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = _hub_cache(tmp_path / "hf-cache", tiny_llama_dir)
    assert constants.HF_HUB_OFFLINE  # conftest: resolution must go through the cache, never the network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_id_resolves_through_the_cache_to_its_commit(hub_cache: Path):
    from ftkit_hf.models import resolve_model

    main = resolve_model(REPO)
    assert main.revision == MAIN and main.path == hub_cache / f"models--ftkit-test--tiny-llama/snapshots/{MAIN}"
    assert main.kind == "causal" and (main.path / "config.json").is_file()
    assert resolve_model(f"{REPO}@v1").revision == V1  # a tag
    assert resolve_model(f"{REPO}@{V1}").revision == V1  # a pinned commit
    with pytest.raises(ftkit.ConfigError, match=r"^model 'ftkit-test/tiny-llama@v2' is not in the local Hugging "
                                                r"Face cache and HF_HUB_OFFLINE is set: pass a local folder"):
        resolve_model(f"{REPO}@v2")


def _resolve_in_a_fresh_process(name: str, **env: str) -> str:
    code = ("import sys\nfrom ftkit.errors import ConfigError\nfrom ftkit_hf.models import resolve_model\n"
            f"try:\n    resolve_model({name!r})\nexcept ConfigError as e:\n    print(e)\n    sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 3, out.stderr[-2000:]
    return out.stdout


def test_offline_or_without_network_a_hub_id_is_a_one_line_error(tmp_path: Path):
    offline = _resolve_in_a_fresh_process("Qwen/Qwen2.5-0.5B", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert offline.count("\n") == 1 and offline.startswith("model 'Qwen/Qwen2.5-0.5B' is not in the local")
    assert "HF_HUB_OFFLINE is set: pass a local folder" in offline
    with socket.socket() as s:  # a port nothing listens on: the connection is refused, as without a network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    no_net = _resolve_in_a_fresh_process("Qwen/Qwen2.5-0.5B", HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path),
                                         HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_ETAG_TIMEOUT="5")
    assert no_net.count("\n") == 1
    assert "the Hugging Face Hub cannot be reached: pass a local folder" in no_net and "Qwen/Qwen2.5-0.5B" in no_net


@pytest.mark.slow
def test_a_job_on_a_hub_id_pins_the_commit_in_its_manifest(hub_cache: Path, spam_files, ftkit_home):
    spec = ftkit.JobSpec(task="classification", model=f"{REPO}@v1", train=spam_files["train"],
                         labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "max_steps": 1,
                                                               "batch_tokens": 256})
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    pin = ftkit.FineTuneJob.get(job.id).record.manifest["model_revision"]
    assert pin == {"repo": REPO, "commit": V1, "pinned": f"{REPO}@{V1}"}
    written = json.loads((job.workdir / "spec.json").read_text())
    assert written["model_path"].endswith(f"snapshots/{V1}") and written["model_revision"]["commit"] == V1
