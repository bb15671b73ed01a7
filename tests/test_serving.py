"""Batcher: single requests from many threads, batched through one Predictor, each answered exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from elbert_jax.predict import Predictor
from elbert_jax.serving import Batcher

TEXTS = ["Operating profit rose to EUR 13.1 mn.", "", "Sales fell, the company said.",
         "The board meets on Monday.", "Net loss widened \"sharply\".",
         " ".join(["Revenue grew in every quarter of the year."] * 8)]  # longer than max_length


class Gated:
    """A Predictor whose ``predict`` waits for ``gate``: requests pile up behind it."""

    def __init__(self, inner: Predictor, fail_on: str | None = None):
        self.inner, self.fail_on = inner, fail_on
        self.batch_size, self.policy = inner.batch_size, inner.policy
        self.check_pairs = inner.check_pairs
        self.gate, self.entered, self.sizes = threading.Event(), threading.Event(), []

    def predict(self, texts, pairs=None, thresholds=None):
        self.entered.set()
        self.gate.wait(timeout=60)
        self.sizes.append(len(texts))
        if self.fail_on in texts:
            raise ValueError(f"cannot classify {self.fail_on!r}")
        return self.inner.predict(texts, pairs, thresholds=thresholds)


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert [(r["label"], r["exit_layer"], r.get("empty"), r.get("truncated")) for r in got] == \
        [(r["label"], r["exit_layer"], r.get("empty"), r.get("truncated")) for r in want]
    np.testing.assert_allclose([r["probs"] for r in got], [r["probs"] for r in want], atol=1e-5)


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor.from_workdir(trained[0], batch_size=8)


def test_concurrent_requests_get_their_own_rows(predictor):
    texts = TEXTS * 20
    want = predictor.predict(texts)
    with Batcher(predictor, max_batch=16) as batcher:
        with ThreadPoolExecutor(12) as pool:  # 12 clients submitting at once
            got = list(pool.map(batcher.predict, texts))
        assert batcher.requests == len(texts) and batcher.batches <= len(texts)
    assert_same_rows(got, want)


def test_per_request_thresholds(trained):
    static = Predictor.from_workdir(trained[0], name="static", layer=3, batch_size=8)
    layers = [1, None, 2, 3, 1, 2] * 3
    with Batcher(static) as batcher:
        futures = [batcher.submit(text, layer) for text, layer in zip(TEXTS * 3, layers)]
        got = [f.result(timeout=120) for f in futures]
    assert [r["exit_layer"] for r in got] == [3 if n is None else n for n in layers]
    assert_same_rows(got, static.predict(TEXTS * 3, thresholds=[3 if n is None else n
                                                                 for n in layers]))


def test_sentence_pairs(predictor):
    """Requests with a second sentence (RTE-style tasks) and without it, in one stream, for a
    Predictor built by hand that does not say which its model reads (``pair_column=None``; one
    from a workdir takes only the kind it was trained on: test_predict.py)."""
    predictor = dataclasses.replace(predictor, pair_column=None)
    pairs = [None, "Profit fell.", None, "The board met.", "Sales rose.", None]
    gated = Gated(predictor)
    with Batcher(gated) as batcher:
        futures = [batcher.submit(t, pair=q) for t, q in zip(TEXTS, pairs)]
        gated.gate.set()
        got = [f.result(timeout=120) for f in futures]
        with pytest.raises(TypeError, match="pair must be a str"):
            batcher.submit("Profit rose.", pair=3)
    paired = [i for i, q in enumerate(pairs) if q is not None]
    single = [i for i, q in enumerate(pairs) if q is None]
    assert_same_rows([got[i] for i in paired],
                     predictor.predict([TEXTS[i] for i in paired], [pairs[i] for i in paired]))
    assert_same_rows([got[i] for i in single], predictor.predict([TEXTS[i] for i in single]))
    differs = predictor.predict([TEXTS[i] for i in paired])  # the pair reaches the model
    assert any(a["probs"] != b["probs"] for a, b in zip(differs, [got[i] for i in paired]))


def test_requests_waiting_share_a_batch(predictor):
    gated = Gated(predictor)
    batcher = Batcher(gated, max_batch=4)
    futures = [batcher.submit(text) for text in TEXTS + TEXTS[:4]]  # 10 requests
    gated.gate.set()
    got = [f.result(timeout=120) for f in futures]
    batcher.close()
    # the worker held its first batch while the rest queued: the next batch is full
    assert sum(gated.sizes) == 10 and max(gated.sizes) == 4
    assert batcher.batches == len(gated.sizes)
    assert_same_rows(got, predictor.predict(TEXTS + TEXTS[:4]))


def test_a_failed_batch_fails_its_requests_only(predictor):
    gated = Gated(predictor, fail_on="boom")
    with Batcher(gated) as batcher:
        first = batcher.submit("boom")
        gated.entered.wait(timeout=60)  # the worker holds "boom" alone
        gated.gate.set()
        with pytest.raises(ValueError, match="cannot classify 'boom'"):
            first.result(timeout=60)
        assert batcher.predict(TEXTS[0])["label"] == predictor.predict(TEXTS[:1])[0]["label"]


def test_cancelled_requests_are_not_run(predictor):
    gated = Gated(predictor)
    with Batcher(gated) as batcher:
        first = batcher.submit(TEXTS[0])
        gated.entered.wait(timeout=60)
        dropped, kept = batcher.submit(TEXTS[2]), batcher.submit(TEXTS[3])
        assert dropped.cancel()
        gated.gate.set()
        assert kept.result(timeout=60)["label"] == predictor.predict(TEXTS[3:4])[0]["label"]
        first.result(timeout=60)
    assert gated.sizes == [1, 1]


def test_close_serves_what_was_submitted_then_refuses(predictor):
    batcher = Batcher(predictor)
    futures = [batcher.submit(text) for text in TEXTS]
    batcher.close()
    assert all(f.done() for f in futures) and not batcher._worker.is_alive()
    assert_same_rows([f.result() for f in futures], predictor.predict(TEXTS))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("Profit rose.")
    batcher.close()  # twice is fine


def test_bad_arguments(predictor):
    with Batcher(predictor) as batcher:
        with pytest.raises(TypeError, match="str"):
            batcher.submit(42)
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(predictor, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(predictor, max_wait_ms=-1)


def test_asyncio_handlers(predictor):
    async def handle_all(batcher: Batcher) -> list[dict]:
        return await asyncio.gather(*(batcher.apredict(text) for text in TEXTS))

    with Batcher(predictor, max_wait_ms=5) as batcher:
        got = asyncio.run(handle_all(batcher))
    assert_same_rows(got, predictor.predict(TEXTS))


@pytest.mark.parametrize("engine", ["refill", "masked"])
def test_warm_up_compiles_every_program_requests_use(trained, engine):
    predictor = Predictor.from_workdir(trained[0], batch_size=4, engine=engine)
    with Batcher(predictor, max_batch=8) as batcher:
        batcher.warm_up()
        programs = predictor.engine_for(False)._programs
        compiled = {key: fn._cache_size() for key, fn in programs.items()}
        with ThreadPoolExecutor(8) as pool:  # every bucket, batches of 1..8 rows
            list(pool.map(batcher.predict, TEXTS * 4))
        for text in TEXTS:
            batcher.predict(text)
        for n in range(1, 9):  # and every size of call straight through the Predictor
            predictor.predict((TEXTS * 2)[:n])
        assert programs.keys() == compiled.keys()
        assert {key: fn._cache_size() for key, fn in programs.items()} == compiled
