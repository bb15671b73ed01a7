"""The FSA system: Predictor API, input readers, infer.py outputs and summary."""

from __future__ import annotations

import csv
import io
import json
import select
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from elbert_jax.data import DataError
from elbert_jax.predict import (BadInput, Predictor, Summary, fixed_batches, read_texts,
                                ready_batches, run_ahead, write_rows)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Operating profit rose to EUR 13.1 mn.", "", "Sales fell, the company said.",
         "The board meets on Monday.", "Net loss widened \"sharply\"."]


def infer(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_every_engine_gives_the_same_rows(trained):
    workdir, _ = trained
    texts = TEXTS * 7
    rows = {kind: Predictor.from_workdir(workdir, engine=kind, batch_size=4).predict(texts)
            for kind in ("reference", "full", "masked", "compact", "refill")}
    for kind, got in rows.items():
        assert [(r["label"], r["exit_layer"]) for r in got] == \
            [(r["label"], r["exit_layer"]) for r in rows["reference"]], kind
    assert rows["refill"][1]["empty"] is True and "empty" not in rows["refill"][0]


def test_policy_overrides(trained):
    workdir, _ = trained
    rows = Predictor.from_workdir(workdir, name="static", layer=2).predict(TEXTS)
    assert {r["exit_layer"] for r in rows} == {2}
    with pytest.raises(ValueError, match="engine"):
        Predictor.from_workdir(workdir, engine="turbo")


def test_serving_dtype_override(trained):
    workdir, _ = trained
    fp32 = Predictor.from_workdir(workdir, engine="refill")
    bf16 = Predictor.from_workdir(workdir, engine="refill", dtype="bfloat16")
    assert bf16.model.config.dtype == "bfloat16" and fp32.model.config.dtype == "float32"
    a, b = fp32.predict(TEXTS), bf16.predict(TEXTS)
    assert len(b) == len(TEXTS)
    for x, y in zip(a, b):  # the same weights: bf16 rounding moves probabilities a little
        assert abs(max(x["probs"]) - max(y["probs"])) < 0.05
    with pytest.raises(ValueError, match="dtype"):
        Predictor.from_workdir(workdir, dtype="float64")


def test_serving_attention_override(trained):
    workdir, _ = trained
    auto = Predictor.from_workdir(workdir, dtype="bfloat16", attention="auto")
    assert auto.model.config.attention == "auto" and auto.model.config.dtype == "bfloat16"
    if jax.default_backend() != "gpu":  # 'auto' is the XLA kernel here: the same rows exactly
        xla = Predictor.from_workdir(workdir, dtype="bfloat16", attention="xla")
        assert auto.predict(TEXTS) == xla.predict(TEXTS)
    with pytest.raises(ValueError, match="cudnn' needs dtype bfloat16"):
        Predictor.from_workdir(workdir, attention="cudnn")  # the checkpoint computes in float32


def test_a_transformers_classifier_is_served(trained, tmp_path, monkeypatch):
    """A transformers classifier folder (here the run exported) or hub id serves like the run:
    at full depth by default, and under any policy through its one classifier, which is the
    run's shared exit head, so every layer's rows equal the run's."""
    from elbert_jax import report

    workdir, _ = trained
    exported = report.export(workdir, tmp_path / "hf")
    served = Predictor.load(exported)
    assert (served.policy.name, served.policy.layer) == ("static", 3)
    assert served.label_names == Predictor.from_workdir(workdir).label_names
    assert served.max_length == 32  # the tiny model's positions
    for policy in ({"name": "static", "layer": 3}, {"name": "cwb", "threshold": 0.3, "window": 2}):
        want = Predictor.from_workdir(workdir, **policy).predict(TEXTS, trace=True)
        got = Predictor.load(exported, **policy).predict(TEXTS, trace=True)
        assert [(r["label"], r["exit_layer"], r.get("empty")) for r in got] == \
            [(r["label"], r["exit_layer"], r.get("empty")) for r in want]
        np.testing.assert_allclose([r["probs"] for r in got], [r["probs"] for r in want], atol=1e-6)

    import huggingface_hub  # a hub id: downloaded once, weights and tokenizer from one snapshot

    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: fetched.append(repo) or str(exported))
    assert Predictor.load("someone/finance-sentiment", max_length=16).predict(TEXTS[:1])[0][
        "label"] == served.predict(TEXTS[:1])[0]["label"]
    assert fetched == ["someone/finance-sentiment"]

    with pytest.raises(ValueError, match="from_report needs a workdir"):
        Predictor.load(exported, from_report=True)
    with pytest.raises(ValueError, match="serves at the max_length it was trained with"):
        Predictor.load(workdir, max_length=16)
    with pytest.raises(ValueError, match=r"max_length=33 must be in \[1, 32\]"):
        Predictor.load(exported, max_length=33)
    with pytest.raises(FileNotFoundError, match="neither a workdir .* nor a transformers"):
        Predictor.load(tmp_path)


