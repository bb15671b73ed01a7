"""Financial sentiment with early exit: one output row per input text, in input order.

  python infer.py --checkpoint runs/demo "Operating profit rose to EUR 13.1 mn."
  cat news.txt | python infer.py --checkpoint runs/demo --policy entropy --threshold 0.3
  python infer.py --checkpoint runs/demo --input news.csv --column headline --output out.csv \
      --format csv --engine refill --batch_size 256
  python infer.py --checkpoint runs/demo --from_report "Kone issued a profit warning in 2008."
  python infer.py --checkpoint runs/demo/hf "Profit rose."  # a transformers classifier folder
  python infer.py --checkpoint runs/demo --input test.csv --gold label  # scored on a labelled file
  tail -f news.txt | python infer.py --checkpoint runs/demo --warm_up  # a live feed: a row per line

Texts come from the arguments, stdin lines, or --input (.txt/.csv/.tsv/.jsonl); a checkpoint
trained on sentence pairs (RTE-style, data.pair_column) reads a table's --pair_column too, and
lines as "first<TAB>second":

  python infer.py --checkpoint runs/rte --input dev.tsv  # the columns it was trained on

Policy settings default to the checkpoint's, or with --from_report to those `train.py --mode
report` chose on validation. A summary (count, texts/s, mean exit layer, computation cost, exit
histogram) goes to stderr.
"""

import contextlib
import dataclasses
import io
import itertools
import json
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_string("checkpoint", None, "A workdir written by train.py, or a transformers "
                    "sequence classifier (a folder, e.g. from --mode export, or a hub id), served "
                    "at full depth unless a policy flag says otherwise.", required=True)
flags.DEFINE_integer("max_length", None, "A transformers checkpoint: truncate texts at this many "
                     "tokens (default: its positions, at most 512); a workdir keeps its own.")
flags.DEFINE_string("input", None, "A .txt/.csv/.tsv/.jsonl file (default: arguments or stdin).")
flags.DEFINE_string("column", None, "Text column of a .csv/.tsv/.jsonl input (default: the "
                    "checkpoint's data.text_column for a run on tables, else 'text').")
flags.DEFINE_string("pair_column", None, "Second-sentence column of a .csv/.tsv/.jsonl input, for "
                    "a checkpoint trained on sentence pairs (default: the one it was trained on); "
                    "lines (arguments, stdin, .txt) are then 'first<TAB>second'.")
flags.DEFINE_list("keep", [], "Columns of a .csv/.tsv/.jsonl --input copied into each output "
                  "row after its id (e.g. --keep article_id,published), as they are in the file; "
                  "null where a row lacks them. COLUMN:NAME writes it as NAME (--keep label:gold "
                  "for a column named like an output field).")
flags.DEFINE_string("gold", None, "A column of the --input table holding each text's true label "
                    "(a label name or id): the summary then gives accuracy and macro-F1 against "
                    "it, overall and by exit layer, and counts the rows it could not score.")
flags.DEFINE_string("encoding", "utf-8", "Encoding of --input/stdin (undecodable bytes become U+FFFD).")
flags.DEFINE_enum("bad_rows", "mark", ["mark", "error"], "An input row with no text (bad CSV/JSONL "
                  "row): 'mark' writes a row with an error field, 'error' stops there.")
flags.DEFINE_string("output", None, "Output file (default: stdout).")
flags.DEFINE_enum("format", "jsonl", ["jsonl", "csv"], "Output format.")
flags.DEFINE_enum("engine", "refill", ["reference", "full", "masked", "compact", "refill"],
                  "Early-exit engine (all give the same rows; refill is the fastest measured).")
