"""run_classifier.py: the original's features and probabilities, metrics, export, errors."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import run_classifier

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
MRPC_DIR = os.path.join(GOLDEN, "classifier_mrpc")


def golden_args(output_dir, **extra):
    args = {"task_name": "MRPC", "data_dir": MRPC_DIR, "vocab_file": os.path.join(MRPC_DIR, "vocab.txt"),
            "bert_config_file": os.path.join(GOLDEN, "classifier_tiny_config.json"),
            "init_checkpoint": os.path.join(GOLDEN, "classifier_tiny.ckpt"), "max_seq_length": 32,
            "output_dir": output_dir}
    args.update(extra)
    return [f"--{k}={v}" for k, v in args.items()]


def read_examples(path):
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def read_tsv_floats(path):
    with open(path) as f:
        return np.array([[float(v) for v in line.rstrip("\n").split("\t")] for line in f])


def test_features_probabilities_and_metrics_equal_the_original(tmp_path):
    out = str(tmp_path / "out")
    result = helpers.run_script("run_classifier.py",
                                *golden_args(out, do_eval="true", do_predict="true", eval_batch_size=5))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("eval", "predict"):
        assert read_examples(os.path.join(out, f"{name}.tf_record")) == read_examples(
            os.path.join(GOLDEN, f"classifier_mrpc_{name}.tf_record")), name
    ours = read_tsv_floats(os.path.join(out, "test_results.tsv"))
    expected = read_tsv_floats(os.path.join(GOLDEN, "classifier_mrpc_test_results.tsv"))
    assert ours.shape == expected.shape == (12, 2)
    np.testing.assert_allclose(ours, expected, atol=1e-5)

    dev = np.load(os.path.join(GOLDEN, "classifier_mrpc_dev_probabilities.npy"))
    labels = np.array([int(line.split("\t")[0]) for line in open(os.path.join(MRPC_DIR, "dev.tsv"))
                       .read().splitlines()[1:]])
    results = helpers.read_eval_results(os.path.join(out, "eval_results.txt"))
    assert sorted(results) == ["eval_accuracy", "eval_f1", "eval_loss", "global_step", "loss"]
    assert results["eval_accuracy"] == pytest.approx(np.mean(dev.argmax(-1) == labels), abs=1e-6)
    losses = -np.log(dev[np.arange(len(labels)), labels])
    assert results["eval_loss"] == pytest.approx(losses.mean(), abs=1e-5)
    # Estimator's `loss`: the mean of each eval batch's mean loss (batches of 5, 5, 5, 1).
    assert results["loss"] == pytest.approx(np.mean([losses[i:i + 5].mean() for i in range(0, 16, 5)]), abs=1e-5)
    assert results["global_step"] == 0


def test_train_export_and_serve_raw_strings(tmp_path):
    out, export = str(tmp_path / "out"), str(tmp_path / "export")
    result = helpers.run_script("run_classifier.py",
                                *golden_args(out, do_train="true", do_predict="true", train_batch_size=8,
                                             num_train_epochs=1, export_dir=export, seed=3, log_steps=1))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "*INIT_FROM_CKPT*" in result.stderr
    # Plain TensorFlow ops only: no XLA-compiled function (the fused training kernels) that a
    # serving runtime would need XLA for.
    with open(os.path.join(export, "saved_model.pb"), "rb") as f:
        assert b"_XlaMustCompile" not in f.read()
    predicted = read_tsv_floats(os.path.join(out, "test_results.tsv"))
    rows = [line.split("\t") for line in open(os.path.join(MRPC_DIR, "test.tsv")).read().splitlines()[1:]]
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "rows = json.loads(sys.argv[2])\n"
        "out = model.signatures['serving_default'](text_a=tf.constant([r[3] for r in rows]),\n"
        "                                         text_b=tf.constant([r[4] for r in rows]))\n"
        "print(json.dumps(out['probabilities'].numpy().tolist()))\n")
    served = subprocess.run([helpers.python(), "-c", script, export, json.dumps(rows)], capture_output=True,
                            text=True, timeout=120)
    assert served.returncode == 0, served.stderr[-3000:]
    np.testing.assert_allclose(np.array(json.loads(served.stdout.strip().splitlines()[-1])), predicted,
                               atol=1e-5)


def test_seed_makes_runs_repeatable_and_best_checkpoint_is_kept(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        result = helpers.run_script("run_classifier.py",
                                    *golden_args(out, do_train="true", do_eval="true", train_batch_size=4,
                                                 num_train_epochs=2, seed=11, eval_every_steps=4, learning_rate=1e-3))
        assert result.returncode == 0, result.stderr[-3000:]
        with open(os.path.join(out, "eval_results.txt")) as f:
            runs.append(f.read())
        best = os.path.join(out, "best")
        assert tf.train.latest_checkpoint(best) is not None
        best_f1 = helpers.read_eval_results(os.path.join(best, "eval_results.txt"))["eval_f1"]
        assert best_f1 >= helpers.read_eval_results(os.path.join(out, "eval_results.txt"))["eval_f1"]
    assert runs[0] == runs[1]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_regression_task_and_generic_csv(tmp_path):
    data = tmp_path / "stsb"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = [f"{i}\tg\tf\t2020\t{i}\ts\ts\tthe cat sat\ta cat sat\t{i % 5}.5\n" for i in range(8)]
    write(data / "train.tsv", header + "".join(rows))
    write(data / "dev.tsv", header + "".join(rows[:4]))
    write(data / "test.tsv", header.rsplit("\t", 1)[0] + "\n" + "".join(r.rsplit("\t", 1)[0] + "\n" for r in rows[:3]))
    out = str(tmp_path / "out")
    # No init_checkpoint: the golden one's 2-label head cannot become a 1-output head.
    result = helpers.run_script("run_classifier.py",
                                *golden_args(out, task_name="sts-b", data_dir=str(data), do_train="true",
                                             do_eval="true", do_predict="true", train_batch_size=4, num_train_epochs=1,
                                             init_checkpoint=""))
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(helpers.read_eval_results(os.path.join(out, "eval_results.txt"))) == [
        "eval_loss", "eval_pearson", "eval_spearman", "global_step", "loss"]
    assert read_tsv_floats(os.path.join(out, "test_results.tsv")).shape == (3, 1)

    csv_dir = tmp_path / "csv"
    write(csv_dir / "train.csv", 'text,label\n"hello, world",pos\nbad day,neg\n')
    processor = run_classifier.get_processor("csv", text_a_column=0, label_column=1, labels=["neg", "pos"])
    examples = processor.get_train_examples(str(csv_dir))
    assert [(e.text_a, e.label) for e in examples] == [("hello, world", "pos"), ("bad day", "neg")]


def test_glue_processors_read_the_original_layouts(tmp_path):
    write(tmp_path / "cola" / "train.tsv", "src\t1\t\tGood sentence .\nsrc\t0\t*\tBad sentence .\n")
    write(tmp_path / "cola" / "test.tsv", "index\tsentence\n0\tA test .\n")
    cola = run_classifier.ColaProcessor()
    train = cola.get_train_examples(str(tmp_path / "cola"))
    assert [(e.guid, e.text_a, e.text_b, e.label) for e in train] == [
        ("train-0", "Good sentence .", None, "1"), ("train-1", "Bad sentence .", None, "0")]
    test = cola.get_test_examples(str(tmp_path / "cola"))
    assert [(e.guid, e.text_a, e.label) for e in test] == [("test-1", "A test .", "0")]

    mnli_header = "\t".join(f"c{i}" for i in range(11)) + "\tgold_label\n"
    mnli_row = "7\t" + "\t".join(f"x{i}" for i in range(1, 8)) + "\tPremise .\tHypothesis .\tneutral\tneutral\n"
    write(tmp_path / "mnli" / "dev_matched.tsv", mnli_header + mnli_row)
    (example,) = run_classifier.MnliProcessor().get_dev_examples(str(tmp_path / "mnli"))
    assert (example.guid, example.text_a, example.text_b, example.label) == (
        "dev_matched-7", "Premise .", "Hypothesis .", "neutral")

    write(tmp_path / "xnli" / "xnli.dev.tsv", "language\tgold\ta\tb\tc\td\ts1\ts2\n"
          "zh\tentailment\t\t\t\t\t\u4f60\u597d\t\u518d\u89c1\nen\tneutral\t\t\t\t\tHi\tBye\n")
    write(tmp_path / "xnli" / "multinli" / "multinli.train.zh.tsv", "p\th\tl\n\u4e00\t\u4e8c\tcontradictory\n")
    xnli = run_classifier.XnliProcessor()
    (dev,) = xnli.get_dev_examples(str(tmp_path / "xnli"))
    assert (dev.text_a, dev.label) == ("\u4f60\u597d", "entailment")
    (train,) = xnli.get_train_examples(str(tmp_path / "xnli"))
    assert train.label == "contradiction"

    write(tmp_path / "qnli" / "dev.tsv", "index\tquestion\tsentence\tlabel\n3\tWhy?\tBecause.\tentailment\n")
    (qnli,) = run_classifier.get_processor("QNLI").get_dev_examples(str(tmp_path / "qnli"))
    assert (qnli.guid, qnli.text_a, qnli.text_b, qnli.label) == ("dev-3", "Why?", "Because.", "entailment")


def test_truncation_pops_from_the_longer_side():
    a, b = list("abcdef"), list("xyz")
    run_classifier._truncate_seq_pair(a, b, 6)
    assert a == list("abc") and b == list("xyz")
    a, b = list("ab"), list("xy")
    run_classifier._truncate_seq_pair(a, b, 3)
    assert a == list("ab") and b == list("x")


def test_metrics_against_hand_computed_values():
    y_true = np.array([1, 1, 0, 0, 1, 0])
    y_pred = np.array([1, 0, 0, 1, 1, 0])
    # tp=2, fp=1, fn=1, tn=2
    assert run_classifier.f1_score(y_true, y_pred) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert run_classifier.matthews_corr(y_true, y_pred) == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
    assert run_classifier.matthews_corr(np.array([1, 1]), np.array([1, 1])) == 0.0
    assert run_classifier.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # Spearman through average ranks: monotone but not linear -> 1; ties share ranks.
    ranks = run_classifier._ranks([10, 20, 20, 5])
    assert ranks.tolist() == [1.0, 2.5, 2.5, 0.0]
    assert run_classifier.pearson(run_classifier._ranks([1, 2, 3, 4]),
                                  run_classifier._ranks([1, 4, 9, 100])) == pytest.approx(1.0)


@pytest.mark.parametrize("case, message", [
    ("short_row", "train.tsv:3: 2 columns, task mrpc needs at least 5"),
    ("bad_label", "train.tsv:2: label 'maybe' is not one of the task's labels 0, 1"),
    ("missing_split", "dev.tsv not found: task mrpc expects dev.tsv in --data_dir"),
    ("test_header", "test.tsv:1: the header has 1 columns, task mrpc needs 5"),
    ("empty_dir", "train.tsv not found"),
    ("bad_task", "Task not found: nope"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, message):
    data = tmp_path / "data"
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    good = "1\t1\t2\tA cat .\tA dog .\n"
    files = {"train.tsv": header + good + good, "dev.tsv": header + good, "test.tsv": header + good}
    args = {"do_train": "true", "do_eval": "true", "do_predict": "true", "data_dir": str(data)}
    if case == "short_row":
        files["train.tsv"] = header + good + "1\tonly two\n"
    elif case == "bad_label":
        files["train.tsv"] = header + good.replace("1\t1", "maybe\t1", 1)
    elif case == "missing_split":
        del files["dev.tsv"]
    elif case == "test_header":
        files["test.tsv"] = "A cat .\n"
    elif case == "empty_dir":
        files = {}
    elif case == "bad_task":
        args["task_name"] = "nope"
    for name, text in files.items():
        write(data / name, text)
    data.mkdir(exist_ok=True)
    out = tmp_path / "out"
    result = helpers.run_script("run_classifier.py", *golden_args(str(out), **args))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_classifier.py: error: ") and message in last, last
    assert not out.exists() or not any(out.iterdir())
