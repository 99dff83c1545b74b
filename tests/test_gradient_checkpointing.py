"""--gradient_checkpointing: the recomputed encoder gives the plain run's numbers, uses less memory.

With it, each Transformer layer keeps only its input for the backward pass, which runs the
layer again (fused_kernels.recompute_in_backward). The recomputation must draw the dropout
masks of the first pass, and the dropout draws after a checkpointed layer must go on as in
a plain run: then the loss, the gradients and every training step are the plain run's. The
trajectory against the original's own training with it on is in test_training_parity.py.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import fused_kernels
import modeling

from tests import helpers
from tests.test_modeling import random_batch, tiny_config
from tests.test_run_pretraining import ORIGINAL_RECORDS, TINY_CONFIG, checkpoint_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DROPOUT = dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def _loss_and_gradients(bert, masked_lm, next_sentence, batch):
    """MLM + NSP loss (plus every encoder output) and its gradients, dropout on, seeded."""
    ids, mask, types = batch
    variables = list(modeling.original_name_map(bert, masked_lm, next_sentence).values())
    with tf.GradientTape() as tape, fused_kernels.dropout_seed(tf.constant([3, 4], tf.int64)):
        out = bert(ids, input_mask=mask, token_type_ids=types, training=True)
        logits = masked_lm(out["sequence_output"], tf.constant([[1, 2, 3], [3, 0, 4]]), training=True)
        loss = modeling.masked_lm_loss(logits, [[5, 6, 98], [7, 0, 1]], [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])[0]
        loss += modeling.next_sentence_loss(next_sentence(out["pooled_output"]), [0, 1])[0]
        # Every layer's output reaches the loss directly too, not only through the next layer.
        loss += 0.1 * sum(tf.reduce_sum(tf.cast(h, tf.float32) ** 2) for h in out["encoder_layers"])
    return loss, tape.gradient(loss, variables)


def _model(dtype=None):
    config = tiny_config(num_hidden_layers=3, **DROPOUT)
    bert = modeling.BertModel(config, dtype=dtype)
    heads = (modeling.MaskedLMHead(config, bert.embedding_table, dtype=dtype),
             modeling.NextSentenceHead(config, dtype=dtype))
    batch = random_batch(np.random.RandomState(7))
    bert(batch[0], input_mask=batch[1], token_type_ids=batch[2])  # Keras' first, symbolic call draws a seed
    return bert, heads, batch


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_checkpointed_encoder_gives_the_plain_loss_and_gradients(mode, dtype):
    bert, heads, batch = _model(dtype)

    def run(checkpointing, mode=mode):
        bert.gradient_checkpointing = checkpointing
        step = lambda: _loss_and_gradients(bert, *heads, batch)  # noqa: E731
        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "xla")
        loss, grads = step()
        return float(loss), [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads]

    plain_loss, plain = run(False)
    loss, checkpointed = run(True)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    # Eager and graph runs recompute the same kernels on the same inputs: equal to rounding.
    # XLA fuses the recomputed forward with the backward otherwise than the stored one, which
    # rounds sums in another order: checkpointing under XLA may differ from XLA without it
    # by as much as XLA differs from the plain ops (seen: 4e-5 and 4e-5 of a gradient's scale).
    allowed = 1e-6
    if mode == "xla":
        _, eager = run(False, "eager")
        allowed = 2 * max(_relative_error(x, e) for x, e in zip(plain, eager))
    for name, grad, reference in zip(_names(bert, heads), checkpointed, plain):
        assert _relative_error(grad, reference) <= allowed, name


def _relative_error(value, reference):
    """Largest difference over the reference's largest element; 0 for gradients that are rounding
    noise in exact zero (attention key biases, ~1e-12), which no two runs share."""
    scale = float(np.abs(reference).max())
    return 0.0 if scale < 1e-9 else float(np.abs(value - reference).max()) / scale


def _names(bert, heads):
    return list(modeling.original_name_map(bert, *heads))


def test_the_recomputation_draws_the_masks_of_the_first_pass_without_a_seed():
    # Outside a dropout_seed block every dropout op draws a fresh seed; the checkpointed call
    # draws one for both of its passes, so the gradient is the mask the forward applied.
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fused_kernels.recompute_in_backward(lambda h: fused_kernels.dropout(h, 0.5, True), x)
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, x)

    for run in (step, tf.function(step), tf.function(step, jit_compile=True)):
        y, grad = run(tf.ones([64, 32]))
        kept = y.numpy() != 0
        assert 0.3 < kept.mean() < 0.7
        np.testing.assert_array_equal(grad.numpy(), np.where(kept, 2.0, 0.0))


def test_dropout_draws_after_a_checkpointed_call_go_on_as_in_a_plain_run():
    x = tf.reshape(tf.range(1.0, 257.0), [16, 16])

    def three_dropouts(checkpointed):
        middle = (lambda h: fused_kernels.recompute_in_backward(lambda v: fused_kernels.dropout(v, 0.3, True), h)
                  ) if checkpointed else (lambda h: fused_kernels.dropout(h, 0.3, True))
        with fused_kernels.dropout_seed(tf.constant([11, 12], tf.int64)):
            return [fused_kernels.dropout(x, 0.3, True), middle(x), fused_kernels.dropout(x, 0.3, True)]

    plain, checkpointed = three_dropouts(False), three_dropouts(True)
    for a, b in zip(plain, checkpointed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(plain[0].numpy(), plain[2].numpy())  # three different masks


def test_inference_and_the_config_round_trip():
    bert, _, (ids, mask, types) = _model()
    plain = bert(ids, input_mask=mask, token_type_ids=types)["sequence_output"]
    bert.gradient_checkpointing = True
    np.testing.assert_array_equal(bert(ids, input_mask=mask, token_type_ids=types)["sequence_output"], plain)
    assert modeling.BertModel.from_config(bert.get_config()).gradient_checkpointing


_MEMORY_PROBE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import numpy as np
    import tensorflow as tf
    import modeling, run_pretraining

    config = modeling.BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                                 intermediate_size=256, max_position_embeddings=256)
    rng = np.random.RandomState(0)
    features = dict(input_ids=rng.randint(1, 99, (8, 256)), input_mask=np.ones((8, 256), np.int32),
                    segment_ids=np.zeros((8, 256), np.int32), masked_lm_positions=rng.randint(0, 256, (8, 20)),
                    masked_lm_ids=rng.randint(1, 99, (8, 20)), masked_lm_weights=np.ones((8, 20), np.float32),
                    next_sentence_labels=np.zeros((8, 1), np.int32))
    features = {{k: tf.constant(v) for k, v in features.items()}}
    for checkpointing in (False, True):
        model = run_pretraining.PretrainingModel(config, gradient_checkpointing=checkpointing)

        @tf.function(jit_compile={xla})
        def step():
            with tf.GradientTape() as tape:
                loss = run_pretraining.pretraining_loss(model, features, True)
            return tape.gradient(loss, model.trainable_variables)

        step()  # traced (and compiled: XLA's compiler holds memory of its own while it works)
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        grads = step()
        print("ACTIVATIONS", checkpointing, tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)
        del grads
""")


