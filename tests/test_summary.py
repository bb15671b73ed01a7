"""The multi-seed summary: what it reads from workdirs, and the report's choice on validation."""

from __future__ import annotations

import json

import pytest

from elbert_jax import summary
from elbert_jax.report import best_on_validation


def _workdir(path, validation, test_accuracy, best_epochs, repeat_epoch=None):
    path.mkdir()
    lines = [{"step": 5, "epoch": 0, "loss": 1.0}]
    for epoch, acc in enumerate(validation):
        lines.append({"split": "validation", "epoch": epoch, "accuracy": acc,
                      "best": epoch in best_epochs})
        if epoch == repeat_epoch:  # a resumed run evaluates this epoch again
            lines.append({"split": "validation", "epoch": epoch, "accuracy": acc,
                          "best": epoch in best_epochs})
    lines.append({"split": "test", "accuracy": test_accuracy, "macro_f1": 0.5,
                  "per_exit_accuracy": [0.4, test_accuracy]})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (path / "model.json").write_text(json.dumps({"data_stats": {"validation": 10, "test": 20}}))
    return path


def test_totals_count_texts_at_the_epoch_training_kept(tmp_path, capsys):
    # seed 1 ties its best on a later epoch: training keeps the earlier (strictly better only)
    a = _workdir(tmp_path / "s0", [0.5, 0.8, 0.7], 0.75, {0, 1}, repeat_epoch=1)
    b = _workdir(tmp_path / "s1", [0.6, 0.9, 0.9], 0.85, {0, 1})
    runs = [summary.run_summary(a), summary.run_summary(b)]
    assert runs[0]["validation_by_epoch"] == [0.5, 0.8, 0.7]
    assert [r["best_epoch"] for r in runs] == [1, 1]
    assert [r["best_validation_right"] for r in runs] == [8, 9]
    table = summary.markdown(runs)
    assert "17 of 20 (0.8500)" in table and "32 of 40 (0.8000)" in table
    assert "Early exit" not in table  # no report in these workdirs
    summary.main([str(a), str(b), "--json"])
    assert [json.loads(line)["test_right"] for line in capsys.readouterr().out.splitlines()] == [15, 17]
    # a refit's "validation" texts were trained on: marked, and left out of the totals
    (b / "config.json").write_text(json.dumps({"data": {"train_on_validation": True}}))
    runs[1] = summary.run_summary(b)
    assert runs[1]["validation_trained_on"] and not runs[0]["validation_trained_on"]
    table = summary.markdown(runs)
    assert "0.9000 (1, trained on)" in table and "17 of 20" not in table
    assert "- (1 of 2 trained on their validation texts)" in table and "32 of 40 (0.8000)" in table


def test_bad_workdirs_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        summary.main([str(tmp_path / "missing")])
    assert err.value.code == 2 and "missing/metrics.jsonl" in capsys.readouterr().err
    run = _workdir(tmp_path / "bad", [0.5], 0.5, {0})
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(ValueError, match=r"bad/metrics.jsonl:4: not JSON"):
        summary.run_summary(run)
    fresh = _workdir(tmp_path / "fresh", [0.5], 0.5, set())
    with pytest.raises(ValueError, match="no validation epoch marked best"):
        summary.run_summary(fresh)


def test_best_on_validation_breaks_ties_by_cost_then_window():
    def row(policy, window, acc, cost):
        return {"policy": policy, "window": window, "threshold": 0.5, "validation_accuracy": acc,
                "validation_cost": cost, "test_accuracy": 0.0, "test_cost": 0.0}
    rows = [row("cwb", 2, 0.80, 0.40), row("cwb", 3, 0.82, 0.45), row("cwb", 4, 0.82, 0.45),
            row("cwb", 5, 0.82, 0.44), row("entropy", None, 0.81, 0.3)]
    best = best_on_validation(rows)
    assert best["cwb"]["window"] == 5 and best["entropy"]["validation_accuracy"] == 0.81
    assert best_on_validation(rows[:3])["cwb"]["window"] == 3


def test_early_exit_totals_give_the_choice_on_validation_and_the_test_gap(tmp_path):
    def chosen(policy, window, val, test):
        return {"policy": policy, "window": window, "threshold": 0.5, "validation_accuracy": val,
                "validation_cost": 0.4, "test_accuracy": test, "test_cost": 0.45}
    runs = []
    for name, (last, val, test) in {"s0": (0.80, 0.7, 0.75), "s1": (0.90, 0.9, 0.90)}.items():
        run = _workdir(tmp_path / name, [0.8], last, {0})
        (run / "report_test").mkdir()
        (run / "report_test" / "report.json").write_text(json.dumps({
            "metrics": {"per_exit_accuracy": [0.5, last]},
            "chosen_on_validation": {"max_cost": 0.5, "rows": [
                chosen("cwb", 2, val - 0.1, 1.0), chosen("cwb", 3, val, test),
                chosen("entropy", None, val, test)]},
            "sweep": [{"policy": "cwb", "window": 3, "threshold": 0.5, "accuracy": last,
                       "cost": 0.6}, {"policy": "cwb", "window": 3, "threshold": 0.4,
                                      "accuracy": test, "cost": 0.5}]}))
        runs.append(summary.run_summary(run))
    table = summary.markdown(runs)
    assert "chosen on validation by accuracy ->" in table  # a report from before exit.choose_by
    totals = table.splitlines()[-1]
    # last exit 16 + 18 of 40; CWB chosen on validation (window 3, not the 1.0 on test of window 2):
    # 15 + 18 on test, 1 text = 2.5 points under, from 7 + 9 validation texts of 20
    assert totals.startswith("| **2 runs, texts right of 40** | 34 (0.8500) | 33 (0.8250, 2.5 under); "
                             "validation 16 of 20 |")
    assert "| 33 (0.8250, 2.5 under) |" in totals  # the test sweep's best at cost <= 0.5


def test_agreement_table_pools_the_runs_texts_per_level(tmp_path):
    """Reports of PhraseBank runs break test accuracy down by agreement; the summary adds them up."""
    runs = []
    for name, (n_all, right_all, cwb_all) in {"s0": (10, 9, 8), "s1": (6, 6, 6)}.items():
        run = _workdir(tmp_path / name, [0.8], 0.8, {0})
        levels = [{"highest_subset": "50Agree", "texts": 4, "per_exit_accuracy": [0.25, 0.5],
                   "cwb": {"accuracy": 0.25, "cost": 0.5}},
                  {"highest_subset": "66Agree", "texts": 0},  # a level a split may lack
                  {"highest_subset": "AllAgree", "texts": n_all,
                   "per_exit_accuracy": [0.5, right_all / n_all],
                   "cwb": {"accuracy": cwb_all / n_all, "cost": 0.25}}]
        (run / "report_test").mkdir()
        (run / "report_test" / "report.json").write_text(json.dumps({
            "metrics": {"per_exit_accuracy": [0.5, 0.8]},
            "chosen_on_validation": {"max_cost": 0.5, "criterion": "agreement", "rows": []},
            "sweep": [], "by_agreement": levels}))
        runs.append(summary.run_summary(run))
    table = summary.markdown(runs).splitlines()
    assert table[-2:] == ["| 50Agree | 8 | 4 (0.500) | 2 (0.250; 0.50) |",
                          "| AllAgree | 16 | 15 (0.938) | 14 (0.875; 0.25) |"]
    assert not any(line.startswith("| 66Agree") for line in table)
