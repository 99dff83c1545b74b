"""Converts BERT weights between the Hugging Face layout and the original google-research one.

Hugging Face directory (config.json, vocab.txt and model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin when PyTorch is installed) -> original
directory (bert_model.ckpt.{index,data-00000-of-00001}, bert_config.json, vocab.txt) that
every script here reads, and back (original -> model.safetensors and config.json). The
encoder, the pooler and, when present, the pre-training, classifier and SQuAD heads.
"""

import collections
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import cli  # noqa: E402  (first: it imports TensorFlow without the start-up notices)
cli.import_tensorflow()

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import ml_dtypes  # noqa: E402,F401  (registers bfloat16 with numpy, so bf16 safetensors load)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import modeling  # noqa: E402

FLAGS = flags.FLAGS

HF_CONFIG, HF_SAFETENSORS, HF_SAFETENSORS_INDEX, HF_PYTORCH = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
ORIGINAL_CONFIG, ORIGINAL_CHECKPOINT, VOCAB = "bert_config.json", "bert_model.ckpt", "vocab.txt"

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
                        "A Hugging Face BERT directory (config.json, vocab.txt, model.safetensors or "
                        "pytorch_model.bin) or an original one (bert_config.json, vocab.txt, bert_model.ckpt.*); "
                        "the layout found decides the direction.")
    flags.DEFINE_string("output_dir", None, "Where to write the other layout.")
    flags.DEFINE_string("init_checkpoint", None,
                        "Original -> Hugging Face: the checkpoint to convert when it is not "
                        "input_dir/bert_model.ckpt (e.g. a fine-tuned output_dir/model.ckpt-1000).")
    flags.DEFINE_string("bert_config_file", None, "Original -> Hugging Face without --input_dir: bert_config.json.")
    flags.DEFINE_string("vocab_file", None, "Original -> Hugging Face without --input_dir: vocab.txt.")
    flags.DEFINE_bool("do_lower_case", True,
                      "Original -> Hugging Face: written to tokenizer_config.json (True for uncased models).")


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
# The two directions.


