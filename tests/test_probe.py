"""The per-depth linear probe (probe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from elbert_jax import checkpoints, probe


def test_probe_separates_linearly_separable_classes_and_picks_l2_on_validation():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3

    def sample(n):
        y = rng.integers(0, 3, n)
        return centres[y] + rng.normal(size=(n, 8)) + 50.0, y  # an offset standardising removes

    (x, y), (xv, yv), (xt, yt) = sample(300), sample(100), sample(200)
    fitted = probe.fit_probe(x, y, xv, yv, num_labels=3)
    assert fitted.l2 in probe.L2_GRID
    assert (fitted.predict(xt) == yt).mean() > 0.95
    shuffled = probe.fit_probe(x, rng.permutation(y), xv, yv, num_labels=3)
    assert (shuffled.predict(xt) == yt).mean() < 0.6  # no signal, no accuracy


def test_probe_workdir_reports_every_depth_and_the_exit_heads(trained, capsys):
    workdir, _ = trained
    result = probe.probe_workdir(workdir)
    _, test = checkpoints.metrics_records(workdir)
    layers = len(test["per_exit_accuracy"])
    assert [r["depth"] for r in result["rows"]] == list(range(layers + 1))
    assert result["rows"][0]["head_test"] is None
    np.testing.assert_allclose([r["head_test"] for r in result["rows"][1:]],
                               test["per_exit_accuracy"], atol=1e-5)
    for r in result["rows"]:
        assert 0 <= r["probe_test"] <= 1 and 0 <= r["probe_validation"] <= 1
    probe.main([str(workdir), "--json"])
    assert json.loads(capsys.readouterr().out) == result
    probe.main([str(workdir)])
    assert "| embeddings |" in capsys.readouterr().out


def test_probe_refuses_a_folder_that_is_not_a_workdir(tmp_path, capsys):
    with pytest.raises(SystemExit):
        probe.main([str(tmp_path)])
    assert "no config.json" in capsys.readouterr().err
