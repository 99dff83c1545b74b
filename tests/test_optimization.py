"""Tests for optimization.py: every update checked against the formula written in numpy."""

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import optimization

EXCLUDE = ["LayerNorm", "layer_norm", "bias"]
ATTENTION_OUTPUT = "bert/encoder/layer_0/attention/output"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- helpers


def name_scopes(path):
    """Keras name scopes for each part of `path` (one scope may not contain '/')."""
    stack = contextlib.ExitStack()
    for part in path.split("/"):
        stack.enter_context(keras.name_scope(part))
    return stack


def make_bert_like_variables(seed=0):
    """Variables with the original checkpoint names: a Dense, a LayerNorm, two loose ones."""
    rng = np.random.default_rng(seed)
    with name_scopes(ATTENTION_OUTPUT):
        dense = keras.layers.Dense(2, name="dense")
        dense.build((None, 3))
        layer_norm = keras.layers.LayerNormalization(epsilon=1e-12, name="LayerNorm")
        layer_norm.build((None, 2))
    with name_scopes("bert/embeddings"):
        word_embeddings = keras.Variable(np.zeros((4, 2), np.float32), name="word_embeddings")
    with name_scopes("cls/predictions"):
        output_bias = keras.Variable(np.zeros((4,), np.float32), name="output_bias")
    variables = [
        dense.kernel,
        dense.bias,
        layer_norm.gamma,
        layer_norm.beta,
        word_embeddings,
        output_bias,
    ]
    for variable in variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    return variables


def make_gradients(variables, num_steps, seed=1):
    """Per-step gradients; even steps have global norm well above 1, odd steps below."""
    rng = np.random.default_rng(seed)
    steps = []
    for step in range(num_steps):
        scale = 3.0 if step % 2 == 0 else 0.05
        steps.append(
            [(scale * rng.normal(size=v.shape)).astype(np.float32) for v in variables]
        )
    return steps


def numpy_schedule(step, init_lr, num_train_steps, num_warmup_steps):
    step = np.float32(step)
    decay_fraction = np.minimum(step, np.float32(num_train_steps)) / np.float32(num_train_steps)
    decayed = np.float32(init_lr) * (np.float32(1.0) - decay_fraction)
    if num_warmup_steps and step < num_warmup_steps:
        return np.float32(init_lr) * (step / np.float32(num_warmup_steps))
    return decayed


def numpy_clip_by_global_norm(grads, clip_norm):
    global_norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads))
    scale = clip_norm * min(1.0 / global_norm, 1.0 / clip_norm)
    return [(g * scale).astype(np.float32) for g in grads], global_norm


def numpy_reference(params, grads_per_step, names, rule, init_lr, num_train_steps,
                    num_warmup_steps, weight_decay_rate=0.01, clip_norm=1.0,
                    beta_1=0.9, beta_2=0.999, epsilon=1e-6, exclude=EXCLUDE):
    """Runs `rule` ("adamw" or "lamb") in numpy; returns params, slots, clipped-step flags.

    `grads_per_step`: a list of per-step gradient lists, or a function (params) -> gradients
    at those params (a model's), called for each of the `num_train_steps` steps.
    """
    params = [p.copy() for p in params]
    adam_m = [np.zeros_like(p) for p in params]
    adam_v = [np.zeros_like(p) for p in params]
    clipped = []
    if callable(grads_per_step):
        gradient_fn = grads_per_step
        grads_per_step = (gradient_fn(params) for _ in range(num_train_steps))
    for step, grads in enumerate(grads_per_step):
        lr = numpy_schedule(step, init_lr, num_train_steps, num_warmup_steps)
        if clip_norm:
            grads, global_norm = numpy_clip_by_global_norm(grads, clip_norm)
            clipped.append(global_norm > clip_norm)
        for i, (name, g) in enumerate(zip(names, grads)):
            excluded = any(re.search(p, name) for p in exclude)
            adam_m[i] = beta_1 * adam_m[i] + (1 - beta_1) * g
            adam_v[i] = beta_2 * adam_v[i] + (1 - beta_2) * g * g
            if rule == "adamw":
                update = adam_m[i] / (np.sqrt(adam_v[i]) + epsilon)
            else:
                t = step + 1
                m_hat = adam_m[i] / (1 - beta_1**t)
                v_hat = adam_v[i] / (1 - beta_2**t)
                update = m_hat / (np.sqrt(v_hat) + epsilon)
            if weight_decay_rate and not excluded:
                update = update + weight_decay_rate * params[i]
            ratio = 1.0
            if rule == "lamb" and not excluded:
                w_norm = np.linalg.norm(params[i])
                u_norm = np.linalg.norm(update)
                ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            params[i] = (params[i] - ratio * lr * update).astype(np.float32)
    return params, adam_m, adam_v, clipped


