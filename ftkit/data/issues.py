"""Validation issues and the catalogue of stable codes.

Codes are part of the public API: scripts match on them, docs list them, and a test
triggers every one with a file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Level = Literal["error", "warning"]

CODES: dict[str, tuple[Level, str]] = {
    # encoding and framing
    "empty_file": ("error", "the file holds no examples"),
    "bom": ("error", "the file starts with a UTF-8 byte-order mark"),
    "invalid_utf8": ("error", "the line is not valid UTF-8"),
    "blank_line": ("error", "an empty line between examples"),
    "invalid_json": ("error", "the line is not valid JSON"),
    "truncated_last_line": ("error", "the last line is cut off (invalid JSON and no final newline)"),
    "not_an_object": ("error", "the line is JSON but not an object"),
    "unknown_format": ("error", "the example matches no known format"),
    "mixed_formats": ("error", "the example's format differs from the file's"),
    "format_mismatch": ("error", "the file's format does not fit the job's task"),
    "duplicate_example": ("warning", "the same example appears more than once"),
    # chat
    "missing_messages": ("error", "no `messages` key"),
    "messages_not_list": ("error", "`messages` is not a list"),
    "empty_messages": ("error", "`messages` is empty"),
    "message_not_object": ("error", "a message is not an object"),
    "missing_role": ("error", "a message has no `role`"),
    "unknown_role": ("error", "a message's role is not system, user, assistant, tool or function"),
    "unknown_message_key": ("error", "a message has a key that is not allowed"),
    "missing_content": ("error", "a message has no content (and no tool calls)"),
    "invalid_content": ("error", "a message's content is neither text nor a list of parts"),
    "invalid_name": ("error", "a message's `name` is not a string"),
    "invalid_weight": ("error", "`weight` must be 0 or 1"),
    "weight_not_on_assistant": ("error", "`weight` is allowed on assistant messages only"),
    "invalid_tool_call": ("error", "a tool call is not {id, type: function, function: {name, arguments}}"),
    "missing_tool_call_id": ("error", "a tool message has no `tool_call_id`"),
    "invalid_tools": ("error", "`tools` is not a list of function definitions"),
    "no_assistant_message": ("error", "the example has no assistant message to learn from"),
    "no_trained_message": ("warning", "every assistant message has weight 0: nothing is learned"),
    "missing_user_message": ("warning", "the example has no user message"),
    "unknown_example_key": ("warning", "the example has a top-level key the format does not define"),
    # completion
    "missing_prompt": ("error", "no `prompt`"),
    "missing_completion": ("error", "no `completion`"),
    "invalid_prompt": ("error", "`prompt` is not a string"),
    "invalid_completion": ("error", "`completion` is not a non-empty string"),
    # preference
    "missing_input": ("error", "no `input` with `messages`"),
    "missing_output": ("error", "no `preferred_output` or `non_preferred_output`"),
    "invalid_output": ("error", "an output is not a list of exactly one assistant message with text"),
    # classification
    "missing_text": ("error", "no `text`"),
    "invalid_text": ("error", "`text` is not a non-empty string"),
    "missing_label": ("error", "no `label`"),
    "invalid_label": ("error", "`label` is not a string, number or boolean"),
    "unknown_label": ("error", "the label is not one of the job's labels"),
    "too_few_labels": ("error", "classification needs at least two distinct labels"),
    # targets
    "too_few_examples": ("error", "OpenAI needs at least 10 examples"),
    "unknown_model": ("warning", "the model is not in ftkit's list of fine-tunable models"),
    "format_not_supported": ("error", "the target model cannot be trained on this format"),
    "example_too_long": ("error", "the example is longer than the model's context"),
    "example_truncated": ("warning", "the example is over OpenAI's per-example limit and will be truncated"),
    "role_not_supported": ("warning", "the target may reject this role (developer / deprecated function)"),
    "image_in_assistant": ("error", "images are allowed in user messages only"),
    "model_not_found": ("error", "the hf target's model folder does not exist or has no tokenizer"),
}


class Issue(BaseModel):
    """One problem in a data file.

    Attributes:
        line: 1-based line number, or None for a problem with the whole file.
        code: a stable code from :data:`CODES`.
        message: one line saying what is wrong and where.
    """

    line: int | None
    code: str
    message: str

    @property
    def level(self) -> Level:
        """``error`` or ``warning``, from the catalogue."""
        return CODES[self.code][0]
