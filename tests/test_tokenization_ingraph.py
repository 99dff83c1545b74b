"""InGraphTokenizer: the ids of FullTokenizer, line for line, inside TensorFlow graphs.

The proof is a seeded corpus of more than 100,000 lines over every character class the
original distinguishes (plus every code point of Unicode once), tokenized by both.
"""

import functools
import os
import random
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

import tokenization
import tokenization_ingraph

from tests import helpers

SMALL_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un",
    "runn", "##ing", ",", "low", "lowest", "a", "##a", "hello", "!", "?", "\u535a",
]
BATCH_LINES = 4096


@pytest.fixture(scope="module")
def small_vocab_file(tmp_path_factory):
    return helpers.write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", SMALL_VOCAB)


@pytest.fixture(scope="module")
def real_vocab_file():
    return helpers.real_vocab_file()


@functools.lru_cache(maxsize=None)
def real_tokenizers(do_lower_case):
    """(FullTokenizer, InGraphTokenizer) over the real 30k vocab, built once per casing."""
    vocab_file = helpers.real_vocab_file()
    return (tokenization.FullTokenizer(vocab_file, do_lower_case=do_lower_case),
            tokenization_ingraph.InGraphTokenizer(vocab_file, do_lower_case=do_lower_case))


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request):
    return real_tokenizers(request.param)


def in_graph_ids(tokenizer, lines):
    """Ids of `lines` (str or bytes) through the in-graph tokenizer, batch by batch."""
    ids = []
    for start in range(0, len(lines), BATCH_LINES):
        batch = [line.encode("utf-8") if isinstance(line, str) else line
                 for line in lines[start:start + BATCH_LINES]]
        ids.extend(tokenizer.tokenize(tf.constant(batch, tf.string)).to_list())
    return ids


# --- the corpus -------------------------------------------------------------------

def _assigned(lo, hi):
    return [cp for cp in range(lo, hi + 1) if unicodedata.category(chr(cp)) != "Cn"]


