"""Code written against the original's Python API runs here: its names, signatures and results.

Each case states what a program written for google-research/bert calls and what the original
returned for it (values produced by the original code: tests/golden/make_original_api_golden.py).
"""

import os

import numpy as np
import pytest

import porting

from tests import helpers

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")

# The vocab of the original's own tokenizer test: no [MASK], no [PAD].
ORIGINAL_TEST_VOCAB = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","]


# --- tokenization: the cases of the original's tokenization_test.py ----------------------------

def test_bert_package_gives_the_flat_modules():
    from bert import tokenization as via_package
    import bert.tokenization
    import tokenization
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
        golden_path = os.path.join(here, f"pretraining_{scenario}_{k}.tfrecord")
        expected = [r.numpy() for r in tf.data.TFRecordDataset(golden_path)]
        assert [tf.train.Example.FromString(r) for r in ours] == [tf.train.Example.FromString(r) for r in expected]
        total += len(ours)
    assert total == len(instances) > 100


# --- Answers of the original code to its own API (tests/golden/make_original_api_golden.py) ----

@pytest.fixture(scope="module")
def golden():
    import json
    with open(os.path.join(GOLDEN_DIR, "original_api_golden.json"), encoding="utf-8") as f:
        answers = json.load(f)
    arrays = dict(np.load(os.path.join(GOLDEN_DIR, "original_api_golden.npz")))
    return answers, arrays


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from bert import tokenization
    return tokenization.FullTokenizer(os.path.join(GOLDEN_DIR, "extract_tiny_vocab.txt"), do_lower_case=True)


def test_create_masked_lm_predictions_on_token_strings(golden, tiny_tokenizer):
    import random

    from bert import create_pretraining_data

    from tests.golden import make_original_api_golden as source
    vocab_words = list(tiny_tokenizer.vocab.keys())
    for case in golden[0]["pretraining_data"]["masking"]:
        tokens = list(source.MASKING_TOKENS)
        output, positions, labels = create_pretraining_data.create_masked_lm_predictions(
            tokens, 0.25, case["max_predictions"], vocab_words, random.Random(case["seed"]))
        assert (output, positions, labels) == (case["output"], case["positions"], case["labels"]), case["seed"]
        assert tokens == source.MASKING_TOKENS  # the input list is left alone, as the original


def test_create_instances_from_document_on_token_strings(golden, tiny_tokenizer):
    import random

    from bert import create_pretraining_data

    from tests.golden import make_original_api_golden as source
    rng = random.Random(7)
    vocab_words = list(tiny_tokenizer.vocab.keys())
    for index, expected in enumerate(golden[0]["pretraining_data"]["instances"]):
        instances = create_pretraining_data.create_instances_from_document(
            source.DOCUMENTS, index, 16, 0.3, 0.2, 4, vocab_words, rng)
        assert [str(instance) for instance in instances] == expected


def test_extract_features_read_and_convert_as_the_original(golden, tiny_tokenizer, tmp_path):
    from bert import extract_features

    from tests.golden import make_original_api_golden as source
    path = tmp_path / "input.txt"
    path.write_text("\n".join(source.EXTRACT_LINES) + "\n", encoding="utf-8")
    examples = extract_features.read_examples(str(path))
    expected = golden[0]["extract_features"]
    assert [[e.unique_id, e.text_a, e.text_b] for e in examples] == expected["examples"]
    features = extract_features.convert_examples_to_features(examples, seq_length=12, tokenizer=tiny_tokenizer)
    assert [[f.unique_id, f.tokens, f.input_ids, f.input_mask, f.input_type_ids]
            for f in features] == expected["features"]
    assert extract_features.InputExample(unique_id=3, text_a="a", text_b=None).text_a == "a"


def test_classifier_read_tsv_and_convert_as_the_original(golden, tiny_tokenizer, tmp_path):
    from bert import run_classifier

    from tests.golden import make_original_api_golden as source
    path = tmp_path / "train.tsv"
    path.write_text("".join("\t".join(row) + "\n" for row in source.CLASSIFIER_ROWS), encoding="utf-8")
    rows = run_classifier.DataProcessor._read_tsv(str(path))
    expected = golden[0]["classifier"]
    assert rows == expected["rows"]
    examples = [run_classifier.InputExample(guid=f"train-{i}", text_a=row[1], text_b=row[2] or None, label=row[0])
                for i, row in enumerate(rows[1:])] + [run_classifier.PaddingInputExample()]
    features = run_classifier.convert_examples_to_features(examples, ["0", "1"], 10, tiny_tokenizer)
    assert [[f.input_ids, f.input_mask, f.segment_ids, f.label_id, f.is_real_example]
            for f in features] == expected["features"]