def run_optimizer(optimizer, variables, grads_per_step, use_tf_function=False):
    optimizer.build(variables)

    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    if use_tf_function:
        apply = tf.function(apply)
    for grads in grads_per_step:
        apply([tf.constant(g) for g in grads])


def assert_matches_reference(optimizer, variables, reference):
    ref_params, ref_m, ref_v, _ = reference
    slots = optimizer.slot_variables()
    for variable, param, m, v in zip(variables, ref_params, ref_m, ref_v):
        np.testing.assert_allclose(variable.numpy(), param, rtol=1e-5, atol=1e-6,
                                   err_msg=variable.path)
        np.testing.assert_allclose(slots[variable.path + "/adam_m"].numpy(), m,
                                   rtol=1e-5, atol=1e-7, err_msg=variable.path)
        np.testing.assert_allclose(slots[variable.path + "/adam_v"].numpy(), v,
                                   rtol=1e-5, atol=1e-9, err_msg=variable.path)


# ---------------------------------------------------------------------------- schedule


def test_schedule_warms_up_then_decays_linearly_over_all_steps():
    schedule = optimization.LinearDecayWithWarmup(1e-4, num_train_steps=100, num_warmup_steps=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 5e-5, rtol=1e-6)
    # At W the warmup hands over to the decay, which started counting at step 0.
    np.testing.assert_allclose(float(schedule(9)), 9e-5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 1e-4 * (1 - 10 / 100), rtol=1e-6)
    np.testing.assert_allclose(float(schedule(55)), 4.5e-5, rtol=1e-6)
    assert float(schedule(100)) == 0.0
    assert float(schedule(150)) == 0.0
    for step in (0, 3, 10, 37, 99, 100, 101):
        assert float(schedule(step)) == numpy_schedule(step, 1e-4, 100, 10)


def test_schedule_without_warmup_starts_at_init_lr():
    schedule = optimization.LinearDecayWithWarmup(2e-5, num_train_steps=4, num_warmup_steps=0)
    values = [float(schedule(tf.constant(step, tf.int64))) for step in range(6)]
    np.testing.assert_allclose(values, [2e-5, 1.5e-5, 1e-5, 0.5e-5, 0.0, 0.0], rtol=1e-6)


def test_schedule_serializes_and_runs_in_tf_function():
    schedule = optimization.LinearDecayWithWarmup(1e-3, 50, 5)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(restored, optimization.LinearDecayWithWarmup)
    assert restored.get_config() == {"init_lr": 1e-3, "num_train_steps": 50, "num_warmup_steps": 5}
    value = tf.function(restored)(tf.constant(3, tf.int64))
    np.testing.assert_allclose(float(value), 6e-4, rtol=1e-6)


@pytest.mark.parametrize("num_train_steps, num_warmup_steps", [(0, 0), (10, -1)])
def test_schedule_rejects_impossible_step_counts(num_train_steps, num_warmup_steps):
    with pytest.raises(ValueError):
        optimization.LinearDecayWithWarmup(1e-4, num_train_steps, num_warmup_steps)


# ----------------------------------------------------------------------- AdamWeightDecay


