"""A cluster of workers on 127.0.0.1: a worker killed mid-run stops the others with one line
within a bounded time, and running every worker again resumes from the last checkpoint."""

import json
import os
import signal
import subprocess
import time

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(ROOT, "tests", "golden", "pretraining_plain_0.tfrecord")  # seq 128, 20 predictions
CONFIG = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
              hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
              max_position_embeddings=128, type_vocab_size=2, initializer_range=0.02)
STOP_WITHIN_SECONDS = 120


def start_workers(count, output_dir, config_file, num_train_steps, logs):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in helpers.free_ports(count)]}
    args = [f"--input_file={RECORDS}", f"--output_dir={output_dir}", f"--bert_config_file={config_file}",
            "--do_train=true", f"--train_batch_size={2 * count}", f"--num_train_steps={num_train_steps}",
            "--num_warmup_steps=1", "--save_checkpoints_steps=3", "--log_steps=3", "--seed=3",
            "--distribution_strategy=multi_worker_mirrored"]
    workers = []
    for index in range(count):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen([helpers.python(), "run_pretraining.py", *args], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=open(logs[index], "w")))
    return workers


def test_a_killed_worker_stops_the_others_and_all_resume_from_the_last_checkpoint(tmp_path):
    config_file = tmp_path / "bert_config.json"
    config_file.write_text(json.dumps(CONFIG))
    output_dir = str(tmp_path / "out")
    logs = [str(tmp_path / f"worker-{i}.log") for i in range(3)]
    workers = start_workers(3, output_dir, config_file, 10_000, logs)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(os.path.join(output_dir, "model.ckpt-3.index")):
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), open(logs[0]).read()[-3000:]
            time.sleep(0.2)
        workers[2].send_signal(signal.SIGKILL)
        for worker in workers[:2]:
            worker.wait(timeout=STOP_WITHIN_SECONDS)  # no hang
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    for worker, log in zip(workers[:2], logs[:2]):
        lines = open(log).read().strip().splitlines()
        assert worker.returncode == 1 and "Traceback" not in "".join(lines)
        assert lines[-1].startswith("run_pretraining.py: error: a worker of the cluster stopped ("), lines[-1]
        assert lines[-1].endswith("run every worker again to resume from the latest checkpoint")
    last = int(open(os.path.join(output_dir, "checkpoint")).readline().split("-")[-1].rstrip('"\n'))

    workers = start_workers(3, output_dir, config_file, last + 3, logs)
    for worker, log in zip(workers, logs):
        assert worker.wait(timeout=600) == 0, open(log).read()[-3000:]
        text = open(log).read()
        assert f"Resuming from {output_dir}/model.ckpt-{last}" in text
        assert f"Input position restored from {output_dir}/input_position/model.ckpt-{last}.input-" in text
    assert os.path.exists(os.path.join(output_dir, f"model.ckpt-{last + 3}.index"))
    # Only the chief writes checkpoints; every worker writes its own input position.
    positions = os.listdir(os.path.join(output_dir, "input_position"))
    assert {f"model.ckpt-{last + 3}.input-{i}-of-3.index" for i in range(3)} <= set(positions)
