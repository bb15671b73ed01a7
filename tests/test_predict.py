"""The FSA system: Predictor API, input readers, infer.py outputs and summary."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from elbert_jax.data import DataError
from elbert_jax.predict import Predictor, Summary, read_texts, write_rows

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


def test_write_rows_and_summary():
    rows = [{"id": 0, "label": "positive", "probs": [0.1, 0.2, 0.7], "exit_layer": 2},
            {"id": 1, "label": "neutral", "probs": [0.2, 0.6, 0.2], "exit_layer": 4, "empty": True}]
    out = io.StringIO()
    summary = Summary(num_layers=4)
    for row in write_rows(rows, out, "csv"):
        summary.add(row)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["label"] for r in parsed] == ["positive", "neutral"]
    assert json.loads(parsed[0]["probs"]) == [0.1, 0.2, 0.7] and parsed[1]["empty"] == "True"
    report = summary.report()
    assert report["count"] == 2 and report["mean_exit_layer"] == 3.0
    assert report["computation_cost"] == 0.75 and report["exit_histogram"] == {"2": 1, "4": 1}


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
