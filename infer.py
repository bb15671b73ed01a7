"""Classifies texts with a trained workdir; one JSON line per input text, in input order.

  python infer.py --checkpoint runs/demo "Operating profit rose to EUR 13.1 mn."
  cat news.txt | python infer.py --checkpoint runs/demo --policy entropy --threshold 0.3
"""

import json
import sys

from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_string("checkpoint", None, "A workdir written by train.py.", required=True)
flags.DEFINE_string("input", None, "A .txt file, one text per line (default: arguments or stdin).")
flags.DEFINE_string("policy", None, "Exit policy (default: the workdir's).")
flags.DEFINE_float("threshold", None, "Policy threshold (default: the workdir's).")
flags.DEFINE_integer("window", None, "CWB window N (default: the workdir's).")
flags.DEFINE_boolean("trace", False, "Add every layer's probabilities.")
FLAGS = flags.FLAGS


def main(argv):
    absl_logging.set_verbosity(absl_logging.WARNING)
    from elbert_jax.predict import Predictor

    predictor = Predictor.from_workdir(FLAGS.checkpoint, name=FLAGS.policy,
                                       threshold=FLAGS.threshold, window=FLAGS.window)
    if FLAGS.input:
        texts = (line.rstrip("\r\n") for line in open(FLAGS.input, encoding="utf-8", errors="replace"))
    elif len(argv) > 1:
        texts = iter(argv[1:])
    else:
        texts = (line.rstrip("\r\n") for line in sys.stdin)
    for i, row in enumerate(predictor.stream(texts, trace=FLAGS.trace)):
        print(json.dumps({"id": i, **row}))


if __name__ == "__main__":
    app.run(main)
