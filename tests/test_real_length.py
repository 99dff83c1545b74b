"""Batches at their real length: the same training trajectory, the same predictions, in order."""

import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
import modeling
import run_classifier
import run_pretraining
import training

from tests import helpers

MAX_SEQ_LENGTH = 64
CONFIG = modeling.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             max_position_embeddings=MAX_SEQ_LENGTH)


def write_classifier_records(path, lengths, seed=0):
    """Classifier records (the original schema) whose real lengths are `lengths`."""
    rng = np.random.default_rng(seed)
    records = []
    for n in lengths:
        ids = [2] + rng.integers(5, CONFIG.vocab_size, n - 2).tolist() + [3]
        split = int(rng.integers(1, n))
        pad = [0] * (MAX_SEQ_LENGTH - n)
        records.append(input_pipeline.serialize_example({
            "input_ids": ids + pad, "input_mask": [1] * n + pad, "segment_ids": [0] * split + [1] * (n - split) + pad,
            "label_ids": [int(rng.integers(0, 2))], "is_real_example": [1]}))
    input_pipeline.write_tfrecord(path, records)
    return path


def classifier_model(head_dropout=0.0):
    model = run_classifier.ClassifierModel(CONFIG, 2)
    model.head.dropout_rate = head_dropout  # the head's own dropout, not from the config
    return model


def lengths_of(dataset, batches):
    return [int(f["input_ids"].shape[1]) for f in dataset.take(batches)]


def test_length_is_the_longest_real_sequence_rounded_up_and_keeps_masked_positions():
    mask = tf.constant([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0] + [0] * 54, [1] * 17 + [0] * 47])
    features = {"input_ids": mask * 7, "input_mask": mask, "segment_ids": mask * 0,
                "masked_lm_positions": tf.constant([[1, 2, 0], [5, 0, 0]]), "label_ids": tf.constant([1, 0])}
    cut = input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=16)(features)
    assert [cut[name].shape for name in ("input_ids", "input_mask", "segment_ids")] == [(2, 32)] * 3
    np.testing.assert_array_equal(cut["input_mask"], mask[:, :32])
    assert cut["masked_lm_positions"].shape == (2, 3) and cut["label_ids"].shape == (2,)
    assert int(input_pipeline.RealLength(MAX_SEQ_LENGTH, multiple=8).batch_length(features)) == 24
    # A masked-LM position beyond the real tokens (a record from elsewhere) is never cut off.
    features["masked_lm_positions"] = tf.constant([[1, 2, 40], [5, 0, 0]])
    assert int(input_pipeline.RealLength(MAX_SEQ_LENGTH, position_features=["masked_lm_positions"])
               .batch_length(features)) == 48
    # A full-length row keeps the batch at max_seq_length; a mask with holes counts its last 1.
    assert int(input_pipeline.RealLength(MAX_SEQ_LENGTH).batch_length({"input_mask": tf.ones([1, 64])})) == 64
    holes = tf.constant([[1, 0] * 16 + [0] * 32])
    assert int(input_pipeline.RealLength(MAX_SEQ_LENGTH).batch_length({"input_mask": holes})) == 32


def test_xla_and_tpu_lengths_come_from_a_fixed_set():
    xla = input_pipeline.real_length(training.EngineConfig(use_xla=True), 128)
    assert xla.lengths() == [32, 64, 96, 128]
    for real, expected in ((1, 32), (32, 32), (33, 64), (97, 128), (128, 128)):
        mask = tf.constant([[1] * real + [0] * (128 - real)])
        assert int(xla.batch_length({"input_mask": mask})) == expected
    assert input_pipeline.real_length(training.EngineConfig(use_xla=True), 80).lengths() == [32, 64, 80]
    assert input_pipeline.real_length(training.EngineConfig(), 128).lengths() == list(range(8, 129, 8))
    assert input_pipeline.real_length(training.EngineConfig(distribution_strategy="tpu"), 128) is None


