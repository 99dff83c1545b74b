"""Classifier fine-tuning and prediction at each batch's real length, against padded and the original.

Data: sentence pairs of real prose, consecutive lines of the mixed corpus (bench/corpus.py),
tokenized with the real 30,522-entry uncased vocab and converted by run_classifier at the
original's max_seq_length 128; the histogram of real lengths is printed with the result.
Model: BERT-Mini (L=4, H=256, A=4, I=1024) or with --model=base BERT-Base, float32, dropout
0.1, two labels.

  train    fine-tuning steps at train_batch_size 32: the original (its run_classifier
           create_model and optimization.py in a tf.compat.v1 graph, fed the same padded
           batches), ours padded (the engine's step on input_pipeline.training_dataset at
           max_seq_length) and ours cut to the real length (rounded up to 16, and to 8).
           All three take the same records in the same batches.
  predict  prediction at predict_batch_size 8 over the same examples, in file order:
           the original, ours padded, ours length-grouped (sequential_dataset with
           group_window) at multiples of 16 and of 8. Ours gets the original's weights; the
           table gives the largest probability difference from the original.

--peak_memory measures memory instead: the peak RSS of padded and of length-grouped
prediction (run_classifier.run_predictions over the records), and of the user's whole job,
`run_classifier.py --do_predict` over the same pairs as an MRPC-layout test.tsv, each in a
fresh process.

Every configuration is built and warmed up first (warm-up covers every length, so XLA
kernel compiles are not timed; their one-off cost is printed), then timed in interleaved
rounds (A B C ... A B C ...) so the noise of a shared machine hits them alike; medians
over rounds. The original is google-research/bert 1.0.4 from PyPI, never committed here:

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
    .venv/bin/python bench/bench_real_length.py --original_dir=/tmp/orig
"""

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np
import tensorflow as tf

import corpus  # bench/corpus.py
import input_pipeline
import modeling
import optimization
import results  # bench/results.py
import run_classifier
import sample_tasks
import tokenization
import training

from tests import helpers
from tests.golden import original  # the original under tf.compat.v1 shims

v1 = tf.compat.v1

MINI = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=1024, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
            initializer_range=0.02)
