"""Raw text to masked-LM / next-sentence TFRecords, example for example as the original.

Input: one sentence per line, blank lines between documents. Output: tf.train.Example
records with `input_ids`, `input_mask`, `segment_ids`, `masked_lm_positions`,
`masked_lm_ids`, `masked_lm_weights`, `next_sentence_labels`.

With one worker the same input, vocab, flags and `--random_seed` give the original's
examples in the original's order: every random draw is made by one `random.Random`
in the original's sequence. What differs is the cost: tokens are kept as vocab ids,
finished examples are serialized at once and spilled to a temporary file (memory does
not grow with `dupe_factor`), and `--num_workers` spreads the work over processes
(reproducible for a given worker count, but a different stream than one worker).
"""

import array
import collections
import contextlib
import dataclasses
import gc
import multiprocessing
import os
import random
import struct
import tempfile

from absl import flags, logging

import cli
import tokenization

FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags (only when run as a script, so modules can be imported together)."""
    flags.DEFINE_string("input_file", None,
                        "Input raw text file (or comma-separated list of files; each may be a glob).")
    flags.DEFINE_string("output_file", None,
                        "Output TFRecord file (or comma-separated list of files).")
    flags.DEFINE_string("vocab_file", None, "The vocabulary file that the BERT model was trained on.")
    flags.DEFINE_bool("do_lower_case", True,
                      "Whether to lower case the input text. True for uncased models, False for cased models.")
    flags.DEFINE_bool("do_whole_word_mask", False,
                      "Whether to mask all of the WordPieces of a word together, or each one on its own.")
    flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum number of masked LM predictions per sequence.")
    flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
    flags.DEFINE_integer("dupe_factor", 10, "Number of times to duplicate the input data (with different masks).")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
    flags.DEFINE_float("short_seq_prob", 0.1,
                       "Probability of creating sequences shorter than the maximum length.")
    flags.DEFINE_integer("num_workers", 1,
                         "Processes to use. 1 reproduces the original's output exactly; N > 1 is "
                         "reproducible for the same N but draws a different random stream.")


# How many examples are logged in full, as the original does.
_LOGGED_EXAMPLES = 20


class InstanceIds:
    """One pretraining example, as vocab ids (the fast path's TrainingInstance).

    Attributes:
      token_ids: [CLS] A [SEP] B [SEP] after masking (list of int).
      segment_ids: 0 for [CLS], A and the first [SEP]; 1 for B and the last [SEP].
      is_random_next: whether B is a random segment (label 1) or A's continuation (0).
      masked_lm_positions: ascending positions of the masked tokens.
      masked_lm_labels: ids of the original tokens at those positions.
    """

    __slots__ = ("token_ids", "segment_ids", "is_random_next", "masked_lm_positions", "masked_lm_labels")

    def __init__(self, token_ids, segment_ids, is_random_next, masked_lm_positions, masked_lm_labels):
        self.token_ids = token_ids
        self.segment_ids = segment_ids
        self.is_random_next = is_random_next
        self.masked_lm_positions = masked_lm_positions
        self.masked_lm_labels = masked_lm_labels


class PretrainingVocab:
    """What instance creation needs of the vocab: special ids, word-piece flags, size."""

    def __init__(self, vocab):
        self.size = len(vocab)
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.mask_id = vocab["[MASK]"]
        # Random replacements draw a vocab line; with unique entries line == id.
        self.is_continuation = [token.startswith("##") for token in vocab]


# --- Reading documents ----------------------------------------------------------------

def _read_bytes(path):
    try:
        with cli.open_input(path) as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read input file {path}: {e.strerror or e}") from None


def read_lines(input_files):
    """Yields (file, 1-based line number, stripped str line) for every input line.

    Lines end at b"\\n" only (as the original's readline), invalid UTF-8 bytes are
    dropped (as the original) and reported once per file with a warning.
    """
    for path in input_files:
        data = _read_bytes(path)
        if not data.strip():
            logging.warning("Input file %s is empty: it contributes no documents", path)
            continue
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        bad_lines = []
        has_blank = False
        for number, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "ignore")
                bad_lines.append(number)
            line = line.strip()
            has_blank = has_blank or not line
            yield path, number, line
        if bad_lines:
            logging.warning("%s: %d line(s) hold invalid UTF-8 (first: line %d); the invalid bytes were "
                            "dropped", path, len(bad_lines), bad_lines[0])
        if not has_blank:
            logging.warning("%s has no blank line: all of its lines belong to one document (documents are "
                            "separated by blank lines)", path)


def tokenize_lines_to_ids(tokenizer, lines):
    """Token ids of each line (an array('i') each, empty for lines without tokens)."""
    return [array.array("i", tokenizer.tokenize_to_ids(line)) for line in lines]


def read_documents(input_files, tokenizer, pool=None, progress=None):
    """Reads the corpus into documents: lists of non-empty segments of token ids.

    A blank line starts a new document; documents continue across files unless a file
    ends with a blank line (as the original). Empty documents are removed.
    """
    documents = [[]]
    pending = []
    for item in read_lines(input_files):
        pending.append(item)
        if len(pending) >= 20000:
            _append_segments(documents, pending, _tokenize_chunks(tokenizer, [text for _, _, text in pending], pool))
            if progress:
                progress(len(pending))
            pending = []
    if pending:
        _append_segments(documents, pending, _tokenize_chunks(tokenizer, [text for _, _, text in pending], pool))
        if progress:
            progress(len(pending))
    return [document for document in documents if document]


def _append_segments(documents, lines, segments):
    for (_, _, line), segment in zip(lines, segments):
        if not line:
            documents.append([])
        if segment:
            documents[-1].append(segment)


_WORKER_TOKENIZER = None


def _init_tokenizer_worker(vocab_file, do_lower_case):
    global _WORKER_TOKENIZER
    cli.die_with_parent()
    _WORKER_TOKENIZER = tokenization.FullTokenizer(vocab_file, do_lower_case)


def _tokenize_in_worker(lines):
    """Token ids of `lines` as one flat array and the line lengths: two objects to pickle, not one per line."""
    ids, lengths = array.array("i"), array.array("i")
    for line in lines:
        line_ids = _WORKER_TOKENIZER.tokenize_to_ids(line)
        ids.extend(line_ids)
        lengths.append(len(line_ids))
    return ids, lengths


def _tokenize_chunks(tokenizer, lines, pool):
    if pool is None:
        return tokenize_lines_to_ids(tokenizer, lines)
    # Contiguous blocks, one per worker and round: neighbouring lines share words, so each
    # worker's per-word cache serves its own block best.
    step = max(1, -(-len(lines) // pool._processes))
    results = []
    for ids, lengths in pool.imap(_tokenize_in_worker, [lines[i:i + step] for i in range(0, len(lines), step)]):
        start = 0
        for length in lengths:
            results.append(ids[start:start + length])
            start += length
    return results


# --- Creating instances ---------------------------------------------------------------

def create_instances_from_document_with_vocab(all_documents, document_index, max_seq_length, short_seq_prob,
                                              masked_lm_prob, max_predictions_per_seq, vocab, rng,
                                              do_whole_word_mask=False):
    # 9 parameters: the original's create_instances_from_document, on ids with a vocab.
    """Creates the training instances of one document, drawing from `rng` as the original.

    Segments are gathered into a chunk until it reaches a target length; the chunk is
    cut at a random point into A and B, and half the time (always for a one-segment
    chunk) B is replaced by segments of another, random document.
    """
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3  # room for [CLS], [SEP], [SEP]

    # Usually fill the whole sequence; sometimes use a shorter one so that the model
    # also sees the short sequences it will meet when fine-tuned.
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            a_end = 1
            if len(current_chunk) >= 2:
                a_end = rng.randint(1, len(current_chunk) - 1)
            tokens_a = []
            for piece in current_chunk[:a_end]:
                tokens_a.extend(piece)

            tokens_b = []
            if len(current_chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                # Ten tries at another document; with a single document the last draw
                # (itself) is used, as the original does.
                for _ in range(10):
                    random_document_index = rng.randint(0, len(all_documents) - 1)
                    if random_document_index != document_index:
                        break
                random_document = all_documents[random_document_index]
                random_start = rng.randint(0, len(random_document) - 1)
                for j in range(random_start, len(random_document)):
                    tokens_b.extend(random_document[j])
                    if len(tokens_b) >= target_b_length:
                        break
                # The segments of this chunk that B did not use are read again.
                i -= len(current_chunk) - a_end
            else:
                is_random_next = False
                for piece in current_chunk[a_end:]:
                    tokens_b.extend(piece)

            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            token_ids = [vocab.cls_id] + tokens_a + [vocab.sep_id] + tokens_b + [vocab.sep_id]
            segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
            token_ids, positions, labels = create_masked_lm_predictions_with_vocab(
                token_ids, masked_lm_prob, max_predictions_per_seq, vocab, rng, do_whole_word_mask)
            instances.append(InstanceIds(token_ids, segment_ids, is_random_next, positions, labels))
            current_chunk = []
            current_length = 0
        i += 1
    return instances


_BIT_LENGTHS = [n.bit_length() for n in range(1025)]


def shuffle(rng, items):
    """`rng.shuffle(items)` with the same draws, minus a Python call per draw.

    CPython's Random.shuffle walks i from the end, swapping with j = _randbelow(i + 1),
    and _randbelow(n) draws getrandbits(n.bit_length()) until the value is below n. This
    is the hot loop of masking; tests check it against rng.shuffle on many lengths.
    """
    getrandbits = rng.getrandbits
    bit_lengths = _BIT_LENGTHS if len(items) < len(_BIT_LENGTHS) else [n.bit_length() for n in range(len(items) + 1)]
    for i in range(len(items) - 1, 0, -1):
        n = i + 1
        k = bit_lengths[n]
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        items[i], items[j] = items[j], items[i]


def create_masked_lm_predictions_with_vocab(token_ids, masked_lm_prob, max_predictions_per_seq, vocab, rng,
                                            do_whole_word_mask=False):
    """Masks a random ~`masked_lm_prob` of the tokens: 80% [MASK], 10% kept, 10% random.

    Returns:
      (masked token ids, ascending masked positions, original ids at those positions).
    """
    cls_id, sep_id = vocab.cls_id, vocab.sep_id
    output_ids = list(token_ids)
    # Python 3 round(): halves go to the even neighbour (30 * 0.15 = 4.5 -> 4).
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(token_ids) * masked_lm_prob))))
    if not do_whole_word_mask:
        # Every candidate is one position, so the first num_to_predict of the shuffled
        # candidates are masked; shuffling a flat list draws exactly what shuffling the
        # original's list of one-element lists draws (the draws depend only on the length).
        candidates = [i for i, token_id in enumerate(token_ids) if token_id != cls_id and token_id != sep_id]
        shuffle(rng, candidates)
        masked = []
        random, randint = rng.random, rng.randint
        for index in candidates[:num_to_predict]:
            if random() < 0.8:
                output_ids[index] = vocab.mask_id
            elif random() >= 0.5:
                output_ids[index] = randint(0, vocab.size - 1)
            masked.append((index, token_ids[index]))
        masked.sort()
        return output_ids, [index for index, _ in masked], [label for _, label in masked]

    cand_indexes = []
    is_continuation = vocab.is_continuation
    for i, token_id in enumerate(token_ids):
        if token_id == cls_id or token_id == sep_id:
            continue
        # Whole-word masking: a ## piece joins the word of the piece before it.
        if cand_indexes and is_continuation[token_id]:
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    shuffle(rng, cand_indexes)
    masked = []
    covered = set()
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(index_set) > num_to_predict:
            continue  # a whole word that no longer fits
        if any(index in covered for index in index_set):
            continue
        for index in index_set:
            covered.add(index)
            if rng.random() < 0.8:
                replacement = vocab.mask_id
            elif rng.random() < 0.5:
                replacement = token_ids[index]
            else:
                replacement = rng.randint(0, vocab.size - 1)
            output_ids[index] = replacement
            masked.append((index, token_ids[index]))
    masked.sort()
    return output_ids, [index for index, _ in masked], [label for _, label in masked]


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Trims the longer side (B on ties), at a random end, until the pair fits."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        # Trimming either end keeps the model from learning where truncation happens.
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


# --- Serializing ------------------------------------------------------------------------

def _encode_varint(value):
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Lengths and ids below this are looked up, not computed: the hot path of serializing.
_SMALL_VARINTS = [_encode_varint(i) for i in range(1 << 14)]


def _varint(value):
    return _SMALL_VARINTS[value] if value < 16384 else _encode_varint(value)


def _length_delimited(field_number, payload):
    return _SMALL_VARINTS[field_number << 3 | 2] + _varint(len(payload)) + payload


# The map-entry key field (field 1, the feature name) of every feature.
_KEY_FIELDS = {name: _length_delimited(1, name.encode()) for name in (
    "input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
    "next_sentence_labels")}


class ExampleEncoder:
    """Serializes instances as tf.train.Example protos, written by hand for speed.

    The bytes are those of the protobuf wire format with the features in the original's
    insertion order, so `tf.train.Example.FromString` (and tf.io.parse_example) read
    back exactly the original's features. Everything that depends only on a length (the
    input mask, padding, weights, labels, field headers) is encoded once up front.
    """

    _FEATURE_NAMES = tuple(_KEY_FIELDS)

    def __init__(self, max_seq_length, max_predictions_per_seq, vocab_size):
        self.max_seq_length = max_seq_length
        self.max_predictions_per_seq = max_predictions_per_seq
        self._varints = _SMALL_VARINTS + [_encode_varint(i) for i in range(len(_SMALL_VARINTS),
                                                                            max(vocab_size, max_seq_length) + 1)]
        s, p = max_seq_length, max_predictions_per_seq
        self._input_mask = [self._int64_entry("input_mask", b"\x01" * n + b"\x00" * (s - n)) for n in range(s + 1)]
        self._weights = [self._float_entry("masked_lm_weights", [1.0] * n + [0.0] * (p - n)) for n in range(p + 1)]
        self._labels = [self._int64_entry("next_sentence_labels", _varint(label)) for label in (0, 1)]

    @staticmethod
    def _entry(name, feature_field, list_payload):
        """One `feature` map entry: key, then Feature{<kind>_list {value: packed}}."""
        packed_list = _length_delimited(1, list_payload)                # <Kind>List.value (packed)
        feature = _length_delimited(feature_field, packed_list)         # Feature.int64_list / float_list
        return _length_delimited(1, _KEY_FIELDS[name] + _length_delimited(2, feature))

    def _int64_entry(self, name, packed):
        return self._entry(name, 3, packed)

    def _float_entry(self, name, values):
        return self._entry(name, 2, struct.pack(f"<{len(values)}f", *values))

    def features(self, instance):
        """The original's feature values for `instance`, padded with zeros."""
        seq_pad = [0] * (self.max_seq_length - len(instance.token_ids))
        pred_pad = [0] * (self.max_predictions_per_seq - len(instance.masked_lm_positions))
        n = len(instance.masked_lm_positions)
        return collections.OrderedDict([
            ("input_ids", instance.token_ids + seq_pad),
            ("input_mask", [1] * len(instance.token_ids) + seq_pad),
            ("segment_ids", instance.segment_ids + seq_pad),
            ("masked_lm_positions", instance.masked_lm_positions + pred_pad),
            ("masked_lm_ids", instance.masked_lm_labels + pred_pad),
            ("masked_lm_weights", [1.0] * n + [0.0] * len(pred_pad)),
            ("next_sentence_labels", [1 if instance.is_random_next else 0]),
        ])

    def encode(self, instance):
        varints = self._varints
        length = len(instance.token_ids)
        seq_pad = b"\x00" * (self.max_seq_length - length)
        n = len(instance.masked_lm_positions)
        pred_pad = b"\x00" * (self.max_predictions_per_seq - n)
        segment_ones = sum(instance.segment_ids)
        entries = b"".join((
            self._int64_entry("input_ids", b"".join([varints[i] for i in instance.token_ids]) + seq_pad),
            self._input_mask[length],
            # Segment ids are 0 then 1 (B and its [SEP]) then padding 0: one varint byte each.
            self._int64_entry("segment_ids", b"\x00" * (length - segment_ones) + b"\x01" * segment_ones + seq_pad),
            self._int64_entry("masked_lm_positions",
                              b"".join([varints[i] for i in instance.masked_lm_positions]) + pred_pad),
            self._int64_entry("masked_lm_ids", b"".join([varints[i] for i in instance.masked_lm_labels]) + pred_pad),
            self._weights[n],
            self._labels[1 if instance.is_random_next else 0],
        ))
        return _length_delimited(1, entries)  # Example.features


class RecordSpill:
    """Serialized records kept in a temporary file, read back in any order.

    The file is unnamed (gone when closed) unless `path` is given; a worker process hands
    its spill's path to the parent, which removes it when done.
    """

    def __init__(self, path=None):
        self._file = open(path, "w+b") if path else tempfile.TemporaryFile()
        self.offsets = array.array("q")
        self.lengths = array.array("i")
        self._end = 0

    def append(self, record):
        self._file.write(record)
        self.offsets.append(self._end)
        self.lengths.append(len(record))
        self._end += len(record)

    def __len__(self):
        return len(self.offsets)

    def read(self, index):
        self._file.seek(self.offsets[index])
        return self._file.read(self.lengths[index])

    def finish_writing(self):
        self._file.flush()

    def close(self):
        self._file.close()


# --- The pipeline -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InstanceSettings:
    """How documents become instances: the original's flags of the same names, and their defaults."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    do_whole_word_mask: bool = False
    dupe_factor: int = 10


def create_training_records(documents, vocab, encoder, rng, settings, document_indexes=None, spill=None,
                            progress=None):
    # 8 parameters: the data (documents, vocab, encoder, rng), its InstanceSettings, and where the records go.
    """Creates every instance of `documents` (or of `document_indexes`) into a RecordSpill.

    `settings`: InstanceSettings; the other parameters are the data and where it goes.
    """
    # `is None`, not `or`: an empty RecordSpill is falsy (len 0), and a worker's named spill
    # must not be swapped for an unnamed one (the parent would read empty records from it).
    spill = spill if spill is not None else RecordSpill()
    if document_indexes is None:
        document_indexes = range(len(documents))
    for _ in range(settings.dupe_factor):
        for document_index in document_indexes:
            for instance in create_instances_from_document_with_vocab(
                    documents, document_index, settings.max_seq_length, settings.short_seq_prob,
                    settings.masked_lm_prob, settings.max_predictions_per_seq, vocab, rng,
                    settings.do_whole_word_mask):
                spill.append(encoder.encode(instance))
            if progress:
                progress(1)
    spill.finish_writing()
    return spill


_WORKER_STATE = {}


def balance_shards(documents, num_workers):
    """Splits document indexes into `num_workers` shards of about equal token counts.

    Work grows with a document's length, and real corpora mix short and very long
    documents, so shards are filled longest first, each document going to the lightest
    shard (deterministic). Each shard's indexes stay in ascending order.
    """
    loads = [0] * num_workers
    shards = [[] for _ in range(num_workers)]
    sizes = [sum(len(segment) for segment in document) for document in documents]
    for index in sorted(range(len(documents)), key=lambda i: (-sizes[i], i)):
        lightest = loads.index(min(loads))
        shards[lightest].append(index)
        loads[lightest] += sizes[index]
    return [sorted(shard) for shard in shards]


_SPILL_PREFIX = "pretraining-shard-"


def _remove_stale_shard_spills():
    """Removes the shard spill files of killed runs (named after their run's pid) from $TMPDIR."""
    directory = tempfile.gettempdir()
    for name in os.listdir(directory):
        pid = name[len(_SPILL_PREFIX):].split("-", 1)[0]
        if name.startswith(_SPILL_PREFIX) and pid.isdigit() and not cli.process_alive(int(pid)):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def _init_shard_worker():
    cli.die_with_parent()


def _create_shard(shard_index):
    """Worker: the instances of the documents of shard `shard_index` (see balance_shards)."""
    state = _WORKER_STATE
    num_workers = state["num_workers"]
    rng = random.Random(f"{state['random_seed']}:{shard_index}:{num_workers}")
    fd, path = tempfile.mkstemp(prefix=f"{_SPILL_PREFIX}{os.getppid()}-")  # the run's pid: cleaned if it is killed
    os.close(fd)
    spill = create_training_records(
        state["documents"], state["vocab"], state["encoder"], rng, state["settings"],
        document_indexes=state["shards"][shard_index], spill=RecordSpill(path))
    spill.close()  # a named file: it stays for the parent, which reads and removes it
    return path, spill.lengths


def write_records(records, output_files, encoder_log):
    """Writes records (an iterable of bytes) round-robin to `output_files`, atomically.

    Every file is written as an unnamed (or temporary) file (cli.atomic_output) and takes its
    name only when all of them are complete, so an interrupted run leaves no partial output.
    """
    tf = cli.import_tensorflow()  # its start-up notices filtered
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(cli.atomic_output(path)) for path in output_files]
        writers = [stack.enter_context(tf.io.TFRecordWriter(temp)) for temp in temps]
        total = 0
        for total, record in enumerate(records, 1):
            writers[(total - 1) % len(writers)].write(record)
            if total <= _LOGGED_EXAMPLES:
                encoder_log(record)
        for writer in writers:
            writer.close()  # before the names: the last exits of the stack link the files in
    return total


def _example_logger(inv_vocab):
    tf = cli.import_tensorflow()  # its start-up notices filtered

    def log(record):
        example = tf.train.Example.FromString(record)
        feature = example.features.feature
        ids = [i for i, m in zip(feature["input_ids"].int64_list.value, feature["input_mask"].int64_list.value) if m]
        logging.info("*** Example ***")
        logging.info("tokens: %s", " ".join(inv_vocab[i] for i in ids))
        for name in ExampleEncoder._FEATURE_NAMES:
            values = feature[name]
            values = values.float_list.value if values.HasField("float_list") else values.int64_list.value
            logging.info("%s: %s", name, " ".join(str(v) for v in values))
    return log


def check_flags(max_seq_length, max_predictions_per_seq, masked_lm_prob, short_seq_prob, dupe_factor,
                num_workers):
    if max_seq_length < 5:
        raise ValueError(f"--max_seq_length={max_seq_length} is too small: [CLS] A [SEP] B [SEP] needs at least 5")
    if max_predictions_per_seq < 1:
        raise ValueError(f"--max_predictions_per_seq={max_predictions_per_seq} must be at least 1")
    if not 0.0 <= masked_lm_prob <= 1.0:
        raise ValueError(f"--masked_lm_prob={masked_lm_prob} must be between 0 and 1")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"--short_seq_prob={short_seq_prob} must be between 0 and 1")
    if dupe_factor < 1:
        raise ValueError(f"--dupe_factor={dupe_factor} must be at least 1")
    if num_workers < 1:
        raise ValueError(f"--num_workers={num_workers} must be at least 1")