def test_training_at_real_length_follows_the_padded_trajectory(tmp_path):
    # Same checkpoint, same batches (same records in the same order), dropout off: N steps
    # at each batch's real length end within float noise of N steps at max_seq_length.
    lengths = np.random.default_rng(1).integers(4, 24, 40).tolist()
    lengths[::10] = [MAX_SEQ_LENGTH] * 4  # a few full-length batches among short ones
    train_file = write_classifier_records(str(tmp_path / "train.tf_record"), lengths)
    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    init = str(tmp_path / "init" / "model.ckpt")
    modeling.save_checkpoint(init, modeling.original_name_map(classifier_model()))
    cut = input_pipeline.RealLength(MAX_SEQ_LENGTH)
    batch_size, steps = 4, 8

    padded_batches = input_pipeline.training_dataset([train_file], spec, batch_size, seed=5)
    cut_batches = input_pipeline.training_dataset([train_file], spec, batch_size, seed=5, length=cut)
    for a, b in zip(padded_batches.take(steps), cut_batches.take(steps)):
        np.testing.assert_array_equal(a["label_ids"], b["label_ids"])
        np.testing.assert_array_equal(a["input_ids"][:, :b["input_ids"].shape[1]], b["input_ids"])
    run_lengths = lengths_of(cut_batches, steps)
    assert max(run_lengths) == MAX_SEQ_LENGTH and min(run_lengths) <= 32, run_lengths

    def train(output_dir, length):
        model = classifier_model()
        config = training.EngineConfig(seed=3, log_steps=steps, save_checkpoints_steps=steps)

        def dataset_fn(input_context, per_replica, skip_examples):
            return input_pipeline.training_dataset([train_file], spec, per_replica, seed=5, skip_examples=skip_examples,
                                             input_context=input_context, length=length)
        loss = training.train(tf.distribute.get_strategy(), config, model,
                              lambda m, f, t: tf.reduce_mean(run_classifier.example_losses(m, f, False, t)[0]),
                              dataset_fn, output_dir, steps, 2, 1e-3, batch_size, init_checkpoint=init)
        return loss, tf.train.load_checkpoint(os.path.join(output_dir, f"model.ckpt-{steps}"))

    padded_loss, padded = train(str(tmp_path / "padded"), None)
    cut_loss, trimmed = train(str(tmp_path / "cut"), cut)
    assert cut_loss == pytest.approx(padded_loss, abs=1e-5)
    start = tf.train.load_checkpoint(init)
    moved = 0.0
    for name in padded.get_variable_to_shape_map():
        a, b = padded.get_tensor(name), trimmed.get_tensor(name)
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0, err_msg=name)
        if name in start.get_variable_to_shape_map():
            moved = max(moved, float(np.abs(a - start.get_tensor(name)).max()))
    assert moved > 1e-3  # the weights did change: the comparison is not of two idle runs


