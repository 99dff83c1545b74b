"""convert_checkpoint.py: a real Hugging Face BERT converted to the original layout gives the
hidden states transformers computes (tests/golden/hf_minilm_golden.npz), conversions round-trip
bit for bit, and mapping errors are one clear line."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import tensorflow as tf

import convert_checkpoint
import extract_features
import modeling
import tokenization

from tests import helpers

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def checkpoint_tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def converted_real_model(tmp_path_factory):
    """The real model (all-MiniLM-L6-v2, Hugging Face layout) converted by the script."""
    output_dir = str(tmp_path_factory.mktemp("minilm_original"))
    result = helpers.run_script("convert_checkpoint.py", f"--input_dir={helpers.real_model_dir()}",
                                f"--output_dir={output_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--do_lower_case=True" in result.stderr
    assert sorted(os.listdir(output_dir)) == ["bert_config.json", "bert_model.ckpt.data-00000-of-00001",
                                              "bert_model.ckpt.index", "vocab.txt"]
    return output_dir


def test_converted_real_model_gives_the_hidden_states_of_transformers(converted_real_model, tmp_path):
    golden = np.load(os.path.join(GOLDEN, "hf_minilm_golden.npz"))
    layers = [int(i) for i in golden["layers"]]
    config = modeling.BertConfig.from_json_file(os.path.join(converted_real_model, "bert_config.json"))
    assert (config.num_hidden_layers, config.hidden_size, config.hidden_act) == (6, 384, "gelu_exact")
    input_file = tmp_path / "in.txt"
    sentences = ["The quick brown fox jumps over the lazy dog.",
                 "Contextual embeddings from a converted checkpoint ||| are they the same as the original?",
                 "H\u00e9llo, w\u00f6rld! Tokenization of caf\u00e9s in 2024."]
    input_file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    tokenizer = tokenization.FullTokenizer(os.path.join(converted_real_model, "vocab.txt"), do_lower_case=True)
    extractor = extract_features.FeatureExtractor(
        config, os.path.join(converted_real_model, "bert_model.ckpt"), layers, pooling=["mean"])
    output = tmp_path / "out.jsonl"
    extract_features.extract_features(str(input_file), str(output), extractor, tokenizer, max_seq_length=64)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    worst = 0.0
    for s, line in enumerate(lines):
        tokens = [feature["token"] for feature in line["features"]]
        np.testing.assert_array_equal(tokenizer.convert_tokens_to_ids(tokens), golden[f"{s}/input_ids"])
        for j, layer in enumerate(layers):
            ours = np.array([feature["layers"][j]["values"][:int(golden["dims"])] for feature in line["features"]])
            worst = max(worst, np.abs(ours - golden[f"{s}/layer_{layer}"]).max())
        mean = np.array(line["pooled"]["mean"][layers.index(5)]["values"])
        worst = max(worst, np.abs(mean - golden[f"{s}/mean_last"]).max())
    # Measured 2e-6: transformers computes the same erf gelu in float32, in another order.
    assert worst < 1e-5, worst


def test_huggingface_round_trip_is_bit_exact(converted_real_model, tmp_path):
    hf_dir = str(tmp_path / "hf")
    convert_checkpoint.convert_original_to_huggingface(
        os.path.join(converted_real_model, "bert_model.ckpt"),
        os.path.join(converted_real_model, "bert_config.json"),
        os.path.join(converted_real_model, "vocab.txt"), hf_dir)
    original = load_file(os.path.join(helpers.real_model_dir(), "model.safetensors"))
    written = load_file(os.path.join(hf_dir, "model.safetensors"))
    assert sorted(written) == sorted(name for name in original if name != "embeddings.position_ids")
    for name, value in written.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    config = json.load(open(os.path.join(hf_dir, "config.json")))
    assert (config["hidden_act"], config["architectures"], config["model_type"]) == ("gelu", ["BertModel"], "bert")
    assert os.stat(os.path.join(hf_dir, "model.safetensors")).st_mode & 0o044  # readable by others, as umask says

    back = str(tmp_path / "back")
    convert_checkpoint.convert_huggingface_to_original(hf_dir, back)
    first = checkpoint_tensors(os.path.join(converted_real_model, "bert_model.ckpt"))
    second = checkpoint_tensors(os.path.join(back, "bert_model.ckpt"))
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_every_head_survives_both_directions(tmp_path):
    """The original's MLM, NSP, classifier and SQuAD variables, via the bert.-prefixed layout."""
    prefix = os.path.join(GOLDEN, "modeling_tiny.ckpt")
    vocab = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                [f"w{i}" for i in range(94)])
    hf_dir, back = str(tmp_path / "hf"), str(tmp_path / "back")
    convert_checkpoint.convert_original_to_huggingface(prefix, os.path.join(GOLDEN, "modeling_tiny_config.json"),
                                                       vocab, hf_dir)
    written = load_file(os.path.join(hf_dir, "model.safetensors"))
    for name in ("bert.encoder.layer.1.attention.self.query.weight", "cls.predictions.transform.dense.weight",
                 "cls.predictions.bias", "cls.seq_relationship.weight", "classifier.weight", "qa_outputs.bias",
                 "bert.embeddings.LayerNorm.weight", "bert.pooler.dense.bias"):
        assert name in written, name
    original = checkpoint_tensors(prefix)
    np.testing.assert_array_equal(written["bert.encoder.layer.1.attention.self.query.weight"],
                                  original["bert/encoder/layer_1/attention/self/query/kernel"].T)
    np.testing.assert_array_equal(written["cls.seq_relationship.weight"],
                                  original["cls/seq_relationship/output_weights"])
    assert json.load(open(os.path.join(hf_dir, "config.json")))["architectures"] == ["BertForPreTraining"]

    config, count = convert_checkpoint.convert_huggingface_to_original(hf_dir, back)
    assert count == len(written)
    second = checkpoint_tensors(os.path.join(back, "bert_model.ckpt"))
    assert sorted(second) == sorted(name for name in original if "adam" not in name and name != "global_step")
    for name in second:
        np.testing.assert_array_equal(second[name], original[name], err_msg=name)


