"""The fused training kernels (fused_kernels.py) against the plain ops of the same math,
and the keyed-hash dropout masks they apply."""

import numpy as np
import pytest
import tensorflow as tf

import fused_kernels
import modeling

from tests.test_modeling import max_abs_diff, random_batch, tiny_config


def _pretraining_loss_and_grads(bert, masked_lm, next_sentence, batch, fused, policy_dtype=None):
    ids, mask, types = batch
    variables = list(modeling.original_name_map(bert, masked_lm, next_sentence).values())
    # Keras traces a layer's first call symbolically, drawing one extra dropout seed: warm up.
    bert(ids, input_mask=mask, token_type_ids=types)
    with fused_kernels.fused_kernels(fused), fused_kernels.dropout_seed(tf.constant([3, 4], tf.int64)):
        with tf.GradientTape() as tape:
            out = bert(ids, input_mask=mask, token_type_ids=types, training=True)
            logits = masked_lm(out["sequence_output"], tf.constant([[1, 2, 3], [3, 0, 4]]))
            loss = modeling.masked_lm_loss(logits, [[5, 6, 98], [7, 0, 1]],
                                           [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])[0]
            loss += modeling.next_sentence_loss(next_sentence(out["pooled_output"]), [0, 1])[0]
            # Reach every encoder output, padded positions included.
            loss += 0.1 * tf.reduce_sum(tf.cast(out["sequence_output"], tf.float32) ** 2)
    grads = tape.gradient(loss, variables)
    return loss, out["sequence_output"], {v.path: tf.convert_to_tensor(g)
                                          for v, g in zip(variables, grads)}


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact", "relu"])
def test_fused_training_kernels_match_the_plain_ops(hidden_act):
    # The same dropout masks (same seed, same draw order) and the same math: forward and
    # every gradient agree to float32 rounding.
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                         hidden_act=hidden_act)
    bert = modeling.BertModel(config)
    heads = (modeling.MaskedLMHead(config, bert.embedding_table),
             modeling.NextSentenceHead(config))
    batch = random_batch(np.random.RandomState(7))
    loss, sequence, grads = _pretraining_loss_and_grads(bert, *heads, batch, fused=True)
    plain_loss, plain_sequence, plain_grads = _pretraining_loss_and_grads(bert, *heads, batch,
                                                                          fused=False)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-5)
    np.testing.assert_allclose(sequence, plain_sequence, atol=3e-6)
    assert sorted(grads) == sorted(plain_grads)
    for name, grad in grads.items():
        # Relative to the gradient's size, with an absolute floor for gradients that are
        # small because O(1) terms cancel (the NSP bias: mean of softmax - one_hot), where
        # float32 rounding of the terms (~6e-8) is all that can differ.
        scale = float(np.max(np.abs(plain_grads[name])))
        assert float(np.max(np.abs(grad - plain_grads[name]))) <= 1e-4 * scale + 1e-6, name
    # Dropout is on: the training output differs from inference.
    assert max_abs_diff(sequence, bert(batch[0], input_mask=batch[1], token_type_ids=batch[2])[
        "sequence_output"]) > 1e-2


def test_fused_training_kernels_under_mixed_bfloat16():
    # Under mixed_bfloat16 the fused kernels stay about as close to a float32 run as the
    # plain bfloat16 ops (both errors are mostly the bfloat16 matmuls').
    config = tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    batch = random_batch(np.random.RandomState(8))

    def build(policy):
        bert = modeling.BertModel(config, dtype=policy)
        return bert, (modeling.MaskedLMHead(config, bert.embedding_table, dtype=policy),
                      modeling.NextSentenceHead(config, dtype=policy))

    bert32, heads32 = build("float32")
    bert16, heads16 = build("mixed_bfloat16")
    names16 = modeling.original_name_map(bert16, *heads16)
    for name, variable in modeling.original_name_map(bert32, *heads32).items():
        names16[name].assign(variable)
    loss32, _, grads32 = _pretraining_loss_and_grads(bert32, *heads32, batch, fused=False)

    def error(fused):
        loss, sequence, grads = _pretraining_loss_and_grads(bert16, *heads16, batch, fused=fused)
        assert sequence.dtype == tf.bfloat16
        assert all(g.dtype == tf.float32 for g in grads.values())
        squared = sum(float(tf.reduce_sum((grads[n] - g) ** 2)) for n, g in grads32.items())
        return abs(float(loss) - float(loss32)), squared ** 0.5

    fused_loss_error, fused_grad_error = error(True)
    plain_loss_error, plain_grad_error = error(False)
    norm32 = sum(float(tf.reduce_sum(g ** 2)) for g in grads32.values()) ** 0.5
    assert fused_loss_error <= 2e-2 * float(loss32)
    assert fused_grad_error <= max(1.5 * plain_grad_error, 1e-2 * norm32)


