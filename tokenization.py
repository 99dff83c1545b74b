"""Text to WordPiece tokens, token for token as the original BERT tokenizer.

`FullTokenizer` = `BasicTokenizer` (cleaning, CJK spacing, optional lower-casing and
accent stripping, punctuation splitting) followed by `WordpieceTokenizer` (greedy
longest-match-first against the vocab). The rules are the original's, character
class for character class; the speed comes from doing them with `str.translate`,
precompiled regular expressions and a per-word cache instead of a Python loop per
character. `tokenization_ingraph.InGraphTokenizer` gives the same ids inside a TF graph.
"""

import collections
import re
import sys
import unicodedata

import cli

# Directory names of the released checkpoints, by the casing they were trained with.
_UNCASED_CHECKPOINTS = (
    "uncased_L-24_H-1024_A-16",
    "uncased_L-12_H-768_A-12",
    "multilingual_L-12_H-768_A-12",
    "chinese_L-12_H-768_A-12",
)
_CASED_CHECKPOINTS = (
    "cased_L-12_H-768_A-12",
    "cased_L-24_H-1024_A-16",
    "multi_cased_L-12_H-768_A-12",
)

# Code point ranges the original treats as Chinese characters (CJK Unified
# Ideographs and extensions, compatibility ideographs). Hangul and kana are not here.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# Printable ASCII that is neither a letter, a digit nor a space counts as punctuation,
# even where Unicode files it under symbols ($, +, <, =, >, ^, `, |, ~).
_ASCII_PUNCTUATION = frozenset(
    chr(cp) for cp in list(range(33, 48)) + list(range(58, 65)) + list(range(91, 97)) + list(range(123, 127))
)

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
# What fine-tuning and feature extraction need ([MASK] only matters for pretraining data).
TASK_TOKENS = ("[UNK]", "[CLS]", "[SEP]")

# ASCII characters that cleaning drops (control characters other than \t, \n, \r).
_ASCII_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def validate_case_matches_checkpoint(do_lower_case, init_checkpoint):
    """Raises ValueError if `do_lower_case` contradicts a released checkpoint's name.

    Only the released checkpoints whose directory name reveals their casing are
    checked (`.../uncased_L-12_H-768_A-12/bert_model.ckpt` and the like); any other
    path passes.
    """
    if not init_checkpoint:
        return
    match = re.match("^.*?([A-Za-z0-9_-]+)/bert_model.ckpt", init_checkpoint)
    if match is None:
        return
    model_name = match.group(1)
    if model_name in _UNCASED_CHECKPOINTS and not do_lower_case:
        raise ValueError(
            f"--do_lower_case=False but {init_checkpoint} is the uncased checkpoint "
            f"{model_name}: pass --do_lower_case=True")
    if model_name in _CASED_CHECKPOINTS and do_lower_case:
        raise ValueError(
            f"--do_lower_case=True but {init_checkpoint} is the cased checkpoint "
            f"{model_name}: pass --do_lower_case=False")


def convert_to_unicode(text):
    """Returns `text` as str; bytes are decoded as UTF-8, invalid bytes dropped."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text)}")


def printable_text(text):
    """Returns `text` in a form fit for print() and logging (str on Python 3)."""
    return convert_to_unicode(text)


def _read_text_lines(path):
    """Reads a UTF-8 text file (local or any tf.io.gfile scheme) as a list of lines."""
    with cli.open_input(path) as reader:  # TensorFlow only for remote paths (gs://, ...)
        data = reader.read()
    return data.decode("utf-8", "ignore").splitlines(keepends=True)


def load_vocab(vocab_file):
    """Loads a vocab file (one token per line) into an OrderedDict token -> id.

    The id of a token is its 0-based line number; surrounding whitespace is
    stripped. Raises ValueError, naming the file and line, for a missing or
    unreadable file, an empty vocab or a token listed twice (the original silently
    kept the last line, which leaves an id that no token maps to).
    """
    try:
        lines = _read_text_lines(vocab_file)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read vocab file {vocab_file}: {getattr(e, 'strerror', None) or e}") from None
    vocab = collections.OrderedDict()
    for index, line in enumerate(lines):
        token = line.strip()
        if token in vocab:
            raise ValueError(
                f"vocab file {vocab_file} line {index + 1}: token {token!r} already on line "
                f"{vocab[token] + 1}; each token must appear once")
        vocab[token] = index
    if not vocab:
        raise ValueError(f"vocab file {vocab_file} is empty")
    return vocab


def convert_by_vocab(vocab, items):
    """Maps each item through `vocab` (a KeyError for a missing one, as the original)."""
    return [vocab[item] for item in items]


def convert_tokens_to_ids(vocab, tokens):
    return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab, ids):
    return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text):
    """Strips `text` and splits it on any run of whitespace."""
    text = text.strip()
    if not text:
        return []
    return text.split()


def check_special_tokens(vocab, vocab_file, needed=SPECIAL_TOKENS):
    """Raises ValueError, naming the file, if `vocab` (token -> id) lacks a token of `needed`."""
    missing = [token for token in needed if token not in vocab]
    if missing:
        raise ValueError(
            f"vocab file {vocab_file} lacks {', '.join(missing)}: a BERT vocab needs "
            f"{', '.join(needed)}")


def _is_whitespace(char):
    """True for the characters the tokenizer splits on: space, tab, newline, CR and Unicode Zs."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char):
    """True for the control and format characters that cleaning drops (tab, newline, CR are kept)."""
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
    """True for Unicode punctuation and for every non-alphanumeric printable ASCII symbol."""
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


