"""tokenization.py: the original's tokens, rule by rule, with exact expected output."""

import random
import sys
import unicodedata

import pytest

import tokenization

from tests import helpers

# A small vocab in the original layout; pieces chosen for the cases below.
SMALL_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un",
    "runn", "##ing", ",", "low", "lowest", "a", "##a", "hello", "!", "?",
]


@pytest.fixture(scope="module")
def small_vocab_file(tmp_path_factory):
    return helpers.write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", SMALL_VOCAB)


# The original's per-character rules, which tokenization.char_tables() turns into tables
# (test_character_tables_follow_the_per_character_rules checks that they agree).
ASCII_PUNCTUATION = frozenset(chr(cp) for cp in range(33, 127) if not chr(cp).isalnum())


def is_whitespace(char):
    """Space, tab, newline, carriage return and Unicode space separators (Zs)."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char):
    """Control and format characters (Cc, Cf), except tab, newline and return."""
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def is_punctuation(char):
    """Unicode punctuation (P*) and every non-alphanumeric printable ASCII character."""
    return char in ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def is_chinese_char(cp):
    """Whether code point `cp` lies in one of the CJK ideograph ranges."""
    return any(lo <= cp <= hi for lo, hi in tokenization.CJK_RANGES)


def basic(text, do_lower_case=True):
    return tokenization.BasicTokenizer(do_lower_case=do_lower_case).tokenize(text)


# --- BasicTokenizer -----------------------------------------------------------------

def test_lower_casing_splits_punctuation_and_whitespace():
    assert basic(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]


def test_cased_keeps_case():
    assert basic(" \tHeLLo!how  \n Are yoU?  ", False) == ["HeLLo", "!", "how", "Are", "yoU", "?"]


@pytest.mark.parametrize("text, lower, cased", [
    ("H\u00e9llo", ["hello"], ["H\u00e9llo"]),
    ("na\u00efve caf\u00e9 r\u00e9sum\u00e9", ["naive", "cafe", "resume"],
     ["na\u00efve", "caf\u00e9", "r\u00e9sum\u00e9"]),
    # Decomposed input: e + combining acute (Mn) is stripped only when lower-casing.
    ("cafe\u0301", ["cafe"], ["cafe\u0301"]),
    # str.lower() does not case-fold: sharp s stays.
    ("Stra\u00dfe", ["stra\u00dfe"], ["Stra\u00dfe"]),
    # Dotted capital I lowers to i + U+0307 (Mn), which accent stripping removes.
    ("\u0130stanbul", ["istanbul"], ["\u0130stanbul"]),
    # Greek final sigma: Python's lower() is context-sensitive.
    ("\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3", ["\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c2"],
     ["\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3"]),
    ("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", ["\u043f\u0440\u0438\u0432\u0435\u0442", ",",
     "\u043c\u0438\u0440", "!"], ["\u041f\u0440\u0438\u0432\u0435\u0442", ",", "\u043c\u0438\u0440", "!"]),
    # Cyrillic short i decomposes into i + breve (Mn): the breve is lost when lower-casing.
    ("\u0439", ["\u0438"], ["\u0439"]),
    # Hangul syllables are not CJK; NFD (lower-casing only) decomposes them to jamo.
    ("\ud55c\uad6d", ["\u1112\u1161\u11ab\u1100\u116e\u11a8"], ["\ud55c\uad6d"]),
    # Kana are not CJK either; the voiced mark (dakuten) is Mn after NFD.
    ("\u30ac\u30ae", ["\u30ab\u30ad"], ["\u30ac\u30ae"]),
])
def test_accents_and_case(text, lower, cased):
    assert basic(text, True) == lower
    assert basic(text, False) == cased


@pytest.mark.parametrize("cp", [lo for lo, _ in tokenization.CJK_RANGES] + [hi for _, hi in tokenization.CJK_RANGES])
def test_every_cjk_range_is_split_into_characters(cp):
    char = chr(cp)
    assert basic(f"ab{char}cd", False) == ["ab", char, "cd"]


def test_cjk_neighbours_outside_the_ranges_stay_glued():
    # U+A000 (Yi), U+4DC0 (hexagram symbol) and U+2A6E0 lie just outside the ranges.
    for cp in (0xA000, 0x4DC0, 0x2E80, 0x3041):
        assert basic(f"ab{chr(cp)}cd", False) == [f"ab{chr(cp)}cd"]


def test_chinese_sentence_and_compatibility_ideograph():
    assert basic("ah\u535a\u63a8zz") == ["ah", "\u535a", "\u63a8", "zz"]
    # U+F900 is split as CJK, then NFD (lower-casing only) maps it to U+8C48.
    assert basic("\uf900", True) == ["\u8c48"]
    assert basic("\uf900", False) == ["\uf900"]


@pytest.mark.parametrize("text, expected", [
    ("a\u200db", ["ab"]),          # zero-width joiner (Cf)
    ("co\u00adop", ["coop"]),       # soft hyphen (Cf)
    ("\ufeffhello", ["hello"]),     # byte order mark (Cf)
    ("a\u180eb", ["ab"]),           # Mongolian vowel separator: Cf in this Unicode
    ("a\x00b", ["ab"]),             # NUL
    ("a\ufffdb", ["ab"]),           # replacement character
    ("a\x07b\x1bc", ["abc"]),       # bell, escape (Cc)
    ("a\x0bb\x0cc", ["abc"]),       # vertical tab, form feed: Cc, dropped, not spaces
    ("a\x1cb\x1fc", ["abc"]),       # information separators: Cc, dropped
    ("a\x85b", ["ab"]),             # next line (Cc)
    ("a\u2028b\u2029c", ["a", "b", "c"]),  # line/paragraph separators: kept, then split on
])
def test_control_and_format_characters(text, expected):
    assert basic(text, False) == expected
    assert basic(text, True) == expected


def test_every_kind_of_whitespace_separates():
    spaces = " \t\n\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
    text = "".join(f"w{i}{space}" for i, space in enumerate(spaces))
    assert basic(text) == [f"w{i}" for i in range(len(spaces))]


def test_emoji_are_not_punctuation_nor_control():
    # U+FE0F (variation selector) is Mn: stripped only when lower-casing.
    assert basic("I \u2764\ufe0f \U0001f917!", True) == ["i", "\u2764", "\U0001f917", "!"]
    assert basic("I \u2764\ufe0f \U0001f917!", False) == ["I", "\u2764\ufe0f", "\U0001f917", "!"]
    assert basic("\U0001f4a9x", False) == ["\U0001f4a9x"]


@pytest.mark.parametrize("char", [
    "_", "\u203f",          # Pc
    "-", "\u2014",          # Pd
    "(", "\u300c",          # Ps
    ")", "\u300d",          # Pe
    "\u00ab", "\u201c",     # Pi
    "\u00bb", "\u201d",     # Pf
    "!", "\u00bf", "\u3002", "\u3001", "\u055d",  # Po
])
def test_unicode_punctuation_classes_split(char):
    assert unicodedata.category(char).startswith("P")
    assert basic(f"ab{char}cd", False) == ["ab", char, "cd"]


@pytest.mark.parametrize("char", list("$+<=>^`|~"))
def test_ascii_symbols_count_as_punctuation(char):
    assert unicodedata.category(char).startswith("S")
    assert basic(f"ab{char}cd", False) == ["ab", char, "cd"]


@pytest.mark.parametrize("char", ["\u20ac", "\u00a9", "\u00b0", "\u00b1", "\u2192", "\u00ae"])
def test_non_ascii_symbols_stay_glued(char):
    assert unicodedata.category(char).startswith("S")
    assert basic(f"5{char}x", False) == [f"5{char}x"]


def test_every_printable_ascii_non_alphanumeric_is_punctuation():
    for cp in range(33, 127):
        char = chr(cp)
        assert is_punctuation(char) == (not char.isalnum()), char


def test_alphanumeric_characters_are_never_punctuation():
    # The split shortcut for alphanumeric words relies on this, for every code point.
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        if char.isalnum():
            assert not is_punctuation(char), hex(cp)


def test_empty_and_whitespace_only_text():
    assert basic("") == []
    assert basic("  \t\n\u3000 ") == []
    assert basic("\x00\u200d") == []


def test_invalid_utf8_bytes_vanish():
    assert basic(b"caf\xc3\xa9 \xff\xfeok") == ["cafe", "ok"]
    assert basic(b"ab\x80cd") == ["abcd"]


def test_special_tokens_in_text_are_split():
    assert basic("[CLS] hello [MASK]") == ["[", "cls", "]", "hello", "[", "mask", "]"]
    assert basic("[CLS]", False) == ["[", "CLS", "]"]


# --- WordpieceTokenizer and FullTokenizer -----------------------------------------

def test_wordpiece_greedy_longest_match(small_vocab_file):
    vocab = tokenization.load_vocab(small_vocab_file)
    wordpiece = tokenization.WordpieceTokenizer(vocab=vocab)
    assert wordpiece.tokenize("") == []
    assert wordpiece.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert wordpiece.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert wordpiece.tokenize("lowest") == ["lowest"]


def test_word_of_200_characters_is_split_and_201_is_unknown(small_vocab_file):
    vocab = tokenization.load_vocab(small_vocab_file)
    wordpiece = tokenization.WordpieceTokenizer(vocab=vocab)
    assert wordpiece.tokenize("a" * 200) == ["a"] + ["##a"] * 199
    assert wordpiece.tokenize("a" * 201) == ["[UNK]"]


def test_full_tokenizer(small_vocab_file):
    tokenizer = tokenization.FullTokenizer(small_vocab_file, do_lower_case=True)
    tokens = tokenizer.tokenize("UNwant\u00e9d,running")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [9, 6, 7, 12, 10, 11]
    assert tokenizer.convert_ids_to_tokens([9, 6, 7]) == ["un", "##want", "##ed"]
    # Same answer the second time (served from the per-word cache).
    assert tokenizer.tokenize("UNwant\u00e9d,running") == tokens


def test_unknown_token_lookup_raises_key_error(small_vocab_file):
    tokenizer = tokenization.FullTokenizer(small_vocab_file)
    with pytest.raises(KeyError):
        tokenizer.convert_tokens_to_ids(["nope"])


def test_real_uncased_vocab_ids():
    tokenizer = tokenization.FullTokenizer(helpers.real_vocab_file(), do_lower_case=True)
    text = "Hello, world! BERT's tokenizer handles 3.14% of $20,000."
    tokens = tokenizer.tokenize(text)
    assert tokens == ["hello", ",", "world", "!", "bert", "'", "s", "token", "##izer", "handles", "3", ".",
                      "14", "%", "of", "$", "20", ",", "000", "."]
    assert tokenizer.convert_tokens_to_ids(tokens) == [
        7592, 1010, 2088, 999, 14324, 1005, 1055, 19204, 17629, 16024, 1017, 1012, 2403, 1003, 1997, 1002,
        2322, 1010, 2199, 1012]
    assert tokenizer.tokenize("unaffable jim henson") == ["una", "##ffa", "##ble", "jim", "henson"]
    assert tokenizer.tokenize("I \u2764\ufe0f \U0001f917!") == ["i", "[UNK]", "[UNK]", "!"]
    assert tokenizer.tokenize("\ud55c \u30ac\u30ae") == ["\u1112", "##\u1161", "##\u11ab", "\u30ab", "##\u30ad"]
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 100, 101, 102, 103]


def naive_basic_tokenize(text, do_lower_case):
    """The original's rules, one character at a time (slow, obviously right)."""
    text = tokenization.convert_to_unicode(text)
    cleaned = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or is_control(char):
            continue
        cleaned.append(" " if is_whitespace(char) else char)
    spaced = []
    for char in cleaned:
        if is_chinese_char(ord(char)):
            spaced.extend([" ", char, " "])
        else:
            spaced.append(char)
    pieces = []
    for token in "".join(spaced).strip().split():
        if do_lower_case:
            token = "".join(c for c in unicodedata.normalize("NFD", token.lower())
                            if unicodedata.category(c) != "Mn")
        current = []
        for char in token:
            if is_punctuation(char):
                if current:
                    pieces.append("".join(current))
                    current = []
                pieces.append(char)
            else:
                current.append(char)
        if current:
            pieces.append("".join(current))
    return " ".join(pieces).split()


