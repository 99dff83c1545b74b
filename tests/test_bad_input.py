"""An adversarial user against every script: bad files, bad flags, full disks, kills, two runs.

Every failure must end with exit code 1 and one line `SCRIPT: error: ...` (no traceback),
leave no file under a final name that it did not finish, and leave every file that was
there before untouched. Each case runs the real script in a subprocess on tiny inputs in
a workspace of its own (copies of the golden files), so a case may damage them freely.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

import cli

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")

PRETRAINING_CONFIG = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=37, hidden_act="gelu", hidden_dropout_prob=0.1,
                          attention_probs_dropout_prob=0.1, max_position_embeddings=128, type_vocab_size=2,
                          initializer_range=0.02)


# --- Workspaces: one per case, with the script's inputs and an earlier good output ----------

def _copy(source, destination):
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copyfile(source, destination)
    return destination


def _copy_checkpoint(prefix, destination_prefix):
    for suffix in (".index", ".data-00000-of-00001"):
        _copy(prefix + suffix, destination_prefix + suffix)
    return destination_prefix


def _earlier_output(w, name, text="an earlier good output\n"):
    path = os.path.join(w, "out", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def setup_build_vocab(w):
    with open(os.path.join(ROOT, "sample_text.txt"), "rb") as f:
        text = f.read(20000)
    with open(os.path.join(w, "text.txt"), "wb") as f:
        f.write(text[:text.rindex(b"\n") + 1])
    _earlier_output(w, "vocab.txt", "[PAD]\nearlier\n")
    return dict(input_file=f"{w}/text.txt", output_file=f"{w}/out/vocab.txt", vocab_size=200, min_count=2)


def setup_create_pretraining_data(w):
    setup_build_vocab(w)
    os.remove(os.path.join(w, "out", "vocab.txt"))
    _copy(helpers.real_vocab_file(), f"{w}/vocab.txt")
    _earlier_output(w, "records.tfrecord")
    return dict(input_file=f"{w}/text.txt", output_file=f"{w}/out/records.tfrecord", vocab_file=f"{w}/vocab.txt",
                max_seq_length=32, max_predictions_per_seq=5, dupe_factor=1, random_seed=3)


def setup_extract_features(w):
    _copy(os.path.join(GOLDEN, "extract_input.txt"), f"{w}/in.txt")
    _copy(os.path.join(GOLDEN, "extract_tiny_vocab.txt"), f"{w}/vocab.txt")
    _copy(os.path.join(GOLDEN, "extract_tiny_config.json"), f"{w}/bert_config.json")
    _copy_checkpoint(os.path.join(GOLDEN, "extract_tiny.ckpt"), f"{w}/ckpt/model.ckpt")
    _earlier_output(w, "out.jsonl")
    return dict(input_file=f"{w}/in.txt", output_file=f"{w}/out/out.jsonl", vocab_file=f"{w}/vocab.txt",
                bert_config_file=f"{w}/bert_config.json", init_checkpoint=f"{w}/ckpt/model.ckpt",
                max_seq_length=16)


def setup_run_classifier(w):
    shutil.copytree(os.path.join(GOLDEN, "classifier_mrpc"), f"{w}/data")
    _copy(os.path.join(GOLDEN, "classifier_tiny_config.json"), f"{w}/bert_config.json")
    _copy_checkpoint(os.path.join(GOLDEN, "classifier_tiny.ckpt"), f"{w}/ckpt/model.ckpt")
    _earlier_output(w, "eval_results.txt", "eval_accuracy = 0.5\n")
    return dict(task_name="MRPC", data_dir=f"{w}/data", vocab_file=f"{w}/data/vocab.txt",
                bert_config_file=f"{w}/bert_config.json", init_checkpoint=f"{w}/ckpt/model.ckpt",
                max_seq_length=32, output_dir=f"{w}/out", do_eval="true")


def setup_run_squad(w):
    _copy(os.path.join(GOLDEN, "squad_v1.json"), f"{w}/squad.json")
    _copy(os.path.join(GOLDEN, "squad_vocab.txt"), f"{w}/vocab.txt")
    _copy(os.path.join(GOLDEN, "squad_tiny_config.json"), f"{w}/bert_config.json")
    _copy_checkpoint(os.path.join(GOLDEN, "squad_tiny.ckpt"), f"{w}/ckpt/model.ckpt")
    _earlier_output(w, "predictions.json", "{}\n")
    return dict(predict_file=f"{w}/squad.json", vocab_file=f"{w}/vocab.txt", bert_config_file=f"{w}/bert_config.json",
                init_checkpoint=f"{w}/ckpt/model.ckpt", output_dir=f"{w}/out", do_predict="true",
                max_seq_length=64, doc_stride=16, max_query_length=12)


def setup_run_pretraining(w):
    _copy(os.path.join(GOLDEN, "pretraining_plain_0.tfrecord"), f"{w}/data/records.tfrecord")
    with open(f"{w}/bert_config.json", "w") as f:
        json.dump(PRETRAINING_CONFIG, f)
    _earlier_output(w, "eval_results.txt", "loss = 1.0\n")
    return dict(input_file=f"{w}/data/*", bert_config_file=f"{w}/bert_config.json", output_dir=f"{w}/out",
                do_eval="true", eval_batch_size=2, max_eval_steps=1, train_batch_size=4, num_train_steps=2,
                num_warmup_steps=0, learning_rate=1e-3)


def setup_convert_checkpoint(w):
    _copy(os.path.join(GOLDEN, "extract_tiny_vocab.txt"), f"{w}/orig/vocab.txt")
    _copy(os.path.join(GOLDEN, "extract_tiny_config.json"), f"{w}/orig/bert_config.json")
    _copy_checkpoint(os.path.join(GOLDEN, "extract_tiny.ckpt"), f"{w}/orig/bert_model.ckpt")
    _earlier_output(w, "config.json", "{}\n")
    return dict(input_dir=f"{w}/orig", output_dir=f"{w}/out")


SETUPS = {"build_vocab.py": setup_build_vocab, "create_pretraining_data.py": setup_create_pretraining_data,
          "extract_features.py": setup_extract_features, "run_classifier.py": setup_run_classifier,
          "run_squad.py": setup_run_squad, "run_pretraining.py": setup_run_pretraining,
          "convert_checkpoint.py": setup_convert_checkpoint}


# --- Running and checking -------------------------------------------------------------------

def start(script, flags, stdin=None, env=None):
    args = [helpers.python(), os.path.join(ROOT, script)] + [f"--{k}={v}" for k, v in flags.items() if v is not None]
    return subprocess.Popen(args, cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})), start_new_session=True)


def run(script, flags, stdin_bytes=None, env=None, timeout=240):
    process = start(script, flags, subprocess.PIPE if stdin_bytes is not None else subprocess.DEVNULL, env)
    out, err = process.communicate(stdin_bytes, timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def snapshot(directory):
    """{relative path: sha256} of every file under `directory`."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