class FullTokenizer:
    """End-to-end tokenization: BasicTokenizer, then WordPiece on each piece.

    Example:
        >>> tokenizer = FullTokenizer("vocab.txt", do_lower_case=True)
        >>> tokenizer.tokenize("UNwant\\u00E9d,running")
        ['un', '##want', '##ed', ',', 'runn', '##ing']
    """

    _CACHE_LIMIT = 1 << 20  # distinct words remembered before the cache starts over

    def __init__(self, vocab_file, do_lower_case=True):
        # Any vocab is accepted, as the original does; the scripts that need [CLS], [SEP] or
        # [MASK] call check_special_tokens themselves.
        self.vocab_file = vocab_file
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
        self._cache = {}
        self._id_cache = {}

    def tokenize(self, text):
        """Returns the WordPiece tokens of `text` (str or UTF-8 bytes)."""
        cache = self._cache
        if len(cache) > self._CACHE_LIMIT:
            cache.clear()
        split_tokens = []
        for word in self.basic_tokenizer._clean_and_split(text):
            pieces = cache.get(word)
            if pieces is None:
                pieces = cache[word] = self._word_pieces(word)
            split_tokens.extend(pieces)
        return split_tokens

    def tokenize_to_ids(self, text):
        """`convert_tokens_to_ids(tokenize(text))`, with the ids of each word cached."""
        cache = self._id_cache
        if len(cache) > self._CACHE_LIMIT:
            cache.clear()
        ids = []
        vocab = self.vocab
        for word in self.basic_tokenizer._clean_and_split(text):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = cache[word] = tuple(vocab[piece] for piece in self._word_pieces(word))
            ids.extend(word_ids)
        return ids

    def _word_pieces(self, word):
        """WordPieces of one whitespace-free word, as a tuple (cached by the callers).

        Tuples of strings or ints leave the garbage collector's tracking after one pass,
        so a large cache costs no repeated collection time.
        """
        pieces = []
        for token in self.basic_tokenizer._tokenize_word(word):
            pieces.extend(self.wordpiece_tokenizer._tokenize_token(token))
        return tuple(pieces)

    def convert_tokens_to_ids(self, tokens):
        return convert_by_vocab(self.vocab, tokens)

    def convert_ids_to_tokens(self, ids):
        return convert_by_vocab(self.inv_vocab, ids)


class _CharTables:
    """Character classes of the original tokenizer, computed once per process.

    Built from this Python's `unicodedata`, so the rules follow its Unicode version
    exactly as the original's per-character checks do.
    """

    def __init__(self):
        # One pass over the code points, one category lookup each; the rules are the original's
        # per-character checks (tests/test_tokenization.py holds them and checks they agree).
        by_category = collections.defaultdict(list)
        category = unicodedata.category
        for cp in range(sys.maxunicode + 1):
            by_category[category(chr(cp))].append(cp)
        kept_controls = {ord(c) for c in "\t\n\r"}
        dropped = sorted({0, 0xFFFD} | {cp for cp in by_category["Cc"] + by_category["Cf"]
                                        if cp not in kept_controls})
        spaces = sorted(kept_controls | {ord(" ")} | set(by_category["Zs"]))
        nonspacing = by_category["Mn"]
        punctuation = sorted({cp for cat, cps in by_category.items() if cat.startswith("P") for cp in cps}
                             | {ord(c) for c in _ASCII_PUNCTUATION})
        # Cleaning: drop NUL, U+FFFD and control characters, turn whitespace into " ".
        self.clean_table = dict.fromkeys(dropped)
        self.clean_table.update(dict.fromkeys(spaces, " "))
        self.strip_accents_table = dict.fromkeys(nonspacing)
        cjk_class = "".join(f"{_re_char(lo)}-{_re_char(hi)}" for lo, hi in CJK_RANGES)
        self.cjk_re = re.compile(f"([{cjk_class}])")
        punct_class = _re_class(punctuation)
        self.punct_split_re = re.compile(f"[{punct_class}]|[^{punct_class}]+")
        self.punctuation_codepoints = punctuation


_TABLES = None