def test_a_checkpoint_without_a_trained_classifier_is_not_served(tmp_path):
    """A bare encoder (or a masked-LM model) would be served through a random classifier, and a
    regression or multi-label head through a softmax that means nothing for it."""
    from conftest import TINY_BERT, save_random_hf

    folder = save_random_hf(tmp_path / "bert", "bert", head=False, **TINY_BERT)
    with pytest.raises(ValueError, match=r"not a trained classifier \(.*classifier.* not in the "
                                         r"checkpoint"):
        Predictor.load(folder)
    for problem, labels in (("regression", 1), ("multi_label_classification", 3)):
        folder = save_random_hf(tmp_path / problem, "bert", num_labels=labels,
                                problem_type=problem, **TINY_BERT)
        with pytest.raises(ValueError, match=f"problem_type='{problem}' with num_labels={labels}; "
                                             "only single-label classification"):
            Predictor.load(folder)


def test_infer_cli_serves_a_transformers_folder(trained, tmp_path):
    from elbert_jax import report

    exported = report.export(trained[0], tmp_path / "hf")
    run = infer("--checkpoint", str(exported), *TEXTS)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    want = Predictor.from_workdir(trained[0], name="static", layer=3).predict(TEXTS)
    assert [(r["label"], r["exit_layer"]) for r in rows] == [(r["label"], 3) for r in want]
    run = infer("--checkpoint", str(exported), "--from_report", "Profit rose.")
    assert run.returncode == 1 and "from_report needs a workdir" in run.stderr
    assert "Traceback" not in run.stderr


def test_read_columns_row_for_row_with_read_texts(tmp_path):
    """A row's own fields (an article id, a timestamp) line up with its text, bad rows
    included, so infer.py --keep can carry them into the output."""
    from elbert_jax.predict import read_columns

    with open(tmp_path / "a.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "headline", "ts"], ["a", 'x, "q"\ny', "1"],
                                      ["b", "two", "2", "extra"], ["c", "three", "3"]])
    texts = list(read_texts(tmp_path / "a.csv", "headline"))
    kept = list(read_columns(tmp_path / "a.csv", ["id", "ts"]))
    assert len(texts) == len(kept) == 3 and isinstance(texts[1], BadInput)
    assert kept == [{"id": "a", "ts": "1"}, {"id": None, "ts": None}, {"id": "c", "ts": "3"}]
    (tmp_path / "a.jsonl").write_text('{"id": 7, "text": "x", "at": {"t": 1}}\nnope\n'
                                      '{"text": "y"}\n\n')
    assert len(list(read_texts(tmp_path / "a.jsonl"))) == 4
    assert list(read_columns(tmp_path / "a.jsonl", ["id", "at"])) == [
        {"id": 7, "at": {"t": 1}}, {"id": None, "at": None}, {"id": None, "at": None},
        {"id": None, "at": None}]
    with pytest.raises(DataError, match=r"a.csv:1: missing column\(s\) \['nope'\]"):
        next(read_columns(tmp_path / "a.csv", ["nope"]))
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(DataError, match="has no columns to keep"):
        next(read_columns(tmp_path / "a.txt", ["id"]))
    out = io.StringIO()
    rows = [{"id": 0, "article": "a", "at": {"t": 1}, "label": "positive", "probs": [1.0]}]
    list(write_rows(rows, out, "csv", kept=["article", "at"]))
    header, line = list(csv.reader(io.StringIO(out.getvalue())))
    assert header[:4] == ["id", "article", "at", "label"] and line[:4] == ["0", "a", '{"t": 1}',
                                                                           "positive"]
    with pytest.raises(ValueError, match="would overwrite output fields"):
        list(write_rows(rows, out, "csv", kept=["label"]))
    with pytest.raises(ValueError, match="repeat a name"):
        list(write_rows(rows, out, "csv", kept=["at", "at"]))


