"""The HTML report in headless Chromium: it renders with no console errors and every plot is visible.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4,
NUL-separated JSON), so no driver or websocket package is needed. Skipped when Chromium is absent
(Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ftkit.evaluate import compare, evaluate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")

PROBLEM_EVENTS = ("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded")


class Chromium:
    """A headless Chromium spoken to over the DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        self._to_r, self._to_w = os.pipe()  # we write, Chromium reads on fd 3
        self._from_r, self._from_w = os.pipe()  # Chromium writes on fd 4, we read
        to_r, from_w = self._to_r, self._from_w

        def wire() -> None:
            # Move both ends out of the way first: one of them may already sit on fd 3 or 4.
            high_r, high_w = os.dup(to_r), os.dup(from_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)
            ready, _, _ = select.select([self._from_r], [], [], 0.5)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self._buf += chunk
        raise TimeoutError(method)

    def load(self, url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Open ``url``; return (every image's state, every console error / exception / error log)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(domain, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError("page never finished loading")
            self.call("Runtime.evaluate", {"expression": "1"}, session=session)
        js = ("JSON.stringify([...document.images].map(i => ({complete: i.complete, natural: i.naturalWidth, "
              "shown: i.getBoundingClientRect().width, alt: i.alt})))")
        value = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True}, session=session)
        images = json.loads(value["result"]["value"])
        problems = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown" or (
                method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert")
            ) or (method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"):
                problems.append(e)
        return images, problems

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_w, self._from_r):
            os.close(fd)


@pytest.fixture
def chromium(tmp_path: Path):
    browser = Chromium(tmp_path / "profile")
    try:
        yield browser
    finally:
        browser.close()


def _predictions(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    labels = ["neg", "neu", "pos"]
    data, preds = [], []
    for i in range(n):
        y = int(rng.integers(3))
        p = rng.dirichlet(np.ones(3))
        p[y] += rng.uniform(0, 1.5)
        p = p**3 / (p**3).sum()  # over-confident
        data.append({"id": str(i), "text": f"review number {i}", "label": labels[y]})
        preds.append({"id": str(i), "prediction": labels[int(p.argmax())],
                      "probabilities": dict(zip(labels, map(float, p), strict=True))})
    return data, preds


def assert_renders(browser: Chromium, page: Path, min_images: int) -> None:
    images, problems = browser.load(page.as_uri())
    assert not problems, f"console errors: {problems}"
    assert len(images) >= min_images
    for img in images:
        assert img["complete"] and img["natural"] > 0 and img["shown"] > 0, img


def test_report_renders_with_visible_plots(tmp_path: Path, chromium: Chromium) -> None:
    data, preds = _predictions(200, 0)
    report = evaluate(preds, data, calibrate="isotonic", bootstrap=100)
    report.training_curve = [{"step": s, "train_loss": 2 / s, "valid_loss": 2.2 / s} for s in range(1, 11)]
    report.cost = {"estimated_usd": 0.12, "actual_usd": 0.1}
    page = tmp_path / "report.html"
    report.to_html(page)
    # reliability, score distribution, confusion matrix, training loss, cost
    assert_renders(chromium, page, min_images=5)


def test_comparison_renders(tmp_path: Path, chromium: Chromium) -> None:
    data, preds_a = _predictions(150, 1)
    _, preds_b = _predictions(150, 2)
    page = tmp_path / "compare.html"
    compare({"a": preds_a, "b": preds_b}, data, bootstrap=0).to_html(page)
    assert_renders(chromium, page, min_images=3)


def test_the_check_catches_a_broken_page(tmp_path: Path, chromium: Chromium) -> None:
    """Negative control: a broken image and a script error must be seen, or the checks above prove nothing."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="data:image/png;base64,AAAA" alt="x">'
                    '<script>console.error("boom"); missingFunction();</script></body></html>')
    images, problems = chromium.load(page.as_uri())
    assert images[0]["natural"] == 0
    kinds = {p["method"] for p in problems}
    assert {"Runtime.consoleAPICalled", "Runtime.exceptionThrown"} <= kinds
