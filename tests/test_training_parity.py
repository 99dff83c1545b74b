"""Training follows the original step for step: every runner, through its command line.

Each case starts from a checkpoint that the ORIGINAL code wrote and trains, dropout off, on
a batch of identical examples (so how either side batches them cannot matter); the golden
weights and Adam moments after the last step come from the original's own training graph
(tests/golden/make_training_golden.py). The cases clip some steps and not others, cross the
warmup and decay boundaries, and the classifier and SQuAD cases also check that
--num_train_epochs and --warmup_proportion become the original's step counts.

Tolerances: every weight within 1e-5 of the original's; every Adam moment within 1e-4
relative (moments expose a wrong clip factor or loss scale that Adam's normalised step hides).
Variants that must reach the same weights: --gradient_accumulation_steps=2 (two micro-batches
of the same examples) and a mirrored run over 2 logical CPUs (each replica half the batch).
"""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")

WEIGHT_ATOL = 1e-5
MOMENT_RTOL = 1e-4
ADAM_EPSILON = 1e-6
# A variable whose gradients are rounding noise has sqrt(adam_v) below this in the golden
# runs (at most 5e-8 seen; every other variable's is above 1e-5).
NOISE_GRADIENT = 1e-7


def golden(case):
    with np.load(os.path.join(GOLDEN, f"training_{case}.npz")) as data:
        return {name: data[name] for name in data.files}


def write_config(tmp_path, expected):
    path = tmp_path / "bert_config.json"
    path.write_text(str(expected["config"]))
    return str(path)