# Every character class the original tells apart, one pool each.
_CLASS_POOLS = {
    "ascii": list(range(0x21, 0x7F)),
    "latin accented": _assigned(0xC0, 0x24F) + _assigned(0x1E00, 0x1EFF),
    "combining marks": _assigned(0x300, 0x36F) + _assigned(0x1AB0, 0x1AFF) + _assigned(0x1DC0, 0x1DFF)
    + _assigned(0x20D0, 0x20FF) + [0x3099, 0x309A, 0x0345],
    # Marks with a combining class that are not Mn: NFD reorders them among themselves.
    "non-Mn marks": [0x1715, 0x1734, 0x1B44, 0x1BAA, 0x302E, 0x302F, 0xA953, 0x111C0, 0x16FF0, 0x16FF1,
                     0x1D165, 0x1D166, 0x1D16D, 0x1D16E, 0x1D172, 0x1D15F, 0x1D160, 0x1D1BB, 0x1D1C0],
    "greek": _assigned(0x370, 0x3FF) + _assigned(0x1F00, 0x1FFF) + [0x3A3] * 40 + [0x3C2, 0x3C3],
    "case-ignorable": [0x27, 0x2E, 0x3A, 0xB7, 0x2019, 0x5E, 0x60, 0xA8, 0x2B0, 0x301, 0x345, 0x2024],
    "cyrillic armenian": _assigned(0x400, 0x58F),
    "hebrew arabic": _assigned(0x590, 0x6FF),
    "devanagari": _assigned(0x900, 0x97F),
    "thai": _assigned(0xE00, 0xE7F),
    "cjk": [lo + k for lo, hi in tokenization.CJK_RANGES for k in (0, 1, 2, (hi - lo) // 2, hi - lo)]
    + list(range(0x4E00, 0x4F00)) + [0x30000, 0x3134A, 0x2F00, 0x2E80],
    "compatibility ideographs": _assigned(0xF900, 0xFAFF) + _assigned(0x2F800, 0x2FA1F),
    "hangul kana": _assigned(0xAC00, 0xAD00) + _assigned(0x1100, 0x11FF) + _assigned(0x3040, 0x30FF),
    "full-width": _assigned(0xFF00, 0xFFEF),
    "letterlike symbols": _assigned(0x2100, 0x218F) + _assigned(0x20A0, 0x20C0) + [0xA9, 0xB0, 0x2026],
    "special casing": [0x130, 0xDF, 0x149, 0x1F0, 0xFB00, 0xFB03, 0x1E9E, 0x2126, 0x212A, 0x212B, 0x1E9B],
    "cased supplementary": _assigned(0x10400, 0x1044F) + _assigned(0x1E900, 0x1E94B) + _assigned(0x1D400, 0x1D44F),
    "control format": [0x0, 0x7, 0x7F, 0x85, 0xAD, 0x200B, 0x200C, 0x200D, 0x200E, 0x2060, 0xFEFF, 0x180E,
                       0x61C, 0x1D173, 0xE0001, 0xE0041, 0xFFF9, 0x9F],
    "emoji": _assigned(0x1F300, 0x1F64F) + [0xFE0F, 0x1F3FB, 0x20E3],
    "replacement private": [0xFFFD, 0xFFFE, 0xFFFF, 0xE000, 0xF8FF, 0xF0000, 0x10FFFD, 0xFDD0],
}
_WHITESPACE = [" ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e",
               "\x1f", "\x85", "\xa0", "\u1680", "\u2000", "\u2001", "\u2007", "\u200a", "\u2028",
               "\u2029", "\u202f", "\u205f", "\u3000", "\u180e"]
_SPECIALS = ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "##", "##ing"]
_INVALID_UTF8 = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc2", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x92",
                 b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\xfe", b"\xe0\x80\x80", b"\xf0\x80\x80\x80"]
_POOL_NAMES = sorted(_CLASS_POOLS)


def _random_code_point(rng):
    while True:
        cp = rng.randrange(0x110000)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def _random_word(rng, vocab_words):
    kind = rng.random()
    if kind < 0.35:  # a vocab word, cased in one of three ways
        word = rng.choice(vocab_words)
        return rng.choice((word, word.upper(), word.capitalize()))
    if kind < 0.43:  # random sub-words glued together (slow for the Python WordPiece: kept few)
        return "".join(rng.choice(vocab_words) for _ in range(rng.randint(2, 3)))
    if kind < 0.55:
        return rng.choice(_SPECIALS)
    if kind < 0.56:  # around max_input_chars_per_word
        return rng.choice("aAé\u03a3") * rng.choice((199, 200, 201, 260))
    if kind < 0.6:
        return "".join(_random_code_point(rng) for _ in range(rng.randint(1, 6)))
    pool = _CLASS_POOLS[rng.choice(_POOL_NAMES)]
    other = _CLASS_POOLS[rng.choice(_POOL_NAMES)]
    return "".join(chr(rng.choice(pool if rng.random() < 0.7 else other)) for _ in range(rng.randint(1, 8)))


def _random_line(rng, vocab_words):
    kind = rng.random()
    if kind < 0.01:
        return ""
    if kind < 0.02:
        return "".join(rng.choice(_WHITESPACE) for _ in range(rng.randint(1, 5)))
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append(_random_word(rng, vocab_words))
        parts.append(rng.choice(_WHITESPACE) if rng.random() < 0.8 else "")
    line = "".join(parts)
    if kind < 0.05:  # raw bytes with invalid UTF-8 spliced in
        data = bytearray(line.encode("utf-8"))
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            data[at:at] = rng.choice(_INVALID_UTF8)
        return bytes(data)
    return line


@functools.lru_cache(maxsize=None)
def random_corpus(seed, count, vocab):
    """`count` seeded lines (str, or bytes holding invalid UTF-8) over every class.

    `vocab` is a tuple of tokens: whole and partial words are drawn from it.
    """
    rng = random.Random(seed)
    vocab_words = [token[2:] if token.startswith("##") else token for token in vocab]
    return tuple(_random_line(rng, vocab_words) for _ in range(count))


def every_code_point_lines(per_line=64):
    """Lines that hold each code point of Unicode (surrogates aside) once, in order."""
    code_points = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    lines = []
    for start in range(0, len(code_points), per_line):
        chunk = code_points[start:start + per_line]
        # An upper-case letter, some spaces and a sigma give each code point neighbours.
        lines.append("A" + "".join(chunk[:32]) + " \u03a3" + "".join(chunk[32:]) + "\u03a3")
    return lines


def differing_lines(full, in_graph, lines):
    """(line, what differs) for each line whose ids or basic tokens differ."""
    expected_ids = [full.convert_tokens_to_ids(full.tokenize(line)) for line in lines]
    # Basic tokens are compared as well: with the real vocab a wrong character inside a
    # word often still gives [UNK] either way, the tokens show it.
    expected_words = [[word.encode("utf-8") for word in full.basic_tokenizer.tokenize(line)] for line in lines]
    ids = in_graph_ids(in_graph, lines)
    words = []
    for start in range(0, len(lines), BATCH_LINES):
        batch = [line.encode("utf-8") if isinstance(line, str) else line
                 for line in lines[start:start + BATCH_LINES]]
        words.extend(in_graph.basic_tokenize(tf.constant(batch, tf.string)).to_list())
    return [(line, want, got) for line, want, got in zip(lines, zip(expected_ids, expected_words), zip(ids, words))
            if want != got]


def test_random_corpus_matches_full_tokenizer(tokenizers):
    full, in_graph = tokenizers
    lines = random_corpus(12345, 100_000, tuple(full.vocab))
    assert sum(isinstance(line, bytes) for line in lines) > 2000
    assert not differing_lines(full, in_graph, lines)[:5]


def test_every_code_point_matches_full_tokenizer(tokenizers):
    full, in_graph = tokenizers
    assert not differing_lines(full, in_graph, every_code_point_lines())[:5]


# --- rule by rule, with exact expected output ----------------------------------------

def words_of(tokenizer, texts):
    return [[word.decode("utf-8") for word in line]
            for line in tokenizer.basic_tokenize(tf.constant(texts, tf.string)).to_list()]


def test_import_tokenization_leaves_tensorflow_unloaded():
    code = "import sys, tokenization; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_word_pieces_of_small_vocab(small_vocab_file):
    uncased = tokenization_ingraph.InGraphTokenizer(small_vocab_file, do_lower_case=True)
    cased = tokenization_ingraph.InGraphTokenizer(small_vocab_file, do_lower_case=False)
    texts = ["UNwant\u00e9d,running", "unwantedX", "", "hello!?", "\u535a\u535a", "lowest low  a"]
    assert uncased.tokenize(tf.constant(texts)).to_list() == [
        [9, 6, 7, 12, 10, 11], [1], [], [17, 18, 19], [20, 20], [14, 13, 15]]
    assert cased.tokenize(tf.constant(texts)).to_list() == [
        [1, 12, 10, 11], [1], [], [17, 18, 19], [20, 20], [14, 13, 15]]


@pytest.mark.parametrize("text, words", [
    (" \tHeLLo!how  \n Are yoU?  ", ["hello", "!", "how", "are", "you", "?"]),
    ("ah\u535a\u63a8zz", ["ah", "\u535a", "\u63a8", "zz"]),
    ("[CLS] x[MASK]", ["[", "cls", "]", "x", "[", "mask", "]"]),
    # Final sigma: after a cased letter, with no cased letter after it (case-ignorable
    # characters such as ' . and combining marks skipped), within one word.
    ("\u039f\u0394\u039f\u03a3 \u03a3", ["\u03bf\u03b4\u03bf\u03c2", "\u03c3"]),
    ("\u0391\u03a3. \u0391\u03a3'\u0392 \u0391\u03a3,\u0392", ["\u03b1\u03c2", ".", "\u03b1\u03c3", "'", "\u03b2",
                                                             "\u03b1\u03c2", ",", "\u03b2"]),
    ("\u0391\u0301\u03a3 \u0391\u03a3\u00ad\u0392 \u0391\u03a3\u535a", ["\u03b1\u03c2", "\u03b1\u03c3\u03b2",
                                                                         "\u03b1\u03c2", "\u535a"]),
    # Python's full lower-casing, then NFD without compatibility folding.
    ("\u0130stanbul \u00df \u2026 \uff21\uff22\uff01 \ufb03 \u212a", ["istanbul", "\u00df", "\u2026", "\uff41\uff42",
                                                                       "\uff01", "\ufb03", "k"]),
    ("\ud55c\uad6d", ["\u1112\u1161\u11ab\u1100\u116e\u11a8"]),  # Hangul becomes jamo
    # Control and format characters vanish without splitting; all whitespace splits.
    ("a\u200db a\x0bb a\x85b a\u180eb a\ufeffb a\x00b a\ufffdb", ["ab"] * 7),
    ("a\u2028b\u2029c\u3000d\xa0e\u1680f", ["a", "b", "c", "d", "e", "f"]),
    # NFD's canonical reordering of marks that survive accent stripping.
    ("a\u302e\u1715 \U0001d160", ["a\u1715\u302e", "\U0001d158\U0001d165\U0001d16e"]),
])
def test_basic_tokens_uncased(text, words):
    full, in_graph = real_tokenizers(True)
    assert words_of(in_graph, [text]) == [words]
    assert full.basic_tokenizer.tokenize(text) == words


def test_basic_tokens_cased_keep_case_and_accents():
    full, in_graph = real_tokenizers(False)
    text = " \tHeLLo!how \u039f\u0394\u039f\u03a3 Caf\u00e9 a\u200db\u2028c"
    words = ["HeLLo", "!", "how", "\u039f\u0394\u039f\u03a3", "Caf\u00e9", "ab", "c"]
    assert words_of(in_graph, [text]) == [words]
    assert full.basic_tokenizer.tokenize(text) == words


def test_invalid_utf8_bytes_vanish():
    _, in_graph = real_tokenizers(True)
    text = b"ab\xffcd \xe2\x82x \xf0\x9f\x92 \xed\xa0\x80y\xc0\xaf"
    assert text.decode("utf-8", "ignore").split() == ["abcd", "x", "y"]
    assert words_of(in_graph, [text]) == [["abcd", "x", "y"]]


def test_empty_batches_and_lines():
    _, in_graph = real_tokenizers(True)
    assert in_graph.tokenize(tf.constant([], tf.string)).to_list() == []
    assert in_graph.tokenize(tf.constant(["", " \u3000 ", "\x00\u200d"])).to_list() == [[], [], []]
    assert in_graph.tokenize(tf.constant(["", "a", ""])).to_list() == [[], [1037], []]


def test_words_longer_than_max_input_chars_per_word_become_unk(tmp_path):
    vocab_file = helpers.write_vocab(tmp_path / "vocab.txt", SMALL_VOCAB + ["\U0001f600", "##\U0001f600"])
    emoji, emoji_suffix = len(SMALL_VOCAB), len(SMALL_VOCAB) + 1
    in_graph = tokenization_ingraph.InGraphTokenizer(vocab_file)
    # 200 four-byte code points: 800 bytes, past tensorflow-text's default byte limit.
    texts = ["a" * 200, "a" * 201, "\U0001f600" * 200, "\U0001f600" * 201 + " a"]
    assert in_graph.tokenize(tf.constant(texts)).to_list() == [
        [15] + [16] * 199, [1], [emoji] + [emoji_suffix] * 199, [1, 15]]
    short = tokenization_ingraph.InGraphTokenizer(vocab_file, max_input_chars_per_word=5)
    assert short.tokenize(tf.constant(["aaaaa", "aaaaaa"])).to_list() == [[15, 16, 16, 16, 16], [1]]


def test_bad_arguments_raise_value_error(tmp_path, small_vocab_file):
    with pytest.raises(ValueError, match="cannot read vocab file"):
        tokenization_ingraph.InGraphTokenizer(str(tmp_path / "missing.txt"))
    no_cls = helpers.write_vocab(tmp_path / "no_cls.txt", [t for t in SMALL_VOCAB if t != "[CLS]"])
    with pytest.raises(ValueError, match=r"lacks \[CLS\]"):
        tokenization_ingraph.InGraphTokenizer(no_cls)
    with pytest.raises(ValueError, match="max_input_chars_per_word"):
        tokenization_ingraph.InGraphTokenizer(small_vocab_file, max_input_chars_per_word=0)
    with pytest.raises(ValueError, match="max_seq_length must be at least 3"):
        tokenization_ingraph.InGraphTokenizer(small_vocab_file).pack_inputs(tf.constant(["a"]), max_seq_length=2)


# --- in graphs, datasets and SavedModels --------------------------------------------

def test_tokenize_inside_tf_function_and_dataset_map():
    full, in_graph = real_tokenizers(True)
    lines = ["The Quick brown fox.", "\u00e9t\u00e9 \u535a\u58eb", ""]
    expected = [full.convert_tokens_to_ids(full.tokenize(line)) for line in lines]

    @tf.function
    def count_ids(text):
        ids = in_graph.tokenize(text)
        return ids, tf.reduce_sum(ids.row_lengths())

    ids, total = count_ids(tf.constant(lines))
    assert ids.to_list() == expected and int(total) == sum(map(len, expected))
    dataset = tf.data.Dataset.from_tensor_slices(lines).batch(2).map(in_graph.tokenize)
    assert [row for batch in dataset for row in batch.to_list()] == expected


class _ClassifierInputs(tf.Module):
    """What a serving export wraps: raw sentence pairs in, BERT inputs out."""

    def __init__(self, tokenizer, max_seq_length):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(self, text_a, text_b):
        return self.tokenizer.pack_inputs(text_a, text_b, self.max_seq_length)


def test_saved_model_round_trip(tmp_path):
    full, in_graph = real_tokenizers(True)
    lines = random_corpus(7, 300, tuple(full.vocab))
    batch = tf.constant([line.encode("utf-8") if isinstance(line, str) else line for line in lines])
    tf.saved_model.save(in_graph, str(tmp_path / "tokenizer"))
    loaded = tf.saved_model.load(str(tmp_path / "tokenizer"))
    assert loaded.tokenize(batch).to_list() == in_graph.tokenize(batch).to_list()
    assert loaded.basic_tokenize(batch).to_list() == in_graph.basic_tokenize(batch).to_list()

    module = _ClassifierInputs(in_graph, 32)
    tf.saved_model.save(module, str(tmp_path / "inputs"), signatures={"serving_default": module.serve})
    pairs = dict(text_a=batch[:150], text_b=batch[150:])
    expected = {name: value.numpy() for name, value in module.serve(**pairs).items()}
    signature = tf.saved_model.load(str(tmp_path / "inputs")).signatures["serving_default"]
    actual = {name: value.numpy() for name, value in signature(**pairs).items()}
    assert sorted(actual) == ["input_ids", "input_mask", "segment_ids"]
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])