def create_pretraining_data(input_files, output_files, vocab_file, do_lower_case=True,
                            do_whole_word_mask=False, max_seq_length=128, max_predictions_per_seq=20,
                            random_seed=12345, dupe_factor=10, masked_lm_prob=0.15, short_seq_prob=0.1,
                            num_workers=1):
    # 12 parameters: one keyword per create_pretraining_data.py flag: the script's Python API.
    """Reads `input_files`, writes the pretraining TFRecords; returns the instance count."""
    check_flags(max_seq_length, max_predictions_per_seq, masked_lm_prob, short_seq_prob, dupe_factor,
                num_workers)
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=do_lower_case)
    tokenization.check_special_tokens(tokenizer.vocab, vocab_file)
    vocab = PretrainingVocab(tokenizer.vocab)
    encoder = ExampleEncoder(max_seq_length, max_predictions_per_seq, vocab.size)
    seen = {}
    for path in output_files:
        directory = os.path.dirname(path)
        if directory and "://" not in path and not os.path.isdir(directory):
            raise ValueError(f"--output_file: directory {directory} does not exist")
        key = path if "://" in path else os.path.realpath(path)
        if key in seen:
            raise ValueError(f"--output_file lists {path} twice{f' (as {seen[key]})' if seen[key] != path else ''}: "
                             f"give each output file once")
        seen[key] = path
        if key in {p if "://" in p else os.path.realpath(p) for p in input_files}:
            raise ValueError(f"--output_file={path} is also an --input_file: write the records elsewhere")
    _remove_stale_shard_spills()

    pool = None
    if num_workers > 1:
        pool = multiprocessing.get_context("fork").Pool(
            num_workers, initializer=_init_tokenizer_worker, initargs=(vocab_file, do_lower_case))
    try:
        reading = cli.ProgressLine("lines read")
        documents = read_documents(input_files, tokenizer, pool, reading)
        reading.close()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if not documents:
        raise ValueError(f"--input_file: {', '.join(input_files)} hold no text (one sentence per line, "
                         f"blank lines between documents)")
    # The documents live until the end: keep the garbage collector from rescanning them
    # (and the vocab tables) at every collection while instances are created.
    gc.freeze()
    try:
        rng = random.Random(random_seed)
        rng.shuffle(documents)
        logging.info("Read %d documents with %d segments", len(documents), sum(len(d) for d in documents))

        creating = cli.ProgressLine("documents processed", total=dupe_factor * len(documents))
        settings = InstanceSettings(max_seq_length, max_predictions_per_seq, masked_lm_prob, short_seq_prob,
                                    do_whole_word_mask, dupe_factor)
        if num_workers == 1:
            spill = create_training_records(documents, vocab, encoder, rng, settings, progress=creating)
            creating.close()
            order = list(range(len(spill)))
            rng.shuffle(order)  # the original shuffles its instance list: same draws, same permutation
            records = (spill.read(i) for i in order)
            try:
                total = write_records(records, output_files, _example_logger(tokenizer.inv_vocab))
            finally:
                spill.close()
        else:
            total = _create_with_workers(documents, (vocab, encoder, tokenizer), settings, random_seed, num_workers,
                                         output_files, creating)
    finally:
        gc.unfreeze()
    logging.info("Wrote %d total instances", total)
    if total == 0:
        logging.warning("No instance was created: the documents are too short")
    return total


