"""The original google-research/bert code, loaded for the golden-file scripts and bench/.

Not part of the project and not run by the tests. The original is bert-tensorflow 1.0.4 on
PyPI (the same math and variable names as the GitHub HEAD), TF1 code that runs here in
graph mode through tf.compat.v1, with two shims for what TF 2.21 no longer has (tf.contrib's
layer_norm and tf.layers.dense, re-expressed with the same ops and variable names).

Every script that runs the original takes `--original_dir`: the unzipped wheel, the
directory that holds the `bert/` package:

    pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig
    (cd /tmp/orig && unzip -o -q bert_tensorflow-1.0.4-py2.py3-none-any.whl)
"""

import ast
import os
import re
import sys
import types

import tensorflow as tf

v1 = tf.compat.v1

DEFAULT_DIR = "/tmp/orig"
HOW_TO_GET = ("pip download --no-deps bert-tensorflow==1.0.4 -d /tmp/orig && (cd /tmp/orig && unzip -o -q "
              "bert_tensorflow-1.0.4-py2.py3-none-any.whl)")


def add_argument(parser):
    """Adds --original_dir to an argparse parser."""
    parser.add_argument("--original_dir", default=DEFAULT_DIR,
                        help="the unzipped bert-tensorflow 1.0.4 wheel (the directory holding bert/)")


def path(original_dir, filename):
    """original_dir/bert/filename; exits with how to get the original when it is not there."""
    found = os.path.join(original_dir, "bert", filename)
    if not os.path.exists(found):
        raise SystemExit(f"{found} not found: --original_dir is the unzipped wheel ({HOW_TO_GET})")
    return found


# --- TF1 shims --------------------------------------------------------------------------------

def contrib_layer_norm(inputs, begin_norm_axis=-1, begin_params_axis=-1, scope=None):
    """tf.contrib.layers.layer_norm for the last axis: moments + batch_normalization, eps 1e-12."""
    assert begin_norm_axis == -1 and begin_params_axis == -1
    with v1.variable_scope(scope, default_name="LayerNorm"):
        size = inputs.shape[-1:]
        beta = v1.get_variable("beta", shape=size, initializer=v1.zeros_initializer())
        gamma = v1.get_variable("gamma", shape=size, initializer=v1.ones_initializer())
        mean, variance = v1.nn.moments(inputs, [inputs.shape.ndims - 1], keep_dims=True)
        return v1.nn.batch_normalization(inputs, mean, variance, offset=beta, scale=gamma,
                                         variance_epsilon=1e-12)


def layers_dense(inputs, units, activation=None, kernel_initializer=None, name=None):
    """tf.layers.dense on a 2-D input: variables `<scope>/dense/kernel` and `bias`."""
    with v1.variable_scope(name, default_name="dense"):
        kernel = v1.get_variable("kernel", [int(inputs.shape[-1]), units],
                                 initializer=kernel_initializer)
        bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
        outputs = v1.nn.bias_add(v1.matmul(inputs, kernel), bias)
        return activation(outputs) if activation is not None else outputs


def tf1_namespace():
    """`tf` as the original code sees it: tf.compat.v1 plus the two shims."""
    namespace = types.SimpleNamespace(
        **{k: getattr(v1, k)
           for k in dir(v1) if not k.startswith("__")})
    namespace.layers = types.SimpleNamespace(dense=layers_dense)
    namespace.contrib = types.SimpleNamespace(layers=types.SimpleNamespace(
        layer_norm=contrib_layer_norm))
    return namespace


# --- Loading ----------------------------------------------------------------------------------

def load(original_dir, filename, tf_shim=None, modules=None):
    """Executes bert/<filename> of the original as a fresh module.

    Args:
        tf_shim: what its `tensorflow` import becomes (a tf1_namespace()); None: the real
            tf.compat.v1.
        modules: {name: module or None} that its `from bert import name` lines get instead;
            the lines for other names import the original's own package.
    """
    source_path = path(original_dir, filename)
    source = open(source_path, encoding="utf-8").read()
    if tf_shim is not None:
        source = source.replace("from tensorflow.contrib import layers as contrib_layers",
                                "contrib_layers = tf.contrib.layers")
        # HEAD imports `tensorflow as tf`, the 1.0.4 wheel `tensorflow.compat.v1 as tf`.
        source = re.sub(r"(?m)^import tensorflow(\.compat\.v1)? as tf$", "tf = _tf_shim", source)
    for name in modules or {}:
        source = re.sub(rf"(?m)^from bert import {name}$", f"{name} = _modules[{name!r}]", source)
    if original_dir not in sys.path:
        sys.path.insert(0, original_dir)
    module = types.ModuleType("original_" + filename[:-3])
    module.__dict__.update(_tf_shim=tf_shim, _modules=dict(modules or {}))
    exec(compile(source, source_path, "exec"), module.__dict__)
    return module