def test_fast_basic_tokenizer_equals_naive_rules_on_random_text():
    rng = random.Random(1234)
    lines = helpers.random_unicode_lines(rng, 3000)
    for do_lower_case in (True, False):
        tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
        for line in lines:
            assert tokenizer.tokenize(line) == naive_basic_tokenize(line, do_lower_case), repr(line)


# --- Utilities ----------------------------------------------------------------------

def test_convert_to_unicode():
    assert tokenization.convert_to_unicode("abc") == "abc"
    assert tokenization.convert_to_unicode(b"ab\xc3\xa9") == "ab\u00e9"
    assert tokenization.printable_text(b"x") == "x"
    with pytest.raises(ValueError, match="Unsupported string type"):
        tokenization.convert_to_unicode(3)


def test_whitespace_tokenize():
    assert tokenization.whitespace_tokenize("  a b\u2028c\n") == ["a", "b", "c"]
    assert tokenization.whitespace_tokenize(" \n") == []


def test_load_vocab_strips_and_numbers_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n  hello \t\nworld\r\n")
    vocab = tokenization.load_vocab(str(path))
    assert list(vocab.items()) == [("[PAD]", 0), ("hello", 1), ("world", 2)]


@pytest.mark.parametrize("content, message", [
    ("a\nb\na\n", "line 3: token 'a' already on line 1"),
    ("", "is empty"),
])
def test_bad_vocab_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        tokenization.load_vocab(str(path))


