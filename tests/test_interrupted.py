"""Interrupted training: a SIGKILLed run and a damaged latest checkpoint still end where an
uninterrupted run ends, bit for bit."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from elbert_jax import config as config_lib
from elbert_jax import checkpoints, training

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.py"


def assert_same_params(a: Path, b: Path) -> None:
    _, params_a, _ = checkpoints.restore_best_params(a)
    _, params_b, _ = checkpoints.restore_best_params(b)
    for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(x, y)


def committed_steps(workdir: Path) -> list[int]:
    # Orbax writes a step into "<step>.orbax-checkpoint-tmp" (commit marker included) and renames
    # it when done: only the renamed, all-digit folders are committed
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.glob("[0-9]*")
                  if p.name.isdigit() and (p / "commit_success.txt").exists()) \
        if folder.exists() else []


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(trained, tmp_path):
    """The trained fixture is the uninterrupted run (checkpoint_every only adds saves)."""
    reference, _ = trained
    workdir = tmp_path / "killed"
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(TINY), "--workdir",
               str(workdir), "--config.train.checkpoint_every=2"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not committed_steps(workdir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    stderr = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert committed_steps(workdir), "killed before any checkpoint was written"
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("split") == "test" for r in records)  # it really died mid-run

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from" in rerun.stderr
    assert_same_params(reference, workdir)
    test = lambda w: [json.loads(x) for x in (w / "metrics.jsonl").open()][-1]  # noqa: E731
    assert test(workdir) == test(reference)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_latest_checkpoint_falls_back_to_previous(trained, tmp_path, caplog, damage):
    reference, _ = trained
    config = config_lib.load_config_file(TINY, **{"train.checkpoint_every": 3})
    workdir = tmp_path / "run"
    assert training.train_and_evaluate(config, workdir, stop_at_step=8) == {"stopped_at": 8}
    assert committed_steps(workdir) == [3, 6]
    files = sorted((p for p in (workdir / "checkpoints" / "6" / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    biggest = files[-1]
    raw = biggest.read_bytes()
    if damage == "truncate":  # a disk that filled up, a copy cut short
        biggest.write_bytes(raw[: len(raw) // 2])
    else:  # same size, different bytes in the middle
        middle = len(raw) // 2
        biggest.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 64])
                            + raw[middle + 64:])
    with caplog.at_level(logging.INFO, logger="elbert_jax"):
        training.train_and_evaluate(config, workdir)
    assert "checkpoints/6 is unreadable" in caplog.text
    assert "resumed from" in caplog.text and "at step 3" in caplog.text
    assert (workdir / "unreadable_checkpoints" / "6").is_dir()  # kept for inspection, not deleted
    assert_same_params(reference, workdir)