def test_fine_tuned_checkpoint_by_flags_keeps_heads_and_drops_adam_slots(tmp_path):
    """--init_checkpoint with --bert_config_file and --vocab_file, no --input_dir, to each output."""
    prefix = os.path.join(GOLDEN, "modeling_tiny.ckpt")
    vocab = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                [f"w{i}" for i in range(94)])
    flags = [f"--init_checkpoint={prefix}", f"--bert_config_file={os.path.join(GOLDEN, 'modeling_tiny_config.json')}",
             f"--vocab_file={vocab}"]
    original = checkpoint_tensors(prefix)
    result = helpers.run_script("convert_checkpoint.py", *flags, f"--output_dir={tmp_path / 'clean'}",
                                "--output_format=original")
    assert result.returncode == 0, result.stderr[-2000:]
    clean = checkpoint_tensors(str(tmp_path / "clean" / "bert_model.ckpt"))
    assert sorted(clean) == sorted(name for name in original if "adam" not in name and name != "global_step")
    assert "cls/squad/output_weights" in clean and "output_weights" in clean
    for name in clean:
        np.testing.assert_array_equal(clean[name], original[name], err_msg=name)
    result = helpers.run_script("convert_checkpoint.py", *flags, f"--output_dir={tmp_path / 'hf'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "classifier.weight" in load_file(str(tmp_path / "hf" / "model.safetensors"))


@pytest.fixture()
def tiny_hf_dir(tmp_path):
    """A small Hugging Face directory made from the extract_features golden checkpoint."""
    hf_dir = str(tmp_path / "hf")
    convert_checkpoint.convert_original_to_huggingface(
        os.path.join(GOLDEN, "extract_tiny.ckpt"), os.path.join(GOLDEN, "extract_tiny_config.json"),
        os.path.join(GOLDEN, "extract_tiny_vocab.txt"), hf_dir)
    return hf_dir


def edit_weights(hf_dir, edit):
    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_config(hf_dir, **changes):
    path = os.path.join(hf_dir, "config.json")
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, "w"))


