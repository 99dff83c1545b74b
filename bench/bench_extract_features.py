"""extract_features.py end to end (read, tokenize, model, JSON, write) against the original.

The original runs its own extract_features.py main() in TF1 graph mode (tf.compat.v1, the
GraphModeEstimator of tests/golden/original.py); ours runs
extract_features.extract_features. Each side runs in its own process on the same lines of
the bench corpus, with the same random checkpoint, at BERT-Mini (L=4, H=256) and BERT-Base
(L=12, H=768) shapes, max_seq_length 128, batch 32, layers -1,-2,-3,-4. Timed from after
the imports to the last line written (model building and checkpoint restore included).
Prints a table with lines/s and the share of time per stage, checks that both outputs
agree, and writes the entry to stdout for `cat >> bench/RESULTS.md`.

The original: see tests/golden/original.py (--original_dir, default /tmp/orig).

    .venv/bin/python bench/bench_extract_features.py --output=/tmp/entry.md && cat /tmp/entry.md >> bench/RESULTS.md

Before/after a change: `git worktree add /tmp/before HEAD~1`, then `--baseline=/tmp/before`
runs that checkout's extract_features as a third side (`--sides=ours,baseline` skips the
original).
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from tests.golden import original

SIZES = {
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
STAGES = ("setup", "read and tokenize", "model", "JSON and write")


def run_original(args):
    """Child: the original's main() with timers around its stages; prints the timings as JSON."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_v2_behavior()
    seconds = dict.fromkeys(STAGES, 0.0)

    class TimedEstimator(original.GraphModeEstimator):
        def predict(self, input_fn, yield_single_examples=True):
            start = time.perf_counter()
            params = {"batch_size": self.batch_size}
            with v1.Graph().as_default():
                features = v1.data.make_one_shot_iterator(input_fn(params)).get_next()
                spec = self.model_fn(features, None, "infer", params)
                with v1.Session() as session:
                    session.run(v1.global_variables_initializer())
                    seconds["setup"] += time.perf_counter() - start
                    while True:
                        start = time.perf_counter()
                        try:
                            batch = session.run(spec.predictions)
                        except v1.errors.OutOfRangeError:
                            return
                        finally:
                            seconds["model"] += time.perf_counter() - start
                        for i in range(len(batch["unique_id"])):
                            yield {name: value[i] for name, value in batch.items()}

    tf_shim = original.estimator_namespace()
    tf_shim.estimator.tpu.TPUEstimator = TimedEstimator
    modeling = original.modeling(args.original_dir, tf_shim)
    tokenization = original.tokenization(args.original_dir)
    module = original.load(args.original_dir, "extract_features.py", tf_shim,
                           {"modeling": modeling, "tokenization": tokenization})
    for name in ("read_examples", "convert_examples_to_features"):
        module.__dict__[name] = _timed(module.__dict__[name], seconds, "read and tokenize")
    v1.logging.set_verbosity(v1.logging.ERROR)
    module.tf.logging = _QuietLogging(v1.logging)
    module.FLAGS(["extract_features.py", f"--input_file={args.input_file}", f"--output_file={args.output_file}",
                  f"--vocab_file={args.vocab_file}", f"--bert_config_file={args.bert_config_file}",
                  f"--init_checkpoint={args.init_checkpoint}", "--max_seq_length=128", "--batch_size=32"])
    start = time.perf_counter()
    module.main(None)
    total = time.perf_counter() - start
    seconds["JSON and write"] = total - sum(seconds[s] for s in STAGES if s != "JSON and write")
    print(json.dumps({"total": total, "seconds": seconds}))


class _QuietLogging:
    """tf.logging without the per-example and per-variable INFO lines (they are not the job)."""

    def __init__(self, logging):
        self._logging = logging

    def __getattr__(self, name):
        if name == "info":
            return lambda *args, **kwargs: None
        return getattr(self._logging, name)


def _timed(function, seconds, stage):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start
    return wrapper


def run_ours(args):
    """Child: our extract_features on the same files; prints the timings as JSON."""
    from absl import logging

    import extract_features
    import modeling
    import tokenization

    logging.set_verbosity(logging.WARNING)
    start = time.perf_counter()
    config = modeling.BertConfig.from_json_file(args.bert_config_file)
    tokenizer = tokenization.FullTokenizer(args.vocab_file, do_lower_case=True)
    extractor = extract_features.FeatureExtractor(config, args.init_checkpoint, [-1, -2, -3, -4],
                                                  use_xla=args.use_xla)
    setup = time.perf_counter() - start
    stats = extract_features.extract_features(args.input_file, args.output_file, extractor, tokenizer,
                                              max_seq_length=128, batch_size=32)
    total = time.perf_counter() - start
    seconds = {"setup": setup, "read and tokenize": stats.seconds["read and tokenize"],
               "model": stats.seconds["model"], "JSON and write": stats.seconds["JSON"] + stats.seconds["write"]}
    print(json.dumps({"total": total, "seconds": seconds}))


def make_checkpoint(size, vocab_file, directory):
    """A random BERT of `size` in the original names (our writer), with its config."""
    import modeling
    import tokenization
    vocab_size = len(tokenization.load_vocab(vocab_file))
    config = modeling.BertConfig(vocab_size=vocab_size, type_vocab_size=2, **SIZES[size])
    model = modeling.BertModel(config)
    prefix = os.path.join(directory, f"{size}.ckpt")
    modeling.save_checkpoint(prefix, modeling.original_name_map(model))
    config_file = os.path.join(directory, f"{size}_config.json")
    with open(config_file, "w") as f:
        f.write(config.to_json_string())
    return prefix, config_file