def _create_with_workers(documents, vocabulary, settings, random_seed, num_workers, output_files, progress):
    """`vocabulary`: (PretrainingVocab, ExampleEncoder, FullTokenizer) of the run."""
    vocab, encoder, tokenizer = vocabulary
    _WORKER_STATE.update(documents=documents, vocab=vocab, encoder=encoder, random_seed=random_seed,
                         settings=settings, num_workers=num_workers, shards=balance_shards(documents, num_workers))
    with multiprocessing.get_context("fork").Pool(num_workers, initializer=_init_shard_worker) as pool:
        shards = pool.map(_create_shard, range(num_workers))
    _WORKER_STATE.clear()
    progress(progress.total)
    progress.close()
    files = []
    try:
        index = []  # (shard, offset, length) of every record
        for shard, (path, lengths) in enumerate(shards):
            files.append(open(path, "rb"))
            offset = 0
            for length in lengths:
                index.append((shard, offset, length))
                offset += length
        random.Random(f"{random_seed}:merge").shuffle(index)

        def records():
            for shard, offset, length in index:
                files[shard].seek(offset)
                yield files[shard].read(length)

        return write_records(records(), output_files, _example_logger(tokenizer.inv_vocab))
    finally:
        for f in files:
            f.close()
        for path, _ in shards:
            os.remove(path)


