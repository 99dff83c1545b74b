"""Code written against the original's Python API runs here: its names, signatures and results.

Each case states what a program written for google-research/bert calls and what the original
returned for it (values produced by the original code: tests/golden/make_original_api_golden.py).
"""

import os

import pytest

from tests import helpers

# The vocab of the original's own tokenizer test: no [MASK], no [PAD].
ORIGINAL_TEST_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]


# --- tokenization: the cases of the original's tokenization_test.py ----------------------------

def test_bert_package_gives_the_flat_modules():
    import tokenization
    from bert import tokenization as via_package
    import bert.tokenization
    assert via_package is tokenization and bert.tokenization is tokenization


def test_full_tokenizer_on_the_original_test_vocab(tmp_path):
    from bert import tokenization
    tokenizer = tokenization.FullTokenizer(helpers.write_vocab(tmp_path / "v.txt", ORIGINAL_TEST_VOCAB))
    tokens = tokenizer.tokenize("UNwant\u00E9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [7, 4, 5, 10, 8, 9]


def test_basic_tokenizer_cases_of_the_original_test():
    from bert import tokenization
    assert tokenization.BasicTokenizer().tokenize("ah\u535A\u63A8zz") == ["ah", "\u535A", "\u63A8", "zz"]
    lower = tokenization.BasicTokenizer(do_lower_case=True)
    assert lower.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert lower.tokenize("H\u00E9llo") == ["hello"]
    cased = tokenization.BasicTokenizer(do_lower_case=False)
    assert cased.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]


def test_wordpiece_and_ids_cases_of_the_original_test():
    from bert import tokenization
    vocab = {token: i for i, token in enumerate(ORIGINAL_TEST_VOCAB[:10])}
    tokenizer = tokenization.WordpieceTokenizer(vocab=vocab)
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tokenizer.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert tokenization.convert_tokens_to_ids(vocab, ["un", "##want", "##ed", "runn", "##ing"]) == [7, 4, 5, 8, 9]


@pytest.mark.parametrize("char, whitespace, control, punctuation", [
    (" ", True, False, False), ("\t", True, False, False), ("\r", True, False, False),
    ("\n", True, False, False), ("\u00A0", True, False, False), ("A", False, False, False),
    ("-", False, False, True), ("\u0005", False, True, False), ("\U0001F4A9", False, False, False),
    ("$", False, False, True), ("`", False, False, True), (".", False, False, True),
])
def test_character_classes_of_the_original_test(char, whitespace, control, punctuation):
    from bert import tokenization
    assert tokenization._is_whitespace(char) == whitespace
    assert tokenization._is_control(char) == control
    assert tokenization._is_punctuation(char) == punctuation


# --- create_pretraining_data: the original's functions on token strings ------------------------

@pytest.mark.parametrize("scenario", ["plain", "short_cased", "wwm"])
def test_create_training_instances_and_writer_give_the_original_records(tmp_path, scenario):
    import random
    import tensorflow as tf
    from bert import create_pretraining_data, tokenization
    from tests.golden import make_pretraining_data_golden as golden
    s = golden.SCENARIOS[scenario]
    here = os.path.dirname(golden.__file__)
    tokenizer = tokenization.FullTokenizer(helpers.real_vocab_file(), do_lower_case=s["do_lower_case"])
    instances = create_pretraining_data.create_training_instances(
        [os.path.join(here, name) for name in golden.INPUTS], tokenizer, s["max_seq_length"], s["dupe_factor"],
        s["short_seq_prob"], s["masked_lm_prob"], s["max_predictions_per_seq"], random.Random(s["random_seed"]),
        **({"do_whole_word_mask": True} if scenario == "wwm" else {}))
    assert isinstance(instances[0], create_pretraining_data.TrainingInstance)
    assert instances[0].tokens[0] == "[CLS]" and str(instances[0]).startswith("tokens: [CLS] ")
    outputs = [str(tmp_path / f"out_{k}.tfrecord") for k in range(s["outputs"])]
    create_pretraining_data.write_instance_to_example_files(
        instances, tokenizer, s["max_seq_length"], s["max_predictions_per_seq"], outputs)
    total = 0
    for k, path in enumerate(outputs):
        ours = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        expected = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(here, f"pretraining_{scenario}_{k}.tfrecord"))]
        assert [tf.train.Example.FromString(r) for r in ours] == [tf.train.Example.FromString(r) for r in expected]
        total += len(ours)
    assert total == len(instances) > 100