def char_tables():
    global _TABLES
    if _TABLES is None:
        _TABLES = _CharTables()
    return _TABLES


def _re_char(cp):
    return f"\\U{cp:08x}"


def _re_class(codepoints):
    """A regex character-class body matching exactly `codepoints` (sorted ints)."""
    ranges = []
    for cp in codepoints:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(_re_char(lo) if lo == hi else f"{_re_char(lo)}-{_re_char(hi)}" for lo, hi in ranges)


class BasicTokenizer:
    """Cleaning, CJK spacing, optional lower-casing/accent stripping, punctuation split."""

    _CACHE_LIMIT = 1 << 20

    def __init__(self, do_lower_case=True):
        self.do_lower_case = do_lower_case
        self._tables = char_tables()
        self._cache = {}

    def tokenize(self, text):
        """Returns the basic tokens of `text` (str or UTF-8 bytes)."""
        tokens = []
        for word in self._clean_and_split(text):
            tokens.extend(self._tokenize_word(word))
        return tokens

    def _clean_and_split(self, text):
        """Cleans `text`, pads CJK characters with spaces and splits on whitespace."""
        text = convert_to_unicode(text)
        # ASCII without control characters: cleaning and CJK spacing change nothing.
        if text.isascii() and not _ASCII_CONTROL_RE.search(text):
            return text.split()
        return self._tokenize_chinese_chars(self._clean_text(text)).split()

    def _tokenize_word(self, word):
        """Basic tokens of one whitespace-free word (cached: words repeat a lot)."""
        tokens = self._cache.get(word)
        if tokens is None:
            if len(self._cache) > self._CACHE_LIMIT:
                self._cache.clear()
            token = word
            if self.do_lower_case:
                token = self._run_strip_accents(token.lower())
            tokens = self._run_split_on_punc(token)
            # Joining and re-splitting on whitespace, as the original does, matters only
            # if lower-casing or NFD produced whitespace; keep it for exactness.
            if len(tokens) == 1 and not tokens[0].isalnum():
                tokens = tokens[0].split()
            elif len(tokens) > 1:
                tokens = " ".join(tokens).split()
            tokens = tuple(tokens)
            self._cache[word] = tokens
        return tokens

    def _tokenize_chinese_chars(self, text):
        """Surrounds every CJK ideograph in `text` with spaces."""
        return self._tables.cjk_re.sub(r" \1 ", text)

    def _is_chinese_char(self, cp):
        """True if the code point `cp` (an int) lies in one of the CJK_RANGES."""
        return any(lo <= cp <= hi for lo, hi in CJK_RANGES)

    def _clean_text(self, text):
        """Drops NUL, U+FFFD and control characters; turns every whitespace character into " "."""
        return text.translate(self._tables.clean_table)

    def _run_strip_accents(self, text):
        """NFD-normalizes `text` and drops nonspacing marks (category Mn)."""
        if text.isascii():
            return text
        return unicodedata.normalize("NFD", text).translate(self._tables.strip_accents_table)

    def _run_split_on_punc(self, text):
        """Splits `text` so that every punctuation character is a token of its own."""
        if text.isalnum():  # letters and digits only: nothing to split
            return [text]
        return self._tables.punct_split_re.findall(text)


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece tokenization against a vocab."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # Every prefix of every vocab entry: the longest-match search can walk forward and
        # stop as soon as the text leaves this set, instead of trying every end backwards.
        self._prefixes = {token[:end] for token in vocab for end in range(1, len(token) + 1)}

    def tokenize(self, text):
        """Tokenizes already basic-tokenized text into word pieces.

        Example: "unaffable" -> ["un", "##aff", "##able"]. A word longer than
        `max_input_chars_per_word` characters, or one that cannot be covered by
        vocab pieces, becomes a single `unk_token`.
        """
        output_tokens = []
        for token in whitespace_tokenize(convert_to_unicode(text)):
            output_tokens.extend(self._tokenize_token(token))
        return output_tokens

    def _tokenize_token(self, token):
        n = len(token)
        if n > self.max_input_chars_per_word:
            return [self.unk_token]
        vocab = self.vocab
        if token in vocab:
            return [token]
        prefixes = self._prefixes
        pieces = []
        start = 0
        while start < n:
            # Greedy longest match: the longest vocab entry among token[start:end] for
            # growing `end` ("##"-prefixed after the first piece). Any longer match would
            # have every shorter candidate as a prefix, so the walk may stop early.
            marker = "##" if start > 0 else ""
            piece, piece_end = None, start
            for end in range(start + 1, n + 1):
                candidate = marker + token[start:end]
                if candidate not in prefixes:
                    break
                if candidate in vocab:
                    piece, piece_end = candidate, end
            if piece is None:
                return [self.unk_token]
            pieces.append(piece)
            start = piece_end
        return pieces