def temp_names(directory):
    return [os.path.join(root, name) for root, dirs, files in os.walk(directory) for name in files + dirs
            if cli.is_temp_name(name)]


def assert_one_line_error(result, script, fragment):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{script}: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert fragment in errors[0], errors[0]


def assert_failed_cleanly(result, script, fragment, w, before, allowed_new=()):
    """One line, nothing earlier changed, no new file (but `allowed_new`), no temporary name."""
    assert_one_line_error(result, script, fragment)
    after = snapshot(w)
    assert {path: after.get(path) for path in before} == before, "an earlier file was changed or removed"
    assert sorted(set(after) - set(before) - set(allowed_new)) == []
    assert set(temp_names(w)) <= {os.path.join(w, path) for path in before}  # only what the case put there


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _edit_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    _write(path, json.dumps(data))


def _truncate(path, keep=0.5):
    os.truncate(path, int(os.path.getsize(path) * keep))


def _drop_vocab_lines(path, count):
    with open(path) as f:
        lines = f.readlines()
    _write(path, "".join(lines[:-count]))


def _damaged_checkpoint_in(output_dir):
    """output_dir's latest checkpoint, its .data file cut short (a full disk, an interrupted copy)."""
    prefix = _copy_checkpoint(os.path.join(GOLDEN, "classifier_tiny.ckpt"), f"{output_dir}/model.ckpt-5")
    _truncate(prefix + ".data-00000-of-00001")
    _write(f"{output_dir}/checkpoint", 'model_checkpoint_path: "model.ckpt-5"\n')


