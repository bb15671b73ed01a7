"""Hostile input: every reader and infer.py give each bad row a defined result or an error naming
the file and line; infer.py never drops or reorders rows and never shows a traceback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elbert_jax import config as config_lib
from elbert_jax import data as data_lib
from elbert_jax import training
from elbert_jax.data import BadRows, DataError
from elbert_jax.predict import BadInput, Predictor, read_texts
from elbert_jax.tokenizer import clean_texts

ROOT = Path(__file__).resolve().parents[1]
LONG = "profit " * 28_572  # 200,004 characters
NAMES = ["neg", "pos"]

# (raw CSV record, reason it is bad or None) - CRLF line ends, like a spreadsheet export
CSV_ROWS = [
    (b"ok one,pos", None),
    (b'"quoted, with ""comma""",neg', None),
    (b'"embedded\r\nnewline",pos', None),
    (b",pos", "empty or missing 'text'"),
    (b"   ,neg", "empty or missing 'text'"),
    (b"x,bullish", "label not in ['neg', 'pos']"),
    (b"unquoted, comma,pos", "more fields than the header (an unquoted delimiter?)"),
    (b"only text", "fewer fields than the header"),
    (b"caf\xe9 in latin-1,pos", "invalid UTF-8"),
    (b"nul\x00byte,neg", None),
    (b"x,", "empty or missing 'label'"),
    (LONG.encode() + b",pos", None),
    (b"1,1", None),  # an integer id is a label too
]


def write_csv(path: Path) -> tuple[list[str], dict[int, str]]:
    """The hostile CSV; returns the first line of every record and the bad ones by first line."""
    lines, bad, number = [b"\xef\xbb\xbftext,label"], {}, 2  # with a UTF-8 BOM
    for raw, reason in CSV_ROWS:
        if reason:
            bad[number] = reason
        lines.append(raw)
        number += raw.count(b"\n") + 1
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return lines, bad


def test_csv_bad_rows_counted_then_error_or_skip(tmp_path):
    path = tmp_path / "train.csv"
    _, bad_lines = write_csv(path)
    with pytest.raises(DataError) as err:
        data_lib.read_table(path, label_names=NAMES)
    message = str(err.value)
    assert f"{len(bad_lines)} bad rows" in message and "data.bad_rows='skip'" in message
    first = min(bad_lines)
    assert f"{path}:{first}: {bad_lines[first]}" in message
    bad = BadRows("skip")
    data, names = data_lib.read_table(path, label_names=NAMES, bad=bad)
    assert sorted(int(where.rsplit(":", 1)[1]) for where, _, _ in bad.rows) == sorted(bad_lines)
    assert sorted(reason for _, reason, _ in bad.rows) == sorted(r for _, r in CSV_ROWS if r)
    assert data.texts == ["ok one", 'quoted, with "comma"', "embedded\r\nnewline", "nul\x00byte",
                          LONG, "1"]
    assert data.labels.tolist() == [1, 0, 1, 0, 1, 1] and names == NAMES


def test_jsonl_bad_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join([
        b'{"text": "fine", "label": "pos"}',
        b"",                                           # blank: not a row
        b"[1, 2]",                                     # 3 not an object
        b'"just a string"',                            # 4 not an object
        b"{oops",                                      # 5 not JSON
        b'{"text": "caf\xe9", "label": "neg"}',        # 6 invalid UTF-8
        b'{"text": null, "label": "neg"}',             # 7 empty text
        b'{"text": 5, "label": "neg"}',                # 8 text not a string
        b'{"text": "x", "label": "meh"}',              # 9 label outside the set
        b'{"text": "lone \\ud800 surrogate", "label": 0}',  # 10 kept; the tokenizer copes
        b'{"text": "crlf", "label": "neg"}\r',         # 11 CRLF
    ]) + b"\n")
    bad = BadRows("skip")
    data, _ = data_lib.read_table(path, label_names=NAMES, bad=bad)
    assert [w.rsplit(":", 1)[1] for w, _, _ in bad.rows] == ["3", "4", "5", "6", "7", "8", "9"]
    assert bad.counts() == {"not a JSON object": 2, "not JSON": 1, "invalid UTF-8": 1,
                            "empty or missing 'text'": 2, "label not in ['neg', 'pos']": 1}
    assert data.texts == ["fine", "lone \ud800 surrogate", "crlf"]
    assert clean_texts(data.texts)[1].startswith("lone \ufffd")


