"""Tests for modeling.py: parity with the original code, model properties, checkpoints.

Parity evidence comes from tests/golden/make_modeling_golden.py, which ran the original
google-research/bert code on a tiny config and saved its checkpoint, inputs and outputs.
"""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import fused_kernels
import modeling

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
GOLDEN_CHECKPOINT = os.path.join(GOLDEN_DIR, "modeling_tiny.ckpt")
NUM_LABELS = 5  # the classifier head in the golden checkpoint

LAYER_TOLERANCE = 1e-5  # the project's bound for layer outputs against the original's
HEAD_TOLERANCE = 1e-4  # and for losses and probabilities


def tiny_config(**overrides):
    fields = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=40, type_vocab_size=3)
    fields.update(overrides)
    return modeling.BertConfig(**fields)


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(tf.cast(a, tf.float32)) - np.asarray(b))))


class Pretrained:
    """BertModel and all four heads built for the golden config and loaded from its checkpoint."""

    def __init__(self, dtype=None):
        self.config = modeling.BertConfig.from_json_file(
            os.path.join(GOLDEN_DIR, "modeling_tiny_config.json"))
        self.bert = modeling.BertModel(self.config, dtype=dtype)
        self.masked_lm = modeling.MaskedLMHead(self.config, self.bert.embedding_table, dtype=dtype)
        self.next_sentence = modeling.NextSentenceHead(self.config, dtype=dtype)
        self.classifier = modeling.ClassifierHead(NUM_LABELS, self.config.hidden_size, dtype=dtype)
        self.squad = modeling.SquadHead(self.config.hidden_size, dtype=dtype)
        self.load_result = modeling.load_checkpoint(GOLDEN_CHECKPOINT, *self.layers())

    def layers(self):
        return [self.bert, self.masked_lm, self.next_sentence, self.classifier, self.squad]

    def encode(self, inputs, **kwargs):
        return self.bert(inputs["input_ids"], input_mask=inputs["input_mask"],
                         token_type_ids=inputs["token_type_ids"], **kwargs)


@pytest.fixture(scope="module")
def golden():
    data = np.load(os.path.join(GOLDEN_DIR, "modeling_tiny_golden.npz"))
    inputs = {k[len("input/"):]: data[k] for k in data.files if k.startswith("input/")}
    outputs = {k[len("output/"):]: data[k] for k in data.files if k.startswith("output/")}
    return inputs, outputs


@pytest.fixture(scope="module")
def pretrained():
    return Pretrained()


# ---------------------------------------------------------------------------------------
# Parity with the original code.


def test_golden_checkpoint_holds_exactly_the_original_variable_list(pretrained):
    expected = modeling.original_variable_shapes(pretrained.config, masked_lm=True,
                                                 next_sentence=True, num_labels=NUM_LABELS,
                                                 squad=True)
    written_by_original = {
        name: tuple(shape)
        for name, shape in tf.train.list_variables(GOLDEN_CHECKPOINT)
    }
    assert written_by_original == dict(expected)


def test_every_variable_is_restored_from_the_original_checkpoint(pretrained):
    result = pretrained.load_result
    assert result.not_in_checkpoint == [] and result.unused == []
    assert len(result.restored) == len(tf.train.list_variables(GOLDEN_CHECKPOINT))
    reader = tf.train.load_checkpoint(GOLDEN_CHECKPOINT)
    query = pretrained.bert.encoder_layers[1].query.kernel
    np.testing.assert_array_equal(
        query.numpy(), reader.get_tensor("bert/encoder/layer_1/attention/self/query/kernel"))


