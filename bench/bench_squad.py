"""SQuAD: feature conversion and prediction questions/s of run_squad.py next to the original.

Builds a synthetic SQuAD 1.1 file from the mixed benchmark corpus (bench/corpus.py):
paragraphs of 120-400 words, a few questions each (random words of the paragraph) with an
answer span located by its character offset.

Feature conversion (--part=conversion): each run is a child process timed after its imports:
the original's read_squad_examples + pre-shuffle + convert_examples_to_features +
FeatureWriter (bert-tensorflow 1.0.4, TF1 code through tf.compat.v1, allowed in bench/), and
ours (run_squad.prepare_training_features) with 1 and N workers. The records are compared
one by one (parsed) with the original's.

Prediction (--part=prediction): BERT-Mini (L=4, H=256, A=4, I=1024) with random weights in
one checkpoint both sides load, max_seq_length 384, doc_stride 128, batch 8, one process,
interleaved rounds after a warm-up round, median. A round is the whole prediction job from
the JSON to the written files: the original's read_squad_examples, convert_examples_to_features
with FeatureWriter (eval.tf_record), its input_fn and create_model in a tf.compat.v1 Session
(graph built and checkpoint restored once, as an Estimator would per call, but outside the
timing), write_predictions; ours run_squad.predict_and_write (windows streamed to the model
through training.predict, answers written as each question completes), and ours with
--real_length (padding masked out of the span logits, windows grouped by length and run at
their real length). predictions.json and n-best texts are compared with the original's
(--real_length: by design not the original's n-best ranking; the questions that differ are
counted).

    .venv/bin/python bench/bench_squad.py --original_dir=/tmp/orig --questions=3000
    .venv/bin/python bench/bench_squad.py --part=prediction --output=/tmp/squad_entry.md && \\
        cat /tmp/squad_entry.md >> bench/RESULTS.md
"""

import argparse
import collections
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import numpy as np

import corpus  # bench/corpus.py
import results  # bench/results.py

from tests.golden import original  # the original's loader

SETTINGS = dict(max_seq_length=384, doc_stride=128, max_query_length=64)
MINI = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=512, type_vocab_size=2)
PREDICT = dict(predict_batch_size=8, n_best_size=20, max_answer_length=30)


def build_squad(path, num_questions, seed=7, paragraph_words=(120, 400)):
    """A SQuAD 1.1 file of `num_questions` questions over corpus paragraphs of
    `paragraph_words` (min, max) words, uniformly drawn."""
    rng = random.Random(seed)
    words = []
    for line in corpus.read_lines(corpus.mixed_corpus()):
        words.extend(line.split())
        if len(words) > num_questions * 120:
            break
    paragraphs, position, asked = [], 0, 0
    while asked < num_questions and position + paragraph_words[1] < len(words):
        size = rng.randint(*paragraph_words)
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

def run_original(original_dir, train_file, vocab_file, output_file):
    orig, _, orig_tokenization = original.run_squad(original_dir)
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


# --- Prediction: both sides in this process ----------------------------------------------------

def make_mini_checkpoint(vocab_file, directory):
    """Random BERT-Mini + SQuAD head weights in the original names (our writer), and the config."""
    import modeling
    import run_squad
    import tokenization
    config = modeling.BertConfig(vocab_size=len(tokenization.load_vocab(vocab_file)), **MINI)
    model = run_squad.SquadModel(config)
    model({name: np.zeros([1, 8], np.int32) for name in ("input_ids", "input_mask", "segment_ids")})
    prefix = os.path.join(directory, "mini_squad.ckpt")
    modeling.save_checkpoint(prefix, modeling.original_name_map(model))
    config_file = os.path.join(directory, "mini_squad_config.json")
    with open(config_file, "w") as f:
        f.write(config.to_json_string())
    return prefix, config_file