# --- The original's Python API ------------------------------------------------------------
# Token strings in and out, as programs written against the original expect; each function
# encodes to ids, runs the fast path above and decodes, so both give the same draws.

class TrainingInstance:
    """One pretraining example as token strings, as the original's (print() shows it the same way)."""

    def __init__(self, tokens, segment_ids, masked_lm_positions, masked_lm_labels, is_random_next):
        self.tokens = tokens
        self.segment_ids = segment_ids
        self.is_random_next = is_random_next
        self.masked_lm_positions = masked_lm_positions
        self.masked_lm_labels = masked_lm_labels

    def __str__(self):
        def joined(values):
            return " ".join(tokenization.printable_text(str(value)) for value in values)
        return (f"tokens: {joined(self.tokens)}\nsegment_ids: {joined(self.segment_ids)}\n"
                f"is_random_next: {self.is_random_next}\n"
                f"masked_lm_positions: {joined(self.masked_lm_positions)}\n"
                f"masked_lm_labels: {joined(self.masked_lm_labels)}\n\n")

    def __repr__(self):
        return self.__str__()


# The original's record of one masked position (its masking function builds a list of them).
MaskedLmInstance = collections.namedtuple("MaskedLmInstance", ["index", "label"])


class _WordIds:
    """Ids for token strings, standing in for PretrainingVocab: the id of a word is its first
    position in `vocab_words` (random replacements draw among those), and a token outside
    `vocab_words` gets a new id past the end."""

    def __init__(self, vocab_words):
        self.words = list(vocab_words)
        self.size = len(self.words)
        self._ids = {}
        for index, word in enumerate(self.words):
            self._ids.setdefault(word, index)
        self.is_continuation = [word.startswith("##") for word in self.words]
        self.cls_id, self.sep_id, self.mask_id = self.encode(["[CLS]", "[SEP]", "[MASK]"])

    def encode(self, tokens):
        ids = []
        for token in tokens:
            token_id = self._ids.get(token)
            if token_id is None:
                token_id = self._ids[token] = len(self.words)
                self.words.append(token)
                self.is_continuation.append(token.startswith("##"))
            ids.append(token_id)
        return ids

    def decode(self, ids):
        return [self.words[i] for i in ids]


