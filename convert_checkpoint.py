"""Moves BERT weights between the original google-research layout and the other homes of BERT.

Every conversion reads the input into the original variables ({original name: array},
a `BertConfig`, the vocab) and writes them out again:

  format        reads                                         writes
  original      bert_config.json, bert_model.ckpt.*, vocab.txt  the same
  huggingface   config.json, model.safetensors (or shards,     model.safetensors, config.json,
                pytorch_model.bin with PyTorch), vocab.txt      vocab.txt, tokenizer_config.json
  keras_hub     a KerasHub BertBackbone preset: config.json,    the same, loadable with
                model.weights.h5, tokenizer.json, assets/       keras_hub.models.BertBackbone.from_preset
                tokenizer/vocabulary.txt
  model_garden  a Model Garden TF2 checkpoint (BertEncoder or   -
                BertEncoderV2, object-based), with bert_config.json
                and vocab.txt when present
  tf_hub        a TF Hub BERT encoder SavedModel: variables/    - (export_encoder.py writes one)
                variables.*, assets/vocab.txt

The encoder and the pooler always; the pre-training, classifier and SQuAD heads where the
format has them (the original and Hugging Face layouts).
"""

import collections
import glob
import json
import os
import re
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # first: it imports TensorFlow without the start-up notices

cli.import_tensorflow()

from absl import flags, logging
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 safetensors load)
import numpy as np
import tensorflow as tf

import modeling

FLAGS = flags.FLAGS

HF_CONFIG, HF_SAFETENSORS, HF_SAFETENSORS_INDEX, HF_PYTORCH = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
ORIGINAL_CONFIG, ORIGINAL_CHECKPOINT, VOCAB = "bert_config.json", "bert_model.ckpt", "vocab.txt"
KERAS_HUB_CONFIG, KERAS_HUB_WEIGHTS, KERAS_HUB_TOKENIZER, KERAS_HUB_METADATA = (
    "config.json", "model.weights.h5", "tokenizer.json", "metadata.json")
KERAS_HUB_VOCAB = os.path.join("assets", "tokenizer", "vocabulary.txt")
TF_HUB_VARIABLES = os.path.join("variables", "variables")
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
INPUT_FORMATS = ("original", "huggingface", "keras_hub", "model_garden", "tf_hub")
OUTPUT_FORMATS = ("original", "huggingface", "keras_hub")

# Hugging Face `hidden_act` -> ours. HF "gelu" is the exact erf form (the original's 2018
# code); the tanh form that the original uses since 2019 is HF "gelu_new".
HF_TO_ORIGINAL_ACTIVATION = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                             "gelu_fast": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear"}
ORIGINAL_TO_HF_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu", "erf_gelu": "gelu", "relu": "relu",
                             "tanh": "tanh", "linear": "linear"}
# Tensors of Hugging Face files that the original has no variable for, and that carry nothing:
# a position-id buffer, and the MLM decoder tied to the word embeddings and its bias.
HF_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def define_flags():
    """Defines the script's flags (only when run as a script)."""
    flags.DEFINE_string("input_dir", None,
                        "A BERT model directory in one of the formats " + ", ".join(INPUT_FORMATS) + "; its "
                        "format is detected from its files.")
    flags.DEFINE_string("output_dir", None, "Where to write the model in --output_format.")
    flags.DEFINE_enum("output_format", None, list(OUTPUT_FORMATS),
                      "The format to write. Default: huggingface for an original input (as before this "
                      "flag existed), original for any other.")
    flags.DEFINE_string("init_checkpoint", None,
                        "An original or Model Garden input: the checkpoint to convert when it is not "
                        "input_dir/bert_model.ckpt (e.g. a fine-tuned output_dir/model.ckpt-1000).")
    flags.DEFINE_string("bert_config_file", None,
                        "An original input without --input_dir, or a Model Garden / TF Hub one whose config "
                        "should not be read off its shapes: bert_config.json.")
    flags.DEFINE_string("vocab_file", None,
                        "An original input without --input_dir, or a Model Garden / TF Hub one without "
                        "vocab.txt: the vocab.")
    flags.DEFINE_bool("do_lower_case", True,
                      "An original-layout input: the casing written to the output's tokenizer settings "
                      "(True for uncased models). Hugging Face and KerasHub inputs carry their own.")


# ------------------------------------------------------------------------------------------
# Names: one table, used in both directions.

TensorName = collections.namedtuple("TensorName", ["original", "huggingface", "transpose"])
TensorName.__doc__ = """One tensor in both layouts; `transpose` for dense kernels (HF stores
torch Linear weights [out, in], the original [in, out])."""


def tensor_names(config, heads=(), num_labels=None, prefix=""):
    """Every tensor of a BERT model with `heads`, as `TensorName`s in the original's order.

    Args:
        config: `modeling.BertConfig`.
        heads: any of "masked_lm", "next_sentence", "classifier", "squad".
        num_labels: rows of the classifier head.
        prefix: "bert." for the Hugging Face models with heads (BertForPreTraining, ...),
            "" for a bare BertModel.
    """
    shapes = modeling.original_variable_shapes(
        config, masked_lm="masked_lm" in heads, next_sentence="next_sentence" in heads,
        num_labels=num_labels if "classifier" in heads else None, squad="squad" in heads)
    return [huggingface_name(name, prefix) for name in shapes]


def huggingface_name(original, prefix=""):
    """The `TensorName` of an original variable name."""
    fixed = {
        "cls/predictions/output_bias": "cls.predictions.bias",
        "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
        "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
        "output_weights": "classifier.weight",
        "output_bias": "classifier.bias",
        "cls/squad/output_weights": "qa_outputs.weight",
        "cls/squad/output_bias": "qa_outputs.bias",
    }
    if original in fixed:
        return TensorName(original, fixed[original], False)
    parts = original.split("/")
    encoder = parts[0] == "bert"
    if encoder:
        parts = parts[1:]
    last = parts[-1]
    transpose = last == "kernel"
    if parts[0] == "embeddings" and len(parts) == 2:
        parts = parts + ["weight"]  # word/position/token_type tables
    else:
        parts[-1] = {"kernel": "weight", "gamma": "weight", "beta": "bias"}.get(last, last)
    name = ".".join(parts)
    name = name.replace("encoder.layer_", "encoder.layer.")
    return TensorName(original, (prefix if encoder else "") + name, transpose)


