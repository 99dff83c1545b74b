"""FullTokenizer as TensorFlow ops: `InGraphTokenizer` gives the same ids inside graphs.

For SavedModels that take raw text (run_classifier.py --export_dir, export_encoder.py).
The original's character rules become per-code-point tables (`_InGraphTables`, computed
from this Python's `unicodedata`, as the original's rules are) applied with core TensorFlow
ops; only WordPiece comes from tensorflow-text. tokenization.py stays free of TensorFlow.
"""

import sys
import unicodedata

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from tokenization import CJK_RANGES, char_tables, check_special_tokens, load_vocab

# Bits of the per-code-point table of the in-graph tokenizer (one int32 per code point).
_DROP = 1 << 0              # removed by cleaning (NUL, U+FFFD, Cc/Cf but \t\n\r)
_SPACE = 1 << 1             # a str.split() separator: \t\n\r, Zs, U+2028, U+2029, ...
_CJK = 1 << 2               # a CJK ideograph: a word of its own
_PUNCTUATION = 1 << 3       # a token of its own
_CASE_IGNORABLE = 1 << 4    # skipped by str.lower()'s final-sigma context rule
_CASED = 1 << 5             # a cased letter for that rule (and not case-ignorable)
_REORDER = 1 << 6           # its lower-cased NFD holds a non-Mn mark with ccc > 0
_LOWER_CHANGES = 1 << 7     # lower() + NFD + Mn removal changes this code point...
_NOT_ONE_FOR_ONE = 1 << 8   # ... into 0, 2 or 3 code points
# The word-splitting class once lower-cased (for a one-for-one replacement, that of
# the replacement): _SPACE, _CJK and _PUNCTUATION moved up by _AFTER_SHIFT bits.
_AFTER_SHIFT = 8
_SPACE_AFTER = _SPACE << _AFTER_SHIFT
_CJK_AFTER = _CJK << _AFTER_SHIFT
_PUNCTUATION_AFTER = _PUNCTUATION << _AFTER_SHIFT
_MAPPING_LENGTH_SHIFT = 12  # bits 12-13: length of the replacement (0 to 3 code points)
_MAPPING_OFFSET_SHIFT = 14  # bits 14-30: where it starts in the replacement array

_CAPITAL_SIGMA, _FINAL_SIGMA = 0x3A3, 0x3C2


