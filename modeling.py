"""BERT's model: `BertConfig`, the `BertModel` encoder and the task heads as Keras 3 layers.

Also owns reading and writing checkpoints in the original google-research/bert variable
names (name-based TF1 "V2" bundles such as the released `bert_model.ckpt`), so released
checkpoints load unchanged and checkpoints written here load in the original code.

Every variable is created with its Keras `path` equal to its original checkpoint name
(`bert/encoder/layer_0/attention/self/query/kernel`, `cls/predictions/output_bias`, ...),
whatever model the layers are later nested in. Shape letters used in docstrings: B batch,
S sequence, H hidden, N attention heads, D head size (H / N), I intermediate, V vocab,
P masked positions per sequence.
"""

import collections
import copy
import functools
import inspect
import json
import math
import os
import re
import uuid

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import fused_kernels

# Matches the hard-coded float32 epsilon of the original's tf.contrib LayerNorm.
LAYER_NORM_EPSILON = fused_kernels.LAYER_NORM_EPSILON
# Added to attention scores of masked-out keys (after the 1/sqrt(D) scaling).
ATTENTION_MASK_ADDER = -10000.0


class BertConfig:
    """Configuration of a `BertModel`, stored as `bert_config.json` next to a checkpoint.

    Unknown keys (the Chinese and multilingual configs carry `directionality` and
    `pooler_*`) are kept on the object, written back by `to_json_string`, and ignored by
    the model.

    Example:
        >>> config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
        ...                     num_attention_heads=4, intermediate_size=37)
        >>> BertConfig.from_dict(config.to_dict()).hidden_size
        32
    """

    def __init__(self, vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=16,
                 initializer_range=0.02):
        # 11 parameters: the original BertConfig's signature.
        """Builds a config.

        Args:
            vocab_size: rows V of the word-embedding table.
            hidden_size: width H of every encoder layer and of the pooler.
            num_hidden_layers: number L of Transformer layers.
            num_attention_heads: heads N per attention layer; H must be divisible by N.
            intermediate_size: width I of the feed-forward layer.
            hidden_act: activation of the feed-forward layer and of the masked-LM
                transform: "gelu" (tanh form, as the original), "gelu_exact" (erf form,
                as the 2018 code), "relu", "tanh", "linear", or a callable.
            hidden_dropout_prob: dropout after the embeddings and every dense output.
            attention_probs_dropout_prob: dropout on the attention probabilities.
            max_position_embeddings: rows of the position table; the longest sequence
                the model accepts.
            type_vocab_size: rows of the token-type table (released configs use 2).
            initializer_range: stddev of the truncated-normal weight initializer.
        """
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range

    @classmethod
    def from_dict(cls, json_object):
        """Builds a config from a dict; every key is kept, unknown ones included."""
        config = cls(vocab_size=None)
        for key, value in json_object.items():
            config.__dict__[key] = value
        return config

    @classmethod
    def from_json_file(cls, json_file):
        """Reads `bert_config.json`; raises ValueError naming the file on any problem."""
        try:
            with tf.io.gfile.GFile(json_file, "r") as reader:
                text = reader.read()
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError, OSError) as e:
            raise ValueError("cannot read BERT config file %s: %s" %
                             (json_file, _one_line(e))) from None
        try:
            json_object = json.loads(text)
        except ValueError as e:
            raise ValueError("BERT config file %s is not valid JSON: %s" % (json_file, e)) from None
        if not isinstance(json_object, dict):
            raise ValueError("BERT config file %s must hold a JSON object, not %s" %
                             (json_file, type(json_object).__name__))
        _check_config_keys(json_object, json_file)
        config = cls.from_dict(json_object)
        try:
            validate_config(config)
        except ValueError as e:
            reason = str(e).replace("BERT config: ", "").replace("BERT config field ", "field ")
            raise ValueError("BERT config file %s: %s" % (json_file, reason))
        return config

    def to_dict(self):
        """Returns a deep copy of every field."""
        return copy.deepcopy(self.__dict__)

    def to_json_string(self):
        """Returns the config as JSON (indent 2, sorted keys, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# Keys the released configs carry that the model does not use (Chinese, multilingual).
_IGNORED_CONFIG_KEYS = frozenset(["directionality", "pooler_fc_size", "pooler_num_attention_heads",
                                  "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type"])


def _check_config_keys(json_object, json_file):
    """vocab_size missing is an error; another missing key takes the original's default, with
    a warning naming it; a key the model does not know is warned about (a typo is no silent
    default)."""
    defaults = inspect.signature(BertConfig.__init__).parameters
    if "vocab_size" not in json_object:
        raise ValueError("BERT config file %s has no vocab_size (the number of lines of the model's vocab.txt)" %
                         json_file)
    for key, parameter in defaults.items():
        if key not in ("self", "vocab_size") and key not in json_object:
            logging.warning("BERT config file %s has no %s: using the original's default %s = %r", json_file,
                            key, key, parameter.default)
    for key in sorted(set(json_object) - set(defaults) - _IGNORED_CONFIG_KEYS):
        logging.warning("BERT config file %s: unknown key %s is ignored by the model", json_file, key)


def check_vocab_size(config, vocab_size, vocab_file):
    """Raises ValueError unless the vocab has exactly the config's vocab_size entries.

    A smaller vocab gives ids the embedding table has no row for (on GPU a silent zero
    vector); a larger one gives ids beyond it.
    """
    if vocab_size != config.vocab_size:
        raise ValueError("--vocab_file=%s has %d entries but the BERT config says vocab_size=%d: use the vocab "
                         "that the checkpoint was trained with" % (vocab_file, vocab_size, config.vocab_size))


def _one_line(error):
    """First line of an exception's message, for one-line user errors."""
    text = str(getattr(error, "message", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def validate_config(config):
    """Raises ValueError if `config` cannot describe a BERT model."""
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size"):
        value = getattr(config, field, None)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError("BERT config field %s must be a positive integer, got %r" %
                             (field, value))
    if config.hidden_size % config.num_attention_heads:
        raise ValueError("BERT config: hidden_size %d is not a multiple of num_attention_heads %d" %
                         (config.hidden_size, config.num_attention_heads))
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = getattr(config, field, None)
        if (not isinstance(value, (int, float, np.integer, np.floating)) or
                isinstance(value, bool) or not 0 <= value < 1):
            raise ValueError("BERT config field %s must be a number in [0, 1), got %r" %
                             (field, value))
    value = getattr(config, "initializer_range", None)
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or
            not 0 < value < float("inf")):
        raise ValueError("BERT config field initializer_range must be a positive number, got %r" % (value,))
    get_activation(config.hidden_act)


def check_max_seq_length(config, max_seq_length):
    """Raises ValueError if sequences of `max_seq_length` do not fit the position table."""
    if max_seq_length > config.max_position_embeddings:
        raise ValueError(
            "max_seq_length %d is above max_position_embeddings %d of the BERT config; "
            "use --max_seq_length=%d or less" %
            (max_seq_length, config.max_position_embeddings, config.max_position_embeddings))


# ----------------------------------------------------------------------------------------
# Activations and the small pieces of math shared by the layers.


# The tanh GELU lives with the fused kernel that computes it; it is this module's `gelu`.
gelu = fused_kernels.gelu


def gelu_exact(x):
    """GELU with the exact Gaussian CDF, x * Phi(x) via erf, as in the original's 2018 code."""
    return tf.nn.gelu(x, approximate=False)


_ACTIVATIONS = {
    "linear": None,
    "relu": tf.nn.relu,
    "gelu": gelu,
    "gelu_exact": gelu_exact,
    "erf_gelu": gelu_exact,
    "tanh": tf.tanh,
}


def get_activation(activation_string):
    """Maps a `hidden_act` string to a function; None means identity.

    A callable is returned unchanged; None, "" and "linear" give None. Names are
    case-insensitive. Raises ValueError for any other name.
    """
    activation = activation_string
    if activation is None or callable(activation):
        return activation
    if not isinstance(activation, str):
        raise ValueError("Unsupported activation: %r" % (activation,))
    if not activation:
        return None
    name = activation.lower()
    if name not in _ACTIVATIONS:
        raise ValueError("Unsupported activation: %s (use one of %s)" %
                         (activation, ", ".join(sorted(_ACTIVATIONS))))
    return _ACTIVATIONS[name]


def create_initializer(initializer_range=0.02):
    """Truncated normal (re-drawn beyond 2 stddev), the original's weight initializer."""
    return keras.initializers.TruncatedNormal(stddev=initializer_range)


_shape_list = fused_kernels.shape_list


def create_original_variable(path, shape, initializer, dtype="float32", autocast=True,
                             trainable=True):
    """Creates a Keras variable whose `path` is exactly `path`.

    Keras derives a variable's path from the layers it is built in; an absolute path
    keeps the original checkpoint name even when the BERT layers are nested inside a
    task model, and is what checkpoint I/O and the optimizer's weight-decay exclusion
    (a regex on `variable.path`) rely on.
    """
    scope, _, leaf = path.rpartition("/")
    if scope:
        parent, _, last = scope.rpartition("/")
        with keras.name_scope(last, override_parent=parent):
            return keras.Variable(initializer=initializer, shape=shape, dtype=dtype,
                                  autocast=autocast, trainable=trainable, name=leaf)
    variable = keras.Variable(initializer=initializer, shape=shape, dtype=dtype, autocast=autocast,
                              trainable=trainable, name=leaf)
    # A root-level name (run_classifier's `output_weights`): Keras has no public way to
    # leave the enclosing layer's name scope, so the path is set directly.
    variable._path = leaf
    if variable.path != leaf:
        raise RuntimeError("cannot give variable %s a root-level path in this Keras" % leaf)
    return variable


# ----------------------------------------------------------------------------------------
# Building blocks with original variable names.


class Dense(keras.layers.Layer):
    """Affine map `x @ kernel + bias` with variables `<path>/kernel` [in, out] and `<path>/bias`."""

    def __init__(self, input_size, units, path, activation=None, initializer_range=0.02, **kwargs):
        super().__init__(name=path.rpartition("/")[2] or path, **kwargs)
        self.input_size = input_size
        self.units = units
        self.original_path = path
        self.activation = get_activation(activation)
        self.initializer_range = initializer_range
        self.build()

    def build(self, input_shape=None):
        self.kernel = create_original_variable(self.original_path + "/kernel",
                                               (self.input_size, self.units),
                                               create_initializer(self.initializer_range),
                                               dtype=self.variable_dtype)
        self.bias = create_original_variable(self.original_path + "/bias", (self.units,), "zeros",
                                             dtype=self.variable_dtype)

    def call(self, x, training=False):
        """Maps [..., in] to [..., out]; expects 2-D input on hot paths (one GEMM)."""
        if self.activation is gelu:
            return fused_kernels.dense_gelu(x, self.kernel, self.bias, training)
        y = fused_kernels.dense(x, self.kernel, self.bias, training)
        return self.activation(y) if self.activation is not None else y


class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis (epsilon 1e-12), variables `<path>/beta` and `<path>/gamma`.

    Statistics, gamma and beta stay float32 under mixed precision; the result is cast
    back to the input's dtype. The ops are those of the original's tf.contrib layer_norm
    (moments, then batch_normalization), so float32 results match bit for bit or nearly.
    `add_and_norm` gives a Transformer sublayer's output through this LayerNorm.
    """

    def __init__(self, size, path, **kwargs):
        super().__init__(name="LayerNorm", **kwargs)
        self.size = size
        self.original_path = path
        self.build()

    def build(self, input_shape=None):
        # autocast=False: the parameters must not be read as float16/bfloat16.
        self.beta = create_original_variable(self.original_path + "/beta", (self.size,), "zeros",
                                             autocast=False)
        self.gamma = create_original_variable(self.original_path + "/gamma", (self.size,), "ones",
                                              autocast=False)

    def call(self, x, training=False):
        return fused_kernels.layer_norm(x, self.gamma.value, self.beta.value, training)

    def add_and_norm(self, dense, x, residual, dropout_rate, training=False):
        """LayerNorm(residual + dropout(dense(x))): a sublayer's output, `dense` a Dense."""
        return fused_kernels.dense_add_and_norm(x, dense.kernel, dense.bias, residual, dropout_rate,
                                                self.gamma.value, self.beta.value, training)


class BertEmbeddings(keras.layers.Layer):
    """Word + token-type + position embeddings, then LayerNorm and dropout.

    Variables: `<scope>/embeddings/{word_embeddings [V,H], token_type_embeddings
    [type_vocab_size,H], position_embeddings [max_position_embeddings,H]}` and
    `<scope>/embeddings/LayerNorm/{beta,gamma}`.
    """

    def __init__(self, config, scope="bert", use_one_hot_embeddings=False, **kwargs):
        super().__init__(name="embeddings", **kwargs)
        self.config = config
        self.scope = scope
        self.use_one_hot_embeddings = use_one_hot_embeddings
        self.layer_norm = LayerNorm(config.hidden_size, scope + "/embeddings/LayerNorm",
                                    dtype=self.dtype_policy)
        self.build()

    def build(self, input_shape=None):
        c = self.config
        prefix = self.scope + "/embeddings/"
        init = create_initializer(c.initializer_range)
        self.word_embeddings = create_original_variable(prefix + "word_embeddings",
                                                        (c.vocab_size, c.hidden_size), init,
                                                        dtype=self.variable_dtype)
        self.token_type_embeddings = create_original_variable(prefix + "token_type_embeddings",
                                                              (c.type_vocab_size, c.hidden_size),
                                                              init, dtype=self.variable_dtype)
        self.position_embeddings = create_original_variable(
            prefix + "position_embeddings", (c.max_position_embeddings, c.hidden_size), init,
            dtype=self.variable_dtype)

    def call(self, input_ids, token_type_ids, training=False):
        """Embeds int [B, S] ids and token types into [B, S, H]."""
        seq_length = _shape_list(input_ids)[1]
        if self.use_one_hot_embeddings:
            # One-hot matmul instead of a gather: faster on TPU, same numbers.
            one_hot = tf.one_hot(input_ids, depth=self.config.vocab_size, dtype=self.compute_dtype)
            output = tf.einsum("bsv,vh->bsh", one_hot, self.word_embeddings)
        else:
            output = tf.gather(self.word_embeddings, input_ids)
        # Token types by one-hot matmul, as the original: the same values as a gather
        # (x*1 + 0s), and a dense gradient where a gather's would be one slice per token.
        # tf.clip_by_global_norm measures slices unsummed, so the kind of gradient decides
        # the clip factor: the original's word table has slices (unless one-hot), its
        # token-type table a dense gradient, and so do these.
        token_types = tf.one_hot(token_type_ids, depth=self.config.type_vocab_size, dtype=self.compute_dtype)
        output += tf.einsum("bst,th->bsh", token_types,
                            tf.cast(self.token_type_embeddings, self.compute_dtype))
        output += self.position_embeddings[:seq_length][tf.newaxis]  # [1, S, H]
        output = self.layer_norm(output, training=training)
        return fused_kernels.dropout(output, self.config.hidden_dropout_prob, training)


class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm Transformer layer, variables under `<scope>/encoder/layer_<i>/`."""

    def __init__(self, config, index, scope="bert", **kwargs):
        super().__init__(name="layer_%d" % index, **kwargs)
        self.config = config
        self.prefix = "%s/encoder/layer_%d/" % (scope, index)
        h, i = config.hidden_size, config.intermediate_size
        self.query = self._dense(h, h, "attention/self/query")
        self.key = self._dense(h, h, "attention/self/key")
        self.value = self._dense(h, h, "attention/self/value")
        self.attention_output = self._dense(h, h, "attention/output/dense")
        self.attention_layer_norm = LayerNorm(h, self.prefix + "attention/output/LayerNorm",
                                              dtype=self.dtype_policy)
        self.intermediate = self._dense(h, i, "intermediate/dense", config.hidden_act)
        self.output_dense = self._dense(i, h, "output/dense")
        self.output_layer_norm = LayerNorm(h, self.prefix + "output/LayerNorm",
                                           dtype=self.dtype_policy)

    def _dense(self, input_size, units, path, activation=None):
        return Dense(input_size, units, self.prefix + path, activation=activation,
                     initializer_range=self.config.initializer_range, dtype=self.dtype_policy)

    def call(self, hidden, key_mask, training=False):
        """Runs the layer.

        Args:
            hidden: float [B, S, H] layer input.
            key_mask: int32 [B, 1, 1, S], 1 for real keys and 0 for masked ones (an integer
                tensor, so Keras does not cast it to float16 under mixed precision).
            training: Python bool; dropout is applied only when True.

        Returns:
            float [B, S, H] layer output.
        """
        c = self.config
        batch_size, seq_length, width = _shape_list(hidden)
        num_heads = c.num_attention_heads
        head_size = c.hidden_size // num_heads
        x = tf.reshape(hidden, [-1, width])  # [B*S, H]

        def heads(dense):  # [B*S, H] -> [B, N, S, D]
            projected = tf.reshape(dense(x, training=training),
                                   [batch_size, seq_length, num_heads, head_size])
            return tf.transpose(projected, [0, 2, 1, 3])

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        scores = tf.matmul(q, k, transpose_b=True)  # [B, N, S_from, S_to]
        # Scale, mask and softmax in float32: -10000 and exp() are unsafe in float16.
        attention_adder = (1.0 - tf.cast(key_mask, tf.float32)) * ATTENTION_MASK_ADDER
        probs = fused_kernels.attention_probs(scores, 1.0 / math.sqrt(float(head_size)),
                                              attention_adder, c.attention_probs_dropout_prob,
                                              training)
        context = tf.matmul(tf.cast(probs, v.dtype), v)  # [B, N, S, D]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, width])  # [B*S, H]

        # Each sublayer's output is LayerNorm(input + dropout(dense(...))), as in the paper.
        rate = c.hidden_dropout_prob
        attention = self.attention_layer_norm.add_and_norm(self.attention_output, context, residual=x,
                                                           dropout_rate=rate, training=training)
        intermediate = self.intermediate(attention, training=training)
        output = self.output_layer_norm.add_and_norm(self.output_dense, intermediate, residual=attention,
                                                     dropout_rate=rate, training=training)
        return tf.reshape(output, [batch_size, seq_length, width])


class BertModel(keras.layers.Layer):
    """The BERT encoder ("Bidirectional Encoder Representations from Transformers").

    Weights are created at construction (no call needed before `load_checkpoint`), with
    paths equal to the original checkpoint names under `name` (default "bert", the
    original's variable scope).

    Example:
        >>> config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
        ...                     num_attention_heads=4, intermediate_size=37)
        >>> model = BertModel(config)
        >>> out = model(tf.constant([[31, 51, 98], [15, 5, 0]]),
        ...             input_mask=tf.constant([[1, 1, 1], [1, 1, 0]]),
        ...             token_type_ids=tf.constant([[0, 0, 1], [0, 1, 0]]))
        >>> out["sequence_output"].shape, out["pooled_output"].shape
        (TensorShape([2, 3, 32]), TensorShape([2, 32]))
        >>> model.embedding_table.path
        'bert/embeddings/word_embeddings'
    """

    def __init__(self, config, use_one_hot_embeddings=False, name="bert", gradient_checkpointing=False,
                 **kwargs):
        """Builds the encoder.

        Args:
            config: `BertConfig`; copied, so later edits do not reach the model.
            use_one_hot_embeddings: look words up by one-hot matmul (the original's TPU
                path) instead of a gather. Same numbers.
            name: variable scope of every weight, "bert" for every released checkpoint.
            gradient_checkpointing: when training, keep only each Transformer layer's input
                for the backward pass, which recomputes the layer (same dropout masks, same
                gradients): activation memory drops to about a quarter or less, for about
                one more forward pass of time. No effect on inference.
            **kwargs: Keras layer arguments such as `dtype` (a mixed-precision policy).
        """
        _refuse_tf1_call_style(name, kwargs)
        super().__init__(name=name, **kwargs)
        validate_config(config)
        self.config = copy.deepcopy(config)
        self.use_one_hot_embeddings = use_one_hot_embeddings
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.embeddings = BertEmbeddings(self.config, scope=name,
                                         use_one_hot_embeddings=use_one_hot_embeddings,
                                         dtype=self.dtype_policy)
        self.encoder_layers = [
            TransformerLayer(self.config, i, scope=name, dtype=self.dtype_policy)
            for i in range(self.config.num_hidden_layers)
        ]
        self.pooler = Dense(self.config.hidden_size, self.config.hidden_size,
                            name + "/pooler/dense", activation="tanh",
                            initializer_range=self.config.initializer_range,
                            dtype=self.dtype_policy)

    @property
    def embedding_table(self):
        """The word-embedding variable [V, H], also the masked-LM decoder weights."""
        return self.embeddings.word_embeddings

    def get_embedding_table(self):
        return self.embedding_table

    def call(self, input_ids, input_mask=None, token_type_ids=None, training=False):
        """Encodes a batch of WordPiece ids.

        Args:
            input_ids: int [B, S] token ids.
            input_mask: int or float [B, S], 1 for real tokens and 0 for padding; only keys
                are masked, padded positions still get outputs. Defaults to all ones.
            token_type_ids: int [B, S] segment ids. Defaults to all zeros.
            training: Python bool; dropout is applied only when True.

        Returns:
            dict with "sequence_output" [B, S, H] (last layer), "pooled_output" [B, H]
            (tanh dense of position 0), "encoder_layers" (list of L [B, S, H]) and
            "embedding_output" [B, S, H] (after LayerNorm and dropout).
        """
        training = bool(training)
        input_ids = tf.convert_to_tensor(input_ids)
        static_length = input_ids.shape[1] if input_ids.shape.rank == 2 else None
        if input_ids.shape.rank is not None and input_ids.shape.rank != 2:
            raise ValueError("input_ids must be [batch, seq_length], got shape %s" %
                             (input_ids.shape,))
        if static_length is not None:
            check_max_seq_length(self.config, static_length)
        else:
            tf.debugging.assert_less_equal(
                tf.shape(input_ids)[1], self.config.max_position_embeddings,
                message="sequence length above max_position_embeddings")
        if input_mask is None:
            input_mask = tf.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = tf.zeros_like(input_ids)

        embedding_output = self.embeddings(input_ids, token_type_ids, training=training)
        # [B, 1, 1, S_to]: only keys are masked, the same for every query and head.
        key_mask = tf.cast(input_mask, tf.int32)[:, tf.newaxis, tf.newaxis, :]

        hidden = embedding_output
        encoder_layers = []
        for layer in self.encoder_layers:
            if training and self.gradient_checkpointing:
                hidden = fused_kernels.recompute_in_backward(
                    functools.partial(layer, key_mask=key_mask, training=True), hidden)
            else:
                hidden = layer(hidden, key_mask, training=training)
            encoder_layers.append(hidden)
        pooled_output = self.pooler(hidden[:, 0])
        return {
            "sequence_output": hidden,
            "pooled_output": pooled_output,
            "encoder_layers": encoder_layers,
            "embedding_output": embedding_output,
        }

    def get_config(self):
        config = super().get_config()
        config.update(config=self.config.to_dict(),
                      use_one_hot_embeddings=self.use_one_hot_embeddings,
                      gradient_checkpointing=self.gradient_checkpointing)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        bert_config = BertConfig.from_dict(config.pop("config"))
        return cls(bert_config, **config)


# ----------------------------------------------------------------------------------------
# Task heads. Each returns float32 logits; losses are separate functions so a runner can
# pick what it needs (the original computes them inside its model_fns).


class MaskedLMHead(keras.layers.Layer):
    """Masked-LM head: transform dense + LayerNorm, then the tied word-embedding decoder.

    Variables: `cls/predictions/transform/dense/{kernel [H,H],bias}`,
    `cls/predictions/transform/LayerNorm/{beta,gamma}`, `cls/predictions/output_bias` [V].
    The decoder weight is the encoder's `word_embeddings` (no variable of its own).
    """

    def __init__(self, config, embedding_table, **kwargs):
        """Builds the head.

        Args:
            config: `BertConfig` (hidden_size, vocab_size, hidden_act, initializer_range).
            embedding_table: the encoder's word-embedding variable [V, H]
                (`BertModel.embedding_table`).
            **kwargs: Keras layer arguments.
        """
        super().__init__(name=kwargs.pop("name", "predictions"), **kwargs)
        self.config = config
        # Not tracked on purpose: the table belongs to BertModel, tracking it here too would
        # list it twice among a task model's variables.
        object.__setattr__(self, "_embedding_table", embedding_table)
        h = config.hidden_size
        self.transform = Dense(h, h, "cls/predictions/transform/dense",
                               activation=config.hidden_act,
                               initializer_range=config.initializer_range, dtype=self.dtype_policy)
        self.layer_norm = LayerNorm(h, "cls/predictions/transform/LayerNorm",
                                    dtype=self.dtype_policy)
        self.build()

    def build(self, input_shape=None):
        self.output_bias = create_original_variable("cls/predictions/output_bias",
                                                    (self.config.vocab_size,), "zeros",
                                                    autocast=False)

    def call(self, sequence_output, masked_lm_positions, training=False):
        """Scores the vocabulary at the masked positions.

        Args:
            sequence_output: float [B, S, H] last encoder layer.
            masked_lm_positions: int [B, P] positions in each sequence (padding entries may
                point at 0; weight them 0 in the loss).
            training: Python bool (the head has no dropout; it picks the LayerNorm kernel).

        Returns:
            float32 logits [B, P, V].
        """
        batch_size, num_positions = _shape_list(masked_lm_positions)
        x = gather_indexes(sequence_output, masked_lm_positions)  # [B*P, H]
        x = self.layer_norm(self.transform(x, training=training), training=training)
        table = tf.cast(self._embedding_table, x.dtype)
        logits = tf.matmul(x, table, transpose_b=True)  # [B*P, V]
        logits = tf.nn.bias_add(tf.cast(logits, tf.float32), self.output_bias.value)
        return tf.reshape(logits, [batch_size, num_positions, self.config.vocab_size])


def gather_indexes(sequence_output, positions):
    """Gathers [B, S, H] at int [B, P] positions into [B*P, H] (flat, per-example offsets)."""
    batch_size, seq_length, width = _shape_list(sequence_output)
    flat_offsets = tf.reshape(tf.range(batch_size, dtype=positions.dtype) * seq_length, [-1, 1])
    flat_positions = tf.reshape(positions + flat_offsets, [-1])
    flat_sequence = tf.reshape(sequence_output, [-1, width])
    return tf.gather(flat_sequence, flat_positions)


class _OutputWeightsHead(keras.layers.Layer):
    """Logits = x @ output_weights^T + output_bias in float32, weights stored [out, in]."""

    def __init__(self, scope, num_outputs, hidden_size, initializer_range, **kwargs):
        super().__init__(**kwargs)
        self.scope = scope
        self.num_outputs = num_outputs
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        self.build()

    def build(self, input_shape=None):
        prefix = self.scope + "/" if self.scope else ""
        # [out, in] as the original (transposed relative to a Dense kernel).
        self.output_weights = create_original_variable(prefix + "output_weights",
                                                       (self.num_outputs, self.hidden_size),
                                                       create_initializer(self.initializer_range),
                                                       autocast=False)
        self.output_bias = create_original_variable(prefix + "output_bias", (self.num_outputs,),
                                                    "zeros", autocast=False)

    def _logits(self, x):
        # These heads are tiny; float32 costs nothing and keeps logits exact.
        logits = tf.matmul(tf.cast(x, tf.float32), self.output_weights.value, transpose_b=True)
        return tf.nn.bias_add(logits, self.output_bias.value)


class NextSentenceHead(_OutputWeightsHead):
    """Next-sentence head: `cls/seq_relationship/output_weights` [2, H], `output_bias` [2].

    Label 0 means "B follows A", 1 means "B is random".
    """

    def __init__(self, config, **kwargs):
        super().__init__("cls/seq_relationship", 2, config.hidden_size, config.initializer_range,
                         name=kwargs.pop("name", "seq_relationship"), **kwargs)

    def call(self, pooled_output):
        """Maps float [B, H] pooled output to float32 logits [B, 2]."""
        return self._logits(pooled_output)


class ClassifierHead(_OutputWeightsHead):
    """run_classifier's head: root-scope `output_weights` [num_labels, H] and `output_bias`.

    Initializer stddev 0.02 as in the original. Dropout on the pooled output when training:
    `dropout_rate`, 0.1 by default (the original's fixed value; run_classifier.py passes the
    config's hidden_dropout_prob, which is 0.1 in every released config).
    """

    def __init__(self, num_labels, hidden_size, dropout_rate=0.1, **kwargs):
        super().__init__("", num_labels, hidden_size, 0.02, name=kwargs.pop("name", "classifier"),
                         **kwargs)
        self.dropout_rate = dropout_rate

    def call(self, pooled_output, training=False):
        """Maps float [B, H] pooled output to float32 logits [B, num_labels]."""
        return self._logits(fused_kernels.dropout(pooled_output, self.dropout_rate, bool(training)))


class SquadHead(_OutputWeightsHead):
    """run_squad's span head: `cls/squad/output_weights` [2, H] (row 0 start, row 1 end)."""

    def __init__(self, hidden_size, **kwargs):
        super().__init__("cls/squad", 2, hidden_size, 0.02, name=kwargs.pop("name", "squad"),
                         **kwargs)

    def call(self, sequence_output):
        """Maps float [B, S, H] to float32 (start_logits [B, S], end_logits [B, S])."""
        batch_size, seq_length, width = _shape_list(sequence_output)
        logits = self._logits(tf.reshape(sequence_output, [-1, width]))  # [B*S, 2]
        logits = tf.reshape(logits, [batch_size, seq_length, 2])
        return logits[:, :, 0], logits[:, :, 1]


# ----------------------------------------------------------------------------------------
# Losses (float32 whatever the compute dtype).


def masked_lm_loss(logits, label_ids, label_weights):
    """Weighted masked-LM cross-entropy, as the original.

    Args:
        logits: float [B, P, V] from `MaskedLMHead`.
        label_ids: int [B, P] true token ids.
        label_weights: float [B, P], 1 for real predictions and 0 for padding.

    Returns:
        (loss scalar = sum(w * nll) / (sum(w) + 1e-5), per_example_loss [B, P] (unweighted
        nll), log_probs [B, P, V]), all float32.
    """
    log_probs, picked = fused_kernels.label_log_probs(logits, label_ids)
    per_example_loss = -picked
    label_weights = tf.cast(label_weights, tf.float32)
    numerator = tf.reduce_sum(label_weights * per_example_loss)
    denominator = tf.reduce_sum(label_weights) + 1e-5
    return numerator / denominator, per_example_loss, log_probs


def next_sentence_loss(logits, labels):
    """Mean NSP cross-entropy: (loss, per_example_loss [B], log_probs [B, 2]), float32."""
    log_probs, picked = fused_kernels.label_log_probs(logits, tf.reshape(labels, [-1]))
    per_example_loss = -picked
    return tf.reduce_mean(per_example_loss), per_example_loss, log_probs


def classifier_loss(logits, labels):
    """Mean classification cross-entropy: (loss, per_example_loss [B], probabilities [B, C])."""
    logits = tf.cast(logits, tf.float32)
    _, picked = fused_kernels.label_log_probs(logits, labels)
    per_example_loss = -picked
    probabilities = tf.nn.softmax(logits, axis=-1)
    return tf.reduce_mean(per_example_loss), per_example_loss, probabilities


def squad_loss(start_logits, end_logits, start_positions, end_positions):
    """SQuAD span loss: mean of start and end cross-entropies over the batch (float32)."""
    _, start = fused_kernels.label_log_probs(start_logits, start_positions)
    _, end = fused_kernels.label_log_probs(end_logits, end_positions)
    return (-tf.reduce_mean(start) - tf.reduce_mean(end)) / 2.0


# ----------------------------------------------------------------------------------------
# Checkpoints in the original names.


def original_variable_shapes(config, masked_lm=False, next_sentence=False, num_labels=None,
                             squad=False, scope="bert"):
    """The original code's checkpoint variables for `config`: ordered {name: shape}.

    Encoder and pooler always; the pre-training heads (`masked_lm`, `next_sentence`),
    the classifier head (`num_labels`) and the SQuAD head (`squad`) on request. Adam
    slots and `global_step` are not included.
    """
    h, i = config.hidden_size, config.intermediate_size
    shapes = collections.OrderedDict()
    emb = scope + "/embeddings/"
    shapes[emb + "word_embeddings"] = (config.vocab_size, h)
    shapes[emb + "token_type_embeddings"] = (config.type_vocab_size, h)
    shapes[emb + "position_embeddings"] = (config.max_position_embeddings, h)
    shapes[emb + "LayerNorm/beta"] = (h,)
    shapes[emb + "LayerNorm/gamma"] = (h,)
    for n in range(config.num_hidden_layers):
        layer = "%s/encoder/layer_%d/" % (scope, n)
        for dense, n_in, n_out in (("attention/self/query", h, h), ("attention/self/key", h, h),
                                   ("attention/self/value", h, h), ("attention/output/dense", h, h),
                                   ("intermediate/dense", h, i), ("output/dense", i, h)):
            shapes[layer + dense + "/kernel"] = (n_in, n_out)
            shapes[layer + dense + "/bias"] = (n_out,)
            if dense in ("attention/output/dense", "output/dense"):
                norm = layer + dense.replace("/dense", "/LayerNorm")
                shapes[norm + "/beta"] = (h,)
                shapes[norm + "/gamma"] = (h,)
    shapes[scope + "/pooler/dense/kernel"] = (h, h)
    shapes[scope + "/pooler/dense/bias"] = (h,)
    if masked_lm:
        shapes["cls/predictions/transform/dense/kernel"] = (h, h)
        shapes["cls/predictions/transform/dense/bias"] = (h,)
        shapes["cls/predictions/transform/LayerNorm/beta"] = (h,)
        shapes["cls/predictions/transform/LayerNorm/gamma"] = (h,)
        shapes["cls/predictions/output_bias"] = (config.vocab_size,)
    if next_sentence:
        shapes["cls/seq_relationship/output_weights"] = (2, h)
        shapes["cls/seq_relationship/output_bias"] = (2,)
    if num_labels is not None:
        shapes["output_weights"] = (num_labels, h)
        shapes["output_bias"] = (num_labels,)
    if squad:
        shapes["cls/squad/output_weights"] = (2, h)
        shapes["cls/squad/output_bias"] = (2,)
    return shapes


def _variable_name(variable):
    """Checkpoint name of a Keras variable (its path) or a tf.Variable (name minus :0)."""
    path = getattr(variable, "path", None)
    if isinstance(path, str) and path:
        return path
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def original_name_map(*layers_or_variables):
    """{original checkpoint name: variable} for layers, variables or {name: variable} dicts.

    A dict's keys are used as given, which is how a caller maps optimizer slots
    (`<name>/adam_m`, `<name>/adam_v`) or `global_step` onto checkpoint names. The same
    variable reached twice (a tied weight) counts once; two different variables with
    one name raise ValueError.
    """
    names = collections.OrderedDict()

    def add(name, variable):
        if name in names and names[name] is not variable:
            raise ValueError("two different variables share the checkpoint name %s" % name)
        names[name] = variable

    for item in layers_or_variables:
        if isinstance(item, dict):
            for name, variable in item.items():
                add(name, variable)
        elif isinstance(item, (list, tuple)):
            for name, variable in original_name_map(*item).items():
                add(name, variable)
        elif isinstance(item, keras.layers.Layer):
            for variable in item.variables:
                add(_variable_name(variable), variable)
        elif isinstance(item, (keras.Variable, tf.Variable)):
            add(_variable_name(item), item)
        else:
            raise ValueError("expected a Keras layer, a variable or a dict of variables, got %s" %
                             type(item).__name__)
    return names


def resolve_checkpoint(path):
    """Returns the checkpoint prefix for `path`: a prefix, a `.index` file or a directory.

    A directory resolves to its latest checkpoint (its `checkpoint` state file). Raises
    ValueError naming the path when there is no checkpoint.
    """
    if not path:
        raise ValueError("no checkpoint path given")
    path = str(path)
    if tf.io.gfile.exists(path + ".index"):
        # Before isdir: on object stores and ram:// a prefix of other names can count as a
        # directory (ram://out/model.ckpt-2 "holds" model.ckpt-2.index).
        return path
    if tf.io.gfile.isdir(path):
        # The state file's choice: a newer checkpoint it does not name may be one that is not
        # meant to be used (output_dir/best/ keeps only its best).
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError("no checkpoint found in directory %s (no 'checkpoint' state file);"
                             " pass a checkpoint prefix such as %s" %
                             (path, os.path.join(path, "bert_model.ckpt")))
        return latest
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        if path.endswith(suffix) and tf.io.gfile.exists(path[:-len(suffix)] + ".index"):
            return path[:-len(suffix)]
    raise ValueError("checkpoint not found: %s (expected the file %s.index)" % (path, path))


def latest_checkpoint(directory, usable=None):
    """The newest checkpoint in a directory of training checkpoints: the one its `checkpoint`
    state file names, or a newer `NAME-STEP` checkpoint the state file does not name yet; None
    when there is none. (Not for any directory: output_dir/best/ names its best, not its newest.)

    A save writes the checkpoint's files, then the state file: a run killed in between
    leaves a whole checkpoint that the state file does not know, and the newest progress
    there is. It counts when it is whole (checkpoint_problem) and `usable(prefix)`, if
    given, says yes; a damaged named one is still returned (its reader reports it).
    """
    named = tf.train.latest_checkpoint(directory)
    named_step = _checkpoint_step_of(named) if named else -1
    newer = []
    for index in tf.io.gfile.glob(os.path.join(glob_escape(directory), "*-[0-9]*.index")):
        prefix = index[:-len(".index")]
        step = _checkpoint_step_of(prefix)
        if step is not None and step > named_step and (named is None or _same_name(prefix, named)):
            newer.append((step, prefix))
    for step, prefix in sorted(newer, reverse=True):
        if checkpoint_problem(prefix) is None and (usable is None or usable(prefix)):
            logging.info("%s is whole but %s does not name it yet (a run stopped while saving): using it",
                         prefix, os.path.join(directory, "checkpoint"))
            return prefix
    return named


def _checkpoint_step_of(prefix):
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else None


def _same_name(prefix, other):
    """Whether two checkpoint prefixes share their name before `-STEP` (model.ckpt-5, model.ckpt-9)."""
    return os.path.basename(prefix).rsplit("-", 1)[0] == os.path.basename(other).rsplit("-", 1)[0]


CheckpointLoadResult = collections.namedtuple(
    "CheckpointLoadResult", ["checkpoint", "restored", "not_in_checkpoint", "unused"])
CheckpointLoadResult.__doc__ = """What `load_checkpoint` did.

checkpoint: the resolved prefix; restored: names assigned from it; not_in_checkpoint:
names of the given variables that it lacks (left as initialised); unused: its names that
no given variable has (Adam slots, `global_step`, heads not built, ...).
"""


def load_checkpoint(checkpoint, *layers_or_variables):
    """Restores variables from a name-based checkpoint in the original names.

    Like the original's init_from_checkpoint: every given variable whose name is in the
    checkpoint is assigned, the others keep their initial values, and the list is logged
    (`name = ..., shape = ..., *INIT_FROM_CKPT*`). Shapes are all checked before anything
    is assigned. Adam slots and `global_step` in the checkpoint are ignored unless a dict
    maps those names to variables.

    Args:
        checkpoint: prefix (`.../bert_model.ckpt`), its `.index` file, or a directory (its
            latest checkpoint).
        *layers_or_variables: Keras layers (all their variables, by `path`), variables, or
            dicts {checkpoint name: variable}.

    Returns:
        `CheckpointLoadResult`.

    Raises:
        ValueError: no checkpoint at `checkpoint`, or a variable whose shape differs from
            the checkpoint's (the message names the variable and both shapes).
    """
    prefix = resolve_checkpoint(checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError("cannot read checkpoint %s: %s" % (prefix, _one_line(e))) from None
    variables = original_name_map(*layers_or_variables)
    checkpoint_shapes = check_checkpoint(prefix, variables, reader)

    for name, variable in variables.items():
        if name in checkpoint_shapes:
            want = tuple(int(d) for d in variable.shape)
            have = tuple(int(d) for d in checkpoint_shapes[name])
            if want != have:
                raise ValueError(
                    "checkpoint %s: variable %s has shape %s in the checkpoint but %s in the "
                    "model; the BERT config does not match the checkpoint" %
                    (prefix, name, list(have), list(want)))

    restored, not_in_checkpoint = [], []
    logging.info("**** Variables (from %s) ****", prefix)
    for name, variable in variables.items():
        if name in checkpoint_shapes:
            variable.assign(tf.cast(read_checkpoint_tensor(reader, prefix, name), variable.dtype))
            restored.append(name)
            init_string = ", *INIT_FROM_CKPT*"
        else:
            not_in_checkpoint.append(name)
            init_string = ""
        logging.info("  name = %s, shape = %s%s", name, tuple(variable.shape), init_string)
    unused = sorted(set(checkpoint_shapes) - set(variables))
    return CheckpointLoadResult(prefix, restored, not_in_checkpoint, unused)


def check_checkpoint(prefix, model_names, reader=None):
    """Raises ValueError in one line unless the checkpoint at `prefix` is whole (checkpoint_problem)
    and holds every encoder layer that `model_names` (names of the model's variables) has
    (check_encoder_layers); returns the checkpoint's {name: shape}. load_checkpoint runs it
    first; the runners run it before they write anything. `reader`: the checkpoint's, if open."""
    problem = checkpoint_problem(prefix)
    if problem:
        raise ValueError(f"checkpoint {prefix} {problem}")
    shapes = (reader or tf.train.load_checkpoint(prefix)).get_variable_to_shape_map()
    check_encoder_layers(prefix, shapes, model_names)
    return shapes


_ENCODER_LAYER = re.compile(r"(?:^|/)encoder/layer_(\d+)/")


def _encoder_layer_numbers(names):
    return sorted({int(m.group(1)) for m in map(_ENCODER_LAYER.search, names) if m})


def _layer_list(numbers):
    """[2, 3, 4, 7] -> 'layer_2-layer_4, layer_7'."""
    runs = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"layer_{a}" if a == b else f"layer_{a}-layer_{b}" for a, b in runs)


def check_encoder_layers(prefix, checkpoint_names, model_names, keep_all=False):
    """Raises ValueError when the model has whole encoder layers the checkpoint lacks.

    Such layers would start at random with no word (a config of 12 layers given a
    checkpoint of 4, say). Layers of the checkpoint that the model lacks are only logged
    (a shallower model taken from a deeper checkpoint can be meant), unless `keep_all`
    (a conversion, which must keep every layer) makes them an error too.
    """
    have, want = _encoder_layer_numbers(checkpoint_names), _encoder_layer_numbers(model_names)
    if not have:
        return  # not an encoder checkpoint: the caller reports what was restored
    missing = sorted(set(want) - set(have))
    if missing:
        raise ValueError(f"checkpoint {prefix} has {len(have)} encoder layer(s) but the BERT config has "
                         f"num_hidden_layers={len(want)}: {_layer_list(missing)} would start at random; use the "
                         f"bert_config.json that came with the checkpoint")
    extra = sorted(set(have) - set(want))
    if extra and keep_all:
        raise ValueError(f"checkpoint {prefix} has {len(have)} encoder layers but the BERT config has "
                         f"num_hidden_layers={len(want)}: {_layer_list(extra)} would be left out; use the "
                         f"bert_config.json that came with the checkpoint")
    if extra and want:
        logging.warning("Checkpoint %s has %d encoder layers, the model %d: %s of the checkpoint are not used",
                        prefix, len(have), len(want), _layer_list(extra))


def checkpoint_problem(prefix):
    """Why the checkpoint at `prefix` cannot be whole (unreadable index, .data files missing or
    shorter than the tensors the index lists), or None. Reads the index and sizes only."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
        data_files = tf.io.gfile.glob(glob_escape(prefix) + ".data-?????-of-?????")
        have = sum(tf.io.gfile.stat(path).length for path in data_files)
    except (tf.errors.OpError, ValueError) as e:
        return f"cannot be read ({_one_line(e)})"
    if not data_files:
        return f"has no {os.path.basename(prefix)}.data-* file"
    need = sum(int(np.prod(shapes[name], dtype=np.int64)) * dtype.size for name, dtype in dtypes.items()
               if dtype != tf.string)
    if have < need:
        return f"is truncated: its .data files hold {have:,} bytes of the {need:,} its index lists"
    return None


def glob_escape(path):
    """`path` with glob's special characters escaped (tf.io.gfile.glob has no escape of its own)."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def read_checkpoint_tensor(reader, prefix, name):
    """reader.get_tensor(name), with a damaged checkpoint (a `.data` file cut short by a full
    disk or an interrupted copy) reported as a ValueError naming the file."""
    try:
        return reader.get_tensor(name)
    except (IndexError, tf.errors.OpError) as e:
        raise ValueError("checkpoint %s is damaged: variable %s cannot be read (%s); is %s.data-* truncated?" %
                         (prefix, name, _one_line(e), prefix)) from None


def save_checkpoint(prefix, tensors):
    """Writes a name-based checkpoint (`prefix.index`, `prefix.data-00000-of-00001`).

    The bundle is written under a temporary prefix and then merged into place (data
    first, index last), so an interrupted save leaves no half-written checkpoint at
    `prefix`. Readable by `tf.train.load_checkpoint` and by the original code.

    Args:
        prefix: checkpoint prefix, e.g. `output_dir/model.ckpt-1000`.
        tensors: {name: tensor, variable or array}; for a model use
            `original_name_map(model, heads...)`, plus `<name>/adam_m`, `<name>/adam_v` and
            an int64 `global_step` for a training checkpoint.

    Returns:
        `prefix`.
    """
    if not tensors:
        raise ValueError("save_checkpoint(%s): nothing to save" % prefix)
    names = sorted(tensors)
    values = []
    for name in names:
        value = tensors[name]
        if isinstance(value, keras.Variable):
            value = value.value
        values.append(tf.convert_to_tensor(value))
    directory = os.path.dirname(prefix)
    if directory:
        tf.io.gfile.makedirs(directory)
    temp_dir = "%s_temp_%d_%s" % (prefix, os.getpid(), uuid.uuid4().hex)  # a killed run's is cleaned by pid
    temp_prefix = os.path.join(temp_dir, "part")
    try:
        tf.io.gfile.makedirs(temp_dir)
        tf.raw_ops.SaveV2(prefix=temp_prefix, tensor_names=names,
                          shape_and_slices=[""] * len(names), tensors=values)
        tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=[temp_prefix], destination_prefix=prefix,
                                      delete_old_dirs=True)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)
    return prefix