def test_infer_cli_keeps_input_columns(trained, tmp_path):
    workdir, _ = trained
    source = tmp_path / "news.jsonl"
    source.write_text("".join(json.dumps({"article": f"a{i}", "headline": t, "label": i % 3})
                              + "\n" for i, t in enumerate(TEXTS)) + "not json\n")
    run = infer("--checkpoint", str(workdir), "--input", str(source), "--column", "headline",
                "--keep", "article,missing,label:gold", "--gold", "label")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    names = Predictor.from_workdir(workdir).label_names
    right = sum(names[r["gold"]] == r["label"] for r in rows[:-1])
    scored = json.loads(run.stderr.strip().splitlines()[-1])["gold"]
    assert scored["scored"] == len(TEXTS) and scored["unscored"] == {"no_gold_label": 1}
    assert scored["accuracy"] == round(right / len(TEXTS), 5)
    assert [r["article"] for r in rows] == [f"a{i}" for i in range(len(TEXTS))] + [None]
    assert [r["gold"] for r in rows] == [i % 3 for i in range(len(TEXTS))] + [None]
    assert {r["missing"] for r in rows} == {None} and rows[-1]["error"].endswith("not JSON "
                                                                                 "(Expecting value)")
    assert list(rows[0])[:4] == ["id", "article", "missing", "gold"]
    want = Predictor.from_workdir(workdir).predict(TEXTS)
    assert [r["label"] for r in rows[:-1]] == [r["label"] for r in want]
    run = infer("--checkpoint", str(workdir), "--gold", "label", "Profit rose.")
    assert run.returncode == 1 and "--keep and --gold read columns of an --input table" in run.stderr
    table = tmp_path / "news.csv"
    table.write_text("text,label\nProfit rose.,positive\n")
    run = infer("--checkpoint", str(workdir), "--input", str(table), "--gold", "nope")
    assert run.returncode == 1 and "news.csv:1: missing column(s) ['nope']" in run.stderr
    assert not run.stdout  # refused before any text was classified


def test_infer_gold_scores_a_test_split_as_training_did(trained, tmp_path):
    """infer.py --gold on a run's own test split, at its last exit, gives the accuracy and
    macro-F1 that training recorded for it."""
    from elbert_jax import checkpoints, training

    workdir, result = trained
    test = training.load_splits(checkpoints.saved_config(workdir)).test
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *zip(test.texts, test.labels.tolist())])
    run = infer("--checkpoint", str(workdir), "--input", str(tmp_path / "test.csv"), "--gold",
                "label", "--policy", "static", "--layer", "3")
    assert run.returncode == 0, run.stderr[-2000:]
    gold = json.loads(run.stderr.strip().splitlines()[-1])["gold"]
    assert gold["scored"] == len(test.texts) and gold["unscored"] == {}
    assert gold["accuracy"] == round(result["test"]["accuracy"], 5)
    assert gold["macro_f1"] == round(result["test"]["macro_f1"], 5)


