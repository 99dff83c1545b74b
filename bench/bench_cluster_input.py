"""Pretraining input at cluster scale: bytes each worker reads per step, and resume latency.

Runs the engine's input pipeline (input_pipeline.training_dataset / training.TrainingInput) for
1, 2 and 4 workers, each worker's pipeline in turn in this process (what a worker's pipeline
reads does not depend on the others running), on pretraining-schema TFRecords it writes
(seq 128, 20 predictions, random ids):

- bytes read per worker per step (the process's `rchar` from /proc/self/io around the
  steps), with 8 files (whole files per worker) and with 1 file (every worker reads the
  whole stream and keeps every Nth record);
- resume latency: a TrainingInput restoring the position saved after N steps, for a small
  and a large N, against the skip that resuming without a saved position costs (which grows
  with N: extrapolate it to a real run's step count).

    .venv/bin/python bench/bench_cluster_input.py [--records_per_file 4000] [--no_record]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf

from bench import results
import input_pipeline
import run_pretraining
import training

SEQ, PREDICTIONS, GLOBAL_BATCH = 128, 20, 128
SPEC = run_pretraining.pretraining_features(SEQ, PREDICTIONS)


def write_records(directory, files, records_per_file, rng):
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"records-{f}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(records_per_file):
                values = {"input_ids": rng.integers(0, 30522, SEQ), "input_mask": np.ones(SEQ, np.int64),
                          "segment_ids": np.zeros(SEQ, np.int64),
                          "masked_lm_positions": rng.integers(0, SEQ, PREDICTIONS),
                          "masked_lm_ids": rng.integers(0, 30522, PREDICTIONS),
                          "masked_lm_weights": np.ones(PREDICTIONS, np.float32), "next_sentence_labels": [1]}
                writer.write(input_pipeline.serialize_example({k: np.asarray(v).tolist() for k, v in values.items()}))
        paths.append(path)
    return paths


def read_chars():
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def bytes_per_step(paths, workers, steps):
    """Mean bytes read per step by each worker's pipeline (after a warm-up of 2 steps)."""
    per_worker = []
    for index in range(workers):
        context = tf.distribute.InputContext(workers, index, workers)
        dataset = input_pipeline.training_dataset(paths, SPEC, GLOBAL_BATCH // workers, seed=1, input_context=context)
        iterator = iter(dataset.prefetch(0))
        for _ in range(2):
            next(iterator)
        before = read_chars()
        for _ in range(steps):
            next(iterator)
        per_worker.append((read_chars() - before) / steps)
    return float(np.mean(per_worker))


class DatasetFn:
    def __init__(self, paths):
        self.paths = paths

    def __call__(self, input_context, batch_size, skip_examples):
        return input_pipeline.training_dataset(self.paths, SPEC, batch_size, seed=1, skip_examples=skip_examples,
                                         input_context=input_context)


def resume_seconds(paths, output_dir, steps, with_position):
    """Seconds to a resumed run's first batch, after `steps` steps of GLOBAL_BATCH (one worker)."""
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    if with_position:
        # The position after `steps` steps, saved as the engine saves it: the iterator's state
        # after reading past those records once (what a run that trained them would hold).
        batches = training.TrainingInput(strategy, DatasetFn(paths), GLOBAL_BATCH, GLOBAL_BATCH, output_dir, 0)
        for _ in range(steps):
            batches.next_batch()
        batches.save_position(steps)
    started = time.perf_counter()
    resumed = training.TrainingInput(strategy, DatasetFn(paths), GLOBAL_BATCH, GLOBAL_BATCH,
                                     output_dir if with_position else output_dir + "-none", steps)
    resumed.next_batch()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records_per_file", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=300, help="steps measured per worker for bytes read")
    parser.add_argument("--resume_steps", default="10,1000", help="small and large step counts for resume")
    parser.add_argument("--no_record", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        rng = np.random.default_rng(0)
        many = write_records(directory, 8, args.records_per_file, rng)
        one_dir = os.path.join(directory, "one")
        os.makedirs(one_dir)
        one = write_records(one_dir, 1, args.records_per_file * 2, rng)
        record_bytes = os.path.getsize(many[0]) / args.records_per_file
        rows = []
        for workers in (1, 2, 4):
            by_file = bytes_per_step(many, workers, args.steps)
            by_record = bytes_per_step(one, workers, args.steps)
            rows.append([workers, f"{by_file / 1e3:.0f}", f"{by_file / record_bytes:.0f}",
                         f"{by_record / 1e3:.0f}", f"{by_record / record_bytes:.0f}"])
        io_table = results.markdown_table(
            ["workers", "8 files: KB read / worker / step", "records", "1 file: KB read / worker / step",
             "records"], rows)
        resume_rows = []
        for steps in (int(s) for s in args.resume_steps.split(",")):
            restored = resume_seconds(many, os.path.join(directory, f"out-{steps}"), steps, with_position=True)
            skipped = resume_seconds(many, os.path.join(directory, f"out-{steps}"), steps, with_position=False)
            resume_rows.append([steps, steps * GLOBAL_BATCH, f"{restored:.2f}", f"{skipped:.2f}"])
        resume_table = results.markdown_table(
            ["resumed at step", "records consumed", "saved position: s to first batch",
             "no position (skip): s to first batch"], resume_rows)
    body = (f"Pretraining-schema records (seq {SEQ}, {PREDICTIONS} predictions, {record_bytes:.0f} bytes each), "
            f"global batch {GLOBAL_BATCH} (each of W workers {GLOBAL_BATCH}/W per step); each worker's pipeline "
            f"measured in turn in one process "
            f"({args.steps} steps after 2 of warm-up; bytes = /proc/self/io rchar). 8 files: whole files per "
            f"worker; 1 file: every worker reads the stream and keeps every Nth record.\n\n{io_table}\n\n"
            f"Resume: seconds from building the resumed input to its first batch (one worker).\n\n{resume_table}\n")
    print(body)
    if not args.no_record:
        results.append_result("cluster input (bytes read per worker, resume latency)", body,
                              sources=["training.py", "bench/bench_cluster_input.py"])


if __name__ == "__main__":
    main()
