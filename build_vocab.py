"""Learns a WordPiece vocab.txt from plain text, for pre-training BERT on your own corpus.

Words come from this project's `tokenization.BasicTokenizer`, so the vocab fits the
tokenizer that will use it; the pieces are chosen by tensorflow-text's WordPiece learner.
The file has the original's layout: [PAD], [unusedN]..., [UNK], [CLS], [SEP], [MASK].
"""

import collections
import importlib.util
import math
import os
import tempfile
import time

from absl import flags, logging

import cli
import tokenization

FLAGS = flags.FLAGS


def define_flags():
    """Defines this script's flags; called only when run as a script.

    Not at import time: other scripts define flags of the same names (`input_file`,
    `output_file`, `do_lower_case`), and absl refuses a name defined by two modules,
    so importing both (as a test session does) would fail.
    """
    flags.DEFINE_string("input_file", None,
                        "Input text files (one sentence per line, blank lines between "
                        "documents), as a comma-separated list of files or globs.")
    flags.DEFINE_string("output_file", None, "Where to write the vocab (one token per line).")
    flags.DEFINE_integer("vocab_size", 30522,
                         "Number of lines of the vocab, reserved entries included.")
    flags.DEFINE_bool("do_lower_case", True,
                      "Lower-case and strip accents before learning, as the tokenizer that "
                      "will use the vocab must (True for an uncased model).")
    flags.DEFINE_integer("num_unused", 99,
                         "Number of [unusedN] placeholders after [PAD]; 99 gives [UNK], [CLS], "
                         "[SEP], [MASK] the ids 100-103 of the released vocabs.")
    flags.DEFINE_list("reserved_tokens", [],
                      "Extra tokens to reserve right after [MASK], as a comma-separated list.")
    flags.DEFINE_integer("min_count", 10,
                         "A piece seen fewer times than this is never learned (lower bound "
                         "of the learner's frequency threshold).")
    flags.DEFINE_integer("upper_thresh", 10_000_000,
                         "Upper bound of the learner's frequency-threshold search.")
    flags.DEFINE_integer("num_iterations", 4, "Refinement passes of the WordPiece learner.")
    flags.DEFINE_integer("max_token_length", 50,
                         "Words longer than this (in characters) do not feed the learner.")
    flags.DEFINE_integer("max_input_words", 5_000_000,
                         "Only the most frequent this many distinct words feed the learner "
                         "(-1: all).")
    flags.DEFINE_integer("max_unique_chars", -1,
                         "Keep only the most frequent this many characters (-1: every "
                         "character seen, as far as half of the unreserved entries allow).")
    flags.DEFINE_integer("max_input_chars_per_word", 200,
                         "Words longer than this are skipped: the tokenizer maps them to [UNK].")
    flags.DEFINE_integer("log_every_lines", 1_000_000, "Log progress every this many input lines.")
    flags.mark_flag_as_required("input_file")
    flags.mark_flag_as_required("output_file")


_JOINER = "##"


def special_tokens(num_unused, reserved_tokens=()):
    """The reserved head of the vocab: [PAD], [unused0..N-1], [UNK], [CLS], [SEP], [MASK], extras.

    Raises ValueError for a negative `num_unused` or an extra token holding whitespace.
    Extra tokens already in the list are dropped (with a warning), so nothing repeats.
    """
    if num_unused < 0:
        raise ValueError(f"--num_unused={num_unused} must be 0 or more")
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(num_unused)]
    tokens += ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(tokens)
    for token in reserved_tokens:
        token = token.strip()
        if not token:
            continue
        if len(token.split()) != 1:
            raise ValueError(f"--reserved_tokens: {token!r} holds whitespace; a vocab token cannot")
        if token in seen:
            logging.warning("Reserved token %s is already in the vocab; listed once.", token)
            continue
        seen.add(token)
        tokens.append(token)
    return tokens


def check_vocab_size(vocab_size, reserved_tokens):
    """Raises ValueError unless `vocab_size` leaves room beyond `reserved_tokens`."""
    if vocab_size <= len(reserved_tokens):
        raise ValueError(
            f"--vocab_size={vocab_size} leaves no room for learned pieces after the "
            f"{len(reserved_tokens)} reserved tokens; raise --vocab_size or lower --num_unused")


