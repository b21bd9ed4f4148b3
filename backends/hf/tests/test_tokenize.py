"""Loss masks checked token by token with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import pytest
from ftkit_hf.tokenize import IGNORE, LabelPrompter, encode_chat, encode_completion

from ftkit.data.convert import classification_messages
from ftkit.errors import DatasetError


def _spans(tok, ids, labels):
    """Decoded text of each maximal run of labelled tokens."""
    runs, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab != IGNORE:
            assert lab == i  # a labelled position predicts exactly its own token
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_chat_loss_only_on_assistant_turns(smollm2_tokenizer):
    tok = smollm2_tokenizer
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome, of course."},
    ]
    ex = encode_chat(tok, msgs)
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ex.input_ids == full
    assert _spans(tok, ex.input_ids, ex.labels) == ["Paris.<|im_end|>", "Rome, of course.<|im_end|>"]
    # Token by token: everything outside the two answers is masked, including the role headers.
    toks = tok.convert_ids_to_tokens(ex.input_ids)
    labelled = [t for t, lab in zip(toks, ex.labels, strict=True) if lab != IGNORE]
    assert labelled == tok.convert_ids_to_tokens(tok("Paris.<|im_end|>Rome, of course.<|im_end|>",
                                                     add_special_tokens=False)["input_ids"])
    assert "assistant" not in "".join(labelled) and "user" not in "".join(labelled)


def test_chat_weight_zero_turn_is_context(smollm2_tokenizer):
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Old answer", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "New answer"},
    ]
    ex = encode_chat(smollm2_tokenizer, msgs)
    assert _spans(smollm2_tokenizer, ex.input_ids, ex.labels) == ["New answer<|im_end|>"]


def test_classification_prompt_is_the_shared_prompt(smollm2_tokenizer):
    tok = smollm2_tokenizer
    p = LabelPrompter(tok, ["ham", "spam"])
    ex = p.example("Win a prize now!", "spam")
    rendered = tok.apply_chat_template(classification_messages("Win a prize now!", ["ham", "spam"]), tokenize=False,
                                       add_generation_prompt=True)
    prompt_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids
    assert ex.labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    assert tok.decode(ex.input_ids[len(prompt_ids):]) == "spam<|im_end|>"
    assert ex.labels[len(prompt_ids):] == ex.input_ids[len(prompt_ids):]
    # The answer tokens are exactly what the template produces in context.
    full = tok(tok.apply_chat_template([*classification_messages("Win a prize now!", ["ham", "spam"]),
                                        {"role": "assistant", "content": "spam"}], tokenize=False),
               add_special_tokens=False)["input_ids"]
    assert full[: len(ex.input_ids)] == ex.input_ids


def test_completion_masks_prompt_and_ends_with_eos(smollm2_tokenizer):
    ex = encode_completion(smollm2_tokenizer, "2 + 2 =", " 4")
    n_prompt = len(smollm2_tokenizer("2 + 2 =")["input_ids"])
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[-1] == smollm2_tokenizer.eos_token_id
    assert smollm2_tokenizer.decode(ex.labels[n_prompt:]) == " 4<|im_end|>"


def test_tokenizer_without_chat_template_is_a_clear_error(smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    with pytest.raises(DatasetError, match="chat template"):
        LabelPrompter(tok, ["a", "b"])