def test_modeling_tensor_functions_give_the_original_values(golden):
    import tensorflow as tf

    from bert import modeling
    answers, arrays = golden
    np.testing.assert_allclose(modeling.gelu(tf.constant(arrays["gelu_x"])), arrays["gelu_y"], atol=1e-6)
    x = tf.constant(arrays["layer_norm_x"])
    np.testing.assert_allclose(modeling.layer_norm(x), arrays["layer_norm_y"], atol=1e-5)
    np.testing.assert_allclose(modeling.layer_norm_and_dropout(x, 0.0), arrays["layer_norm_and_dropout_y"], atol=1e-5)
    np.testing.assert_array_equal(modeling.create_attention_mask_from_input_mask(
        tf.constant(arrays["from_tensor"]), tf.constant(arrays["to_mask"])), arrays["attention_mask"])
    matrix = modeling.reshape_to_matrix(x)
    np.testing.assert_array_equal(matrix, arrays["matrix"])
    np.testing.assert_array_equal(modeling.reshape_from_matrix(matrix, modeling.get_shape_list(x)),
                                  arrays["from_matrix"])
    for name, function_name in answers["modeling"]["get_activation"].items():
        assert getattr(modeling.get_activation(activation_string=name), "__name__", None) == function_name
    assert modeling.dropout(x, 0.0) is x and modeling.dropout(x, None) is x


def test_dropout_scales_the_kept_values():
    import tensorflow as tf

    from bert import modeling
    x = tf.ones([1000])
    y = modeling.dropout(x, 0.25).numpy()
    assert np.all((y == 0) | np.isclose(y, 1 / 0.75)) and 0.15 < (y == 0).mean() < 0.35


def test_shape_functions_check_the_rank():
    import tensorflow as tf

    from bert import modeling
    x = tf.zeros([2, 3, 4])
    assert modeling.get_shape_list(x, expected_rank=3) == [2, 3, 4]
    modeling.assert_rank(x, [2, 3])
    with pytest.raises(ValueError, match=r"^tensor x has rank 3 \(shape \(2, 3, 4\)\), expected rank 2$"):
        modeling.get_shape_list(x, expected_rank=2, name="x")


def test_pretraining_head_functions_give_the_original_values(golden):
    import tensorflow as tf

    from bert import modeling, run_pretraining

    from tests.golden import make_original_api_golden as source
    _, arrays = golden
    config = modeling.BertConfig.from_dict(source.HEAD_CONFIG)
    table = tf.constant(arrays["embedding_table"])
    mlm_head, nsp_head = modeling.MaskedLMHead(config, table), modeling.NextSentenceHead(config)
    for name, variable in modeling.original_name_map(mlm_head, nsp_head).items():
        variable.assign(arrays["weight:" + name])
    positions = tf.constant(arrays["positions"])
    np.testing.assert_array_equal(run_pretraining.gather_indexes(tf.constant(arrays["sequence_output"]), positions),
                                  arrays["gathered"])
    mlm = run_pretraining.get_masked_lm_output(config, tf.constant(arrays["sequence_output"]), table, positions,
                                               tf.constant(arrays["label_ids"]), tf.constant(arrays["label_weights"]),
                                               head=mlm_head)
    nsp = run_pretraining.get_next_sentence_output(config, tf.constant(arrays["pooled_output"]),
                                                   tf.constant(arrays["nsp_labels"]), head=nsp_head)
    for prefix, values in (("mlm", mlm), ("nsp", nsp)):
        for suffix, value in zip(("loss", "per_example_loss", "log_probs"), values):
            np.testing.assert_allclose(value, arrays[f"{prefix}_{suffix}"], atol=1e-5, err_msg=f"{prefix}_{suffix}")


