"""run_squad.py against the original's golden outputs, plus the fixes and evaluation it adds.

Golden files (tests/golden/squad_*, made by squad_make_golden.py with the ORIGINAL code) use
max_seq_length 64, doc_stride 16, max_query_length 12 over two small SQuAD sets built from
sample_text.txt, and a cut-down uncased vocab.
"""

import collections
import json
import multiprocessing.pool
import os
import random
import weakref

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
import modeling
import run_squad
import tokenization

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
VOCAB = os.path.join(GOLDEN, "squad_vocab.txt")
CONFIG = os.path.join(GOLDEN, "squad_tiny_config.json")
CHECKPOINT = os.path.join(GOLDEN, "squad_tiny.ckpt")
SETTINGS = dict(max_seq_length=64, doc_stride=16, max_query_length=12)


def golden(name):
    return os.path.join(GOLDEN, name)


def squad_file(version):
    return golden(f"squad_{version}.json")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.FullTokenizer(VOCAB, do_lower_case=True)


def prediction_features(version, tokenizer):
    examples = run_squad.read_squad_examples(squad_file(version), False, version == "v2")
    features = list(run_squad.stream_features(examples, tokenizer, is_training=False, **SETTINGS))
    return examples, features


def parse_records(path):
    records = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        records.append({name: list(f.int64_list.value) for name, f in example.features.feature.items()})
    return records


def script_args(output_dir, **extra):
    args = dict(bert_config_file=CONFIG, vocab_file=VOCAB, output_dir=output_dir, **SETTINGS)
    args.update(extra)
    return [f"--{k}={v}" for k, v in args.items()]


# --- Reading ----------------------------------------------------------------------------------

def test_paragraph_split_uses_the_original_whitespace_only():
    # U+202F splits words, U+00A0 does not (as the original); whitespace maps to the word before it.
    tokens, offsets = run_squad.split_paragraph(" a\u202fb\tc\u00a0d\n")
    assert tokens == ["a", "b", "c\u00a0d"]
    assert offsets == [-1, 0, 0, 1, 1, 2, 2, 2, 2]


def test_training_drops_and_counts_answers_not_at_their_offset():
    stats = collections.Counter()
    examples = run_squad.read_squad_examples(squad_file("v1"), True, False, stats)
    assert stats["answer_not_found"] == 1 and stats["questions"] == 25 and len(examples) == 24
    assert "q027" not in {e.qas_id for e in examples}  # "steel" placed at the wrong offset
    japan = next(e for e in examples if e.orig_answer_text == "Japan")
    assert japan.doc_tokens[japan.start_position] == "Japanese"


def test_v2_training_reads_impossible_questions():
    examples = run_squad.read_squad_examples(squad_file("v2"), True, True)
    impossible = [e for e in examples if e.is_impossible]
    assert len(impossible) == 3
    assert all(e.start_position == e.end_position == -1 and e.orig_answer_text == "" for e in impossible)


@pytest.mark.parametrize("text, message", [
    ('{"data": [', "malformed JSON at line 1 column 11"),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', 'data[0].paragraphs[0] has no "context" field'),
    ('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a"}]}]}]}',
     'data[0].paragraphs[0].qas[0] has no "question" field'),
    ('{"data": [{"paragraphs": [{"context": " \\n\\u202f ", "qas": [{"id": "a", "question": "q"}]}]}]}',
     "data[0].paragraphs[0].context is empty or only whitespace"),
    ('{"data": {"paragraphs": []}}', "data should be a list, not dict"),
])
def test_bad_squad_files_fail_with_the_place_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        run_squad.read_squad_examples(str(path), False)
    assert str(path) in str(error.value)


def test_training_question_without_exactly_one_answer_is_an_error(tmp_path):
    path = tmp_path / "two.json"
    qa = {"id": "a", "question": "q", "answers": [{"text": "x", "answer_start": 0}] * 2}
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x y", "qas": [qa]}]}]}))
    with pytest.raises(ValueError, match="has 2 answers; for training each question needs exactly 1"):
        run_squad.read_squad_examples(str(path), True)


