"""The engine's contract on a tiny layer, in process: train, evaluate, predict, restore.

A runner hands training.train a Keras layer whose variable paths are its checkpoint names,
a loss function and a dataset function; evaluate and predict take a metric or output
function and a dataset of global batches. Here the layer is y = x . w + b (two weights and
a bias), the data eight fixed examples, and every number is checked against a NumPy
reference of the original's AdamWeightDecay (no bias correction, global-norm clip 1.0,
weight decay 0.01 except on biases, learning rate decaying linearly to 0).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import modeling
import training

X = np.array([[1.0, 2.0], [0.5, -1.0], [-2.0, 0.5], [3.0, 1.0],
              [0.0, 1.5], [-1.0, -1.0], [2.0, -0.5], [1.5, 2.5]], np.float32)
Y = np.array([3.0, -1.0, -2.5, 5.0, 1.0, -3.0, 2.5, 4.0], np.float32)
BATCH, STEPS, LEARNING_RATE = 2, 4, 0.1


class Linear(keras.layers.Layer):
    """y = x . kernel + bias; checkpoint names `linear/kernel` and `linear/bias`."""

    def __init__(self):
        super().__init__(name="linear")
        self.kernel = self.add_weight(name="kernel", shape=[2], initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=[], initializer="zeros")

    def call(self, x):
        return tf.linalg.matvec(x, self.kernel) + self.bias


def squared_error(model, features, training):
    return tf.reduce_mean(tf.square(model(features["x"]) - features["y"]))


def dataset_fn(input_context, batch_size, skip_examples):
    """The eight examples in order, `batch_size` at a time, for ever."""
    return tf.data.Dataset.from_tensor_slices({"x": X, "y": Y}).batch(batch_size, drop_remainder=True).repeat()


def reference_weights(steps=STEPS, num_train_steps=STEPS):
    """NumPy: the (kernel, bias) the original's optimizer reaches after `steps` batches."""
    w, b = np.zeros(2), 0.0
    m, v = np.zeros(3), np.zeros(3)
    for step in range(steps):
        rows = slice(step * BATCH % len(X), step * BATCH % len(X) + BATCH)
        x, y = X[rows].astype(np.float64), Y[rows].astype(np.float64)
        error = x @ w + b - y
        g = np.append(2 * (error[:, None] * x).mean(0), 2 * error.mean())
        g *= 1.0 / max(np.sqrt((g ** 2).sum()), 1.0)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g ** 2
        update = m / (np.sqrt(v) + 1e-6)
        update[:2] += 0.01 * w  # the bias gets no weight decay
        learning_rate = LEARNING_RATE * (1 - step / num_train_steps)
        w, b = w - learning_rate * update[:2], b - learning_rate * update[2]
    return w, b


@pytest.fixture(scope="module")
def strategy():
    return training.make_strategy(training.EngineConfig())


def engine_config(**overrides):
    settings = dict(log_steps=1, save_checkpoints_steps=2, seed=0)
    settings.update(overrides)
    return training.EngineConfig(**settings)


def new_model(strategy):
    with strategy.scope():
        return Linear()


def train(strategy, model, output_dir, **kwargs):
    return training.train(strategy, engine_config(), model, squared_error, dataset_fn, str(output_dir), STEPS, 0,
                          LEARNING_RATE, BATCH, **kwargs)


def test_train_follows_the_original_optimizer_and_checkpoints_in_original_names(strategy, tmp_path):
    model = new_model(strategy)
    loss = train(strategy, model, tmp_path)
    w, b = reference_weights()
    np.testing.assert_allclose(model.kernel.numpy(), w, rtol=1e-5)
    np.testing.assert_allclose(model.bias.numpy(), b, rtol=1e-5)
    # The loss of the last logged interval (one step): the last batch before its update.
    w3, b3 = reference_weights(steps=3)
    x, y = X[6:8], Y[6:8]
    assert loss == pytest.approx(float(np.mean((x @ w3 + b3 - y) ** 2)), rel=1e-5)

    assert training.checkpoint_step(str(tmp_path)) == STEPS
    reader = tf.train.load_checkpoint(str(tmp_path))
    assert sorted(reader.get_variable_to_shape_map()) == [
        "global_step", "linear/bias", "linear/bias/adam_m", "linear/bias/adam_v",
        "linear/kernel", "linear/kernel/adam_m", "linear/kernel/adam_v"]
    np.testing.assert_allclose(reader.get_tensor("linear/kernel"), w, rtol=1e-5)
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".index")) == [
        "model.ckpt-2.index", "model.ckpt-4.index"]
    # Trained to the end: a second call finds the last step and does nothing.
    assert train(strategy, new_model(strategy), tmp_path) is None


def test_an_interrupted_run_resumes_to_the_same_weights(strategy, tmp_path):
    uninterrupted = new_model(strategy)
    train(strategy, uninterrupted, tmp_path / "uninterrupted")

    def interrupt(step):
        raise KeyboardInterrupt(step)

    with pytest.raises(KeyboardInterrupt):  # after the checkpoint of step 2
        train(strategy, new_model(strategy), tmp_path / "interrupted", step_callback=interrupt,
              callback_every_steps=2)
    assert training.checkpoint_step(str(tmp_path / "interrupted")) == 2
    resumed = new_model(strategy)
    train(strategy, resumed, tmp_path / "interrupted")
    np.testing.assert_array_equal(resumed.kernel.numpy(), uninterrupted.kernel.numpy())
    np.testing.assert_array_equal(resumed.bias.numpy(), uninterrupted.bias.numpy())


