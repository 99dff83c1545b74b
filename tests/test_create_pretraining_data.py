"""create_pretraining_data.py: the original's examples, feature for feature, and clean failures."""

import os
import random

import pytest
import tensorflow as tf

import create_pretraining_data as cpd

from tests import helpers
from tests.golden import make_pretraining_data_golden as golden

GOLDEN_DIR = os.path.dirname(golden.__file__)
GOLDEN_INPUTS = [os.path.join(GOLDEN_DIR, name) for name in golden.INPUTS]


def read_examples(path):
    return [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]


def run_ours(tmp_path, input_files, name="out", outputs=1, **kwargs):
    output_files = [str(tmp_path / f"{name}_{k}.tfrecord") for k in range(outputs)]
    total = cpd.create_pretraining_data(input_files, output_files, helpers.real_vocab_file(), **kwargs)
    return total, output_files


@pytest.mark.parametrize("scenario", sorted(golden.SCENARIOS))
def test_same_examples_as_the_original(tmp_path, scenario):
    settings = dict(golden.SCENARIOS[scenario])
    outputs = settings.pop("outputs")
    total, output_files = run_ours(tmp_path, GOLDEN_INPUTS, outputs=outputs,
                                   do_whole_word_mask=(scenario == "wwm"), **settings)
    expected_total = 0
    for k, path in enumerate(output_files):
        expected = read_examples(os.path.join(GOLDEN_DIR, f"pretraining_{scenario}_{k}.tfrecord"))
        ours = read_examples(path)
        assert len(ours) == len(expected)
        for index, (a, b) in enumerate(zip(ours, expected)):
            assert a == b, f"{scenario} file {k} record {index} differs"
        expected_total += len(expected)
    assert total == expected_total > 100


