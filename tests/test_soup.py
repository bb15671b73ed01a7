"""Model soups: averaged best params of runs on one split, written as a workdir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from elbert_jax import config as config_lib
from elbert_jax import report
from elbert_jax import soup as soup_lib
from elbert_jax import summary as summary_lib
from elbert_jax import checkpoints
from elbert_jax.predict import Predictor

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_soup_of_one_run_scores_as_the_run(trained, tmp_path):
    workdir, _ = trained
    metrics = soup_lib.make_soup([workdir], tmp_path / "soup")
    records = _records(workdir)
    best = [r for r in records if r.get("split") == "validation" and r["best"]][-1]
    test = records[-1]
    for split, record in (("validation", best), ("test", test)):
        assert metrics[split] == {k: v for k, v in record.items() if k in metrics[split]}, split


def test_soup_of_last_states(trained, tmp_path, capsys):
    workdir, _ = trained
    soup_lib.main([str(workdir), "--out", str(tmp_path / "soup"), "--checkpoint", "last"])
    assert '"split": "test"' in capsys.readouterr().out
    _, ended, meta = checkpoints.restore_last_params(workdir)
    jax.tree.map(np.testing.assert_array_equal,
                 checkpoints.restore_best_params(tmp_path / "soup")[1], ended)
    ingredient = json.loads((tmp_path / "soup" / "soup.json").read_text())["ingredients"][0]
    assert ingredient == {"workdir": str(workdir), "last_step": meta["last_step"]}


def test_soup_is_the_mean_and_serves_like_a_run(trained, second_run, tmp_path):
    first, _ = trained
    out = tmp_path / "soup"
    metrics = soup_lib.make_soup([first, second_run], out)
    params = [checkpoints.restore_best_params(w)[1] for w in (first, second_run, out)]
    jax.tree.map(lambda a, b, s: np.testing.assert_allclose(s, (np.asarray(a) + np.asarray(b)) / 2,
                                                            rtol=1e-6, atol=1e-7), *params)
    written = json.loads((out / "soup.json").read_text())
    assert written["ingredients"][1]["workdir"] == str(second_run)
    assert written["validation_trained_on"] is False
    run = summary_lib.run_summary(out)
    assert run["best_validation"] == metrics["validation"]["accuracy"]
    assert run["test_accuracy"] == metrics["test"]["accuracy"]
    rows = Predictor.from_workdir(out).predict(["Profit rose.", "The board met."])
    assert len(rows) == 2 and all(r["label"] in ("negative", "neutral", "positive") for r in rows)
    reported = report.write_report(config_lib.load_config_file(TINY), out, max_cost=1.0)
    assert reported["metrics"]["accuracy"] == metrics["test"]["accuracy"]
    assert reported["chosen_on_validation"]["best"]


def test_soup_refuses_mixed_splits_and_a_used_folder(trained, tmp_path, capsys, other_split_run):
    first, _ = trained
    other = other_split_run
    with pytest.raises(ValueError, match="other_split: another data split"):
        soup_lib.make_soup([first, other], tmp_path / "soup")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(SystemExit) as exit_:
        soup_lib.main([str(first), "--out", str(tmp_path / "used")])
    assert exit_.value.code == 2 and "is not empty" in capsys.readouterr().err


def test_soup_takes_older_runs_and_other_run_settings(trained, tmp_path):
    first, _ = trained
    old = tmp_path / "old_run"
    shutil.copytree(first, old)
    config = json.loads((old / "config.json").read_text())
    for key in ("split_seed", "agreement_targets", "group_by_length"):
        del config["data"][key]
    (old / "config.json").write_text(json.dumps(config))
    meta = json.loads((old / "model.json").read_text())  # another dropout: same params' meaning
    meta["encoder"]["hidden_dropout_prob"] = 0.3
    (old / "model.json").write_text(json.dumps(meta))
    alone = soup_lib.make_soup([first], tmp_path / "alone")
    assert soup_lib.make_soup([old, first], tmp_path / "soup") == alone


def test_greedy_soup_keeps_a_run_only_if_validation_does_not_drop():
    trees = [{"w": np.float32(w)} for w in (0.0, 1.0, 10.0)]
    ingredients = [{"workdir": name} for name in ("zero", "one", "ten")]
    kept, soup = soup_lib._greedy(trees, ingredients, lambda p: -abs(float(p["w"]) - 0.6))
    # ranked one (-0.4), zero (-0.6), ten: one + zero averages to 0.5 (-0.1, kept), + ten does not
    assert [i["workdir"] for i in kept] == ["one", "zero"]
    assert float(soup["w"]) == 0.5
    assert ingredients[2]["validation_accuracy"] == pytest.approx(-9.4)
    tie, _ = soup_lib._greedy(trees[:1] * 2, [{"workdir": "a"}, {"workdir": "b"}], lambda p: 1.0)
    assert [i["workdir"] for i in tie] == ["a", "b"]  # a tie keeps the run, as in the paper


def test_greedy_soup_is_never_below_its_best_run_on_validation(trained, second_run, tmp_path):
    first, _ = trained
    out = tmp_path / "greedy"
    assert soup_lib.main([str(second_run), str(first), "--out", str(out), "--greedy"]) is None
    written = json.loads((out / "soup.json").read_text())
    assert written["greedy"] is True
    runs = written["ingredients"] + written["rejected"]
    assert sorted(r["workdir"] for r in runs) == sorted([str(first), str(second_run)])
    best_run = max(r["validation_accuracy"] for r in runs)
    assert written["ingredients"][0]["validation_accuracy"] == best_run
    assert written["validation"]["accuracy"] >= best_run
    assert summary_lib.run_summary(out)["best_validation"] == written["validation"]["accuracy"]
    refit = tmp_path / "refit"  # a run that trained on its validation texts: no greedy choice
    shutil.copytree(first, refit)
    config = json.loads((refit / "config.json").read_text())
    config["data"]["train_on_validation"] = True
    (refit / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="refit trained on its validation texts"):
        soup_lib.make_soup([first, refit], tmp_path / "greedy2", greedy=True)
    soup_lib.make_soup([first, refit], tmp_path / "uniform")  # a uniform soup chooses nothing
    assert json.loads((tmp_path / "uniform" / "soup.json").read_text())["validation_trained_on"]