def test_every_layer_matches_the_original(pretrained, golden):
    inputs, expected = golden
    out = pretrained.encode(inputs, training=False)
    diffs = {
        "embedding_output": max_abs_diff(out["embedding_output"], expected["embedding_output"])
    }
    for i, layer in enumerate(out["encoder_layers"]):
        diffs["encoder_layer_%d" % i] = max_abs_diff(layer, expected["encoder_layer_%d" % i])
    diffs["sequence_output"] = max_abs_diff(out["sequence_output"], expected["sequence_output"])
    diffs["pooled_output"] = max_abs_diff(out["pooled_output"], expected["pooled_output"])
    assert len(out["encoder_layers"]) == pretrained.config.num_hidden_layers
    assert max(diffs.values()) <= LAYER_TOLERANCE, diffs
    # The golden values are not trivially small: a wrong op would show.
    assert np.abs(expected["sequence_output"]).max() > 1.0


def test_one_hot_word_embeddings_give_the_same_outputs(pretrained, golden):
    inputs, expected = golden
    one_hot = modeling.BertModel(pretrained.config, use_one_hot_embeddings=True)
    modeling.load_checkpoint(GOLDEN_CHECKPOINT, one_hot)
    out = one_hot(inputs["input_ids"], input_mask=inputs["input_mask"],
                  token_type_ids=inputs["token_type_ids"])
    assert max_abs_diff(out["sequence_output"], expected["sequence_output"]) <= LAYER_TOLERANCE


def test_pretraining_heads_and_losses_match_the_original(pretrained, golden):
    inputs, expected = golden
    out = pretrained.encode(inputs)
    logits = pretrained.masked_lm(out["sequence_output"],
                                  tf.constant(inputs["masked_lm_positions"]))
    loss, per_example, log_probs = modeling.masked_lm_loss(logits, inputs["masked_lm_ids"],
                                                           inputs["masked_lm_weights"])
    vocab = pretrained.config.vocab_size
    assert logits.shape == inputs["masked_lm_positions"].shape + (vocab,)
    assert max_abs_diff(loss, expected["masked_lm_loss"]) <= HEAD_TOLERANCE
    # The original returns flat [B*P] / [B*P, V]; ours keep [B, P] / [B, P, V].
    assert max_abs_diff(tf.reshape(per_example, [-1]),
                        expected["masked_lm_per_example_loss"]) <= HEAD_TOLERANCE
    assert max_abs_diff(tf.reshape(log_probs, [-1, vocab]),
                        expected["masked_lm_log_probs"]) <= HEAD_TOLERANCE

    nsp_logits = pretrained.next_sentence(out["pooled_output"])
    nsp_loss, nsp_per_example, nsp_log_probs = modeling.next_sentence_loss(
        nsp_logits, inputs["next_sentence_labels"])
    assert max_abs_diff(nsp_loss, expected["next_sentence_loss"]) <= HEAD_TOLERANCE
    assert max_abs_diff(nsp_per_example,
                        expected["next_sentence_per_example_loss"]) <= HEAD_TOLERANCE
    assert max_abs_diff(nsp_log_probs, expected["next_sentence_log_probs"]) <= HEAD_TOLERANCE


def test_classifier_head_matches_the_original(pretrained, golden):
    inputs, expected = golden
    logits = pretrained.classifier(pretrained.encode(inputs)["pooled_output"], training=False)
    loss, per_example, probabilities = modeling.classifier_loss(logits, inputs["label_ids"])
    assert max_abs_diff(logits, expected["classifier_logits"]) <= HEAD_TOLERANCE
    assert max_abs_diff(loss, expected["classifier_loss"]) <= HEAD_TOLERANCE
    assert max_abs_diff(per_example, expected["classifier_per_example_loss"]) <= HEAD_TOLERANCE
    assert max_abs_diff(probabilities, expected["classifier_probabilities"]) <= HEAD_TOLERANCE