def test_dropout_keeps_the_expected_value():
    # Kept values are scaled by 1 / keep probability, so E[y] = x; the fused kernel and the
    # plain ops draw the same mask from the same seed.
    x = tf.ones([1000, 1000])
    outputs = []
    for fused in (True, False):
        with fused_kernels.fused_kernels(fused), fused_kernels.dropout_seed(tf.constant([1, 2], tf.int64)):
            y = fused_kernels.dropout(x, 0.1, training=True).numpy()
        kept = y[y != 0]
        np.testing.assert_allclose(kept, 1 / 0.9, rtol=1e-7)
        assert abs(kept.size / y.size - 0.9) < 1.5e-3  # 5 standard deviations
        assert abs(float(y.mean()) - 1.0) < 2e-3
        outputs.append(y)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    # An odd element count and a dynamic shape draw masks too.
    with fused_kernels.dropout_seed(tf.constant([1, 2], tf.int64)):
        odd = tf.function(lambda t: fused_kernels.dropout(t, 0.5, training=True))(
            tf.ones([3, 5, 7])).numpy()
    assert odd.shape == (3, 5, 7) and 0 < np.count_nonzero(odd) < odd.size


def test_dropout_masks_look_independent():
    # The per-element hash: neighbours, rows and dropout sites are uncorrelated, and each
    # step's seed gives a new mask.
    def mask(seed, rate=0.5, shape=(512, 512)):
        with fused_kernels.dropout_seed(tf.constant(seed, tf.int64)):
            first = fused_kernels.dropout(tf.ones(shape), rate, training=True).numpy() != 0
            second = fused_kernels.dropout(tf.ones(shape), rate, training=True).numpy() != 0
        return first.astype(np.float64), second.astype(np.float64)

    def correlation(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))

    first, second = mask([7, 0])
    bound = 5 / 512  # 5 standard deviations of a correlation over 512 * 511 pairs
    assert abs(correlation(first[:, 1:], first[:, :-1])) < bound
    assert abs(correlation(first[1:], first[:-1])) < bound
    assert abs(correlation(first, second)) < bound
    assert abs(correlation(first, mask([7, 1])[0])) < bound
    # The keep rate is 0.5 overall and on every row.
    assert abs(first.mean() - 0.5) < 5 * 0.5 / 512
    assert np.abs(first.mean(axis=1) - 0.5).max() < 5 * 0.5 / np.sqrt(512) + 0.02


@pytest.mark.parametrize("fused", [True, False])
def test_label_log_probs_of_out_of_range_labels_are_zero(fused):
    logits = tf.constant([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [1.0, -1.0, 0.0]])
    labels = tf.constant([2, 3, -1])
    with fused_kernels.fused_kernels(fused):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            log_probs, picked = fused_kernels.label_log_probs(logits, labels)
        grad = tape.gradient(picked, logits).numpy()
    expected = np.log(np.exp(3.0) / np.exp([1.0, 2.0, 3.0]).sum())
    np.testing.assert_allclose(picked, [expected, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(log_probs[0, 2], expected, rtol=1e-6)
    softmax = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(grad[0], np.array([0.0, 0.0, 1.0]) - softmax, atol=1e-6)
    np.testing.assert_array_equal(grad[1:], 0.0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_inference_layer_norm_kernel_matches_the_originals_ops(dtype):
    # Inference runs bias + residual + LayerNorm as one XLA loop; the plain ops (the
    # original's moments and batch_normalization) are the reference. Rows of very different
    # scale and offset, and a width that is no power of two.
    rng = np.random.RandomState(3)
    rows, width = 37, 48
    x = rng.standard_normal((rows, 24)).astype(np.float32)
    kernel = (0.5 * rng.standard_normal((24, width))).astype(np.float32)
    bias = rng.standard_normal(width).astype(np.float32)
    residual = (rng.standard_normal((rows, width)) * rng.uniform(0.01, 100, (rows, 1)) +
                rng.uniform(-50, 50, (rows, 1))).astype(np.float32)
    gamma = rng.uniform(0.5, 2, width).astype(np.float32)
    beta = rng.standard_normal(width).astype(np.float32)
    x, kernel, bias, residual = (tf.cast(t, dtype) for t in (x, kernel, bias, residual))

    def both(fn):
        fused = fn()
        with fused_kernels.fused_kernels(False):
            plain = fn()
        assert fused.dtype == plain.dtype == tf.as_dtype(dtype)
        return np.asarray(tf.cast(fused, tf.float32)), np.asarray(tf.cast(plain, tf.float32))

    tolerance = 2e-6 if dtype == "float32" else 2e-2  # bfloat16: rounding of the one output cast
    fused, plain = both(lambda: fused_kernels.dense_add_and_norm(x, kernel, bias, residual, 0.1, gamma,
                                                                 beta))
    np.testing.assert_allclose(fused, plain, atol=tolerance * np.abs(plain).max())
    fused, plain = both(lambda: fused_kernels.layer_norm(residual, gamma, beta))
    np.testing.assert_allclose(fused, plain, atol=tolerance * np.abs(plain).max())
    # Normalized: each row's mean is beta's mean, whatever the row's scale and offset.
    np.testing.assert_allclose(((fused - beta) / gamma).mean(-1), 0, atol=50 * tolerance)
