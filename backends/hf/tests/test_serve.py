"""ftkit serve, driven by the real ``openai`` client (and by OpenAIPredictor) on loopback."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ftkit_hf.serve import Server  # noqa: E402

from ftkit.data.convert import classification_messages  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "sk-test-serve"


@pytest.fixture(scope="module")
def served(trained_classifier):
    with Server([f"spam={trained_classifier.job.id}"], api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def predictor(trained_classifier):
    return trained_classifier.job.model()


CHAT = [{"role": "user", "content": "Say something about the weather."}]


def test_models_endpoint_lists_the_alias(client):
    assert [m.id for m in client.models.list()] == ["spam"]
    assert client.models.retrieve("spam").owned_by == "ftkit:hf"


def test_chat_completion_is_the_models_greedy_answer_with_its_logprobs(client, predictor):
    import torch

    r = client.chat.completions.create(model="spam", messages=CHAT, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    choice = r.choices[0]
    tokens = choice.logprobs.content
    assert r.usage.completion_tokens == len(tokens) == 6 and choice.finish_reason == "length"
    assert "".join(t.token for t in tokens) == choice.message.content
    # Independent check: a plain forward pass over the prompt and the generated tokens gives the same logprobs.
    tok = predictor.tokenizer
    prompt = tok(tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    # Each reported token's bytes name one vocabulary entry (byte-level BPE shows bytes as characters).
    from ftkit_hf.serve.generation import _byte_decoder

    as_char = {b: c for c, b in _byte_decoder().items()}
    ids = prompt + [tok.convert_tokens_to_ids("".join(as_char[b] for b in t.bytes)) for t in tokens]
    assert r.usage.prompt_tokens == len(prompt)
    with torch.no_grad():
        logp = torch.log_softmax(predictor.model(torch.tensor([ids])).logits[0].float(), -1)
    for k, t in enumerate(tokens):
        row = logp[len(prompt) - 1 + k]
        assert int(row.argmax()) == ids[len(prompt) + k]  # greedy
        assert t.logprob == pytest.approx(float(row.max()), abs=1e-4)
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-6) and len(t.top_logprobs) == 3


def test_stream_gives_the_same_text_and_stop_cuts_it(client):
    full = client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8, temperature=0)
    text = full.choices[0].message.content
    chunks = list(client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop
    cut = client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8, temperature=0, stop=stop,
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.index(stop)]
    with_logprobs = client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8, temperature=0,
                                                   logprobs=True)
    streamed_logprobs = [t for c in client.chat.completions.create(model="spam", messages=CHAT, max_tokens=8,
                                                                     temperature=0, logprobs=True, stream=True)
                         if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 5)) for t in streamed_logprobs] == [
        (t.token, round(t.logprob, 5)) for t in with_logprobs.choices[0].logprobs.content]


def test_classification_probabilities_equal_job_model_classify(client, served, trained_classifier, predictor):
    texts = trained_classifier.texts[:6]
    expected = predictor.classify(texts)
    spread = [math.log(e.probabilities["spam"]) for e in expected]
    assert max(spread) - min(spread) > 1e-3  # the texts get different answers: matching them means something
    for text, exp in zip(texts, expected, strict=True):
        r = client.chat.completions.create(model="spam", messages=classification_messages(text, ["ham", "spam"]),
                                           max_tokens=2, temperature=0, logprobs=True, top_logprobs=5)
        choice = r.choices[0]
        assert choice.message.content == exp.label
        first = choice.logprobs.content[0]
        alts = {a.token: a.logprob for a in first.top_logprobs}
        extra = choice.model_extra["label_probabilities"]
        for lab in ("ham", "spam"):
            # Within 1e-4 in log space: as strict for a probability of 1e-4 as for one of 0.5.
            assert alts[lab] == pytest.approx(math.log(exp.probabilities[lab]), abs=1e-4)
            assert extra[lab] == pytest.approx(exp.probabilities[lab], rel=1e-4)

    chunks = [c for c in client.chat.completions.create(
        model="spam", messages=classification_messages(texts[0], ["ham", "spam"]), temperature=0, stream=True)
        if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected[0].label
    streamed = next(c.choices[0].model_extra["label_probabilities"] for c in chunks
                    if (c.choices[0].model_extra or {}).get("label_probabilities"))
    assert streamed["spam"] == pytest.approx(expected[0].probabilities["spam"], rel=1e-4)

    # OpenAIPredictor's first-token scoring, pointed at the server, gives ftkit's answer.
    from ftkit_openai.config import OpenAIConfig
    from ftkit_openai.predictor import OpenAIPredictor

    remote = OpenAIPredictor("spam", OpenAIConfig(base_url=served.url + "/v1", api_key=KEY, max_retries=0),
                             labels=["ham", "spam"])
    for got, exp in zip(remote.classify(texts), expected, strict=True):
        assert got.label == exp.label and got.unparseable_mass == pytest.approx(0.0, abs=1e-6)
        for lab in ("ham", "spam"):
            assert got.probabilities[lab] == pytest.approx(exp.probabilities[lab], rel=1e-4)


def test_concurrent_classifications_are_scored_in_one_batch(client, served, trained_classifier, predictor):
    texts = trained_classifier.texts[:8]
    expected = predictor.classify(texts)
    # Hold the engine busy so that all eight requests are waiting when it frees up.
    busy = served.engine.call(lambda: time.sleep(1.0))
    before = len(served.engine.batches)

    def ask(text: str) -> dict:
        r = client.chat.completions.create(model="spam", messages=classification_messages(text, ["ham", "spam"]),
                                           temperature=0)
        return r.choices[0].model_extra["label_probabilities"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, texts))
    busy.result()
    assert served.engine.batches[before:] == [8]
    for g, exp in zip(got, expected, strict=True):
        assert g["spam"] == pytest.approx(exp.probabilities["spam"], rel=1e-4)


def test_errors_are_openai_errors(served, client):
    bad = openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="nope", messages=CHAT)
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="spam", messages=CHAT, n=2)
    with pytest.raises(openai.BadRequestError, match="context of 512 tokens"):
        client.chat.completions.create(model="spam", messages=CHAT, max_tokens=600)


def test_serve_command_without_models_is_one_line_error():
    from typer.testing import CliRunner

    from ftkit.cli import app

    result = CliRunner().invoke(app, ["serve"])  # through the one top-level handler: a config error is exit 2
    assert result.exit_code == 2 and "nothing to serve" in result.output and "Traceback" not in result.output


def test_a_base_model_is_served_beside_nothing_else(tiny_llama_dir):
    from ftkit_hf.serve import load_models

    models = load_models([], base=[f"tiny={tiny_llama_dir}"], device="cpu", precision="fp32")
    assert [(m.name, m.is_classifier) for m in models] == [("tiny", False)]
    with Server(models) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)  # no key set
        r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3, temperature=0)
        assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
        assert client.models.retrieve("tiny").owned_by == "ftkit:base"