def test_saved_model_runs_without_this_repository(tmp_path, small_vocab_file):
    """The export holds everything: a process with TensorFlow and tensorflow-text only."""
    in_graph = tokenization_ingraph.InGraphTokenizer(small_vocab_file)
    tf.saved_model.save(in_graph, str(tmp_path / "tokenizer"))
    code = ("import sys, tensorflow as tf, tensorflow_text\n"
            f"tokenizer = tf.saved_model.load({str(tmp_path / 'tokenizer')!r})\n"
            "ids = tokenizer.tokenize(tf.constant(['UNwant\\u00e9d,running']))\n"
            "assert ids.to_list() == [[9, 6, 7, 12, 10, 11]], ids\n"
            "assert 'tokenization' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path),
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


# --- classifier inputs ---------------------------------------------------------------

def reference_features(tokens_a, tokens_b, max_seq_length, cls_id=2, sep_id=3):
    """run_classifier's convert_single_example on token ids, written out as a loop."""
    tokens_a, tokens_b = list(tokens_a), list(tokens_b) if tokens_b else None
    if tokens_b:
        while len(tokens_a) + len(tokens_b) > max_seq_length - 3:
            (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()
    else:
        tokens_a = tokens_a[:max_seq_length - 2]
    input_ids = [cls_id] + tokens_a + [sep_id]
    segment_ids = [0] * len(input_ids)
    if tokens_b:
        input_ids += tokens_b + [sep_id]
        segment_ids += [1] * (len(tokens_b) + 1)
    input_mask = [1] * len(input_ids)
    padding = [0] * (max_seq_length - len(input_ids))
    return input_ids + padding, input_mask + padding, segment_ids + padding


def test_pack_inputs_pair(small_vocab_file):
    in_graph = tokenization_ingraph.InGraphTokenizer(small_vocab_file)
    features = in_graph.pack_inputs(tf.constant(["UNwant\u00e9d,running"]), tf.constant(["hello!"]), 12)
    assert features["input_ids"].dtype == tf.int32
    assert features["input_ids"].numpy().tolist() == [[2, 9, 6, 7, 12, 10, 11, 3, 17, 18, 3, 0]]
    assert features["input_mask"].numpy().tolist() == [[1] * 11 + [0]]
    assert features["segment_ids"].numpy().tolist() == [[0] * 8 + [1] * 3 + [0]]


@pytest.mark.parametrize("max_seq_length", [3, 4, 5, 6, 9, 12])
def test_pack_inputs_truncates_as_the_classifier(small_vocab_file, max_seq_length):
    in_graph = tokenization_ingraph.InGraphTokenizer(small_vocab_file)
    # "a" is one token; "\u200d" (dropped) and "" give no tokens, so B falls back to single.
    texts_a, texts_b = [], []
    for length_a in range(0, 9):
        for length_b in range(0, 9):
            texts_a.append(" ".join(["a"] * length_a))
            texts_b.append(" ".join(["hello"] * length_b) if length_b else ("\u200d" if length_a % 2 else ""))
    pair = in_graph.pack_inputs(tf.constant(texts_a), tf.constant(texts_b), max_seq_length)
    single = in_graph.pack_inputs(tf.constant(texts_a), None, max_seq_length)
    for i, (text_a, text_b) in enumerate(zip(texts_a, texts_b)):
        tokens_a = [15] * len(text_a.split())
        tokens_b = [17] * len(text_b.replace("\u200d", "").split())
        expected = reference_features(tokens_a, tokens_b, max_seq_length)
        actual = tuple(pair[name][i].numpy().tolist() for name in ("input_ids", "input_mask", "segment_ids"))
        assert actual == expected, (text_a, text_b)
        expected = reference_features(tokens_a, [], max_seq_length)
        actual = tuple(single[name][i].numpy().tolist() for name in ("input_ids", "input_mask", "segment_ids"))
        assert actual == expected, text_a


def test_classic_wordpiece_op_gives_the_same_ids():
    full, _ = real_tokenizers(True)
    classic = tokenization_ingraph.InGraphTokenizer(helpers.real_vocab_file(), fast_wordpiece=False)
    lines = random_corpus(12345, 100_000, tuple(full.vocab))[:8192]
    expected = [full.convert_tokens_to_ids(full.tokenize(line)) for line in lines]
    assert in_graph_ids(classic, lines) == expected
