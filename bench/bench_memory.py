"""Memory and time of one MLM+NSP pretraining step: the original against ours, with and without
--gradient_checkpointing, BERT-Base and BERT-Large, at 128, 384 and 512 tokens.

Every configuration runs in a process of its own, for each of several batch sizes:
  ours      run_pretraining.py, the user's real job (--do_train, --log_steps=1), on full-length
            random examples (every token real, max_predictions_per_seq 20/60/80 at 128/384/512);
  original  its modeling.py, run_pretraining.py heads and optimization.py in a tf.compat.v1
            Session (tests/golden/original.py; dropout on), the same shapes.
Two peaks per process. TensorFlow's own: the most its allocator held at once
(tf.config.experimental.get_memory_info; on the CPU the children run with
TF_CPU_ALLOCATOR_USE_BFC=true, which gives TensorFlow's CPU allocator the statistics a GPU's
has), i.e. tensors only (weights, gradients, Adam slots, activations), what a GPU's memory
would have to hold; ours logs it in its step lines, the original's child reads it after its
steps. And the child's peak RSS (wait4's ru_maxrss), which adds the runtime, the graph and
malloc's fragmentation. A straight line through the (batch, TensorFlow peak) points of a
configuration gives its memory per example (the slope) and its fixed memory (the intercept);
from those the largest batch that fits 12 and 16 GiB (less 1 GiB for what a GPU holds besides
tensors) is computed, not measured. Below a few examples the peak can be the optimizer's update
rather than the activations (with checkpointing most of all): fit through batches where the
activations dominate, and measure a claimed batch directly. Step time is the median
of the steps after the first (which traces); configurations of one (model, length, batch)
run in alternating order over --rounds, so the noise of a shared machine hits them alike.

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
    .venv/bin/python bench/bench_memory.py --models=base --lengths=512 --batches=2,4
    .venv/bin/python bench/bench_memory.py --models=large --lengths=384,512 --batches=1,2 \
        --variants=float32+gc,mixed_bfloat16+gc

Variants: `original`, or ours as PRECISION[+gc][+xla] (gc: --gradient_checkpointing, xla:
--use_xla), or `baseline`: float32 from another checkout of this project (--baseline_dir, e.g. a
`git worktree` of an earlier commit), to compare a change side by side. The parent process never
imports TensorFlow (a child's ru_maxrss would start
from the parent's).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))

import results  # bench/results.py

BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
            initializer_range=0.02)
MODELS = {"base": BASE,
          "large": dict(BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096)}
# max_predictions_per_seq = max_seq_length * masked_lm_prob (0.15), as the original README advises.
PREDICTIONS = {128: 20, 256: 40, 384: 60, 512: 80}
LEARNING_RATE, NUM_TRAIN_STEPS, NUM_WARMUP_STEPS = 1e-4, 100000, 1000
GIB = 1024
CAPACITIES_GIB = (12, 16)
# What a GPU's memory holds besides TensorFlow's tensors (CUDA context, cuBLAS/cuDNN workspaces),
# left out of a capacity before computing what fits.
RESERVE_MB = 1024
DEFAULT_VARIANTS = "original,float32,float32+gc,mixed_bfloat16,mixed_bfloat16+gc"


def parse_variant(variant):
    """'original' -> None; 'baseline' or 'PRECISION[+gc][+xla]' -> the run_pretraining.py flags it means."""
    if variant == "original":
        return None
    if variant == "baseline":
        return ["--precision=float32"]
    precision, *options = variant.split("+")
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16") or set(options) - {"gc", "xla"}:
        raise SystemExit(f"unknown variant {variant}: use original or PRECISION[+gc][+xla]")
    return [f"--precision={precision}"] + ["--gradient_checkpointing"] * ("gc" in options) + \
        ["--use_xla"] * ("xla" in options)


def random_batch(seed, batch, seq, vocab_size):
    """`batch` full-length pretraining examples as {feature: numpy array} (numpy imported here)."""
    import numpy as np
    rng = np.random.RandomState(seed)
    predictions = PREDICTIONS[seq]
    positions = np.stack([np.sort(rng.choice(np.arange(1, seq), predictions, replace=False))
                          for _ in range(batch)])
    return dict(
        input_ids=rng.randint(1000, vocab_size, size=(batch, seq)).astype(np.int32),
        input_mask=np.ones((batch, seq), np.int32),
        segment_ids=(np.arange(seq)[None, :] >= seq // 2).repeat(batch, 0).astype(np.int32),
        masked_lm_positions=positions.astype(np.int32),
        masked_lm_ids=rng.randint(1000, vocab_size, size=(batch, predictions)).astype(np.int32),
        masked_lm_weights=np.ones((batch, predictions), np.float32),
        next_sentence_labels=rng.randint(0, 2, size=(batch, 1)).astype(np.int32))


# --- Children --------------------------------------------------------------------------------

def child_write_records(path, seq, count):
    """Writes `count` random full-length examples at `seq` as a pretraining TFRecord file."""
    import input_pipeline
    features = random_batch(0, count, seq, BASE["vocab_size"])
    examples = (input_pipeline.serialize_example({k: v[i].tolist() for k, v in features.items()})
                for i in range(count))
    input_pipeline.write_tfrecord(path, examples)


def child_original(args):
    """Runs the original's training step args.steps times; prints the seconds of each and TF's peak."""
    import time

    import tensorflow as tf

    import original
    v1 = tf.compat.v1
    graph = v1.Graph()
    with graph.as_default():
        features = random_batch(0, args.batch, args.seq, MODELS[args.model]["vocab_size"])
        _, train_op = original.pretraining_train_op(args.original_dir, MODELS[args.model], features, LEARNING_RATE,
                                                    NUM_TRAIN_STEPS, NUM_WARMUP_STEPS)
        init = v1.global_variables_initializer()
    with v1.Session(graph=graph) as session:
        session.run(init)
        seconds = []
        for _ in range(args.steps):
            started = time.perf_counter()
            session.run(train_op)
            seconds.append(time.perf_counter() - started)
    print("STEP_SECONDS " + " ".join(f"{s:.4f}" for s in seconds))
    try:
        print(f"peak memory = {tf.config.experimental.get_memory_info('CPU:0')['peak'] / 2**20:,.0f} MB (CPU:0)")
    except ValueError:  # without TF_CPU_ALLOCATOR_USE_BFC
        pass


# --- The parent ------------------------------------------------------------------------------

def run_child(command, log_path, env=None):
    """Runs `command` to its end, output to log_path; (peak RSS MB, its output), or exits on failure."""
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    with open(log_path) as log:
        output = log.read()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"bench_memory.py: {' '.join(command[:3])} ... failed:\n{output[-3000:]}")
    return usage.ru_maxrss / 1024, output


_STEP_LINE = re.compile(r"step = (\d+)/\d+, .*examples/sec = ([\d.]+)")
_TF_PEAK = re.compile(r"peak memory = ([\d,]+) MB \((\w+:\d+)\)")


def tensorflow_peak(output):
    """The largest TensorFlow peak a child printed (MB), or None."""
    peaks = [float(mb.replace(",", "")) for mb, _ in _TF_PEAK.findall(output)]
    return max(peaks) if peaks else None


def measure(variant, model, seq, batch, steps, work, args):
    """One configuration in a fresh process: (TF peak MB or None, peak RSS MB, [seconds of steps 2..])."""
    log_path = os.path.join(work, "child.log")
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true" if args.allocator == "bfc" else "false")
    flags = parse_variant(variant)
    if flags is None:
        command = [sys.executable, os.path.abspath(__file__), "--child=original", f"--model={model}",
                   f"--seq={seq}", f"--batch={batch}", f"--steps={steps}", f"--original_dir={args.original_dir}"]
        rss, output = run_child(command, log_path, env)
        seconds = [float(s) for s in re.search(r"STEP_SECONDS (.*)", output).group(1).split()]
        return tensorflow_peak(output), rss, seconds[1:]
    output_dir = os.path.join(work, "output")
    shutil.rmtree(output_dir, ignore_errors=True)
    root = args.baseline_dir if variant == "baseline" else ROOT
    command = [sys.executable, os.path.join(root, "run_pretraining.py"), "--do_train",
               f"--input_file={os.path.join(work, f'records_{seq}.tfrecord')}",
               f"--bert_config_file={os.path.join(work, f'{model}_config.json')}", f"--output_dir={output_dir}",
               f"--train_batch_size={batch}", f"--max_seq_length={seq}",
               f"--max_predictions_per_seq={PREDICTIONS[seq]}", f"--num_train_steps={steps}",
               f"--num_warmup_steps={NUM_WARMUP_STEPS}", f"--learning_rate={LEARNING_RATE}", "--log_steps=1",
               "--keep_checkpoint_max=1"] + flags
    rss, output = run_child(command, log_path, env)
    shutil.rmtree(output_dir, ignore_errors=True)
    seconds = [batch / float(rate) for step, rate in _STEP_LINE.findall(output) if int(step) > 1]
    return tensorflow_peak(output), rss, seconds


def fit_line(points):
    """Least-squares (slope, intercept) through [(x, y)]; slope None with fewer than two x."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None, None
    mean_x, mean_y = statistics.mean(xs), statistics.mean(y for _, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x


def largest_batch(per_example, fixed, capacity_mb):
    if per_example is None or per_example <= 0:
        return "n/a"
    return str(max(0, int((capacity_mb - fixed) // per_example)))


def prepare_inputs(work, models, lengths, batches):
    for model in models:
        with open(os.path.join(work, f"{model}_config.json"), "w") as f:
            json.dump(MODELS[model], f)
    for seq in lengths:
        command = [sys.executable, os.path.abspath(__file__), "--child=records", f"--seq={seq}",
                   f"--batch={max(batches)}", f"--output={os.path.join(work, f'records_{seq}.tfrecord')}"]
        run_child(command, os.path.join(work, "records.log"))


def run_grid(args, work):
    """{(model, seq, variant, batch): Run} over the grid, each configuration args.rounds times."""
    measured = {}
    for model in args.models:
        for seq in args.lengths:
            for batch in args.batches:
                for round_index in range(args.rounds):
                    order = args.variants if round_index % 2 == 0 else args.variants[::-1]
                    for variant in order:
                        peak, rss, seconds = measure(variant, model, seq, batch, args.steps, work, args)
                        run = measured.setdefault((model, seq, variant, batch), Run())
                        run.add(peak, rss, seconds)
                        print(f"{model} seq {seq} batch {batch} {variant}: TensorFlow peak "
                              f"{'n/a' if peak is None else f'{peak:,.0f}'} MB, RSS {rss:,.0f} MB, steps "
                              f"{', '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
    return measured


class Run:
    """What the processes of one configuration measured: the largest peaks, every step's seconds."""

    def __init__(self):
        self.peak, self.rss, self.seconds = None, 0.0, []

    def add(self, peak, rss, seconds):
        if peak is not None:
            self.peak = peak if self.peak is None else max(self.peak, peak)
        self.rss = max(self.rss, rss)
        self.seconds += seconds

    def step(self):
        return statistics.median(self.seconds) if self.seconds else None


def _mb(value):
    return "n/a" if value is None else f"{value:,.0f}"


def tables(args, measured):
    """(per-process table, per-configuration table) as Markdown."""
    run_rows = []
    for (model, seq, variant, batch), run in measured.items():
        original = measured.get((model, seq, "original", batch))
        plain = measured.get((model, seq, variant.replace("+gc", ""), batch)) if "+gc" in variant else (
            measured.get((model, seq, "baseline", batch)) if variant == "float32" else None)
        step = run.step()
        run_rows.append([model, seq, variant, batch, _mb(run.peak), _mb(run.rss),
                         "n/a" if step is None else f"{step:.2f}",
                         f"{original.step() / step:.2f}x" if original and original.step() and step else "",
                         f"{step / plain.step():.2f}x" if plain and plain.step() and step else ""])
    fit_rows = []
    for model in args.models:
        for seq in args.lengths:
            for variant in args.variants:
                points = [(b, measured[(model, seq, variant, b)].peak) for b in args.batches
                          if measured.get((model, seq, variant, b)) and measured[(model, seq, variant, b)].peak]
                per_example, fixed = fit_line(points)
                if per_example is None:
                    continue
                fit_rows.append([model, seq, variant, f"{per_example:,.0f}", f"{fixed:,.0f}"] +
                                [largest_batch(per_example, fixed, gib * GIB - RESERVE_MB) for gib in CAPACITIES_GIB])
    run_table = results.markdown_table(
        ["model", "seq", "variant", "batch", "TF peak MB", "peak RSS MB", "median step s", "speed vs original",
         "time vs without gc (float32: vs baseline)"], run_rows)
    fit_table = results.markdown_table(
        ["model", "seq", "variant", "MB per example", "fixed MB"] +
        [f"largest batch in {gib} GiB (computed)" for gib in CAPACITIES_GIB], fit_rows)
    return run_table, fit_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original_dir", default="/tmp/orig",
                        help="the unzipped bert-tensorflow 1.0.4 wheel (the directory holding bert/)")
    parser.add_argument("--models", default="base", help="comma-separated: base, large")
    parser.add_argument("--lengths", default="512", help="comma-separated max_seq_length values: 128, 256, 384, 512")
    parser.add_argument("--batches", default="2,4", help="comma-separated batch sizes (two or more give the slope)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="comma-separated: original, or PRECISION[+gc][+xla]")
    parser.add_argument("--baseline_dir", help="another checkout of this project, for the variant `baseline`")
    parser.add_argument("--steps", type=int, default=3, help="training steps per process (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per configuration, in alternating order")
    parser.add_argument("--allocator", choices=["bfc", "default"], default="bfc",
                        help="the children's CPU allocator: bfc (TF_CPU_ALLOCATOR_USE_BFC=true: TensorFlow's peak "
                             "is known) or TensorFlow's default (RSS only; what a user runs)")
    parser.add_argument("--no_append", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--child", choices=["original", "records"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "original":
        return child_original(args)
    if args.child == "records":
        return child_write_records(args.output, args.seq, args.batch)

    args.models = args.models.split(",")
    args.lengths = [int(n) for n in args.lengths.split(",")]
    args.batches = sorted(int(n) for n in args.batches.split(","))
    args.variants = args.variants.split(",")
    for variant in args.variants:
        parse_variant(variant)
    if set(args.models) - set(MODELS) or set(args.lengths) - set(PREDICTIONS):
        raise SystemExit(f"--models from {sorted(MODELS)}, --lengths from {sorted(PREDICTIONS)}")
    if "baseline" in args.variants and not os.path.exists(os.path.join(args.baseline_dir or "", "run_pretraining.py")):
        raise SystemExit("the variant baseline needs --baseline_dir, a checkout holding run_pretraining.py")
    if "original" in args.variants and not os.path.exists(os.path.join(args.original_dir, "bert", "modeling.py")):
        raise SystemExit(f"{args.original_dir}/bert/modeling.py not found: see this script's docstring")
    work = tempfile.mkdtemp(prefix="bench_memory_")
    try:
        prepare_inputs(work, args.models, args.lengths, args.batches)
        measured = run_grid(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run_table, fit_table = tables(args, measured)
    print()
    print(run_table)
    print()
    print(fit_table)
    if args.no_append:
        return
    body = (f"One MLM+NSP pretraining step per process (ours: run_pretraining.py --do_train --log_steps=1, "
            f"{args.steps} steps; the original: its graph in a tf.compat.v1 Session, {args.steps} steps), "
            f"full-length random examples, max_predictions_per_seq {PREDICTIONS} by length, dropout 0.1, "
            f"AdamWeightDecay. TF peak = the most TensorFlow's allocator held (CPU allocator: "
            f"{args.allocator}); peak RSS = the child's ru_maxrss; step = median of the steps after the first, "
            f"{args.rounds} round(s) in alternating order. Per example and fixed: least-squares line through "
            f"the TF peaks at batches {args.batches}; the largest batches are computed from that line with "
            f"{RESERVE_MB} MB of each capacity held back, not measured.\n\n"
            f"{run_table}\n\n{fit_table}\n")
    results.append_result("Memory of a pretraining step (bench_memory.py)", body,
                          sources=["modeling.py", "fused_kernels.py", "training.py", "bench/bench_memory.py"])


if __name__ == "__main__":
    main()