# ----------------------------------------------------------------------------------------
# The original's tensor functions, for code written against it (issue 23). Eager TF2, same
# signatures and numbers; the layers above do not use them. TF1-only names: porting.py.


def dropout(input_tensor, dropout_prob):
    """Drops each element with probability `dropout_prob` (None or 0: `input_tensor` as is)."""
    if dropout_prob is None or dropout_prob == 0.0:
        return input_tensor
    return tf.nn.dropout(input_tensor, rate=dropout_prob)


def layer_norm(input_tensor, name=None):
    """Normalises the last axis (epsilon 1e-12) with a fresh LayerNorm's gamma = 1 and beta = 0.

    The original created the gamma/beta variables under `name` in the graph; eagerly there is
    nowhere to keep them, so this is that layer at initialisation. `LayerNorm(size, path)`
    holds trained parameters.
    """
    del name  # a variable scope in the original
    mean, variance = tf.nn.moments(input_tensor, axes=[-1], keepdims=True)
    return (input_tensor - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPSILON)


def layer_norm_and_dropout(input_tensor, dropout_prob, name=None):
    """`layer_norm`, then `dropout`."""
    return dropout(layer_norm(input_tensor, name), dropout_prob)


def get_shape_list(tensor, expected_rank=None, name=None):
    """Dimensions of `tensor`: Python ints where static, scalar tensors where not."""
    if expected_rank is not None:
        assert_rank(tensor, expected_rank, name)
    return _shape_list(tensor)