def test_squad_head_matches_the_original(pretrained, golden):
    inputs, expected = golden
    start_logits, end_logits = pretrained.squad(pretrained.encode(inputs)["sequence_output"])
    assert max_abs_diff(start_logits, expected["squad_start_logits"]) <= HEAD_TOLERANCE
    assert max_abs_diff(end_logits, expected["squad_end_logits"]) <= HEAD_TOLERANCE

    def cross_entropy(logits, positions):  # the original's compute_loss, in numpy
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return -np.mean(log_probs[np.arange(len(positions)), positions])

    want = (cross_entropy(expected["squad_start_logits"], inputs["start_positions"]) +
            cross_entropy(expected["squad_end_logits"], inputs["end_positions"])) / 2
    loss = modeling.squad_loss(start_logits, end_logits, inputs["start_positions"],
                               inputs["end_positions"])
    assert abs(float(loss) - want) <= HEAD_TOLERANCE


# ---------------------------------------------------------------------------------------
# Properties that need no reference.


@pytest.fixture(scope="module")
def tiny_model():
    tf.random.set_seed(1)
    model = modeling.BertModel(tiny_config())
    # Random LayerNorm and bias values too, so no property holds by accident of zeros/ones.
    rng = np.random.RandomState(2)
    for variable in model.variables:
        variable.assign(
            rng.normal(0, 0.2, variable.shape).astype(np.float32) +
            (1.0 if variable.path.endswith("gamma") else 0.0))
    return model


