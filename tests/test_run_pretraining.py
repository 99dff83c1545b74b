"""run_pretraining.py and the training engine: checkpoints, resume, scale, accumulation."""

import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

import modeling

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TFRecords written by the ORIGINAL create_pretraining_data.py (seq 128, 20 predictions).
ORIGINAL_RECORDS = os.path.join(ROOT, "tests", "golden", "pretraining_plain_0.tfrecord")

TINY_CONFIG = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.1,
                   attention_probs_dropout_prob=0.1, max_position_embeddings=128, type_vocab_size=2,
                   initializer_range=0.02)


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


@pytest.fixture()
def no_dropout_config_file(tmp_path):
    """Dropout draws differ with the replica count; without it the runs are comparable."""
    path = tmp_path / "bert_config_no_dropout.json"
    path.write_text(json.dumps(dict(TINY_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
    return str(path)


def base_args(config_file, output_dir, steps=6, **extra):
    args = {"input_file": ORIGINAL_RECORDS, "bert_config_file": config_file, "output_dir": output_dir,
            "do_train": "true", "train_batch_size": 8, "num_train_steps": steps, "num_warmup_steps": 2,
            "learning_rate": 1e-3, "save_checkpoints_steps": 3, "log_steps": 1, "seed": 7}
    args.update(extra)
    return [f"--{k}={v}" for k, v in args.items()]


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def logged_losses(stderr):
    return [float(x) for x in re.findall(r"step = \d+/\d+, loss = ([0-9.]+)", stderr)]


def test_trains_on_original_records_and_writes_original_checkpoint_names(tmp_path, config_file):
    out = str(tmp_path / "out")
    result = helpers.run_script("run_pretraining.py", *base_args(config_file, out, do_eval="true", max_eval_steps=3))
    assert result.returncode == 0, result.stderr[-3000:]
    values = checkpoint_values(os.path.join(out, "model.ckpt-6"))
    config = modeling.BertConfig.from_dict(TINY_CONFIG)
    weights = modeling.original_variable_shapes(config, masked_lm=True, next_sentence=True)
    expected = set(weights) | {f"{n}/adam_m" for n in weights} | {f"{n}/adam_v" for n in weights} | {"global_step"}
    assert set(values) == expected
    for name, shape in weights.items():
        assert values[name].shape == shape
    assert values["global_step"] == 6 and values["global_step"].dtype == np.int64
    with open(os.path.join(out, "checkpoint")) as f:
        assert f.read().splitlines()[0] == 'model_checkpoint_path: "model.ckpt-6"'
    results = helpers.read_eval_results(os.path.join(out, "eval_results.txt"))
    assert list(results) == ["global_step", "loss", "masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy",
                             "next_sentence_loss"]
    with open(os.path.join(out, "eval_results.txt")) as f:
        assert f.readline() == "global_step = 6\n"
    assert 0 <= results["masked_lm_accuracy"] <= 1 and results["masked_lm_loss"] > 0
    # Each batch's loss is MLM + NSP; their means add up the same way.
    assert abs(results["loss"] - results["masked_lm_loss"] - results["next_sentence_loss"]) < 0.05
    losses = logged_losses(result.stderr)
    assert len(losses) == 6 and all(np.isfinite(losses))


def test_resumes_after_sigkill_with_identical_final_weights(tmp_path, config_file):
    steps = 24
    reference = str(tmp_path / "reference")
    result = helpers.run_script("run_pretraining.py", *base_args(config_file, reference, steps=steps))
    assert result.returncode == 0, result.stderr[-3000:]

    interrupted = str(tmp_path / "interrupted")
    process = subprocess.Popen([helpers.python(), "run_pretraining.py",
                                *base_args(config_file, interrupted, steps=steps)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not os.path.exists(os.path.join(interrupted, "model.ckpt-6.index")) and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = helpers.run_script("run_pretraining.py", *base_args(config_file, interrupted, steps=steps))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if killed:
        assert "Resuming from" in resumed.stderr
    a = checkpoint_values(os.path.join(reference, f"model.ckpt-{steps}"))
    b = checkpoint_values(os.path.join(interrupted, f"model.ckpt-{steps}"))
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_mirrored_on_two_logical_cpus_follows_the_one_device_loss_curve(tmp_path, no_dropout_config_file):
    one = helpers.run_script("run_pretraining.py", *base_args(no_dropout_config_file, str(tmp_path / "one")))
    two = helpers.run_script("run_pretraining.py",
                             *base_args(no_dropout_config_file, str(tmp_path / "two"), distribution_strategy="mirrored",
                                        num_logical_cpus=2))
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 replica(s)" in two.stderr
    # Same examples per step. The masked-LM loss is normalised by each replica's own sum of
    # weights (as the original per device), so the curves agree to ~2.5e-4, not bit for bit.
    np.testing.assert_allclose(logged_losses(one.stderr), logged_losses(two.stderr), rtol=1e-3)


def test_gradient_accumulation_equals_one_big_batch(tmp_path, no_dropout_config_file):
    # As with replicas, each micro-batch normalises its own masked-LM loss: ~2.5e-4 apart.
    one = helpers.run_script("run_pretraining.py",
                             *base_args(no_dropout_config_file, str(tmp_path / "one"), steps=3, train_batch_size=8))
    accumulated = helpers.run_script("run_pretraining.py",
                                     *base_args(no_dropout_config_file, str(tmp_path / "acc"), steps=3,
                                                train_batch_size=8, gradient_accumulation_steps=2))
    assert one.returncode == 0, one.stderr[-3000:]
    assert accumulated.returncode == 0, accumulated.stderr[-3000:]
    np.testing.assert_allclose(logged_losses(one.stderr), logged_losses(accumulated.stderr), rtol=1e-3)


def test_a_rerun_with_another_micro_batch_resumes_from_the_records_consumed(tmp_path, config_file):
    # What a user does after running out of memory: the same run again with
    # --gradient_accumulation_steps=2 (and --gradient_checkpointing). The saved input position
    # holds batches of 8; the rerun makes batches of 4, so it continues from the 16 records
    # consumed instead of the position.
    out = str(tmp_path / "out")
    first = helpers.run_script("run_pretraining.py", *base_args(config_file, out, steps=2, save_checkpoints_steps=2))
    assert first.returncode == 0, first.stderr[-3000:]
    rerun = helpers.run_script("run_pretraining.py", *base_args(
        config_file, out, steps=4, save_checkpoints_steps=2, gradient_accumulation_steps=2,
        gradient_checkpointing="true"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert ("input_position/model.ckpt-2.input-0-of-1 was saved with 8 example(s) per replica and micro-batch, "
            "this run has 4: continuing from the records consumed") in rerun.stderr
    assert training_step(out) == 4
    # Resumed again with the rerun's settings, the position it saved fits.
    again = helpers.run_script("run_pretraining.py", *base_args(
        config_file, out, steps=6, save_checkpoints_steps=2, gradient_accumulation_steps=2))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Input position restored from" in again.stderr


def training_step(output_dir):
    return int(tf.train.load_checkpoint(output_dir).get_tensor("global_step"))


@pytest.mark.parametrize("args, message", [
    (["--do_train=false"], "At least one of `do_train` or `do_eval` must be True"),
    (["--use_tpu"], "--use_tpu: no TPU found on this machine"),
    # Nothing listens on the discard port here: refused at once, where TensorFlow would wait.
    (["--use_tpu", "--tpu_name=grpc://127.0.0.1:9"], "--use_tpu: no TPU answers at grpc://127.0.0.1:9"),
    (["--input_file=/nonexistent/*.tfrecord"], "no file matches /nonexistent/*.tfrecord"),
    (["--max_seq_length=512"], "max_position_embeddings"),
    (["--bert_config_file=/nonexistent.json"], "/nonexistent.json"),
    ([f"--input_file={os.path.join(ROOT, 'sample_text.txt')}"], "sample_text.txt: corrupted record at 0"),
    (["--max_seq_length=64"], "the records were written with another --max_seq_length"),
])
def test_user_errors_are_one_line(tmp_path, config_file, args, message):
    result = helpers.run_script("run_pretraining.py", *base_args(config_file, str(tmp_path / "out")) + args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pretraining.py: error: ") and message in last, last
    assert not os.path.exists(str(tmp_path / "out")) or not os.listdir(str(tmp_path / "out"))


def test_two_workers_on_localhost_follow_the_one_device_loss_curve(tmp_path, no_dropout_config_file):
    one = helpers.run_script("run_pretraining.py", *base_args(no_dropout_config_file, str(tmp_path / "one")))
    assert one.returncode == 0, one.stderr[-3000:]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in helpers.free_ports(2)]}
    out = str(tmp_path / "multi")
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [helpers.python(), "run_pretraining.py",
             *base_args(no_dropout_config_file, out, distribution_strategy="multi_worker_mirrored")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    chief_log = outputs[0][1]
    assert "2 replica(s)" in chief_log
    np.testing.assert_allclose(logged_losses(one.stderr), logged_losses(chief_log), rtol=1e-3)
    # Only the chief writes checkpoints.
    assert os.path.exists(os.path.join(out, "model.ckpt-6.index"))


@pytest.mark.parametrize("extra, rtol", [
    ({"use_xla": "true"}, 1e-4),
    ({"precision": "mixed_bfloat16"}, 2e-2),
    ({"precision": "mixed_float16"}, 2e-3),
])
def test_precision_and_xla_stay_close_to_float32(tmp_path, no_dropout_config_file, extra, rtol):
    reference = helpers.run_script("run_pretraining.py",
                                   *base_args(no_dropout_config_file, str(tmp_path / "f32"), steps=2))
    variant = helpers.run_script("run_pretraining.py",
                                 *base_args(no_dropout_config_file, str(tmp_path / "variant"), steps=2, **extra))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert variant.returncode == 0, variant.stderr[-3000:]
    np.testing.assert_allclose(logged_losses(reference.stderr), logged_losses(variant.stderr), rtol=rtol)
    # Variables stay float32 in the checkpoint whatever the compute precision.
    values = checkpoint_values(os.path.join(str(tmp_path / "variant"), "model.ckpt-2"))
    assert values["bert/embeddings/word_embeddings"].dtype == np.float32
