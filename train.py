"""Trains, reports on, or exports an ELBERT model.

  python train.py --config configs/demo.py --workdir runs/demo               # train (resumes)
  python train.py --config configs/demo.py --workdir runs/demo --mode report # sweeps + plots
  python train.py --config configs/demo.py --workdir runs/demo --mode export --export_dir out/
  python train.py --config configs/fsa_minilm.py --workdir runs/tapt --mode pretrain  # masked LM
      on the training texts; then train with --config.model.name_or_path=runs/tapt/encoder
Override any config key: --config.train.epochs=5 --config.model.dtype=bfloat16
"""

import json
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, reports.", required=True)
flags.DEFINE_enum("mode", "train", ["train", "report", "export", "pretrain"], "What to do.")
flags.DEFINE_string("export_dir", None, "Where --mode export writes the transformers folder.")
flags.DEFINE_string("split", "test", "Split that --mode report evaluates.")
flags.DEFINE_float("max_cost", 0.5, "--mode report on test: each policy's setting is chosen on "
                   "validation as the most accurate at computation cost <= this.")
flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "--mode report: the checkpoint kept on "
                  "validation (best) or the state the run ended with (last, into report_SPLIT_last).")
config_flags.DEFINE_config_file("config", None, "Config file (a get_config()).", lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
    from elbert_jax import parallel

    parallel.configure_xla()
    logging.getLogger("elbert_jax").setLevel(logging.INFO)
    from elbert_jax.config import ConfigError
    from elbert_jax.data import DataError

    try:
        result = run(FLAGS.mode)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError) as error:
        sys.exit(f"train.py: error: {error}")  # the user's input: the message names what and where
    print(json.dumps(result, indent=1, default=str)[:4000])


def run(mode: str) -> dict:
    """What ``--mode`` does, on ``--config`` and ``--workdir``."""
    from elbert_jax import pretrain, report, training

    if mode == "train":
        result = training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif mode == "pretrain":
        result = pretrain.pretrain(FLAGS.config, FLAGS.workdir)
    elif mode == "report":
        result = report.write_report(FLAGS.config, FLAGS.workdir, FLAGS.split, FLAGS.max_cost,
                                     FLAGS.checkpoint)
    else:
        if not FLAGS.export_dir:
            raise app.UsageError("--mode export needs --export_dir")
        result = {"exported": str(report.export(FLAGS.workdir, FLAGS.export_dir))}
    return result


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
