"""The ``hf:<path>`` validation target: a local model's own tokenizer, chat template and context length.

Built by :meth:`ftkit_hf.backend.HFBackend.make_target` when ``ftkit validate --target hf:...`` or a job's
validation asks for it, so the core (``ftkit.data.targets``) never imports transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftkit.data.formats import Format
from ftkit.data.issues import Issue
from ftkit.data.targets import Target, config_context

__all__ = ["HFTarget"]


class HFTarget(Target):
    """A local Hugging Face model: its tokenizer, chat template and context length."""

    def __init__(self, path: str, labels: Sequence[str] | None = None, preamble: str | None = None) -> None:
        self.labels = list(labels) if labels else None
        self.preamble = preamble
        self.name = f"hf:{path}"
        self.path = Path(path).expanduser()
        self._tok: Any = None
        self.load_issue: Issue | None = None
        if not self.path.is_dir():
            self.load_issue = Issue(line=None, code="model_not_found", message=f"no model folder at {self.path}")
            return
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(self.path))
        except (OSError, ValueError) as e:
            self.load_issue = Issue(line=None, code="model_not_found", message=f"cannot load a tokenizer: {e}")
            return
        limit = getattr(self._tok, "model_max_length", None)
        self.max_tokens = limit if isinstance(limit, int) and limit < 10**7 else config_context(self.path)

    def count(self, examples: Sequence[tuple[Format, dict[str, Any]]]) -> list[int]:
        if self._tok is None:
            return [0 for _ in examples]
        out = []
        for fmt, obj in examples:
            if fmt == "text":  # the document's tokens as training sees them (with the tokenizer's specials)
                out.append(len(self._tok(str(obj.get("text", "")))["input_ids"]))
                continue
            chat = [m for m in self.as_chat(fmt, obj) if isinstance(m, dict)]
            if getattr(self._tok, "chat_template", None):
                ids = self._tok.apply_chat_template(chat, tokenize=True)
                ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
                out.append(len(ids))
            else:
                text = "\n".join(str(m.get("content") or "") for m in chat)
                out.append(len(self._tok(text)["input_ids"]))
        return out

    def check_file(self, fmt: Format | None, examples: int) -> list[Issue]:
        return [self.load_issue] if self.load_issue else []