def expand_input_files(input_file):
    """Expands a comma-separated list of files/globs into a sorted, duplicate-free list.

    Raises ValueError naming the pattern that matches no file.
    """
    if not input_file.replace(",", "").strip():
        raise ValueError("--input_file is empty: give a text file or a glob")
    return cli.expand_input_files(input_file, files_only=True, unique=True)


def read_lines(input_files, log_every_lines=1_000_000):
    """Yields the lines of `input_files` as str, one at a time, logging progress.

    Raises ValueError naming the file and line of a line that is not UTF-8.
    """
    total_bytes = sum(cli.input_size(path) for path in input_files)
    start = time.monotonic()
    num_lines = num_bytes = 0

    def log_progress(prefix):
        seconds = max(time.monotonic() - start, 1e-9)
        percent = 100.0 * num_bytes / total_bytes if total_bytes else 100.0
        logging.info("%s %d lines, %.1f of %.1f MB (%.0f%%), %.0f lines/s", prefix, num_lines,
                     num_bytes / 1e6, total_bytes / 1e6, percent, num_lines / seconds)

    logging.info("Reading %d file(s), %.1f MB", len(input_files), total_bytes / 1e6)
    for path in input_files:
        with cli.open_input(path) as reader:
            for line_number, raw_line in enumerate(reader, 1):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path} line {line_number}: byte 0x{raw_line[e.start]:02x} is not "
                        "UTF-8; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
                num_lines += 1
                num_bytes += len(raw_line)
                yield line
                if log_every_lines > 0 and num_lines % log_every_lines == 0:
                    log_progress("Read")
    log_progress("Done reading:")


def count_words(lines, basic_tokenizer, max_input_chars_per_word=200):
    """Counts the basic tokens (BERT's "words") of `lines`.

    Memory grows with the number of distinct words, not with the corpus. Words longer
    than `max_input_chars_per_word` are left out: WordPiece maps them to [UNK] anyway.

    Returns:
        collections.Counter word -> number of occurrences.
    """
    counts = collections.Counter()
    for line in lines:
        counts.update(basic_tokenizer.tokenize(line))
    for word in [w for w in counts if len(w) > max_input_chars_per_word]:
        del counts[word]
    return counts


def character_pieces(word_counts, basic_tokenizer, max_pieces, max_unique_chars=-1):
    """The single-character pieces that let WordPiece spell out every word of seen characters.

    Each character `c` gets the piece `c` (a word may start with it) and, where the
    tokenizer can leave `c` inside a word, the piece `##c`. Punctuation and CJK
    characters are always split off by BasicTokenizer, so their `##` forms would never
    be used and are left out. When the characters need more than `max_pieces` entries
    (or exceed `max_unique_chars`, if not -1), the most frequent ones are kept.

    Returns:
        (pieces, kept_chars): the pieces, characters in code point order then their
        `##` forms; and the set of characters they cover.
    """
    char_counts = collections.Counter()
    for word, count in word_counts.items():
        for char in word:
            char_counts[char] += count
    by_frequency = sorted(char_counts, key=lambda c: (-char_counts[c], c))
    if max_unique_chars >= 0:
        by_frequency = by_frequency[:max_unique_chars]
    kept_chars, num_pieces = [], 0
    for char in by_frequency:
        glued = basic_tokenizer.tokenize("a" + char) == ["a" + char]
        cost = 2 if glued else 1
        if num_pieces + cost > max_pieces:
            break
        kept_chars.append((char, glued))
        num_pieces += cost
    if len(kept_chars) < len(char_counts):
        logging.warning("Covering the %d most frequent of %d characters; words with the "
                        "%d others will be [UNK].", len(kept_chars), len(char_counts),
                        len(char_counts) - len(kept_chars))
    kept_chars.sort()
    pieces = [char for char, _ in kept_chars]
    pieces += [_JOINER + char for char, glued in kept_chars if glued]
    return pieces, {char for char, _ in kept_chars}


