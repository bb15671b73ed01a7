"""Single requests from many threads, served in batches: the front a trading feed needs.

Early exit pays at large batch sizes only if requests share a batch: a news feed or a web handler
sends one headline at a time. ``Batcher`` puts each request on a queue and returns a
``concurrent.futures.Future``; one worker thread takes every request waiting when it is free (up to
``max_batch``), runs them as one ``Predictor.predict`` call (the ``refill`` engine by default: a
text that exits at layer 2 frees its slot for the next one) and resolves the futures. With
``max_wait_ms=0`` (the default) it never waits for more requests: a lone request runs at once, and
under load the batches grow by themselves with what arrives while the previous one runs.
``bench/serving.py`` measures latency and throughput against one ``predict`` per request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any, NamedTuple

from elbert_jax import exits
from elbert_jax.predict import Predictor, take_ready


class _Request(NamedTuple):
    text: str
    pair: str | None
    threshold: float | None
    future: Future


_STOP = object()


class Batcher:
    """Thread-safe micro-batching over one ``Predictor`` (which only the worker thread touches).

    ``submit(text, threshold=None, pair=None)`` -> a future of the row ``Predictor.predict`` gives
    for the text (``threshold`` replaces the policy's for this request only; ``pair``: the second
    sentence of a sentence-pair task). A failed batch sets the exception on each of its futures and
    the worker goes on. ``close()`` (or leaving a ``with`` block) serves
    what was submitted before it, then stops the worker; later submits raise ``RuntimeError``.
    """

    def __init__(self, predictor: Predictor, max_batch: int | None = None,
                 max_wait_ms: float = 0.0):
        max_batch = predictor.batch_size if max_batch is None else max_batch
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch} and "
                             f"{max_wait_ms}")
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait_ms / 1e3
        self.requests = self.batches = 0  # served so far: mean batch size = requests / batches
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submits against close
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="elbert_jax-batcher", daemon=True)
        self._worker.start()

    def submit(self, text: str, threshold: float | None = None, pair: str | None = None
               ) -> Future:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if pair is not None and not isinstance(pair, str):
            raise TypeError(f"pair must be a str, got {type(pair).__name__}")
        self.predictor.check_pairs(pair is not None)
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("this Batcher is closed")
            self._queue.put(_Request(text, pair, None if threshold is None else float(threshold),
                                     future))
        return future

    def predict(self, text: str, threshold: float | None = None, pair: str | None = None
                ) -> dict[str, Any]:
        """``submit(...).result()``: blocks this thread, not the others."""
        return self.submit(text, threshold, pair).result()

    async def apredict(self, text: str, threshold: float | None = None, pair: str | None = None
                       ) -> dict[str, Any]:
        """For asyncio handlers: awaits the row without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(text, threshold, pair))

    def warm_up(self) -> None:
        """``Predictor.warm_up`` for every batch up to ``max_batch``: call it before taking traffic
        (it runs on the calling thread), or the first requests wait for compilation (seconds)."""
        self.predictor.warm_up(self.max_batch)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._worker.join()

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _serve(self) -> None:
        while True:  # _STOP is the last item ever queued (close refuses later submits)
            batch = take_ready(self._queue, self.max_batch, self.max_wait)
            stop = batch[-1] is _STOP
            if stop:
                batch.pop()
            if batch:
                self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if r.future.set_running_or_notify_cancel()]  # drop cancelled
        for paired in (False, True):  # texts with and without a pair tokenise as separate calls
            group = [r for r in batch if (r.pair is not None) == paired]
            if group:
                self._predict(group, paired)

    def _predict(self, batch: list[_Request], paired: bool) -> None:
        thresholds = None
        if any(r.threshold is not None for r in batch):
            default = exits.default_threshold(self.predictor.policy)
            thresholds = [default if r.threshold is None else r.threshold for r in batch]
        try:
            rows = self.predictor.predict([r.text for r in batch],
                                          [r.pair for r in batch] if paired else None,
                                          thresholds=thresholds)
        except Exception as error:  # every request of the batch learns why; the worker goes on
            for r in batch:
                r.future.set_exception(error)
            return
        self.requests += len(batch)
        self.batches += 1
        for r, row in zip(batch, rows):
            r.future.set_result(row)