flags.DEFINE_integer("batch_size", 64, "Engine slots / rows per batch.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                  "Compute dtype (default: the checkpoint's; bfloat16 is the fast one on GPUs).")
flags.DEFINE_enum("attention", None, ["xla", "cudnn", "auto", "cudnn_lengths", "pallas"],
                  "Attention kernel, EncoderConfig.attention (default: the checkpoint's; on a "
                  "GPU with bfloat16, auto picks pallas, the fastest measured on the H200, on the "
                  "shapes measured there and cuDNN's kernel elsewhere; cudnn, cudnn_lengths and "
                  "pallas need bfloat16/float16).")
flags.DEFINE_integer("devices", 0, "Local devices that share the rows (0: all of this host's).")
flags.DEFINE_integer("chunk", 8192, "Texts held in memory at a time.")
flags.DEFINE_string("policy", None, "Exit policy: cwb, entropy, raw_entropy, patience, max_prob, "
                    "static (default: the checkpoint's).")
flags.DEFINE_boolean("from_report", False, "Start from the setting of the policy that `train.py "
                     "--mode report` chose on validation (WORKDIR/report_test/report.json) instead "
                     "of the training config's; the flags below still override it.")
flags.DEFINE_float("threshold", None, "Policy threshold tau (default: the checkpoint's).")
flags.DEFINE_integer("window", None, "CWB window N (default: the checkpoint's).")
flags.DEFINE_float("margin", None, "CWB margin m (default: the checkpoint's).")
flags.DEFINE_string("variant", None, "CWB variant bias_1/bias_2/bias_3 (default: the checkpoint's).")
flags.DEFINE_integer("patience", None, "Patience policy: unchanged layers (default: the checkpoint's).")
flags.DEFINE_integer("layer", None, "Static policy: exit layer (default: the checkpoint's).")
flags.DEFINE_boolean("trace", False, "Add every computed layer's probabilities.")
flags.DEFINE_boolean("warm_up", False, "Compile the programs of every length bucket and batch of "
                     "up to --batch_size texts first, so that a live feed (stdin, whose batches "
                     "hold at most --batch_size texts) never stalls on a compilation.")
FLAGS = flags.FLAGS


def columns(names: list[str]):
    """Those columns of --input, row for row with the texts (a second read of the file); a
    missing column is refused here, before any text is classified."""
    from elbert_jax.predict import read_columns

    values = read_columns(FLAGS.input, names, FLAGS.encoding)
    first = next(values, None)
    return values if first is None else itertools.chain([first], values)


def main(argv):
    absl_logging.set_verbosity(absl_logging.WARNING)
    from tqdm import tqdm

    from elbert_jax import parallel
    from elbert_jax.data import DataError
    from elbert_jax.predict import Predictor, Summary, read_texts, split_pairs, write_rows

    parallel.configure_xla()
    if (FLAGS.keep or FLAGS.gold) and not FLAGS.input:
        sys.exit("infer.py: error: --keep and --gold read columns of an --input table "
                 "(.csv/.tsv/.jsonl)")
    try:
        predictor = Predictor.load(
            FLAGS.checkpoint, engine=FLAGS.engine, batch_size=FLAGS.batch_size,
            devices=FLAGS.devices, dtype=FLAGS.dtype, attention=FLAGS.attention,
            from_report=FLAGS.from_report, max_length=FLAGS.max_length, name=FLAGS.policy,
            threshold=FLAGS.threshold, window=FLAGS.window, margin=FLAGS.margin,
            variant=FLAGS.variant, patience=FLAGS.patience, layer=FLAGS.layer)
        live = False
        if FLAGS.pair_column:
            predictor.check_pairs(True)
        pair_column = (FLAGS.pair_column or predictor.pair_column) or None
        if FLAGS.input:
            texts = read_texts(FLAGS.input, FLAGS.column or predictor.text_column,
                               FLAGS.encoding, FLAGS.bad_rows, pair_column)
        elif len(argv) > 1:
            texts = iter(argv[1:])
            if pair_column:
                texts = split_pairs(texts, "argument", FLAGS.bad_rows)
        else:  # lines end at \n only, as in read_texts; bytes that do not decode become U+FFFD
            stdin = io.TextIOWrapper(sys.stdin.buffer, FLAGS.encoding, errors="replace", newline="\n")
            texts = (line.removesuffix("\n").removesuffix("\r") for line in stdin)
            if pair_column:
                texts = split_pairs(texts, "<stdin>", FLAGS.bad_rows)
            live = True  # a feed on a pipe: answer each line as soon as the model is free
        if FLAGS.warm_up:
            predictor.warm_up(trace=FLAGS.trace)
        summary = Summary(predictor.model.config.num_hidden_layers, predictor.label_names,
                          scoring=bool(FLAGS.gold))
        names = {c: n or c for c, _, n in (item.partition(":") for item in FLAGS.keep)}
        wanted = list(dict.fromkeys([*names, *filter(None, [FLAGS.gold])]))
        values = columns(wanted) if wanted else itertools.repeat({})
        kept, golds = itertools.tee(values)  # one read of the file feeds both
        kept = ({names[c]: v[c] for c in names} for v in kept)
        golds = (v.get(FLAGS.gold) for v in golds)
        rows = ({"id": i, **extra, **row} for i, (row, extra) in enumerate(zip(
            predictor.stream(texts, chunk=FLAGS.chunk, trace=FLAGS.trace, live=live), kept)))
        with contextlib.ExitStack() as stack:
            out = (stack.enter_context(open(FLAGS.output, "w", encoding="utf-8", newline=""))
                   if FLAGS.output else sys.stdout)
            progress = tqdm(unit="text", file=sys.stderr, disable=None, mininterval=1.0)
            for row, gold in zip(write_rows(rows, out, FLAGS.format, list(names.values())),
                                 golds):
                summary.add(row, gold)
                progress.update()
                if live:
                    out.flush()
            progress.close()
    except BrokenPipeError:  # e.g. `infer.py ... | head`: stop quietly, as other CLI tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (DataError, ValueError, OSError, LookupError) as error:  # LookupError: unknown encoding
        sys.exit(f"infer.py: error: {error}")
    report = {"engine": predictor.engine_for(FLAGS.trace).kind,
              "policy": dataclasses.asdict(predictor.policy),
              "devices": predictor.engine_for(FLAGS.trace).devices,
              **summary.report()}
    print(json.dumps(report), file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