def compare_outputs(ours, original):
    """Max abs difference of the values, and whether tokens and layout agree, line for line."""
    worst, same_tokens = 0.0, True
    import numpy as np
    with open(ours) as a, open(original) as b:
        for line_a, line_b in zip(a, b):
            x, y = json.loads(line_a), json.loads(line_b)
            same_tokens &= [f["token"] for f in x["features"]] == [f["token"] for f in y["features"]]
            for fx, fy in zip(x["features"], y["features"]):
                for lx, ly in zip(fx["layers"], fy["layers"]):
                    worst = max(worst, float(np.abs(np.subtract(lx["values"], ly["values"])).max()))
    return worst, same_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["original", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--input_file", help=argparse.SUPPRESS)
    parser.add_argument("--output_file", help=argparse.SUPPRESS)
    parser.add_argument("--vocab_file", help=argparse.SUPPRESS)
    parser.add_argument("--bert_config_file", help=argparse.SUPPRESS)
    parser.add_argument("--init_checkpoint", help=argparse.SUPPRESS)
    original.add_argument(parser)
    parser.add_argument("--sizes", default="mini,base")
    parser.add_argument("--lines_mini", type=int, default=2000)
    parser.add_argument("--lines_base", type=int, default=256)
    parser.add_argument("--use_xla", action="store_true", help="ours with --use_xla")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each side, interleaved; the fastest counts (the machine is shared)")
    parser.add_argument("--output", help="also write the RESULTS.md entry here")
    parser.add_argument("--baseline", help="a checkout of this project (e.g. a git worktree of an earlier commit) "
                                           "whose extract_features runs as a third side, `baseline`")
    parser.add_argument("--sides", default="original,ours,baseline",
                        help="sides to run, of original, ours, baseline (baseline only with --baseline)")
    args = parser.parse_args()
    if args.side == "original":
        return run_original(args)
    if args.side == "ours":
        return run_ours(args)

    import corpus
    import results

    from tests import helpers
    vocab_file = helpers.real_vocab_file()
    corpus_path = corpus.mixed_corpus()
    work = tempfile.mkdtemp(prefix="bench_extract_")
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # inputs, checkpoints and JSON outputs
    rows, notes = [], []
    for size in args.sizes.split(","):
        count = getattr(args, f"lines_{size}")
        input_file = os.path.join(work, f"{size}_input.txt")
        with open(corpus_path, encoding="utf-8") as source, open(input_file, "w", encoding="utf-8") as out:
            written = 0
            for line in source:
                if line.strip():
                    out.write(line)
                    written += 1
                    if written == count:
                        break
        checkpoint, config_file = make_checkpoint(size, vocab_file, work)
        timings = {}
        sides = [side for side in args.sides.split(",") if side != "baseline" or args.baseline]
        for side in sides * args.rounds:
            output_file = os.path.join(work, f"{size}_{side}.jsonl")
            script = os.path.abspath(__file__)
            if side == "baseline":  # the baseline checkout's own copy of this script, as its `ours`
                script = os.path.join(os.path.abspath(args.baseline), "bench", os.path.basename(__file__))
            command = [sys.executable, script, "--side=" + ("ours" if side == "baseline" else side),
                       f"--input_file={input_file}",
                       f"--output_file={output_file}", f"--vocab_file={vocab_file}",
                       f"--bert_config_file={config_file}", f"--init_checkpoint={checkpoint}",
                       f"--original_dir={args.original_dir}"] + (["--use_xla"] if args.use_xla else [])
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            if result.returncode:
                sys.exit(f"{side} failed:\n{result.stderr[-3000:]}")
            timing = json.loads(result.stdout.strip().splitlines()[-1])
            if side not in timings or timing["total"] < timings[side]["total"]:
                timings[side] = timing
        reference = next(side for side in ("original", "baseline", "ours") if side in timings)
        for side in timings:
            if side != reference:
                worst, same_tokens = compare_outputs(os.path.join(work, f"{size}_{side}.jsonl"),
                                                     os.path.join(work, f"{size}_{reference}.jsonl"))
                notes.append(f"{size}: {count} lines, {side} and {reference} agree: tokens "
                             f"{'identical' if same_tokens else 'DIFFER'}, max abs difference of values {worst:.1e}")
        base = timings[reference]["total"]
        for side in timings:
            total = timings[side]["total"]
            shares = " / ".join(f"{100 * timings[side]['seconds'][s] / total:.0f}%" for s in STAGES)
            rows.append([f"{size} ({count} lines)", side, f"{count / total:,.1f}", f"{total:.1f}",
                         f"{base / total:.2f}x", shares])
    table = results.markdown_table(
        ["model", "code", "lines/s", "seconds", f"vs {reference}", "setup / read+tokenize / model / JSON+write"],
        rows)
    body = (f"Input: the first non-blank lines of {corpus_path}; vocab {vocab_file}; max_seq_length 128, batch 32, "
            f"layers -1,-2,-3,-4, float32, random weights{', ours with XLA' if args.use_xla else ''}"
            f"{f'; baseline: the checkout at {args.baseline}' if args.baseline else ''}. Each side in "
            f"its own process, timed after imports (graph/model building and checkpoint restore included); "
            f"{args.rounds} interleaved runs per side, the fastest shown. Stage shares are of the wall time; ours "
            f"runs the model in a thread alongside the JSON, so its shares add up to more than 100%.\n\n"
            f"{table}\n\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    print(body)
    entry = _entry("extract_features", body, results)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(entry)


def _entry(title, body, results):
    """The dated RESULTS.md entry (the same layout as results.append_result, without writing it)."""
    import datetime
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"\n## {title} ({stamp})\n\n- machine: {results.machine_line()}\n"
            f"- load average at the end (other users of the machine): "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n- command: `{results.command_line()}`\n\n"
            f"{body.rstrip()}\n")


if __name__ == "__main__":
    main()