def test_read_texts(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\n\r\ncaf\xe9 latin-1\nlast")
    assert list(read_texts(tmp_path / "a.txt")) == ["one", "", "caf\ufffd latin-1", "last"]
    with open(tmp_path / "a.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["id", "headline"], [1, 'a, "quoted"\nline'], [2, "b"]])
    assert list(read_texts(tmp_path / "a.csv", "headline")) == ['a, "quoted"\nline', "b"]
    (tmp_path / "a.tsv").write_text("headline\tx\nfirst\t1\nsecond\t2\n")
    assert list(read_texts(tmp_path / "a.tsv", "headline")) == ["first", "second"]
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n{"text": null}\n[1]\n')
    with pytest.raises(DataError, match=r"a.jsonl:3: expected a JSON object"):
        list(read_texts(tmp_path / "a.jsonl", bad_rows="error"))
    with pytest.raises(DataError, match=r"a.csv:1: missing column"):
        list(read_texts(tmp_path / "a.csv"))
    with pytest.raises(DataError, match="unsupported input"):
        list(read_texts(tmp_path / "a.xml"))


def test_read_texts_of_sentence_pairs(tmp_path):
    with open(tmp_path / "p.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["s1", "s2"], ["a", "b, c"], ["d", ""]])
    assert list(read_texts(tmp_path / "p.csv", "s1", pair_column="s2")) == [("a", "b, c"), ("d", "")]
    with pytest.raises(DataError, match=r"p.csv:1: missing column\(s\) \['s3'\]"):
        list(read_texts(tmp_path / "p.csv", "s1", pair_column="s3"))
    (tmp_path / "p.jsonl").write_text('{"s1": "a", "s2": "b"}\n{"s1": "c"}\n')
    rows = list(read_texts(tmp_path / "p.jsonl", "s1", pair_column="s2"))
    assert rows[0] == ("a", "b") and isinstance(rows[1], BadInput)
    assert str(rows[1]).endswith("p.jsonl:2: expected a JSON object with 's1' and 's2' fields")
    (tmp_path / "p.txt").write_text("a\tb\tc\nno tab\n")  # split at the first tab only
    rows = list(read_texts(tmp_path / "p.txt", pair_column="any"))
    assert rows[0] == ("a", "b\tc") and str(rows[1]).startswith(f"{tmp_path / 'p.txt'}:2: no tab")
    with pytest.raises(DataError, match=r"p.txt:2: no tab"):
        list(read_texts(tmp_path / "p.txt", pair_column="any", bad_rows="error"))


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """configs/tiny.py on a CSV of sentence pairs (same sentiment or not): an RTE-shaped task."""
    from elbert_jax import config as config_lib
    from elbert_jax import demo, training

    folder = tmp_path_factory.mktemp("pairs")
    sentences = demo.make_sentences(120, seed=0)
    partner = np.random.default_rng(0).permutation(len(sentences.texts))
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence1", "sentence2", "label"])
        for i, j in enumerate(partner):
            writer.writerow([sentences.texts[i], sentences.texts[j],
                             "same" if sentences.labels[i] == sentences.labels[j] else "other"])
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **{
        "data.source": "files", "data.train_file": str(folder / "pairs.csv"),
        "data.text_column": "sentence1", "data.pair_column": "sentence2", "train.epochs": 1})
    training.train_and_evaluate(config, folder / "run")
    return folder / "run", folder / "pairs.csv"


def test_a_sentence_pair_checkpoint_is_served_pairs(pair_run, trained, tmp_path):
    from elbert_jax.serving import Batcher

    workdir, table = pair_run
    predictor = Predictor.from_workdir(workdir)
    assert (predictor.pair_column, predictor.text_column) == ("sentence2", "sentence1")
    records = list(csv.DictReader(open(table, newline="")))[:6]
    texts, pairs = [r["sentence1"] for r in records], [r["sentence2"] for r in records]
    assert predictor.encode(texts, pairs)["token_type_ids"].any()  # the pair reaches the model
    with pytest.raises(ValueError, match="trained on sentence pairs"):
        predictor.predict(texts)  # would run, on inputs the model never saw
    rows = predictor.predict(texts, pairs)
    assert list(predictor.stream(read_texts(table, "sentence1", pair_column="sentence2"),
                                 chunk=4))[:6] == rows
    with Batcher(predictor) as batcher:
        assert batcher.predict(texts[0], pair=pairs[0]) == rows[0]
        with pytest.raises(ValueError, match="trained on sentence pairs"):
            batcher.submit(texts[0])  # refused at once, not in the worker
    with pytest.raises(ValueError, match="trained on single texts"):
        Predictor.from_workdir(trained[0]).predict(texts, pairs)

    # infer.py reads the checkpoint's columns by default, and tab-separated lines
    table_rows = tmp_path / "few.csv"
    table_rows.write_text("".join(open(table, newline="").readlines()[:7]))
    run = infer("--checkpoint", str(workdir), "--input", str(table_rows))
    assert run.returncode == 0, run.stderr[-2000:]
    assert [json.loads(line) for line in run.stdout.splitlines()] == \
        [{"id": i, **row} for i, row in enumerate(rows)]
    run = infer("--checkpoint", str(workdir), f"{texts[0]}\t{pairs[0]}", "no tab")
    assert run.returncode == 0, run.stderr[-2000:]
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert first == {"id": 0, **rows[0]} and second["error"].startswith("argument:2: no tab")
    run = infer("--checkpoint", str(trained[0]), "--pair_column", "sentence2", "text")
    assert run.returncode != 0 and "trained on single texts" in run.stderr


def test_write_rows_and_summary():
    rows = [{"id": 0, "label": "positive", "score": 0.6, "probs": [0.1, 0.2, 0.7], "exit_layer": 2},
            {"id": 1, "label": "neutral", "probs": [0.2, 0.6, 0.2], "exit_layer": 4, "empty": True}]
    out = io.StringIO()
    summary = Summary(num_layers=4)
    for row in write_rows(rows, out, "csv"):
        summary.add(row)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["label"] for r in parsed] == ["positive", "neutral"]
    assert json.loads(parsed[0]["probs"]) == [0.1, 0.2, 0.7] and parsed[1]["empty"] == "True"
    assert parsed[0]["score"] == "0.6" and parsed[1]["score"] == ""
    report = summary.report()
    assert report["count"] == 2 and report["mean_exit_layer"] == 3.0
    assert report["computation_cost"] == 0.75 and report["exit_histogram"] == {"2": 1, "4": 1}


def test_summary_scores_against_gold_labels_and_counts_what_it_cannot():
    summary = Summary(num_layers=4, label_names=["negative", "neutral", "positive"], scoring=True)
    rows = [{"label": "positive", "exit_layer": 1}, {"label": "negative", "exit_layer": 2},
            {"label": "neutral", "exit_layer": 4}, {"label": "neutral", "exit_layer": 4},
            {"label": "neutral", "exit_layer": 4}, {"label": None, "exit_layer": None, "error": "x"}]
    for row, gold in zip(rows, ["positive", 0, "2", "mixed", None, "neutral"]):
        summary.add(row, gold)  # names, ids and id strings, as files hold them
    gold = summary.report()["gold"]
    assert gold["scored"] == 3 and gold["accuracy"] == round(2 / 3, 5)
    assert gold["unscored"] == {"gold_label_not_a_model_label": 1, "no_gold_label": 1,
                                "not_classified": 1}
    # F1 negative 1, positive 2/3 (one of two found), neutral 0 (predicted once, wrongly)
    assert gold["macro_f1"] == round((1 + 2 / 3 + 0) / 3, 5)
    assert gold["by_exit_layer"] == {"1": {"scored": 1, "accuracy": 1.0},
                                     "2": {"scored": 1, "accuracy": 1.0},
                                     "4": {"scored": 1, "accuracy": 0.0}}
    assert "gold" not in Summary(num_layers=4).report()


def test_summary_of_no_classified_rows_is_valid_json():
    summary = Summary(num_layers=4)
    summary.add({"id": 0, "error": "no text"})
    report = json.loads(json.dumps(summary.report()), parse_constant=pytest.fail)  # no NaN
    assert report["count"] == 1 and report["errors"] == 1
    assert report["mean_exit_layer"] is None and report["computation_cost"] is None


def test_infer_cli_files_stdin_and_errors(trained, tmp_path):
    workdir, _ = trained
    source = tmp_path / "news.jsonl"
    source.write_text("".join(json.dumps({"headline": t}) + "\n" for t in TEXTS))
    run = infer("--checkpoint", str(workdir), "--input", str(source), "--column", "headline",
                "--engine", "compact", "--batch_size", "2", "--output", str(tmp_path / "o.csv"),
                "--format", "csv", "--trace")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "o.csv", newline="")))
    assert [int(r["id"]) for r in rows] == list(range(len(TEXTS)))
    assert all(len(json.loads(r["trace"])) == int(r["exit_layer"]) for r in rows)
    summary = json.loads(run.stderr.strip().splitlines()[-1])
    assert summary["count"] == len(TEXTS) and summary["engine"] == "compact"
    assert sum(summary["exit_histogram"].values()) == len(TEXTS)

    run = infer("--checkpoint", str(workdir), "--policy", "static", "--layer", "1",
                stdin="\n".join(TEXTS) + "\n")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == len(TEXTS) and {r["exit_layer"] for r in rows} == {1}

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    run = infer("--checkpoint", str(workdir), "--input", str(bad), "--bad_rows", "error")
    assert run.returncode != 0 and "bad.jsonl:2" in run.stderr and "Traceback" not in run.stderr