# Each case: (id, script, flag overrides (str.format'ed with w), prepare(w) or None, error fragment).
# A flag set to None is dropped from the command line.
CASES = [
    # build_vocab.py
    ("bv-no-match", "build_vocab.py", {"input_file": "{w}/nothing*.txt"}, None, "no file matches"),
    ("bv-directory", "build_vocab.py", {"input_file": "{w}/out"}, None, "is a directory"),
    ("bv-not-utf8", "build_vocab.py", {}, lambda w: open(f"{w}/text.txt", "ab").write(b"caf\xe9\n"), "not UTF-8"),
    ("bv-empty", "build_vocab.py", {}, lambda w: _write(f"{w}/text.txt", ""), "empty"),
    ("bv-only-temp-name-matches", "build_vocab.py", {"input_file": "{w}/in/*"},
     lambda w: _copy(f"{w}/text.txt", f"{w}/in/text.txt.tmp-99999999-abcd1234"), "no file matches"),
    ("bv-vocab-size-small", "build_vocab.py", {"vocab_size": 10}, None, "vocab_size"),
    ("bv-min-count-0", "build_vocab.py", {"min_count": 0}, None, "--min_count=0"),
    ("bv-output-under-a-file", "build_vocab.py", {"output_file": "{w}/text.txt/vocab.txt"}, None, "text.txt"),
    ("bv-output-is-dir", "build_vocab.py", {"output_file": "{w}/out"}, None, "out"),
    ("bv-bad-flag", "build_vocab.py", {"vocab_size": "many"}, None, "vocab_size"),
    # create_pretraining_data.py
    ("cpd-no-match", "create_pretraining_data.py", {"input_file": "{w}/none*.txt"}, None, "no file matches"),
    ("cpd-no-mask", "create_pretraining_data.py", {}, lambda w: _write(f"{w}/vocab.txt", "[PAD]\n[UNK]\na\n"),
     "[MASK]"),
    ("cpd-seq-4", "create_pretraining_data.py", {"max_seq_length": 4}, None, "--max_seq_length=4"),
    ("cpd-masked-prob", "create_pretraining_data.py", {"masked_lm_prob": 2}, None, "--masked_lm_prob=2"),
    ("cpd-dupe-0", "create_pretraining_data.py", {"dupe_factor": 0}, None, "--dupe_factor=0"),
    ("cpd-workers-0", "create_pretraining_data.py", {"num_workers": 0}, None, "--num_workers=0"),
    ("cpd-predictions-0", "create_pretraining_data.py", {"max_predictions_per_seq": 0}, None,
     "--max_predictions_per_seq=0"),
    ("cpd-same-output-twice", "create_pretraining_data.py",
     {"output_file": "{w}/out/a.tfrecord,{w}/out/a.tfrecord"}, None, "twice"),
    ("cpd-same-output-spelled-twice", "create_pretraining_data.py",
     {"output_file": "{w}/out/a.tfrecord,{w}/out/../out/a.tfrecord"}, None, "twice"),
    ("cpd-output-is-input", "create_pretraining_data.py", {"output_file": "{w}/text.txt"}, None,
     "is also an --input_file"),
    ("cpd-output-dir-missing", "create_pretraining_data.py", {"output_file": "{w}/missing/a.tfrecord"}, None,
     "does not exist"),
    ("cpd-empty-input", "create_pretraining_data.py", {}, lambda w: _write(f"{w}/text.txt", "\n\n"), "no text"),
    ("cpd-missing-vocab", "create_pretraining_data.py", {"vocab_file": "{w}/nope.txt"}, None, "nope.txt"),
    # extract_features.py
    ("ef-vocab-smaller", "extract_features.py", {}, lambda w: _drop_vocab_lines(f"{w}/vocab.txt", 3),
     "vocab_size=60"),
    ("ef-config-no-vocab-size", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", vocab_size=None), "has no vocab_size"),
    ("ef-config-heads", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", num_attention_heads=3), "not a multiple"),
    ("ef-config-string", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", hidden_size="16"), "hidden_size"),
    ("ef-config-initializer", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", initializer_range="0.02"), "initializer_range"),
    ("ef-config-activation", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", hidden_act="swishy"), "swishy"),
    ("ef-config-not-json", "extract_features.py", {}, lambda w: _write(f"{w}/bert_config.json", "{oops"),
     "not valid JSON"),
    ("ef-empty-input", "extract_features.py", {}, lambda w: _write(f"{w}/in.txt", ""), "is empty"),
    ("ef-not-utf8", "extract_features.py", {}, lambda w: open(f"{w}/in.txt", "ab").write(b"\xff\xfe\n"),
     "not UTF-8"),
    ("ef-truncated-checkpoint", "extract_features.py", {},
     lambda w: _truncate(f"{w}/ckpt/model.ckpt.data-00000-of-00001"), "truncated"),
    ("ef-missing-checkpoint", "extract_features.py", {"init_checkpoint": "{w}/ckpt/none.ckpt"}, None,
     "checkpoint not found"),
    ("ef-output-dir-missing", "extract_features.py", {"output_file": "{w}/missing/out.jsonl"}, None,
     "does not exist"),
    ("ef-checkpoint-fewer-layers", "extract_features.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", num_hidden_layers=6),
     "has 4 encoder layer(s) but the BERT config has num_hidden_layers=6: layer_4-layer_5 would start at random"),
    ("ef-layers", "extract_features.py", {"layers": "-9"}, None, "--layers"),
    ("ef-seq-above-positions", "extract_features.py", {"max_seq_length": 4096}, None, "max_position_embeddings"),
    ("ef-batch-0", "extract_features.py", {"batch_size": 0}, None, "at least 1"),
    # run_classifier.py
    ("rc-export-is-data-dir", "run_classifier.py", {"export_dir": "{w}/data"}, None, "holds --data_dir"),
    ("rc-export-other-files", "run_classifier.py", {"export_dir": "{w}/models"},
     lambda w: _write(os.makedirs(f"{w}/models") or f"{w}/models/notes.txt", "mine"), "not an earlier export"),
    ("rc-export-is-file", "run_classifier.py", {"export_dir": "{w}/data/train.tsv"}, None, "is a file"),
    ("rc-export-is-output-dir", "run_classifier.py", {"export_dir": "{w}/out"}, None, "holds --output_dir"),
    ("rc-export-above-checkpoint", "run_classifier.py", {"export_dir": "{w}/ckpt"}, None, "holds --init_checkpoint"),
    ("rc-eval-batch-0", "run_classifier.py", {"do_train": "true", "eval_batch_size": 0}, None,
     "--eval_batch_size=0"),
    ("rc-train-batch-0", "run_classifier.py", {"do_train": "true", "train_batch_size": 0}, None,
     "--train_batch_size=0"),
    ("rc-negative-lr", "run_classifier.py", {"do_train": "true", "learning_rate": -1e-3}, None,
     "--learning_rate=-0.001"),
    ("rc-keep-checkpoints-0", "run_classifier.py", {"do_train": "true", "keep_checkpoint_max": 0}, None,
     "--keep_checkpoint_max=0"),
    ("rc-warmup-above-1", "run_classifier.py", {"do_train": "true", "warmup_proportion": 1.5}, None,
     "--warmup_proportion"),
    ("rc-empty-dev", "run_classifier.py", {}, lambda w: _write(f"{w}/data/dev.tsv", "Quality\t#1\t#2\tA\tB\n"),
     "holds no examples"),
    ("rc-empty-test", "run_classifier.py", {"do_eval": None, "do_predict": "true"},
     lambda w: _write(f"{w}/data/test.tsv", "index\t#1\t#2\tA\tB\n"), "holds no examples"),
    ("rc-vocab-smaller", "run_classifier.py", {}, lambda w: _drop_vocab_lines(f"{w}/data/vocab.txt", 1),
     "vocab_size=365"),
    ("rc-config-no-vocab-size", "run_classifier.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", vocab_size=None), "has no vocab_size"),
    ("rc-config-dropout", "run_classifier.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    ("rc-truncated-init-checkpoint", "run_classifier.py", {},
     lambda w: _truncate(f"{w}/ckpt/model.ckpt.data-00000-of-00001"), "truncated"),
    ("rc-truncated-resume-checkpoint", "run_classifier.py", {}, lambda w: _damaged_checkpoint_in(f"{w}/out"),
     "truncated"),
    ("rc-truncated-resume-checkpoint-training", "run_classifier.py", {"do_train": "true", "do_eval": None},
     lambda w: _damaged_checkpoint_in(f"{w}/out"), "truncated"),
    ("rc-truncated-init-checkpoint-training", "run_classifier.py", {"do_train": "true"},
     lambda w: _truncate(f"{w}/ckpt/model.ckpt.data-00000-of-00001"), "is truncated: its .data files hold"),
    ("rc-checkpoint-fewer-layers", "run_classifier.py", {"do_train": "true"},
     lambda w: _edit_json(f"{w}/bert_config.json", num_hidden_layers=3), "layer_2 would start at random"),
    ("rc-nothing-to-do", "run_classifier.py", {"do_eval": None}, None, "must be True"),
    ("rc-data-dir-missing", "run_classifier.py", {"data_dir": "{w}/nowhere"}, None, "not a directory"),
    ("rc-bad-columns", "run_classifier.py", {}, lambda w: _write(f"{w}/data/dev.tsv", "a\tb\n1\n"), "columns"),
    ("rc-eval-every-0", "run_classifier.py", {"do_train": "true", "eval_every_steps": 0}, None,
     "--eval_every_steps=0"),
    # run_squad.py
    ("rs-doc-stride-above-window", "run_squad.py", {"doc_stride": 60}, None, "--doc_stride=60"),
    ("rs-query-length-0", "run_squad.py", {"max_query_length": 0}, None, "--max_query_length=0"),
    ("rs-no-room", "run_squad.py", {"max_query_length": 61}, None, "leaves no room"),
    ("rs-vocab-smaller", "run_squad.py", {}, lambda w: _drop_vocab_lines(f"{w}/vocab.txt", 5), "entries"),
    ("rs-zero-lr", "run_squad.py", {"do_train": "true", "train_file": "{w}/squad.json", "learning_rate": 0},
     None, "--learning_rate=0"),
    ("rs-no-questions", "run_squad.py", {}, lambda w: _write(f"{w}/squad.json", '{"data": []}'),
     "holds no questions"),
    ("rs-predict-file-missing", "run_squad.py", {"predict_file": "{w}/none.json"}, None, "no such file"),
    ("rs-malformed-json", "run_squad.py", {}, lambda w: _write(f"{w}/squad.json", '{"data": ['),
     "malformed JSON"),
    ("rs-checkpoint-fewer-layers", "run_squad.py", {"do_train": "true", "train_file": "{w}/squad.json"},
     lambda w: _edit_json(f"{w}/bert_config.json", num_hidden_layers=5), "would start at random"),
    ("rs-predict-batch-0", "run_squad.py", {"predict_batch_size": 0}, None, "--predict_batch_size=0"),
    ("rs-config-missing", "run_squad.py", {"bert_config_file": "{w}/none.json"}, None, "cannot read"),
    ("rs-truncated-init-checkpoint", "run_squad.py", {},
     lambda w: _truncate(f"{w}/ckpt/model.ckpt.data-00000-of-00001", 0.9), "truncated"),
    # run_pretraining.py
    ("rp-only-temp-names", "run_pretraining.py", {},
     lambda w: os.rename(f"{w}/data/records.tfrecord", f"{w}/data/records.tfrecord.tmp-99999999-abcd1234"),
     "no file matches"),
    ("rp-ids-beyond-vocab", "run_pretraining.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", vocab_size=1000), "beyond the BERT config's vocab_size 1000"),
    ("rp-eval-batch-0", "run_pretraining.py", {"eval_batch_size": 0}, None, "--eval_batch_size=0"),
    ("rp-negative-lr", "run_pretraining.py", {"do_train": "true", "learning_rate": -5}, None, "--learning_rate"),
    ("rp-no-steps", "run_pretraining.py", {"do_train": "true", "num_train_steps": 0}, None, "--num_train_steps=0"),
    ("rp-keep-checkpoints-negative", "run_pretraining.py", {"do_train": "true", "keep_checkpoint_max": -1}, None,
     "--keep_checkpoint_max=-1"),
    ("rp-other-seq-length", "run_pretraining.py", {"max_seq_length": 64}, None, "another --max_seq_length"),
    ("rp-not-tfrecord", "run_pretraining.py", {}, lambda w: _write(f"{w}/data/records.tfrecord", "text\n"),
     "TFRecord"),
    ("rp-config-no-vocab-size", "run_pretraining.py", {},
     lambda w: _edit_json(f"{w}/bert_config.json", vocab_size=None), "has no vocab_size"),
    # convert_checkpoint.py
    ("cc-truncated", "convert_checkpoint.py", {}, lambda w: _truncate(f"{w}/orig/bert_model.ckpt.data-00000-of-00001"),
     "truncated"),
    ("cc-checkpoint-fewer-layers", "convert_checkpoint.py", {},
     lambda w: _edit_json(f"{w}/orig/bert_config.json", num_hidden_layers=6), "layer_4-layer_5 would start at random"),
    ("cc-checkpoint-more-layers", "convert_checkpoint.py", {},
     lambda w: _edit_json(f"{w}/orig/bert_config.json", num_hidden_layers=3), "layer_3 would be left out"),
    ("cc-input-missing", "convert_checkpoint.py", {"input_dir": "{w}/none"}, None, "not a directory"),
    ("cc-config-no-vocab-size", "convert_checkpoint.py", {},
     lambda w: _edit_json(f"{w}/orig/bert_config.json", vocab_size=None), "vocab_size"),
]


@pytest.mark.parametrize("case_id, script, overrides, prepare, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line_and_touches_nothing(tmp_path, case_id, script, overrides, prepare, fragment):
    w = str(tmp_path)
    flags = SETUPS[script](w)
    for key, value in overrides.items():
        flags[key] = value.format(w=w) if isinstance(value, str) else value
    if prepare is not None:
        prepare(w)
    before = snapshot(w)
    result = run(script, flags)
    assert_failed_cleanly(result, script, fragment, w, before, ALLOWED_NEW.get(case_id, ()))


# Files a failing case may write: what the run derived before the failure, complete.
ALLOWED_NEW = {}


# --- Inputs that can be read only once (pipes) ------------------------------------------------

def test_extract_features_reads_a_pipe_once(tmp_path):
    w = str(tmp_path)
    flags = setup_extract_features(w)
    with open(f"{w}/in.txt", "rb") as f:
        text = f.read()
    result = run("extract_features.py", dict(flags, input_file="/dev/stdin"), stdin_bytes=text)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{w}/out/out.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == text.count(b"\n") + (not text.endswith(b"\n"))  # a last line without "\n" counts
    assert [line["linex_index"] for line in lines] == list(range(len(lines)))


def test_extract_features_empty_pipe_is_one_line(tmp_path):
    w = str(tmp_path)
    flags = setup_extract_features(w)
    before = snapshot(w)
    result = run("extract_features.py", dict(flags, input_file="/dev/stdin"), stdin_bytes=b"")
    assert_failed_cleanly(result, "extract_features.py", "is empty", w, before)


def test_build_vocab_reads_a_pipe(tmp_path):
    w = str(tmp_path)
    flags = setup_build_vocab(w)
    with open(f"{w}/text.txt", "rb") as f:
        text = f.read()
    piped = run("build_vocab.py", dict(flags, input_file="/dev/stdin", output_file=f"{w}/piped.txt"),
                stdin_bytes=text)
    assert piped.returncode == 0, piped.stderr[-3000:]
    from_file = run("build_vocab.py", dict(flags, output_file=f"{w}/file.txt"))
    assert from_file.returncode == 0, from_file.stderr[-3000:]
    with open(f"{w}/piped.txt") as a, open(f"{w}/file.txt") as b:
        assert a.read() == b.read()


def test_run_squad_reads_the_predict_file_from_a_pipe(tmp_path):
    w = str(tmp_path)
    flags = setup_run_squad(w)
    with open(f"{w}/squad.json", "rb") as f:
        text = f.read()
    result = run("run_squad.py", dict(flags, predict_file="/dev/stdin"), stdin_bytes=text)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{w}/out/predictions.json") as f:
        assert len(json.load(f)) == 25  # the questions of squad_v1.json


# --- Configs: missing keys take a named default, unknown keys are warned about ----------------

def test_config_missing_key_warns_with_the_default(tmp_path, caplog):
    import modeling
    path = tmp_path / "bert_config.json"
    config = dict(PRETRAINING_CONFIG, bogus_key=1)
    del config["hidden_size"]
    path.write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        loaded = modeling.BertConfig.from_json_file(str(path))
    assert loaded.hidden_size == 768
    assert "has no hidden_size: using the original's default hidden_size = 768" in caplog.text
    assert "unknown key bogus_key" in caplog.text


# --- The shared pieces, in-process ------------------------------------------------------------

def test_atomic_output_keeps_the_old_file_on_error_and_never_shares_a_temp_name(tmp_path):
    path = str(tmp_path / "out.txt")
    _write(path, "old")
    with pytest.raises(RuntimeError):
        with cli.atomic_output(path) as temp:
            _write(temp, "half")
            raise RuntimeError("disk full")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with cli.atomic_output(path) as first, cli.atomic_output(path) as second:
        assert first != second
        _write(first, "1")
        _write(second, "2")
    assert open(path).read() in ("1", "2") and os.listdir(tmp_path) == ["out.txt"]


def test_stale_temp_names_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = str(tmp_path)
    _write(f"{d}/eval_results.txt.tmp-{dead.pid}-0123abcd", "half")
    _write(f"{d}/train.tf_record.tmp-{dead.pid}", "half")
    os.makedirs(f"{d}/model.ckpt-3_temp_{dead.pid}_{'a' * 32}")
    os.makedirs(f"{d}/best")
    _write(f"{d}/best/checkpoint.tmp-{dead.pid}-0123abcd", "half")
    _write(f"{d}/live.txt.tmp-{os.getpid()}-0123abcd", "being written")
    _write(f"{d}/eval_results.txt", "kept")
    removed = cli.remove_stale_temp_files(d)
    assert len(removed) == 4
    assert sorted(os.listdir(d)) == ["best", "eval_results.txt", f"live.txt.tmp-{os.getpid()}-0123abcd"]
    assert os.listdir(f"{d}/best") == []


def test_input_globs_never_match_temporary_names(tmp_path):
    _write(str(tmp_path / "a.tfrecord"), "")
    _write(str(tmp_path / f"b.tfrecord.tmp-{os.getpid()}-0123abcd"), "")
    os.makedirs(str(tmp_path / f"model.ckpt-1_temp_{'b' * 32}"))
    assert cli.expand_input_files(str(tmp_path / "*")) == [str(tmp_path / "a.tfrecord")]


def test_non_finite_weights_are_never_checkpointed():
    import keras
    import numpy as np

    import training
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    training.check_finite_weights(layer, 1)
    layer.kernel.assign(np.full((3, 2), np.inf, np.float32))
    with pytest.raises(ValueError, match="NaN or infinite after step 7"):
        training.check_finite_weights(layer, 7)


# --- A full disk (a small tmpfs; needs root) --------------------------------------------------

@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MiB tmpfs, filled up by `fill()` after the earlier outputs are in place."""
    mount = str(tmp_path / "full")
    os.makedirs(mount)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def fill():
        with contextlib.suppress(OSError), open(os.path.join(mount, "filler"), "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    try:
        yield mount, fill
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


@pytest.mark.parametrize("script, output_flag, fragment", [
    ("build_vocab.py", "output_file", "No space left on device"),
    ("create_pretraining_data.py", "output_file", "No space left"),
    ("extract_features.py", "output_file", "No space left"),
    ("convert_checkpoint.py", "output_dir", "No space left on device"),
    ("run_classifier.py", "output_dir", "No space left"),
])
def test_full_disk_fails_in_one_line_and_keeps_the_earlier_output(tmp_path, full_disk, script, output_flag,
                                                                   fragment):
    mount, fill = full_disk
    w = str(tmp_path / "w")
    os.makedirs(w)
    flags = SETUPS[script](w)
    name = os.path.basename(flags[output_flag]) if output_flag == "output_file" else "out"
    target = os.path.join(mount, name)
    if output_flag == "output_file":
        _write(target, "an earlier good output\n")
    else:
        os.makedirs(target)
        # The converter replaces only an earlier output of its own (config.json: Hugging Face's).
        earlier = "config.json" if script == "convert_checkpoint.py" else "earlier.txt"
        _write(os.path.join(target, earlier), "an earlier good output\n")
    flags[output_flag] = target
    fill()
    before = snapshot(mount)
    result = run(script, flags)
    assert_one_line_error(result, script, fragment)
    after = snapshot(mount)
    assert {path: after.get(path) for path in before} == before
    assert temp_names(mount) == []


# --- Killed at a random moment, then run again -------------------------------------------------

def tfrecord_lengths(path):
    """The length of every record of a TFRecord file, from its framing (length, crc, data, crc)."""
    lengths = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        lengths.append(length)
        offset += 16 + length
    assert offset == len(data)
    return lengths


def _kill_at_random(script, flags, low, high, env=None):
    process = start(script, flags, subprocess.DEVNULL, env)
    time.sleep(random.uniform(low, high))
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    _, err = process.communicate(timeout=60)  # EOF only once every worker holding stderr has gone
    return process.returncode, err.decode("utf-8", "replace")


@pytest.mark.parametrize("attempt", range(2))
def test_killed_create_pretraining_data_workers_leave_nothing(tmp_path, attempt):
    w = str(tmp_path)
    spill_dir = str(tmp_path / "spill")
    os.makedirs(spill_dir)
    flags = dict(setup_create_pretraining_data(w), num_workers=2, dupe_factor=8)
    returncode, err = _kill_at_random("create_pretraining_data.py", flags, 0.5, 3.0, env={"TMPDIR": spill_dir})
    assert "Traceback" not in err and "BrokenPipeError" not in err
    records = f"{w}/out/records.tfrecord"
    if returncode != 0:  # killed: the earlier file, or (killed after the rename) the whole new one
        with open(records, "rb") as f:
            assert f.read() == b"an earlier good output\n" or len(tfrecord_lengths(records)) > 100
    rerun = run("create_pretraining_data.py", flags, env={"TMPDIR": spill_dir})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    lengths = tfrecord_lengths(records)
    assert len(lengths) > 100 and min(lengths) > 100  # whole examples, not the empty records of a lost spill
    assert temp_names(w) == [] and os.listdir(spill_dir) == []  # the killed run's spills are gone too


def test_killed_classifier_training_resumes_and_leaves_no_temporary_file(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_classifier(w), do_train="true", train_batch_size=4, num_train_epochs=6,
                 save_checkpoints_steps=2, log_steps=1, seed=3)
    returncode, _ = _kill_at_random("run_classifier.py", flags, 4.0, 9.0)
    # What a killed save would have left: the next run in output_dir removes it.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.makedirs(f"{w}/out/model.ckpt-99_temp_{dead.pid}_{'c' * 32}")
    _write(f"{w}/out/eval_results.txt.tmp-{dead.pid}-0123abcd", "half")
    rerun = run("run_classifier.py", flags)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert temp_names(w) == []
    with open(f"{w}/out/checkpoint") as f:
        assert 'model_checkpoint_path: "model.ckpt-36"' in f.read()  # 24 examples / 4 * 6 epochs
    assert os.path.exists(f"{w}/out/model.ckpt-36.index")


# --- Two runs on one output_dir ---------------------------------------------------------------

def test_second_run_on_a_busy_output_dir_is_refused(tmp_path):
    w = str(tmp_path)
    flags = setup_run_classifier(w)
    fd = os.open(f"{w}/out", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a first run holds it
        before = snapshot(w)
        result = run("run_classifier.py", flags)
        assert_failed_cleanly(result, "run_classifier.py", "is in use by another run", w, before)
    finally:
        os.close(fd)


def test_a_killed_run_does_not_leave_its_output_dir_locked(tmp_path):
    w = str(tmp_path)
    flags = setup_run_squad(w)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, training; training.ensure_output_dir(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(120)", f"{w}/out"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        busy = run("run_squad.py", flags)
        assert_one_line_error(busy, "run_squad.py", "is in use by another run")
    finally:
        holder.kill()
        holder.wait()
    result = run("run_squad.py", flags)
    assert result.returncode == 0, result.stderr[-3000:]


# --- Numbers that must never be saved ---------------------------------------------------------

def test_an_overflowing_update_is_not_checkpointed(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_classifier(w), do_train="true", do_eval=None, train_batch_size=4,
                 num_train_epochs=1, learning_rate=1e39, save_checkpoints_steps=1, seed=3)
    result = run("run_classifier.py", flags)
    assert_one_line_error(result, "run_classifier.py", "training diverged")
    assert not [name for name in os.listdir(f"{w}/out") if name.startswith(("model.ckpt", "checkpoint"))]
    assert temp_names(w) == []


# --- --export_dir replaces an earlier export, and only that --------------------------------------

def test_export_dir_replaces_only_an_earlier_export(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_classifier(w), export_dir=f"{w}/export")
    os.makedirs(f"{w}/export/variables")
    _write(f"{w}/export/saved_model.pb", "an earlier export")
    _write(f"{w}/export/variables/variables.index", "of an earlier export")
    result = run("run_classifier.py", flags)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{w}/export/saved_model.pb", "rb") as f:
        assert len(f.read()) > 1000  # the new SavedModel, whole
    assert sorted(os.listdir(f"{w}/export")) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert temp_names(w) == []


# --- TensorFlow's start-up notices are filtered, a real import failure still shows --------------

def test_tensorflow_startup_notices_are_filtered():
    result = subprocess.run([sys.executable, "-c", "import cli; cli.import_tensorflow(); print('ok')"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "ok\n"
    assert "absl::InitializeLog" not in result.stderr and "cudart_stub" not in result.stderr, result.stderr


def test_a_real_tensorflow_import_failure_still_shows():
    code = ("import builtins, os, cli\n"
            "real = builtins.__import__\n"
            "def broken(name, *args, **kwargs):\n"
            "    if name == 'tensorflow':\n"
            "        os.write(2, b'libtensorflow_framework.so.2: cannot open shared object file\\n')\n"
            "        raise ImportError('libtensorflow_framework.so.2 missing')\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = broken\n"
            "cli.import_tensorflow()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("libtensorflow_framework.so.2: cannot open shared object file\n")
    assert result.stderr.strip().endswith("ImportError: libtensorflow_framework.so.2 missing")


# --- A malformed TF_CONFIG names TF_CONFIG ------------------------------------------------------

@pytest.mark.parametrize("tf_config, fragment", [
    ("{oops", "TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes"),
    ('["worker"]', "TF_CONFIG must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG has no "cluster"'),
    ('{"cluster": {"worker": ["localhost:1"]}}', 'TF_CONFIG has no "task"'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 1}}',
     "TF_CONFIG: task index 1 is out of range: the cluster has 1 \"worker\" task(s)"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}',
     'TF_CONFIG: task type "chief" is not in the cluster'),
    ('{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}',
     'cluster "worker" must be a list'),
])
def test_malformed_tf_config_is_one_line_naming_it(tmp_path, tf_config, fragment):
    w = str(tmp_path)
    flags = dict(setup_run_pretraining(w), distribution_strategy="multi_worker_mirrored")
    before = snapshot(w)
    result = run("run_pretraining.py", flags, env={"TF_CONFIG": tf_config})
    assert_failed_cleanly(result, "run_pretraining.py", fragment, w, before)


# --- A TFRecord cut inside a record header is not read as complete ------------------------------

def _record_offsets(path):
    """Byte offset of every record of a whole TFRecord file, and its size last."""
    with open(path, "rb") as f:
        data = f.read()
    offsets = [0]
    while offsets[-1] < len(data):
        offsets.append(offsets[-1] + 16 + struct.unpack_from("<Q", data, offsets[-1])[0])
    return offsets


@pytest.mark.parametrize("into_record, do_train", [(4, "true"), (12, None), (100, "true")])
def test_tfrecord_cut_inside_a_record_fails_naming_file_and_bytes(tmp_path, into_record, do_train):
    w = str(tmp_path)
    flags = dict(setup_run_pretraining(w), do_train=do_train)
    path = f"{w}/data/records.tfrecord"
    cut = _record_offsets(path)[27] + into_record  # 4 or 12: inside the 12-byte header of record 28
    os.truncate(path, cut)
    before = snapshot(w)
    result = run("run_pretraining.py", flags)
    assert_failed_cleanly(result, "run_pretraining.py", f"{path} is truncated: {cut:,} bytes, of which the last "
                          f"{into_record} are a record cut short", w, before)


def test_tfrecord_end_check_reads_only_the_tail_of_a_whole_file(tmp_path):
    import input_pipeline
    source = os.path.join(GOLDEN, "pretraining_plain_0.tfrecord")
    with open(source, "rb") as f:
        data = f.read()
    path = str(tmp_path / "big.tfrecord")
    with open(path, "wb") as f:
        f.write(data * 100)  # 12 MB
    started = time.monotonic()
    assert input_pipeline.tfrecord_end_problem(path) is None
    assert time.monotonic() - started < 0.5
    os.truncate(path, len(data) * 100 - 3)
    assert "is truncated" in input_pipeline.tfrecord_end_problem(path)
    with open(path, "r+b") as f:  # a damaged length in the first header
        f.write(b"\xff")
    assert "the record header at byte 0 of" in input_pipeline.tfrecord_end_problem(path)


def test_squad_rebuilds_a_cut_cached_train_tf_record(tmp_path, caplog):
    import run_squad
    import tokenization
    tokenizer = tokenization.FullTokenizer(os.path.join(GOLDEN, "squad_vocab.txt"), do_lower_case=True)
    args = (os.path.join(GOLDEN, "squad_v1.json"), os.path.join(GOLDEN, "squad_vocab.txt"), tokenizer, str(tmp_path),
            64, 16, 12, False, True)
    counts = run_squad.prepare_training_features(*args)
    with open(counts["path"], "rb") as f:
        whole = f.read()
    os.truncate(counts["path"], _record_offsets(counts["path"])[3] + 4)
    with caplog.at_level("WARNING"):
        again = run_squad.prepare_training_features(*args)
    assert again == counts and "Not reusing" in caplog.text and "is truncated" in caplog.text
    with open(counts["path"], "rb") as f:
        assert f.read() == whole


# --- A run that fails leaves no directory or events file behind ---------------------------------

def test_run_pretraining_failing_on_a_corrupt_record_creates_nothing(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_pretraining(w), do_train="true", do_eval=None, output_dir=f"{w}/new/out", log_steps=1)
    path = f"{w}/data/records.tfrecord"
    with open(path, "r+b") as f:  # one byte of record 3's data: whole framing, a wrong data CRC
        f.seek(_record_offsets(path)[2] + 12 + 50)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = snapshot(w)
    result = run("run_pretraining.py", flags)
    assert_failed_cleanly(result, "run_pretraining.py", f"{path}: the record at byte {_record_offsets(path)[2]:,} "
                          f"fails its checksum", w, before)
    assert not os.path.exists(f"{w}/new")  # neither output_dir nor the parent it made


# --- Killed between a checkpoint's files and the `checkpoint` state file ------------------------

def test_a_whole_checkpoint_the_state_file_does_not_name_yet_is_resumed(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_pretraining(w), do_train="true", do_eval=None, num_train_steps=4,
                 save_checkpoints_steps=2, seed=3)
    first = run("run_pretraining.py", flags)
    assert first.returncode == 0, first.stderr[-3000:]
    # What a kill after model.ckpt-4's files, before the state file, leaves.
    _write(f"{w}/out/checkpoint", 'model_checkpoint_path: "model.ckpt-2"\nall_model_checkpoint_paths: "model.ckpt-2"\n')
    rerun = run("run_pretraining.py", dict(flags, num_train_steps=6))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "does not name it yet" in rerun.stderr and f"Resuming from {w}/out/model.ckpt-4" in rerun.stderr
    assert "Input position restored from" in rerun.stderr
    with open(f"{w}/out/checkpoint") as f:
        assert f.readline() == 'model_checkpoint_path: "model.ckpt-6"\n'


def test_an_unnamed_checkpoint_without_every_workers_position_is_not_resumed(tmp_path):
    import training
    out = str(tmp_path)
    for step in (2, 4):
        _copy_checkpoint(os.path.join(GOLDEN, "classifier_tiny.ckpt"), f"{out}/model.ckpt-{step}")
    os.makedirs(f"{out}/input_position")
    for name in ("model.ckpt-2.input-0-of-2", "model.ckpt-2.input-1-of-2", "model.ckpt-4.input-0-of-2"):
        _write(f"{out}/input_position/{name}.index", "")
    training.write_checkpoint_state(out, [f"{out}/model.ckpt-2"])
    assert training.latest_training_checkpoint(out) == f"{out}/model.ckpt-2"  # worker 1's position is missing
    _write(f"{out}/input_position/model.ckpt-4.input-1-of-2.index", "")
    assert training.latest_training_checkpoint(out) == f"{out}/model.ckpt-4"
    _truncate(f"{out}/model.ckpt-4.data-00000-of-00001")  # not whole: the named one
    assert training.latest_training_checkpoint(out) == f"{out}/model.ckpt-2"
    os.remove(f"{out}/checkpoint")  # killed before the first state file: the newest whole one
    assert training.latest_training_checkpoint(out) == f"{out}/model.ckpt-2"


# --- An empty request to an exported model gives empty outputs of the right shapes -------------

EMPTY_REQUESTS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
classifier, encoder_dir = sys.argv[1:]
shapes = {}
served = tf.saved_model.load(classifier).signatures["serving_default"]
shapes.update({f"classifier/{k}": v.shape.as_list() for k, v in served(text_a=tf.constant([], tf.string),
                                                                       text_b=tf.constant([], tf.string)).items()})
preprocess = tf.saved_model.load(encoder_dir + "/preprocess")
encoder = tf.saved_model.load(encoder_dir + "/encoder")
inputs = preprocess(tf.constant([], tf.string))
shapes.update({f"preprocess/{k}": v.shape.as_list() for k, v in inputs.items()})
outputs = encoder(inputs)
shapes["encoder/pooled_output"] = outputs["pooled_output"].shape.as_list()
shapes["encoder/sequence_output"] = outputs["sequence_output"].shape.as_list()
print(json.dumps(shapes))
"""


def test_exported_models_answer_an_empty_request_with_empty_outputs(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_run_classifier(w), export_dir=f"{w}/classifier")
    exported = run("run_classifier.py", flags)
    assert exported.returncode == 0, exported.stderr[-3000:]
    encoder = run("export_encoder.py", dict(
        bert_config_file=os.path.join(GOLDEN, "extract_tiny_config.json"), vocab_file=os.path.join(
            GOLDEN, "extract_tiny_vocab.txt"), init_checkpoint=os.path.join(GOLDEN, "extract_tiny.ckpt"),
        export_dir=f"{w}/encoder", max_seq_length=16))
    assert encoder.returncode == 0, encoder.stderr[-3000:]
    served = subprocess.run([helpers.python(), "-c", EMPTY_REQUESTS, f"{w}/classifier", f"{w}/encoder"],
                            capture_output=True, text=True, timeout=240)
    assert served.returncode == 0, served.stderr[-3000:]
    assert json.loads(served.stdout.strip().splitlines()[-1]) == {
        "classifier/probabilities": [0, 2],
        "preprocess/input_word_ids": [0, 16], "preprocess/input_mask": [0, 16], "preprocess/input_type_ids": [0, 16],
        "encoder/pooled_output": [0, 16], "encoder/sequence_output": [0, 16, 16]}


# --- An output being written has no name until it is whole --------------------------------------

def test_create_pretraining_data_output_has_no_name_while_written_or_after_a_kill(tmp_path):
    w = str(tmp_path)
    flags = dict(setup_create_pretraining_data(w), num_workers=2, dupe_factor=8,
                 output_file=f"{w}/out/a.tfrecord,{w}/out/b.tfrecord")
    os.remove(f"{w}/out/records.tfrecord")
    process = start("create_pretraining_data.py", flags, subprocess.DEVNULL, {"TMPDIR": w})
    seen = set()
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        seen.update(os.listdir(f"{w}/out"))
        if seen:  # the outputs are named: the run is done with them
            break
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    seen.update(os.listdir(f"{w}/out"))
    assert seen <= {"a.tfrecord", "b.tfrecord"}, seen
    if seen:
        assert {len(tfrecord_lengths(f"{w}/out/{name}")) > 50 for name in seen} == {True}


def test_atomic_output_writes_an_unnamed_file_and_names_it_whole(tmp_path):
    path = str(tmp_path / "out.txt")
    with cli.atomic_output(path) as temp:
        _write(temp, "new")
        assert os.listdir(tmp_path) == []  # written, but under no name
    assert open(path).read() == "new" and os.listdir(tmp_path) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# --- The converter writes only into an empty directory or over an earlier output of its format --

@pytest.mark.parametrize("output_format", ["original", "huggingface", "keras_hub"])
def test_converter_refuses_a_directory_of_other_files(tmp_path, output_format):
    w = str(tmp_path)
    flags = dict(setup_convert_checkpoint(w), output_format=output_format)
    _write(f"{w}/out/notes.txt", "mine")
    before = snapshot(w)
    result = run("convert_checkpoint.py", flags)
    assert_failed_cleanly(result, "convert_checkpoint.py", f"--output_dir={w}/out is a directory of other files",
                          w, before)


@pytest.mark.parametrize("output_format", ["original", "huggingface", "keras_hub"])
def test_converter_replaces_an_earlier_output_of_its_format_whole(tmp_path, output_format):
    w = str(tmp_path)
    flags = dict(setup_convert_checkpoint(w), output_format=output_format, output_dir=f"{w}/converted")
    first = run("convert_checkpoint.py", flags)
    assert first.returncode == 0, first.stderr[-3000:]
    written = snapshot(f"{w}/converted")
    assert written and f"{w}/converted" in first.stderr and ".tmp-" not in first.stderr
    again = run("convert_checkpoint.py", flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(f"{w}/converted") == written and temp_names(w) == []
    other = "keras_hub" if output_format != "keras_hub" else "huggingface"
    before = snapshot(w)
    refused = run("convert_checkpoint.py", dict(flags, output_format=other))  # another format's output
    assert_failed_cleanly(refused, "convert_checkpoint.py", "is a directory of other files", w, before)


# --- best/ : its results and its weights always belong together ----------------------------------

def test_best_checkpoint_killed_before_its_state_file_is_repaired_on_resume(tmp_path):
    import run_classifier
    import training
    best = str(tmp_path / "best")
    for step in (2, 4):
        _copy_checkpoint(os.path.join(GOLDEN, "classifier_tiny.ckpt"), f"{best}/model.ckpt-{step}")
    # A kill after the new best's checkpoint and eval_results.txt, before the state file.
    training.write_checkpoint_state(best, [f"{best}/model.ckpt-2"])
    _write(f"{best}/eval_results.txt", "eval_accuracy = 0.75\nglobal_step = 4\n")
    kept = run_classifier._BestCheckpoint(best, "eval_accuracy")
    assert (kept.step, kept.value, kept.prefix) == (4, 0.75, f"{best}/model.ckpt-4")
    assert open(f"{best}/checkpoint").readline() == 'model_checkpoint_path: "model.ckpt-4"\n'
    assert sorted(os.listdir(best)) == ["checkpoint", "eval_results.txt", "model.ckpt-4.data-00000-of-00001",
                                        "model.ckpt-4.index"]
    # A kill after the new best's checkpoint only: the earlier best stays the best.
    _copy_checkpoint(os.path.join(GOLDEN, "classifier_tiny.ckpt"), f"{best}/model.ckpt-6")
    kept = run_classifier._BestCheckpoint(best, "eval_accuracy")
    assert (kept.step, kept.prefix) == (4, f"{best}/model.ckpt-4")
    assert not os.path.exists(f"{best}/model.ckpt-6.index")