class _InGraphTables:
    """The original's character rules as arrays, for one casing.

    `code_points[cp]` (int32 [0x110000]) holds the flag bits above and, in the
    uncased tables, where the replacement of `cp` under `lower()` + NFD + removal of
    Mn marks lies in `replacements` (int32 [R]). `full_mappings` (cp -> tuple of code
    points, before Mn removal) and `combining` (cp -> canonical combining class * 2
    + is_Mn) serve the rare batches that need NFD's canonical reordering.
    """

    def __init__(self, do_lower_case):
        tables = char_tables()
        size = sys.maxunicode + 1
        code_points = np.zeros(size, np.int64)
        for cp, replacement in tables.clean_table.items():
            if replacement is None:
                code_points[cp] |= _DROP
        # Python's str.split() also splits on U+2028/U+2029, which cleaning keeps.
        spaces = [cp for cp in range(size) if chr(cp).isspace()]
        code_points[spaces] |= _SPACE
        for lo, hi in CJK_RANGES:
            code_points[lo:hi + 1] |= _CJK
        code_points[tables.punctuation_codepoints] |= _PUNCTUATION
        code_points |= (code_points & (_SPACE | _CJK | _PUNCTUATION)) << _AFTER_SHIFT
        self.replacements = np.zeros(0, np.int32)
        self.full_mappings = {}
        self.combining = {}
        if do_lower_case:
            self._add_lower_casing(code_points, tables)
        self.code_points = code_points.astype(np.int32)

    def _add_lower_casing(self, code_points, tables):
        category = unicodedata.category
        normalize = unicodedata.normalize
        combining = unicodedata.combining
        non_mn_marks = set()
        for cp in range(sys.maxunicode + 1):
            char = chr(cp)
            ccc = combining(char)
            is_mn = category(char) == "Mn"
            if ccc or is_mn:
                self.combining[cp] = ccc * 2 + int(is_mn)
            if ccc and not is_mn:
                non_mn_marks.add(cp)
        replacements = []
        sigma = "\u03a3"
        for cp in range(sys.maxunicode + 1):
            char = chr(cp)
            # str.lower() maps U+03A3 to final sigma when a cased letter comes before it
            # (case-ignorable characters skipped) and none after. Ask lower() itself
            # which side of that rule each character falls on.
            if (char + sigma).lower()[-1] == "\u03c2":
                code_points[cp] |= _CASED
            elif ("A" + char + sigma).lower()[-1] == "\u03c2":
                code_points[cp] |= _CASE_IGNORABLE
            decomposed = normalize("NFD", char.lower())
            if decomposed != char:
                self.full_mappings[cp] = tuple(ord(c) for c in decomposed)
                if any(ord(c) in non_mn_marks for c in decomposed):
                    code_points[cp] |= _REORDER
            stripped = decomposed.translate(tables.strip_accents_table)
            if stripped == char:
                continue
            code_points[cp] |= (_LOWER_CHANGES | len(stripped) << _MAPPING_LENGTH_SHIFT
                                | len(replacements) << _MAPPING_OFFSET_SHIFT)
            if len(stripped) == 1:
                # CJK ideographs stay words of their own whatever they become.
                code_points[cp] &= ~(_SPACE_AFTER | _PUNCTUATION_AFTER)
                code_points[cp] |= (code_points[ord(stripped)] & (_SPACE | _PUNCTUATION)) << _AFTER_SHIFT
            else:
                code_points[cp] |= _NOT_ONE_FOR_ONE
            replacements.extend(ord(c) for c in stripped)
        self.replacements = np.array(replacements, np.int32)
        # The sigma rule in the graph scans whole lines: it relies on separators and
        # CJK ideographs (word boundaries in the original) stopping the scan.
        boundaries = code_points & (_SPACE | _CJK) != 0
        if np.any(code_points[boundaries] & (_CASED | _CASE_IGNORABLE)):
            raise ValueError("this Python's Unicode data has a cased or case-ignorable separator or CJK character")
        if len(replacements) >= 1 << (31 - _MAPPING_OFFSET_SHIFT):
            raise ValueError("too many lower-casing replacements for the in-graph table")


_IN_GRAPH_TABLES = {}


def _in_graph_tables(do_lower_case):
    """`_InGraphTables` for `do_lower_case`, built once per process (a pass over every code point)."""
    if do_lower_case not in _IN_GRAPH_TABLES:
        _IN_GRAPH_TABLES[do_lower_case] = _InGraphTables(do_lower_case)
    return _IN_GRAPH_TABLES[do_lower_case]


# Shape letters: B lines, C code points of the batch, W words, P word pieces. Code points
# travel as one flat int32 vector for the whole batch; the lines are remembered by
# `line_starts` (int64 [B]), each line's first position in it.

def _has_bits(flags, bits):
    return tf.bitwise.bitwise_and(flags, bits) != 0

def _shifted_right(values, first):
    """values[i - 1] at position i and `first` at position 0 (1-D, any length)."""
    return tf.concat([tf.fill([1], first), values], axis=0)[:-1]

def _marks_at(positions, size):
    """bool [size], True at `positions` (int64 [N]); positions >= size are ignored."""
    size = tf.cast(size, tf.int32)
    return tf.math.bincount(tf.cast(positions, tf.int32), minlength=size, maxlength=size) > 0

def _keep(kept, line_starts, *tensors):
    """`tensors` where `kept` (bool [C]), and the line starts moved to match."""
    kept_before = tf.cumsum(tf.cast(kept, tf.int64))
    line_starts = tf.gather(tf.concat([[0], kept_before], axis=0), line_starts)
    return (line_starts,) + tuple(tf.boolean_mask(tensor, kept) for tensor in tensors)