class OriginalPrediction:
    """The original's prediction path; the graph is built and the checkpoint restored once."""

    def __init__(self, original_dir, vocab_file, config_file, checkpoint):
        self.orig, modeling, tokenization = original.run_squad(original_dir)
        v1 = self.v1 = original.v1
        v1.logging.set_verbosity(v1.logging.ERROR)  # it logs every window of the first 20 examples
        self.tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case=True)
        config = modeling.BertConfig.from_json_file(config_file)
        self.graph = v1.Graph()
        with self.graph.as_default():
            self.record_file = v1.placeholder(v1.string, [])
            input_fn = self.orig.input_fn_builder(self.record_file, SETTINGS["max_seq_length"], False, False)
            dataset = input_fn({"batch_size": PREDICT["predict_batch_size"]})
            self.iterator = v1.data.make_initializable_iterator(dataset)
            features = self.iterator.get_next()
            start, end = self.orig.create_model(config, False, features["input_ids"], features["input_mask"],
                                                features["segment_ids"], False)
            # What model_fn does with init_checkpoint.
            assignment_map, _ = modeling.get_assignment_map_from_checkpoint(v1.trainable_variables(), checkpoint)
            v1.train.init_from_checkpoint(checkpoint, assignment_map)
            self.fetch = {"unique_ids": features["unique_ids"], "start_logits": start, "end_logits": end}
            self.session = v1.Session(graph=self.graph)
            self.session.run(v1.global_variables_initializer())

    def __call__(self, predict_file, output_dir):
        orig = self.orig
        examples = orig.read_squad_examples(predict_file, is_training=False)
        record_file = os.path.join(output_dir, "eval.tf_record")
        writer = orig.FeatureWriter(record_file, is_training=False)
        features = []

        def append_feature(feature):
            features.append(feature)
            writer.process_feature(feature)

        orig.convert_examples_to_features(examples, self.tokenizer, is_training=False, output_fn=append_feature,
                                          **SETTINGS)
        writer.close()
        self.session.run(self.iterator.initializer, {self.record_file: record_file})
        all_results = []
        while True:
            try:
                batch = self.session.run(self.fetch)
            except self.v1.errors.OutOfRangeError:
                break
            for unique_id, start, end in zip(batch["unique_ids"], batch["start_logits"], batch["end_logits"]):
                all_results.append(orig.RawResult(unique_id=int(unique_id), start_logits=[float(x) for x in start],
                                                  end_logits=[float(x) for x in end]))
        orig.write_predictions(examples, features, all_results, PREDICT["n_best_size"],
                               PREDICT["max_answer_length"], True, *output_files(output_dir))
        return len(examples), len(features)


class OurPrediction:
    """run_squad's prediction job: read, then predict_and_write on the window generator;
    with `real_length`, as --real_length=true (padding masked, windows grouped by length)."""

    def __init__(self, vocab_file, config_file, checkpoint, real_length=False):
        from absl import logging
        import tensorflow as tf

        import input_pipeline
        import modeling
        import run_squad
        import tokenization
        logging.set_verbosity(logging.WARNING)  # the first 20 examples' windows are logged otherwise
        self.run_squad = run_squad
        self.tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case=True)
        self.strategy = tf.distribute.get_strategy()
        self.model = run_squad.SquadModel(modeling.BertConfig.from_json_file(config_file), mask_padding=real_length)
        self.length = input_pipeline.RealLength(SETTINGS["max_seq_length"]) if real_length else None
        result = modeling.load_checkpoint(checkpoint, self.model)
        assert not result.not_in_checkpoint, result.not_in_checkpoint

    def __call__(self, predict_file, output_dir):
        run_squad = self.run_squad
        stats = collections.Counter()
        examples = run_squad.read_prediction_examples(predict_file, False, stats)
        features = run_squad.stream_features(examples, self.tokenizer, is_training=False,
                                             stats=stats, **SETTINGS)
        _, _, num_features = run_squad.predict_and_write(
            self.strategy, self.model, examples, features, output_dir, SETTINGS["max_seq_length"],
            PREDICT["predict_batch_size"], run_squad.AnswerSettings(
                n_best_size=PREDICT["n_best_size"], max_answer_length=PREDICT["max_answer_length"]),
            length=self.length)
        return len(examples), num_features


def output_files(output_dir):
    return [os.path.join(output_dir, f"{name}.json") for name in ("predictions", "nbest_predictions", "null_odds")]


def compare_predictions(ours_dir, original_output_dir):
    """(questions whose predictions.json texts differ, whose n-best texts differ, max abs difference
    of probabilities and logits in the others)."""
    def load(directory, name):
        with open(os.path.join(directory, name)) as f:
            return json.load(f, object_pairs_hook=collections.OrderedDict)

    predicted, expected = load(ours_dir, "predictions.json"), load(original_output_dir, "predictions.json")
    assert list(predicted) == list(expected)
    differing_predictions = sum(predicted[qas_id] != text for qas_id, text in expected.items())
    ours, theirs = load(ours_dir, "nbest_predictions.json"), load(original_output_dir, "nbest_predictions.json")
    differing, worst = 0, 0.0
    for qas_id, entries in theirs.items():
        if [e["text"] for e in ours.get(qas_id, [])] != [e["text"] for e in entries]:
            differing += 1
            continue
        for a, b in zip(ours[qas_id], entries):
            worst = max(worst, *(abs(a[k] - b[k]) for k in ("probability", "start_logit", "end_logit")))
    return differing_predictions, differing, worst