def random_batch(rng, batch=2, seq=9):
    ids = rng.randint(1, 99, size=(batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    mask[1, 5:] = 0
    types = np.zeros((batch, seq), np.int32)
    types[:, 4:] = 1
    return ids, mask, types


def test_tokens_at_masked_out_positions_do_not_change_real_positions(tiny_model):
    ids, mask, types = random_batch(np.random.RandomState(0))
    before = tiny_model(ids, input_mask=mask, token_type_ids=types)
    changed = ids.copy()
    changed[1, 5:] = (changed[1, 5:] + 17) % 99
    after = tiny_model(changed, input_mask=mask, token_type_ids=types)
    np.testing.assert_allclose(after["sequence_output"][1, :5], before["sequence_output"][1, :5],
                               atol=1e-6)
    np.testing.assert_allclose(after["pooled_output"], before["pooled_output"], atol=1e-6)
    # Padded positions themselves still get (different) outputs, as in the original.
    assert max_abs_diff(after["sequence_output"][1, 5:], before["sequence_output"][1, 5:]) > 1e-3


def test_padding_extra_positions_keeps_outputs_at_real_positions(tiny_model):
    ids, mask, types = random_batch(np.random.RandomState(1))
    short = tiny_model(ids, input_mask=mask, token_type_ids=types)
    pad = lambda x: np.pad(x, [(0, 0), (0, 6)])
    long = tiny_model(pad(ids), input_mask=pad(mask), token_type_ids=pad(types))
    for a, b in zip(long["encoder_layers"], short["encoder_layers"]):
        np.testing.assert_allclose(a[0, :9], b[0, :9], atol=1e-5)
        np.testing.assert_allclose(a[1, :5], b[1, :5], atol=1e-5)
    np.testing.assert_allclose(long["pooled_output"], short["pooled_output"], atol=1e-5)


def test_token_type_ids_change_the_outputs(tiny_model):
    ids, mask, types = random_batch(np.random.RandomState(2))
    with_types = tiny_model(ids, input_mask=mask, token_type_ids=types)["sequence_output"]
    without = tiny_model(ids, input_mask=mask,
                         token_type_ids=np.zeros_like(types))["sequence_output"]
    assert max_abs_diff(with_types, without) > 1e-2


def test_defaults_are_all_ones_mask_and_zero_token_types(tiny_model):
    ids, _, _ = random_batch(np.random.RandomState(3))
    default = tiny_model(ids)["sequence_output"]
    explicit = tiny_model(ids, input_mask=np.ones_like(ids),
                          token_type_ids=np.zeros_like(ids))["sequence_output"]
    np.testing.assert_array_equal(default, explicit)


def test_dropout_only_when_training(tiny_model):
    ids, mask, types = random_batch(np.random.RandomState(4))

    def run(training):
        out = tiny_model(ids, input_mask=mask, token_type_ids=types, training=training)
        return out["sequence_output"]

    np.testing.assert_array_equal(run(False), run(False))
    np.testing.assert_array_equal(
        run(False),
        tiny_model(ids, input_mask=mask, token_type_ids=types)["sequence_output"])
    tf.random.set_seed(5)
    first, second = run(True), run(True)
    assert max_abs_diff(first, run(False)) > 1e-2
    assert max_abs_diff(first, second) > 1e-2


def test_config_without_dropout_is_deterministic_in_training():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = modeling.BertModel(config)
    ids = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
    inference = model(ids, training=False)["sequence_output"]
    with fused_kernels.fused_kernels(False):
        plain = model(ids, training=False)["sequence_output"]
        np.testing.assert_array_equal(model(ids, training=True)["sequence_output"], plain)
    # The fused kernels (training's, inference's LayerNorm loop) compute the same math in
    # another order.
    np.testing.assert_allclose(inference, plain, atol=2e-6)
    np.testing.assert_allclose(model(ids, training=True)["sequence_output"], inference,
                               atol=2e-6)


def test_classifier_dropout_defaults_to_the_originals_and_runs_only_in_training():
    head = modeling.ClassifierHead(3, 32)
    pooled = tf.ones([4, 32])
    np.testing.assert_array_equal(head(pooled, training=False), head(pooled))
    assert head.dropout_rate == 0.1
    assert max_abs_diff(head(pooled, training=True), head(pooled)) > 0


@pytest.mark.parametrize(
    "x, tanh_form, erf_form",
    [
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  and  x Phi(x)
        (-3.0, -0.0036373920817729943, -0.00404969409489031),
        (-1.0, -0.15880800939172324, -0.15865525393145707),
        (0.0, 0.0, 0.0),
        (0.5, 0.34571400982514394, 0.34573123063700656),
        (1.0, 0.8411919906082768, 0.8413447460685429),
        (2.0, 1.954597694087775, 1.9544997361036416),
    ])
def test_gelu_values_at_known_points(x, tanh_form, erf_form):
    assert float(modeling.gelu(tf.constant(x))) == pytest.approx(tanh_form, abs=1e-6)
    assert float(modeling.gelu_exact(tf.constant(x))) == pytest.approx(erf_form, abs=1e-6)


def test_get_activation_maps_the_original_names():
    assert modeling.get_activation("gelu") is modeling.gelu
    assert modeling.get_activation("GELU") is modeling.gelu
    assert modeling.get_activation("gelu_exact") is modeling.gelu_exact
    assert modeling.get_activation("erf_gelu") is modeling.gelu_exact
    assert modeling.get_activation("relu") is tf.nn.relu
    assert modeling.get_activation("tanh") is tf.tanh
    for identity in (None, "", "linear"):
        assert modeling.get_activation(identity) is None
    assert modeling.get_activation(tf.nn.elu) is tf.nn.elu
    with pytest.raises(ValueError, match="Unsupported activation: swish"):
        modeling.get_activation("swish")


def test_gelu_exact_config_changes_the_feed_forward_only_slightly():
    ids = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
    tanh_model = modeling.BertModel(tiny_config())
    erf_model = modeling.BertModel(tiny_config(hidden_act="gelu_exact"))
    for a, b in zip(tanh_model.variables, erf_model.variables):
        b.assign(a)
    diff = max_abs_diff(tanh_model(ids)["sequence_output"], erf_model(ids)["sequence_output"])
    assert 0 < diff < 1e-2


def test_sequence_longer_than_position_table_raises():
    config = tiny_config(max_position_embeddings=8)
    model = modeling.BertModel(config)
    model(np.ones([1, 8], np.int32))  # exactly the table size is fine
    with pytest.raises(ValueError, match="max_seq_length 9 is above max_position_embeddings 8"):
        model(np.ones([1, 9], np.int32))
    with pytest.raises(ValueError, match="max_position_embeddings 512"):
        modeling.check_max_seq_length(modeling.BertConfig(vocab_size=10), 513)
    modeling.check_max_seq_length(modeling.BertConfig(vocab_size=10), 512)


def test_invalid_configs_raise_one_clear_line():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        modeling.BertModel(tiny_config(num_attention_heads=5))
    with pytest.raises(ValueError, match="vocab_size must be a positive integer, got None"):
        modeling.BertModel(modeling.BertConfig(vocab_size=None))
    with pytest.raises(ValueError, match="Unsupported activation"):
        modeling.BertModel(tiny_config(hidden_act="swishy"))
    with pytest.raises(ValueError, match=r"hidden_dropout_prob must be a number in \[0, 1\), "
                                         "got 1.0"):
        modeling.BertModel(tiny_config(hidden_dropout_prob=1.0))
    with pytest.raises(ValueError, match="attention_probs_dropout_prob .* got -0.1"):
        modeling.BertModel(tiny_config(attention_probs_dropout_prob=-0.1))
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\), got 1.5"):
        fused_kernels.dropout(tf.ones([2]), 1.5, training=True)


# ---------------------------------------------------------------------------------------
# BertConfig.


def test_config_defaults_are_the_originals():
    config = modeling.BertConfig(vocab_size=30522)
    assert config.to_dict() == dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                    num_attention_heads=12, intermediate_size=3072,
                                    hidden_act="gelu", hidden_dropout_prob=0.1,
                                    attention_probs_dropout_prob=0.1, max_position_embeddings=512,
                                    type_vocab_size=16, initializer_range=0.02)


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    chinese = {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 37,
        "max_position_embeddings": 40,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pooler_fc_size": 768,
        "pooler_num_attention_heads": 12,
        "pooler_num_fc_layers": 3,
        "pooler_size_per_head": 128,
        "pooler_type": "first_token_transform",
        "type_vocab_size": 2,
        "vocab_size": 99
    }
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(chinese))
    config = modeling.BertConfig.from_json_file(str(path))
    assert config.pooler_type == "first_token_transform" and config.vocab_size == 99
    text = config.to_json_string()
    assert text == json.dumps(chinese, indent=2, sort_keys=True) + "\n"
    out = modeling.BertModel(config)(np.ones([1, 4], np.int32))  # extra keys are ignored
    assert out["pooled_output"].shape == (1, 32)


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read BERT config file"),
    ("{\"vocab_size\": 3,", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
])
def test_config_file_problems_name_the_file(tmp_path, content, problem):
    path = tmp_path / "bert_config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as error:
        modeling.BertConfig.from_json_file(str(path))
    message = str(error.value)
    assert problem in message and str(path) in message and "\n" not in message


