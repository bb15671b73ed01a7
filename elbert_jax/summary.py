"""One table over the runs of an experiment (one workdir per seed), from what training and
``--mode report`` left in each workdir: the numbers a comparison of recipes is decided on
(best-validation texts right) and reported with (test accuracy, early exit chosen on validation).

    python -m elbert_jax.summary runs/LS_s0 runs/LS_s1 runs/LS_s2 [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from elbert_jax import checkpoints
from elbert_jax.report import best_on_validation, best_within


def run_summary(workdir: str | Path, max_cost: float | None = None) -> dict[str, Any]:
    """Best validation epoch (the one training kept), its test metrics and, when the workdir has
    a test report, each policy's setting chosen on validation and its best test-sweep point."""
    workdir = Path(workdir)
    validation, test = checkpoints.metrics_records(workdir)
    sizes = json.loads((workdir / "model.json").read_text())["data_stats"]
    best = [r for r in validation if r.get("best")]
    if not best:
        raise ValueError(f"{workdir / 'metrics.jsonl'}: no validation epoch marked best yet")
    best = best[-1]
    out = {"workdir": str(workdir), "validation_texts": sizes["validation"],
           "test_texts": sizes["test"], "validation_by_epoch": [r["accuracy"] for r in validation],
           "best_epoch": best["epoch"], "best_validation": best["accuracy"],
           "best_validation_right": round(best["accuracy"] * sizes["validation"]),
           "validation_trained_on": checkpoints.validation_trained_on(workdir)}
    if test is not None:
        out.update(test_accuracy=test["accuracy"], test_right=round(test["accuracy"] * sizes["test"]),
                   test_macro_f1=test["macro_f1"], per_exit_test=test["per_exit_accuracy"])
    report_path = workdir / "report_test" / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        chosen = report.get("chosen_on_validation") or {}
        budget = max_cost if max_cost is not None else chosen.get("max_cost", 0.5)
        out["report"] = {
            "max_cost": budget, "criterion": chosen.get("criterion", "accuracy"),
            "last_exit": report["metrics"]["per_exit_accuracy"][-1],
            "chosen_on_validation": best_on_validation(chosen.get("rows", []),
                                                       chosen.get("criterion", "accuracy")),
            "test_sweep": {p: best_within([r for r in report["sweep"] if r["policy"] == p], budget)
                           for p in sorted({r["policy"] for r in report["sweep"]})},
            "by_agreement": report.get("by_agreement")}
    return out


def markdown(runs: Sequence[dict[str, Any]]) -> str:
    """A table with a row per run and a totals row (texts right, means)."""
    lines = ["| run | validation by epoch | kept (epoch) | test | macro-F1 | per-exit test |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['workdir']} | {' '.join(f'{a:.3f}' for a in r['validation_by_epoch'])} "
                     f"| {r['best_validation']:.4f} ({r['best_epoch']}"
                     f"{', trained on' if r['validation_trained_on'] else ''}) "
                     f"| {r.get('test_accuracy', float('nan')):.4f} "
                     f"| {r.get('test_macro_f1', float('nan')):.4f} "
                     f"| {' '.join(f'{a:.3f}' for a in r.get('per_exit_test', []))} |")
    val_right = sum(r["best_validation_right"] for r in runs)
    val_n = sum(r["validation_texts"] for r in runs)
    refits = sum(r["validation_trained_on"] for r in runs)
    kept = (f"{val_right} of {val_n} ({val_right / val_n:.4f})" if not refits else
            f"- ({refits} of {len(runs)} trained on their validation texts)")
    lines.append(f"| **{len(runs)} runs** | | {kept} "
                 + (f"| {sum(r['test_right'] for r in runs)} of {sum(r['test_texts'] for r in runs)} "
                    f"({sum(r['test_accuracy'] for r in runs) / len(runs):.4f}) | | |"
                    if all("test_accuracy" in r for r in runs) else "| | | |"))
    reported = [r for r in runs if "report" in r]
    if reported:
        criteria = sorted({r["report"]["criterion"] for r in reported})
        lines += ["", f"Early exit at computation cost <= {reported[0]['report']['max_cost']} "
                  f"(chosen on validation by {' / '.join(criteria)} -> test accuracy / cost; test "
                  "sweep: the best test point, an upper bound):", "",
                  "| run | last exit | CWB chosen on validation | entropy chosen on validation "
                  "| CWB test sweep | entropy test sweep | patience test sweep |",
                  "|---|---|---|---|---|---|---|"]
        for r in reported:
            rep = r["report"]
            chosen, sweep = rep["chosen_on_validation"], rep["test_sweep"]

            def pick(row: dict | None, test: bool = True) -> str:
                if row is None:
                    return "-"
                acc, cost = ((row["test_accuracy"], row["test_cost"]) if test
                             else (row["accuracy"], row["cost"]))
                window = f"N {row['window']}, " if row.get("window") else ""
                return f"{window}thr {row['threshold']:.2f}: {acc:.4f} / {cost:.2f}"
            lines.append(f"| {r['workdir']} | {rep['last_exit']:.4f} | {pick(chosen.get('cwb'))} "
                         f"| {pick(chosen.get('entropy'))} | {pick(sweep.get('cwb'), False)} "
                         f"| {pick(sweep.get('entropy'), False)} | {pick(sweep.get('patience'), False)} |")
        lines.append(_early_exit_totals(reported))
        if all(r["report"].get("by_agreement") for r in reported):
            lines += _agreement_table(reported)
    return "\n".join(lines)


