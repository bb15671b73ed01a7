"""Paired comparisons of two recipes: McNemar's test, the bootstrap interval, and the CLI on runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from elbert_jax import compare as compare_lib
from elbert_jax import summary as summary_lib


def test_mcnemar_counts_and_exact_p():
    a = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 0], bool)
    b = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    result = compare_lib.mcnemar(a, b)
    assert (result["a_right"], result["b_right"], result["a_only"], result["b_only"]) == (3, 9, 0, 6)
    assert result["p_mcnemar"] == pytest.approx(2 * 0.5 ** 6)  # 6 of 6 discordant go B's way
    assert compare_lib.mcnemar(a, a)["p_mcnemar"] == 1.0
    flipped = compare_lib.mcnemar(b, a)
    assert (flipped["a_only"], flipped["b_only"]) == (6, 0)
    assert flipped["p_mcnemar"] == result["p_mcnemar"]


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.8
    assert compare_lib.bootstrap_interval([(a, a)], 500) == (0.0, 0.0)
    assert compare_lib.bootstrap_interval([(np.zeros(50, bool), np.ones(50, bool))], 500) == (100, 100)
    b = a.copy()
    b[np.flatnonzero(~a)[:20]] = True  # B gets 20 more of 400 right: +5 points, none lost
    low, high = compare_lib.bootstrap_interval([(a, b)], 2000)
    assert 0 < low < 5 < high < 10
    wide = compare_lib.bootstrap_interval([(a[:100], b[:100])], 2000)
    pooled = compare_lib.bootstrap_interval([(a[:100], b[:100]), (a[100:], b[100:])], 2000)
    assert pooled == compare_lib.bootstrap_interval([(a[:100], b[:100]), (a[100:], b[100:])], 2000)
    assert pooled[1] - pooled[0] < wide[1] - wide[0]  # more texts, a narrower interval


def test_compare_runs_reproduces_their_test_scores(trained, second_run, capsys):
    first, _ = trained
    result = compare_lib.compare([first], [second_run], resamples=200)
    pair = result["pairs"][0]
    for workdir, key in ((first, "a_right"), (second_run, "b_right")):
        assert pair[key] == summary_lib.run_summary(workdir)["test_right"]
    assert result["pooled"]["a_only"] == pair["a_only"] and result["pooled"]["texts"] == pair["texts"]
    same = compare_lib.compare([first], [first], split="validation", layer=1, resamples=50)
    assert same["pooled"]["a_only"] == same["pooled"]["b_only"] == 0
    assert same["pooled"]["interval"] == (0.0, 0.0) and same["pooled"]["p_mcnemar"] == 1.0
    compare_lib.main(["--a", str(first), "--b", str(second_run), "--resamples", "100", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"][0]["b_right"] == pair["b_right"]
    compare_lib.main(["--a", str(first), "--b", str(second_run), "--resamples", "100"])
    assert "**pooled**" in capsys.readouterr().out


def test_compare_refuses_unpaired_runs(trained, tmp_path, capsys, other_split_run):
    first, _ = trained
    other = other_split_run
    with pytest.raises(ValueError, match="not scored on the same texts"):
        compare_lib.compare([first], [other], resamples=10)
    with pytest.raises(ValueError, match="as many runs"):
        compare_lib.compare([first, first], [first])
    with pytest.raises(ValueError, match="exits 1..3"):
        compare_lib.right_per_text(first, layer=4)
    with pytest.raises(SystemExit) as exit_:
        compare_lib.main(["--a", str(tmp_path), "--b", str(first)])
    assert exit_.value.code == 2 and "not a workdir written by train.py" in capsys.readouterr().err


def test_a_side_under_the_policy_its_report_chose(trained, tmp_path):
    from elbert_jax import checkpoints, report

    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir)
    with pytest.raises(FileNotFoundError, match="no report"):
        compare_lib.compare([workdir], [workdir], b_policy="cwb", resamples=10)
    config = checkpoints.saved_config(workdir)
    chosen = report.write_report(config, workdir, max_cost=1.0)["chosen_on_validation"]["best"]
    result = compare_lib.compare([workdir], [workdir], b_policy="cwb", resamples=50)
    pooled, cwb = result["pooled"], chosen["cwb"]
    texts = pooled["texts"]
    assert pooled["a_right"] == summary_lib.run_summary(workdir)["test_right"]
    assert pooled["a_cost"] == 1.0
    assert pooled["b_right"] == round(cwb["test_accuracy"] * texts)
    assert pooled["b_cost"] == pytest.approx(cwb["test_cost"], abs=1e-6)
    table = compare_lib.markdown(result)
    assert "A at last exit, B with cwb chosen on validation" in table
    assert f"| 1.00 / {cwb['test_cost']:.2f} |" in table
