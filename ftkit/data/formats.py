"""The five data formats: detection and the checks every target shares.

``text`` is unlabelled text (``{"text": ...}`` lines) for domain adaptation: continued pre-training of
a decoder, masked-LM training of an encoder. A line with ``text`` and ``label`` is classification; a
``text`` line without a label in a classification file is checked as classification (a missing label).

Each ``check_*`` function looks at one parsed example and returns its issues; none stops
at the first problem.
"""

from __future__ import annotations

from typing import Any, Literal

from ftkit.data.issues import Issue

Format = Literal["chat", "completion", "preference", "classification", "text"]
FORMATS: tuple[Format, ...] = ("chat", "completion", "preference", "classification", "text")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"})
EXAMPLE_KEYS: dict[str, frozenset[str]] = {
    "chat": frozenset({"messages", "tools", "parallel_tool_calls", "functions"}),
    "completion": frozenset({"prompt", "completion"}),
    "preference": frozenset({"input", "preferred_output", "non_preferred_output"}),
    "classification": frozenset({"text", "label", "id", "metadata"}),
    "text": frozenset({"text", "id", "metadata"}),
}


def detect_format(obj: dict[str, Any]) -> Format | None:
    """The format an example's keys say it is, or None."""
    if "preferred_output" in obj or "non_preferred_output" in obj or ("input" in obj and "messages" not in obj):
        return "preference"
    if "messages" in obj or "tools" in obj or "parallel_tool_calls" in obj:
        return "chat"
    if "prompt" in obj or "completion" in obj:
        return "completion"
    if "label" in obj:
        return "classification"
    if "text" in obj:
        return "text"
    return None


def check(fmt: Format, obj: dict[str, Any], line: int, labels: frozenset[str] | None = None) -> list[Issue]:
    """All format-level issues of one example."""
    issues: list[Issue] = []
    if fmt == "chat":
        check_messages(obj, line, issues)
        _check_tools(obj.get("tools"), line, issues)
    elif fmt == "completion":
        _check_completion(obj, line, issues)
    elif fmt == "preference":
        _check_preference(obj, line, issues)
    elif fmt == "text":
        _check_text(obj, line, issues)
    else:
        _check_classification(obj, line, issues, labels)
    extra = set(obj) - EXAMPLE_KEYS[fmt]
    if extra:
        issues.append(Issue(line=line, code="unknown_example_key", message=f"unknown key(s) {sorted(extra)}"))
    return issues


def check_messages(obj: dict[str, Any], line: int, issues: list[Issue], where: str = "messages") -> None:
    """Check a ``messages`` list (chat examples, and a preference example's input)."""
    messages = obj.get("messages")
    if "messages" not in obj:
        issues.append(Issue(line=line, code="missing_messages", message=f"no `{where}`"))
        return
    if not isinstance(messages, list):
        issues.append(Issue(line=line, code="messages_not_list", message=f"`{where}` is {type(messages).__name__}"))
        return
    if not messages:
        issues.append(Issue(line=line, code="empty_messages", message=f"`{where}` is empty"))
        return
    assistants = trained = users = 0
    for i, m in enumerate(messages):
        # Fast path for the common message: {"role": ..., "content": "non-empty text"} and nothing else.
        if type(m) is dict and len(m) == 2 and type(m.get("content")) is str and m["content"]:
            role = m.get("role")
            if role == "user":
                users += 1
                continue
            if role == "assistant":
                assistants += 1
                trained += 1
                continue
            if role == "system":
                continue
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            issues.append(Issue(line=line, code="message_not_object", message=f"{at} is not an object"))
            continue
        role = m.get("role")
        if role is None:
            issues.append(Issue(line=line, code="missing_role", message=f"{at} has no role"))
        elif not isinstance(role, str) or role not in ROLES:
            issues.append(Issue(line=line, code="unknown_role", message=f"{at} has role {role!r}"))
        extra = set(m) - MESSAGE_KEYS
        if extra:
            issues.append(Issue(line=line, code="unknown_message_key", message=f"{at} has key(s) {sorted(extra)}"))
        _check_content(m, role, at, line, issues)
        if "name" in m and not isinstance(m["name"], str):
            issues.append(Issue(line=line, code="invalid_name", message=f"{at}.name is not a string"))
        if "weight" in m:
            if role != "assistant":
                issues.append(Issue(line=line, code="weight_not_on_assistant", message=f"{at} ({role}) has a weight"))
            elif m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
                issues.append(Issue(line=line, code="invalid_weight", message=f"{at}.weight is {m['weight']!r}"))
        if role == "assistant":
            assistants += 1
            trained += m.get("weight", 1) != 0
            _check_tool_calls(m.get("tool_calls"), at, line, issues)
        elif role == "user":
            users += 1
        elif role == "tool" and not isinstance(m.get("tool_call_id"), str):
            issues.append(Issue(line=line, code="missing_tool_call_id", message=f"{at} has no tool_call_id"))
    if where == "messages":
        if not assistants:
            issues.append(Issue(line=line, code="no_assistant_message", message="no assistant message"))
        elif not trained:
            issues.append(Issue(line=line, code="no_trained_message", message="all assistant messages have weight 0"))
    if not users:
        issues.append(Issue(line=line, code="missing_user_message", message=f"no user message in `{where}`"))


