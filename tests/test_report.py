"""Choosing each exit policy's operating point on validation (elbert_jax.report)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from elbert_jax import exits, report


def _probs(layers: int, texts: int, classes: int, seed: int) -> np.ndarray:
    """Exits that grow more confident with depth, as trained ones do."""
    rng = np.random.default_rng(seed)
    sharp = np.linspace(0.5, 4.0, layers)[:, None, None]
    probs = rng.dirichlet(np.ones(classes), (layers, texts)) ** sharp
    return probs / probs.sum(-1, keepdims=True)


@pytest.mark.parametrize("criterion", report.CRITERIA)
def test_the_chosen_setting_is_the_best_by_its_criterion_within_the_budget(criterion):
    probs = _probs(4, 200, 3, 0)
    labels = np.random.default_rng(1).integers(0, 3, 200)
    cwb = exits.ExitPolicy("cwb", window=2)
    rows = report.choose_on_validation(probs, labels, probs, labels, cwb, max_cost=0.8,
                                       criterion=criterion)
    best = report.best_on_validation(rows, criterion)
    assert set(best) == set(report.SWEPT)
    last = probs[-1].argmax(-1)
    target = labels if criterion == "accuracy" else last
    for name, row in best.items():  # every candidate setting's score (exits.sweep is tested apart)
        windows = (2, 3, 4, 5) if name == "cwb" else (None,)
        policies = [dataclasses.replace(cwb, window=w) if w else exits.ExitPolicy(name) for w in windows]
        score = max(r["accuracy"] for p in policies for r in exits.sweep(p, jnp.asarray(probs), target)
                    if r["cost"] <= 0.8)
        assert row[f"validation_{criterion}"] == pytest.approx(score, abs=1e-6), name
        assert row["validation_cost"] <= 0.8
        assert row["test_accuracy"] == pytest.approx(row["validation_accuracy"], abs=1e-6)  # same set


def test_an_unknown_criterion_is_refused():
    probs = _probs(2, 4, 2, 0)
    with pytest.raises(ValueError, match="criterion='votes'"):
        report.choose_on_validation(probs, np.zeros(4, int), probs, np.zeros(4, int),
                                    exits.ExitPolicy("cwb"), criterion="votes")


def test_calibration_scores_before_and_after_temperatures():
    """ECE is |accuracy - confidence| weighted by bin; NLL the mean -log p of the label; and the
    temperatures fitted on a split lower its NLL."""
    probs = np.tile(np.array([0.8, 0.1, 0.1]), (1, 10, 1))  # one exit, always 0.8 sure of class 0
    labels = np.array([0] * 5 + [1] * 5)  # right half the time
    scores = report.calibration(probs, labels, np.array([1.0]))
    assert scores["ece"] == pytest.approx([0.3]) and scores["ece_calibrated"] == pytest.approx([0.3])
    assert scores["nll"] == pytest.approx([-(np.log(0.8) + np.log(0.1)) / 2])
    fitted = exits.fit_temperatures(probs, labels)
    tempered = report.calibration(probs, labels, fitted)
    assert tempered["nll_calibrated"][0] < scores["nll"][0]
    # the best temperature sets the top probability to 0.5, the accuracy
    assert np.asarray(exits.temper(jnp.asarray(probs), fitted[0])).max() == pytest.approx(0.5, abs=1e-4)
    assert tempered["ece_calibrated"] == pytest.approx([0.0], abs=1e-4)