def test_features_have_the_original_schema(tmp_path):
    _, (path,) = run_ours(tmp_path, GOLDEN_INPUTS[:1], dupe_factor=1, max_seq_length=64, max_predictions_per_seq=7)
    spec = {
        "input_ids": tf.io.FixedLenFeature([64], tf.int64),
        "input_mask": tf.io.FixedLenFeature([64], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([64], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([7], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([7], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([7], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }
    vocab = cpd.tokenization.load_vocab(helpers.real_vocab_file())
    for record in tf.data.TFRecordDataset(path):
        f = {k: v.numpy().tolist() for k, v in tf.io.parse_single_example(record, spec).items()}
        length = sum(f["input_mask"])
        assert f["input_ids"][0] == vocab["[CLS]"]
        assert f["input_ids"][length - 1] == vocab["[SEP]"]
        assert f["input_ids"][length:] == [0] * (64 - length)
        first_b = f["segment_ids"].index(1)
        assert f["input_ids"][first_b - 1] == vocab["[SEP]"]
        assert f["segment_ids"][first_b:length] == [1] * (length - first_b)
        n = int(sum(f["masked_lm_weights"]))
        positions = f["masked_lm_positions"][:n]
        assert positions == sorted(positions) and len(set(positions)) == n
        assert f["masked_lm_weights"] == [1.0] * n + [0.0] * (7 - n)
        assert f["next_sentence_labels"][0] in (0, 1)


def test_invalid_utf8_bytes_are_dropped_with_a_warning(tmp_path):
    clean = tmp_path / "clean.txt"
    dirty = tmp_path / "dirty.txt"
    clean.write_bytes(b"Caf\xc3\xa9 au lait costs 3 euros.\nIt was warm.\n\nA second document.\nWith two lines.\n")
    dirty.write_bytes(b"Caf\xc3\xa9 au lait \xffcosts 3 euros.\nIt was warm.\n\n"
                      b"A second document.\nWith two \xfelines.\n")
    _, (clean_out,) = run_ours(tmp_path, [str(clean)], name="clean", dupe_factor=3)
    _, (dirty_out,) = run_ours(tmp_path, [str(dirty)], name="dirty", dupe_factor=3)
    assert read_examples(clean_out) == read_examples(dirty_out)


def test_documents_continue_across_files_without_a_trailing_blank_line():
    tokenizer = cpd.tokenization.FullTokenizer(helpers.real_vocab_file())
    documents = cpd.read_documents(GOLDEN_INPUTS, tokenizer)
    # 20 documents per file, but file 1 does not end with a blank line: its last
    # document runs on into the first one of file 2.
    assert len(documents) == 39


def test_masked_count_uses_python3_rounding():
    vocab = cpd.PretrainingVocab(cpd.tokenization.load_vocab(helpers.real_vocab_file()))
    tokens = [vocab.cls_id] + [2000 + i for i in range(27)] + [vocab.sep_id, vocab.sep_id]  # 30 tokens
    _, positions, labels = cpd.create_masked_lm_predictions_with_vocab(tokens, 0.15, 20, vocab, random.Random(3))
    assert len(positions) == 4  # round(4.5) == 4 in Python 3
    assert labels == [tokens[p] for p in positions]


def test_whole_word_masking_keeps_pieces_together():
    vocab_tokens = cpd.tokenization.load_vocab(helpers.real_vocab_file())
    vocab = cpd.PretrainingVocab(vocab_tokens)
    words = [["una", "##ffa", "##ble"], ["jim"], ["henson"], ["token", "##izer"], ["hello"]] * 4
    tokens = [vocab.cls_id] + [vocab_tokens[p] for word in words for p in word] + [vocab.sep_id]
    for seed in range(20):
        _, positions, _ = cpd.create_masked_lm_predictions_with_vocab(tokens, 0.3, 20, vocab, random.Random(seed), True)
        masked = set(positions)
        start = 1
        for word in words:
            span = set(range(start, start + len(word)))
            assert span <= masked or not span & masked, f"seed {seed}: word {word} partly masked"
            start += len(word)


def test_truncate_seq_pair_trims_the_longer_side():
    a, b = list(range(10)), list(range(100, 104))
    cpd.truncate_seq_pair(a, b, 8, random.Random(0))
    assert len(a) + len(b) == 8 and b == list(range(100, 104))
    a, b = [1, 2], [3, 4]
    cpd.truncate_seq_pair(a, b, 3, random.Random(0))
    assert a == [1, 2] and len(b) == 1  # ties trim B


def test_hand_written_encoder_matches_protobuf():
    encoder = cpd.ExampleEncoder(max_seq_length=8, max_predictions_per_seq=3, vocab_size=40000)
    instance = cpd.InstanceIds([101, 103, 7592, 102, 30000, 102], [0, 0, 0, 0, 1, 1], True, [1, 4], [2088, 2])
    parsed = tf.train.Example.FromString(encoder.encode(instance))
    expected = tf.train.Example()
    for name, values in encoder.features(instance).items():
        feature = expected.features.feature[name]
        if name == "masked_lm_weights":
            feature.float_list.value.extend(values)
        else:
            feature.int64_list.value.extend(values)
    assert parsed == expected
    assert list(parsed.features.feature["input_ids"].int64_list.value) == [101, 103, 7592, 102, 30000, 102, 0, 0]
    assert list(parsed.features.feature["masked_lm_weights"].float_list.value) == [1.0, 1.0, 0.0]


def test_workers_are_reproducible_and_cover_every_document(tmp_path):
    settings = dict(dupe_factor=2, max_seq_length=64, max_predictions_per_seq=10, num_workers=2)
    total_1, (out_1,) = run_ours(tmp_path, GOLDEN_INPUTS, name="w1", **settings)
    total_2, (out_2,) = run_ours(tmp_path, GOLDEN_INPUTS, name="w2", **settings)
    examples = read_examples(out_1)
    assert examples == read_examples(out_2)
    # Whole examples (an earlier bug wrote one empty record per instance from the workers).
    assert len(examples) == total_1 and all(
        len(e.features.feature["input_ids"].int64_list.value) == 64 for e in examples)
    single, _ = run_ours(tmp_path, GOLDEN_INPUTS, name="single", **dict(settings, num_workers=1))
    # Another random stream, but about as many instances from the same documents.
    assert abs(total_1 - single) <= 0.2 * single


@pytest.mark.parametrize("case", ["no_match", "empty_input", "bad_vocab", "tiny_seq"])
def test_user_errors_are_one_line_and_leave_no_output(tmp_path, case):
    vocab = helpers.real_vocab_file()
    text = tmp_path / "in.txt"
    text.write_text("One sentence.\nAnother one.\n")
    output = tmp_path / "out.tfrecord"
    args = {"input_file": str(text), "output_file": str(output), "vocab_file": vocab}
    expected = {
        "no_match": "no file matches",
        "empty_input": "hold no text",
        "bad_vocab": "lacks [MASK]",
        "tiny_seq": "--max_seq_length=4 is too small",
    }[case]
    if case == "no_match":
        args["input_file"] = str(tmp_path / "missing*.txt")
    elif case == "empty_input":
        text.write_text("\n\n  \n")
    elif case == "bad_vocab":
        args["vocab_file"] = helpers.write_vocab(tmp_path / "v.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "one"])
    elif case == "tiny_seq":
        args["max_seq_length"] = "4"
    result = helpers.run_script("create_pretraining_data.py", *[f"--{k}={v}" for k, v in args.items()])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("create_pretraining_data.py: error: ")
    assert expected in result.stderr.strip().splitlines()[-1]
    assert sorted(os.listdir(tmp_path)) == ["in.txt"] + (["v.txt"] if case == "bad_vocab" else [])


def test_inlined_shuffle_draws_what_random_shuffle_draws():
    for length in list(range(0, 70)) + [127, 128, 129, 511, 1000]:
        a, b = random.Random(length), random.Random(length)
        x, y = list(range(length)), list(range(length))
        a.shuffle(x)
        cpd.shuffle(b, y)
        assert x == y and a.random() == b.random(), length


def test_shards_balance_token_counts_and_cover_every_document():
    documents = [[[0] * size] for size in (100, 1, 1, 1, 50, 50, 2, 3)]
    shards = cpd.balance_shards(documents, 2)
    assert sorted(i for shard in shards for i in shard) == list(range(len(documents)))
    loads = [sum(len(documents[i][0]) for i in shard) for shard in shards]
    assert max(loads) - min(loads) <= 2
    assert all(shard == sorted(shard) for shard in shards)