def _check_content(m: dict[str, Any], role: Any, at: str, line: int, issues: list[Issue]) -> None:
    content = m.get("content")
    if content is None:
        if not (role == "assistant" and (m.get("tool_calls") or m.get("function_call"))):
            issues.append(Issue(line=line, code="missing_content", message=f"{at} has no content"))
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                issues.append(Issue(line=line, code="invalid_content", message=f"{at}.content has an invalid part"))
                break
    elif not isinstance(content, str):
        issues.append(Issue(line=line, code="invalid_content", message=f"{at}.content is {type(content).__name__}"))
    elif not content and role != "assistant":
        issues.append(Issue(line=line, code="missing_content", message=f"{at}.content is empty"))


def _check_tool_calls(calls: Any, at: str, line: int, issues: list[Issue]) -> None:
    if calls is None:
        return
    ok = isinstance(calls, list) and all(
        isinstance(c, dict)
        and isinstance(c.get("id"), str)
        and c.get("type") == "function"
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        and isinstance(c["function"].get("arguments"), str)
        for c in calls
    )
    if not ok:
        issues.append(Issue(line=line, code="invalid_tool_call", message=f"{at}.tool_calls is malformed"))


def _check_tools(tools: Any, line: int, issues: list[Issue]) -> None:
    if tools is None:
        return
    ok = isinstance(tools, list) and all(
        isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    )
    if not ok:
        issues.append(Issue(line=line, code="invalid_tools", message="`tools` is not a list of function definitions"))


def _check_completion(obj: dict[str, Any], line: int, issues: list[Issue]) -> None:
    if "prompt" not in obj:
        issues.append(Issue(line=line, code="missing_prompt", message="no `prompt`"))
    elif not isinstance(obj["prompt"], str):
        issues.append(Issue(line=line, code="invalid_prompt", message="`prompt` is not a string"))
    if "completion" not in obj:
        issues.append(Issue(line=line, code="missing_completion", message="no `completion`"))
    elif not isinstance(obj["completion"], str) or not obj["completion"]:
        issues.append(Issue(line=line, code="invalid_completion", message="`completion` is not a non-empty string"))


def _check_preference(obj: dict[str, Any], line: int, issues: list[Issue]) -> None:
    inp = obj.get("input")
    if not isinstance(inp, dict):
        issues.append(Issue(line=line, code="missing_input", message="no `input` object with `messages`"))
    else:
        check_messages(inp, line, issues, where="input.messages")
        _check_tools(inp.get("tools"), line, issues)
    for key in ("preferred_output", "non_preferred_output"):
        out = obj.get(key)
        if out is None:
            issues.append(Issue(line=line, code="missing_output", message=f"no `{key}`"))
        elif not (
            isinstance(out, list)
            and len(out) == 1
            and isinstance(out[0], dict)
            and out[0].get("role") == "assistant"
            and isinstance(out[0].get("content"), str)
        ):
            issues.append(Issue(line=line, code="invalid_output", message=f"`{key}` must be one assistant message"))


def _check_text(obj: dict[str, Any], line: int, issues: list[Issue]) -> None:
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        issues.append(Issue(line=line, code="invalid_text", message=f"`text` is {_what(text)}, not a non-empty string"))


def _what(value: Any) -> str:
    if isinstance(value, str):
        return "empty" if not value else "only whitespace"
    return "null" if value is None else type(value).__name__


def _check_classification(obj: dict[str, Any], line: int, issues: list[Issue], labels: frozenset[str] | None) -> None:
    if "text" not in obj:
        issues.append(Issue(line=line, code="missing_text", message="no `text`"))
    elif not isinstance(obj["text"], str) or not obj["text"].strip():
        issues.append(Issue(line=line, code="invalid_text", message="`text` is not a non-empty string"))
    if "label" not in obj:
        issues.append(Issue(line=line, code="missing_label", message="no `label`"))
    elif not isinstance(obj["label"], str | int | float | bool) or obj["label"] == "":
        issues.append(Issue(line=line, code="invalid_label", message=f"`label` is {obj['label']!r}"))
    elif labels is not None and label_str(obj["label"]) not in labels:
        issues.append(
            Issue(line=line, code="unknown_label", message=f"label {obj['label']!r} is not one of {sorted(labels)}")
        )


def label_str(label: Any) -> str:
    """Labels are compared as strings: 1, "1" and True are told apart as "1", "1", "true"."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)