def test_head_functions_without_a_head_build_a_fresh_one():
    import tensorflow as tf

    from bert import modeling, run_pretraining

    from tests.golden import make_original_api_golden as source
    config = modeling.BertConfig.from_dict(source.HEAD_CONFIG)
    loss, per_example, log_probs = run_pretraining.get_next_sentence_output(
        config, tf.ones([3, 8]), tf.constant([0, 1, 1]))
    assert per_example.shape == [3] and log_probs.shape == [3, 2] and np.isfinite(loss.numpy())


def test_adam_weight_decay_optimizer_takes_the_original_arguments(golden):
    from bert import modeling, optimization
    _, arrays = golden
    kernel = modeling.create_original_variable("layer/kernel", (3, 2), arrays["opt_kernel"])
    bias = modeling.create_original_variable("layer/bias", (2,), arrays["opt_bias"])
    optimizer = optimization.AdamWeightDecayOptimizer(
        learning_rate=0.1, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"])
    for gradients in arrays["opt_gradients"]:
        optimizer.apply_gradients([(gradients, kernel), (gradients[0], bias)], global_step=None)
    np.testing.assert_allclose(kernel.numpy(), arrays["opt_kernel_after"], atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), arrays["opt_bias_after"], atol=1e-6)


# --- TF1-only names: one line that says what to use instead ----------------------------------

@pytest.mark.parametrize("module, name", sorted(porting.TF1_ONLY))
def test_tf1_only_names_point_to_their_replacement(module, name):
    import importlib
    with pytest.raises(AttributeError) as raised:
        getattr(importlib.import_module(f"bert.{module}"), name)
    message = str(raised.value)
    assert message.startswith(f"{module}.{name} was TF1-only; use ") and "\n" not in message


def test_unknown_names_keep_the_usual_error():
    from bert import modeling
    with pytest.raises(AttributeError, match=r"^module 'modeling' has no attribute 'no_such_name'$"):
        modeling.no_such_name


def test_bert_model_called_the_original_way_gets_a_pointer():
    import tensorflow as tf

    from bert import modeling

    from tests.golden import make_original_api_golden as source
    config = modeling.BertConfig.from_dict(source.HEAD_CONFIG)
    ids = tf.constant([[1, 2, 3]])
    for call in (lambda: modeling.BertModel(config=config, is_training=False, input_ids=ids),
                 lambda: modeling.BertModel(config, False, ids)):
        with pytest.raises(TypeError, match=r"^BertModel\(config, is_training, input_ids, \.\.\.\) was the TF1 graph "
                                            r"builder; here build model = BertModel\(config\) once[^\n]*$"):
            call()


def test_create_optimizer_called_the_original_way_gets_a_pointer():
    import tensorflow as tf

    from bert import optimization
    with pytest.raises(TypeError, match=r"^create_optimizer\(loss, init_lr, num_train_steps, num_warmup_steps, "
                                        r"use_tpu\) was TF1-only[^\n]*apply_gradients"):
        optimization.create_optimizer(tf.constant(1.0), 5e-5, 1000, 100, False)


# --- README "Porting code written against the original": its examples run --------------------

