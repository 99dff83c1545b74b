"""convert_checkpoint.py reads Model Garden TF2 checkpoints (BertEncoder and BertEncoderV2) and
TF Hub BERT encoder SavedModels into the original layout, without Model Garden: the converted
model gives the sequence and pooled outputs that Model Garden computed (fixtures made by
tests/golden/make_model_garden_golden.py with tf-models-official 2.20.0)."""

import os
import re

import numpy as np
import pytest
from safetensors.numpy import load_file
import tensorflow as tf

import convert_checkpoint
import modeling

from tests import helpers

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
VOCAB = os.path.join(GOLDEN, "model_garden_tiny", "vocab.txt")
# (fixture directory, its outputs in model_garden_golden.npz, --vocab_file): the BertEncoder one
# has bert_config.json and vocab.txt, the BertEncoderV2 one neither (config read off the shapes),
# the TF Hub one its vocab in assets/ and its casing in a variable.
FIXTURES = [("model_garden_tiny", "model_garden", None),
            ("model_garden_v2_tiny", "model_garden_v2", VOCAB),
            ("tf_hub_tiny", "tf_hub", None)]


def checkpoint_tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def convert(input_dir, output_dir, vocab_file=None):
    """What `convert_checkpoint.py --input_dir --output_dir [--vocab_file]` does, in-process
    (the script itself runs in the tests of its one-line errors and of one command to HF)."""
    input_format = convert_checkpoint.detect_format(input_dir)
    weights = convert_checkpoint.read_model(input_format, input_dir, vocab_file=vocab_file)
    convert_checkpoint.write_original(weights, output_dir)
    return input_format, weights


@pytest.mark.parametrize("directory, key, vocab_file", FIXTURES)
def test_converted_model_gives_model_garden_outputs(directory, key, vocab_file, tmp_path):
    output_dir = str(tmp_path / "original")
    input_format, weights = convert(os.path.join(GOLDEN, directory), output_dir, vocab_file)
    assert input_format == ("tf_hub" if key == "tf_hub" else "model_garden")
    config = modeling.BertConfig.from_json_file(os.path.join(output_dir, "bert_config.json"))
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.max_position_embeddings, config.type_vocab_size,
            config.hidden_act) == (50, 32, 2, 4, 37, 24, 2, "gelu")
    # TF Hub's encoders keep the casing in a do_lower_case variable; Model Garden's checkpoints do not.
    assert weights.do_lower_case is (True if key == "tf_hub" else None)

    golden = np.load(os.path.join(GOLDEN, "model_garden_golden.npz"))
    model = modeling.BertModel(config)
    assert not modeling.load_checkpoint(os.path.join(output_dir, "bert_model.ckpt"), model).not_in_checkpoint
    out = model(tf.constant(golden["input_word_ids"]), input_mask=tf.constant(golden["input_mask"]),
                token_type_ids=tf.constant(golden["input_type_ids"]), training=False)
    real = golden["input_mask"].astype(bool)
    sequence = np.abs(out["sequence_output"].numpy()[real] - golden[f"{key}/sequence_output"][real]).max()
    pooled = np.abs(out["pooled_output"].numpy() - golden[f"{key}/pooled_output"]).max()
    # Measured 5e-7: Model Garden (Keras 2) computes the same tanh gelu and 1e-12 LayerNorm.
    assert sequence < 1e-5 and pooled < 1e-5, (sequence, pooled)


def test_model_garden_to_hugging_face_in_one_command_matches_the_original_route(tmp_path):
    source = os.path.join(GOLDEN, "model_garden_tiny")
    result = helpers.run_script("convert_checkpoint.py", f"--input_dir={source}", f"--output_dir={tmp_path / 'hf'}",
                                "--output_format=huggingface")
    assert result.returncode == 0, result.stderr[-2000:]
    hf = load_file(str(tmp_path / "hf" / "model.safetensors"))
    original = convert_checkpoint.read_model("model_garden", source)
    assert sorted(hf) == sorted(entry.huggingface for entry in convert_checkpoint.tensor_names(original.config))
    reader = tf.train.load_checkpoint(os.path.join(source, "bert_model.ckpt"))
    query = reader.get_tensor("encoder/layer_with_weights-4/_attention_layer/_query_dense/kernel/.ATTRIBUTES/"
                              "VARIABLE_VALUE")  # [H, N, D] in Model Garden
    np.testing.assert_array_equal(hf["encoder.layer.0.attention.self.query.weight"], query.reshape(32, 32).T)
    back = convert_checkpoint.read_huggingface(str(tmp_path / "hf"))
    for name, value in original.tensors.items():
        np.testing.assert_array_equal(back.tensors[name], value, err_msg=name)


def write_object_based(prefix, variables):
    """A checkpoint of tf.Variables named as Model Garden names them, under another object
    layout than Model Garden's (what a different exporter would write)."""
    module = tf.Module()
    module.weights = [tf.Variable(value, name=name) for name, value in variables.items()]
    tf.train.Checkpoint(encoder=module).write(prefix)


def model_garden_variables():
    reader, names = convert_checkpoint.object_based_variables(
        os.path.join(GOLDEN, "model_garden_tiny", "bert_model.ckpt"))
    return {name: reader.get_tensor(key) for name, key in names.items() if name != "save_counter"}


def test_any_object_layout_is_read_by_variable_names(tmp_path):
    directory = tmp_path / "other"
    directory.mkdir()
    write_object_based(str(directory / "model.ckpt"), model_garden_variables())
    assert convert(str(directory), str(tmp_path / "out"), VOCAB)[0] == "model_garden"
    ours = checkpoint_tensors(str(tmp_path / "out" / "bert_model.ckpt"))
    expected = convert_checkpoint.read_model("model_garden", os.path.join(GOLDEN, "model_garden_tiny")).tensors
    assert sorted(ours) == sorted(expected)
    for name in ours:
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)


@pytest.mark.parametrize("edit, message", [
    (lambda v: v.pop("transformer/layer_1/output/kernel"),
     "lacks the variable for bert/encoder/layer_1/output/dense/kernel: not a complete BERT encoder"),
    (lambda v: v.update({"embedding_projection/kernel": np.zeros((32, 16), np.float32)}),
     "has embedding_projection/kernel: factorised embeddings are not the original BERT"),
    (lambda v: v.update({"transformer/layer_0/intermediate/kernel": np.zeros((32, 36), np.float32)}),
     "the variable for bert/encoder/layer_0/intermediate/dense/kernel has shape [32, 36], but"),
])
def test_incomplete_or_foreign_encoders_are_one_line(edit, message, tmp_path):
    directory = tmp_path / "bad"
    directory.mkdir()
    variables = model_garden_variables()
    edit(variables)
    write_object_based(str(directory / "bert_model.ckpt"), variables)
    (directory / "bert_config.json").write_bytes(open(os.path.join(GOLDEN, "model_garden_tiny",
                                                                    "bert_config.json"), "rb").read())
    with pytest.raises(ValueError, match=re.escape(message)):
        convert(str(directory), str(tmp_path / "out"), VOCAB)
    assert not (tmp_path / "out").exists()


def test_missing_vocab_is_one_line_saying_give_vocab_file(tmp_path):
    result = helpers.run_script("convert_checkpoint.py", f"--input_dir={os.path.join(GOLDEN, 'model_garden_v2_tiny')}",
                                f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("convert_checkpoint.py: error:")]
    assert len(errors) == 1 and "give --vocab_file" in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