def test_phrasebank_bad_lines_and_empty_file(tmp_path):
    lines = ["Profit rose .@positive", "no label here", "@positive", "Sales up .@bullish", "",
             "Next\x85line stays one sentence .@neutral", "Kone said @ noon .@negative "]
    path = tmp_path / "Sentences_50Agree.txt"
    path.write_bytes("\r\n".join(lines).encode("latin-1"))
    with pytest.raises(DataError, match=r"3 bad rows \(1 no '@' before the label, 1 empty sentence, "
                                        r"1 label not in") as err:
        data_lib.read_phrasebank(tmp_path)
    assert f"{path}:2: no '@'" in str(err.value)
    bad = BadRows("skip")
    data = data_lib.read_phrasebank(tmp_path, bad=bad)
    assert data.texts == ["Profit rose .", "Next\x85line stays one sentence .", "Kone said @ noon ."]
    assert data.labels.tolist() == [2, 1, 0] and len(bad.rows) == 3
    path.write_bytes(b"")
    assert len(data_lib.read_phrasebank(tmp_path)) == 0
    (tmp_path / "empty.csv").write_bytes(b"")
    assert len(data_lib.read_table(tmp_path / "empty.csv", label_names=NAMES)[0]) == 0


def test_training_stops_on_bad_rows_unless_told_to_skip(tmp_path):
    path = tmp_path / "train.csv"
    write_csv(path)
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **{
        "data.source": "files", "data.train_file": str(path), "data.label_names": NAMES})
    with pytest.raises(DataError, match=r"7 bad rows \(2 empty or missing 'text'"):
        training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any compute
    with config.unlocked():
        config.data.bad_rows = "skip"
    splits = training.load_splits(config)
    assert splits.stats["bad_rows_skipped"]["empty or missing 'text'"] == 2
    assert sum(splits.stats["bad_rows_skipped"].values()) == 7
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 6
    path.write_bytes(b"text,label\r\n,pos\r\n")
    with pytest.raises(DataError, match="no usable rows"):
        training.load_splits(config)


# ---------------------------------------------------------------- infer.py and read_texts

TXT_LINES = [b"Operating profit rose .", b"", b"   ", b"caf\xe9 latin-1 byte", b"nul\x00byte",
             b"crlf line\r", b"lone\rcarriage return", "unicode\u2028line separator".encode(),
             b"\xff\xfe\xfd", LONG.encode(), b"last line without newline"]


def test_read_texts_hostile_txt_csv_jsonl(tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"\n".join(TXT_LINES))
    texts = list(read_texts(txt))
    assert len(texts) == len(TXT_LINES)  # one row per \n-separated line, nothing dropped
    assert texts[3] == "caf\ufffd latin-1 byte" and texts[4] == "nul\x00byte"
    assert texts[5] == "crlf line" and texts[6] == "lone\rcarriage return"
    assert texts[7] == "unicode\u2028line separator" and len(texts[9]) == len(LONG)
    assert list(read_texts(txt, encoding="latin-1"))[3] == "caf\xe9 latin-1 byte"

    path = tmp_path / "in.csv"
    lines, bad_lines = write_csv(path)
    items = list(read_texts(path))
    assert len(items) == len(CSV_ROWS)
    marked = {int(i.where.rsplit(":", 1)[1]): i.reason for i in items if isinstance(i, BadInput)}
    assert list(marked) == [k for k, r in bad_lines.items() if "more fields" in r]  # others: text
    assert items[2] == "embedded\r\nnewline" and items[8] == "caf\ufffd in latin-1"
    with pytest.raises(DataError, match=r"in.csv:\d+: more fields"):
        list(read_texts(path, bad_rows="error"))

    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"text": "a"}\n\n[1]\n{"text": 3.5}\n{"other": 1}\n{"text": "z"}')
    items = list(read_texts(jsonl))
    assert [str(i) if isinstance(i, BadInput) else i for i in items] == [
        "a", f"{jsonl}:2: blank line (expected a JSON object)",
        f"{jsonl}:3: expected a JSON object with a 'text' field", "3.5",
        f"{jsonl}:5: expected a JSON object with a 'text' field", "z"]
    (tmp_path / "empty.txt").write_bytes(b"")
    assert list(read_texts(tmp_path / "empty.txt")) == []