def readme_porting_examples():
    """The ```python blocks of README's porting section, in order."""
    import re
    with open(os.path.join(helpers.ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Porting code written against the original", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def tiny_bert_dir(tmp_path, monkeypatch):
    """A working directory holding uncased_L-12_H-768_A-12/ with a tiny random BERT and sample_text.txt."""
    import shutil

    from bert import modeling
    bert_dir = tmp_path / "uncased_L-12_H-768_A-12"
    bert_dir.mkdir()
    shutil.copy(os.path.join(GOLDEN_DIR, "extract_tiny_vocab.txt"), bert_dir / "vocab.txt")
    shutil.copy(os.path.join(helpers.ROOT, "sample_text.txt"), tmp_path / "sample_text.txt")
    config = modeling.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=24, max_position_embeddings=128)
    (bert_dir / "bert_config.json").write_text(config.to_json_string())
    modeling.save_checkpoint(str(bert_dir / "bert_model.ckpt"), modeling.original_name_map(modeling.BertModel(config)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_porting_examples_run(tiny_bert_dir):
    import tensorflow as tf
    examples = readme_porting_examples()
    assert len(examples) == 4
    for code in examples:
        assert 3 <= len(code.strip().splitlines()) <= 16, code
    finetune, embed, pretraining_data, notebook = [{} for _ in examples]
    for code, namespace in zip(examples, (finetune, embed, pretraining_data, notebook)):
        exec(compile(code, "README.md", "exec"), namespace)
    assert np.isfinite(float(finetune["loss"])) and (tiny_bert_dir / "finetuned" / "model.ckpt.index").exists()
    assert embed["token_vectors"].shape == (2, 16, 2, 16) and embed["sentence_vectors"].shape == (2, 2, 16)
    records = list(tf.data.TFRecordDataset("tf_examples.tfrecord"))
    assert len(records) == len(pretraining_data["instances"]) > 0
    assert [sentence for sentence, _ in notebook["predictions"]] == notebook["pred_sentences"]
    assert {label for _, label in notebook["predictions"]} <= {0, 1}


# --- run_squad: the original's eager conversion, FeatureWriter and write_predictions ------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_squad_feature_writer_and_predictions_as_the_original(version, tmp_path):
    import json
    import random

    import tensorflow as tf

    from bert import run_squad, tokenization
    v2 = {"version_2_with_negative": True} if version == "v2" else {}
    tokenizer = tokenization.FullTokenizer(os.path.join(GOLDEN_DIR, "squad_vocab.txt"), do_lower_case=True)
    input_file = os.path.join(GOLDEN_DIR, f"squad_{version}.json")
    train_examples = run_squad.read_squad_examples(input_file, is_training=True, **v2)
    random.Random(12345).shuffle(train_examples)
    writer = run_squad.FeatureWriter(str(tmp_path / "train.tf_record"), is_training=True)
    assert run_squad.convert_examples_to_features(train_examples, tokenizer, 64, 16, 12, True,
                                                  writer.process_feature) is None
    writer.close()
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "train.tf_record"))]
    golden_path = os.path.join(GOLDEN_DIR, f"squad_{version}_train.tf_record")
    expected = [r.numpy() for r in tf.data.TFRecordDataset(golden_path)]
    assert writer.num_features == len(records) == len(expected)
    assert [tf.train.Example.FromString(r) for r in records] == [tf.train.Example.FromString(r) for r in expected]

    examples = run_squad.read_squad_examples(input_file, is_training=False, **v2)
    features = []
    run_squad.convert_examples_to_features(examples, tokenizer, 64, 16, 12, False, features.append)
    logits = np.load(os.path.join(GOLDEN_DIR, f"squad_{version}_model.npz"))
    results = [run_squad.RawResult(unique_id=f.unique_id, start_logits=[float(x) for x in s],
                                   end_logits=[float(x) for x in e])
               for f, s, e in zip(features, logits["start_logits"], logits["end_logits"])]
    out = {name: str(tmp_path / f"{name}.json") for name in ("predictions", "nbest_predictions", "null_odds")}
    run_squad.write_predictions(examples, features, results, 20, 30, True, out["predictions"],
                                out["nbest_predictions"], out["null_odds"], **v2)
    for name in ("predictions", "nbest_predictions") + (("null_odds",) if v2 else ()):
        with open(out[name]) as ours, open(os.path.join(GOLDEN_DIR, f"squad_{version}_model_{name}.json")) as theirs:
            assert json.load(ours) == json.load(theirs), name


def test_a_processor_written_for_the_original_runs(tmp_path):
    from bert import run_classifier, tokenization

    class SentimentProcessor(run_classifier.DataProcessor):  # as tutorials wrote them for the original
        def get_train_examples(self, data_dir):
            return self._create_examples(self._read_tsv(os.path.join(data_dir, "train.tsv")), "train")

        def get_labels(self):
            return ["neg", "pos"]

        def _create_examples(self, lines, set_type):
            return [run_classifier.InputExample(guid=f"{set_type}-{i}", text_a=tokenization.convert_to_unicode(line[1]),
                                                text_b=None, label=tokenization.convert_to_unicode(line[0]))
                    for i, line in enumerate(lines)]

    (tmp_path / "train.tsv").write_text("pos\ta good day\nneg\ta bad night\n", encoding="utf-8")
    examples = SentimentProcessor().get_train_examples(str(tmp_path))
    assert [(e.guid, e.text_a, e.label) for e in examples] == [("train-0", "a good day", "pos"),
                                                               ("train-1", "a bad night", "neg")]