def functions(original_dir, filename, names, tf_shim, modeling, replace=()):
    """Compiles only the named top-level functions of an original script (no flags, no main).

    `replace`: (old, new) source edits made first (such as a TF1-only idiom).
    """
    source_path = path(original_dir, filename)
    source = open(source_path).read()
    for old, new in replace:
        source = source.replace(old, new)
    tree = ast.parse(source, source_path)
    tree.body = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names
    ]
    namespace = {"tf": tf_shim, "modeling": modeling}
    exec(compile(tree, source_path, "exec"), namespace)
    return [namespace[name] for name in names]


def modeling(original_dir, tf_shim):
    """The original modeling.py under `tf_shim`."""
    return load(original_dir, "modeling.py", tf_shim)


def tokenization(original_dir):
    """The original package's tokenization module (`bert.tokenization`), as 1.0.4 without its
    extra `preserve_token` rule (off: the GitHub HEAD has none)."""
    path(original_dir, "tokenization.py")
    if original_dir not in sys.path:
        sys.path.insert(0, original_dir)
    import bert.tokenization
    bert.tokenization.preserve_token = lambda token, vocab: False
    return bert.tokenization


class PredictSpec:
    """What TPUEstimatorSpec carries for prediction."""

    def __init__(self, mode, predictions, scaffold_fn=None):
        self.mode, self.predictions, self.scaffold_fn = mode, predictions, scaffold_fn


class GraphModeEstimator:
    """What TPUEstimator.predict does with use_tpu=False, in a tf.compat.v1 Session."""

    def __init__(self, use_tpu, model_fn, config, predict_batch_size):
        assert not use_tpu
        self.model_fn, self.batch_size = model_fn, predict_batch_size

    def predict(self, input_fn, yield_single_examples=True):
        assert yield_single_examples
        params = {"batch_size": self.batch_size}
        with v1.Graph().as_default():
            dataset = input_fn(params)
            features = v1.data.make_one_shot_iterator(dataset).get_next()
            spec = self.model_fn(features, None, "infer", params)
            with v1.Session() as session:
                session.run(v1.global_variables_initializer())
                while True:
                    try:
                        batch = session.run(spec.predictions)
                    except v1.errors.OutOfRangeError:
                        return
                    for i in range(len(batch["unique_id"])):
                        yield {name: value[i] for name, value in batch.items()}


def estimator_namespace():
    """tf1_namespace() with an `estimator` whose TPUEstimator is GraphModeEstimator (prediction only)."""
    tf_shim = tf1_namespace()
    tf_shim.estimator = types.SimpleNamespace(
        ModeKeys=types.SimpleNamespace(PREDICT="infer"),
        tpu=types.SimpleNamespace(
            InputPipelineConfig=types.SimpleNamespace(PER_HOST_V2=2),
            RunConfig=lambda **kwargs: kwargs, TPUConfig=lambda **kwargs: kwargs,
            TPUEstimatorSpec=PredictSpec, TPUEstimator=GraphModeEstimator))
    return tf_shim


def run_squad(original_dir):
    """(the original run_squad module, its modeling under tf1_namespace(), its tokenization), its
    absl flags parsed with placeholders for the required ones."""
    orig_tokenization = tokenization(original_dir)
    orig_modeling = modeling(original_dir, tf1_namespace())
    module = load(original_dir, "run_squad.py", modules={"modeling": orig_modeling, "tokenization": orig_tokenization})
    module.FLAGS(["run_squad.py", "--vocab_file=x", "--bert_config_file=x", "--output_dir=x"])
    return module, orig_modeling, orig_tokenization


def pretraining_train_op(original_dir, config_dict, features, learning_rate, num_train_steps, num_warmup_steps,
                         is_training=True):
    """Builds the original's MLM+NSP training in the current tf.compat.v1 graph: (loss, train_op).

    Its modeling.py with `is_training` (dropout on when True), run_pretraining.py's two heads and
    optimization.py's create_optimizer (AdamWeightDecay, clip at 1.0), fed by `features`
    ({name: array} of one batch, as graph constants). What run_pretraining.py's model_fn builds.
    """
    shim = tf1_namespace()
    orig_modeling = modeling(original_dir, shim)
    config = orig_modeling.BertConfig.from_dict(config_dict)
    feeds = {k: v1.constant(v) for k, v in features.items()}
    model = orig_modeling.BertModel(config=config, is_training=is_training, input_ids=feeds["input_ids"],
                                    input_mask=feeds["input_mask"], token_type_ids=feeds["segment_ids"],
                                    use_one_hot_embeddings=False)
    # gather_indexes is compiled too: get_masked_lm_output calls it as a global.
    get_mlm, get_nsp, _ = functions(original_dir, "run_pretraining.py",
                                    ["get_masked_lm_output", "get_next_sentence_output", "gather_indexes"], shim,
                                    orig_modeling)
    mlm_loss = get_mlm(config, model.get_sequence_output(), model.get_embedding_table(),
                       feeds["masked_lm_positions"], feeds["masked_lm_ids"], feeds["masked_lm_weights"])[0]
    nsp_loss = get_nsp(config, model.get_pooled_output(), feeds["next_sentence_labels"])[0]
    loss = mlm_loss + nsp_loss
    train_op = load(original_dir, "optimization.py", shim).create_optimizer(
        loss, learning_rate, num_train_steps, num_warmup_steps, False)
    return loss, train_op