def test_running_out_of_memory_names_the_step_the_batch_and_what_to_change(strategy, tmp_path):
    # A step that asks for 64 TiB: TensorFlow raises ResourceExhaustedError, as a GPU does when
    # a batch does not fit. The run trained to step 2 before; it resumes and fails at step 3.
    def greedy(model, features, training):
        huge = tf.fill([2 ** 22, 2 ** 22], features["y"][0])
        return squared_error(model, features, training) + tf.reduce_sum(huge)

    training.train(strategy, engine_config(), new_model(strategy), squared_error, dataset_fn, str(tmp_path), 2, 0,
                   LEARNING_RATE, 4)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError) as error:
        training.train(strategy, engine_config(), new_model(strategy), greedy, dataset_fn, str(tmp_path), STEPS, 0,
                       LEARNING_RATE, 4)
    message = str(error.value)
    assert message.startswith("out of memory in training step 3 at train_batch_size=4 (4 example(s) per replica "
                              "and micro-batch, 1 replica(s)): OOM when allocating tensor with shape[4194304,4194304]")
    assert message.endswith("; to use less memory: --gradient_checkpointing (a quarter or less of the activations, "
                            "~1.3x the time); --precision=mixed_float16 on a GPU (mixed_bfloat16 on a TPU); "
                            "--gradient_accumulation_steps=2 (half the micro-batch, the same update); a smaller "
                            "--max_seq_length")
    assert "\n" not in message
    # Flags already in use are not advised again, nor accumulation that cannot halve the micro-batch.
    with pytest.raises(ValueError) as error:
        training.train(strategy, engine_config(precision="mixed_bfloat16", gradient_accumulation_steps=4),
                       new_model(strategy), greedy, dataset_fn, str(tmp_path), STEPS, 0, LEARNING_RATE, 4)
    assert str(error.value).endswith("to use less memory: --gradient_checkpointing (a quarter or less of the "
                                     "activations, ~1.3x the time); a smaller --max_seq_length")
    assert "1 example(s) per replica and micro-batch" in str(error.value)
    # The checkpoint of step 2 is still the newest: a rerun with the advice resumes from it.
    assert training.checkpoint_step(str(tmp_path)) == 2
    assert [name for name in sorted(os.listdir(tmp_path)) if "ckpt" in name] == [
        name for name in before if "ckpt" in name]


def test_restore_evaluate_and_predict(strategy, tmp_path):
    train(strategy, new_model(strategy), tmp_path)
    w, b = reference_weights()
    model = new_model(strategy)
    training.restore_for_inference(model, str(tmp_path), None)
    np.testing.assert_allclose(model.kernel.numpy(), w, rtol=1e-5)

    examples = tf.data.Dataset.from_tensor_slices({"x": X, "y": Y, "weight": np.arange(8, dtype=np.float32)})

    def metrics(model, features):
        error = tf.square(model(features["x"]) - features["y"])
        return {"mse": (tf.reduce_sum(error), tf.cast(tf.size(error), tf.float32)),
                "weighted_mse": (tf.reduce_sum(error * features["weight"]), tf.reduce_sum(features["weight"]))}

    results = training.evaluate(strategy, model, metrics, examples.batch(3))
    errors = (X @ w + b - Y) ** 2
    assert results["mse"] == pytest.approx(errors.mean(), rel=1e-5)
    assert results["weighted_mse"] == pytest.approx((errors * np.arange(8)).sum() / np.arange(8).sum(), rel=1e-5)
    assert training.evaluate(strategy, model, metrics, examples.batch(3), max_steps=1)["mse"] == pytest.approx(
        errors[:3].mean(), rel=1e-5)

    def outputs(model, features):
        return {"prediction": model(features["x"]), "y": features["y"]}

    batches = list(training.predict(strategy, model, outputs, examples.batch(3)))
    assert [len(batch["prediction"]) for batch in batches] == [3, 3, 2]
    np.testing.assert_allclose(np.concatenate([batch["prediction"] for batch in batches]), X @ w + b, rtol=1e-5)
    np.testing.assert_array_equal(np.concatenate([batch["y"] for batch in batches]), Y)


def test_restore_without_a_checkpoint_keeps_the_initial_weights_or_loads_init_checkpoint(strategy, tmp_path):
    model = new_model(strategy)
    training.restore_for_inference(model, str(tmp_path / "empty"), None)
    np.testing.assert_array_equal(model.kernel.numpy(), [0.0, 0.0])
    assert training.checkpoint_step(str(tmp_path / "empty")) == 0
    prefix = str(tmp_path / "init" / "model.ckpt")
    modeling.save_checkpoint(prefix, {"linear/kernel": np.array([1.5, -2.0], np.float32),
                                      "linear/bias": np.float32(0.25)})
    training.restore_for_inference(model, str(tmp_path / "empty"), prefix)
    np.testing.assert_array_equal(model.kernel.numpy(), [1.5, -2.0])
    assert float(model.bias.numpy()) == 0.25