@pytest.mark.parametrize("xla", [False, True])
def test_checkpointing_keeps_a_fraction_of_the_activations(xla):
    # TensorFlow's own count of the bytes its allocator holds (TF_CPU_ALLOCATOR_USE_BFC gives
    # the CPU allocator the statistics a GPU's has): the step's peak above what was held
    # before it. Six layers at 256 tokens: only the layer inputs and one layer's recomputed
    # activations stay alive, against six layers' worth (seen: 56 of 168 MB; under XLA 33 of 257).
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE.format(root=ROOT, xla=xla)], capture_output=True,
                            text=True, env=dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = {line.split()[1]: int(line.split()[2]) for line in result.stdout.splitlines()
             if line.startswith("ACTIVATIONS")}
    print(peaks)
    assert peaks["True"] < 0.4 * peaks["False"]


# --- Through the command line ------------------------------------------------------------------

def _pretrain(tmp_path, name, steps, env=None, **flags):
    """run_pretraining.py on the original's records (tiny model, dropout 0.1): (output_dir, its log)."""
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps(TINY_CONFIG))  # dropout 0.1
    output_dir = str(tmp_path / name)
    args = dict(input_file=ORIGINAL_RECORDS, bert_config_file=str(config), output_dir=output_dir, do_train="true",
                train_batch_size=8, num_train_steps=steps, num_warmup_steps=2, learning_rate=1e-3,
                save_checkpoints_steps=2, log_steps=1, seed=7)
    args.update(flags)
    result = helpers.run_script("run_pretraining.py", *helpers.flag_args(**args), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result.stderr


def _assert_same_checkpoints(prefix, reference_prefix, atol=1e-6):
    ours, reference = checkpoint_values(prefix), checkpoint_values(reference_prefix)
    assert sorted(ours) == sorted(reference)
    worst = max((float(np.max(np.abs(ours[n] - reference[n]))), n) for n in reference)
    assert worst[0] <= atol, worst


def test_a_checkpointed_run_resumed_midway_follows_the_plain_run(tmp_path):
    # Dropout on, real-length batches (the records' lengths vary), 4 steps; the checkpointed
    # run stops after 2 and resumes: weights and Adam slots equal the plain run's.
    plain, _ = _pretrain(tmp_path, "plain", 4)
    checkpointed, _ = _pretrain(tmp_path, "checkpointed", 2, gradient_checkpointing="true")
    _pretrain(tmp_path, "checkpointed", 4, gradient_checkpointing="true")
    _assert_same_checkpoints(os.path.join(checkpointed, "model.ckpt-4"), os.path.join(plain, "model.ckpt-4"))
    start = checkpoint_values(os.path.join(plain, "model.ckpt-2"))
    end = checkpoint_values(os.path.join(plain, "model.ckpt-4"))
    assert max(float(np.max(np.abs(end[n] - start[n]))) for n in start if "adam" not in n) > 1e-4  # it trained


@pytest.mark.parametrize("flags", [
    dict(gradient_accumulation_steps=2, distribution_strategy="mirrored", num_logical_cpus=2),
    dict(precision="mixed_bfloat16", use_xla="true"),
    dict(precision="mixed_float16"),
], ids=["accumulation_mirrored", "bfloat16_xla", "float16_loss_scale"])
def test_checkpointing_composes_with_the_engine(tmp_path, flags):
    plain, _ = _pretrain(tmp_path, "plain", 2, **flags)
    checkpointed, _ = _pretrain(tmp_path, "checkpointed", 2, gradient_checkpointing="true", **flags)
    _assert_same_checkpoints(os.path.join(checkpointed, "model.ckpt-2"), os.path.join(plain, "model.ckpt-2"))


def test_the_step_log_shows_the_peak_memory_where_tensorflow_counts_it(tmp_path):
    # On a GPU TensorFlow always counts; on the CPU its BFC allocator does (TF_CPU_ALLOCATOR_USE_BFC=true).
    _, log = _pretrain(tmp_path, "counted", 1, env={"TF_CPU_ALLOCATOR_USE_BFC": "true"})
    peaks = re.findall(r"step = 1/1, loss = [\d.]+, lr = \S+, examples/sec = [\d.]+, ETA \S+, peak memory = "
                       r"([\d,]+) MB \(CPU:0\)", log)
    assert len(peaks) == 1 and 1 <= int(peaks[0].replace(",", "")) < 2000, log[-2000:]
    # Where no allocator keeps statistics the line ends at the ETA.
    import training
    assert training._peak_memory_note([]) == ""


def test_the_engine_refuses_the_flag_for_a_model_that_ignores_it(tmp_path):
    import training

    from tests.test_training import Linear, dataset_fn, squared_error
    strategy = training.make_strategy(training.EngineConfig())
    with pytest.raises(ValueError, match="--gradient_checkpointing is set but the model has no BertModel"):
        training.train(strategy, training.EngineConfig(gradient_checkpointing=True), Linear(), squared_error,
                       dataset_fn, str(tmp_path), 2, 0, 0.1, 2)
    assert not os.listdir(tmp_path)