def test_serving_the_setting_chosen_on_validation(trained, tmp_path):
    """--from_report serves the report's operating point: on the validation texts the engine
    reproduces exactly the accuracy and cost the report chose it by."""
    import shutil

    from elbert_jax import config as config_lib
    from elbert_jax import exits, report, training

    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir, ignore=shutil.ignore_patterns("report_*"))  # another
    # test may have reported on the shared run
    with pytest.raises(FileNotFoundError, match="--mode report"):
        Predictor.from_workdir(workdir, from_report=True)
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py")
    report.write_report(config, workdir, max_cost=0.7)
    path = workdir / "report_test" / "report.json"
    best = json.loads(path.read_text())["chosen_on_validation"]["best"]
    validation = training.load_splits(config).validation
    assert {"cwb", "static"} <= set(best)  # entropy may never exit early on a tiny model
    for name, row in best.items():
        predictor = Predictor.from_workdir(workdir, from_report=True, name=name)
        assert predictor.policy == exits.with_threshold(predictor.policy, row["threshold"])
        if name == "cwb":
            assert predictor.policy.window == row["window"]
        if name not in ("cwb", "static"):
            continue  # an engine compile each: two are enough to show it serves the same point
        out = predictor.run(validation.texts)
        assert float((out.prediction == validation.labels).mean()) == pytest.approx(
            row["validation_accuracy"], abs=1e-6)
        assert float(out.layer.mean()) / 3 == pytest.approx(row["validation_cost"], abs=1e-6)
    tuned = Predictor.from_workdir(workdir, from_report=True, threshold=0.01)
    assert tuned.policy.threshold == 0.01 and tuned.policy.window == best["cwb"]["window"]

    run = infer("--checkpoint", str(workdir), "--from_report", "--policy", "static", *TEXTS[:2])
    assert run.returncode == 0, run.stderr[-2000:]
    served = json.loads(run.stderr.strip().splitlines()[-1])["policy"]
    assert served["name"] == "static" and served["layer"] == round(best["static"]["threshold"])

    table = json.loads(path.read_text())
    path.write_text(json.dumps(table | {"checkpoint_step": -1}))
    with pytest.raises(ValueError, match="step -1, .* rerun --mode report"):
        Predictor.from_workdir(workdir, from_report=True)
    path.write_text(json.dumps(table | {"chosen_on_validation": dict(
        table["chosen_on_validation"], best={"static": best["static"]})}))
    with pytest.raises(ValueError, match="no cwb setting reached computation cost <= 0.7"):
        Predictor.from_workdir(workdir, from_report=True)