def test_older_layernorm_names_and_bert_prefix_are_read(tiny_hf_dir, tmp_path):
    def rename(tensors):
        for name in list(tensors):
            new = "bert." + name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                                       "LayerNorm.beta")
            tensors[new] = tensors.pop(name)
    edit_weights(tiny_hf_dir, rename)
    convert_checkpoint.convert_huggingface_to_original(tiny_hf_dir, str(tmp_path / "out"))
    ours = checkpoint_tensors(str(tmp_path / "out" / "bert_model.ckpt"))
    original = checkpoint_tensors(os.path.join(GOLDEN, "extract_tiny.ckpt"))
    assert sorted(ours) == sorted(original)
    for name in ours:
        np.testing.assert_array_equal(ours[name], original[name])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("encoder.layer.2.output.dense.weight"),
     "tensor encoder.layer.2.output.dense.weight (original bert/encoder/layer_2/output/dense/kernel) is missing"),
    (lambda t: t.update({"pooler.dense.weight": np.zeros((16, 8), np.float32)}),
     "tensor pooler.dense.weight has shape [16, 8], but"),
])
def test_weight_mapping_errors_name_the_tensor(tiny_hf_dir, tmp_path, edit, message):
    edit_weights(tiny_hf_dir, edit)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        convert_checkpoint.convert_huggingface_to_original(tiny_hf_dir, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="roberta"), "model_type is 'roberta', not 'bert'"),
    (dict(hidden_act="silu"), "hidden_act 'silu' has no counterpart"),
    (dict(layer_norm_eps=1e-5), "layer_norm_eps 1e-05 differs"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type 'relative_key'"),
])
def test_non_bert_configs_are_refused(tiny_hf_dir, tmp_path, changes, message):
    edit_config(tiny_hf_dir, **changes)
    with pytest.raises(ValueError, match=message):
        convert_checkpoint.convert_huggingface_to_original(tiny_hf_dir, str(tmp_path / "out"))


def test_hidden_act_names_map_both_ways(tiny_hf_dir, tmp_path):
    for hf_name, ours in (("gelu", "gelu_exact"), ("gelu_new", "gelu"), ("gelu_pytorch_tanh", "gelu"),
                          ("relu", "relu")):
        edit_config(tiny_hf_dir, hidden_act=hf_name)
        config, _ = convert_checkpoint.convert_huggingface_to_original(tiny_hf_dir, str(tmp_path / "out"))
        assert config.hidden_act == ours
    assert json.load(open(os.path.join(tiny_hf_dir, "tokenizer_config.json")))["do_lower_case"] is True


def test_pytorch_bin_without_torch_says_what_to_do(tiny_hf_dir, tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    os.remove(os.path.join(tiny_hf_dir, "model.safetensors"))
    open(os.path.join(tiny_hf_dir, "pytorch_model.bin"), "wb").close()
    with pytest.raises(ValueError, match="PyTorch is not installed: install torch"):
        convert_checkpoint.convert_huggingface_to_original(tiny_hf_dir, str(tmp_path / "out"))


def test_script_error_is_one_line_and_writes_nothing(tiny_hf_dir, tmp_path):
    edit_config(tiny_hf_dir, model_type="gpt2")
    output_dir = tmp_path / "out"
    result = helpers.run_script("convert_checkpoint.py", f"--input_dir={tiny_hf_dir}", f"--output_dir={output_dir}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("convert_checkpoint.py: error:")]
    assert len(errors) == 1 and "model_type is 'gpt2', not 'bert'" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not output_dir.exists()
    shutil.rmtree(tiny_hf_dir)
    result = helpers.run_script("convert_checkpoint.py", f"--input_dir={tiny_hf_dir}", f"--output_dir={output_dir}")
    assert result.returncode == 1 and "is not a directory" in result.stderr