def bench_prediction(args, vocab_file):
    import tensorflow as tf
    directory = os.path.join(args.work_dir, "predict")
    os.makedirs(directory, exist_ok=True)
    low, high = args.paragraph_words
    predict_file = os.path.join(directory, f"predict-{args.predict_questions}-{low}-{high}.json")
    questions = build_squad(predict_file, args.predict_questions, seed=11, paragraph_words=(low, high))
    checkpoint, config_file = make_mini_checkpoint(vocab_file, directory)
    sides = {"original": OriginalPrediction(args.original_dir, vocab_file, config_file, checkpoint),
             "ours": OurPrediction(vocab_file, config_file, checkpoint),
             "ours_real_length": OurPrediction(vocab_file, config_file, checkpoint, real_length=True)}
    seconds = {name: [] for name in sides}
    counts = {}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        order = list(sides) if round_index % 2 else list(reversed(sides))
        for name in order:
            output_dir = os.path.join(directory, name)
            tf.io.gfile.makedirs(output_dir)
            started = time.perf_counter()
            counts[name] = sides[name](predict_file, output_dir)
            elapsed = time.perf_counter() - started
            if round_index:
                seconds[name].append(elapsed)
            print(f"round {round_index} {name}: {elapsed:.2f} s", flush=True)
    comparisons = {name: compare_predictions(os.path.join(directory, name), os.path.join(directory, "original"))
                   for name in ("ours", "ours_real_length")}
    base = statistics.median(seconds["original"])
    rows = []
    for name, label in (("original", "original run_squad.py, graph mode"), ("ours", "our run_squad.py"),
                        ("ours_real_length", "our run_squad.py --real_length")):
        median = statistics.median(seconds[name])
        if name == "original":
            texts = nbest = "(reference)"
        else:
            differing_predictions, differing_nbest, worst = comparisons[name]
            texts = "identical" if not differing_predictions else f"{differing_predictions} of {questions} differ"
            nbest = f"{differing_nbest} of {questions} differ; elsewhere within {worst:.1e}"
        rows.append([label, f"{counts[name][0] / median:.1f}", f"{counts[name][1] / median:.1f}", f"{median:.2f}",
                     " / ".join(f"{x:.1f}" for x in seconds[name]), f"{base / median:.2f}x", texts, nbest])
    table = results.markdown_table(["prediction", "questions/s", "windows/s", "median s", "rounds s",
                                    "vs original", "predictions.json texts", "n-best texts"], rows)
    summary = (f"Synthetic SQuAD 1.1 predict file: {questions} questions over mixed-corpus paragraphs of "
               f"{low}-{high} words, "
               f"{counts['ours'][1]} windows; real uncased vocab; BERT-Mini (L=4, H=256, A=4, I=1024) with random "
               f"weights from one checkpoint; max_seq_length {SETTINGS['max_seq_length']}, doc_stride "
               f"{SETTINGS['doc_stride']}, batch {PREDICT['predict_batch_size']}, float32. One process, "
               f"{args.rounds} interleaved rounds after a warm-up round, median. A round: read the JSON, make the "
               f"windows (and eval.tf_record), run the model, write predictions.json and nbest_predictions.json "
               f"(the original's graph is built and restored once, outside the rounds; ours traces its "
               f"tf.function in every round, as a run does once). --real_length masks padding out of the span "
               f"logits and runs windows grouped by length at their real length: by design not the original's "
               f"n-best ranking (which includes padding positions).")
    return summary, table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--num_workers", type=int, default=os.cpu_count())
    parser.add_argument("--work_dir", default="/tmp/bert_bench/squad")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no_record", action="store_true", help="print only, do not append to RESULTS.md")
    parser.add_argument("--part", choices=["conversion", "prediction", "all"], default="all")
    parser.add_argument("--predict_questions", type=int, default=200)
    parser.add_argument("--paragraph_words", type=lambda text: tuple(int(n) for n in text.split(",")),
                        default=(120, 400), help="MIN,MAX words of the prediction paragraphs")
    parser.add_argument("--rounds", type=int, default=3, help="timed prediction rounds per side")
    parser.add_argument("--output", default=None,
                        help="write the prediction entry here (for `cat >> bench/RESULTS.md`) instead of appending")
    args = parser.parse_args()
    from tests import helpers
    vocab_file = helpers.real_vocab_file()
    train_file = os.path.join(args.work_dir, f"train-{args.questions}.json")

    if args.child:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        if args.child == "original":
            seconds, examples, features = run_original(args.original_dir, train_file, vocab_file,
                                                       os.path.join(args.work_dir, "original", "train.tf_record"))
        else:
            workers = int(args.child)
            seconds, examples, features = run_ours(train_file, vocab_file,
                                                   os.path.join(args.work_dir, f"ours-{workers}"), workers)
        print(json.dumps(dict(seconds=seconds, examples=examples, features=features)))
        return

    os.makedirs(args.work_dir, exist_ok=True)
    if args.part in ("conversion", "all"):
        bench_conversion(args, vocab_file, train_file)
    if args.part in ("prediction", "all"):
        summary, table = bench_prediction(args, vocab_file)
        print(summary + "\n\n" + table)
        sources = ["run_squad.py", "modeling.py", "tokenization.py", "training.py"]
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(_entry("run_squad prediction", summary + "\n\n" + table, sources))
        elif not args.no_record:
            results.append_result("run_squad prediction", summary + "\n\n" + table + "\n", sources=sources)


def _entry(title, body, sources):
    """The dated RESULTS.md entry (results.append_result's layout, without writing it)."""
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"\n## {title} ({stamp})\n\n- machine: {results.machine_line()}\n"
            f"- load average at the end (other users of the machine): "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n- code: {results.code_line(sources)}\n"
            f"- command: `{results.command_line()}`\n\n{body.rstrip()}\n")


def bench_conversion(args, vocab_file, train_file):
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
                              f"--original_dir={args.original_dir}", f"--work_dir={args.work_dir}"],
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