def test_serving_a_calibrated_setting(trained, tmp_path):
    """exit.calibrate: the report fits one temperature per exit on validation (lowering its NLL),
    every chosen setting carries them, and --from_report serves that exact operating point."""
    import shutil

    from elbert_jax import config as config_lib
    from elbert_jax import report, training

    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir, ignore=shutil.ignore_patterns("report_*"))
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **{"exit.calibrate": True})
    table = report.write_report(config, workdir, max_cost=0.7)
    fitted = table["calibration"]
    assert len(fitted["temperatures"]) == 3 and fitted["temperatures"] != [1.0] * 3
    val = fitted["validation"]
    assert all(after <= before + 1e-6 for before, after in zip(val["nll"], val["nll_calibrated"]))
    best = table["chosen_on_validation"]["best"]
    assert all(list(row["exit_policy"]["temperatures"]) == fitted["temperatures"]
               for row in best.values())
    predictor = Predictor.from_workdir(workdir, from_report=True, name="cwb")
    assert list(predictor.policy.temperatures) == fitted["temperatures"]
    validation = training.load_splits(config).validation
    out = predictor.run(validation.texts)
    assert float((out.prediction == validation.labels).mean()) == pytest.approx(
        best["cwb"]["validation_accuracy"], abs=1e-6)
    assert float(out.layer.mean()) / 3 == pytest.approx(best["cwb"]["validation_cost"], abs=1e-6)


@pytest.mark.parametrize("live, overlap", [(False, True), (False, False), (True, True)])
def test_stream_keeps_rows_then_raises_what_the_source_raised(trained, live, overlap):
    predictor = Predictor.from_workdir(trained[0], batch_size=4)

    def source():
        yield from TEXTS[:4]
        raise OSError("feed went away")

    rows = []
    with pytest.raises(OSError, match="feed went away"):
        for row in predictor.stream(source(), chunk=3, live=live, overlap=overlap):
            rows.append(row)
    assert rows == predictor.predict(TEXTS[:4])  # every text read before the failure


