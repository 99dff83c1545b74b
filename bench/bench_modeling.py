"""Model speed: our modeling.py against the original's, in one process, interleaved rounds.

Two workloads, as issue 3 section 6 asks:
  train  MLM+NSP pretraining steps at BERT-Mini (L=4, H=256, A=4, I=1024, vocab 30522, seq 128,
         batch 32, 20 predictions, dropout 0.1): forward, loss, backward, global-norm clip
         and the AdamWeightDecay update. Ours runs the training engine's own step
         (training.make_train_loop with optimization.create_optimizer); the original runs
         its modeling.py, run_pretraining.py heads and optimization.py in a tf.compat.v1
         graph and Session.
  infer  BERT-Base (L=12, H=768, A=12, I=3072) forward at seq 128, batch 8, fetching the
         sequence and pooled outputs.
Ours runs at float32 and mixed_bfloat16, each with and without XLA; the original at
float32. Inference also runs the peers with the same weights and inputs, float32, with and
without XLA: Hugging Face transformers' TFBertModel (hidden_act "gelu_new", the original's
tanh GELU) and KerasHub's BertBackbone (weights written by convert_checkpoint.py's KerasHub
writer, loaded with from_preset). Every configuration is built and warmed up first, then timed in rounds
(A B C ... C B A ...) so the noise of a shared machine hits them alike; the table gives
medians over rounds. The same rounds time a float32 tf.matmul of the workload's largest
GEMM (the feed-forward [B*S, H] x [H, I]); "of ceiling" is the model's matmul FLOPs per
second over that rate. The inference rows also give the largest difference from the
original's outputs with the same weights. Peak memory (ru_maxrss) comes from one
subprocess per configuration (--no_memory to skip).

The original is google-research/bert as released on PyPI, never committed here (loaded by
tests/golden/original.py):

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
    .venv/bin/python bench/bench_modeling.py --original_dir=/tmp/orig

KerasHub is a test dependency. Hugging Face's TF BERT needs transformers 4.57 (its last
release with TensorFlow) and tf-keras, installed for the benchmark only, outside the venv:

    .venv/bin/python -m pip install --no-deps --target /tmp/peers transformers==4.57.1 \
        tf-keras==2.21.0 tokenizers==0.22.2 huggingface-hub==0.36.2 filelock==4.3.1 \
        fsspec==2026.9.0 pyyaml==6.0.4 tqdm==4.70.1 hf-xet==1.8.0
    .venv/bin/python bench/bench_modeling.py --original_dir=/tmp/orig --peers_dir=/tmp/peers

Without --peers_dir (or with transformers missing there) the Hugging Face rows are left out.
"""

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))

import keras
import numpy as np
import tensorflow as tf

import modeling
import optimization
import original  # tests/golden/original.py: the original under tf.compat.v1 shims
import results  # bench/results.py
import run_pretraining
import training

v1 = tf.compat.v1

MINI = dict(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=1024, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
            initializer_range=0.02)
BASE = dict(MINI, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072)
SEQ = 128
TRAIN_BATCH, PREDICTIONS = 32, 20
INFER_BATCH = 8
LEARNING_RATE, NUM_TRAIN_STEPS, NUM_WARMUP_STEPS = 1e-4, 100000, 1000
VARIANTS = [("float32", False), ("float32", True), ("mixed_bfloat16", False),
            ("mixed_bfloat16", True)]
PEERS = ("hf_transformers", "keras_hub")  # inference only, float32


def config_names():
    names = []
    for workload in ("train", "infer"):
        names.append(f"{workload}/original")
        names += [f"{workload}/ours/{p}{'+xla' if x else ''}" for p, x in VARIANTS]
    names += [f"infer/{peer}/float32{xla}" for peer in PEERS for xla in ("", "+xla")]
    return names


def peer_versions():
    import keras_hub
    versions = [f"keras-hub {keras_hub.__version__} (BertBackbone)"]
    if hf_transformers_available():
        import tf_keras
        import transformers
        versions.append(f"transformers {transformers.__version__} with tf-keras "
                        f"{tf_keras.__version__} (TFBertModel)")
    return ", ".join(versions)


def hf_transformers_available():
    return all(importlib.util.find_spec(name) is not None for name in ("tf_keras", "transformers"))