def assert_rank(tensor, expected_rank, name=None):
    """Raises ValueError unless the rank of `tensor` is `expected_rank` (an int or a list of ints)."""
    expected = [expected_rank] if isinstance(expected_rank, int) else list(expected_rank)
    rank = tensor.shape.rank
    if rank not in expected:
        raise ValueError(f"tensor {name or getattr(tensor, 'name', '')} has rank {rank} (shape {tensor.shape}), "
                         f"expected rank {' or '.join(str(r) for r in expected)}")


def reshape_to_matrix(input_tensor):
    """[..., W] -> [N, W] (a rank-2 tensor is returned as it is)."""
    if input_tensor.shape.rank < 2:
        raise ValueError(f"reshape_to_matrix needs a tensor of rank 2 or more, got shape {input_tensor.shape}")
    if input_tensor.shape.rank == 2:
        return input_tensor
    return tf.reshape(input_tensor, [-1, input_tensor.shape[-1]])


def reshape_from_matrix(output_tensor, orig_shape_list):
    """[N, W] -> orig_shape_list[:-1] + [W]: undoes `reshape_to_matrix`."""
    if len(orig_shape_list) == 2:
        return output_tensor
    width = _shape_list(output_tensor)[-1]
    return tf.reshape(output_tensor, list(orig_shape_list[:-1]) + [width])