BASE = dict(MINI, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
MODELS = {"mini": (MINI, "BERT-Mini (L=4, H=256, A=4, I=1024)"),
          "base": (BASE, "BERT-Base (L=12, H=768, A=12, I=3072)")}
CONFIG = dict(MINI)  # the model measured (--model)
MAX_SEQ_LENGTH, TRAIN_BATCH, PREDICT_BATCH = 128, 32, 8
LEARNING_RATE, NUM_TRAIN_STEPS, NUM_WARMUP_STEPS = 2e-5, 1000, 100


def prose_pairs(count):
    """`count` (text_a, text_b) pairs: consecutive lines of one document of the mixed corpus."""
    pairs, previous = [], None
    for line in corpus.read_lines(corpus.mixed_corpus()):
        line = line.strip()
        if not line:
            previous = None
            continue
        if previous is not None:
            pairs.append((previous, line))
            previous = None
            if len(pairs) == count:
                break
        else:
            previous = line
    return pairs


def write_records(path, pairs, tokenizer):
    examples = [run_classifier.InputExample(f"bench-{i}", a, b, str(i % 2)) for i, (a, b) in enumerate(pairs)]
    run_classifier.file_based_convert_examples_to_features(examples, ["0", "1"], MAX_SEQ_LENGTH, tokenizer, path)
    lengths = []
    for record in tf.data.TFRecordDataset(path):
        mask = tf.train.Example.FromString(record.numpy()).features.feature["input_mask"].int64_list.value
        lengths.append(sum(mask))
    return np.array(lengths)


def histogram(lengths, width=16):
    counts = collections.Counter((n - 1) // width for n in lengths)
    rows = []
    for bucket in range(MAX_SEQ_LENGTH // width):
        share = counts.get(bucket, 0) / len(lengths)
        rows.append([f"{bucket * width + 1}-{(bucket + 1) * width}", counts.get(bucket, 0), f"{share:.1%}",
                     "#" * int(round(share * 60))])
    return results.markdown_table(["real length", "examples", "share", ""], rows)


# --- The original --------------------------------------------------------------------------

class Original:
    """The original's classifier in a tf.compat.v1 graph: a training op and probabilities."""

    def __init__(self, original_dir, is_training):
        self.graph = v1.Graph()
        shim = original.tf1_namespace()
        with self.graph.as_default():
            orig_modeling = original.modeling(original_dir, shim)
            # Its one TF1 shape idiom (Dimension.value) made TF2's int.
            (create_model,) = original.functions(
                original_dir, "run_classifier.py", ["create_model"], shim, orig_modeling,
                replace=[("output_layer.shape[-1].value", "int(output_layer.shape[-1])")])
            config = orig_modeling.BertConfig.from_dict(CONFIG)
            batch = TRAIN_BATCH if is_training else PREDICT_BATCH
            self.feeds = {name: v1.placeholder(tf.int32, [batch, MAX_SEQ_LENGTH], name)
                          for name in ("input_ids", "input_mask", "segment_ids")}
            self.feeds["label_ids"] = v1.placeholder(tf.int32, [batch], "label_ids")
            loss, _, _, self.probabilities = create_model(
                config, is_training, self.feeds["input_ids"], self.feeds["input_mask"], self.feeds["segment_ids"],
                self.feeds["label_ids"], 2, False)
            if is_training:
                optimization_module = original.load(original_dir, "optimization.py", shim)
                self.train_op = optimization_module.create_optimizer(loss, LEARNING_RATE, NUM_TRAIN_STEPS,
                                                                     NUM_WARMUP_STEPS, False)
            init = v1.global_variables_initializer()
            self.variables = {v.op.name: v for v in v1.global_variables()}
        self.session = v1.Session(graph=self.graph)
        self.session.run(init)

    def feed(self, batch):
        return {self.feeds[name]: batch[name] for name in self.feeds}

    def weights(self):
        return {name: self.session.run(v) for name, v in self.variables.items()}


def numpy_batches(path, batch_size, count, seed=None):
    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    if seed is None:
        dataset = input_pipeline.sequential_dataset([path], spec, batch_size)
    else:
        dataset = input_pipeline.training_dataset([path], spec, batch_size, seed)
    return [{k: np.asarray(v) for k, v in b.items()} for b in dataset.take(count)]


# --- Runners -------------------------------------------------------------------------------

def train_runners(path, original_dir, steps):
    """{name: run() -> seconds for `steps` steps}, each on the same stream of batches."""
    runners = {}
    orig_graph = Original(original_dir, True)
    batches = numpy_batches(path, TRAIN_BATCH, 400, seed=7)
    position = [0]

    def run_original():
        start = time.perf_counter()
        for _ in range(steps):
            orig_graph.session.run(orig_graph.train_op, orig_graph.feed(batches[position[0] % len(batches)]))
            position[0] += 1
        return time.perf_counter() - start
    runners["original"] = run_original

    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    for name, length in (("ours, padded", None),
                         ("ours, real length (x16)", input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=16)),
                         ("ours, real length (x8)", input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=8))):
        model = run_classifier.ClassifierModel(modeling.BertConfig.from_dict(CONFIG), 2)
        optimizer = optimization.create_optimizer(LEARNING_RATE, NUM_TRAIN_STEPS, NUM_WARMUP_STEPS)
        optimizer.build(model.trainable_variables)
        dataset = input_pipeline.training_dataset([path], spec, TRAIN_BATCH, 7, length=length)
        iterator = iter(dataset)
        loop = training.make_train_loop(
            tf.distribute.get_strategy(), model,
            lambda m, f, t: tf.reduce_mean(run_classifier.example_losses(m, f, False, t)[0]), optimizer, 1, False, 0,
            lambda iterator=iterator: next(iterator))

        def run(loop=loop):
            start = time.perf_counter()
            float(loop(tf.constant(steps, tf.int32)))
            return time.perf_counter() - start
        runners[name] = run
    return runners


def predict_runners(path, original_dir, num_examples):
    """{name: run() -> (seconds, probabilities [N, 2])} over the first num_examples records."""
    runners = {}
    orig_graph = Original(original_dir, False)
    batches = numpy_batches(path, PREDICT_BATCH, num_examples // PREDICT_BATCH)

    def run_original():
        start = time.perf_counter()
        probabilities = [orig_graph.session.run(orig_graph.probabilities, orig_graph.feed(b)) for b in batches]
        return time.perf_counter() - start, np.concatenate(probabilities)
    runners["original"] = run_original

    weights = orig_graph.weights()
    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    strategy = tf.distribute.get_strategy()
    for name, length in (("ours, padded", None),
                         ("ours, length-grouped (x16)", input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=16)),
                         ("ours, length-grouped (x8)", input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=8))):
        model = run_classifier.ClassifierModel(modeling.BertConfig.from_dict(CONFIG), 2)
        for variable_name, variable in modeling.original_name_map(model).items():
            variable.assign(weights[variable_name])

        def run(model=model, length=length):
            dataset = input_pipeline.sequential_dataset([path], spec, PREDICT_BATCH, length=length,
                                                  group_window=input_pipeline.PREDICTION_WINDOW_BATCHES)
            start = time.perf_counter()
            outputs = run_classifier.run_predictions(strategy, model, dataset, False)
            return time.perf_counter() - start, outputs["predictions"]
        runners[name] = run
    return runners