def convert_huggingface_to_original(hf_dir, output_dir):
    """Writes bert_model.ckpt, bert_config.json and vocab.txt for a Hugging Face BERT directory.

    Returns:
        (the `modeling.BertConfig`, the number of tensors written).

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
    vocab_size = _count_vocab(vocab_path)
    if vocab_size > config.vocab_size:
        raise ValueError(f"{vocab_path} has {vocab_size} tokens but {config_path} only vocab_size "
                         f"{config.vocab_size}: they do not belong together")

    tf.io.gfile.makedirs(output_dir)
    modeling.save_checkpoint(os.path.join(output_dir, ORIGINAL_CHECKPOINT), converted)
    _write_atomically(os.path.join(output_dir, ORIGINAL_CONFIG), config.to_json_string())
    _copy_atomically(vocab_path, os.path.join(output_dir, VOCAB))
    do_lower_case = _read_lower_case(hf_dir)
    logging.info("Converted %d tensors (heads: %s) of %s to %s. Use: --bert_config_file=%s "
                 "--init_checkpoint=%s --vocab_file=%s%s", len(converted), ", ".join(heads) or "none", hf_dir,
                 output_dir, os.path.join(output_dir, ORIGINAL_CONFIG),
                 os.path.join(output_dir, ORIGINAL_CHECKPOINT), os.path.join(output_dir, VOCAB),
                 "" if do_lower_case is None else f" --do_lower_case={do_lower_case}")
    return config, len(converted)


def convert_original_to_huggingface(init_checkpoint, bert_config_file, vocab_file, output_dir, do_lower_case=True):
    """Writes model.safetensors, config.json, vocab.txt and tokenizer_config.json.

    The encoder and pooler, plus the heads found in the checkpoint; Adam slots and
    `global_step` are left out.

    Returns:
        the number of tensors written.
    """
    from safetensors.numpy import save_file  # runtime dependency

    config = modeling.BertConfig.from_json_file(bert_config_file)
    modeling.validate_config(config)
    prefix = modeling.resolve_checkpoint(init_checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot read checkpoint {prefix}: {str(e).splitlines()[0]}") from None
    shapes = reader.get_variable_to_shape_map()
    heads = detect_heads(set(shapes), prefix_names=False)
    num_labels = shapes["output_weights"][0] if "classifier" in heads else None
    hf_prefix = "bert." if heads else ""
    expected = modeling.original_variable_shapes(
        config, masked_lm="masked_lm" in heads, next_sentence="next_sentence" in heads,
        num_labels=num_labels, squad="squad" in heads)
    tensors = collections.OrderedDict()
    for entry in tensor_names(config, heads, num_labels, hf_prefix):
        if entry.original not in shapes:
            raise ValueError(f"checkpoint {prefix} lacks {entry.original}: not a complete BERT checkpoint for "
                             f"{bert_config_file}")
        if tuple(shapes[entry.original]) != tuple(expected[entry.original]):
            raise ValueError(f"checkpoint {prefix}: {entry.original} has shape {list(shapes[entry.original])} but "
                             f"{bert_config_file} needs {list(expected[entry.original])}")
        value = modeling.read_checkpoint_tensor(reader, prefix, entry.original).astype(np.float32)
        tensors[entry.huggingface] = np.ascontiguousarray(value.T if entry.transpose else value)
    hf_config = huggingface_config_from_bert(config, heads, num_labels)

    tf.io.gfile.makedirs(output_dir)
    temp = os.path.join(output_dir, f"{HF_SAFETENSORS}.tmp-{os.getpid()}")
    try:
        save_file(tensors, temp, metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # the file is created 0600; give it the permissions of the others
        os.replace(temp, os.path.join(output_dir, HF_SAFETENSORS))
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    _write_atomically(os.path.join(output_dir, HF_CONFIG), json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    _write_atomically(os.path.join(output_dir, "tokenizer_config.json"),
                      json.dumps({"do_lower_case": bool(do_lower_case), "tokenizer_class": "BertTokenizer"},
                                 indent=2) + "\n")
    _copy_atomically(vocab_file, os.path.join(output_dir, VOCAB))
    logging.info("Converted %d tensors (heads: %s) of %s to %s (%s)", len(tensors), ", ".join(heads) or "none",
                 prefix, output_dir, hf_config["architectures"][0])
    return len(tensors)


def _count_vocab(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _read_lower_case(hf_dir):
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if not os.path.exists(path):
        return None
    value = _read_json(path).get("do_lower_case")
    return value if isinstance(value, bool) else None


def _write_atomically(path, text):
    temp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temp, path, overwrite=True)


def _copy_atomically(source, destination):
    if os.path.abspath(source) == os.path.abspath(destination):
        return
    temp = f"{destination}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(source, temp)
    except OSError as e:
        raise ValueError(f"cannot copy {source} to {destination}: {e.strerror or e}") from None
    os.replace(temp, destination)


def detect_layout(directory):
    """"huggingface" or "original" for a model directory; ValueError if neither."""
    if not os.path.isdir(directory):
        raise ValueError(f"--input_dir={directory} is not a directory")
    if os.path.exists(os.path.join(directory, HF_CONFIG)):
        return "huggingface"
    if os.path.exists(os.path.join(directory, ORIGINAL_CONFIG)):
        return "original"
    raise ValueError(f"--input_dir={directory} holds neither {HF_CONFIG} (Hugging Face) nor {ORIGINAL_CONFIG} "
                     f"(original BERT)")


def main(_):
    logging.set_verbosity(logging.INFO)
    if not FLAGS.output_dir:
        raise ValueError("--output_dir is required")
    if FLAGS.input_dir and detect_layout(FLAGS.input_dir) == "huggingface":
        convert_huggingface_to_original(FLAGS.input_dir, FLAGS.output_dir)
        return
    if FLAGS.input_dir:
        checkpoint = FLAGS.init_checkpoint or os.path.join(FLAGS.input_dir, ORIGINAL_CHECKPOINT)
        config_file = FLAGS.bert_config_file or os.path.join(FLAGS.input_dir, ORIGINAL_CONFIG)
        vocab_file = FLAGS.vocab_file or os.path.join(FLAGS.input_dir, VOCAB)
    elif FLAGS.init_checkpoint and FLAGS.bert_config_file and FLAGS.vocab_file:
        checkpoint, config_file, vocab_file = FLAGS.init_checkpoint, FLAGS.bert_config_file, FLAGS.vocab_file
    else:
        raise ValueError("give --input_dir, or --init_checkpoint with --bert_config_file and --vocab_file")
    convert_original_to_huggingface(checkpoint, config_file, vocab_file, FLAGS.output_dir, FLAGS.do_lower_case)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "convert_checkpoint.py", ["output_dir"])