def test_missing_vocab_file_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read vocab file .*nothere.txt"):
        tokenization.load_vocab(str(tmp_path / "nothere.txt"))


def test_full_tokenizer_accepts_any_vocab_as_the_original(tmp_path):
    path = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "hello", "!"])
    assert tokenization.FullTokenizer(path).tokenize("Hello!") == ["hello", "!"]


def test_check_special_tokens_names_what_is_missing(tmp_path):
    path = helpers.write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[CLS]", "[SEP]", "hello"])
    vocab = tokenization.FullTokenizer(path).vocab
    with pytest.raises(ValueError, match=r"vocab file .*vocab.txt lacks \[UNK\], \[MASK\]: a BERT vocab needs"):
        tokenization.check_special_tokens(vocab, path)
    with pytest.raises(ValueError, match=r"lacks \[UNK\]: a BERT vocab needs \[UNK\], \[CLS\], \[SEP\]$"):
        tokenization.check_special_tokens(vocab, path, tokenization.TASK_TOKENS)
    tokenization.check_special_tokens(vocab, path, ("[CLS]", "[SEP]"))


def test_character_class_functions_follow_the_per_character_rules():
    for cp in list(range(0x30000)) + [0xE0001, 0xE0020, 0xF0000, sys.maxunicode]:
        char = chr(cp)
        assert tokenization._is_whitespace(char) == is_whitespace(char), hex(cp)
        assert tokenization._is_control(char) == is_control(char), hex(cp)
        assert tokenization._is_punctuation(char) == is_punctuation(char), hex(cp)