@pytest.mark.parametrize("use_tf_function", [False, True])
def test_adamw_matches_numpy_formula_with_schedule_clipping_and_exclusions(use_tf_function):
    variables = make_bert_like_variables()
    initial = [v.numpy() for v in variables]
    grads = make_gradients(variables, num_steps=5)
    optimizer = optimization.create_optimizer(0.1, num_train_steps=6, num_warmup_steps=2)
    reference = numpy_reference(initial, grads, [v.path for v in variables], "adamw",
                                init_lr=0.1, num_train_steps=6, num_warmup_steps=2)
    assert any(reference[3]) and not all(reference[3])  # clipping both engaged and idle

    run_optimizer(optimizer, variables, grads[:1], use_tf_function)
    # lr is 0 at step 0: the first update moves only the moments.
    for variable, value in zip(variables, initial):
        np.testing.assert_array_equal(variable.numpy(), value)
    clipped_first, _ = numpy_clip_by_global_norm(grads[0], 1.0)
    first_slots = optimizer.slot_variables()
    np.testing.assert_allclose(first_slots[variables[0].path + "/adam_m"].numpy(),
                               0.1 * clipped_first[0], rtol=1e-5)

    for step_grads in grads[1:]:
        run_optimizer(optimizer, variables, [step_grads], use_tf_function)
    assert int(optimizer.iterations.numpy()) == 5
    assert_matches_reference(optimizer, variables, reference)


def test_adamw_has_no_bias_correction_and_epsilon_outside_sqrt():
    variable = keras.Variable(np.zeros((2,), np.float32), name="kernel")
    optimizer = optimization.AdamWeightDecay(learning_rate=1.0)
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.constant([0.5, 1e-4]), variable)])
    # m = 0.1 g, v = 0.001 g^2: the step is 0.1 g / (sqrt(0.001) |g| + 1e-6), not ~1.
    expected = -(0.1 * np.array([0.5, 1e-4])) / (np.sqrt(0.001) * np.array([0.5, 1e-4]) + 1e-6)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)


def test_weight_decay_skips_layer_norm_and_bias_by_checkpoint_name():
    variables = make_bert_like_variables()
    initial = [v.numpy() for v in variables]
    optimizer = optimization.AdamWeightDecay(
        learning_rate=0.5, weight_decay_rate=0.1, exclude_from_weight_decay=EXCLUDE
    )
    optimizer.build(variables)
    # Zero gradients leave m = v = 0, so only weight decay can move a variable.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    decayed = {v.path for v, w in zip(variables, initial) if not np.array_equal(v.numpy(), w)}
    assert decayed == {
        f"{ATTENTION_OUTPUT}/dense/kernel",
        "bert/embeddings/word_embeddings",
    }
    np.testing.assert_allclose(variables[0].numpy(), initial[0] * (1 - 0.5 * 0.1), rtol=1e-6)


def test_adamw_default_decay_rate_is_zero_as_the_original():
    variable = keras.Variable(np.ones((3,), np.float32), name="kernel")
    optimizer = optimization.AdamWeightDecay(learning_rate=1.0)
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.zeros((3,)), variable)])
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))