def predict_once(path, mode):
    """Runs one prediction over the records in `path`, "padded" or "grouped" (a --peak_memory child)."""
    model = run_classifier.ClassifierModel(modeling.BertConfig.from_dict(CONFIG), 2)
    length = None if mode == "padded" else input_pipeline.RealLength(MAX_SEQ_LENGTH)
    dataset = input_pipeline.sequential_dataset(
        [path], run_classifier.classifier_features(MAX_SEQ_LENGTH), PREDICT_BATCH, length=length,
        group_window=input_pipeline.PREDICTION_WINDOW_BATCHES)
    run_classifier.run_predictions(tf.distribute.get_strategy(), model, dataset, False)


def _peak_rss_of_child(command, log_path):
    """Runs `command` to its end (its output to log_path); returns its peak RSS in MB (wait4's ru_maxrss)."""
    import subprocess
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status):
        with open(log_path) as log:
            sys.exit(f"bench_real_length.py: {os.path.basename(command[1])} failed:\n{log.read()[-3000:]}")
    return usage.ru_maxrss / 1024


def write_job_inputs(work, pairs):
    """The pairs as an MRPC-layout test.tsv, and the model's bert_config.json: (data_dir, config path)."""
    import json
    data_dir = os.path.join(work, "job_data")
    os.makedirs(data_dir)
    sample_tasks.write_mrpc_split(os.path.join(data_dir, "test.tsv"), [("0", a, b) for a, b in pairs], test=True)
    config_path = os.path.join(work, "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(CONFIG, f)
    return data_dir, config_path


def peak_memory_table(work, path, pairs, args):
    """Peak RSS of our padded and length-grouped prediction and of the user's whole prediction job.

    Each runs in a fresh process: the first two are run_classifier.run_predictions over the
    records in `path`; the job is `run_classifier.py --task_name=mrpc --do_predict` over the
    same pairs as text (reading, tokenizing, writing predict.tf_record, predicting grouped by
    length, writing test_results.tsv).
    """
    rows = []
    for mode in ("padded", "grouped"):
        command = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--memory_of", f"{mode}:{path}"]
        peak = _peak_rss_of_child(command, os.path.join(work, f"memory_{mode}.log"))
        rows.append([f"ours, {mode} (run_classifier.run_predictions)", f"{peak:,.0f}"])
    data_dir, config_path = write_job_inputs(work, pairs)
    command = [sys.executable, os.path.join(ROOT, "run_classifier.py"), "--task_name=mrpc", "--do_predict",
               f"--data_dir={data_dir}", f"--vocab_file={helpers.real_vocab_file()}",
               f"--bert_config_file={config_path}", f"--max_seq_length={MAX_SEQ_LENGTH}",
               f"--predict_batch_size={PREDICT_BATCH}", f"--output_dir={os.path.join(work, 'job_output')}"]
    peak = _peak_rss_of_child(command, os.path.join(work, "job.log"))
    rows.append(["run_classifier.py --do_predict (the whole job, grouped)", f"{peak:,.0f}"])
    return results.markdown_table(["prediction", "peak RSS MB"], rows)


def memory_benchmark(args, work, predict_path, pairs):
    table = peak_memory_table(work, predict_path, pairs, args)
    body = (f"Peak RSS (ru_maxrss) of one prediction over the first {args.predict_examples} pairs at batch "
            f"{PREDICT_BATCH}, {MODELS[args.model][1]}, each in a fresh process (model at random weights, "
            f"no checkpoint read).\n\n{table}\n")
    print(body)
    if not args.no_append:
        results.append_result("Peak memory of prediction at real length (bench_real_length.py)", body,
                              sources=["training.py", "run_classifier.py", "bench/bench_real_length.py"])


def speed_benchmark(args, train_path, predict_path, lengths, workloads):
    print(f"{len(lengths)} pairs, real length mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
          f"{np.mean(lengths == MAX_SEQ_LENGTH):.1%} at max_seq_length (truncated)")
    print(histogram(lengths))

    train = train_runners(train_path, args.original_dir, args.train_steps) if "train" in workloads else {}
    predict = predict_runners(predict_path, args.original_dir, args.predict_examples) if "predict" in workloads else {}
    first = {}
    for name, run in train.items():  # warm-up: 40 steps meet every length at least once
        start = time.perf_counter()
        for _ in range(4):
            run()
        first[f"train/{name}"] = time.perf_counter() - start
    outputs = {}
    for name, run in predict.items():
        start = time.perf_counter()
        _, outputs[name] = run()
        first[f"predict/{name}"] = time.perf_counter() - start

    seconds = collections.defaultdict(list)
    loads = []
    for round_index in range(args.rounds):
        for name, run in train.items():
            seconds[f"train/{name}"].append(run())
        for name, run in predict.items():
            seconds[f"predict/{name}"].append(run()[0])
        loads.append(os.getloadavg()[0])
        print(f"round {round_index + 1}/{args.rounds} done, load {loads[-1]:.2f}", flush=True)

    rows = []
    for workload, per_run in (("train", args.train_steps * TRAIN_BATCH),
                              ("predict", args.predict_examples // PREDICT_BATCH * PREDICT_BATCH)):
        if workload not in workloads:
            continue
        reference = statistics.median(seconds[f"{workload}/original"])
        padded = statistics.median(seconds[f"{workload}/ours, padded"])
        for name in (train if workload == "train" else predict):
            key = f"{workload}/{name}"
            median = statistics.median(seconds[key])
            ratios = [o / s for o, s in zip(seconds[f"{workload}/original"], seconds[key])]
            diff = "" if workload == "train" else (
                "(reference)" if name == "original" else f"{np.abs(outputs[name] - outputs['original']).max():.1e}")
            rows.append([workload, name, f"{per_run / median:,.1f}",
                         f"{args.train_steps / median:.2f}" if workload == "train" else "",
                         f"{median:.2f}", f"{reference / median:.2f}x",
                         f"{min(ratios):.2f}-{max(ratios):.2f}x", f"{padded / median:.2f}x",
                         f"{first[key]:.1f}", diff])
    table = results.markdown_table(
        ["workload", "run", "examples/s", "steps/s", "median s", "vs original", "per-round range",
         "vs ours padded", "warm-up s", "max prob. diff vs original"], rows)
    body = (f"Data: {len(lengths)} sentence pairs of real prose (consecutive lines of the mixed corpus, "
            f"{os.path.basename(corpus.mixed_corpus())}), real 30,522-entry uncased vocab, max_seq_length "
            f"{MAX_SEQ_LENGTH}; real length mean {lengths.mean():.1f}, median {np.median(lengths):.0f}.\n\n"
            f"{histogram(lengths)}\n\n"
            f"Model {MODELS[args.model][1]}, float32, dropout 0.1. train: {args.train_steps} steps of "
            f"batch {TRAIN_BATCH} per timed run (the same batches for every run); predict: the first "
            f"{args.predict_examples} examples at batch {PREDICT_BATCH}, in file order, window "
            f"{input_pipeline.PREDICTION_WINDOW_BATCHES} batches. {args.rounds} interleaved rounds, median shown, "
            f"ratios also per round (min-max); warm-up s is the first runs (XLA kernel compiles for each length). "
            f"Load average (1 min) after each round: {', '.join(f'{x:.2f}' for x in loads)}: the machine was "
            f"shared with other jobs while this ran, so the timings are noisy; ratios come from the same "
            f"process and rounds.\n\n{table}\n")
    print(body)
    if not args.no_append:
        results.append_result("Classifier at real length (bench_real_length.py)", body,
                              sources=["training.py", "run_classifier.py", "modeling.py", "bench/bench_real_length.py"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=10, help="steps per timed train run")
    parser.add_argument("--predict_examples", type=int, default=512)
    parser.add_argument("--no_append", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--model", choices=sorted(MODELS), default="mini")
    parser.add_argument("--workloads", default="train,predict", help="comma-separated: train, predict")
    parser.add_argument("--peak_memory", action="store_true",
                        help="only measure peak RSS: padded and length-grouped prediction, and the whole "
                             "run_classifier.py --do_predict job (each in a subprocess)")
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    CONFIG.clear()
    CONFIG.update(MODELS[args.model][0])
    if args.memory_of:  # a child of --peak_memory
        mode, path = args.memory_of.split(":", 1)
        predict_once(path, mode)
        return
    workloads = args.workloads.split(",")
    if not args.peak_memory:
        original.path(args.original_dir, "modeling.py")  # exits, saying how to get it, when it is not there
    tf.random.set_seed(0)

    with tempfile.TemporaryDirectory(prefix="bench_real_length-") as work:
        tokenizer = tokenization.FullTokenizer(helpers.real_vocab_file(), do_lower_case=True)
        train_path = os.path.join(work, "train.tf_record")
        pairs = prose_pairs(4096)
        lengths = write_records(train_path, pairs, tokenizer)
        predict_path = os.path.join(work, "predict.tf_record")
        write_records(predict_path, pairs[:args.predict_examples], tokenizer)
        if args.peak_memory:
            memory_benchmark(args, work, predict_path, pairs[:args.predict_examples])
        else:
            speed_benchmark(args, train_path, predict_path, lengths, workloads)


if __name__ == "__main__":
    main()