class _EncodedDocuments:
    """`all_documents` (lists of token-string segments) seen as id segments, one document at a time."""

    def __init__(self, all_documents, word_ids):
        self._documents = all_documents
        self._word_ids = word_ids

    def __len__(self):
        return len(self._documents)

    def __getitem__(self, index):
        return [self._word_ids.encode(segment) for segment in self._documents[index]]


def _instance_as_tokens(instance, decode):
    return TrainingInstance(decode(instance.token_ids), instance.segment_ids, instance.masked_lm_positions,
                            decode(instance.masked_lm_labels), instance.is_random_next)


def create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                                 do_whole_word_mask=False):
    """The original's masking on token strings: (output tokens, masked positions, original tokens there)."""
    word_ids = _WordIds(vocab_words)
    output_ids, positions, labels = create_masked_lm_predictions_with_vocab(
        word_ids.encode(tokens), masked_lm_prob, max_predictions_per_seq, word_ids, rng, do_whole_word_mask)
    return word_ids.decode(output_ids), positions, word_ids.decode(labels)


def create_instances_from_document(all_documents, document_index, max_seq_length, short_seq_prob,
                                   masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                                   do_whole_word_mask=False):
    # 9 parameters: the original's signature.
    """The original's instances of one document, as TrainingInstance (documents: lists of token lists)."""
    word_ids = _WordIds(vocab_words)
    instances = create_instances_from_document_with_vocab(
        _EncodedDocuments(all_documents, word_ids), document_index, max_seq_length, short_seq_prob,
        masked_lm_prob, max_predictions_per_seq, word_ids, rng, do_whole_word_mask)
    return [_instance_as_tokens(instance, word_ids.decode) for instance in instances]