def _expand(lengths, line_starts):
    """Positions of a sequence where input i becomes lengths[i] (int32 [C]) outputs.

    Returns, for each output, the index of its input and its rank among that
    input's outputs (int32 [M] each), and the line starts in the output.
    """
    ends = tf.cumsum(lengths)
    starts = ends - lengths
    size = tf.reduce_sum(lengths)
    # Inputs that start at or before each output, less one; an empty input shares
    # its start with the next one, so the count skips it.
    source = tf.cumsum(tf.math.bincount(starts, minlength=size, maxlength=size)) - 1
    within = tf.range(size) - tf.gather(starts, source)
    line_starts = tf.gather(tf.concat([[0], tf.cast(ends, tf.int64)], axis=0), line_starts)
    return source, within, line_starts

def _sorted_lookup(keys, values, queries, default):
    """values[j] where keys[j] == query (keys sorted int32 [K]), else `default`."""
    index = tf.minimum(tf.searchsorted(keys, queries), tf.size(keys) - 1)
    found = tf.gather(keys, index) == queries
    return tf.where(found, tf.gather(values, index), default), found

class InGraphTokenizer(tf.Module):
    """FullTokenizer as TensorFlow ops: the same ids, in tf.function and SavedModels.

    `tokenize(text)` maps a batch of lines (tf.string [B]) to the ids of
    `FullTokenizer.convert_tokens_to_ids(FullTokenizer.tokenize(line))` for each:
    a tf.RaggedTensor int64 [B, (T)]. `basic_tokenize(text)` gives the words
    BasicTokenizer makes (tf.string [B, (W)]); `pack_inputs(text_a, text_b,
    max_seq_length)` the classifier's `[CLS] A [SEP] (B [SEP])` inputs.

    The original's rules run on code points, with core TensorFlow ops and tables
    computed from this Python's `unicodedata` (the original's own source of
    truth): invalid UTF-8 bytes vanish as in `bytes.decode("utf-8", "ignore")`;
    control characters go; whitespace (with U+2028/U+2029, where str.split()
    also splits) separates words; each CJK ideograph is a word; with
    `do_lower_case` each code point becomes `_run_strip_accents(chr(cp).lower())`,
    str.lower()'s final-sigma rule (U+03A3 -> U+03C2 at the end of a word) is a
    context scan, and NFD's canonical reordering of combining marks, where a
    batch needs it, a stable sort of each run of marks; each punctuation code
    point of the result is a token; words of more than `max_input_chars_per_word`
    code points become [UNK]. Only WordPiece comes from tensorflow-text:
    `FastWordpieceTokenizer` (op FastWordpieceTokenizeWithOffsets) with its
    pre-tokenization off, or with `fast_wordpiece=False` the older and slower
    `WordpieceTokenizer` (op WordpieceTokenizeWithOffsets) for TF Serving builds
    that lack the fast op. tensorflow-text's normalizers are not used: they
    case-fold with NFKC, under another Unicode version.

    No line differs from FullTokenizer (tests/test_tokenization_ingraph.py checks
    100,000 random lines and every code point, both casings). The tables follow
    the Unicode version of the Python that built them, so a SavedModel keeps the
    rules of the Python that exported it, as the original follows the Python
    that runs it.

    Example:
        >>> tokenizer = InGraphTokenizer("vocab.txt", do_lower_case=True)
        >>> tokenizer.basic_tokenize(tf.constant(["UNwant\\u00E9d,running"])).to_list()
        [[b'unwanted', b',', b'running']]
        >>> ids = tokenizer.tokenize(tf.constant(["UNwant\\u00E9d,running"]))  # [1, (6)]
    """

    def __init__(self, vocab_file, do_lower_case=True, max_input_chars_per_word=200, fast_wordpiece=True,
                 name=None):
        super().__init__(name=name)
        if max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be at least 1, got {max_input_chars_per_word}")
        vocab = load_vocab(vocab_file)
        check_special_tokens(vocab, vocab_file)
        self.do_lower_case = bool(do_lower_case)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self.vocab_size = len(vocab)
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab["[UNK]"]

        tables = _in_graph_tables(self.do_lower_case)
        self._code_points = tf.constant(tables.code_points)    # [0x110000] flag bits
        self._replacements = tf.constant(tables.replacements)  # [R] code points
        # Sorted (code point, value) pairs for the batches that need canonical
        # reordering: the lower-cased NFD before Mn removal, and combining classes.
        full_keys = sorted(tables.full_mappings) or [-1]
        full_values, full_spans = [], []
        for cp in full_keys:
            mapped = tables.full_mappings.get(cp, ())
            full_spans.append(len(full_values) << 3 | len(mapped))
            full_values.extend(mapped)
        self._full_keys = tf.constant(full_keys, tf.int32)
        self._full_spans = tf.constant(full_spans, tf.int32)
        self._full_values = tf.constant(full_values or [0], tf.int32)
        combining_keys = sorted(tables.combining) or [-1]
        self._combining_keys = tf.constant(combining_keys, tf.int32)
        self._combining_values = tf.constant([tables.combining.get(cp, 0) for cp in combining_keys], tf.int32)

        # A blank vocab line is a token no word can match; tensorflow-text rejects
        # empty tokens, so it gets a name holding a space (no word does).
        tokens = [token or f" [blank line {index}]" for index, token in enumerate(vocab)]
        # Longer words become "[UNK]" before WordPiece, so this byte limit (4 bytes
        # per code point at most) never cuts in first.
        max_bytes_per_word = 4 * self.max_input_chars_per_word + 8
        if fast_wordpiece:
            self._wordpiece = tf_text.FastWordpieceTokenizer(
                vocab=tokens, suffix_indicator="##", max_bytes_per_word=max_bytes_per_word,
                token_out_type=tf.int64, unknown_token="[UNK]", no_pretokenization=True,
                support_detokenization=False)
        else:
            # The older op (WordpieceTokenizeWithOffsets, in every TF Serving build that
            # has tensorflow-text ops), same ids, much slower than the fast one.
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tokens, tf.range(len(tokens), dtype=tf.int64)), -1)
            self._wordpiece = tf_text.WordpieceTokenizer(
                table, suffix_indicator="##", max_bytes_per_word=max_bytes_per_word,
                token_out_type=tf.int64, unknown_token="[UNK]", split_unknown_characters=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def tokenize(self, text):
        """WordPiece ids of each line of `text` (tf.string [B]): int64 RaggedTensor [B, (T)]."""
        words, words_per_line = self._basic_tokens(text)  # [W, (C)], [B]
        # Words repeat a lot: WordPiece runs once per distinct word of the batch.
        distinct, index = tf.unique(tf.strings.unicode_encode(words, "UTF-8"))  # [U], [W]
        too_long = tf.strings.length(distinct, unit="UTF8_CHAR") > self.max_input_chars_per_word
        # "[UNK]" is in the vocab, so WordPiece turns it into exactly the [UNK] id.
        pieces = self._wordpiece.tokenize(tf.where(too_long, "[UNK]", distinct))  # [U, (P)] int64
        pieces = tf.gather(pieces, index)  # [W, (P)]
        return tf.RaggedTensor.from_row_lengths(pieces, words_per_line, validate=False).merge_dims(1, 2)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def basic_tokenize(self, text):
        """BasicTokenizer's words of each line of `text` (tf.string [B]): tf.string [B, (W)]."""
        words, words_per_line = self._basic_tokens(text)
        return tf.RaggedTensor.from_row_lengths(
            tf.strings.unicode_encode(words, "UTF-8"), words_per_line, validate=False)

    def pack_inputs(self, text_a, text_b=None, max_seq_length=128):
        """Classifier inputs for one or two segments, as `convert_single_example`.

        `[CLS] A [SEP]`, or `[CLS] A [SEP] B [SEP]` where B has tokens. A pair too
        long for `max_seq_length` loses the last token of the longer segment until
        it fits (B's on a tie); a single segment keeps its first max_seq_length - 2
        tokens. Works eagerly and inside tf.function (max_seq_length is static).

        Args:
            text_a: tf.string [B].
            text_b: tf.string [B], or None.
            max_seq_length: Python int S, at least 3.

        Returns:
            dict of int32 [B, S]: `input_ids` (0-padded), `input_mask` (1 on real
            tokens), `segment_ids` (0 for [CLS] A [SEP], 1 for B [SEP]).
        """
        if max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3, got {max_seq_length}")
        segments = [self.tokenize(tf.convert_to_tensor(text_a, tf.string))]  # [B, (A)]
        if text_b is not None:
            segments.append(self.tokenize(tf.convert_to_tensor(text_b, tf.string)))  # [B, (B)]
        input_ids, input_mask, segment_ids = pack_segments(segments, max_seq_length, self.cls_id, self.sep_id)
        return {"input_ids": tf.cast(input_ids, tf.int32), "input_mask": tf.cast(input_mask, tf.int32),
                "segment_ids": tf.cast(segment_ids, tf.int32)}

    # --- the steps of BasicTokenizer ---------------------------------------------

    def _basic_tokens(self, text):
        """Code points of each basic token, [W, (C)] int32, and tokens per line, int64 [B]."""
        code_points = tf.strings.unicode_decode(text, "UTF-8", errors="ignore")  # [B, (C)]
        values = code_points.values                   # [C] int32
        line_starts = code_points.row_splits[:-1]     # [B] int64
        flags = tf.gather(self._code_points, values)  # [C]

        def any_flag(bits):
            return tf.reduce_any(_has_bits(flags, bits))

        # Most batches hold no control character and no code point that lower-casing
        # turns into 0, 2 or 3: those skip the masks and the expansion.
        line_starts, values, flags = tf.cond(
            any_flag(_DROP),
            lambda: _keep(~_has_bits(flags, _DROP), line_starts, values, flags),
            lambda: (line_starts, values, flags))
        if self.do_lower_case:
            values, flags = self._apply_final_sigma(values, flags, line_starts)

            def lower_case_one_for_one():
                offsets = tf.bitwise.right_shift(flags, _MAPPING_OFFSET_SHIFT)
                lowered = tf.where(_has_bits(flags, _LOWER_CHANGES), tf.gather(self._replacements, offsets), values)
                return lowered, flags, line_starts

            def lower_case_expanding():
                lowered, source, new_line_starts = tf.cond(
                    any_flag(_REORDER),
                    lambda: self._lower_case_with_reordering(values, line_starts),
                    lambda: self._lower_case(values, flags, line_starts))
                # The splitting class of what came out; CJK that of where it came from.
                new_flags = tf.bitwise.bitwise_or(
                    tf.bitwise.bitwise_and(tf.gather(self._code_points, lowered), _SPACE | _PUNCTUATION),
                    tf.bitwise.bitwise_and(tf.gather(flags, source), _CJK))
                return lowered, tf.bitwise.left_shift(new_flags, _AFTER_SHIFT), new_line_starts

            values, flags, line_starts = tf.cond(
                any_flag(_REORDER | _NOT_ONE_FOR_ONE), lower_case_expanding, lower_case_one_for_one)
        return self._split_words(values, flags, line_starts)

    def _apply_final_sigma(self, values, flags, line_starts):
        """str.lower()'s context rule: U+03A3 becomes U+03C2 (final sigma) when a
        cased letter precedes it and none follows, case-ignorable ones skipped.

        Separators and CJK ideographs are neither cased nor case-ignorable, so a
        scan over the whole line stops at word ends as lower() on one word does.
        Returns the new code points and flags, [C] each.
        """
        is_sigma = values == _CAPITAL_SIGMA

        def apply():
            anchors = tf.where(~_has_bits(flags, _CASE_IGNORABLE))[:, 0]  # [N] int64
            sigmas = tf.where(is_sigma)[:, 0]  # [G] int64, a subset of anchors
            rank = tf.searchsorted(anchors, sigmas, out_type=tf.int64)
            count = tf.size(anchors, out_type=tf.int64)
            before = tf.gather(anchors, tf.maximum(rank - 1, 0))
            after = tf.gather(anchors, tf.minimum(rank + 1, count - 1))

            def line(positions):
                return tf.searchsorted(line_starts, positions, side="right")

            def cased(positions):
                return _has_bits(tf.gather(flags, positions), _CASED)

            sigma_lines = line(sigmas)
            cased_before = (rank > 0) & (line(before) == sigma_lines) & cased(before)
            cased_after = (rank + 1 < count) & (line(after) == sigma_lines) & cased(after)
            indices = tf.boolean_mask(sigmas, cased_before & ~cased_after)[:, None]
            finals = tf.fill([tf.shape(indices)[0]], _FINAL_SIGMA)
            return (tf.tensor_scatter_nd_update(values, indices, finals),
                    tf.tensor_scatter_nd_update(flags, indices, tf.gather(self._code_points, finals)))

        return tf.cond(tf.reduce_any(is_sigma), apply, lambda: (values, flags))

    def _lower_case(self, values, flags, line_starts):
        """Each code point -> its lower-cased, accent-stripped code points (0 to 3).

        Returns the new code points [M], the index of the source of each [M] and
        the new line starts [B].
        """
        changes = _has_bits(flags, _LOWER_CHANGES)
        lengths = tf.where(
            changes, tf.bitwise.bitwise_and(tf.bitwise.right_shift(flags, _MAPPING_LENGTH_SHIFT), 3), 1)
        source, within, line_starts = _expand(lengths, line_starts)
        source_changes = tf.gather(changes, source)
        offsets = tf.where(
            source_changes, tf.bitwise.right_shift(tf.gather(flags, source), _MAPPING_OFFSET_SHIFT) + within, 0)
        lowered = tf.where(source_changes, tf.gather(self._replacements, offsets), tf.gather(values, source))
        return lowered, source, line_starts

    def _lower_case_with_reordering(self, values, line_starts):
        """As _lower_case, with NFD's canonical reordering before the Mn marks go.

        NFD sorts each run of combining marks (canonical combining class > 0) by
        class. Once the Mn marks are dropped that shows only where a run holds two
        non-Mn marks out of order (Mc viramas, Hangul tone marks, musical stems).
        """
        spans, found = _sorted_lookup(self._full_keys, self._full_spans, values, 0)
        lengths = tf.where(found, tf.bitwise.bitwise_and(spans, 7), 1)
        source, within, line_starts = _expand(lengths, line_starts)
        offsets = tf.where(tf.gather(found, source),
                           tf.bitwise.right_shift(tf.gather(spans, source), 3) + within, -1)
        decomposed = tf.where(offsets >= 0, tf.gather(self._full_values, tf.maximum(offsets, 0)),
                              tf.gather(values, source))
        combining, _ = _sorted_lookup(self._combining_keys, self._combining_values, decomposed, 0)
        ccc = tf.cast(tf.bitwise.right_shift(combining, 1), tf.int64)
        is_mn = _has_bits(combining, 1)
        run_start = (ccc > 0) & ((_shifted_right(ccc, tf.constant(0, tf.int64)) == 0)
                                 | _marks_at(line_starts, tf.size(ccc)))
        # Each mark sorts with the first mark of its run; other code points stay put.
        anchor_marks = (ccc == 0) | run_start
        anchors = tf.gather(tf.where(anchor_marks)[:, 0], tf.cumsum(tf.cast(anchor_marks, tf.int64)) - 1)
        order = tf.argsort(anchors * 256 + ccc, stable=True)
        line_starts, decomposed, source = _keep(
            ~tf.gather(is_mn, order), line_starts, tf.gather(decomposed, order), tf.gather(source, order))
        return decomposed, source, line_starts

    def _split_words(self, values, flags, line_starts):
        """Words after whitespace splitting and punctuation splitting.

        Args:
            values: int32 [C], code points after lower-casing (if any).
            flags: int32 [C], with the _*_AFTER bits of each code point.
            line_starts: int64 [B], where each line starts in `values`.

        Returns:
            words: int32 RaggedTensor [W, (C)] of code points; words per line, int64 [B].
        """
        separator = _has_bits(flags, _SPACE_AFTER)
        breaks = _has_bits(flags, _SPACE_AFTER | _CJK_AFTER | _PUNCTUATION_AFTER)
        # A word starts after a break or at a line start (line_starts <= C: the slot
        # past the end takes the starts of empty last lines).
        after_break = tf.tensor_scatter_nd_update(
            tf.concat([[True], breaks], axis=0), line_starts[:, None], tf.fill(tf.shape(line_starts), True))[:-1]
        starts = ~separator & (breaks | after_break)
        kept = ~separator
        kept_positions = tf.where(kept)[:, 0]  # [K]
        kept_starts = tf.gather(starts, kept_positions)
        word_starts = tf.where(kept_starts)[:, 0]  # [W], in the kept code points
        words = tf.RaggedTensor.from_row_starts(tf.gather(values, kept_positions), word_starts, validate=False)
        # A line's first word is the first that starts at or after the line's start.
        first_words = tf.searchsorted(tf.gather(kept_positions, word_starts), line_starts, out_type=tf.int64)
        words_per_line = tf.concat([first_words, [tf.size(word_starts, out_type=tf.int64)]], 0)[1:] - first_words
        return words, words_per_line


def pack_segments(segments, seq_length, cls_id, sep_id):
    """The encoder's inputs for one or two segments of token ids, as run_classifier.py packs them.

    `[CLS] A [SEP]`, or `[CLS] A [SEP] B [SEP]` where B keeps a token (the original adds B's
    [SEP] only then). A pair too long for `seq_length` loses the last token of its longer
    segment until it fits (B's on a tie); a single segment keeps its first seq_length - 2.
    The one packer of InGraphTokenizer.pack_inputs (so of the classifier export) and of the
    exported preprocessor's bert_pack_inputs.

    Args:
        segments: a list of one or two integer RaggedTensors [B, (T)], of one dtype.
        seq_length: Python int S, at least 3.
        cls_id, sep_id: the ids of [CLS] and [SEP].

    Returns:
        (ids, mask, type_ids), each [B, S] in the segments' dtype, 0-padded: the token ids,
        1 on real tokens, 0 on [CLS] A [SEP] and 1 on B [SEP].
    """
    if len(segments) not in (1, 2):
        raise ValueError(f"one or two segments are packed, got {len(segments)}")
    if seq_length < 3:
        raise ValueError(f"seq_length must be at least 3, got {seq_length}")
    dtype = segments[0].dtype
    lengths = [tokens.row_lengths() for tokens in segments]
    if len(segments) == 1:
        kept = [tf.minimum(lengths[0], seq_length - 2)]
    else:
        kept = list(truncated_pair_lengths(lengths[0], lengths[1], seq_length))
    segments = [tf.ragged.boolean_mask(tokens, tf.ragged.range(length) < keep[:, None])
                for tokens, length, keep in zip(segments, lengths, kept)]
    batch = tf.shape(lengths[0], out_type=tf.int64)[0]
    sep = tf.fill([batch, 1], tf.constant(sep_id, dtype))
    parts = [tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.constant(cls_id, dtype))), segments[0],
             tf.RaggedTensor.from_tensor(sep)]
    types = [0, 0, 0]
    if len(segments) == 2:
        parts += [segments[1], tf.ragged.boolean_mask(sep, (kept[1] > 0)[:, None])]
        types += [1, 1]
    ids = tf.concat(parts, axis=1)
    type_ids = tf.concat([tf.ones_like(part) * t for part, t in zip(parts, types)], axis=1)
    shape = [None, seq_length]
    return (ids.to_tensor(0, shape=shape), tf.ones_like(ids).to_tensor(0, shape=shape),
            type_ids.to_tensor(0, shape=shape))


def truncated_pair_lengths(length_a, length_b, seq_length):
    """Tokens of A and of B (int64 [B] each) that run_classifier.py keeps of a pair.

    Its truncate_seq_pair pops the last token of the longer segment, B's on a tie, until
    A + B fits seq_length - 3: the longer one is cut down to what the shorter leaves, but
    never below its half of that budget (A gets the larger half of an odd one). A B without
    tokens makes no pair: A alone keeps up to seq_length - 2.
    """
    budget = seq_length - 3
    fits = length_a + length_b <= budget
    keep_a = tf.minimum(length_a, tf.maximum(budget - length_b, (budget + 1) // 2))
    keep_b = tf.minimum(length_b, tf.maximum(budget - length_a, budget // 2))
    single_a = tf.minimum(length_a, seq_length - 2)
    return tf.where(length_b > 0, tf.where(fits, length_a, keep_a), single_a), tf.where(fits, length_b, keep_b)