def run_script(script, flags):
    args = [f"--{name}={value}" for name, value in flags.items()]
    result = subprocess.run([helpers.python(), script, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_pretraining_records(path, expected, copies):
    """`copies` identical records of the golden batch's first example, in the original schema."""
    features = {name[len("features/"):]: value[0] for name, value in expected.items()
                if name.startswith("features/")}
    example = tf.train.Example()
    for name, values in features.items():
        feature = example.features.feature[name]
        if values.dtype == np.float32:
            feature.float_list.value.extend(values.tolist())
        else:
            feature.int64_list.value.extend(values.tolist())
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(copies):
            writer.write(example.SerializeToString())
    return str(path)


def assert_matches_the_original(output_dir, expected):
    """The checkpoint after the golden's last step holds the original's weights and slots."""
    steps = int(expected["steps"])
    prefix = os.path.join(output_dir, f"model.ckpt-{steps}")
    assert tf.io.gfile.exists(prefix + ".index"), (
        f"no checkpoint at step {steps}: {sorted(os.listdir(output_dir))}")
    reader = tf.train.load_checkpoint(prefix)
    assert int(reader.get_tensor("global_step")) == steps
    final = {name[len("final/"):]: value for name, value in expected.items() if name.startswith("final/")}
    assert set(final) <= set(reader.get_variable_to_shape_map())
    failures = []
    for name, want in sorted(final.items()):
        got = reader.get_tensor(name)
        variable = name.rsplit("/adam_", 1)[0]
        tolerance = _tolerance(name, want, final.get(variable + "/adam_v"), expected["rates"])
        excess = (np.abs(got - want) / tolerance).max()
        if excess > 1.0:
            failures.append((excess, name, np.abs(got - want).max()))
    assert not failures, "differ from the original (x tolerance, name, max abs difference): " + "; ".join(
        f"{x:.3g}x {name} {diff:.3g}" for x, name, diff in sorted(failures, reverse=True)[:8])


def _tolerance(name, want, second_moment, rates):
    """The allowed |ours - original| for one checkpoint entry (a weight or an Adam slot)."""
    if second_moment is None:  # a variable no loss reaches (SQuAD's pooler): never updated
        return WEIGHT_ATOL
    denominator = np.sqrt(second_moment) + ADAM_EPSILON  # what Adam divides m by
    if np.sqrt(second_moment).max() < NOISE_GRADIENT:
        # A variable whose gradient is 0 in exact arithmetic (attention key biases; for
        # SQuAD the span bias and the last LayerNorm beta: softmax ignores a shift) sees
        # rounding noise on both sides. Adam turns it into steps of lr * m / (sqrt(v) + eps),
        # |m| at most ~3.2 sqrt(v) (beta_1 = 0.9, beta_2 = 0.999): the moments must both be
        # noise, and the weights may differ by two such step sequences.
        if name.endswith("/adam_m"):
            return 3.2 * NOISE_GRADIENT
        if name.endswith("/adam_v"):
            return NOISE_GRADIENT ** 2
        return 2 * np.sum(rates) * 3.2 * NOISE_GRADIENT / ADAM_EPSILON + WEIGHT_ATOL
    if name.endswith("/adam_m"):
        # Relative, with a floor at the scale that the step divides m by.
        return MOMENT_RTOL * (np.abs(want) + denominator)
    if name.endswith("/adam_v"):
        return MOMENT_RTOL * (np.abs(want) + denominator ** 2)
    return WEIGHT_ATOL


def test_golden_cases_clip_some_steps_and_not_others():
    # What the cases cover, read from the original's own per-step global norms.
    norms = np.concatenate([golden(case)["norms"] for case in ("pretraining", "classifier", "squad")])
    assert (norms > 1.0).sum() >= 5 and (norms < 1.0).sum() >= 3


PRETRAINING_VARIANTS = {
    "one_device": {},
    "gradient_accumulation": {"gradient_accumulation_steps": 2},
    "mirrored_two_cpus": {"distribution_strategy": "mirrored", "num_logical_cpus": 2},
}


@pytest.mark.parametrize("variant", sorted(PRETRAINING_VARIANTS))
def test_pretraining_steps_equal_the_original(tmp_path, variant):
    expected = golden("pretraining")
    batch = int(expected["batch"])
    records = write_pretraining_records(tmp_path / "records.tfrecord", expected, copies=3 * batch)
    output_dir = str(tmp_path / "out")
    run_script("run_pretraining.py", dict(
        input_file=records, bert_config_file=write_config(tmp_path, expected), output_dir=output_dir,
        init_checkpoint=os.path.join(GOLDEN, "training_pretraining_start.ckpt"), do_train="true",
        train_batch_size=batch, max_seq_length=expected["features/input_ids"].shape[1],
        max_predictions_per_seq=expected["features/masked_lm_positions"].shape[1],
        num_train_steps=int(expected["steps"]), num_warmup_steps=int(expected["warmup_steps"]),
        learning_rate=float(expected["learning_rate"]), **PRETRAINING_VARIANTS[variant]))
    assert_matches_the_original(output_dir, expected)


def test_classifier_epochs_warmup_and_steps_equal_the_original(tmp_path):
    expected = golden("classifier")
    output_dir = str(tmp_path / "out")
    run_script("run_classifier.py", dict(
        task_name="MRPC", do_train="true", data_dir=os.path.join(GOLDEN, "training_classifier"),
        vocab_file=os.path.join(GOLDEN, "classifier_mrpc", "vocab.txt"),
        bert_config_file=write_config(tmp_path, expected),
        init_checkpoint=os.path.join(GOLDEN, "training_classifier_start.ckpt"),
        max_seq_length=expected["features/input_ids"].shape[1], train_batch_size=int(expected["batch"]),
        learning_rate=float(expected["learning_rate"]), num_train_epochs=1.3, warmup_proportion=0.3,
        output_dir=output_dir))
    assert_matches_the_original(output_dir, expected)


def test_squad_epochs_warmup_and_steps_equal_the_original(tmp_path):
    expected = golden("squad")
    output_dir = str(tmp_path / "out")
    run_script("run_squad.py", dict(
        do_train="true", train_file=os.path.join(GOLDEN, "training_squad_train.json"),
        vocab_file=os.path.join(GOLDEN, "squad_vocab.txt"), bert_config_file=write_config(tmp_path, expected),
        init_checkpoint=os.path.join(GOLDEN, "training_squad_start.ckpt"),
        max_seq_length=expected["features/input_ids"].shape[1], doc_stride=128, max_query_length=16,
        train_batch_size=int(expected["batch"]), learning_rate=float(expected["learning_rate"]),
        num_train_epochs=2.3, warmup_proportion=0.5, output_dir=output_dir))
    assert_matches_the_original(output_dir, expected)
