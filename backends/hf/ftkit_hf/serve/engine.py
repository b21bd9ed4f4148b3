"""One thread runs every model call; classification requests that wait together are scored together.

HTTP handlers never touch torch: they put a task on the queue and await its future. The engine thread
takes the oldest task; if it is a classification, every other classification for the same model that
is already waiting joins it (up to ``max_batch`` texts) and the batch goes through ftkit's packed
label scorer in one call, which is where concurrent clients gain throughput on a CPU. No request
waits for a batch to fill: batches form only from requests that queued while the engine was busy.

Generation tasks run one at a time (a single sequence per forward pass); a streamed answer's tokens
are handed to the event loop as they are made.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ftkit.predictor import Classification


@dataclass
class _Classify:
    model: Any  # the HFPredictor
    texts: list[str]
    future: Future[list[Classification]] = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)


class Engine:
    """The model thread.

    Args:
        max_batch: the most texts one classification batch scores.
    """

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self._tasks: deque[_Classify | _Call] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.batches: list[int] = []  # sizes of the classification batches run (the benchmark reports them)
        self._thread = threading.Thread(target=self._loop, name="ftkit-serve-engine", daemon=True)
        self._thread.start()

    def classify(self, model: Any, texts: Sequence[str]) -> Future[list[Classification]]:
        """Queue texts for exact label scoring on ``model``; the future holds one Classification per text."""
        task = _Classify(model, list(texts))
        self._put(task)
        return task.future

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue any model work (a generation) to run on the engine thread."""
        task = _Call(fn)
        self._put(task)
        return task.future

    def close(self) -> None:
        """Stop the thread after the queued work."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)

    def _put(self, task: _Classify | _Call) -> None:
        with self._cv:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._tasks.append(task)
            self._cv.notify()

    def _take(self) -> list[_Classify] | _Call | None:
        with self._cv:
            while not self._tasks and not self._closed:
                self._cv.wait()
            if not self._tasks:
                return None
            first = self._tasks.popleft()
            if isinstance(first, _Call):
                return first
            batch, size, rest = [first], len(first.texts), deque[_Classify | _Call]()
            while self._tasks:
                t = self._tasks.popleft()
                if isinstance(t, _Classify) and t.model is first.model and size + len(t.texts) <= self.max_batch:
                    batch.append(t)
                    size += len(t.texts)
                else:
                    rest.append(t)
            self._tasks.extendleft(reversed(rest))
            return batch

    def _loop(self) -> None:
        while (work := self._take()) is not None:
            if isinstance(work, _Call):
                if work.future.set_running_or_notify_cancel():
                    try:
                        work.future.set_result(work.fn())
                    except BaseException as e:  # handed to the awaiting request, never lost
                        work.future.set_exception(e)
                continue
            live = [t for t in work if t.future.set_running_or_notify_cancel()]
            if not live:
                continue
            texts = [x for t in live for x in t.texts]
            self.batches.append(len(texts))
            try:
                results = live[0].model.classify(texts)
            except BaseException as e:
                for t in live:
                    t.future.set_exception(e)
                continue
            start = 0
            for t in live:
                t.future.set_result(results[start : start + len(t.texts)])
                start += len(t.texts)
