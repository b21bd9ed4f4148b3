"""The reproducibility manifest kept with every job."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ftkit.spec import JobSpec

_LIBRARIES = ("ftkit", "pydantic", "numpy", "torch", "transformers", "peft", "openai", "tiktoken")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks so memory stays flat."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries that decide a result; missing ones are left out."""
    found: dict[str, str] = {}
    for name in (*_LIBRARIES, *extra):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def build_manifest(spec: JobSpec, backend: str, backend_version: str | None) -> dict[str, Any]:
    """Content hashes of the data, the resolved spec, seed and versions, recorded at create time."""
    data = {}
    for field in ("train", "validation"):
        p = getattr(spec, field)
        if p is not None:
            data[field] = {"path": str(p), "sha256": file_sha256(p), "bytes": Path(p).stat().st_size}
    return {
        "data": data,
        "spec": spec.model_dump(mode="json"),
        "seed": spec.hyperparameters.seed,
        "backend": {"name": backend, "version": backend_version},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
    }