def create_training_instances(input_files, tokenizer, max_seq_length, dupe_factor, short_seq_prob,
                              masked_lm_prob, max_predictions_per_seq, rng, do_whole_word_mask=False):
    # 9 parameters: the original's signature.
    """Reads and tokenizes `input_files` and returns every TrainingInstance, shuffled, as the original.

    The same files, tokenizer settings and `rng` state give the original's instances in its order.
    """
    tokenization.check_special_tokens(tokenizer.vocab, getattr(tokenizer, "vocab_file", "of the tokenizer"))
    documents = read_documents(input_files, tokenizer)
    rng.shuffle(documents)
    vocab = PretrainingVocab(tokenizer.vocab)
    instances = []
    for _ in range(dupe_factor):
        for document_index in range(len(documents)):
            instances.extend(create_instances_from_document_with_vocab(
                documents, document_index, max_seq_length, short_seq_prob, masked_lm_prob,
                max_predictions_per_seq, vocab, rng, do_whole_word_mask))
    rng.shuffle(instances)
    inv_vocab = tokenizer.inv_vocab
    return [_instance_as_tokens(instance, lambda ids: [inv_vocab[i] for i in ids]) for instance in instances]


def create_int_feature(values):
    """A tf.train.Feature holding `values` as int64."""
    tf = cli.import_tensorflow()
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def create_float_feature(values):
    """A tf.train.Feature holding `values` as float32."""
    tf = cli.import_tensorflow()
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _serialize_instance(instance, tokenizer, encoder):
    """A TrainingInstance as a serialized tf.train.Example with the original's features."""
    tf = cli.import_tensorflow()
    token_ids = tokenizer.convert_tokens_to_ids(instance.tokens)
    if len(token_ids) > encoder.max_seq_length:
        raise ValueError(f"an instance has {len(token_ids)} tokens, more than max_seq_length="
                         f"{encoder.max_seq_length}")
    ids = InstanceIds(token_ids, list(instance.segment_ids), instance.is_random_next,
                      list(instance.masked_lm_positions), tokenizer.convert_tokens_to_ids(instance.masked_lm_labels))
    feature = collections.OrderedDict()
    for name, values in encoder.features(ids).items():
        feature[name] = (create_float_feature if name == "masked_lm_weights" else create_int_feature)(values)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_instance_to_example_files(instances, tokenizer, max_seq_length, max_predictions_per_seq, output_files):
    """Writes TrainingInstances round-robin to `output_files` as tf.train.Example records, as the original."""
    encoder = ExampleEncoder(max_seq_length, max_predictions_per_seq, len(tokenizer.vocab))
    records = (_serialize_instance(instance, tokenizer, encoder) for instance in instances)
    total = write_records(records, list(output_files), _example_logger(tokenizer.inv_vocab))
    logging.info("Wrote %d total instances", total)


def main(_):
    logging.set_verbosity(logging.INFO)
    input_files = cli.expand_input_files(FLAGS.input_file)
    output_files = [path.strip() for path in FLAGS.output_file.split(",") if path.strip()]
    logging.info("*** Reading from input files ***")
    for input_file in input_files:
        logging.info("  %s", input_file)
    logging.info("*** Writing to output files ***")
    for output_file in output_files:
        logging.info("  %s", output_file)
    create_pretraining_data(
        input_files, output_files, FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
        do_whole_word_mask=FLAGS.do_whole_word_mask, max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq, random_seed=FLAGS.random_seed,
        dupe_factor=FLAGS.dupe_factor, masked_lm_prob=FLAGS.masked_lm_prob,
        short_seq_prob=FLAGS.short_seq_prob, num_workers=FLAGS.num_workers)


def run():
    """Entry point: a user's mistake ends with one line on stderr and exit code 1."""
    define_flags()
    cli.run(main, "create_pretraining_data.py", ["input_file", "output_file", "vocab_file"])


if __name__ == "__main__":
    run()