def test_basic_tokenizer_keeps_the_original_private_steps():
    tokenizer = tokenization.BasicTokenizer()
    assert tokenizer._clean_text("a\x00b\u200bc\td\ufffd") == "abc d"
    assert tokenizer._tokenize_chinese_chars("ah\u535a\u63a8zz") == "ah \u535a  \u63a8 zz"
    assert tokenizer._is_chinese_char(0x535A) and not tokenizer._is_chinese_char(0xAC00)
    assert tokenizer._run_strip_accents("h\u00e9llo") == "hello"
    assert tokenizer._run_split_on_punc("a,b!!") == ["a", ",", "b", "!", "!"]


@pytest.mark.parametrize("do_lower_case, checkpoint, ok", [
    (True, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt", True),
    (False, "/m/uncased_L-12_H-768_A-12/bert_model.ckpt", False),
    (True, "gs://b/cased_L-24_H-1024_A-16/bert_model.ckpt.index", False),
    (False, "gs://b/cased_L-24_H-1024_A-16/bert_model.ckpt.index", True),
    (True, "chinese_L-12_H-768_A-12/bert_model.ckpt", True),
    (True, "/m/multi_cased_L-12_H-768_A-12/bert_model.ckpt", False),
    (False, "/m/wwm_uncased_L-24_H-1024_A-16/bert_model.ckpt", True),   # never checked
    (True, "/m/my_model/model.ckpt-100", True),
    (False, "", True),
    (False, None, True),
])
def test_validate_case_matches_checkpoint(do_lower_case, checkpoint, ok):
    if ok:
        tokenization.validate_case_matches_checkpoint(do_lower_case, checkpoint)
    else:
        flag = "True" if not do_lower_case else "False"
        with pytest.raises(ValueError, match=f"pass --do_lower_case={flag}"):
            tokenization.validate_case_matches_checkpoint(do_lower_case, checkpoint)


def test_character_tables_follow_the_per_character_rules():
    tables = tokenization.char_tables()
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        expected = None if (cp in (0, 0xFFFD) or is_control(char)) else (
            " " if is_whitespace(char) else char)
        assert tables.clean_table.get(cp, char) == expected, hex(cp)
    punctuation = set(tables.punctuation_codepoints)
    assert all((cp in punctuation) == is_punctuation(chr(cp)) for cp in range(sys.maxunicode + 1))