# --- Features ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_prediction_features_equal_the_originals(version, tokenizer):
    _, features = prediction_features(version, tokenizer)
    with open(golden(f"squad_{version}_eval_features.json")) as f:
        expected = json.load(f)["features"]
    assert len(features) == len(expected)
    for ours, theirs in zip(features, expected):
        assert ours.unique_id == theirs["unique_id"]
        assert (ours.example_index, ours.doc_span_index) == (theirs["example_index"], theirs["doc_span_index"])
        assert ours.tokens == theirs["tokens"]
        assert sorted(ours.token_to_orig_map.items()) == [tuple(x) for x in theirs["token_to_orig_map"]]
        assert sorted(ours.token_is_max_context.items()) == [tuple(x) for x in theirs["token_is_max_context"]]
        assert (ours.input_ids, ours.input_mask, ours.segment_ids) == (
            theirs["input_ids"], theirs["input_mask"], theirs["segment_ids"])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_training_records_equal_the_originals_with_the_original_counts(version, tokenizer, tmp_path):
    counts = run_squad.prepare_training_features(squad_file(version), VOCAB, tokenizer, str(tmp_path),
                                                 version_2_with_negative=version == "v2", do_lower_case=True,
                                                 **SETTINGS)
    with open(golden(f"squad_{version}_eval_features.json")) as f:
        expected = json.load(f)
    assert counts["num_examples"] == expected["num_train_examples"]
    assert counts["num_features"] == expected["num_train_features"]
    assert counts["answer_not_found"] == 1 and counts["query_truncated"] == 2
    ours, theirs = parse_records(counts["path"]), parse_records(golden(f"squad_{version}_train.tf_record"))
    assert ours == theirs
    assert set(ours[0]) == {"unique_ids", "input_ids", "input_mask", "segment_ids", "start_positions",
                            "end_positions", "is_impossible"}
    # Same inputs again: the records are reused, not rewritten.
    mtime = os.stat(counts["path"]).st_mtime_ns
    again = run_squad.prepare_training_features(squad_file(version), VOCAB, tokenizer, str(tmp_path),
                                                version_2_with_negative=version == "v2", do_lower_case=True,
                                                **SETTINGS)
    assert again == counts and os.stat(counts["path"]).st_mtime_ns == mtime