def test_length_grouped_prediction_equals_padded_prediction_in_input_order(tmp_path):
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 17, 53)
    lengths[::4] = rng.integers(17, MAX_SEQ_LENGTH + 1, 14)  # a quarter longer, up to max_seq_length
    lengths = lengths.tolist()
    predict_file = write_classifier_records(str(tmp_path / "predict.tf_record"), lengths)
    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    model = classifier_model()
    strategy = tf.distribute.get_strategy()
    padded = run_classifier.run_predictions(strategy, model, input_pipeline.sequential_dataset([predict_file], spec, 8),
                                            False)
    grouped_dataset = input_pipeline.sequential_dataset(
        [predict_file], spec, 8, length=input_pipeline.RealLength(MAX_SEQ_LENGTH), group_window=3)
    # Windows of 24 examples sorted by length; a batch of length L holds the rows that fit in
    # 8 * 64 tokens (64 rows of 8 tokens, 32 of 16, 21 of 24, ..., 8 of 64), whatever the input:
    # one shape per length. Dummy rows (position -1, all zeros) fill each window's last batch.
    batches = list(grouped_dataset)
    shapes = [tuple(f["input_ids"].shape) for f in batches]
    assert all(rows == max(8, 8 * MAX_SEQ_LENGTH // length) for rows, length in shapes)
    assert max(rows for rows, _ in shapes) > 8 and min(length for _, length in shapes) <= 32
    positions = np.concatenate([f[input_pipeline.EXAMPLE_POSITION].numpy() for f in batches])
    assert sorted(positions[positions >= 0]) == list(range(53))
    dummies = [f["input_mask"].numpy()[f[input_pipeline.EXAMPLE_POSITION].numpy() < 0] for f in batches]
    assert sum(len(d) for d in dummies) == len(positions) - 53 > 0 and not any(d.any() for d in dummies)
    for f in batches:  # every real row fits its batch's length
        assert f["input_mask"].numpy().sum(1).max() <= f["input_ids"].shape[1]
    grouped = run_classifier.run_predictions(strategy, model, grouped_dataset, False)
    assert set(grouped) == set(padded) == {"per_example_loss", "predictions", "labels", "is_real"}
    np.testing.assert_array_equal(grouped["labels"], padded["labels"])
    np.testing.assert_allclose(grouped["predictions"], padded["predictions"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(grouped["per_example_loss"], padded["per_example_loss"], atol=1e-5, rtol=0)


def write_pretraining_records(path, lengths, max_predictions=5, seed=0):
    """Pretraining records (create_pretraining_data's schema) whose real lengths are `lengths`."""
    rng = np.random.default_rng(seed)
    records = []
    for n in lengths:
        ids = [2] + rng.integers(5, CONFIG.vocab_size, n - 2).tolist() + [3]
        predictions = int(rng.integers(1, min(max_predictions, n - 2) + 1))
        positions = sorted(rng.choice(np.arange(1, n - 1), predictions, replace=False).tolist())
        pad, pad_predictions = [0] * (MAX_SEQ_LENGTH - n), [0] * (max_predictions - predictions)
        records.append(input_pipeline.serialize_example({
            "input_ids": ids + pad, "input_mask": [1] * n + pad,
            "segment_ids": [0] * (n // 2) + [1] * (n - n // 2) + pad,
            "masked_lm_positions": positions + pad_predictions,
            "masked_lm_ids": rng.integers(5, CONFIG.vocab_size, predictions).tolist() + pad_predictions,
            "masked_lm_weights": [1.0] * predictions + [0.0] * len(pad_predictions),
            "next_sentence_labels": [int(rng.integers(0, 2))]}))
    input_pipeline.write_tfrecord(path, records)
    return path


def original_pretraining_metrics(model, batches):
    """The original's eval metrics over padded batches, written out in numpy (tf.metrics.mean and
    accuracy with weights; Estimator's "loss" as the mean of the batch losses)."""
    sums = {name: [0.0, 0.0] for name in ("masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy",
                                           "next_sentence_loss", "loss")}
    for features in batches:
        mlm_logits, nsp_logits = (t.numpy().astype(np.float64) for t in model(features, training=False))
        mlm_log_probs = mlm_logits - np.log(np.exp(mlm_logits).sum(-1, keepdims=True))
        nsp_log_probs = nsp_logits - np.log(np.exp(nsp_logits).sum(-1, keepdims=True))
        ids, weights = features["masked_lm_ids"].numpy(), features["masked_lm_weights"].numpy()
        labels = features["next_sentence_labels"].numpy().reshape(-1)
        mlm_nll = -np.take_along_axis(mlm_log_probs, ids[..., None], -1)[..., 0]
        nsp_nll = -nsp_log_probs[np.arange(len(labels)), labels]
        for name, value, weight in (
                ("masked_lm_accuracy", ((mlm_log_probs.argmax(-1) == ids) * weights).sum(), weights.sum()),
                ("masked_lm_loss", (mlm_nll * weights).sum(), weights.sum()),
                ("next_sentence_accuracy", (nsp_log_probs.argmax(-1) == labels).sum(), len(labels)),
                ("next_sentence_loss", nsp_nll.sum(), len(labels)),
                ("loss", (mlm_nll * weights).sum() / (weights.sum() + 1e-5) + nsp_nll.mean(), 1)):
            sums[name][0] += value
            sums[name][1] += weight
    return {name: total / weight for name, (total, weight) in sums.items()}


@pytest.mark.parametrize("length", [input_pipeline.RealLength(MAX_SEQ_LENGTH, position_features=(
    "masked_lm_positions",)), None], ids=["grouped", "fixed"])
def test_length_grouped_pretraining_eval_gives_the_original_metrics(tmp_path, length):
    # 45 records read as 7 batches of 8 (the files repeated, as the original's eval input_fn),
    # mostly short with some at full length: the regrouped batches mix the original's.
    rng = np.random.default_rng(4)
    lengths = rng.integers(4, 20, 45)
    lengths[::6] = MAX_SEQ_LENGTH
    path = write_pretraining_records(str(tmp_path / "eval.tf_record"), lengths.tolist())
    spec = run_pretraining.pretraining_features(MAX_SEQ_LENGTH, 5)
    model = run_pretraining.PretrainingModel(CONFIG)
    padded = input_pipeline.sequential_dataset([path], spec, 8, repeat=True, drop_remainder=True).take(7)
    expected = original_pretraining_metrics(model, padded)
    dataset = run_pretraining.eval_dataset([path], spec, 8, 7, length, CONFIG.vocab_size)
    shapes = [tuple(f["input_ids"].shape) for f in dataset]
    if length is None:
        assert shapes == [(8, MAX_SEQ_LENGTH)] * 7  # the original's batches
    else:
        assert min(length for _, length in shapes) < MAX_SEQ_LENGTH and max(rows for rows, _ in shapes) > 8
    results = training.evaluate(tf.distribute.get_strategy(), model, run_pretraining.pretraining_metrics, dataset)
    assert set(results) == set(expected)
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=2e-5), name


def test_a_window_is_cut_into_one_shape_per_length_with_leftovers_carried_up():
    # Batch size 8 at max_seq_length 128: a batch of length L holds max(8, 1024 // L) rows.
    lengths = [8] * 70 + [16] * 40 + [24] * 3 + [128] * 2
    starts, sizes, batch_lengths, dummies = input_pipeline._grouped_batch_plan(tf.constant(lengths), 8, 8 * 128)
    # 70 rows of 8 never fill a batch of 128: they join the 40 of 16 (110 rows: one batch of
    # 64, 46 left), those the 3 of 24 (49 rows: one batch of 42, 7 left), those the 2 of 128
    # (9 rows: one batch of 8, and 1 row in a last batch of 8 with 7 dummies).
    assert starts.numpy().tolist() == [0, 64, 106, 114]
    assert sizes.numpy().tolist() == [64, 42, 8, 8]
    assert batch_lengths.numpy().tolist() == [16, 24, 128, 128]
    assert int(dummies) == 7
    # A few short rows still make one whole batch of their length (no other shape).
    starts, sizes, batch_lengths, dummies = input_pipeline._grouped_batch_plan(tf.constant([8, 8, 8]), 8, 8 * 128)
    assert (starts.numpy().tolist(), sizes.numpy().tolist(), batch_lengths.numpy().tolist(), int(dummies)) == (
        [0], [128], [8], 125)


def test_fixed_shape_windows_keep_input_order_in_whole_batches():
    """length None (TPU): every batch [batch_size, width], rows in input order, dummies fill each window's last."""
    def window(first, rows):
        return {"input_ids": np.arange(first, first + rows, dtype=np.int32)[:, None] + np.zeros((1, 6), np.int32),
                input_pipeline.EXAMPLE_POSITION: np.arange(first, first + rows, dtype=np.int64)}
    signature = {"input_ids": tf.TensorSpec([None, 6], tf.int32),
                 input_pipeline.EXAMPLE_POSITION: tf.TensorSpec([None], tf.int64)}
    windows = tf.data.Dataset.from_generator(lambda: iter([window(0, 7), window(7, 4)]), output_signature=signature)
    batches = input_pipeline.length_grouped_batches(windows, 3, None)
    assert batches.element_spec["input_ids"].shape.as_list() == [3, 6]  # static, as XLA on a TPU needs
    positions = [b[input_pipeline.EXAMPLE_POSITION].numpy().tolist() for b in batches]
    assert positions == [[0, 1, 2], [3, 4, 5], [6, -1, -1], [7, 8, 9], [10, -1, -1]]
    assert [b["input_ids"].numpy()[:, 0].tolist() for b in batches][2] == [6, 0, 0]


def test_run_ahead_keeps_order_raises_in_place_and_stops_when_left():
    assert list(training.run_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad line 2")
    got = []
    with pytest.raises(ValueError, match="bad line 2"):
        for item in training.run_ahead(failing()):
            got.append(item)
    assert got == [1]

    made, closed = [], []

    def endless():
        try:
            for i in range(10**6):
                made.append(i)
                yield i
        finally:
            closed.append(True)
    ahead = training.run_ahead(endless(), depth=1)
    assert next(ahead) == 0
    ahead.close()
    assert closed == [True] and len(made) <= 4  # the caller's item, one queued, one being made


def test_outputs_come_back_in_input_order_a_window_at_a_time():
    def batch(positions):
        return {input_pipeline.EXAMPLE_POSITION: np.array(positions), "x": np.array(positions) * 10}
    # Two windows: [0..4] sorted as 3 1 | 4 0 2, then [5..7] as 7 5 | 6 and a dummy row (-1).
    out = list(training.in_input_order([batch([3, 1]), batch([4, 0, 2]), batch([7, 5]), batch([6, -1])]))
    assert [b["x"].tolist() for b in out] == [[0, 10, 20, 30, 40], [50], [60, 70]]
    assert all(input_pipeline.EXAMPLE_POSITION not in b for b in out)
    with pytest.raises(RuntimeError, match="never became contiguous"):
        list(training.in_input_order([batch([1, 2])]))


def test_served_classifier_runs_at_the_request_length_with_the_padded_probabilities(tmp_path):
    words = [f"w{i}" for i in range(CONFIG.vocab_size - 5)]
    vocab = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)
    model = classifier_model()
    export = run_classifier.ClassifierExport(model, vocab, True, MAX_SEQ_LENGTH, ["0", "1"], False, pair=True)
    text_a = tf.constant(["w1 w2 w3", "w4 " * 9, "w5"])
    text_b = tf.constant(["w6", "w7 w8", ""])
    served = export._classify(text_a, text_b)["probabilities"]
    packed = export.tokenizer.pack_inputs(text_a, text_b, MAX_SEQ_LENGTH)
    assert int(input_pipeline.RealLength(MAX_SEQ_LENGTH)(packed)["input_ids"].shape[1]) == 16
    padded = tf.nn.softmax(model(packed["input_ids"], packed["input_mask"], packed["segment_ids"]))
    np.testing.assert_allclose(served, padded, atol=1e-6, rtol=0)


def test_group_by_length_batches_similar_lengths_and_resumes_exactly(tmp_path):
    lengths = np.random.default_rng(3).integers(3, MAX_SEQ_LENGTH + 1, 300).tolist()
    train_file = write_classifier_records(str(tmp_path / "train.tf_record"), lengths)
    spec = run_classifier.classifier_features(MAX_SEQ_LENGTH)
    window = 4 * input_pipeline.GROUP_WINDOW_BATCHES  # records per sorted window at batch size 4

    def batches(skip=0, group=True):
        dataset = input_pipeline.training_dataset([train_file], spec, 4, seed=5, skip_examples=skip,
                                            length=input_pipeline.RealLength(MAX_SEQ_LENGTH), group_by_length=group)
        return [{k: v.numpy() for k, v in b.items()} for b in dataset.take(2 * input_pipeline.GROUP_WINDOW_BATCHES)]

    def spread(batch):
        real = batch["input_mask"].sum(1)
        return real.max() - real.min()

    grouped, plain = batches(), batches(group=False)
    # The first window holds the same records as the original's first batches, regrouped.
    first = input_pipeline.GROUP_WINDOW_BATCHES

    def ids(bs):
        return sorted(tuple(row[:n]) for b in bs for row, n in zip(b["input_ids"].tolist(), b["input_mask"].sum(1)))
    assert all(b["input_ids"].shape[0] == 4 for b in grouped)
    assert len(ids(grouped[:first])) == window and ids(grouped[:first]) == ids(plain[:first])
    assert ids(grouped[first:]) == ids(plain[first:])
    # Sorted by length rounded up to 8: rows of a batch mostly share one rounded length.
    assert np.mean([spread(b) for b in grouped]) < 8 < 25 < np.mean([spread(b) for b in plain])
    assert np.mean([b["input_ids"].shape[1] for b in grouped]) < np.mean([b["input_ids"].shape[1] for b in plain])
    # Deterministic, and a resumed run continues with exactly the batches that were next.
    again = batches(skip=4 * 10)
    for a, b in zip(grouped[10:], again):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    with pytest.raises(ValueError, match="group_by_length"):
        input_pipeline.training_dataset([train_file], spec, 4, seed=5, group_by_length=True)


def test_cut_batches_give_the_originals_outputs():
    # The original code's outputs (tests/golden/modeling_tiny_golden.npz, max_seq_length 11)
    # for rows of real length 7 and 4; here the batch runs at 8, its real length rounded up.
    golden_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
    data = np.load(os.path.join(golden_dir, "modeling_tiny_golden.npz"))
    inputs = {k[len("input/"):]: data[k][1:] for k in data.files if k.startswith("input/")}
    expected = {k[len("output/"):]: data[k] for k in data.files if k.startswith("output/")}
    config = modeling.BertConfig.from_json_file(os.path.join(golden_dir, "modeling_tiny_config.json"))
    bert = modeling.BertModel(config)
    masked_lm = modeling.MaskedLMHead(config, bert.embedding_table)
    classifier = modeling.ClassifierHead(5, config.hidden_size)
    modeling.load_checkpoint(os.path.join(golden_dir, "modeling_tiny.ckpt"), bert, masked_lm, classifier)
    features = {"input_ids": inputs["input_ids"], "input_mask": inputs["input_mask"],
                "segment_ids": inputs["token_type_ids"], "masked_lm_positions": inputs["masked_lm_positions"]}
    cut = input_pipeline.RealLength(11, multiple=8, position_features=["masked_lm_positions"])(features)
    assert cut["input_ids"].shape == (2, 8)
    out = bert(cut["input_ids"], input_mask=cut["input_mask"], token_type_ids=cut["segment_ids"])
    np.testing.assert_allclose(out["sequence_output"][0, :7], expected["sequence_output"][1, :7], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["sequence_output"][1, :4], expected["sequence_output"][2, :4], atol=1e-5, rtol=0)
    _, _, probabilities = modeling.classifier_loss(classifier(out["pooled_output"]), inputs["label_ids"])
    np.testing.assert_allclose(probabilities, expected["classifier_probabilities"][1:], atol=1e-5, rtol=0)
    logits = masked_lm(out["sequence_output"], cut["masked_lm_positions"])
    log_probs = tf.reshape(tf.nn.log_softmax(logits, -1), [8, -1])
    np.testing.assert_allclose(log_probs, expected["masked_lm_log_probs"][4:], atol=1e-5, rtol=0)
