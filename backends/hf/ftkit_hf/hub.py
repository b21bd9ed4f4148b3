"""Models by Hugging Face Hub id (``org/name``, or ``org/name@revision``), resolved to a pinned commit.

Where the Hub can be reached (a rented GPU usually can), the model is downloaded once into the Hugging Face
cache (``$HF_HUB_CACHE``) by ``huggingface_hub`` and the job trains on that snapshot; the commit it resolved to
is recorded in the job's manifest (``model_revision``), so the same weights can be asked for again with
``org/name@<commit>``. Offline (``HF_HUB_OFFLINE=1``, or no network) a model already in the cache is used as it
is; one that is not is a one-line :class:`~ftkit.errors.ConfigError` that names it and says to pass a local
folder. Only what ``from_pretrained`` reads is fetched (configs, tokenizer files, weights), not ONNX, TF, Flax,
GGUF or Core ML copies.
"""

from __future__ import annotations

import re
from pathlib import Path

from ftkit.errors import ConfigError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_SKIP = ["*.onnx", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.gguf", "openvino/*", "*.tflite", "coreml/*",
         "*.mlmodel", "*.pt", "*.pth", "*.ckpt"]  # other frameworks' copies of the same weights


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub id (``org/name`` or ``org/name@revision``), not a path."""
    return bool(HUB_ID.match(name)) and not name.startswith((".", "~", "/"))


def split_revision(name: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; without ``@``, the revision is None (the main branch)."""
    repo, _, revision = name.partition("@")
    return repo, revision or None


def resolve_hub_model(name: str) -> tuple[Path, str]:
    """The local snapshot folder of a Hub model and the commit it is.

    Args:
        name: ``org/name`` or ``org/name@revision`` (a branch, tag or commit hash).

    Returns:
        The snapshot folder (``.../models--org--name/snapshots/<commit>``) and the commit hash.

    Raises:
        ConfigError: offline and not cached, no such model or revision, or a gated model without a token.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = split_revision(name)
    local = f"pass a local folder instead (download it where the Hub is reachable: `hf download {repo} " \
            f"--local-dir ./{repo.split('/')[-1]}`)"
    try:
        folder = Path(snapshot_download(repo, revision=revision, ignore_patterns=_SKIP))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        raise ConfigError(f"model {name!r} is not in the local Hugging Face cache and {why}: {local}") from None
    except RevisionNotFoundError:
        raise ConfigError(f"model {repo!r} has no revision {revision!r} on the Hugging Face Hub") from None
    except GatedRepoError:
        raise ConfigError(f"model {repo!r} is gated on the Hugging Face Hub: accept its terms and set HF_TOKEN, "
                          f"or {local}") from None  # fmt: skip
    except RepositoryNotFoundError:
        raise ConfigError(f"model {repo!r} is not on the Hugging Face Hub (or is private: set HF_TOKEN); "
                          "check the id, or pass a local folder") from None  # fmt: skip
    except HfHubHTTPError as e:
        raise ConfigError(f"model {name!r}: the Hugging Face Hub answered {e.response.status_code}; {local}") from None
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model {name!r} has no config.json: not a transformers model")
    return folder, folder.name