def test_encode_once_run_many(trained):
    predictor = Predictor.from_workdir(trained[0], batch_size=4)
    enc = predictor.encode(TEXTS)
    assert enc["input_ids"].shape == (len(TEXTS), predictor.max_length)
    for thresholds in (None, [0.1, 0.9, 0.5, 0.3, 0.7]):
        got, want = predictor.run_encoded(enc, thresholds=thresholds), predictor.run(
            TEXTS, thresholds=thresholds)
        for name in ("layer", "prediction", "probs"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_overlapped_stream_gives_the_sequential_rows(trained):
    """Tokenising ahead in a thread changes nothing: same rows, same order, bad rows in place,
    chunks of every size (one text, a partial last chunk, chunks with only bad rows)."""
    predictor = Predictor.from_workdir(trained[0], batch_size=4)
    items = [*TEXTS, BadInput("in.txt:7", "not UTF-8"), BadInput("in.txt:8", "no text"),
             *reversed(TEXTS), "Profit " * 40] * 3
    expected = list(predictor.stream(iter(items), chunk=5, trace=True, overlap=False))
    assert len(expected) == len(items)
    assert [row.get("error") for row in expected] == [str(x) if isinstance(x, BadInput) else None
                                                      for x in items]
    for chunk in (1, 2, 5, 7, 1000):
        assert list(predictor.stream(iter(items), chunk=chunk, trace=True)) == expected, chunk


def test_live_stream_answers_before_the_source_goes_on(trained):
    """A feed that pauses: the texts that have come are answered while it waits."""
    predictor = Predictor.from_workdir(trained[0], batch_size=4)
    resume = threading.Event()
    timer = threading.Timer(60, resume.set)  # the test never hangs; it fails instead
    timer.start()

    def feed():
        yield from TEXTS[:3]
        resume.wait()
        yield TEXTS[3]

    rows = predictor.stream(feed(), chunk=1000, live=True)
    first = [next(rows) for _ in range(3)]
    assert not resume.is_set(), "the first rows waited for the source to go on"
    resume.set()
    timer.cancel()
    assert first + list(rows) == predictor.predict(TEXTS[:4])


def test_live_batches_stay_within_the_warmed_sizes(trained, monkeypatch):
    """A burst on a live feed must not meet a program of a new size (a compilation stall): live
    batches hold at most batch_size texts, whatever chunk is."""
    predictor = Predictor.from_workdir(trained[0], batch_size=4)
    sizes = []
    flush = predictor._flush
    monkeypatch.setattr(predictor, "_flush", lambda batch, *rest: sizes.append(len(batch))
                        or flush(batch, *rest))
    texts = TEXTS * 10
    assert list(predictor.stream(iter(texts), chunk=1000, live=True)) == predictor.predict(texts)
    assert sum(sizes) == len(texts) and max(sizes) <= 4


def test_batches():
    assert list(fixed_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(run_ahead(iter(range(500)), 1)) == list(range(500)) and list(run_ahead([])) == []

    def failing():
        yield from range(3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in run_ahead(failing(), 2):
            got.append(item)
    assert got == [0, 1, 2]
    live = list(ready_batches(iter(range(1000)), 64))
    assert [x for batch in live for x in batch] == list(range(1000))
    assert max(map(len, live)) <= 64 and list(ready_batches([], 8)) == []


def test_infer_answers_each_stdin_line_as_it_comes(trained):
    """`feed | infer.py`: a row comes out per line while stdin stays open."""
    workdir, _ = trained
    proc = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(workdir),
                             "--warm_up", "--batch_size", "4"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        for i, text in enumerate(TEXTS[:2]):
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, f"no row for line {i} while stdin was open"
            row = json.loads(proc.stdout.readline())
            assert row["id"] == i and row["label"]
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
        assert json.loads(proc.stderr.read().splitlines()[-1])["count"] == 2
    finally:
        proc.kill()


def test_pipeline_bench_runs_and_checks_its_rows(trained, tmp_path):
    """bench/pipeline.py at a test size: every stage is timed and both streams give equal rows."""
    out = tmp_path / "pipeline.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline.py"), "--checkpoint",
                          str(trained[0]), "--texts", "300", "--chunk", "128", "--batch_size", "4",
                          "--reps", "1", "--output", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows_equal"] and result["texts"] == 300
    assert set(result["texts_per_s"]) == {"tokenize_transformers_call", "tokenize", "engine",
                                          "stream_sequential", "stream_overlapped"}
    assert all(rate > 0 for rate in result["texts_per_s"].values())
