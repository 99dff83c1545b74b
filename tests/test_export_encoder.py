"""export_encoder.py: the TF Hub-style encoder and preprocessing SavedModels, loaded in a fresh
process with tf.saved_model.load alone, give extract_features.py's vectors and
run_classifier.py's packed ids."""

import json
import os
import random
import re
import subprocess
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import convert_checkpoint
import export_encoder
import extract_features
import modeling
import run_classifier
import tokenization
import tokenization_ingraph

from tests import helpers

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(GOLDEN, "extract_tiny_config.json")
CHECKPOINT = os.path.join(GOLDEN, "extract_tiny.ckpt")
VOCAB = os.path.join(GOLDEN, "extract_tiny_vocab.txt")
SEQ_LENGTH = 16

# Runs in a fresh interpreter: nothing of this project is imported, only TensorFlow (and
# tensorflow_text, whose ops the preprocessing graph uses, as with TF Hub's models).
LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the WordPiece op)
    export_dir, pairs_file, seq_length, output = sys.argv[1:]
    preprocess = tf.saved_model.load(export_dir + "/preprocess")
    encoder = tf.saved_model.load(export_dir + "/encoder")
    pairs = json.load(open(pairs_file))
    results = {}
    for i, (text_a, text_b) in enumerate(pairs):
        segments = [preprocess.tokenize(tf.constant([text_a]))]
        if text_b is not None:
            segments.append(preprocess.tokenize(tf.constant([text_b])))
        inputs = preprocess.bert_pack_inputs(segments, seq_length=int(seq_length))
        outputs = encoder(inputs)
        for name, value in inputs.items():
            results[f"{i}/{name}"] = value.numpy()[0]
        results[f"{i}/pooled_output"] = outputs["pooled_output"].numpy()[0]
        results[f"{i}/sequence_output"] = outputs["sequence_output"].numpy()[0]
        for layer, value in enumerate(outputs["encoder_outputs"]):
            results[f"{i}/layer_{layer}"] = value.numpy()[0]
    default = preprocess(tf.constant([pairs[0][0]]))
    results["default/input_word_ids"] = default["input_word_ids"].numpy()[0]
    results["trainable_variables"] = np.array([len(encoder.trainable_variables), len(encoder.variables),
                                               len(encoder.regularization_losses)])
    results["training/pooled_output"] = encoder(inputs, training=True)["pooled_output"].numpy()[0]
    served = encoder.signatures["serving_default"](**inputs)
    results["served/pooled_output"] = served["pooled_output"].numpy()[0]
    np.savez(output, **results)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("export") / "bert")
    result = subprocess.run(
        [helpers.python(), os.path.join(ROOT, "export_encoder.py"), f"--bert_config_file={CONFIG}",
         f"--init_checkpoint={CHECKPOINT}", f"--vocab_file={VOCAB}", f"--export_dir={export_dir}",
         f"--max_seq_length={SEQ_LENGTH}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(export_dir)) == ["encoder", "preprocess"]
    return export_dir


# Pairs for run_classifier.py's features, each a case of its truncation at SEQ_LENGTH.
CLASSIFIER_PAIRS = [
    ("The quick brown fox jumps over the lazy dog.", None),
    ("the quick brown fox " * 6, None),                                 # one segment cut to seq_length - 2
    ("Is this Jacksonville?", "No, it is not."),
    ("the quick brown fox jumps over the lazy dog", "the dog"),         # the longer A is cut
    ("dog", "the quick brown fox jumps over the lazy dog the fox"),     # the longer B is cut
    ("the quick brown fox jumps", "over the lazy dog !"),              # a tie: B loses first
    ("fox fox fox", ""),                                                # an empty B makes no pair
]


def extract_lines():
    return list(extract_features.read_lines(os.path.join(GOLDEN, "extract_input.txt")))  # pairs, CRs, blanks


@pytest.fixture(scope="module")
def loaded(exported, tmp_path_factory):
    """What a fresh process computes with the two SavedModels: the extract_features input
    lines first, then CLASSIFIER_PAIRS."""
    examples = [extract_features.example_from_line(i, line) for i, line in enumerate(extract_lines())]
    pairs = [(example.text_a, example.text_b) for example in examples] + CLASSIFIER_PAIRS
    directory = tmp_path_factory.mktemp("loaded")
    pairs_file, output = directory / "pairs.json", directory / "out.npz"
    pairs_file.write_text(json.dumps(pairs))
    result = subprocess.run([helpers.python(), "-c", LOADER, exported, str(pairs_file), str(SEQ_LENGTH),
                             str(output)], capture_output=True, text=True, cwd=str(directory), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(output)


def test_fresh_process_reproduces_extract_features_vectors(loaded, tmp_path):
    lines = extract_lines()

    config = modeling.BertConfig.from_json_file(CONFIG)
    layers = list(range(config.num_hidden_layers))
    tokenizer = tokenization.FullTokenizer(VOCAB, do_lower_case=True)
    extractor = extract_features.FeatureExtractor(config, CHECKPOINT, layers)
    json_file = tmp_path / "features.jsonl"
    extract_features.extract_features(os.path.join(GOLDEN, "extract_input.txt"), str(json_file), extractor,
                                      tokenizer, max_seq_length=SEQ_LENGTH)
    model = modeling.BertModel(config)
    modeling.load_checkpoint(CHECKPOINT, model)
    worst = 0.0
    for i, line in enumerate(json_file.read_text().splitlines()):
        features = json.loads(line)["features"]
        ids = tokenizer.convert_tokens_to_ids([feature["token"] for feature in features])
        np.testing.assert_array_equal(loaded[f"{i}/input_word_ids"][:len(ids)], ids)
        assert loaded[f"{i}/input_mask"].sum() == len(ids)
        for j, layer in enumerate(layers):
            ours = np.array([feature["layers"][j]["values"] for feature in features])
            worst = max(worst, np.abs(loaded[f"{i}/layer_{layer}"][:len(ids)] - ours).max())
        np.testing.assert_array_equal(loaded[f"{i}/sequence_output"], loaded[f"{i}/layer_{layers[-1]}"])
        # The pooled output, which extract_features.py does not write, against the model itself.
        out = model(tf.constant([loaded[f"{i}/input_word_ids"]]), input_mask=tf.constant([loaded[f"{i}/input_mask"]]),
                    token_type_ids=tf.constant([loaded[f"{i}/input_type_ids"]]), training=False)
        worst = max(worst, np.abs(out["pooled_output"].numpy()[0] - loaded[f"{i}/pooled_output"]).max())
    # extract_features.py writes 6 decimals, so 5e-7 of this is its rounding.
    assert worst < 1e-5, worst
    last = len(lines) + len(CLASSIFIER_PAIRS) - 1
    np.testing.assert_array_equal(loaded["served/pooled_output"], loaded[f"{last}/pooled_output"])
    np.testing.assert_array_equal(loaded["default/input_word_ids"], loaded["0/input_word_ids"])
    # training=True runs dropout (hidden_dropout_prob 0.1), as a fine-tuning hub.KerasLayer would.
    assert np.abs(loaded["training/pooled_output"] - loaded[f"{last}/pooled_output"]).max() > 1e-3
    # The Reusable SavedModel attributes hub.KerasLayer fine-tunes through: every weight, no losses.
    assert loaded["trainable_variables"].tolist() == [len(model.weights), len(model.weights), 0]


def test_preprocessing_packs_the_ids_of_run_classifier_features(loaded):
    tokenizer = tokenization.FullTokenizer(VOCAB, do_lower_case=True)
    first = len(extract_lines())
    for i, (text_a, text_b) in enumerate(CLASSIFIER_PAIRS, first):
        example = run_classifier.InputExample(str(i), text_a, text_b, "0")
        feature = run_classifier.convert_single_example(10, example, ["0"], SEQ_LENGTH, tokenizer)
        np.testing.assert_array_equal(loaded[f"{i}/input_word_ids"], feature.input_ids, err_msg=str(i))
        np.testing.assert_array_equal(loaded[f"{i}/input_mask"], feature.input_mask, err_msg=str(i))
        np.testing.assert_array_equal(loaded[f"{i}/input_type_ids"], feature.segment_ids, err_msg=str(i))


def test_exported_encoder_converts_back_to_the_same_checkpoint(exported, tmp_path):
    encoder_dir = os.path.join(exported, "encoder")
    assert convert_checkpoint.detect_format(encoder_dir) == "tf_hub"
    convert_checkpoint.write_original(convert_checkpoint.read_model("tf_hub", encoder_dir), str(tmp_path / "back"))
    back = convert_checkpoint.read_model("original", str(tmp_path / "back"))
    original = convert_checkpoint.read_original(CHECKPOINT, CONFIG, VOCAB)
    assert back.config.to_dict() == original.config.to_dict()
    assert list(back.tensors) == list(original.tensors)
    for name, value in original.tensors.items():
        np.testing.assert_array_equal(back.tensors[name], value, err_msg=name)
    assert open(back.vocab_file).read() == open(VOCAB).read()


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_tokenize_gives_full_tokenizer_ids_word_by_word(do_lower_case):
    preprocess = export_encoder.PreprocessExport(helpers.real_vocab_file(), do_lower_case, 32)
    tokenizer = tokenization.FullTokenizer(helpers.real_vocab_file(), do_lower_case=do_lower_case)
    lines = ["UNwant\u00e9d,running", "H\u00e9llo, w\u00f6rld! \u65e5\u672c\u8a9e \u03a3\u039f\u03a3",
             "x" * 250 + " ok", ""] + helpers.random_unicode_lines(random.Random(3), 200)
    words = preprocess.tokenize(tf.constant(lines))  # [B, (W), (P)]
    basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    for line, line_words in zip(lines, words.to_list()):
        assert [piece for word in line_words for piece in word] == tokenizer.convert_tokens_to_ids(
            tokenizer.tokenize(line)), line
        assert len(line_words) == len(basic.tokenize(line)), line


def test_truncated_pair_lengths_follow_the_pop_the_longer_loop():
    rng = np.random.RandomState(0)
    length_a, length_b = rng.randint(0, 30, 400), rng.randint(0, 30, 400)
    for seq_length in (3, 4, 9, 16):
        keep_a, keep_b = tokenization_ingraph.truncated_pair_lengths(tf.constant(length_a, tf.int64),
                                                               tf.constant(length_b, tf.int64), seq_length)
        for a, b, got_a, got_b in zip(length_a, length_b, keep_a.numpy(), keep_b.numpy()):
            tokens_a, tokens_b = list(range(a)), list(range(b))
            if tokens_b:
                extract_features.truncate_seq_pair(tokens_a, tokens_b, seq_length - 3)
            else:
                tokens_a = tokens_a[:seq_length - 2]
            assert (got_a, got_b) == (len(tokens_a), len(tokens_b)), (a, b, seq_length)


def test_vocab_without_special_tokens_is_named(tmp_path):
    model = modeling.BertModel(modeling.BertConfig.from_json_file(CONFIG))
    plain = helpers.write_vocab(tmp_path / "plain.txt", ["[PAD]", "the"])
    with pytest.raises(ValueError, match=re.escape(f"vocab file {plain} lacks [UNK], [CLS], [SEP]")):
        export_encoder.export_encoder(str(tmp_path / "out"), model, plain, True, SEQ_LENGTH)
    assert not (tmp_path / "out").exists()


def test_wrong_vocab_and_too_long_max_seq_length_are_one_line(tmp_path):
    small_vocab = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                                      [f"w{i}" for i in range(100)])
    for args, message in (([f"--vocab_file={small_vocab}", "--max_seq_length=16"],
                           "has 105 tokens but the BERT config only vocab_size 60"),
                          ([f"--vocab_file={VOCAB}", "--max_seq_length=33"],
                           "max_seq_length 33 is above max_position_embeddings 32")):
        result = subprocess.run(
            [helpers.python(), os.path.join(ROOT, "export_encoder.py"), f"--bert_config_file={CONFIG}",
             f"--init_checkpoint={CHECKPOINT}", f"--export_dir={tmp_path / 'out'}"] + args,
            capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("export_encoder.py: error:")]
        assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
        assert not (tmp_path / "out").exists()


def test_a_directory_of_other_files_is_refused_and_left_alone(tmp_path):
    keep = tmp_path / "models" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    result = subprocess.run(
        [helpers.python(), os.path.join(ROOT, "export_encoder.py"), f"--bert_config_file={CONFIG}",
         f"--init_checkpoint={CHECKPOINT}", f"--vocab_file={VOCAB}", f"--export_dir={keep.parent}",
         f"--max_seq_length={SEQ_LENGTH}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"export_encoder.py: error: --export_dir={keep.parent} is a directory of other files")
    assert sorted(os.listdir(keep.parent)) == ["notes.txt"] and keep.read_text() == "mine"


def test_exported_models_hold_plain_ops(exported):
    # In-process inference runs its LayerNorms as XLA kernels; exports must not need XLA.
    for part in ("encoder", "preprocess"):
        with open(os.path.join(exported, part, "saved_model.pb"), "rb") as f:
            assert b"_XlaMustCompile" not in f.read()