# ------------------------------------------------------------------------------------------
# Configs.


def bert_config_from_huggingface(hf_config, path):
    """`modeling.BertConfig` from a Hugging Face config.json dict; ValueError if it is not BERT."""
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"{path}: model_type is {model_type!r}, not 'bert'; this converter reads BERT models only")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type {hf_config['position_embedding_type']!r} is not the "
                         f"original BERT's 'absolute'")
    epsilon = hf_config.get("layer_norm_eps", 1e-12)
    if not np.isclose(epsilon, 1e-12, rtol=1e-3, atol=0):
        raise ValueError(f"{path}: layer_norm_eps {epsilon} differs from the original BERT's 1e-12, which this "
                         f"project's LayerNorm uses")
    if hf_config.get("is_decoder") or hf_config.get("add_cross_attention"):
        raise ValueError(f"{path}: a BERT decoder (is_decoder/add_cross_attention) is not the original BERT")
    activation = hf_config.get("hidden_act", "gelu")
    if activation not in HF_TO_ORIGINAL_ACTIVATION:
        raise ValueError(f"{path}: hidden_act {activation!r} has no counterpart here (use one of "
                         f"{', '.join(HF_TO_ORIGINAL_ACTIVATION)})")
    fields = {}
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size"):
        if field not in hf_config:
            raise ValueError(f"{path}: field {field} is missing; is this a BERT config.json?")
        fields[field] = hf_config[field]
    config = modeling.BertConfig(
        hidden_act=HF_TO_ORIGINAL_ACTIVATION[activation],
        hidden_dropout_prob=hf_config.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=hf_config.get("attention_probs_dropout_prob", 0.1),
        initializer_range=hf_config.get("initializer_range", 0.02), **fields)
    try:
        modeling.validate_config(config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return config


def huggingface_config_from_bert(config, heads, num_labels=None):
    """A Hugging Face config.json dict for `config` and the heads of the checkpoint."""
    activation = config.hidden_act
    if not isinstance(activation, str) or activation.lower() not in ORIGINAL_TO_HF_ACTIVATION:
        raise ValueError(f"hidden_act {activation!r} of the BERT config has no Hugging Face name")
    if "masked_lm" in heads and "next_sentence" in heads:
        architecture = "BertForPreTraining"
    elif "masked_lm" in heads:
        architecture = "BertForMaskedLM"
    elif "classifier" in heads:
        architecture = "BertForSequenceClassification"
    elif "squad" in heads:
        architecture = "BertForQuestionAnswering"
    elif "next_sentence" in heads:
        architecture = "BertForNextSentencePrediction"
    else:
        architecture = "BertModel"
    hf_config = {
        "architectures": [architecture], "model_type": "bert",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers, "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": ORIGINAL_TO_HF_ACTIVATION[activation.lower()],
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range, "layer_norm_eps": modeling.LAYER_NORM_EPSILON,
        "pad_token_id": 0, "position_embedding_type": "absolute",
    }
    if "classifier" in heads:
        hf_config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        hf_config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return hf_config


# ------------------------------------------------------------------------------------------
# Reading.


def _read_json(path):
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            value = json.load(f)
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'message', None) or e}") from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return value


def read_huggingface_tensors(directory):
    """{name: float32 numpy array} of a Hugging Face model directory.

    Reads model.safetensors (or the shards of model.safetensors.index.json) with the
    safetensors package; pytorch_model.bin only when PyTorch is installed.
    """
    from safetensors import SafetensorError, safe_open  # noqa: F401  (runtime dependency)

    def read_safetensors(path):
        try:
            with safe_open(path, framework="np") as f:
                return {name: f.get_tensor(name) for name in f.keys()}
        except (OSError, SafetensorError, TypeError, ValueError) as e:
            raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    safetensors_path = os.path.join(directory, HF_SAFETENSORS)
    index_path = os.path.join(directory, HF_SAFETENSORS_INDEX)
    pytorch_path = os.path.join(directory, HF_PYTORCH)
    if os.path.exists(safetensors_path):
        tensors = read_safetensors(safetensors_path)
    elif os.path.exists(index_path):
        weight_map = _read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no weight_map")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(os.path.join(directory, shard)))
    elif os.path.exists(pytorch_path):
        try:
            import torch
        except ImportError:
            raise ValueError(f"{pytorch_path} is a PyTorch pickle and PyTorch is not installed: install torch to "
                             f"convert it, or convert the model to model.safetensors first") from None
        state = torch.load(pytorch_path, map_location="cpu", weights_only=True)
        tensors = {name: value.float().numpy() if value.is_floating_point() else value.numpy()
                   for name, value in state.items()}
    else:
        raise ValueError(f"no weights in {directory}: expected {HF_SAFETENSORS}, {HF_SAFETENSORS_INDEX} or "
                         f"{HF_PYTORCH}")
    return {name: value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) or
            value.dtype == ml_dtypes.bfloat16 else value for name, value in tensors.items()}


def detect_heads(names, prefix_names):
    """The heads whose tensors are in `names` (HF names if prefix_names, else original names)."""
    markers = ({"masked_lm": "cls.predictions.bias", "next_sentence": "cls.seq_relationship.weight",
                "classifier": "classifier.weight", "squad": "qa_outputs.weight"} if prefix_names else
               {"masked_lm": "cls/predictions/output_bias", "next_sentence": "cls/seq_relationship/output_weights",
                "classifier": "output_weights", "squad": "cls/squad/output_weights"})
    return tuple(head for head, marker in markers.items() if marker in names)


# ------------------------------------------------------------------------------------------
# A model in the original variables: what every reader returns and every writer takes.

