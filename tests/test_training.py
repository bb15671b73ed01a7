"""End to end on CPU: train -> checkpoint -> resume -> evaluate -> report -> export -> infer."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from elbert_jax import config as config_lib
from elbert_jax import EncoderConfig, checkpoints, load_tokenizer, training
from elbert_jax import summary as summary_lib
from elbert_jax.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.py"


def tiny(**overrides):
    return config_lib.load_config_file(TINY, **overrides)


def test_workdir_contents_and_metrics(trained):
    workdir, result = trained
    for name in ("config.json", "model.json", "metrics.jsonl", "tokenizer/tokenizer.json"):
        assert (workdir / name).exists(), name
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r.get("split") == "validation"]
    assert [r["epoch"] for r in validation] == [0, 1]
    assert len(validation[0]["per_exit_accuracy"]) == 3
    assert records[-1]["split"] == "test" and records[-1]["accuracy"] == result["test"]["accuracy"]
    losses = [r["loss"] for r in records if "loss" in r]
    assert all(np.isfinite(losses)) and len(losses) >= 5
    best = max(r["accuracy"] for r in validation)
    assert result["best_validation"] == pytest.approx(best)


def test_truncated_texts_are_counted_per_split(trained):
    workdir, _ = trained
    stats = json.loads((workdir / "model.json").read_text())["data_stats"]
    splits = training.load_splits(tiny())
    hf = load_tokenizer(workdir / "tokenizer").hf
    expected = {name: sum(len(ids) > 32 for ids in hf(getattr(splits, name).texts)["input_ids"])
                for name in ("train", "validation", "test")}
    assert stats["truncated_to_32_tokens"] == expected


@pytest.mark.parametrize("changes", [{}, {"train.ema_decay": 0.9, "data.group_by_length": 2}],
                         ids=["plain", "ema_and_length_groups"])
def test_resume_equals_uninterrupted(tmp_path, changes):
    """Crash mid-epoch after a checkpoint, rerun the same command: identical params (with a
    parameter average too: it is part of the checkpointed optimizer state; and with batches
    grouped by length, which resume at the same batch)."""
    config = tiny(**{"train.checkpoint_every": 3, **changes})
    reference = training.train_and_evaluate(config, tmp_path / "a")
    assert training.train_and_evaluate(config, tmp_path / "b", stop_at_step=5) == {"stopped_at": 5}
    resumed = training.train_and_evaluate(config, tmp_path / "b")
    assert resumed["test"] == reference["test"]
    _, params_a, _ = checkpoints.restore_best_params(tmp_path / "a")
    _, params_b, _ = checkpoints.restore_best_params(tmp_path / "b")
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    steps = [json.loads(line).get("step") for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == sorted(steps)  # the crashed run's records past step 3 were dropped


def tensorboard_scalars(folder: Path) -> list[tuple[str, int, float]]:
    """The points TensorBoard shows: event files in the order written, each writer's purge step
    (a START session log) dropping what earlier files logged at or after it."""
    import struct

    from tensorboardX.proto import event_pb2

    files = []
    for path in folder.glob("events.out.tfevents.*"):
        data, events, at = path.read_bytes(), [], 0
        while at < len(data):  # TFRecord: length, its crc, the Event bytes, their crc
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
            at += 16 + length
        files.append(events)
    shown: list[tuple[str, int, float]] = []
    for events in sorted(files, key=lambda events: events[0].wall_time):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                shown = [point for point in shown if point[1] < event.step]
            shown += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
    return shown


def test_tensorboard_shows_what_metrics_jsonl_holds_after_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    config = tiny(**{"train.checkpoint_every": 3, "train.log_every": 2, "train.tensorboard": True})
    training.train_and_evaluate(config, tmp_path, stop_at_step=5)  # logged step 4, saved step 3
    training.train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    want = sorted((tag, r["step"], v) for r in records for tag, v in training._scalars(r))
    assert {("train/loss", 4), ("validation/per_exit_accuracy/3", records[-1]["step"]),
            ("test/policy_cost", records[-1]["step"])} <= {point[:2] for point in want}
    shown = sorted(tensorboard_scalars(tmp_path / "tensorboard"))  # step 4 once: the resumed run's
    assert [point[:2] for point in shown] == [point[:2] for point in want]
    np.testing.assert_allclose([p[2] for p in shown], [p[2] for p in want], rtol=1e-6, atol=1e-7)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="tensorboardX"):
        config_lib.validate_config(config)


def test_a_resumed_writer_in_the_same_second_keeps_the_first_runs_events(tmp_path):
    pytest.importorskip("tensorboardX")
    for step in (0, 3):  # one process, well within a second: the names must still differ
        with training._board(tmp_path, step, True) as board:
            board.add_scalar("train/loss", 1.0 + step, step)
    assert sorted(p[:2] for p in tensorboard_scalars(tmp_path / "tensorboard")) == \
        [("train/loss", 0), ("train/loss", 3)]


def test_param_average_is_what_gets_evaluated_and_saved(tmp_path):
    """With a negligible decay the average is the last params, so the best checkpoint of a
    one-epoch run equals the plain run's (the params after each update are averaged, not those
    before); with a real decay it differs (the average, not the last params, is saved)."""
    runs = {decay: training.train_and_evaluate(tiny(**{"train.epochs": 1, "train.ema_decay": decay}),
                                               tmp_path / str(decay)) for decay in (0.0, 1e-9, 0.9)}
    assert runs[1e-9]["test"]["per_exit_accuracy"] == runs[0.0]["test"]["per_exit_accuracy"]
    best = {decay: jax.tree.leaves(checkpoints.restore_best_params(tmp_path / str(decay))[1])
            for decay in runs}
    for x, y in zip(best[0.0], best[1e-9], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(x - y).max()) for x, y in zip(best[0.0], best[0.9])) > 1e-3
    ended = jax.tree.leaves(checkpoints.restore_last_params(tmp_path / "0.9")[1])  # one epoch: kept
    for x, y in zip(best[0.9], ended, strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_last_checkpoint_is_where_training_ended(trained, tmp_path, capsys):
    """select_metric=last keeps every epoch in turn. The metric decides only what is kept, so that
    run follows the fixture's trajectory, and its kept params are the fixture's last training
    state bit for bit; ``compare --b_checkpoint last`` scores that state."""
    from elbert_jax import compare as compare_lib

    workdir, _ = trained
    last_run = tmp_path / "last"
    result = training.train_and_evaluate(tiny(**{"train.select_metric": "last"}), last_run)
    records = [json.loads(line) for line in (last_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in records if r.get("split") == "validation"] == [True, True]
    _, kept, meta = checkpoints.restore_best_params(last_run)
    _, ended, ended_meta = checkpoints.restore_params(workdir, "last")
    assert meta["best_step"] == ended_meta["last_step"] == result["step"]
    for x, y in zip(jax.tree.leaves(kept), jax.tree.leaves(ended), strict=True):
        np.testing.assert_array_equal(x, y)
    right, _ = compare_lib.right_per_text(workdir, checkpoint="last")
    np.testing.assert_array_equal(right, compare_lib.right_per_text(last_run)[0])
    compare_lib.main(["--a", str(workdir), "--b", str(workdir), "--b_checkpoint", "last",
                      "--resamples", "10"])
    assert "B at last exit (last checkpoint)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="cannot score the last one"):
        compare_lib.right_per_text(workdir, policy="cwb", checkpoint="last")
    from elbert_jax import report

    kept_report = report.write_report(tiny(), last_run)
    ended_report = report.write_report(tiny(), workdir, checkpoint="last")
    assert ended_report["report"].endswith("report_test_last/report.json")
    assert ended_report["checkpoint"] == "last" and kept_report["checkpoint"] == "best"
    for key in ("checkpoint_step", "metrics", "exit_histogram", "chosen_on_validation"):
        assert ended_report[key] == kept_report[key], key
    with pytest.raises(ValueError, match="is not one of"):
        checkpoints.restore_params(workdir, "first")
    first_epoch = next(r["step"] for r in records if r.get("split") == "validation")
    training.train_and_evaluate(tiny(), tmp_path / "cut", stop_at_step=first_epoch + 1)
    with pytest.raises(FileNotFoundError, match="no last state of a finished run"):
        checkpoints.restore_last_params(tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="none, so no last training state"):
        checkpoints.restore_last_params(tmp_path / "cut")
    assert not (tmp_path / "cut" / "checkpoints").exists()


@pytest.mark.parametrize("change, refused", [
    ({"model.scratch.hidden_size": 32, "model.scratch.num_attention_heads": 4},
     r"different model \(hidden_size: 16 -> 32.*num_attention"),
    # a finished run rerun on another split would score its params on texts it trained on
    ({"data.split_seed": 5}, r"trained on other texts \(the train, validation, test"),
    ({"data.demo_size": 150}, r"trained on other texts \(the train, validation, test")])
def test_workdir_of_another_model_or_other_texts_is_refused_untouched(trained, change, refused):
    workdir, _ = trained
    before = {p: p.read_bytes() for p in [workdir / "config.json", workdir / "model.json",
                                           workdir / "metrics.jsonl"]}
    with pytest.raises(ValueError, match=refused):
        training.train_and_evaluate(tiny(**change), workdir)
    assert {p: p.read_bytes() for p in before} == before


def test_text_digest_sees_texts_pairs_labels_and_order():
    from elbert_jax.data import TextSet

    base = TextSet(["a b", "c"], np.array([0, 1]))
    same = TextSet(["a b", "c"], np.array([0, 1], np.int32), targets=np.eye(2, dtype=np.float32))
    assert base.digest() == same.digest()  # targets are training settings, not the examples
    for other in (TextSet(["a b", "d"], np.array([0, 1])), TextSet(["a b", "c"], np.array([0, 2])),
                  TextSet(["c", "a b"], np.array([1, 0])),
                  TextSet(["a b", "c"], np.array([0, 1]), pairs=["x", "y"])):
        assert other.digest() != base.digest()


def test_run_settings_do_not_block_a_resume(tmp_path):
    # a workdir written before fuse_qkv existed, resumed with other kernel and dtype settings
    encoder = dataclasses.asdict(EncoderConfig(hidden_size=16, num_attention_heads=2))
    old = {k: v for k, v in encoder.items() if k != "fuse_qkv"}
    (tmp_path / "model.json").write_text(json.dumps({"encoder": old, "label_names": ["a", "b"]}))
    (tmp_path / "checkpoints" / "7").mkdir(parents=True)
    checkpoints.check_resumable(tmp_path, dict(encoder, fuse_qkv=True, attention="auto",
                                             dtype="bfloat16"), ["a", "b"])
    with pytest.raises(ValueError, match=r"different model \(label_names"):
        checkpoints.check_resumable(tmp_path, encoder, ["a", "c"])


@pytest.mark.parametrize("changes", [{"train.weighting": "linear", "train.grad_accum": 2,
                                      "train.label_smoothing": 0.1, "train.rdrop": 1.0},
                                     {"train.t_grad_quirk": True, "train.distill_weight": 0.5,
                                      "train.layer_lr_decay": 0.8, "train.head_lr_scale": 10.0,
                                      "model.head_per_layer": True, "model.scratch.model_type": "bert"}])
def test_variants_train(tmp_path, changes):
    result = training.train_and_evaluate(tiny(**{"train.epochs": 1, **changes}), tmp_path)
    assert 0.0 <= result["test"]["accuracy"] <= 1.0


def test_rdrop_needs_dropout(tmp_path):
    with pytest.raises(ValueError, match="rdrop compares two dropout passes"):
        training.train_and_evaluate(tiny(**{"train.rdrop": 1.0,
                                            "model.classifier_dropout_prob": 0.0}), tmp_path)


def test_report_and_export(trained, tmp_path):
    torch = pytest.importorskip("torch")
    import transformers

    from elbert_jax import report

    workdir, _ = trained
    with pytest.raises(ValueError, match=r"trained on another split than this config reads \(its "
                                         r"validation and test texts differ\)"):
        report.write_report(tiny(**{"data.split_seed": 5}), workdir)
    summary = report.write_report(tiny(), workdir, max_cost=1.0)
    table = json.loads(Path(summary["report"]).read_text())
    assert {r["policy"] for r in table["sweep"]} == set(report.SWEPT)
    assert sum(table["exit_histogram"]) == table["texts"]
    chosen = table["chosen_on_validation"]
    assert chosen["max_cost"] == 1.0 and {r["window"] for r in chosen["rows"]} == {2, 3, 4, 5, None}
    for row in chosen["rows"]:
        assert 0 <= row["test_accuracy"] <= 1
        assert 1 / 3 <= row["test_cost"] <= 1  # 3 layers: every text runs at least one
    top = max(r["validation_agreement"] for r in chosen["rows"] if r["policy"] == "cwb")
    assert chosen["best"]["cwb"]["validation_agreement"] == top
    assert set(chosen["best"]) == set(report.SWEPT)
    assert chosen["criterion"] == "agreement" and chosen["by"]["agreement"] == chosen["best"]
    accurate = chosen["by"]["accuracy"]["cwb"]  # the other criterion's choice, written beside it
    assert accurate["validation_accuracy"] >= chosen["best"]["cwb"]["validation_accuracy"]
    assert accurate["validation_agreement"] <= chosen["best"]["cwb"]["validation_agreement"]
    run = summary_lib.run_summary(workdir)  # the multi-seed table reads what the report wrote
    assert run["report"]["chosen_on_validation"] == chosen["best"]
    assert run["report"]["last_exit"] == table["metrics"]["per_exit_accuracy"][-1]
    last = round(run["report"]["last_exit"] * run["test_texts"])
    assert f"| **1 run, texts right of {run['test_texts']}** | {last} (" in summary_lib.markdown([run])
    for image in table["images"]:
        assert Path(image).stat().st_size > 1000
    folder = report.export(workdir, tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.id2label[0] == "negative"
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = "Nokia's net sales rose by 5 % in 2008."
    with torch.no_grad():
        theirs = torch.softmax(hf(**tok([text], return_tensors="pt")).logits, -1)[0].numpy()
    row = Predictor.from_workdir(workdir, name="static", layer=3).predict([text])[0]
    np.testing.assert_allclose(row["probs"], theirs, atol=1e-5)


def test_a_run_transformers_cannot_run_is_not_exported(trained, tmp_path):
    """Mean pooling has no transformers head: refused as train.py's one error line (a
    ConfigError), before the export folder exists."""
    import shutil

    from elbert_jax import report
    from elbert_jax.config import ConfigError

    workdir = tmp_path / "mean_pooling"
    shutil.copytree(trained[0], workdir)
    meta = json.loads((workdir / "model.json").read_text())
    meta["encoder"]["pooling"] = "mean"  # the same params, read as a mean-pooling model
    (workdir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"cannot be exported: pooling='mean' has no transformers"):
        report.export(workdir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("kind", ["roberta", "distilbert", "electra"])
def test_a_pretrained_checkpoint_fine_tunes_serves_and_exports(tmp_path, kind):
    """Checkpoints as the hub has them: a RobertaForMaskedLM with a byte-level BPE tokenizer
    (roberta-base), a DistilBertForMaskedLM or an ElectraForPreTraining (the released
    discriminator) with a WordPiece one: fine-tuned by train.py's code, served by Predictor, and
    exported to a folder whose transformers model gives Predictor's last exit on a padded batch
    (RoBERTa's positions depend on the padding), and which Predictor serves as it is."""
    torch = pytest.importorskip("torch")
    import transformers

    from conftest import (TINY_DISTILBERT, TINY_ELECTRA, TINY_ROBERTA, save_random_hf,
                          save_roberta_tokenizer)
    from elbert_jax import demo, report

    folder = tmp_path / kind
    if kind == "roberta":
        save_roberta_tokenizer(folder)
    else:
        demo.train_tokenizer(demo.make_sentences(200).texts, folder, 200)
    vocab_size = len(transformers.AutoTokenizer.from_pretrained(folder))
    sizes = {"roberta": TINY_ROBERTA, "distilbert": TINY_DISTILBERT, "electra": TINY_ELECTRA}[kind]
    save_random_hf(folder, kind, head="pretraining" if kind == "electra" else "mlm",
                   **{**sizes, "vocab_size": vocab_size})
    workdir = tmp_path / "run"
    result = training.train_and_evaluate(
        tiny(**{"model.name_or_path": str(folder), "train.epochs": 1}), workdir)
    assert 0 <= result["test"]["accuracy"] <= 1
    model, _, _ = checkpoints.restore_params(workdir)
    assert model.config.model_type == kind
    texts = ["Nokia's net sales rose by 5 % in 2008.", "Profit fell."]
    predictor = Predictor.from_workdir(workdir, name="static", layer=3)
    rows = predictor.predict(texts)
    exported = report.export(workdir, tmp_path / "hf")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(exported).eval()
    assert type(hf).__name__.lower() == f"{kind}forsequenceclassification"
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()  # one row padded
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    np.testing.assert_allclose([r["probs"] for r in rows], torch.softmax(theirs, -1).numpy(),
                               atol=1e-5)
    served = Predictor.from_pretrained(exported, max_length=predictor.max_length).predict(texts)
    assert [(r["label"], r.get("truncated")) for r in served] == \
        [(r["label"], r.get("truncated")) for r in rows]
    np.testing.assert_allclose([r["probs"] for r in served], [r["probs"] for r in rows], atol=1e-6)


def test_a_model_too_small_for_the_data_or_the_tokenizer_is_refused(tmp_path):
    """Ids past the vocabulary or positions past the table would be clamped by JAX: refused
    before anything is written, naming both."""
    from conftest import TINY_BERT, save_random_hf
    from elbert_jax import demo
    from elbert_jax.config import ConfigError

    folder = save_random_hf(tmp_path / "bert", "bert", head=False,
                            **{**TINY_BERT, "max_position_embeddings": 16})
    tokenizer = demo.train_tokenizer(demo.make_sentences(200).texts, tmp_path / "tokenizer", 200)
    config = tiny(**{"model.name_or_path": str(folder), "model.tokenizer": str(tokenizer)})
    with pytest.raises(ConfigError, match=r"data.max_length=32 exceeds the 16 positions the model "
                                          r"has .*; the tokenizer has \d+ tokens but the model's "
                                          r"vocabulary 99"):
        training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_predictor_rows_in_order(trained):
    workdir, _ = trained
    predictor = Predictor.from_workdir(workdir)
    texts = ["Profit rose.", "", "x " * 300, "Costs fell by 5 %."]
    rows = predictor.predict(texts, trace=True)
    assert len(rows) == 4
    for row in rows:
        assert row["label"] in ("negative", "neutral", "positive")
        assert 1 <= row["exit_layer"] <= 3 and abs(sum(row["probs"]) - 1) < 1e-4
        assert row["probs"] == row["trace"][row["exit_layer"] - 1]
        negative, _, positive = row["probs"]  # labels negative, neutral, positive
        assert abs(row["score"] - (positive - negative)) < 2e-6  # FinBERT's sentiment score
    assert list(predictor.stream(iter(texts), chunk=3)) == predictor.predict(texts)
    # labels without both polarities get no score
    other = dataclasses.replace(predictor, label_names=["negative", "neutral", "mixed"])
    assert "score" not in other.predict(texts[:1])[0]


def test_cli_train_override_and_infer(tmp_path):
    workdir = tmp_path / "cli"
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(TINY),
                          "--workdir", str(workdir), "--config.train.epochs=1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 1
    run = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(workdir),
                          "Profit rose.", "Costs rose."], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["id"] for r in rows] == [0, 1] and all("exit_layer" in r for r in rows)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    """A diverging run (absurd lr) stops with a clear error; nothing non-finite is saved."""
    config = tiny(**{"train.lr": 1e30, "train.checkpoint_every": 1, "train.log_every": 100})
    with pytest.raises(FloatingPointError, match="last good checkpoint") as error:
        training.train_and_evaluate(config, tmp_path / "nan")
    bad_step = int(str(error.value).split("at step ")[1].split(";")[0])
    saved = [int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and max(saved) < bad_step, (saved, bad_step)
    assert not (tmp_path / "nan" / "best").exists() or not any((tmp_path / "nan" / "best").iterdir())


def test_same_seed_same_metrics_and_predictions(tmp_path):
    """Determinism on CPU: two runs of one config give identical metrics and predictions."""
    config = tiny(**{"train.epochs": 1})
    runs = [training.train_and_evaluate(config, tmp_path / name) for name in ("a", "b")]
    assert runs[0] == runs[1]
    texts = ["Profit rose.", "Costs fell by 5 %.", "The board met."]
    rows = [Predictor.from_workdir(tmp_path / name).predict(texts, trace=True) for name in "ab"]
    assert rows[0] == rows[1]


def test_agreement_targets_train_on_the_annotators_agreement(tmp_path):
    """All four PhraseBank files equal: every target is one-hot, so the run is the plain run (to
    float rounding: soft-target cross-entropy sums K terms); nested files soften the targets."""
    from elbert_jax import demo

    sentences = demo.make_sentences(120, seed=3)
    lines = [f"{t}@{training.data_lib.PHRASEBANK_LABELS[y]}"
             for t, y in zip(sentences.texts, sentences.labels)]

    def run(name, keep_fractions, agreement):
        folder = tmp_path / name / "FinancialPhraseBank-v1.0"
        folder.mkdir(parents=True, exist_ok=True)
        for subset, fraction in zip(training.data_lib.PHRASEBANK_SUBSETS, keep_fractions):
            text = "\r\n".join(lines[:int(len(lines) * fraction)]) + "\r\n"
            (folder / f"Sentences_{subset}.txt").write_bytes(text.encode("latin-1"))
        config = tiny(**{"train.epochs": 1, "data.source": "phrasebank", "data.path": str(folder),
                         "data.agreement_targets": agreement})
        training.train_and_evaluate(config, tmp_path / name / "run")
        records = [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").open()]
        timing = ("texts_per_s", "seconds", "elapsed")
        return [(k, x) for r in records for k, v in r.items() if not k.endswith(timing)
                for x in (v if isinstance(v, list) else [v])]

    plain = run("plain", (1, 1, 1, 1), False)
    one_hot = run("all_agree", (1, 1, 1, 1), True)
    floats = [[x for _, x in records if isinstance(x, float)] for records in (one_hot, plain)]
    assert [r for r in one_hot if not isinstance(r[1], float)] == \
        [r for r in plain if not isinstance(r[1], float)]
    assert floats[0] == pytest.approx(floats[1], rel=1e-5)
    losses = [[x for k, x in records if k == "loss"]
              for records in (plain, run("nested", (1, 0.75, 0.5, 0.25), True))]
    from elbert_jax import report

    nested = tmp_path / "nested" / "run"  # its report breaks test accuracy down by agreement
    reported = report.write_report(checkpoints.saved_config(nested), nested, max_cost=1.0)
    rows, n = reported["by_agreement"], reported["texts"]
    assert reported["validation_trained_on"] is False
    assert [r["highest_subset"] for r in rows] == list(training.data_lib.PHRASEBANK_SUBSETS)
    assert sum(r["texts"] for r in rows) == n and all(r["texts"] for r in rows)
    right = lambda key, name=None: round(sum(  # noqa: E731 - texts right, summed over levels
        (r[name][key] if name else r[key]) * r["texts"] for r in rows))
    for exit_ in range(3):
        assert round(sum(r["per_exit_accuracy"][exit_] * r["texts"] for r in rows)) == \
            round(reported["metrics"]["per_exit_accuracy"][exit_] * n)
    assert right("accuracy", "configured") == round(reported["metrics"]["policy_accuracy"] * n)
    for name, chosen in reported["chosen_on_validation"]["best"].items():
        assert right("accuracy", name) == round(chosen["test_accuracy"] * n), name
        assert sum(r[name]["cost"] * r["texts"] for r in rows) == pytest.approx(
            chosen["test_cost"] * n, rel=1e-5), name
    assert len(losses[0]) == len(losses[1]) > 1
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)
    with pytest.raises(ValueError, match="agreement_targets=True needs data.source='phrasebank'"):
        config_lib.validate_config(tiny(**{"data.agreement_targets": True}))


def test_train_from_adds_the_larger_subsets_other_texts_to_training_only(tmp_path):
    from elbert_jax import demo

    sentences = demo.make_sentences(200, seed=4)
    lines = [f"{t}@{training.data_lib.PHRASEBANK_LABELS[y]}"
             for t, y in zip(sentences.texts, sentences.labels)]
    folder = tmp_path / "FinancialPhraseBank-v1.0"
    folder.mkdir()
    for subset, fraction in zip(training.data_lib.PHRASEBANK_SUBSETS, (1, 0.75, 0.5, 0.25)):
        text = "\r\n".join(lines[:int(len(lines) * fraction)]) + "\r\n"
        (folder / f"Sentences_{subset}.txt").write_bytes(text.encode("latin-1"))
    overrides = {"data.source": "phrasebank", "data.path": str(folder), "data.subset": "75Agree"}
    plain = training.load_splits(tiny(**overrides))
    more = training.load_splits(tiny(**overrides, **{"data.train_from": "50Agree"}))
    assert more.validation.texts == plain.validation.texts and more.test.texts == plain.test.texts
    assert more.train.texts[:len(plain.train)] == plain.train.texts
    added = more.train.texts[len(plain.train):]
    subset_texts = set(plain.train.texts + plain.validation.texts + plain.test.texts)
    assert added and not set(added) & subset_texts
    assert set(added) | subset_texts == set(training.data_lib.read_phrasebank(folder, "50Agree").texts)
    assert more.stats["train_from"]["added"] == len(added)
    assert set(more.train.agreement[len(plain.train):].tolist()) == {0, 1}  # below 75Agree
    config = tiny(**overrides, **{"data.train_from": "50Agree"})
    assert checkpoints.split_identity(config) == checkpoints.split_identity(tiny(**overrides))
    for bad in ({"data.train_from": "AllAgree"}, {"data.train_from": "75Agree"}):
        with pytest.raises(ValueError, match="must be a PhraseBank subset larger"):
            config_lib.validate_config(tiny(**overrides, **bad))


def test_train_on_validation_refits_on_both_and_refuses_choosing_an_epoch_on_them(tmp_path):
    plain = training.load_splits(tiny())
    refit = training.load_splits(tiny(**{"data.train_on_validation": True,
                                         "train.select_metric": "last"}))
    assert refit.train.texts == plain.train.texts + plain.validation.texts
    assert refit.train.labels.tolist() == plain.train.labels.tolist() + plain.validation.labels.tolist()
    assert refit.validation.texts == plain.validation.texts and refit.test.texts == plain.test.texts
    assert refit.stats["train_on_validation"] == len(plain.validation)
    for metric in ("accuracy", "macro_f1", "policy_accuracy"):
        with pytest.raises(ValueError, match="select_metric must be 'last'"):
            config_lib.validate_config(tiny(**{"data.train_on_validation": True,
                                               "train.select_metric": metric}))
    one = training.data_lib.TextSet(["a"], np.array([0]), ["x"])
    with pytest.raises(ValueError, match="only one has sentence pairs"):
        one.concat(training.data_lib.TextSet(["b"], np.array([1])))
    assert one.concat(one).pairs == ["x", "x"]


def test_split_seed_fixes_the_split_apart_from_the_run_seed():
    base = training.load_splits(tiny())
    same = training.load_splits(tiny(**{"seed": 5, "data.split_seed": 0}))
    other = training.load_splits(tiny(**{"seed": 5}))
    for name in ("train", "validation", "test"):
        assert getattr(same, name).texts == getattr(base, name).texts, name
    assert other.test.texts != base.test.texts


def test_a_folder_that_is_not_a_workdir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a workdir written by train.py"):
        checkpoints.restore_best_params(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a workdir"):
        Predictor.from_workdir(tmp_path / "missing")


def test_teacher_targets_mix_labels_with_the_tempered_teacher(trained):
    workdir, _ = trained
    splits = training.load_splits(checkpoints.saved_config(workdir))
    probs, _, _ = training.workdir_probabilities(workdir, splits.train)
    teacher = probs[-1]
    one_hot = np.eye(3, dtype=np.float32)[splits.train.labels]

    def targets(**changes):
        t = tiny(**{"train.teacher": str(workdir), **changes}).train
        return training.teacher_targets(t, splits)

    only_teacher, stats = targets(**{"train.teacher_weight": 1.0})
    np.testing.assert_allclose(only_teacher, teacher, rtol=1e-5, atol=1e-7)
    assert stats["train_accuracy"] == pytest.approx((teacher.argmax(-1) == splits.train.labels).mean(),
                                                    abs=1e-4)
    mixed, _ = targets(**{"train.teacher_temperature": 2.0})
    tempered = np.sqrt(teacher) / np.sqrt(teacher).sum(-1, keepdims=True)
    np.testing.assert_allclose(mixed, 0.5 * one_hot + 0.5 * tempered, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed.sum(-1), 1.0, rtol=1e-5)
    splits.label_names = ["bad", "good", "ugly"]
    with pytest.raises(ValueError, match="predicts"):
        targets()


def test_a_student_trains_on_its_teacher(trained, tmp_path):
    workdir, _ = trained
    student = tmp_path / "student"
    training.train_and_evaluate(tiny(**{"train.epochs": 1, "seed": 3, "data.split_seed": 0,
                                        "train.teacher": str(workdir)}), student)
    stats = json.loads((student / "model.json").read_text())["data_stats"]["teacher"]
    assert stats["workdir"] == str(workdir) and 0 < stats["mean_target_of_label"] < 1
    with pytest.raises(ValueError, match="train.teacher=.* is not a workdir written by train.py"):
        training.train_and_evaluate(tiny(**{"train.teacher": str(tmp_path / "none")}),
                                    tmp_path / "orphan")
    assert not (tmp_path / "orphan").exists()  # refused before anything is written