def test_workers_write_the_same_records(tokenizer, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for directory, workers in ((one, 1), (two, 2)):
        directory.mkdir()
        run_squad.prepare_training_features(squad_file("v2"), VOCAB, tokenizer, str(directory), 48, 8, 12, True,
                                            True, num_workers=workers)
    assert (one / "train.tf_record").read_bytes() == (two / "train.tf_record").read_bytes()


def test_max_context_for_all_pieces_equals_the_per_piece_rule():
    rng = random.Random(0)
    for _ in range(200):
        num_tokens = rng.randint(1, 60)
        spans = run_squad.make_doc_spans(num_tokens, rng.randint(1, 20), rng.randint(1, 20))
        best = run_squad.max_context_span_indexes(spans, num_tokens)
        for index, span in enumerate(spans):
            for position in range(span.start, span.start + span.length):
                assert (best[position] == index) == run_squad._check_is_max_context(spans, index, position)


# --- Model and predictions --------------------------------------------------------------------

def model_logits(features):
    config = modeling.BertConfig.from_json_file(CONFIG)
    model = run_squad.SquadModel(config)
    result = modeling.load_checkpoint(CHECKPOINT, model)
    assert not result.not_in_checkpoint
    inputs = {name: tf.constant([getattr(f, name) for f in features])
              for name in ("input_ids", "input_mask", "segment_ids")}
    start, end = model(inputs, training=False)
    return start.numpy(), end.numpy()


def results_for(features, start_logits, end_logits):
    return [run_squad.RawResult(f.unique_id, s, e) for f, s, e in zip(features, start_logits, end_logits)]


def predict_files(tmp_path, examples, features, results, version, n_best_size=20, max_answer_length=30,
                  threshold=0.0):
    paths = [str(tmp_path / f"{name}.json") for name in ("predictions", "nbest_predictions", "null_odds")]
    run_squad.write_predictions(examples, features, results, n_best_size, max_answer_length, True, *paths,
                                version_2_with_negative=version == "v2", null_score_diff_threshold=threshold)
    return paths


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_predictions_on_fixed_logits_are_byte_identical_to_the_originals(version, tokenizer, tmp_path):
    examples, features = prediction_features(version, tokenizer)
    fixed = np.load(golden(f"squad_{version}_fixed.npz"))
    paths = predict_files(tmp_path, examples, features,
                          results_for(features, fixed["start_logits"], fixed["end_logits"]), version,
                          int(fixed["n_best_size"]), int(fixed["max_answer_length"]),
                          float(fixed["null_score_diff_threshold"]))
    names = ["predictions", "nbest_predictions"] + (["null_odds"] if version == "v2" else [])
    for path, name in zip(paths, names):
        with open(path, "rb") as ours, open(golden(f"squad_{version}_fixed_{name}.json"), "rb") as theirs:
            assert ours.read() == theirs.read(), name
    assert os.path.exists(paths[2]) == (version == "v2")


def _load_json(path):
    with open(path) as f:
        return json.load(f, object_pairs_hook=collections.OrderedDict)


def assert_predictions_match(output_dir, version):
    """Same texts as the original's predictions; probabilities, logits, null odds within 1e-5."""
    def load(prefix, name):
        return _load_json(f"{prefix}{name}.json")

    theirs_prefix = golden(f"squad_{version}_model_")
    ours_prefix = os.path.join(output_dir, "")
    assert load(ours_prefix, "predictions") == load(theirs_prefix, "predictions")
    ours, theirs = load(ours_prefix, "nbest_predictions"), load(theirs_prefix, "nbest_predictions")
    assert list(ours) == list(theirs)
    worst = 0.0
    for qas_id in theirs:
        assert [e["text"] for e in ours[qas_id]] == [e["text"] for e in theirs[qas_id]]
        for a, b in zip(ours[qas_id], theirs[qas_id]):
            assert list(a) == ["text", "probability", "start_logit", "end_logit"]
            worst = max(worst, *(abs(a[k] - b[k]) for k in ("probability", "start_logit", "end_logit")))
    assert worst <= 1e-5
    if version == "v2":
        ours, theirs = load(ours_prefix, "null_odds"), load(theirs_prefix, "null_odds")
        assert list(ours) == list(theirs)
        assert max(abs(ours[k] - theirs[k]) for k in theirs) <= 1e-5
    return worst


def test_model_logits_and_v1_predictions_match_the_original(tokenizer, tmp_path):
    examples, features = prediction_features("v1", tokenizer)
    start, end = model_logits(features)
    expected = np.load(golden("squad_v1_model.npz"))
    np.testing.assert_allclose(start, expected["start_logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(end, expected["end_logits"], atol=1e-5, rtol=0)
    predict_files(tmp_path, examples, features, results_for(features, start, end), "v1")
    assert_predictions_match(str(tmp_path), "v1")


def test_streamed_prediction_holds_a_few_windows_and_writes_the_originals_files(tokenizer, tmp_path):
    # Windows are made, run and answered a batch at a time: with batches of 2, no more windows
    # are alive at once than those of one question plus a few batches (being made, prefetched,
    # in the model, being answered), of the 100 or so.
    examples = run_squad.read_squad_examples(squad_file("v2"), False, True)
    with open(golden("squad_v2_eval_features.json")) as f:
        expected = json.load(f)["features"]
    model = run_squad.SquadModel(modeling.BertConfig.from_json_file(CONFIG))
    modeling.load_checkpoint(CHECKPOINT, model)
    alive, made, most_alive = weakref.WeakSet(), [0], [0]

    def counted(features):
        for feature in features:
            alive.add(feature)
            made[0] += 1
            most_alive[0] = max(most_alive[0], len(alive))
            yield feature

    features = run_squad.stream_features(examples, tokenizer, is_training=False, **SETTINGS)
    predictions, null_odds, num_windows = run_squad.predict_and_write(
        tf.distribute.get_strategy(), model, examples, counted(features), str(tmp_path), SETTINGS["max_seq_length"],
        2, run_squad.AnswerSettings(version_2_with_negative=True))
    windows_per_question = collections.Counter(f["example_index"] for f in expected)
    assert num_windows == made[0] == len(expected) > 90
    assert most_alive[0] <= max(windows_per_question.values()) + 8 * 2 < len(expected) / 4
    assert_predictions_match(str(tmp_path), "v2")
    assert len(predictions) == len(null_odds) == len(examples)
    # eval.tf_record holds the original's windows, in order.
    records = parse_records(str(tmp_path / "eval.tf_record"))
    assert [(r["unique_ids"][0], r["input_ids"], r["input_mask"], r["segment_ids"]) for r in records] == [
        (f["unique_id"], f["input_ids"], f["input_mask"], f["segment_ids"]) for f in expected]
    assert sorted(os.listdir(tmp_path)) == ["eval.tf_record", "nbest_predictions.json", "null_odds.json",
                                            "predictions.json"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_real_length_prediction_equals_the_padding_masked_model_at_full_length(version, tokenizer, tmp_path):
    # --real_length: the model masks padding out of the span logits, and windows run sorted by
    # length, each batch cut to its longest window. Reference: the same masked model on the
    # padded windows in input order, through the same post-processing.
    examples, features = prediction_features(version, tokenizer)
    model = run_squad.SquadModel(modeling.BertConfig.from_json_file(CONFIG), mask_padding=True)
    modeling.load_checkpoint(CHECKPOINT, model)
    inputs = {name: tf.constant([getattr(f, name) for f in features])
              for name in ("input_ids", "input_mask", "segment_ids")}
    start, end = (t.numpy() for t in model(inputs, training=False))
    reference = tmp_path / "reference"
    reference.mkdir()
    paths = predict_files(reference, examples, features, results_for(features, start, end), version)

    cut = tmp_path / "cut"
    cut.mkdir()
    lengths = [int(sum(f.input_mask)) for f in features]
    assert sum(n <= 56 for n in lengths) >= 4 and max(lengths) == SETTINGS["max_seq_length"]  # some cut
    _, features = prediction_features(version, tokenizer)
    run_squad.predict_and_write(tf.distribute.get_strategy(), model, examples, iter(features), str(cut),
                                SETTINGS["max_seq_length"], 4,
                                run_squad.AnswerSettings(version_2_with_negative=version == "v2"),
                                length=input_pipeline.RealLength(SETTINGS["max_seq_length"]))
    assert _load_json(cut / "predictions.json") == _load_json(paths[0])
    ours, theirs = _load_json(cut / "nbest_predictions.json"), _load_json(paths[1])
    assert list(ours) == list(theirs)
    for qas_id in theirs:
        assert [e["text"] for e in ours[qas_id]] == [e["text"] for e in theirs[qas_id]]
        for a, b in zip(ours[qas_id], theirs[qas_id]):
            assert max(abs(a[k] - b[k]) for k in ("probability", "start_logit", "end_logit")) <= 1e-5
    # Why it is an opt-in: the original ranks padding positions too, so its n-best lists are
    # not these.
    assert _load_json(golden(f"squad_{version}_model_nbest_predictions.json")) != theirs


def test_real_length_training_step_equals_the_padded_masked_step():
    # Under --real_length a training batch is cut to its longest window: with padding masked
    # out of the span softmax, the loss and every gradient are those of the padded batch.
    spec = run_squad.feature_spec(SETTINGS["max_seq_length"], is_training=True)
    records = next(iter(input_pipeline.sequential_dataset([golden("squad_v1_train.tf_record")], spec, 100)))
    short = tf.reduce_sum(records["input_mask"], 1) < 56  # the windows of shorter documents
    batch = {name: tf.boolean_mask(values, short) for name, values in records.items()}
    length = input_pipeline.RealLength(SETTINGS["max_seq_length"])
    cut = length(batch)
    assert batch["input_ids"].shape[0] >= 4 and cut["input_ids"].shape[1] == 56
    assert tf.reduce_max(batch["end_positions"]) > 0  # answers inside the windows
    model = run_squad.SquadModel(modeling.BertConfig.from_json_file(CONFIG), mask_padding=True)
    modeling.load_checkpoint(CHECKPOINT, model)

    def loss_and_grads(features):
        with tf.GradientTape() as tape:
            loss = run_squad.squad_training_loss(model, features, training=False)
        grads = tape.gradient(loss, model.trainable_variables)
        return loss.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads if g is not None]

    padded_loss, padded_grads = loss_and_grads(batch)
    cut_loss, cut_grads = loss_and_grads(cut)
    assert cut_loss == pytest.approx(padded_loss, rel=1e-6)
    assert len(cut_grads) == len(padded_grads)
    for a, b in zip(cut_grads, padded_grads):
        np.testing.assert_allclose(a, b, atol=1e-6 + 1e-5 * np.abs(b).max())
    # Without the mask the padding's logits count, as in the original: the cut would change the loss.
    model.mask_padding = False
    assert abs(loss_and_grads(cut)[0] - loss_and_grads(batch)[0]) > 1e-3


def test_an_error_while_making_windows_is_raised_and_writes_nothing(tokenizer, tmp_path):
    examples, features = prediction_features("v1", tokenizer)

    def failing():
        yield from features[:5]
        raise ValueError("question q9: its context has no WordPiece tokens")

    model = run_squad.SquadModel(modeling.BertConfig.from_json_file(CONFIG))
    with pytest.raises(ValueError, match="question q9: its context has no WordPiece tokens"):
        run_squad.predict_and_write(tf.distribute.get_strategy(), model, examples, failing(), str(tmp_path),
                                    SETTINGS["max_seq_length"], 2, run_squad.AnswerSettings())
    assert os.listdir(tmp_path) == []


def test_worker_chunks_in_flight_are_bounded():
    # pool.imap would read every chunk ahead and keep every result a slow consumer has not taken.
    pulled = []

    def chunks():
        for i in range(50):
            pulled.append(i)
            yield i

    with multiprocessing.pool.ThreadPool(2) as pool:
        taken = []
        for result in run_squad._ordered_results(pool, lambda x: x * x, chunks(), 4):
            taken.append(result)
            assert len(pulled) <= len(taken) + 4
    assert taken == [i * i for i in range(50)]


def test_write_predictions_gives_windowless_questions_the_originals_empty_answer(tokenizer, tmp_path):
    examples, features = prediction_features("v1", tokenizer)
    fixed = np.load(golden("squad_v1_fixed.npz"))
    results = results_for(features, fixed["start_logits"], fixed["end_logits"])
    kept = [(f, r) for f, r in zip(features, results) if f.example_index not in (0, 3)]
    paths = [str(tmp_path / f"{name}.json") for name in ("predictions", "nbest_predictions", "null_odds")]
    predictions, _ = run_squad.write_streamed_predictions(examples, iter(kept), run_squad.AnswerSettings(), *paths)
    assert list(predictions) == [e.qas_id for e in examples]
    with open(paths[1]) as f:
        nbest = json.load(f)
    for index in (0, 3):
        assert predictions[examples[index].qas_id] == "empty"
        assert nbest[examples[index].qas_id] == [
            {"text": "empty", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}]
    with pytest.raises(ValueError, match="not consecutive or not in order"):
        run_squad.write_streamed_predictions(examples, iter(kept[5:] + kept[:5]), run_squad.AnswerSettings(),
                                             *paths)


def test_v2_all_null_nbest_predicts_no_answer_instead_of_crashing(tokenizer):
    # n_best_size=1 and the best start at [CLS]: no span survives, only the null answer
    # is left, and the original dies with AttributeError on best_non_null_entry.
    examples, features = prediction_features("v2", tokenizer)
    example_features = [f for f in features if f.example_index == 0]
    results = []
    for feature in example_features:
        start = np.full(64, -5.0, np.float32)
        end = np.full(64, -5.0, np.float32)
        start[0], end[0] = 2.0, 1.5
        results.append(run_squad.RawResult(feature.unique_id, start, end))
    answer, nbest, score_diff = run_squad.predict_example(
        examples[0], example_features, results, run_squad.AnswerSettings(n_best_size=1, version_2_with_negative=True))
    assert answer == ""
    assert [(e["text"], e["probability"]) for e in nbest] == [("", 1.0)]
    assert score_diff == pytest.approx(3.5)


def test_v2_null_threshold_decides_between_null_and_best_span(tokenizer):
    examples, features = prediction_features("v2", tokenizer)
    feature = next(f for f in features if f.example_index == 0)
    position = min(p for p, is_max in feature.token_is_max_context.items() if is_max)
    start = np.full(64, -5.0, np.float32)
    end = np.full(64, -5.0, np.float32)
    start[0] = end[0] = 1.0
    start[position] = end[position] = 1.25  # best span scores 2.5, null 2.0: score_diff -0.5
    results = [run_squad.RawResult(feature.unique_id, start, end)]
    word = examples[0].doc_tokens[feature.token_to_orig_map[position]]
    for threshold, expected in ((0.0, word), (-0.6, "")):
        answer, _, score_diff = run_squad.predict_example(examples[0], [feature], results, run_squad.AnswerSettings(
            version_2_with_negative=True, null_score_diff_threshold=threshold))
        assert score_diff == pytest.approx(-0.5) and answer == expected


@pytest.mark.parametrize("pred, orig, lower, expected", [
    ("steve smith", "Steve Smith's", True, "Steve Smith"),
    ("jurgen muller", "J\u00fcrgen M\u00fcller,", True, "J\u00fcrgen M\u00fcller"),
    ("1895", "(1895-1943).", True, "1895"),
    ("absent", "Steve Smith's", True, "Steve Smith's"),
    ("Smith", "Steve Smith's", False, "Smith"),
])
def test_get_final_text_maps_normalised_answers_back_to_the_original_characters(pred, orig, lower, expected):
    assert run_squad.get_final_text(pred, orig, lower) == expected


# --- Evaluation (hand-computed) ---------------------------------------------------------------

def test_normalisation_and_v1_scores():
    assert run_squad.normalize_answer("The  Cat's hat!") == "cats hat"
    assert run_squad.normalize_answer("an apple, a pear") == "apple pear"
    assert run_squad.f1_score_v1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert run_squad.f1_score_v1("", "cat") == 0
    gold = collections.OrderedDict([("q1", ["Paris", "the city of Paris"]), ("q2", ["a cat sat down"]),
                                    ("q3", ["red"])])
    predictions = {"q1": "paris.", "q2": "the cat sat"}  # q3 unanswered: scores 0
    scores = run_squad.evaluate_v1(gold, predictions)
    assert scores == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 * 1.8 / 3)}


def test_v2_scores_with_has_and_no_answer_splits_and_best_threshold():
    gold = collections.OrderedDict([("q1", ["Paris"]), ("q2", ["red car"]), ("q3", []), ("q4", [])])
    predictions = {"q1": "paris", "q2": "the red", "q3": "", "q4": "blue"}
    null_odds = {"q1": -2.0, "q2": 0.5, "q3": 1.5, "q4": 0.25}
    scores = run_squad.evaluate_v2(gold, predictions, null_odds)
    # exact: q1 1, q2 0, q3 1, q4 0; f1: q2 2/3 ("red" vs "red car"); q3 is above the
    # official --na-prob-thresh 1.0, which gives a no-answer question 1 either way.
    assert list(scores) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                            "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh", "best_f1",
                            "best_f1_thresh"]
    assert scores["exact"] == 50.0 and scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 4)
    assert (scores["HasAns_exact"], scores["HasAns_f1"], scores["HasAns_total"]) == (
        50.0, pytest.approx(100 * (5 / 3) / 2), 2)
    assert (scores["NoAns_exact"], scores["NoAns_f1"], scores["NoAns_total"]) == (50.0, 50.0, 2)
    # Threshold sweep in null-odds order q1, q4, q2, q3 from 2 (all no-answer right):
    # +1 (q1) = 3 best at -2.0; -1 (q4 answered "blue"); +0 / +2/3 (q2); 0 (q3).
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (75.0, -2.0)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (75.0, -2.0)
    # Above the threshold an answerable question scores 0, an unanswerable one 1.
    thresholded = run_squad.evaluate_v2(gold, predictions, dict(null_odds, q2=3.0, q4=2.0))
    assert thresholded["HasAns_f1"] == 50.0 and thresholded["NoAns_exact"] == 100.0