def test_predictor_keeps_every_row_in_place(trained):
    workdir, _ = trained
    predictor = Predictor.from_workdir(workdir, batch_size=4)
    items = ["up", BadInput("f:2", "not JSON"), "", "\udcff bytes", LONG, BadInput("f:6", "x"), "down"]
    rows = list(predictor.stream(items, chunk=3))
    assert len(rows) == len(items)
    assert [r.get("error") for r in rows] == [None, "f:2: not JSON", None, None, None, "f:6: x", None]
    assert rows[2]["empty"] is True and rows[1]["label"] is None
    assert [bool(r.get("truncated")) for r in rows] == [i == 4 for i in range(len(items))]
    single = predictor.predict(["up", "down"])
    assert rows[0]["probs"] == single[0]["probs"] and rows[6]["probs"] == single[1]["probs"]


def run_infer(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "infer.py"), *args], input=stdin,
                          capture_output=True, cwd=ROOT, timeout=300)


def test_infer_cli_hostile_files(trained, tmp_path):
    workdir, _ = trained
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"\n".join(TXT_LINES))
    run = run_infer("--checkpoint", str(workdir), "--input", str(txt), "--engine", "masked")
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.decode().splitlines()]
    assert [r["id"] for r in rows] == list(range(len(TXT_LINES)))
    assert [bool(r.get("empty")) for r in rows] == [i in (1, 2) for i in range(len(TXT_LINES))]
    assert all(r["label"] and len(r["probs"]) == 3 for r in rows)
    summary = json.loads(run.stderr.decode().strip().splitlines()[-1])
    assert summary["count"] == len(TXT_LINES) and summary["empty"] == 2 and summary["errors"] == 0
    assert [bool(r.get("truncated")) for r in rows] == [line == LONG.encode() for line in TXT_LINES]
    assert summary["truncated"] == 1

    path = tmp_path / "in.csv"
    write_csv(path)
    out = tmp_path / "out.csv"
    run = run_infer("--checkpoint", str(workdir), "--input", str(path), "--output", str(out),
                    "--format", "csv")
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr[-2000:]
    rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
    assert [int(r["id"]) for r in rows] == list(range(len(CSV_ROWS)))
    errors = [r["error"] for r in rows]
    assert sum(bool(e) for e in errors) == 1 and "more fields than the header" in errors[6]
    assert rows[6]["score"] == ""
    assert all(-1 <= float(r["score"]) <= 1 for r in rows if not r["error"])
    assert json.loads(run.stderr.decode().strip().splitlines()[-1])["errors"] == 1

    run = run_infer("--checkpoint", str(workdir), "--input", str(path), "--bad_rows", "error")
    assert run.returncode == 1 and b"Traceback" not in run.stderr
    assert f"{path}:9: more fields".encode() in run.stderr
    assert len(run.stdout.decode().splitlines()) == 6  # the rows before it were written

    stdin = b"up\r\n\xff\xfe\n\nnul\x00\n"
    run = run_infer("--checkpoint", str(workdir), stdin=stdin)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.stdout.decode().splitlines()) == 4

    for args, message in [(["--input", str(tmp_path / "missing.txt")], b"No such file"),
                          (["--input", str(tmp_path)], b"unsupported input type"),
                          (["--input", str(txt), "--encoding", "klingon"], b"unknown encoding")]:
        run = run_infer("--checkpoint", str(workdir), *args)
        assert run.returncode == 1 and message in run.stderr and b"Traceback" not in run.stderr, \
            run.stderr[-1000:]
    run = run_infer("--checkpoint", str(tmp_path / "nothing"), "x")
    assert run.returncode == 1 and b"nothing: no such folder" in run.stderr
    assert b"model.json" in run.stderr and b"Traceback" not in run.stderr


def test_tokenizer_never_fails_on_text(trained):
    workdir, _ = trained
    from elbert_jax.tokenizer import load_tokenizer

    tok = load_tokenizer(workdir / "tokenizer")
    enc = tok(["", "\x00", "\udcff", LONG, "\u2028"], max_length=32)
    assert enc["input_ids"].shape == (5, 32) and np.all(enc["attention_mask"].sum(1) >= 2)
    with pytest.raises(TypeError, match="text 1 is a NoneType"):
        tok(["fine", None])


def test_train_cli_names_bad_config_and_data_without_a_traceback(tmp_path):
    """train.py's user errors end as one line saying what and where (exit 1), as infer.py's do."""
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nProfit rose.,pos\n,neg\n")
    tiny = str(ROOT / "configs" / "tiny.py")
    for overrides, message in [
            (["--config.train.epochs=0"], "train.py: error: invalid config: train.epochs=0"),
            (["--config.data.source=files", f"--config.data.train_file={bad}"], f"{bad}:3"),
            (["--mode=report"], "not a workdir written by train.py (no model.json)")]:
        run = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", tiny,
                              "--workdir", str(tmp_path / "run"), *overrides],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr, \
            run.stderr[-2000:]