def test_adamw_converges_on_the_original_quadratic_sanity_problem():
    variable = keras.Variable(np.array([0.1, -0.2, -0.1], np.float32), name="w")
    target = tf.constant([0.4, 0.2, -0.5])
    optimizer = optimization.AdamWeightDecay(learning_rate=0.2)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(target - variable))
        optimizer.apply_gradients([(tape.gradient(loss, variable), variable)])

    for _ in range(100):
        train_step()
    np.testing.assert_allclose(variable.numpy(), target.numpy(), rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------- slots


def test_slots_are_named_after_checkpoint_names():
    variables = make_bert_like_variables()
    optimizer = optimization.create_optimizer(1e-4, 10, 1)
    with pytest.raises(ValueError):
        optimizer.slot_variables()
    optimizer.build(variables)
    slots = optimizer.slot_variables()
    expected = []
    for path in [
        f"{ATTENTION_OUTPUT}/dense/kernel",
        f"{ATTENTION_OUTPUT}/dense/bias",
        f"{ATTENTION_OUTPUT}/LayerNorm/gamma",
        f"{ATTENTION_OUTPUT}/LayerNorm/beta",
        "bert/embeddings/word_embeddings",
        "cls/predictions/output_bias",
    ]:
        expected += [f"{path}/adam_m", f"{path}/adam_v"]
    assert list(slots) == expected
    for slot in slots.values():
        assert slot.dtype == "float32" and not slot.trainable
        assert not np.any(slot.numpy())


@pytest.mark.parametrize("optimizer_type", ["adamw", "lamb"])
def test_restoring_slots_and_step_resumes_exactly(optimizer_type):
    grads = make_gradients(make_bert_like_variables(), num_steps=6)

    uninterrupted = make_bert_like_variables()
    optimizer = optimization.create_optimizer(0.05, 8, 2, optimizer_type=optimizer_type)
    run_optimizer(optimizer, uninterrupted, grads)

    first_half = make_bert_like_variables()
    optimizer = optimization.create_optimizer(0.05, 8, 2, optimizer_type=optimizer_type)
    run_optimizer(optimizer, first_half, grads[:3])
    saved_slots = {name: slot.numpy() for name, slot in optimizer.slot_variables().items()}
    saved_weights = [v.numpy() for v in first_half]
    saved_step = int(optimizer.iterations.numpy())

    resumed = make_bert_like_variables(seed=7)  # different values, same names
    for variable, value in zip(resumed, saved_weights):
        variable.assign(value)
    optimizer = optimization.create_optimizer(0.05, 8, 2, optimizer_type=optimizer_type)
    optimizer.build(resumed)
    optimizer.set_slot_values(saved_slots)
    optimizer.iterations.assign(saved_step)
    run_optimizer(optimizer, resumed, grads[3:])

    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_set_slot_values_rejects_unknown_names_and_wrong_shapes():
    variables = make_bert_like_variables()
    optimizer = optimization.create_optimizer(1e-4, 10, 1)
    optimizer.build(variables)
    with pytest.raises(ValueError, match="No optimizer slot"):
        optimizer.set_slot_values({"bert/unknown/adam_m": np.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        optimizer.set_slot_values({"cls/predictions/output_bias/adam_v": np.zeros(3)})


# ----------------------------------------------------------------------------- LAMB


def test_lamb_matches_numpy_formula():
    variables = make_bert_like_variables()
    initial = [v.numpy() for v in variables]
    grads = make_gradients(variables, num_steps=4)
    optimizer = optimization.create_optimizer(0.1, 6, 1, optimizer_type="lamb")
    reference = numpy_reference(initial, grads, [v.path for v in variables], "lamb",
                                init_lr=0.1, num_train_steps=6, num_warmup_steps=1)
    run_optimizer(optimizer, variables, grads, use_tf_function=True)
    assert_matches_reference(optimizer, variables, reference)


def test_lamb_trust_ratio_is_one_when_a_norm_is_zero():
    zero_weight = keras.Variable(np.zeros((3,), np.float32), name="kernel")
    still = keras.Variable(np.array([1.0, 2.0], np.float32), name="other_kernel")
    optimizer = optimization.Lamb(learning_rate=0.01)
    optimizer.build([zero_weight, still])
    gradient = np.array([0.3, -2.0, 5.0], np.float32)
    optimizer.apply_gradients([(tf.constant(gradient), zero_weight),
                               (tf.zeros((2,)), still)])
    # ||w|| = 0: plain bias-corrected Adam step, m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps).
    np.testing.assert_allclose(zero_weight.numpy(),
                               -0.01 * gradient / (np.abs(gradient) + 1e-6), rtol=1e-5)
    # ||update|| = 0: nothing moves and nothing becomes NaN.
    np.testing.assert_array_equal(still.numpy(), [1.0, 2.0])


def test_lamb_scales_step_by_weight_to_update_norm_ratio():
    variable = keras.Variable(np.array([3.0, 4.0], np.float32), name="kernel")
    optimizer = optimization.Lamb(learning_rate=0.1)
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.constant([1.0, -1.0]), variable)])
    update = np.array([1.0, -1.0]) / (1.0 + 1e-6)
    ratio = 5.0 / np.linalg.norm(update)
    np.testing.assert_allclose(variable.numpy(), [3.0, 4.0] - 0.1 * ratio * update, rtol=1e-6)