def matmul_flops(config, batch, predictions=None):
    """FLOPs (2 per multiply-add) of one forward's matmuls: encoder, pooler, MLM head."""
    h, i, t = config["hidden_size"], config["intermediate_size"], batch * SEQ
    per_layer = 2 * t * (3 * h * h + h * h + 2 * h * i) + 2 * 2 * batch * SEQ * SEQ * h
    flops = config["num_hidden_layers"] * per_layer + 2 * batch * h * h
    if predictions:
        flops += 2 * batch * predictions * (h * h + h * config["vocab_size"]) + 2 * batch * h * 2
    return flops


def make_inputs(rng, batch, predictions=None):
    lengths = rng.randint(SEQ // 2, SEQ + 1, size=batch)
    lengths[0] = SEQ
    input_ids = rng.randint(1000, MINI["vocab_size"], size=(batch, SEQ)).astype(np.int32)
    input_mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    segment_ids = ((np.arange(SEQ)[None, :] >= lengths[:, None] // 2) * input_mask).astype(np.int32)
    input_ids *= input_mask
    features = dict(input_ids=input_ids, input_mask=input_mask, segment_ids=segment_ids)
    if predictions:
        positions = np.stack([np.sort(rng.choice(np.arange(1, n), predictions, replace=False))
                              for n in lengths]).astype(np.int32)
        features.update(
            masked_lm_positions=positions,
            masked_lm_ids=rng.randint(1000, MINI["vocab_size"],
                                      size=(batch, predictions)).astype(np.int32),
            masked_lm_weights=np.ones((batch, predictions), np.float32),
            next_sentence_labels=rng.randint(0, 2, size=(batch, 1)).astype(np.int32))
    return features


class Runner:
    """A configuration ready to time: `run(steps)` returns seconds for `steps` steps."""

    def __init__(self, name, run, flops_per_step, sequences_per_step, outputs=None):
        self.name, self.run = name, run
        self.flops_per_step, self.sequences_per_step = flops_per_step, sequences_per_step
        self.outputs = outputs  # inference: a function giving the outputs once, for identity
        self.seconds = []


def timed(fn):
    def run(steps):
        start = time.perf_counter()
        fn(steps)
        return time.perf_counter() - start
    return run


# ---------------------------------------------------------------------------------------------
# The original, in a tf.compat.v1 graph of its own.


def original_graph(original_dir, workload, features):
    graph = v1.Graph()
    with graph.as_default():
        if workload == "train":
            _, fetch = original.pretraining_train_op(original_dir, MINI, features, LEARNING_RATE, NUM_TRAIN_STEPS,
                                                     NUM_WARMUP_STEPS)
        else:
            orig_modeling = original.modeling(original_dir, original.tf1_namespace())
            feeds = {k: v1.constant(v) for k, v in features.items()}
            model = orig_modeling.BertModel(config=orig_modeling.BertConfig.from_dict(BASE), is_training=False,
                                            input_ids=feeds["input_ids"], input_mask=feeds["input_mask"],
                                            token_type_ids=feeds["segment_ids"], use_one_hot_embeddings=False)
            fetch = [model.get_sequence_output(), model.get_pooled_output()]
        init = v1.global_variables_initializer()
        variables = {v.op.name: v for v in v1.global_variables()}
    session = v1.Session(graph=graph)
    session.run(init)
    return session, fetch, variables


def original_runner(original_dir, workload, features, flops, sequences):
    session, fetch, variables = original_graph(original_dir, workload, features)

    def run(steps):
        for _ in range(steps):
            session.run(fetch)

    runner = Runner(f"{workload}/original", timed(run), flops, sequences,
                    outputs=(lambda: session.run(fetch)) if workload == "infer" else None)
    runner.session, runner.variables = session, variables
    return runner


# ---------------------------------------------------------------------------------------------
# Ours.


def ours_train_runner(name, precision, use_xla, features, flops):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = run_pretraining.PretrainingModel(modeling.BertConfig.from_dict(MINI))
        optimizer = optimization.create_optimizer(LEARNING_RATE, NUM_TRAIN_STEPS, NUM_WARMUP_STEPS)
        optimizer.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    batch = {k: tf.constant(v) for k, v in features.items()}
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_loop = training.make_train_loop(tf.distribute.get_strategy(), model,
                                           run_pretraining.pretraining_loss, optimizer, 1,
                                           use_xla, 0, lambda: next(iterator))

    def run(steps):
        float(train_loop(tf.constant(steps, tf.int32)))

    return Runner(name, timed(run), flops, TRAIN_BATCH)


def ours_infer_runner(name, precision, use_xla, features, flops, weights):
    model = modeling.BertModel(modeling.BertConfig.from_dict(BASE), dtype=precision)
    if weights is not None:
        for variable_name, variable in modeling.original_name_map(model).items():
            variable.assign(weights[variable_name])
    ids, mask, types_ = (tf.constant(features[k])
                         for k in ("input_ids", "input_mask", "segment_ids"))

    @tf.function(jit_compile=use_xla)
    def forward():
        out = model(ids, input_mask=mask, token_type_ids=types_, training=False)
        return out["sequence_output"], out["pooled_output"]

    return inference_runner(name, forward, flops)


def inference_runner(name, forward, flops):
    """A Runner of `forward` (() -> (sequence output, pooled output)), fetched at the end."""
    def run(steps):
        for _ in range(steps):
            outputs = forward()
        outputs[0].numpy()

    return Runner(name, timed(run), flops, INFER_BATCH,
                  outputs=lambda: [t.numpy() for t in forward()])


def hf_transformers_infer_runner(name, use_xla, features, flops, weights):
    """Hugging Face's TFBertModel with the original's weights (names mapped one to one), or
    its own initialization when `weights` is None."""
    from transformers import BertConfig as HFBertConfig
    from transformers import TFBertModel
    model = TFBertModel(HFBertConfig(
        vocab_size=BASE["vocab_size"], hidden_size=BASE["hidden_size"],
        num_hidden_layers=BASE["num_hidden_layers"], num_attention_heads=BASE["num_attention_heads"],
        intermediate_size=BASE["intermediate_size"], hidden_act="gelu_new",
        max_position_embeddings=BASE["max_position_embeddings"],
        type_vocab_size=BASE["type_vocab_size"], layer_norm_eps=modeling.LAYER_NORM_EPSILON))
    ids, mask, types_ = (tf.constant(features[k])
                         for k in ("input_ids", "input_mask", "segment_ids"))
    model(ids, attention_mask=mask, token_type_ids=types_)  # builds the weights
    for variable in model.weights if weights is not None else ():
        # tf_bert_model/bert/encoder/layer_._3/attention/self/query/kernel:0 -> the original's
        original = variable.name.split(":")[0].split("/", 1)[1].replace("layer_._", "layer_")
        for suffix in ("/weight", "/embeddings"):
            if original.endswith(suffix) and "embeddings/" in original:
                original = original[:-len(suffix)]
        variable.assign(weights[original])

    @tf.function(jit_compile=use_xla)
    def forward():
        out = model(ids, attention_mask=mask, token_type_ids=types_, training=False)
        return out.last_hidden_state, out.pooler_output

    return inference_runner(name, forward, flops)


def keras_hub_infer_runner(name, use_xla, features, flops, weights, work_dir):
    """KerasHub's BertBackbone from a preset that convert_checkpoint.py writes with `weights`,
    or with its own initialization when `weights` is None."""
    import keras_hub

    import convert_checkpoint
    config = modeling.BertConfig.from_dict(BASE)
    if weights is None:
        backbone = keras_hub.models.BertBackbone.from_config(
            convert_checkpoint.keras_hub_config_from_bert(config)["config"])
    else:
        vocab_file = os.path.join(work_dir, "vocab.txt")
        with open(vocab_file, "w") as f:
            f.write("".join(f"[unused{i}]\n" for i in range(BASE["vocab_size"])))
        preset = os.path.join(work_dir, "keras_hub_preset")
        convert_checkpoint.write_keras_hub(
            convert_checkpoint.BertWeights(config, weights, vocab_file, True, "bench weights"), preset)
        backbone = keras_hub.models.BertBackbone.from_preset(preset)
    inputs = {"token_ids": tf.constant(features["input_ids"]),
              "segment_ids": tf.constant(features["segment_ids"]),
              "padding_mask": tf.constant(features["input_mask"])}

    @tf.function(jit_compile=use_xla)
    def forward():
        out = backbone(inputs, training=False)
        return out["sequence_output"], out["pooled_output"]

    return inference_runner(name, forward, flops)


def matmul_runner(name, m, k, n):
    a = tf.random.normal([m, k])
    b = tf.random.normal([k, n])

    @tf.function
    def product(steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            total += tf.matmul(a + total, b)[0, 0]  # dependent, so none is skipped
        return total

    def run(steps):
        product(tf.constant(steps * 8)).numpy()

    return Runner(name, timed(run), 8 * 2 * m * k * n, 0)


def build_runners(names, original_dir, work_dir):
    rng = np.random.RandomState(12345)
    train_features = make_inputs(rng, TRAIN_BATCH, PREDICTIONS)
    infer_features = make_inputs(rng, INFER_BATCH)
    train_flops = 3 * matmul_flops(MINI, TRAIN_BATCH, PREDICTIONS)
    infer_flops = matmul_flops(BASE, INFER_BATCH)
    runners = {}
    h, i = MINI["hidden_size"], MINI["intermediate_size"]
    runners["train/matmul"] = matmul_runner("train/matmul", TRAIN_BATCH * SEQ, h, i)
    h, i = BASE["hidden_size"], BASE["intermediate_size"]
    runners["infer/matmul"] = matmul_runner("infer/matmul", INFER_BATCH * SEQ, h, i)
    weights = None  # the original's, when it runs: then every model computes the same outputs
    for name in names:
        workload, side, *rest = name.split("/")
        if side == "original":
            runners[name] = original_runner(original_dir, workload,
                                            train_features if workload == "train" else
                                            infer_features,
                                            train_flops if workload == "train" else infer_flops,
                                            TRAIN_BATCH if workload == "train" else INFER_BATCH)
            if workload == "infer":
                weights = runners[name].session.run(runners[name].variables)
            continue
        precision, _, xla = rest[0].partition("+")
        if side == "hf_transformers":
            runners[name] = hf_transformers_infer_runner(name, bool(xla), infer_features,
                                                         infer_flops, weights)
        elif side == "keras_hub":
            runners[name] = keras_hub_infer_runner(name, bool(xla), infer_features, infer_flops,
                                                   weights, work_dir)
        elif workload == "train":
            runners[name] = ours_train_runner(name, precision, bool(xla), train_features,
                                              train_flops)
        else:
            runners[name] = ours_infer_runner(name, precision, bool(xla), infer_features,
                                              infer_flops, weights)
    return runners


def peak_rss_mb():
    """This process's peak resident set. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over fork and exec, so a child of the big parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(name, original_dir, peers_dir, steps):
    """ru_maxrss of a fresh process that builds `name` alone and runs it."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--original_dir", original_dir, "--only", name,
         "--steps_train", str(steps), "--steps_infer", str(steps)] +
        (["--peers_dir", peers_dir] if peers_dir else []),
        capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("MAXRSS_MB "):
            return float(line.split()[1])
    sys.stderr.write(result.stderr[-2000:])
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    original.add_argument(parser)
    parser.add_argument("--peers_dir", default="",
                        help="directory holding transformers and tf-keras for the Hugging Face "
                             "rows (see this script's docstring)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps_train", type=int, default=3, help="training steps per round")
    parser.add_argument("--steps_infer", type=int, default=3, help="Base batches per round")
    parser.add_argument("--configs", default="",
                        help="comma-separated subset of " + ",".join(config_names()))
    parser.add_argument("--intra_op_threads", type=int, default=0)
    parser.add_argument("--inter_op_threads", type=int, default=0)
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--no_append", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # peak-memory child process
    args = parser.parse_args()
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    for filename in ("modeling.py", "run_pretraining.py", "optimization.py"):
        original.path(args.original_dir, filename)  # exits with how to get it when missing
    if args.peers_dir:
        sys.path.insert(0, args.peers_dir)  # first: its tokenizers is the one transformers 4.57 needs
    work_dir = tempfile.mkdtemp(prefix="bench_modeling_")
    try:
        run_configs(args, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def run_configs(args, work_dir):
    if args.only:
        runners = build_runners([args.only], args.original_dir, work_dir)
        runner = runners[args.only]
        runner.run(1)
        runner.run(args.steps_train if args.only.startswith("train") else args.steps_infer)
        print("MAXRSS_MB %.0f" % peak_rss_mb())
        return

    names = [n for n in args.configs.split(",") if n] or config_names()
    unknown = set(names) - set(config_names())
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}; use some of {config_names()}")
    if not hf_transformers_available():
        left_out = [n for n in names if "/hf_transformers/" in n]
        if left_out:
            print(f"transformers/tf-keras not importable (see --peers_dir): leaving out {left_out}")
        names = [n for n in names if n not in left_out]
    # The original's inference runs first: its weights are copied into ours.
    names.sort(key=lambda n: (n.split("/")[0], n.split("/")[1] != "original"))
    started = time.perf_counter()
    runners = build_runners(names, args.original_dir, work_dir)
    order = [n for n in runners]
    for name in order:  # warm-up: tracing, XLA compilation, first-touch allocations
        runners[name].run(1)
    print(f"built and warmed up in {time.perf_counter() - started:.0f} s", flush=True)

    differences = {}
    if "infer/original" in runners:
        reference = runners["infer/original"].outputs()
        for name in order:
            if runners[name].outputs is not None and name != "infer/original":
                ours = runners[name].outputs()
                differences[name] = max(float(np.max(np.abs(np.asarray(o, np.float32) - r)))
                                        for o, r in zip(ours, reference))

    for round_index in range(args.rounds):
        # Every other round in reverse, so no configuration always follows the same one.
        for name in order if round_index % 2 == 0 else order[::-1]:
            steps = args.steps_train if name.startswith("train") else args.steps_infer
            runners[name].seconds.append(runners[name].run(steps) / steps)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{n} {1000 * runners[n].seconds[-1]:.0f} ms" for n in order), flush=True)

    memory = {}
    if not args.no_memory:
        for name in names:
            memory[name] = peak_memory_mb(name, args.original_dir, args.peers_dir, 2)

    rows = []
    rates = {}
    for workload in ("train", "infer"):
        matmul = runners[f"{workload}/matmul"]
        rates[workload] = statistics.median(matmul.flops_per_step / s for s in matmul.seconds) / 1e9
    reference_speed = {}
    for name in names:
        runner = runners[name]
        workload = name.split("/")[0]
        seconds = statistics.median(runner.seconds)
        speed = runner.sequences_per_step / seconds
        if name.endswith("original"):
            reference_speed[workload] = speed
        gflops = runner.flops_per_step / seconds / 1e9
        spread = "%.0f-%.0f" % (1000 * min(runner.seconds), 1000 * max(runner.seconds))
        rows.append([name, "%.1f" % speed, "%.0f" % (1000 * seconds), spread,
                     "%.2fx" % (speed / reference_speed[workload])
                     if workload in reference_speed else "n/a",
                     "%.0f" % gflops, "%.0f%%" % (100 * gflops / rates[workload]),
                     "%.0f" % memory[name] if name in memory else "n/a",
                     "%.1e" % differences[name] if name in differences else
                     ("(reference)" if name == "infer/original" else "")])
    header = ["config", "seq/s", "median ms/step", "range ms", "vs original", "matmul GFLOP/s",
              "of ceiling", "peak RSS MB", "max abs diff vs original"]
    table = results.markdown_table(header, rows)
    matmul_line = (f"float32 tf.matmul rate in the same rounds (median): "
                   f"{rates['train']:.0f} GFLOP/s for [{TRAIN_BATCH * SEQ},{MINI['hidden_size']}]x"
                   f"[{MINI['hidden_size']},{MINI['intermediate_size']}] (train rows' ceiling), "
                   f"{rates['infer']:.0f} GFLOP/s for [{INFER_BATCH * SEQ},{BASE['hidden_size']}]x"
                   f"[{BASE['hidden_size']},{BASE['intermediate_size']}] (infer rows' ceiling).")
    print()
    print(table)
    print(matmul_line)
    if args.no_append:
        return
    threads = (f"intra_op {args.intra_op_threads or 'default'}, inter_op "
               f"{args.inter_op_threads or 'default'}, TF_ENABLE_ONEDNN_OPTS="
               f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")
    body = (
        f"train = MLM+NSP pretraining step at BERT-Mini (L=4, H=256, A=4, I=1024, V=30522), seq "
        f"{SEQ}, batch {TRAIN_BATCH}, {PREDICTIONS} predictions, dropout 0.1, AdamWeightDecay "
        f"with global-norm clip; infer = BERT-Base forward (sequence + pooled output), seq {SEQ}, "
        f"batch {INFER_BATCH}. {args.rounds} interleaved rounds of {args.steps_train} train steps "
        f"/ {args.steps_infer} infer batches, median shown; the original in a tf.compat.v1 "
        f"Session (float32). Threads: {threads}. matmul GFLOP/s = FLOPs of the model's matmuls "
        f"(training: 3x forward) / median time; of ceiling = that over the measured tf.matmul "
        f"rate (above 100%: faster GEMMs than that float32 tf.matmul, as bfloat16's or XLA's). "
        f"Peak RSS: VmHWM of one process per config (build, warm-up, 2 steps). Diff: each model "
        f"with the original's weights, max over sequence and pooled outputs. Peers: "
        f"{peer_versions()}.\n\n"
        f"{table}\n\n{matmul_line}\n")
    results.append_result("modeling (BERT-Mini training, BERT-Base inference)", body)


if __name__ == "__main__":
    main()
