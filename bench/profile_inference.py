"""Where a BERT-Base forward spends its time, op by op: ours against the peers.

Traces a few float32 forwards (seq 128, batch 8, the inputs of bench_modeling.py) of one
model with TensorFlow's profiler and prints, per TensorFlow op type (after Grappler's
rewrites, so fused oneDNN kernels appear as such), how many ops run per forward and their
summed duration, plus the forward's wall time. Ops that run concurrently overlap, so the
column does not add up to the wall time; it shows which kernels exist and what they cost.

    .venv/bin/python bench/profile_inference.py --model=ours
    .venv/bin/python bench/profile_inference.py --model=keras_hub
    .venv/bin/python bench/profile_inference.py --model=hf_transformers --peers_dir=/tmp/peers

(--peers_dir: see bench_modeling.py's docstring.) No numbers are written to RESULTS.md:
run bench_modeling.py for those.
"""

import argparse
import collections
import glob
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bench_modeling
import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2


def op_times(forward, runs):
    """{op type: (ops per forward, ms per forward)} and the forward's wall ms, from a trace."""
    log_dir = tempfile.mkdtemp(prefix="profile_inference_")
    try:
        tf.profiler.experimental.start(log_dir)
        started = time.perf_counter()
        for _ in range(runs):
            forward()  # returns numpy arrays: each run ends when its outputs are fetched
        wall_ms = (time.perf_counter() - started) * 1000 / runs
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    counts, picoseconds = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor threads running kernels
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/op_name:OpType"
                scope, _, op_type = name.rpartition(":")
                if not scope or scope.startswith("Executor") or scope.startswith("Threadpool"):
                    continue
                counts[op_type] += 1
                picoseconds[op_type] += event.duration_ps
    table = {op: (counts[op] // runs, picoseconds[op] / 1e9 / runs) for op in counts}
    return table, wall_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["ours", "hf_transformers", "keras_hub"], default="ours")
    parser.add_argument("--use_xla", action="store_true")
    parser.add_argument("--peers_dir", default="")
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    if args.peers_dir:
        sys.path.insert(0, args.peers_dir)
    rng = np.random.RandomState(12345)
    bench_modeling.make_inputs(rng, bench_modeling.TRAIN_BATCH, bench_modeling.PREDICTIONS)
    features = bench_modeling.make_inputs(rng, bench_modeling.INFER_BATCH)  # bench_modeling's
    weights = None  # each model's own initialization: the time does not depend on the values
    flops = bench_modeling.matmul_flops(bench_modeling.BASE, bench_modeling.INFER_BATCH)
    work_dir = tempfile.mkdtemp(prefix="profile_inference_")
    try:
        name = f"infer/{args.model}/float32{'+xla' if args.use_xla else ''}"
        if args.model == "ours":
            runner = bench_modeling.ours_infer_runner(name, "float32", args.use_xla, features, flops,
                                                      weights)
        elif args.model == "keras_hub":
            runner = bench_modeling.keras_hub_infer_runner(name, args.use_xla, features, flops, weights,
                                                           work_dir)
        else:
            runner = bench_modeling.hf_transformers_infer_runner(name, args.use_xla, features, flops,
                                                                 weights)
        forward = runner.outputs
        for _ in range(2):  # tracing, compilation, first-touch allocations
            forward()
        table, wall_ms = op_times(forward, args.runs)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"{name}: {wall_ms:.0f} ms per forward (wall, under the profiler)")
    print(f"{'op type':32s} {'per forward':>11s} {'ms':>8s}")
    for op, (count, ms) in sorted(table.items(), key=lambda item: -item[1][1]):
        if ms >= 0.05:
            print(f"{op:32s} {count:11d} {ms:8.1f}")


if __name__ == "__main__":
    main()