def create_attention_mask_from_input_mask(from_tensor, to_mask):
    """float32 [B, F, T] mask, 1 where a `from_tensor` [B, F, ...] position may attend to `to_mask` [B, T]."""
    batch_size, from_seq_length = _shape_list(from_tensor)[:2]
    to_seq_length = _shape_list(to_mask)[1]
    to_mask = tf.cast(tf.reshape(to_mask, [batch_size, 1, to_seq_length]), tf.float32)
    return tf.ones([batch_size, from_seq_length, 1], tf.float32) * to_mask  # [B, F, T]


# Keyword arguments of the original's graph-building BertModel(config, is_training, input_ids, ...).
_TF1_BERT_MODEL_ARGUMENTS = ("is_training", "input_ids", "input_mask", "token_type_ids", "scope")


def _refuse_tf1_call_style(name, kwargs):
    """One line for `BertModel(config=..., is_training=..., input_ids=...)`, the original's graph builder.

    Positionally, `BertModel(config, is_training, input_ids)` puts a tensor where `name` goes.
    """
    if not isinstance(name, str) or any(argument in kwargs for argument in _TF1_BERT_MODEL_ARGUMENTS):
        raise TypeError("BertModel(config, is_training, input_ids, ...) was the TF1 graph builder; here build "
                        "model = BertModel(config) once, then out = model(input_ids, input_mask=..., "
                        "token_type_ids=..., training=is_training) and read out['sequence_output'], "
                        "out['pooled_output'], out['encoder_layers'] (see README, Porting)")


def __getattr__(name):
    """The original's TF1-only names end here with a one-line pointer to their replacement."""
    import porting  # only when a name is missing: the module's own imports stay as they are
    raise porting.missing_name(__name__, name)