def learn_wordpiece_vocab(word_counts, vocab_size, reserved_tokens, basic_tokenizer,
                          min_count=10, upper_thresh=10_000_000, num_iterations=4,
                          max_token_length=50, max_input_words=5_000_000,
                          max_unique_chars=-1, slack_ratio=0.05):
    # 11 parameters: the learning algorithm's settings, each a build_vocab.py flag with its default.
    """Learns a WordPiece vocab of `vocab_size` entries from word counts.

    Layout: `reserved_tokens`, then single characters and their `##` forms (so every
    covered character can be spelled out), then learned pieces, most frequent first.
    The learner is run at frequency thresholds found by binary search: the highest
    threshold that still yields enough pieces, then the least frequent extra pieces
    are cut, so the vocab has exactly `vocab_size` entries when the corpus allows.

    Args:
        word_counts: dict word -> count, words as BasicTokenizer gives them.
        vocab_size: number of entries wanted, reserved tokens included.
        reserved_tokens: tokens that open the vocab, in order (see `special_tokens`).
        basic_tokenizer: the tokenizer that made the words (decides which `##c` are needed).
        min_count ... max_unique_chars: see the flags of the same names.
        slack_ratio: stop the search once at most this fraction of extra pieces is cut.

    Returns:
        list of str, at most `vocab_size` distinct tokens.

    Raises:
        ValueError: `vocab_size` leaves no room beyond the reserved tokens, `min_count`
            is below 1, or there are no words.
    """
    check_vocab_size(vocab_size, reserved_tokens)
    if min_count < 1:
        raise ValueError(f"--min_count={min_count} must be 1 or more")
    if not word_counts:
        raise ValueError("the input holds no words")
    learner = _wordpiece_learner()
    room = vocab_size - len(reserved_tokens)
    reserved = set(reserved_tokens)
    # Characters may take at most half the room, so that a corpus with many rare
    # characters still leaves room for learned pieces.
    char_pieces, kept_chars = character_pieces(word_counts, basic_tokenizer, max(room // 2, 1),
                                               max_unique_chars)
    char_pieces = [p for p in char_pieces if p not in reserved]
    wanted = room - len(char_pieces)
    logging.info("%d reserved tokens, %d character pieces, %d pieces to learn",
                 len(reserved_tokens), len(char_pieces), wanted)

    pieces = []
    if wanted > 0:
        items = list(word_counts.items())
        all_counts = learner.get_input_words(items, reserved, max_token_length)
        if max_input_words is None or max_input_words < 0:
            max_input_words = -1  # the learner's "no limit"
        learner_words = learner.filter_input_words(all_counts, kept_chars, max_input_words)
        if learner_words:
            params = learner.Params(
                upper_thresh=upper_thresh, lower_thresh=min_count, num_iterations=num_iterations,
                max_input_tokens=max_input_words, max_token_length=max_token_length,
                max_unique_chars=len(kept_chars), vocab_size=vocab_size, slack_ratio=slack_ratio,
                include_joiner_token=True, joiner=_JOINER, reserved_tokens=[])
            skip = reserved | set(char_pieces)
            pieces = _search_threshold(learner, learner_words, params, wanted, skip)
    vocab = list(reserved_tokens) + char_pieces + pieces[:max(wanted, 0)]
    if len(vocab) < vocab_size:
        logging.warning("The corpus yields only %d of the %d entries asked for (pieces must "
                        "be seen at least --min_count=%d times); writing %d. Add text or "
                        "lower --min_count for more.", len(vocab), vocab_size, min_count, len(vocab))
    return vocab


def _search_threshold(learner, learner_words, params, wanted, skip):
    """Multi-character pieces, most frequent first, from the highest threshold giving `wanted`.

    Binary search (in log space) over thresholds from `params.lower_thresh` up to the corpus' top
    count; it stops early at a threshold giving at most `slack_ratio` too many pieces.
    If even the lowest threshold gives too few pieces, its pieces are returned.
    """
    high, low = learner.get_search_threshs(learner_words, params.upper_thresh, params.lower_thresh)

    def learn_pieces(thresh):
        start = time.monotonic()
        learned = learner.learn_with_thresh(learner_words, thresh, params)
        pieces = [p for p in learned if p not in skip and len(p.removeprefix(_JOINER)) > 1]
        logging.info("Frequency threshold %d: %d pieces (%.1f s)", thresh, len(pieces),
                     time.monotonic() - start)
        return pieces

    # The lowest threshold first: a corpus too small for `wanted` is found in one pass.
    best = learn_pieces(low)
    if len(best) < wanted:
        return best
    low += 1
    while low <= high and len(best) > wanted * (1 + params.slack_ratio):
        # Piece counts fall roughly like a power of the threshold: bisect in log space.
        thresh = min(max(math.isqrt(low * high), low), high)
        pieces = learn_pieces(thresh)
        if len(pieces) >= wanted:
            best = pieces
            low = thresh + 1
        else:
            high = thresh - 1
    return best


def write_vocab_file(output_file, tokens):
    """Writes `tokens`, one a line, to `output_file` atomically.

    The lines go to a temporary file next to `output_file`, which is renamed over it
    only once complete: a crash or error leaves the old file (or none), never half a file.
    """
    cli.write_text(output_file, "".join(token + "\n" for token in tokens))


def check_output_writable(output_file):
    """Fails early, before hours of counting, if `output_file` cannot be written.

    Creates the parent directory if needed, like the original's output directories.
    """
    if "://" in output_file:
        return  # remote stores report their errors on write
    if os.path.isdir(output_file):
        raise ValueError(f"--output_file={output_file} is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(output_file))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write --output_file={output_file}: {e.strerror or e}") from None


def build_vocab(input_file, output_file, vocab_size=30522, do_lower_case=True, num_unused=99,
                reserved_tokens=(), min_count=10, upper_thresh=10_000_000, num_iterations=4,
                max_token_length=50, max_input_words=5_000_000, max_unique_chars=-1,
                max_input_chars_per_word=200, log_every_lines=1_000_000):
    # 14 parameters: one keyword per build_vocab.py flag: the script's Python API.
    """Reads the files of `input_file` (comma list of globs), learns a vocab, writes it.

    Returns:
        the list of tokens written to `output_file`.
    """
    start = time.monotonic()
    reserved = special_tokens(num_unused, reserved_tokens)
    check_vocab_size(vocab_size, reserved)
    if min_count < 1:
        raise ValueError(f"--min_count={min_count} must be 1 or more")
    input_files = expand_input_files(input_file)
    check_output_writable(output_file)
    if all(cli.input_size(path) == 0 and not cli.readable_once(path) for path in input_files):
        raise ValueError(f"--input_file={input_file}: the input files are empty")

    basic_tokenizer = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
    word_counts = count_words(read_lines(input_files, log_every_lines), basic_tokenizer,
                              max_input_chars_per_word)
    if not word_counts:
        raise ValueError(f"--input_file={input_file}: the input files hold no words")
    logging.info("%d words, %d distinct", sum(word_counts.values()), len(word_counts))

    vocab = learn_wordpiece_vocab(
        word_counts, vocab_size, reserved, basic_tokenizer, min_count=min_count,
        upper_thresh=upper_thresh, num_iterations=num_iterations,
        max_token_length=max_token_length, max_input_words=max_input_words,
        max_unique_chars=max_unique_chars)
    write_vocab_file(output_file, vocab)
    logging.info("Wrote %d tokens to %s in %.1f s", len(vocab), output_file,
                 time.monotonic() - start)
    return vocab


def _wordpiece_learner():
    """tensorflow-text's `wordpiece_tokenizer_learner_lib`, loaded without TensorFlow.

    The learner is plain Python, but importing it through the `tensorflow_text` package
    first imports TensorFlow: seconds of start-up and lines of C++ logging on stderr.
    Loading the module file directly avoids both; the package import is the fallback.
    """
    name = "wordpiece_tokenizer_learner_lib"
    spec = importlib.util.find_spec("tensorflow_text")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "tools", "wordpiece_vocab",
                            name + ".py")
        if os.path.exists(path):
            module_spec = importlib.util.spec_from_file_location(f"_build_vocab_{name}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib
    return wordpiece_tokenizer_learner_lib


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    build_vocab(
        FLAGS.input_file, FLAGS.output_file, vocab_size=FLAGS.vocab_size,
        do_lower_case=FLAGS.do_lower_case, num_unused=FLAGS.num_unused,
        reserved_tokens=FLAGS.reserved_tokens, min_count=FLAGS.min_count,
        upper_thresh=FLAGS.upper_thresh, num_iterations=FLAGS.num_iterations,
        max_token_length=FLAGS.max_token_length, max_input_words=FLAGS.max_input_words,
        max_unique_chars=FLAGS.max_unique_chars,
        max_input_chars_per_word=FLAGS.max_input_chars_per_word,
        log_every_lines=FLAGS.log_every_lines)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "build_vocab.py")
