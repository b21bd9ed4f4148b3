"""Training examples → token ids and loss masks (``-100`` where no loss is taken).

- chat: the model's chat template; loss on assistant turns only (an assistant message with
  ``"weight": 0`` is context, as in OpenAI's format). Each assistant turn's span is found by
  rendering the conversation up to that turn with and without the answer, and tokens are
  assigned to spans by their character offsets, so the mask is exact token by token.
- classification (generative): the prompt is ``ftkit.data.convert.classification_messages``
  rendered with the chat template; the answer is the label's tokens followed by the end-of-turn
  token. :class:`LabelPrompter` builds both, and the predictor scores labels with the very same
  ids, so training and ``classify()`` agree exactly.
- completion: prompt tokens (no loss) + completion tokens + EOS (loss).
- text (continued pre-training): the document's tokens + EOS, loss on every token; a document longer
  than ``max_length`` is cut into consecutive pieces of ``max_length`` tokens (no token is lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ftkit.data.convert import classification_messages
from ftkit.errors import DatasetError
from ftkit_hf.engine.settings import TokenizedExample

IGNORE = -100


class LabelPrompter:
    """The classification prompt and each label's answer tokens for one tokenizer and label set.

    Args:
        tokenizer: a tokenizer with a chat template.
        labels: the label vocabulary.
        preamble: the system prompt template (``{labels}`` is filled in); None for ftkit's default.
    """

    def __init__(self, tokenizer: Any, labels: Sequence[str], preamble: str | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise DatasetError("generative classification needs a model with a chat template; this tokenizer has none")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.preamble = preamble
        self.label_ids = {label: self._answer_ids(label) for label in self.labels}

    def prompt_text(self, text: str) -> str:
        """The rendered prompt (system + user + the assistant header), exactly as scored."""
        msgs = classification_messages(text, self.labels, self.preamble)
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of :meth:`prompt_text`."""
        return self.tokenizer(self.prompt_text(text), add_special_tokens=False)["input_ids"]

    def _answer_ids(self, label: str) -> list[int]:
        # The answer is what the template adds after the generation prompt, up to the end-of-turn token
        # (trailing newlines dropped): training on it teaches the model to stop, and scoring it makes
        # a label that is a prefix of another ("pos" / "positive") a different answer.
        msgs = classification_messages("x", self.labels, self.preamble)
        prompt = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            [*msgs, {"role": "assistant", "content": label}], tokenize=False
        )
        if not full.startswith(prompt):
            raise DatasetError("the chat template renders the answer in a way that does not extend the prompt")
        ids = self.tokenizer(full[len(prompt) :].rstrip(), add_special_tokens=False)["input_ids"]
        if not ids:
            raise DatasetError(f"label {label!r} has no tokens")
        return ids

    def example(self, text: str, label: str) -> TokenizedExample:
        """A training example: prompt (no loss) + the label's answer tokens (loss)."""
        prompt = self.prompt_ids(text)
        answer = self.label_ids[label]
        return TokenizedExample(input_ids=prompt + answer, labels=[IGNORE] * len(prompt) + list(answer))


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> TokenizedExample:
    """A conversation with loss on assistant turns only (weight 0 turns excluded)."""
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError("chat training needs a model with a chat template; this tokenizer has none")
    msgs = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (full.startswith(before) and full.startswith(through.rstrip())):
            raise DatasetError("the chat template does not render conversations incrementally; cannot mask turns")
        spans.append((len(before), len(through.rstrip())))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    labels = [IGNORE] * len(ids)
    for j, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[j] = ids[j]
    return TokenizedExample(input_ids=ids, labels=labels)


def encode_completion(tokenizer: Any, prompt: str, completion: str) -> TokenizedExample:
    """Prompt tokens without loss, then completion tokens and EOS with loss."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c = [*c, tokenizer.eos_token_id]
    return TokenizedExample(input_ids=p + c, labels=[IGNORE] * len(p) + c)


def encode_text(tokenizer: Any, text: str, max_length: int) -> list[TokenizedExample]:
    """A document for continued causal-LM pre-training: loss on every token, cut into ``max_length`` pieces.

    The engine packs pieces into rows with no attention across them, as it does for chat examples, so a
    piece never sees another document (nor the piece before it: each is a training sequence of its own).
    """
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    pieces = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    # A last piece of one token has no target (position t predicts t + 1): it joins nothing and is left out.
    return [TokenizedExample(input_ids=list(p), labels=list(p)) for p in pieces if len(p) > 1]