def test_gold_answers_only_when_every_question_has_them():
    examples = [run_squad.SquadExample("a", "q", ["x"], answers=["x"]),
                run_squad.SquadExample("b", "q", ["x"], answers=[])]
    assert run_squad.gold_answers_of(examples, True) == {"a": ["x"], "b": []}
    assert run_squad.gold_answers_of(examples, False) is None
    assert run_squad.gold_answers_of([run_squad.SquadExample("a", "q", ["x"])], True) is None


# --- The script -------------------------------------------------------------------------------

def test_script_predicts_v2_as_the_original_and_evaluates(tmp_path):
    out = str(tmp_path / "out")
    result = helpers.run_script("run_squad.py",
                                *script_args(out, predict_file=squad_file("v2"), do_predict="true", num_workers=2,
                                             version_2_with_negative="true", init_checkpoint=CHECKPOINT))
    assert result.returncode == 0, result.stderr[-3000:]
    assert assert_predictions_match(out, "v2") <= 1e-5
    with open(os.path.join(out, "eval_results.json")) as f:
        scores = json.load(f)
    assert scores["total"] == 28 and scores["HasAns_total"] == 25 and scores["NoAns_total"] == 3
    assert json.loads(result.stdout.strip().splitlines()[-1]) == scores
    assert "2 question(s) longer than --max_query_length=12 WordPieces were truncated" in result.stderr
    assert sorted(os.listdir(out)) == ["eval.tf_record", "eval_results.json", "nbest_predictions.json",
                                       "null_odds.json", "predictions.json"]


