"""InGraphTokenizer: the ids of FullTokenizer, line for line, inside TensorFlow graphs.

The proof is a seeded corpus of more than 100,000 lines over every character class the
original distinguishes (plus every code point of Unicode once), tokenized by both.
"""

import os
import random
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

import tokenization
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


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizers(request, real_vocab_file):
    """(FullTokenizer, InGraphTokenizer) over the real 30k vocab, for one casing."""
    return (tokenization.FullTokenizer(real_vocab_file, do_lower_case=request.param),
            tokenization.InGraphTokenizer(real_vocab_file, do_lower_case=request.param))


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
    if kind < 0.5:  # random sub-words glued together
        return "".join(rng.choice(vocab_words) for _ in range(rng.randint(2, 4)))
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


def random_corpus(seed, count, vocab):
    """`count` seeded lines (str, or bytes holding invalid UTF-8) over every class."""
    rng = random.Random(seed)
    vocab_words = [token[2:] if token.startswith("##") else token for token in vocab]
    return [_random_line(rng, vocab_words) for _ in range(count)]


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
    lines = random_corpus(12345, 100_000, list(full.vocab))
    assert sum(isinstance(line, bytes) for line in lines) > 2000
    assert not differing_lines(full, in_graph, lines)[:5]


def test_every_code_point_matches_full_tokenizer(tokenizers):
    full, in_graph = tokenizers
    assert not differing_lines(full, in_graph, every_code_point_lines())[:5]