# ---------------------------------------------------------------------------------------
# Variable names and checkpoints.


def test_variable_paths_are_the_original_names_even_inside_a_task_model():

    class Classifier(keras.Model):

        def __init__(self, config):
            super().__init__(name="my_task_model")
            self.bert = modeling.BertModel(config)
            self.head = modeling.ClassifierHead(3, config.hidden_size)

        def call(self, ids):
            return self.head(self.bert(ids)["pooled_output"])

    config = tiny_config()
    model = Classifier(config)
    model(np.ones([2, 5], np.int32))
    paths = [v.path for v in model.trainable_variables]
    expected = modeling.original_variable_shapes(config, num_labels=3)
    assert sorted(paths) == sorted(expected)
    assert len(paths) == len(set(paths))
    assert {v.path: tuple(v.shape) for v in model.variables} == dict(expected)


def released_configs():
    """(name, config, millions of encoder+pooler parameters of the released checkpoint)."""
    base = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, type_vocab_size=2)
    large = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 intermediate_size=4096, type_vocab_size=2)
    configs = [
        ("uncased_L-12_H-768_A-12", dict(base, vocab_size=30522), 109.5),
        ("cased_L-12_H-768_A-12", dict(base, vocab_size=28996), 108.3),
        ("multilingual_L-12_H-768_A-12", dict(base, vocab_size=105879), 167.4),
        ("multi_cased_L-12_H-768_A-12", dict(base, vocab_size=119547), 177.9),
        ("chinese_L-12_H-768_A-12", dict(base, vocab_size=21128), 102.3),
        ("uncased_L-24_H-1024_A-16", dict(large, vocab_size=30522), 335.1),
        ("cased_L-24_H-1024_A-16", dict(large, vocab_size=28996), 333.6),
    ]
    small = {
        (2, 128): 4.4,
        (4, 128): 4.8,
        (6, 128): 5.2,
        (8, 128): 5.6,
        (10, 128): 6.0,
        (12, 128): 6.4,
        (2, 256): 9.6,
        (4, 256): 11.2,
        (6, 256): 12.8,
        (8, 256): 14.3,
        (10, 256): 15.9,
        (12, 256): 17.5,
        (2, 512): 22.5,
        (4, 512): 28.8,
        (6, 512): 35.1,
        (8, 512): 41.4,
        (10, 512): 47.7,
        (12, 512): 54.0,
        (2, 768): 38.6,
        (4, 768): 52.8,
        (6, 768): 67.0,
        (8, 768): 81.1,
        (10, 768): 95.3,
        (12, 768): 109.5
    }
    for (layers, hidden), millions in small.items():
        fields = dict(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                      type_vocab_size=2)
        configs.append(
            ("uncased_L-%d_H-%d_A-%d" % (layers, hidden, hidden // 64), fields, millions))
    return configs


@pytest.mark.parametrize("name, fields, millions", released_configs(),
                         ids=[c[0] for c in released_configs()])
def test_released_model_shapes_map_to_the_original_names(monkeypatch, name, fields, millions):
    # Record what the layers would create instead of allocating up to 335M weights.
    created = {}

    def record(path, shape, initializer, **kwargs):
        assert path not in created, path
        created[path] = tuple(shape)
        return keras.Variable(initializer="zeros", shape=(0,), name=path.rpartition("/")[2])

    monkeypatch.setattr(modeling, "create_original_variable", record)
    config = modeling.BertConfig(**fields)
    modeling.BertModel(config)
    modeling.MaskedLMHead(config, embedding_table=None)
    modeling.NextSentenceHead(config)
    expected = modeling.original_variable_shapes(config, masked_lm=True, next_sentence=True)
    assert created == dict(expected)
    encoder_params = sum(
        int(np.prod(shape)) for path, shape in created.items() if path.startswith("bert/"))
    assert round(encoder_params / 1e6, 1) == millions


def test_saved_checkpoint_has_exactly_the_original_variable_list(tmp_path):
    config = tiny_config()
    bert = modeling.BertModel(config)
    heads = [
        modeling.MaskedLMHead(config, bert.embedding_table),
        modeling.NextSentenceHead(config),
        modeling.SquadHead(config.hidden_size)
    ]
    prefix = modeling.save_checkpoint(str(tmp_path / "model.ckpt-7"),
                                      modeling.original_name_map(bert, *heads))
    listed = {name: tuple(shape) for name, shape in tf.train.list_variables(prefix)}
    expected = modeling.original_variable_shapes(config, masked_lm=True, next_sentence=True,
                                                 squad=True)
    assert listed == dict(expected)
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("bert/embeddings/word_embeddings"),
                                  bert.embedding_table.numpy())
    assert sorted(
        os.listdir(tmp_path)) == ["model.ckpt-7.data-00000-of-00001", "model.ckpt-7.index"]


def training_checkpoint(tmp_path, model):
    """A checkpoint as the original's training writes it: weights, Adam slots, global_step."""
    tensors = dict(modeling.original_name_map(model))
    for name, variable in list(tensors.items()):
        tensors[name + "/adam_m"] = tf.fill(variable.shape, 0.5)
        tensors[name + "/adam_v"] = tf.fill(variable.shape, 0.25)
    tensors["global_step"] = tf.constant(1234, tf.int64)
    return modeling.save_checkpoint(str(tmp_path / "out" / "model.ckpt-1234"), tensors)


def test_checkpoint_with_adam_slots_and_global_step_loads(tmp_path, caplog):
    source = modeling.BertModel(tiny_config())
    prefix = training_checkpoint(tmp_path, source)
    target = modeling.BertModel(tiny_config())
    head = modeling.NextSentenceHead(tiny_config())
    with caplog.at_level(logging.INFO):
        result = modeling.load_checkpoint(prefix, target, head)
    log = caplog.text
    assert "name = bert/pooler/dense/kernel, shape = (32, 32), *INIT_FROM_CKPT*" in log
    assert "name = cls/seq_relationship/output_bias, shape = (2,)\n" in log
    assert len(result.restored) == len(target.variables)
    assert result.not_in_checkpoint == [
        "cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"
    ]
    assert "global_step" in result.unused and len(result.unused) == 2 * len(target.variables) + 1
    for a, b in zip(source.variables, target.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Asked for by name, slots and the step load too.
    step = tf.Variable(0, dtype=tf.int64)
    slot = tf.Variable(tf.zeros([32]))
    modeling.load_checkpoint(prefix, {"global_step": step, "bert/pooler/dense/bias/adam_m": slot})
    assert int(step.numpy()) == 1234 and float(slot.numpy()[0]) == 0.5


def test_directory_resolves_to_its_latest_checkpoint(tmp_path):
    model = modeling.BertModel(tiny_config())
    prefix = training_checkpoint(tmp_path, model)
    directory = os.path.dirname(prefix)
    with pytest.raises(ValueError, match="no checkpoint found in directory"):
        modeling.load_checkpoint(directory, model)
    # The `checkpoint` state file that Estimator (and our training loop) maintain.
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-1234"\n')
    assert modeling.load_checkpoint(directory, model).checkpoint == prefix
    assert modeling.load_checkpoint(prefix + ".index", model).checkpoint == prefix


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = str(tmp_path / "nowhere" / "bert_model.ckpt")
    with pytest.raises(ValueError, match="checkpoint not found: .*nowhere/bert_model.ckpt"):
        modeling.load_checkpoint(missing, modeling.NextSentenceHead(tiny_config()))


def test_shape_mismatch_names_the_variable_and_both_shapes(tmp_path):
    model = modeling.BertModel(tiny_config(vocab_size=120))
    before = [v.numpy() for v in model.variables]
    with pytest.raises(ValueError) as error:
        modeling.load_checkpoint(GOLDEN_CHECKPOINT, model)
    message = str(error.value)
    assert "bert/embeddings/word_embeddings" in message
    assert "[99, 32]" in message and "[120, 32]" in message and "\n" not in message
    # Nothing was assigned: shapes are checked before any variable changes.
    for value, variable in zip(before, model.variables):
        np.testing.assert_array_equal(value, variable.numpy())


def test_failed_save_leaves_no_checkpoint_behind(tmp_path, monkeypatch):

    def crash(**kwargs):
        raise tf.errors.UnavailableError(None, None, "disk went away")

    monkeypatch.setattr(tf.raw_ops, "MergeV2Checkpoints", crash)
    with pytest.raises(tf.errors.UnavailableError):
        modeling.save_checkpoint(str(tmp_path / "model.ckpt-1"), {"a": tf.ones([2])})
    assert os.listdir(tmp_path) == []


def test_two_variables_with_one_name_are_refused():
    first, second = modeling.BertModel(tiny_config()), modeling.BertModel(tiny_config())
    with pytest.raises(ValueError, match="share the checkpoint name bert/embeddings"):
        modeling.original_name_map(first, second)
    tied = modeling.MaskedLMHead(tiny_config(), first.embedding_table)
    names = modeling.original_name_map(first, tied, first.embedding_table)
    assert len(names) == len(first.variables) + len(tied.variables)


# ---------------------------------------------------------------------------------------
# Mixed precision, XLA, gradients.


@pytest.mark.parametrize("policy, layer_tolerance, loss_tolerance", [
    ("mixed_float16", 1e-2, 5e-3),
    ("mixed_bfloat16", 8e-2, 3e-2),
])
def test_mixed_precision_stays_close_to_float32(golden, policy, layer_tolerance, loss_tolerance):
    inputs, expected = golden
    model = Pretrained(dtype=policy)
    out = model.encode(inputs)
    compute_dtype = keras.DTypePolicy(policy).compute_dtype
    assert out["sequence_output"].dtype == compute_dtype
    assert model.bert.embedding_table.dtype == "float32"
    for i, layer in enumerate(out["encoder_layers"]):
        assert max_abs_diff(layer, expected["encoder_layer_%d" % i]) <= layer_tolerance
    assert max_abs_diff(out["pooled_output"], expected["pooled_output"]) <= layer_tolerance
    logits = model.masked_lm(out["sequence_output"], tf.constant(inputs["masked_lm_positions"]))
    loss, _, _ = modeling.masked_lm_loss(logits, inputs["masked_lm_ids"],
                                         inputs["masked_lm_weights"])
    assert logits.dtype == tf.float32 and loss.dtype == tf.float32
    assert max_abs_diff(loss, expected["masked_lm_loss"]) <= loss_tolerance
    nsp_loss, _, _ = modeling.next_sentence_loss(model.next_sentence(out["pooled_output"]),
                                                 inputs["next_sentence_labels"])
    assert max_abs_diff(nsp_loss, expected["next_sentence_loss"]) <= loss_tolerance


def test_model_and_heads_run_under_xla(pretrained, golden):
    inputs, expected = golden

    @tf.function(jit_compile=True)
    def pretraining_loss(ids, mask, types, positions, label_ids, weights, nsp_labels):
        out = pretrained.bert(ids, input_mask=mask, token_type_ids=types)
        mlm_loss, _, _ = modeling.masked_lm_loss(
            pretrained.masked_lm(out["sequence_output"], positions), label_ids, weights)
        nsp_loss, _, _ = modeling.next_sentence_loss(pretrained.next_sentence(out["pooled_output"]),
                                                     nsp_labels)
        return out["sequence_output"], mlm_loss + nsp_loss

    sequence_output, loss = pretraining_loss(inputs["input_ids"], inputs["input_mask"],
                                             inputs["token_type_ids"],
                                             inputs["masked_lm_positions"], inputs["masked_lm_ids"],
                                             inputs["masked_lm_weights"],
                                             inputs["next_sentence_labels"])
    assert max_abs_diff(sequence_output, expected["sequence_output"]) <= LAYER_TOLERANCE
    want = expected["masked_lm_loss"] + expected["next_sentence_loss"]
    assert max_abs_diff(loss, want) <= HEAD_TOLERANCE


def test_every_variable_gets_a_gradient_under_xla_with_dropout():
    config = tiny_config()
    bert = modeling.BertModel(config)
    masked_lm = modeling.MaskedLMHead(config, bert.embedding_table)
    next_sentence = modeling.NextSentenceHead(config)
    variables = list(modeling.original_name_map(bert, masked_lm, next_sentence).values())
    ids, mask, types = random_batch(np.random.RandomState(6))

    @tf.function(jit_compile=True)
    def gradients():
        with tf.GradientTape() as tape:
            out = bert(ids, input_mask=mask, token_type_ids=types, training=True)
            logits = masked_lm(out["sequence_output"], tf.constant([[1, 2], [3, 0]]))
            loss = modeling.masked_lm_loss(logits, [[5, 6], [7, 0]], [[1.0, 1.0], [1.0, 0.0]])[0]
            loss += modeling.next_sentence_loss(next_sentence(out["pooled_output"]), [0, 1])[0]
        return tape.gradient(loss, variables)

    grads = gradients()
    missing = [
        v.path for v, g in zip(variables, grads)
        if g is None or float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) == 0.0
    ]
    assert missing == []