def test_script_trains_from_original_records_then_predicts(tmp_path):
    out = str(tmp_path / "out")
    result = helpers.run_script("run_squad.py",
                                *script_args(out, train_file=squad_file("v1"), predict_file=squad_file("v1"),
                                             do_train="true", do_predict="true", init_checkpoint=CHECKPOINT,
                                             train_batch_size=8, num_train_epochs=1.0, learning_rate=1e-3,
                                             save_checkpoints_steps=2, seed=3))
    assert result.returncode == 0, result.stderr[-3000:]
    # 24 questions kept / 8 * 1 epoch = 3 steps, counted from questions, not the 93 windows.
    assert "Num orig examples = 24" in result.stderr and "Num split examples = 93" in result.stderr
    assert "Num steps = 3" in result.stderr
    assert "Could not find answer: " in result.stderr
    assert "1 training question(s) skipped" in result.stderr
    assert parse_records(os.path.join(out, "train.tf_record")) == parse_records(golden("squad_v1_train.tf_record"))
    reader = tf.train.load_checkpoint(os.path.join(out, "model.ckpt-3"))
    names = set(reader.get_variable_to_shape_map())
    assert {"cls/squad/output_weights", "cls/squad/output_bias", "cls/squad/output_weights/adam_m",
            "global_step"} <= names
    assert reader.get_tensor("cls/squad/output_weights").shape == (2, 32)
    assert not np.allclose(reader.get_tensor("cls/squad/output_weights"),
                           tf.train.load_checkpoint(CHECKPOINT).get_tensor("cls/squad/output_weights"))
    with open(os.path.join(out, "predictions.json")) as f:
        assert len(json.load(f)) == 25
    with open(os.path.join(out, "eval_results.json")) as f:
        assert set(json.load(f)) == {"exact_match", "f1"}


