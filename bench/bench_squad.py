"""SQuAD feature conversion: questions/s of run_squad.py next to the original, same records.

Builds a synthetic SQuAD 1.1 training file from the mixed benchmark corpus (bench/corpus.py):
paragraphs of 120-400 words, a few questions each (random words of the paragraph) with an
answer span located by its character offset. Each run is a child process timed after its
imports: the original's read_squad_examples + pre-shuffle + convert_examples_to_features +
FeatureWriter (bert-tensorflow 1.0.4, TF1 code through tf.compat.v1, allowed in bench/), and
ours (run_squad.prepare_training_features) with 1 and N workers. The records are compared
one by one (parsed) with the original's.

    .venv/bin/python bench/bench_squad.py --orig_dir=/tmp/orig --questions=3000
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import corpus  # noqa: E402  (bench/corpus.py)
import results  # noqa: E402  (bench/results.py)

SETTINGS = dict(max_seq_length=384, doc_stride=128, max_query_length=64)


def build_squad(path, num_questions, seed=7):
    """A SQuAD 1.1 file of `num_questions` questions over corpus paragraphs."""
    rng = random.Random(seed)
    words = []
    for line in corpus.read_lines(corpus.mixed_corpus()):
        words.extend(line.split())
        if len(words) > num_questions * 120:
            break
    paragraphs, position, asked = [], 0, 0
    while asked < num_questions and position + 400 < len(words):
        size = rng.randint(120, 400)
        context_words = words[position:position + size]
        position += size
        context = " ".join(context_words)
        starts = [0]
        for word in context_words[:-1]:
            starts.append(starts[-1] + len(word) + 1)
        qas = []
        for _ in range(min(rng.randint(2, 6), num_questions - asked)):
            first = rng.randrange(size - 4)
            length = rng.randint(1, 4)
            answer = " ".join(context_words[first:first + length])
            question = " ".join(rng.choice(context_words) for _ in range(rng.randint(6, 20))) + "?"
            qas.append({"id": f"q{asked}", "question": question,
                        "answers": [{"text": answer, "answer_start": starts[first]}]})
            asked += 1
        paragraphs.append({"context": context, "qas": qas})
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": [{"title": "bench", "paragraphs": paragraphs}]}, f)
    return asked


# --- Children ---------------------------------------------------------------------------------

def run_original(orig_dir, train_file, vocab_file, output_file):
    from tests.golden import squad_make_golden
    orig, _, orig_tokenization, _ = squad_make_golden.load_original(orig_dir)
    started = time.perf_counter()
    tokenizer = orig_tokenization.FullTokenizer(vocab_file, do_lower_case=True)
    examples = orig.read_squad_examples(train_file, is_training=True)
    random.Random(12345).shuffle(examples)
    writer = orig.FeatureWriter(output_file, is_training=True)
    orig.convert_examples_to_features(examples, tokenizer, is_training=True, output_fn=writer.process_feature,
                                      **SETTINGS)
    writer.close()
    return time.perf_counter() - started, len(examples), writer.num_features


def run_ours(train_file, vocab_file, output_dir, num_workers):
    from absl import logging
    import run_squad
    import tokenization
    logging.set_verbosity(logging.WARNING)  # the first 20 examples' windows are logged otherwise
    started = time.perf_counter()
    tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case=True)
    counts = run_squad.prepare_training_features(train_file, vocab_file, tokenizer, output_dir,
                                                 version_2_with_negative=False, do_lower_case=True,
                                                 num_workers=num_workers, **SETTINGS)
    return time.perf_counter() - started, counts["num_examples"], counts["num_features"]


def parse_records(path):
    import tensorflow as tf
    out = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        out.append({k: list(v.int64_list.value) for k, v in example.features.feature.items()})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orig_dir", default="/tmp/orig")
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--num_workers", type=int, default=os.cpu_count())
    parser.add_argument("--work_dir", default="/tmp/bert_bench/squad")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no_record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    from tests import helpers
    vocab_file = helpers.real_vocab_file()
    train_file = os.path.join(args.work_dir, f"train-{args.questions}.json")

    if args.child:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        if args.child == "original":
            seconds, examples, features = run_original(args.orig_dir, train_file, vocab_file,
                                                       os.path.join(args.work_dir, "original", "train.tf_record"))
        else:
            workers = int(args.child)
            seconds, examples, features = run_ours(train_file, vocab_file,
                                                   os.path.join(args.work_dir, f"ours-{workers}"), workers)
        print(json.dumps(dict(seconds=seconds, examples=examples, features=features)))
        return

    os.makedirs(args.work_dir, exist_ok=True)
    questions = build_squad(train_file, args.questions)
    runs = [("original run_squad.py", "original")] + [
        (f"our run_squad.py, {w} worker(s)", str(w)) for w in sorted({1, args.num_workers})]
    rows, reference = [], None
    for label, child in runs:
        directory = os.path.join(args.work_dir, "original" if child == "original" else f"ours-{child}")
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            os.remove(os.path.join(directory, name))
        out = subprocess.run([sys.executable, __file__, f"--child={child}", f"--questions={args.questions}",
                              f"--orig_dir={args.orig_dir}", f"--work_dir={args.work_dir}"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        records = parse_records(os.path.join(directory, "train.tf_record"))
        if reference is None:
            reference = records
            base = run["seconds"]
        differing = sum(a != b for a, b in zip(records, reference)) + abs(len(records) - len(reference))
        rows.append([label, f"{run['examples'] / run['seconds']:,.0f}", f"{run['seconds']:.2f}",
                     f"{base / run['seconds']:.2f}x", f"{run['features']:,}", differing])
        print(rows[-1], flush=True)
    table = results.markdown_table(["converter", "questions/s", "seconds", "vs original", "features",
                                    "records differing"], rows)
    summary = (f"Synthetic SQuAD 1.1 training file: {questions:,} questions over mixed-corpus paragraphs of "
               f"120-400 words; real uncased vocab; max_seq_length {SETTINGS['max_seq_length']}, doc_stride "
               f"{SETTINGS['doc_stride']}, max_query_length {SETTINGS['max_query_length']}. Timed: reading the "
               f"JSON, pre-shuffle, conversion and writing train.tf_record (imports not timed).")
    print(summary + "\n\n" + table)
    if not args.no_record:
        results.append_result("run_squad feature conversion", summary + "\n\n" + table + "\n",
                              sources=["run_squad.py", "tokenization.py", "training.py"])


if __name__ == "__main__":
    main()