def embedding_gradient(table, ids):
    """The gradient of sum(gather(table, ids)**2): tf.IndexedSlices, as a lookup gives."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tf.gather(table.value, ids)))
    grad = tape.gradient(loss, table.value)
    assert isinstance(grad, tf.IndexedSlices)
    return grad


def test_sparse_embedding_gradient_updates_every_row_like_its_dense_form():
    table_values = np.random.default_rng(3).normal(size=(5, 2)).astype(np.float32)
    ids = tf.constant([1, 3, 1])
    results = []
    for densify in (False, True):
        with name_scopes("bert/embeddings"):
            table = keras.Variable(table_values, name="word_embeddings")
        optimizer = optimization.create_optimizer(0.1, 10, 0, clip_norm=None)
        optimizer.build([table])
        for _ in range(2):
            grad = embedding_gradient(table, ids)
            optimizer.apply_gradients([(tf.convert_to_tensor(grad) if densify else grad, table)])
        results.append(table.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    # Rows without a gradient still decay: the original applies a dense update.
    decay_per_step = [1 - 0.1 * 0.01, 1 - 0.09 * 0.01]  # 1 - lr * weight_decay_rate
    np.testing.assert_allclose(results[0][0], table_values[0] * np.prod(decay_per_step), rtol=1e-6)


def test_sparse_gradient_is_clipped_by_the_norm_of_its_slices_as_the_original():
    # tf.clip_by_global_norm measures an IndexedSlices by its slices, so a row looked up
    # twice counts twice; the original clipped its embedding gradient the same way.
    table_values = np.random.default_rng(4).normal(size=(5, 2)).astype(np.float32)
    with name_scopes("bert/embeddings"):
        table = keras.Variable(table_values, name="word_embeddings")
    ids = tf.constant([1, 3, 1])
    grad = embedding_gradient(table, ids)
    optimizer = optimization.create_optimizer(0.1, 10, 0)
    optimizer.build([table])
    optimizer.apply_gradients([(grad, table)])

    slices = grad.values.numpy()
    slices_norm = np.sqrt(np.sum(np.square(slices)))
    assert slices_norm > 1.0
    clipped = np.zeros_like(table_values)
    np.add.at(clipped, grad.indices.numpy(), slices / slices_norm)
    ref_params, _, _, _ = numpy_reference(
        [table_values], [[clipped]], [table.path], "adamw",
        init_lr=0.1, num_train_steps=10, num_warmup_steps=0, clip_norm=None)
    np.testing.assert_allclose(table.numpy(), ref_params[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- create_optimizer


def test_create_optimizer_is_configured_as_the_original():
    optimizer = optimization.create_optimizer(5e-5, 1000, 100)
    assert isinstance(optimizer, optimization.AdamWeightDecay)
    assert optimizer.weight_decay_rate == 0.01
    assert optimizer.epsilon == 1e-6
    assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.999)
    assert optimizer.global_clipnorm == 1.0
    config = optimizer.get_config()
    assert config["exclude_from_weight_decay"] == EXCLUDE
    assert config["learning_rate"]["config"] == {
        "init_lr": 5e-5, "num_train_steps": 1000, "num_warmup_steps": 100,
    }
    assert isinstance(optimization.create_optimizer(5e-5, 10, 1, "lamb"), optimization.Lamb)


def test_create_optimizer_rejects_unknown_type_in_one_line():
    with pytest.raises(ValueError) as error:
        optimization.create_optimizer(5e-5, 10, 1, optimizer_type="sgd")
    assert "sgd" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("optimizer_type", ["adamw", "lamb"])
def test_optimizer_config_round_trips(optimizer_type):
    optimizer = optimization.create_optimizer(3e-5, 20, 2, optimizer_type=optimizer_type)
    config = optimizer.get_config()
    restored = type(optimizer).from_config(dict(config))
    restored_config = restored.get_config()
    assert restored_config == config


def test_keras_weight_decay_and_per_variable_clipping_are_refused():
    with pytest.raises(ValueError, match="weight_decay_rate"):
        optimization.AdamWeightDecay(1e-3, weight_decay=0.01)
    with pytest.raises(ValueError, match="global_clipnorm"):
        optimization.Lamb(1e-3, clipnorm=1.0)
    # Accumulation is the engine's (it keeps embedding slices as one larger batch would).
    with pytest.raises(ValueError, match="--gradient_accumulation_steps"):
        optimization.AdamWeightDecay(1e-3, gradient_accumulation_steps=2)


# -------------------------------------------------------- mixed precision, distribution


def test_loss_scale_optimizer_wrapping_applies_the_unscaled_step():
    policy_layer = keras.layers.Dense(3, dtype="mixed_float16", name="dense")
    policy_layer.build((None, 4))
    variables = policy_layer.trainable_variables
    assert all(v.dtype == "float32" for v in variables)
    inputs = tf.constant(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    reference = [v.numpy() for v in variables]

    inner = optimization.create_optimizer(0.01, 10, 0)
    optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**8)
    optimizer.build(variables)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.cast(policy_layer(inputs), tf.float32)))
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply(grads, variables)
        return [g / optimizer.dynamic_scale for g in grads]

    unscaled_grads = [g.numpy() for g in train_step()]
    ref_params, ref_m, ref_v, _ = numpy_reference(
        reference, [unscaled_grads], [v.path for v in variables], "adamw",
        init_lr=0.01, num_train_steps=10, num_warmup_steps=0)
    assert_matches_reference(inner, variables, (ref_params, ref_m, ref_v, None))
    assert all(s.dtype == "float32" for s in inner.slot_variables().values())

    # A non-finite gradient skips the update, leaves the step count alone, halves the scale.
    before = [v.numpy() for v in variables]
    scale = float(optimizer.dynamic_scale.numpy())
    optimizer.apply([tf.fill(v.shape, np.inf) for v in variables], variables)
    assert int(inner.iterations.numpy()) == 1
    assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    for variable, value in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), value)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import optimization

    per_replica = [np.array([3.0, -4.0], np.float32), np.array([1.0, 2.0], np.float32)]
    results = {}
    for run_name in ("adamw", "lamb", "adamw_loss_scaled"):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            variable = keras.Variable(np.array([0.5, -0.5], np.float32), name="kernel")
            inner = optimization.create_optimizer(0.1, 10, 0, run_name.split("_")[0])
            optimizer = inner
            if run_name.endswith("loss_scaled"):
                optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=8.0)
            optimizer.build([variable])

        @tf.function
        def train_step():
            def replica_step():
                replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                grad = tf.gather(tf.constant(np.stack(per_replica)), replica)
                if optimizer is not inner:
                    grad = grad * optimizer.dynamic_scale
                optimizer.apply([grad], [variable])
            strategy.run(replica_step)

        train_step()
        train_step()
        slots = inner.slot_variables()
        results[run_name] = {
            "replicas": strategy.num_replicas_in_sync,
            "kernel": variable.numpy().tolist(),
            "adam_m": slots["kernel/adam_m"].numpy().tolist(),
            "adam_v": slots["kernel/adam_v"].numpy().tolist(),
        }
    print("RESULT " + json.dumps(results))
    """
)


def test_mirrored_strategy_clips_the_summed_gradient_like_one_device():
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT},
    )
    result_lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert result_lines, completed.stderr[-3000:]
    results = json.loads(result_lines[-1][len("RESULT "):])
    summed = np.array([4.0, -2.0], np.float32)  # norm 4.47: clipped to 1 after the sum
    assert sorted(results) == ["adamw", "adamw_loss_scaled", "lamb"]
    for run_name, result in results.items():
        assert result["replicas"] == 2
        ref_params, ref_m, ref_v, clipped = numpy_reference(
            [np.array([0.5, -0.5], np.float32)], [[summed], [summed]], ["kernel"],
            run_name.split("_")[0], init_lr=0.1, num_train_steps=10, num_warmup_steps=0)
        assert all(clipped)
        np.testing.assert_allclose(result["kernel"], ref_params[0], rtol=1e-5)
        np.testing.assert_allclose(result["adam_m"], ref_m[0], rtol=1e-5)
        np.testing.assert_allclose(result["adam_v"], ref_v[0], rtol=1e-5)
