"""An Ollama ``Modelfile`` whose prompt template and stop tokens are the ones the model was trained with.

Ollama does not run Jinja: its templates are Go ``text/template``. Rather than translating Jinja (which
cannot be done in general), the chat template is *measured*: each role's message is rendered alone
with a marker as content, which gives the text before and after the content; the text the template
adds when no system message comes first (SmolLM2 adds a default system prompt) and the generation
prompt are measured the same way. The decomposition is then checked: rebuilding several
conversations from the measured pieces must give exactly what the Jinja template renders. A template
that does not decompose this way (one that merges turns, or renders content conditionally) gets a
:class:`ConfigError` instead of a Modelfile that would prompt the model differently from training.

For a classification job the Modelfile also carries the classification system prompt (``SYSTEM``),
so ``ollama run NAME "some text"`` is asked exactly what ftkit trained and scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text
from ftkit.errors import ConfigError

_MARK = "\x00FTKIT\x00"
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TurnTemplate:
    """A chat template measured as text around each message.

    Attributes:
        wrap: per role, the text before and after the message content.
        default_system: what the template inserts when the first message is not a system message.
        generation: the text that opens the assistant's answer.
    """

    wrap: dict[str, tuple[str, str]]
    default_system: str
    generation: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """The prompt these pieces give (what the Go template writes out)."""
        text = self.default_system if messages and messages[0]["role"] != "system" else ""
        for m in messages:
            before, after = self.wrap[m["role"]]
            text += before + m["content"] + after
        return text + (self.generation if add_generation_prompt else "")


def _apply(tokenizer: Any, messages: list[dict[str, str]], gen: bool = False) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen))


def measure_template(tokenizer: Any) -> TurnTemplate:
    """Decompose the tokenizer's chat template into per-role text, and check the decomposition.

    Raises:
        ConfigError: no chat template, or one that is not a per-message template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("this model has no chat template; an Ollama Modelfile needs one")
    system = _apply(tokenizer, [{"role": "system", "content": _MARK}])
    before, sep, after = system.partition(_MARK)
    if not sep:
        raise ConfigError("the chat template drops the system message; cannot write an Ollama template")
    wrap = {"system": (before, after)}
    user_alone = _apply(tokenizer, [{"role": "user", "content": _MARK}])
    with_sys = _apply(tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": _MARK}])
    user_part = with_sys.removeprefix(before + "S" + after)
    u_before, sep, u_after = user_part.partition(_MARK)
    if not sep or not user_alone.endswith(user_part):
        raise ConfigError("the chat template does not render messages one after another; cannot write an "
                          "Ollama template (pass the GGUF to a runtime that reads the embedded Jinja template)")
    wrap["user"] = (u_before, u_after)
    default_system = user_alone[: len(user_alone) - len(user_part)]
    convo = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    answer = _apply(tokenizer, [*convo, {"role": "assistant", "content": _MARK}])
    prefix = _apply(tokenizer, convo)
    a_before, sep, a_after = answer.removeprefix(prefix).partition(_MARK)
    if not answer.startswith(prefix) or not sep:
        raise ConfigError("the chat template renders assistant turns in a way that cannot be written for Ollama")
    wrap["assistant"] = (a_before, a_after)
    generation = _apply(tokenizer, convo, gen=True).removeprefix(prefix)
    measured = TurnTemplate(wrap=wrap, default_system=default_system, generation=generation)
    probes = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
         {"role": "assistant", "content": "b"}, {"role": "user", "content": "c\nd"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}],
    ]
    for msgs in probes:
        for gen in (False, True):
            if measured.render(msgs, gen) != _apply(tokenizer, msgs, gen):
                raise ConfigError("the chat template is not a plain per-message template (checked on sample "
                                  "conversations); cannot write an Ollama template that matches training")
    return measured


def _go(text: str) -> str:
    # Literal text inside a Go template: only "{{" needs escaping. No action trims whitespace ("{{-"):
    # the newlines around each message are part of the trained prompt.
    return text.replace("{{", '{{ "{{" }}')


def go_template(t: TurnTemplate) -> str:
    """The measured template as an Ollama (Go ``text/template``) prompt template over ``.Messages``."""
    parts = []
    if t.default_system:
        parts.append('{{ if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
                     f"{_go(t.default_system)}{{{{ end }}}}")
    parts.append("{{ range .Messages }}")
    for i, role in enumerate(_ROLES):
        before, after = t.wrap[role]
        head = "{{ if" if i == 0 else "{{ else if"
        parts.append(f'{head} eq .Role "{role}" }}}}{_go(before)}{{{{ .Content }}}}{_go(after)}')
    parts.append("{{ end }}{{ end }}")
    parts.append(_go(t.generation))
    return "".join(parts)


def stop_tokens(tokenizer: Any, t: TurnTemplate) -> list[str]:
    """The special tokens that end an assistant turn (from the measured suffix), plus EOS."""
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    specials |= {str(tok) for tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values()
                 if getattr(tok, "special", False)}
    after = t.wrap["assistant"][1]
    stops = [s for s in sorted(specials, key=len, reverse=True) if s and s in after]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops


def _quote(text: str) -> str:
    if '"""' in text:
        raise ConfigError('a template or system prompt containing """ cannot be written into a Modelfile')
    return f'"""{text}"""'


def write_modelfile(
    out_dir: str | Path,
    gguf_name: str,
    tokenizer: Any,
    *,
    system: str | None = None,
    temperature: float | None = None,
) -> Path:
    """Write ``out_dir/Modelfile`` next to the GGUF file ``gguf_name`` (relative, so the folder can move).

    Args:
        out_dir: the export folder.
        gguf_name: the GGUF file's name inside ``out_dir``.
        tokenizer: the tokenizer whose chat template the model was trained with.
        system: a default system prompt (a classifier's preamble with its labels).
        temperature: a default sampling temperature (0 for a classifier: the argmax label).

    Returns:
        The Modelfile's path.
    """
    t = measure_template(tokenizer)
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(go_template(t))}"]
    if system is not None:
        lines.append(f"SYSTEM {_quote(system)}")
    for stop in stop_tokens(tokenizer, t):
        plain = not any(c.isspace() or c == '"' for c in stop)
        lines.append(f"PARAMETER stop {stop if plain else _quote(stop)}")
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature:g}")
    path = Path(out_dir) / "Modelfile"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
