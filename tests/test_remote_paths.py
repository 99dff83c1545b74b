"""Every path flag of every script goes through tf.io.gfile, so remote filesystems work.

The scripts run with every path given as a `file://` URL: TensorFlow's local filesystem
reached through its URL scheme, where Python's own open(), os.path and glob would fail, as
they would on gs://, s3:// (with its plugin) or hdfs://. (TensorFlow's in-memory ram://
filesystem cannot stand in: it counts every name prefix as a directory, so TensorFlow's own
tf.train.load_checkpoint cannot read a checkpoint prefix there.)
"""

import os

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = "file://" + os.path.join(ROOT, "tests", "golden")


def run_script(script, **flags):
    """Runs `script` with keyword flags; asserts it succeeds and returns its stderr."""
    result = helpers.run_script(script, *helpers.flag_args(**flags), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_pretraining_data_training_eval_and_resume_on_urls(tmp_path):
    out = "file://" + str(tmp_path)
    run_script("create_pretraining_data.py", input_file=f"{GOLDEN}/pretraining_input_*.txt",
               output_file=f"{out}/records-0.tfrecord,{out}/records-1.tfrecord",
               vocab_file=f"{GOLDEN}/classifier_mrpc/vocab.txt", max_seq_length=32, max_predictions_per_seq=4,
               dupe_factor=2)
    common = dict(input_file=f"{out}/records-*.tfrecord", output_dir=f"{out}/pretraining",
                  bert_config_file=f"{GOLDEN}/classifier_tiny_config.json",
                  init_checkpoint=f"{GOLDEN}/classifier_tiny.ckpt", do_train="true", do_eval="true",
                  train_batch_size=4, max_seq_length=32, max_predictions_per_seq=4, num_warmup_steps=1,
                  save_checkpoints_steps=2, max_eval_steps=2)
    run_script("run_pretraining.py", num_train_steps=2, **common)
    log = run_script("run_pretraining.py", num_train_steps=4, **common)
    assert "Input position restored from " + f"{out}/pretraining/input_position/model.ckpt-2.input-0-of-1" in log
    files = set(os.listdir(tmp_path / "pretraining"))
    assert {"checkpoint", "model.ckpt-4.index", "eval_results.txt"} <= files
    assert "global_step = 4" in (tmp_path / "pretraining" / "eval_results.txt").read_text()


def test_classifier_training_prediction_and_export_on_urls(tmp_path):
    out = "file://" + str(tmp_path)
    run_script("run_classifier.py", task_name="MRPC", do_train="true", do_eval="true", do_predict="true",
               data_dir=f"{GOLDEN}/classifier_mrpc", vocab_file=f"{GOLDEN}/classifier_mrpc/vocab.txt",
               bert_config_file=f"{GOLDEN}/classifier_tiny_config.json",
               init_checkpoint=f"{GOLDEN}/classifier_tiny.ckpt", max_seq_length=32, train_batch_size=4,
               num_train_epochs=0.5, output_dir=f"{out}/classifier", export_dir=f"{out}/export")
    assert {"eval_results.txt", "test_results.tsv", "model.ckpt-3.index"} <= set(os.listdir(tmp_path / "classifier"))
    assert "saved_model.pb" in os.listdir(tmp_path / "export")


def test_squad_training_and_prediction_on_urls(tmp_path):
    out = "file://" + str(tmp_path)
    run_script("run_squad.py", do_train="true", do_predict="true", train_file=f"{GOLDEN}/squad_v1.json",
               predict_file=f"{GOLDEN}/squad_v1.json", vocab_file=f"{GOLDEN}/squad_vocab.txt",
               bert_config_file=f"{GOLDEN}/squad_tiny_config.json", init_checkpoint=f"{GOLDEN}/squad_tiny.ckpt",
               max_seq_length=64, doc_stride=32, max_query_length=16, train_batch_size=8, num_train_epochs=1.0,
               output_dir=f"{out}/squad")
    assert {"predictions.json", "nbest_predictions.json"} <= set(os.listdir(tmp_path / "squad"))


def test_extract_features_on_urls(tmp_path):
    out = "file://" + str(tmp_path)
    run_script("extract_features.py", input_file=f"{GOLDEN}/extract_input.txt", output_file=f"{out}/features.jsonl",
               vocab_file=f"{GOLDEN}/extract_tiny_vocab.txt", bert_config_file=f"{GOLDEN}/extract_tiny_config.json",
               init_checkpoint=f"{GOLDEN}/extract_tiny.ckpt", max_seq_length=16)
    local = tmp_path / "local.jsonl"
    run_script("extract_features.py", input_file=os.path.join(ROOT, "tests", "golden", "extract_input.txt"),
               output_file=str(local), vocab_file=os.path.join(ROOT, "tests", "golden", "extract_tiny_vocab.txt"),
               bert_config_file=os.path.join(ROOT, "tests", "golden", "extract_tiny_config.json"),
               init_checkpoint=os.path.join(ROOT, "tests", "golden", "extract_tiny.ckpt"), max_seq_length=16)
    assert (tmp_path / "features.jsonl").read_text() == local.read_text()