BertWeights = collections.namedtuple("BertWeights", ["config", "tensors", "vocab_file", "do_lower_case", "source"])
BertWeights.__doc__ = """A BERT model in the original layout, whatever file it came from.

config: `modeling.BertConfig`; tensors: ordered {original variable name: float32 array}
(encoder, pooler, heads); vocab_file: path of the WordPiece vocab; do_lower_case: the
casing the source records (None when it records none); source: what was read, for logs.
"""


def heads_of(tensors):
    """The heads ("masked_lm", "next_sentence", "classifier", "squad") among original names."""
    return detect_heads(set(tensors), prefix_names=False)


def read_original(init_checkpoint, bert_config_file, vocab_file, do_lower_case=True):
    """`BertWeights` of an original-layout checkpoint (Adam slots and `global_step` left out)."""
    config = modeling.BertConfig.from_json_file(bert_config_file)
    modeling.validate_config(config)
    prefix = modeling.resolve_checkpoint(init_checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot read checkpoint {prefix}: {str(e).splitlines()[0]}") from None
    shapes = reader.get_variable_to_shape_map()
    heads = detect_heads(set(shapes), prefix_names=False)
    expected = modeling.original_variable_shapes(
        config, masked_lm="masked_lm" in heads, next_sentence="next_sentence" in heads,
        num_labels=shapes["output_weights"][0] if "classifier" in heads else None, squad="squad" in heads)
    modeling.check_encoder_layers(prefix, shapes, expected, keep_all=True)
    tensors = collections.OrderedDict()
    for name, shape in expected.items():
        if name not in shapes:
            raise ValueError(f"checkpoint {prefix} lacks {name}: not a complete BERT checkpoint for "
                             f"{bert_config_file}")
        if tuple(shapes[name]) != tuple(shape):
            raise ValueError(f"checkpoint {prefix}: {name} has shape {list(shapes[name])} but "
                             f"{bert_config_file} needs {list(shape)}")
        tensors[name] = modeling.read_checkpoint_tensor(reader, prefix, name).astype(np.float32)
    if not os.path.exists(vocab_file):
        raise ValueError(f"vocab file {vocab_file} does not exist")
    return BertWeights(config, tensors, vocab_file, do_lower_case, prefix)


def write_original(weights, output_dir, shown_as=None):
    """Writes bert_model.ckpt, bert_config.json and vocab.txt; returns the number of tensors.

    `shown_as`: the directory the log names (output_dir may be a temporary one, moved there).
    """
    where = shown_as or output_dir
    tf.io.gfile.makedirs(output_dir)
    modeling.save_checkpoint(os.path.join(output_dir, ORIGINAL_CHECKPOINT), weights.tensors)
    cli.write_text(os.path.join(output_dir, ORIGINAL_CONFIG), weights.config.to_json_string())
    _copy_atomically(weights.vocab_file, os.path.join(output_dir, VOCAB))
    logging.info("Converted %d tensors (heads: %s) of %s to %s. Use: --bert_config_file=%s "
                 "--init_checkpoint=%s --vocab_file=%s%s", len(weights.tensors),
                 ", ".join(heads_of(weights.tensors)) or "none", weights.source, where,
                 os.path.join(where, ORIGINAL_CONFIG), os.path.join(where, ORIGINAL_CHECKPOINT),
                 os.path.join(where, VOCAB),
                 "" if weights.do_lower_case is None else f" --do_lower_case={weights.do_lower_case}")
    return len(weights.tensors)


# ------------------------------------------------------------------------------------------
# Hugging Face.


def read_huggingface(hf_dir):
    """`BertWeights` of a Hugging Face BERT directory.

    Raises:
        ValueError: not a BERT model, a tensor missing or of the wrong shape (named).
    """
    config_path = os.path.join(hf_dir, HF_CONFIG)
    config = bert_config_from_huggingface(_read_json(config_path), config_path)
    vocab_path = os.path.join(hf_dir, VOCAB)
    if not os.path.exists(vocab_path):
        raise ValueError(f"no {VOCAB} in {hf_dir}: the WordPiece vocab is needed next to the weights")
    tensors = read_huggingface_tensors(hf_dir)
    prefix = "bert." if any(name.startswith("bert.") for name in tensors) else ""
    heads = detect_heads(set(tensors), prefix_names=True)
    num_labels = tensors["classifier.weight"].shape[0] if "classifier" in heads else None
    names = tensor_names(config, heads, num_labels, prefix)
    expected_shapes = modeling.original_variable_shapes(
        config, masked_lm="masked_lm" in heads, next_sentence="next_sentence" in heads,
        num_labels=num_labels, squad="squad" in heads)

    def find(name):
        """The tensor under `name`, or under the older LayerNorm.gamma/beta spelling."""
        for candidate in (name, name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta")):
            if candidate in tensors:
                return candidate
        return None

    converted, used = collections.OrderedDict(), set()
    for entry in names:
        found = find(entry.huggingface)
        if found is None:
            raise ValueError(f"{hf_dir}: tensor {entry.huggingface} (original {entry.original}) is missing; the "
                             f"weights do not hold a complete BERT model of {config_path}")
        value = tensors[found].T if entry.transpose else tensors[found]
        if tuple(value.shape) != tuple(expected_shapes[entry.original]):
            raise ValueError(f"{hf_dir}: tensor {found} has shape {list(tensors[found].shape)}, but {config_path} "
                             f"needs {list(expected_shapes[entry.original][::-1 if entry.transpose else 1])}")
        converted[entry.original] = np.ascontiguousarray(value, dtype=np.float32)
        used.add(found)
    unused = [name for name in tensors if name not in used and name.split("bert.", 1)[-1] not in HF_IGNORED
              and name not in HF_IGNORED]
    if unused:
        logging.warning("%d tensors have no original BERT variable and were left out: %s%s", len(unused),
                        ", ".join(unused[:8]), ", ..." if len(unused) > 8 else "")
    _check_vocab_fits(vocab_path, config, config_path)
    return BertWeights(config, converted, vocab_path, _read_lower_case(hf_dir), hf_dir)


def write_huggingface(weights, output_dir, shown_as=None):
    """Writes model.safetensors, config.json, vocab.txt and tokenizer_config.json.

    Returns:
        the number of tensors written.
    """
    from safetensors.numpy import save_file  # runtime dependency

    heads = heads_of(weights.tensors)
    num_labels = weights.tensors["output_weights"].shape[0] if "classifier" in heads else None
    tensors = collections.OrderedDict()
    for entry in tensor_names(weights.config, heads, num_labels, "bert." if heads else ""):
        value = weights.tensors[entry.original]
        tensors[entry.huggingface] = np.ascontiguousarray(value.T if entry.transpose else value)
    hf_config = huggingface_config_from_bert(weights.config, heads, num_labels)
    do_lower_case = True if weights.do_lower_case is None else weights.do_lower_case

    tf.io.gfile.makedirs(output_dir)
    with cli.atomic_output(os.path.join(output_dir, HF_SAFETENSORS), named=True) as temp:
        save_file(tensors, temp, metadata={"format": "pt"})
        _make_readable(temp)
    cli.write_text(os.path.join(output_dir, HF_CONFIG), json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    cli.write_text(os.path.join(output_dir, "tokenizer_config.json"),
                      json.dumps({"do_lower_case": bool(do_lower_case), "tokenizer_class": "BertTokenizer"},
                                 indent=2) + "\n")
    _copy_atomically(weights.vocab_file, os.path.join(output_dir, VOCAB))
    logging.info("Converted %d tensors (heads: %s) of %s to %s (%s)", len(tensors), ", ".join(heads) or "none",
                 weights.source, shown_as or output_dir, hf_config["architectures"][0])
    return len(tensors)


def convert_huggingface_to_original(hf_dir, output_dir):
    """Writes bert_model.ckpt, bert_config.json and vocab.txt for a Hugging Face BERT directory.

    Returns:
        (the `modeling.BertConfig`, the number of tensors written).
    """
    weights = read_huggingface(hf_dir)
    return weights.config, write_original(weights, output_dir)


def convert_original_to_huggingface(init_checkpoint, bert_config_file, vocab_file, output_dir, do_lower_case=True):
    """Writes the Hugging Face files for an original checkpoint; returns the number of tensors."""
    return write_huggingface(read_original(init_checkpoint, bert_config_file, vocab_file, do_lower_case),
                             output_dir)


# ------------------------------------------------------------------------------------------
# KerasHub: a BertBackbone preset directory.
#
# KerasHub's BertBackbone is the original encoder and pooler under other names: the same
# post-LayerNorm blocks, LayerNorm epsilon 1e-12, gelu in the tanh form (its only
# activation) and one dropout rate. Its attention kernels are the original [H, H] kernels
# reshaped to [H, N, D] (query, key, value; biases [N, D]) and [N, D, H] (output), so
# every conversion is a reshape and round-trips bit for bit. The weights file is Keras 3's
# model.weights.h5, written here with h5py in the groups Keras saves a BertBackbone in.

KERAS_HUB_ACTIVATION = "gelu"  # keras_hub's gelu_approximate: the tanh form, our "gelu"


def keras_hub_layers(config):
    """Every layer of a BertBackbone in its weights file, in Keras's order.

    Returns:
        a list of (h5 group, layer name, [(original variable, KerasHub shape), ...]); layers
        without weights (inputs, dropout, add, softmax) have an empty list.
    """
    h, n = config.hidden_size, config.num_attention_heads
    d = h // n
    layers = [("layers/input_layer", "token_ids", []), ("layers/input_layer_1", "segment_ids", []),
              ("layers/input_layer_2", "padding_mask", []),
              ("layers/reversible_embedding", "token_embedding",
               [("bert/embeddings/word_embeddings", (config.vocab_size, h))]),
              ("layers/position_embedding", "position_embedding",
               [("bert/embeddings/position_embeddings", (config.max_position_embeddings, h))]),
              ("layers/embedding", "segment_embedding",
               [("bert/embeddings/token_type_embeddings", (config.type_vocab_size, h))]),
              ("layers/add", "embeddings_add", []),
              ("layers/layer_normalization", "embeddings_layer_norm",
               [("bert/embeddings/LayerNorm/gamma", (h,)), ("bert/embeddings/LayerNorm/beta", (h,))]),
              ("layers/dropout", "embeddings_dropout", [])]
    for i in range(config.num_hidden_layers):
        group = "layers/transformer_encoder" + (f"_{i}" if i else "")
        ours = f"bert/encoder/layer_{i}/"
        attention = group + "/_self_attention_layer"
        layers += [
            (group, f"transformer_layer_{i}", []),
            (attention, "self_attention_layer", []),
            (attention + "/_dropout_layer", "dropout" + (f"_{i}" if i else ""), []),
            (attention + "/_softmax", "softmax" + (f"_{i}" if i else ""), []),
        ]
        for part in ("query", "key", "value"):
            layers.append((f"{attention}/{part}_dense", part,
                           [(ours + f"attention/self/{part}/kernel", (h, n, d)),
                            (ours + f"attention/self/{part}/bias", (n, d))]))
        layers += [
            (attention + "/output_dense", "attention_output",
             [(ours + "attention/output/dense/kernel", (n, d, h)), (ours + "attention/output/dense/bias", (h,))]),
            (group + "/_self_attention_dropout", "self_attention_dropout", []),
            (group + "/_self_attention_layer_norm", "self_attention_layer_norm",
             [(ours + "attention/output/LayerNorm/gamma", (h,)), (ours + "attention/output/LayerNorm/beta", (h,))]),
            (group + "/_feedforward_intermediate_dense", "feedforward_intermediate_dense",
             [(ours + "intermediate/dense/kernel", (h, config.intermediate_size)),
              (ours + "intermediate/dense/bias", (config.intermediate_size,))]),
            (group + "/_feedforward_output_dense", "feedforward_output_dense",
             [(ours + "output/dense/kernel", (config.intermediate_size, h)), (ours + "output/dense/bias", (h,))]),
            (group + "/_feedforward_dropout", "feedforward_dropout", []),
            (group + "/_feedforward_layer_norm", "feedforward_layer_norm",
             [(ours + "output/LayerNorm/gamma", (h,)), (ours + "output/LayerNorm/beta", (h,))]),
        ]
    layers.append(("layers/dense", "pooled_dense",
                   [("bert/pooler/dense/kernel", (h, h)), ("bert/pooler/dense/bias", (h,))]))
    return layers


def bert_config_from_keras_hub(preset_config, path):
    """`modeling.BertConfig` of a KerasHub config.json dict; ValueError if it is not a BertBackbone."""
    class_name = preset_config.get("class_name")
    if class_name != "BertBackbone":
        raise ValueError(f"{path}: class_name is {class_name!r}, not 'BertBackbone'; this converter reads "
                         f"KerasHub BERT backbones only")
    fields = preset_config.get("config")
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: no 'config' object")
    missing = [field for field in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim")
               if field not in fields]
    if missing:
        raise ValueError(f"{path}: field config.{missing[0]} is missing; is this a BertBackbone preset?")
    dropout = fields.get("dropout", 0.1)
    config = modeling.BertConfig(
        vocab_size=fields["vocabulary_size"], hidden_size=fields["hidden_dim"],
        num_hidden_layers=fields["num_layers"], num_attention_heads=fields["num_heads"],
        intermediate_size=fields["intermediate_dim"], hidden_act=KERAS_HUB_ACTIVATION,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=fields.get("max_sequence_length", 512),
        type_vocab_size=fields.get("num_segments", 2), initializer_range=0.02)
    try:
        modeling.validate_config(config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return config


def keras_hub_config_from_bert(config):
    """KerasHub's config.json dict of a BertBackbone for `config`."""
    return {
        "module": "keras_hub.src.models.bert.bert_backbone",
        "class_name": "BertBackbone",
        "config": {
            "name": "bert_backbone", "trainable": True,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                      "registered_name": None},
            "vocabulary_size": config.vocab_size, "num_layers": config.num_hidden_layers,
            "num_heads": config.num_attention_heads, "hidden_dim": config.hidden_size,
            "intermediate_dim": config.intermediate_size, "dropout": config.hidden_dropout_prob,
            "max_sequence_length": config.max_position_embeddings, "num_segments": config.type_vocab_size,
        },
        "registered_name": "keras_hub>BertBackbone",
    }


def keras_hub_tokenizer_config(do_lower_case):
    """KerasHub's tokenizer.json dict of a BertTokenizer with the original's casing rules."""
    return {
        "module": "keras_hub.src.models.bert.bert_tokenizer",
        "class_name": "BertTokenizer",
        "config": {
            "name": "bert_tokenizer", "trainable": True,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int32"},
                      "registered_name": None},
            "config_file": KERAS_HUB_TOKENIZER, "vocabulary": None, "sequence_length": None,
            # The original's uncased models lower-case and strip accents; cased ones do neither.
            "lowercase": bool(do_lower_case), "strip_accents": bool(do_lower_case), "split": True,
            "suffix_indicator": "##", "oov_token": "[UNK]", "special_tokens": None,
            "special_tokens_in_strings": False,
        },
        "registered_name": "keras_hub>BertTokenizer",
    }


def read_keras_hub(preset_dir):
    """`BertWeights` of a KerasHub BertBackbone preset directory.

    Raises:
        ValueError: not a BertBackbone, the weights file unreadable, a weight missing or of
            the wrong shape (named).
    """
    import h5py  # a dependency of TensorFlow

    config_path = os.path.join(preset_dir, KERAS_HUB_CONFIG)
    config = bert_config_from_keras_hub(_read_json(config_path), config_path)
    vocab_path = os.path.join(preset_dir, KERAS_HUB_VOCAB)
    if not os.path.exists(vocab_path):
        raise ValueError(f"no {KERAS_HUB_VOCAB} in {preset_dir}: the WordPiece vocab is needed next to the weights")
    weights_path = os.path.join(preset_dir, KERAS_HUB_WEIGHTS)
    if not os.path.exists(weights_path):
        raise ValueError(f"no {KERAS_HUB_WEIGHTS} in {preset_dir}: a KerasHub preset keeps its weights there")
    tensors = collections.OrderedDict()
    try:
        with h5py.File(weights_path, "r") as f:
            for group, _, variables in keras_hub_layers(config):
                for index, (original, shape) in enumerate(variables):
                    path = f"{group}/vars/{index}"
                    if path not in f:
                        raise ValueError(f"{weights_path}: weight {path} (original {original}) is missing; the "
                                         f"file does not hold the BertBackbone of {config_path}")
                    value = np.asarray(f[path])
                    if value.shape != shape:
                        raise ValueError(f"{weights_path}: weight {path} has shape {list(value.shape)}, but "
                                         f"{config_path} needs {list(shape)}")
                    tensors[original] = value.astype(np.float32)
    except OSError as e:
        raise ValueError(f"cannot read {weights_path}: {str(e).splitlines()[0]} (is it a Keras .weights.h5 file?)"
                         ) from None
    expected = modeling.original_variable_shapes(config)
    tensors = collections.OrderedDict((name, tensors[name].reshape(shape)) for name, shape in expected.items())
    _check_vocab_fits(vocab_path, config, config_path)
    do_lower_case = None
    tokenizer_path = os.path.join(preset_dir, KERAS_HUB_TOKENIZER)
    if os.path.exists(tokenizer_path):
        lowercase = _read_json(tokenizer_path).get("config", {}).get("lowercase")
        do_lower_case = lowercase if isinstance(lowercase, bool) else None
    return BertWeights(config, tensors, vocab_path, do_lower_case, preset_dir)


def write_keras_hub(weights, output_dir, shown_as=None):
    """Writes a KerasHub BertBackbone preset (config.json, model.weights.h5, tokenizer.json,
    metadata.json, assets/tokenizer/vocabulary.txt); returns the number of tensors written.

    KerasHub's BertBackbone has no heads and only the tanh gelu: heads are left out, and a
    config with another activation is written with a warning, since KerasHub will compute
    gelu in the tanh form.
    """
    import h5py  # a dependency of TensorFlow

    config = weights.config
    activation = config.hidden_act.lower() if isinstance(config.hidden_act, str) else config.hidden_act
    if activation != KERAS_HUB_ACTIVATION:
        logging.warning("hidden_act of %s is %r, but KerasHub's BertBackbone always uses gelu in the tanh form: "
                        "KerasHub's outputs will differ from this model's (see the README for how much)",
                        weights.source, config.hidden_act)
    if config.attention_probs_dropout_prob != config.hidden_dropout_prob:
        logging.warning("KerasHub has one dropout rate: using hidden_dropout_prob %s (attention_probs_dropout_prob "
                        "%s is dropped)", config.hidden_dropout_prob, config.attention_probs_dropout_prob)
    heads = heads_of(weights.tensors)
    if heads:
        logging.warning("KerasHub's BertBackbone has no heads: %s left out", ", ".join(heads))

    tf.io.gfile.makedirs(os.path.join(output_dir, os.path.dirname(KERAS_HUB_VOCAB)))
    count = 0
    with cli.atomic_output(os.path.join(output_dir, KERAS_HUB_WEIGHTS), named=True) as temp:
        with h5py.File(temp, "w") as f:
            f.create_group("vars").attrs["name"] = "bert_backbone"
            for group, name, variables in keras_hub_layers(config):
                values = f.require_group(group).require_group("vars")
                values.attrs["name"] = name
                for index, (original, shape) in enumerate(variables):
                    values.create_dataset(str(index), data=weights.tensors[original].reshape(shape))
                    count += 1
        _make_readable(temp)
    do_lower_case = True if weights.do_lower_case is None else weights.do_lower_case
    parameters = sum(int(np.prod(value.shape)) for name, value in weights.tensors.items() if name.startswith("bert/"))
    metadata = {"keras_version": keras_version(), "parameter_count": parameters,
                "tasks": ["MaskedLM", "TextClassifier", "TextEmbedder"]}
    for name, value in ((KERAS_HUB_CONFIG, keras_hub_config_from_bert(config)),
                        (KERAS_HUB_TOKENIZER, keras_hub_tokenizer_config(do_lower_case)),
                        (KERAS_HUB_METADATA, metadata)):
        cli.write_text(os.path.join(output_dir, name), json.dumps(value, indent=4) + "\n")
    _copy_atomically(weights.vocab_file, os.path.join(output_dir, KERAS_HUB_VOCAB))
    logging.info("Converted %d tensors of %s to the KerasHub preset %s. Use: "
                 "keras_hub.models.BertBackbone.from_preset(%r)", count, weights.source, shown_as or output_dir,
                 shown_as or output_dir)
    return count


def keras_version():
    import keras  # a runtime dependency, already loaded by modeling
    return keras.__version__

# ------------------------------------------------------------------------------------------
# Model Garden and TF Hub: object-based checkpoints.
#
# Model Garden's TF2 checkpoints and the variables of TF Hub's BERT SavedModels are
# object-based: their keys follow the Python objects (encoder/layer_with_weights-4/...,
# encoder/_transformer_layers/0/..., variables/17/...), which differ between encoder
# classes and exporters. The object graph stored with them also records each variable's
# own name (transformer/layer_0/self_attention/query/kernel, ...), the same for all of
# them, and that is what is mapped here; no Model Garden code is needed. The attention
# kernels are the original's reshaped to [H, N, D] and [N, D, H].

OBJECT_BASED_NAMES = [(re.compile(r"^bert/(?:embeddings|encoder|pooler)/.*$"), r"\g<0>")] + [  # original names
    (re.compile(r"(?:^|/)" + pattern + "$"), original) for pattern, original in (
    (r"word_embeddings/embeddings", "bert/embeddings/word_embeddings"),
    (r"position_embedding/embeddings", "bert/embeddings/position_embeddings"),
    (r"type_embeddings/embeddings", "bert/embeddings/token_type_embeddings"),
    (r"embeddings/layer_norm/(gamma|beta)", r"bert/embeddings/LayerNorm/\1"),
    (r"transformer/layer_(\d+)/self_attention/(query|key|value)/(kernel|bias)",
     r"bert/encoder/layer_\1/attention/self/\2/\3"),
    (r"transformer/layer_(\d+)/self_attention/attention_output/(kernel|bias)",
     r"bert/encoder/layer_\1/attention/output/dense/\2"),
    (r"transformer/layer_(\d+)/self_attention_layer_norm/(gamma|beta)",
     r"bert/encoder/layer_\1/attention/output/LayerNorm/\2"),
    (r"transformer/layer_(\d+)/intermediate/(kernel|bias)", r"bert/encoder/layer_\1/intermediate/dense/\2"),
    (r"transformer/layer_(\d+)/output/(kernel|bias)", r"bert/encoder/layer_\1/output/dense/\2"),
    (r"transformer/layer_(\d+)/output_layer_norm/(gamma|beta)", r"bert/encoder/layer_\1/output/LayerNorm/\2"),
    (r"pooler_transform/(kernel|bias)", r"bert/pooler/dense/\1"),
)]
# Variables of encoders that are not the original BERT (ALBERT-style factorised embeddings).
OBJECT_BASED_NOT_BERT = re.compile(r"(?:^|/)embedding_projection/")


def object_based_variables(prefix):
    """{variable name (without ":0"): checkpoint key} of an object-based checkpoint."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot read checkpoint {prefix}: {str(e).splitlines()[0]}") from None
    if not reader.has_tensor(OBJECT_GRAPH):
        raise ValueError(f"checkpoint {prefix} is not object-based (no {OBJECT_GRAPH}): not a Model Garden or "
                         f"TF Hub checkpoint")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH))
    names = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.name != "VARIABLE_VALUE":
                continue
            # export_encoder.py's SavedModels track every variable under its original name as
            # well ("bert/..." escaped into the key, "/" as ".S"); Keras 3 names are not paths.
            ours = re.match(r"original_variables/(.+)/\.ATTRIBUTES/VARIABLE_VALUE$", attribute.checkpoint_key)
            if ours:
                name = re.sub(r"\.(S|\.)", lambda m: "/" if m.group(1) == "S" else ".", ours.group(1))
            elif attribute.full_name:
                name = re.sub(r":\d+$", "", attribute.full_name)
            else:
                continue
            names.setdefault(name, attribute.checkpoint_key)
    return reader, names


def bert_config_from_shapes(shapes, source):
    """The `BertConfig` that original variables of these shapes belong to (gelu in the tanh
    form, Model Garden's and TF Hub's BERT activation; dropouts 0.1)."""
    layers = sorted({int(m.group(1)) for m in (re.match(r"bert/encoder/layer_(\d+)/", name) for name in shapes)
                     if m})
    if not layers or "bert/embeddings/word_embeddings" not in shapes:
        raise ValueError(f"{source} holds no BERT encoder (no word_embeddings and transformer/layer_N variables)")
    query = shapes.get("bert/encoder/layer_0/attention/self/query/kernel")
    intermediate = shapes.get("bert/encoder/layer_0/intermediate/dense/kernel")
    if query is None or len(query) != 3 or intermediate is None:
        raise ValueError(f"{source}: cannot read the number of heads off the attention kernels; give "
                         f"--bert_config_file")
    vocab_size, hidden = shapes["bert/embeddings/word_embeddings"]
    return modeling.BertConfig(
        vocab_size=int(vocab_size), hidden_size=int(hidden), num_hidden_layers=len(layers),
        num_attention_heads=int(query[1]), intermediate_size=int(intermediate[1]), hidden_act="gelu",
        max_position_embeddings=int(shapes.get("bert/embeddings/position_embeddings", (512,))[0]),
        type_vocab_size=int(shapes.get("bert/embeddings/token_type_embeddings", (2,))[0]))


def read_object_based(prefix, bert_config_file=None, vocab_file=None, do_lower_case=None):
    """`BertWeights` of a Model Garden checkpoint or TF Hub SavedModel variables (encoder and
    pooler). The config is `bert_config_file` when given, else read off the shapes."""
    reader, names = object_based_variables(prefix)
    shapes, keys = {}, {}
    unmapped = []
    for name, key in sorted(names.items()):
        if OBJECT_BASED_NOT_BERT.search(name):
            raise ValueError(f"checkpoint {prefix} has {name}: factorised embeddings are not the original BERT")
        for pattern, original in OBJECT_BASED_NAMES:
            match = pattern.search(name)
            if match:
                original = match.expand(original)
                if original in keys and keys[original] != key:
                    raise ValueError(f"checkpoint {prefix} holds two encoders ({name} and another); convert a "
                                     f"checkpoint of one")
                shapes[original], keys[original] = tuple(reader.get_variable_to_shape_map()[key]), key
                break
        else:
            unmapped.append(name)
    config = (modeling.BertConfig.from_json_file(bert_config_file) if bert_config_file
              else bert_config_from_shapes(shapes, f"checkpoint {prefix}"))
    modeling.validate_config(config)
    tensors = collections.OrderedDict()
    for original, shape in modeling.original_variable_shapes(config).items():
        if original not in keys:
            raise ValueError(f"checkpoint {prefix} lacks the variable for {original}: not a complete BERT encoder"
                             f"{' of ' + bert_config_file if bert_config_file else ''}")
        value = modeling.read_checkpoint_tensor(reader, prefix, keys[original])
        if value.shape not in (tuple(shape), object_based_shape(original, config)):
            raise ValueError(f"checkpoint {prefix}: the variable for {original} has shape {list(value.shape)}, but "
                             f"{bert_config_file or 'the config'} needs {list(object_based_shape(original, config))}")
        tensors[original] = value.astype(np.float32).reshape(shape)
    # save_counter: Model Garden's; do_lower_case ("Variable" in TF Hub's): read below.
    extra = [name for name in unmapped if name not in ("save_counter", "do_lower_case")
             and not name.startswith("Variable")]
    if extra:
        logging.warning("%d variables of %s are not the BERT encoder and were left out: %s%s", len(extra), prefix,
                        ", ".join(extra[:8]), ", ..." if len(extra) > 8 else "")
    if reader.has_tensor("do_lower_case/.ATTRIBUTES/VARIABLE_VALUE"):  # TF Hub's encoders keep the casing
        do_lower_case = bool(reader.get_tensor("do_lower_case/.ATTRIBUTES/VARIABLE_VALUE"))
    if not vocab_file or not os.path.exists(vocab_file):
        raise ValueError(f"no vocab for {prefix}: {vocab_file or 'vocab.txt'} does not exist; give --vocab_file")
    _check_vocab_fits(vocab_file, config, bert_config_file or prefix)
    return BertWeights(config, tensors, vocab_file, do_lower_case, prefix)


def object_based_shape(original, config):
    """The shape of an original variable in Model Garden: attention kernels per head."""
    shape = modeling.original_variable_shapes(config)[original]
    heads = config.num_attention_heads
    if re.search(r"attention/self/\w+/kernel$", original):
        return (shape[0], heads, shape[1] // heads)
    if re.search(r"attention/self/\w+/bias$", original):
        return (heads, shape[0] // heads)
    if original.endswith("attention/output/dense/kernel"):
        return (heads, shape[0] // heads, shape[1])
    return tuple(shape)


def find_checkpoint(directory, init_checkpoint=None):
    """The checkpoint prefix of a model directory: init_checkpoint, bert_model.ckpt, the
    latest one, or the only one; None if there is none."""
    if init_checkpoint:
        return modeling.resolve_checkpoint(init_checkpoint)
    if tf.io.gfile.exists(os.path.join(directory, ORIGINAL_CHECKPOINT + ".index")):
        return os.path.join(directory, ORIGINAL_CHECKPOINT)
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        return latest
    indexes = glob.glob(os.path.join(directory, "*.index"))
    return indexes[0][:-len(".index")] if len(indexes) == 1 else None


def is_object_based(prefix):
    """True for a Model Garden / TF2 object-based checkpoint, False for the original names."""
    try:
        names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot read checkpoint {prefix}: {str(e).splitlines()[0]}") from None
    return OBJECT_GRAPH in names and "bert/embeddings/word_embeddings" not in names


# ------------------------------------------------------------------------------------------
# Files.


def _check_vocab_fits(vocab_path, config, config_path):
    vocab_size = _count_vocab(vocab_path)
    if vocab_size > config.vocab_size:
        raise ValueError(f"{vocab_path} has {vocab_size} tokens but {config_path} only vocab_size "
                         f"{config.vocab_size}: they do not belong together")


def _count_vocab(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _read_lower_case(hf_dir):
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if not os.path.exists(path):
        return None
    value = _read_json(path).get("do_lower_case")
    return value if isinstance(value, bool) else None


def _make_readable(path):
    """Gives a file made 0600 (safetensors, h5py temp files) the permissions the umask says."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _copy_atomically(source, destination):
    if os.path.abspath(source) == os.path.abspath(destination):
        return
    with cli.atomic_output(destination) as temp:
        try:
            shutil.copyfile(source, temp)
        except OSError as e:
            raise ValueError(f"cannot copy {source} to {destination}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------
# One command for every direction.


def detect_format(directory, init_checkpoint=None):
    """The format of a model directory, one of INPUT_FORMATS, from its files; ValueError if none."""
    if not os.path.isdir(directory):
        raise ValueError(f"--input_dir={directory} is not a directory")
    config_path = os.path.join(directory, HF_CONFIG)  # also KerasHub's config file name
    if os.path.exists(config_path):
        config = _read_json(config_path)
        if "class_name" in config or str(config.get("registered_name", "")).startswith(("keras_hub>", "keras_nlp>")):
            return "keras_hub"
        return "huggingface"
    if tf.io.gfile.exists(os.path.join(directory, TF_HUB_VARIABLES + ".index")):
        return "tf_hub"
    checkpoint = find_checkpoint(directory, init_checkpoint)
    if checkpoint and is_object_based(checkpoint):
        return "model_garden"
    if os.path.exists(os.path.join(directory, ORIGINAL_CONFIG)):
        return "original"
    raise ValueError(f"--input_dir={directory} holds none of {HF_CONFIG} (Hugging Face, or a KerasHub preset), "
                     f"{ORIGINAL_CONFIG} (original BERT), {TF_HUB_VARIABLES}.index (a TF Hub SavedModel) and an "
                     f"object-based checkpoint (Model Garden): it is no BERT model directory this converter knows")


def read_model(input_format, input_dir, init_checkpoint=None, bert_config_file=None, vocab_file=None,
               do_lower_case=True):
    """`BertWeights` of a model in `input_format`; the original's files may be given one by one."""
    if input_format == "huggingface":
        return read_huggingface(input_dir)
    if input_format == "keras_hub":
        return read_keras_hub(input_dir)
    if input_format in ("model_garden", "tf_hub"):
        # A TF Hub SavedModel keeps its files in assets/ (export_encoder.py's its bert_config.json too).
        files = os.path.join(input_dir, "assets") if input_format == "tf_hub" else input_dir
        prefix = (os.path.join(input_dir, TF_HUB_VARIABLES) if input_format == "tf_hub"
                  else find_checkpoint(input_dir, init_checkpoint))
        config_file = bert_config_file or (os.path.join(files, ORIGINAL_CONFIG)
                                           if os.path.exists(os.path.join(files, ORIGINAL_CONFIG)) else None)
        return read_object_based(prefix, config_file, vocab_file or os.path.join(files, VOCAB), None)
    return read_original(init_checkpoint or os.path.join(input_dir, ORIGINAL_CHECKPOINT),
                         bert_config_file or os.path.join(input_dir, ORIGINAL_CONFIG),
                         vocab_file or os.path.join(input_dir, VOCAB), do_lower_case)


WRITERS = {"original": write_original, "huggingface": write_huggingface, "keras_hub": write_keras_hub}
# What each output format writes in --output_dir (fnmatch patterns): a directory holding only
# these is an earlier output of that format, which a conversion may replace.
OUTPUT_PARTS = {"original": [ORIGINAL_CONFIG, ORIGINAL_CHECKPOINT + ".index", ORIGINAL_CHECKPOINT + ".data-*", VOCAB],
                "huggingface": [HF_CONFIG, HF_SAFETENSORS, "tokenizer_config.json", VOCAB],
                "keras_hub": [KERAS_HUB_CONFIG, KERAS_HUB_WEIGHTS, KERAS_HUB_TOKENIZER, KERAS_HUB_METADATA,
                              KERAS_HUB_VOCAB.split(os.sep)[0]]}


def main(_):
    logging.set_verbosity(logging.INFO)
    if FLAGS.input_dir:
        input_format = detect_format(FLAGS.input_dir, FLAGS.init_checkpoint)
        if os.path.abspath(FLAGS.input_dir) == os.path.abspath(FLAGS.output_dir):
            raise ValueError(f"--output_dir={FLAGS.output_dir} is --input_dir: write the conversion elsewhere")
    elif FLAGS.init_checkpoint and FLAGS.bert_config_file and FLAGS.vocab_file:
        input_format = "original"
    else:
        raise ValueError("give --input_dir, or --init_checkpoint with --bert_config_file and --vocab_file")
    output_format = FLAGS.output_format or ("huggingface" if input_format == "original" else "original")
    # Only an empty directory or an earlier output of this format is ever replaced, whole.
    output = dict(parts=OUTPUT_PARTS[output_format], flag="--output_dir", what=f"{output_format} model")
    cli.check_export_dir(FLAGS.output_dir, [(name, getattr(FLAGS, name)) for name in (
        "input_dir", "init_checkpoint", "bert_config_file", "vocab_file")], **output)
    weights = read_model(input_format, FLAGS.input_dir, FLAGS.init_checkpoint, FLAGS.bert_config_file,
                         FLAGS.vocab_file, FLAGS.do_lower_case)
    if weights.do_lower_case is None and output_format != "original":
        weights = weights._replace(do_lower_case=FLAGS.do_lower_case)  # the input does not say: the flag does
    logging.info("Read %s (%s format); writing %s format", weights.source, input_format, output_format)
    with cli.export_directory(FLAGS.output_dir, **output) as temp:
        WRITERS[output_format](weights, temp, shown_as=FLAGS.output_dir)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "convert_checkpoint.py", ["output_dir"])
