"""Data parallelism over a device mesh matches one device: training (4 devices vs 1) and every
early-exit engine. On a machine with fewer than 4 devices the suite reruns itself in a
subprocess with 4 virtual CPU devices (``--xla_force_host_platform_device_count=4``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from elbert_jax import config as config_lib
from elbert_jax import (EncoderConfig, Engine, ExitPolicy, ElbertModel, checkpoints, init_params,
                        parallel, training)

ROOT = Path(__file__).resolve().parents[1]
FOUR = jax.device_count() >= 4
needs_four = pytest.mark.skipif(not FOUR, reason="runs inside test_on_four_virtual_devices")


@pytest.mark.skipif(FOUR, reason="this process already has 4 devices")
def test_on_four_virtual_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\b5 passed", run.stdout), run.stdout[-2000:]


@needs_four
def test_training_on_four_devices_matches_one(tmp_path):
    config = lambda mode: config_lib.load_config_file(  # noqa: E731
        ROOT / "configs" / "tiny.py", **{"train.data_parallel": mode})
    one = training.train_and_evaluate(config("off"), tmp_path / "one")
    four = training.train_and_evaluate(config("auto"), tmp_path / "four")
    _, a, _ = checkpoints.restore_best_params(tmp_path / "one")
    _, b, _ = checkpoints.restore_best_params(tmp_path / "four")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)  # all-reduce order differs
    assert four["test"]["accuracy"] == pytest.approx(one["test"]["accuracy"], abs=0.02)
    assert four["test"]["per_exit_accuracy"] == pytest.approx(one["test"]["per_exit_accuracy"],
                                                               abs=0.02)


@needs_four
def test_pretraining_on_four_devices_matches_one(trained, tmp_path):
    import safetensors.numpy

    from elbert_jax import pretrain, report

    base = report.export(trained[0], tmp_path / "base")
    config = lambda mode: config_lib.load_config_file(  # noqa: E731
        ROOT / "configs" / "tiny.py", **{"model.name_or_path": str(base), "pretrain.epochs": 1,
                                         "pretrain.lr": 3e-3, "train.data_parallel": mode})
    one = pretrain.pretrain(config("off"), tmp_path / "one")
    four = pretrain.pretrain(config("auto"), tmp_path / "four")
    assert four["after"]["mlm_loss"] == pytest.approx(one["after"]["mlm_loss"], rel=1e-4)
    a, b = (safetensors.numpy.load_file(tmp_path / run / "encoder" / "model.safetensors")
            for run in ("one", "four"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


@needs_four
def test_batch_divisible_by_devices_is_validated():
    for key in ("train.batch_size", "pretrain.batch_size"):
        config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **{key: 6})
        with pytest.raises(ValueError, match=f"{key}=6.* must be multiples of the 4 devices"):
            config_lib.validate_config(config)


@needs_four
@pytest.mark.parametrize("model_type", ["albert", "bert"])  # bert: refill by depth groups
def test_engines_on_four_devices_match_one(model_type):
    config = EncoderConfig(model_type=model_type, vocab_size=50,
                           embedding_size=8 if model_type == "albert" else None, hidden_size=16,
                           num_hidden_layers=4, num_attention_heads=2, intermediate_size=24,
                           max_position_embeddings=32, num_labels=3)
    model, params = ElbertModel(config), init_params(config, seed=1)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 30, 101)
    mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(3, 50, (101, 32)) * mask
    policy = ExitPolicy("static", layer=4)
    depth = rng.integers(1, 5, 101).astype(np.float32)  # each row's own exit layer
    mesh = parallel.data_mesh(4, local=True)
    for kind in ("full", "masked", "compact", "refill"):
        one = Engine(model, params, policy, kind, batch_size=8, queue_batches=2)(
            ids, mask, thresholds=depth)
        four = Engine(model, params, policy, kind, batch_size=8, queue_batches=2, mesh=mesh)
        got = four(ids, mask, thresholds=depth)
        assert four.devices == 4
        np.testing.assert_array_equal(got.layer, one.layer, err_msg=kind)
        np.testing.assert_array_equal(got.prediction, one.prediction, err_msg=kind)
        np.testing.assert_allclose(got.probs, one.probs, atol=1e-6, err_msg=kind)
    np.testing.assert_array_equal(one.layer, depth)


@pytest.mark.skipif(FOUR, reason="runs once, in the main process")
def test_configure_xla_adds_gpu_flags_once():
    env = {}
    parallel.configure_xla(env)
    assert env["XLA_FLAGS"] == parallel.XLA_GPU_FLAGS
    parallel.configure_xla(env)  # idempotent
    assert env["XLA_FLAGS"] == parallel.XLA_GPU_FLAGS
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    parallel.configure_xla(env)  # other flags kept
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4 " + parallel.XLA_GPU_FLAGS
    mine = "--xla_gpu_enable_command_buffer="  # the user's own choice wins, option by option
    env = {"XLA_FLAGS": mine}
    parallel.configure_xla(env)
    assert env["XLA_FLAGS"] == f"{mine} {parallel.CUBLAS_GEMMS}"
    mine = "--xla_gpu_enable_triton_gemm=true"
    env = {"XLA_FLAGS": mine}
    parallel.configure_xla(env)
    assert env["XLA_FLAGS"] == f"{mine} {parallel.COMMAND_BUFFERS}"


@pytest.mark.skipif(FOUR, reason="runs once, in the main process")
def test_gpu_flags_parse_where_xla_runs():
    # a flag XLA does not know aborts the process at start-up: the CLIs must not do that on CPU
    code = ("import jax; from elbert_jax import parallel; parallel.configure_xla(); "
            "print(jax.numpy.ones(2).sum())")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2.0"