def _agreement_table(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Test texts right by PhraseBank agreement level, pooled over the runs: where the errors are."""
    lines = ["", "Test accuracy by annotator agreement (the highest PhraseBank subset holding the "
             "text), pooled over the runs:", "",
             "| highest subset | texts | last exit | CWB chosen on validation (cost) |",
             "|---|---:|---:|---|"]
    for level, subset in enumerate(r["highest_subset"] for r in runs[0]["report"]["by_agreement"]):
        rows = [row for r in runs if (row := r["report"]["by_agreement"][level])["texts"]]
        if not rows:
            continue
        texts = sum(row["texts"] for row in rows)
        last = sum(round(row["per_exit_accuracy"][-1] * row["texts"]) for row in rows)
        shown = "-"
        if all("cwb" in row for row in rows):
            right = sum(round(row["cwb"]["accuracy"] * row["texts"]) for row in rows)
            cost = sum(row["cwb"]["cost"] * row["texts"] for row in rows) / texts
            shown = f"{right} ({right / texts:.3f}; {cost:.2f})"
        lines.append(f"| {subset} | {texts} | {last} ({last / texts:.3f}) | {shown} |")
    return lines


def _early_exit_totals(runs: Sequence[dict[str, Any]]) -> str:
    """Texts right over the runs in each column, and the last exit's lead over CWB in points."""
    n = sum(r["test_texts"] for r in runs)
    last = sum(round(r["report"]["last_exit"] * r["test_texts"]) for r in runs)

    def total(part: str, policy: str, key: str) -> str:
        rows = [(r["report"][part].get(policy), r["test_texts"]) for r in runs]
        if any(row is None for row, _ in rows):
            return "-"
        right = sum(round(row[key] * texts) for row, texts in rows)
        points = 100 * (last - right) / n
        gap = (f", {abs(points):.1f} {'under' if points > 0 else 'over'}" if policy == "cwb"
               else "")
        if part != "chosen_on_validation":
            return f"{right} ({right / n:.4f}{gap})"
        # the choice's own validation texts right: what a rule between recipes compares
        seen = sum(round(row["validation_accuracy"] * r["validation_texts"])
                   for (row, _), r in zip(rows, runs))
        return (f"{right} ({right / n:.4f}{gap}); validation {seen} of "
                f"{sum(r['validation_texts'] for r in runs)}")
    return (f"| **{len(runs)} run{'s' * (len(runs) != 1)}, texts right of {n}** | {last} ({last / n:.4f}) "
            f"| {total('chosen_on_validation', 'cwb', 'test_accuracy')} "
            f"| {total('chosen_on_validation', 'entropy', 'test_accuracy')} "
            f"| {total('test_sweep', 'cwb', 'accuracy')} | {total('test_sweep', 'entropy', 'accuracy')} "
            f"| {total('test_sweep', 'patience', 'accuracy')} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m elbert_jax.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--max_cost", type=float, default=None,
                        help="cost budget of the test sweep (default: the report's)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead")
    args = parser.parse_args(argv)
    try:
        runs = [run_summary(w, args.max_cost) for w in args.workdirs]
    except (OSError, ValueError, KeyError) as err:
        parser.exit(2, f"error: {err}\n")
    print("\n".join(json.dumps(r) for r in runs) if args.json else markdown(runs))


if __name__ == "__main__":
    main()