def test_script_real_length_trains_and_predicts_at_the_real_length(tmp_path):
    out = str(tmp_path / "out")
    result = helpers.run_script("run_squad.py",
                                *script_args(out, train_file=squad_file("v2"), predict_file=squad_file("v2"),
                                             version_2_with_negative="true", do_train="true", do_predict="true",
                                             init_checkpoint=CHECKPOINT, train_batch_size=8, num_train_epochs=1.0,
                                             learning_rate=1e-3, real_length="true", seed=3))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Sequence length: batches run at their real length" in result.stderr
    reader = tf.train.load_checkpoint(os.path.join(out, "model.ckpt-3"))
    assert not np.allclose(reader.get_tensor("cls/squad/output_weights"),
                           tf.train.load_checkpoint(CHECKPOINT).get_tensor("cls/squad/output_weights"))
    predictions = _load_json(os.path.join(out, "predictions.json"))
    examples = run_squad.read_squad_examples(squad_file("v2"), False, True)
    assert list(predictions) == [e.qas_id for e in examples]
    assert set(_load_json(os.path.join(out, "eval_results.json"))) >= {"exact", "f1", "HasAns_exact"}


def test_script_bad_input_is_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a"}]}]}]}')
    out = tmp_path / "out"
    result = helpers.run_script("run_squad.py", *script_args(str(out), predict_file=str(bad), do_predict="true"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'run_squad.py: error: {bad}: data[0].paragraphs[0].qas[0] has no "question" field (SQuAD format: '
        '{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": '
        '[{"text", "answer_start"}]}]}]}]})')
    assert "Traceback" not in result.stderr
    assert not os.path.exists(out) or os.listdir(out) == []  # the file is read before output_dir is made


def test_worker_records_equal_serialized_features(tokenizer):
    examples = run_squad.read_squad_examples(squad_file("v2"), True, True)
    settings = dict(max_seq_length=48, doc_stride=8, max_query_length=12)
    expected = [run_squad.serialize_feature(f, True)
                for f in run_squad.stream_features(examples, tokenizer, is_training=True, **settings)]
    from_list = list(run_squad.training_records(examples, tokenizer, num_workers=2, **settings))
    from_iterator = list(run_squad.training_records(iter(examples), tokenizer, num_workers=2, **settings))
    assert from_list == expected and from_iterator == expected
    # An id of more varint bytes than the placeholder's: the record is rebuilt, not patched.
    feature = run_squad.convert_example_to_features(examples[0], 0, tokenizer, is_training=True, **settings)[0][0]
    parts = run_squad._split_record(feature)
    for unique_id in (run_squad.FIRST_UNIQUE_ID + 7, 2 ** 40 + 3):
        feature.unique_id = unique_id
        assert run_squad._join_record(parts, unique_id) == run_squad.serialize_feature(feature, True)
